"""How long ``dot`` takes on the collapsed view of every benchmark model and example (target: < 2 s).

For each case: the graph's op count, the drawn node and edge counts of the collapsed view, the time
to build the DOT text (``Report.to_dot()``), and the time ``dot -Tsvg`` takes on it
(``flowcheck.render.graphviz.render_svg``, which gives up after 120 s). Cases:

* every model of ``benchmarks/models.py`` (its ``training=True`` loss; the 10,000-layer chain last);
* ``MobileNetV2 train step``: ``flowcheck.analyze(compiled_model, x, y)`` on
  ``keras.applications.MobileNetV2(weights=None)`` compiled with SGD (its Keras training step);
* every file in ``examples/``: the ``flowcheck analyze`` ones loaded as it loads them; the training
  scripts written for ``flowcheck run`` (and the TF1 seed) run by ``flowcheck run --no-verify -o
  FILE.dot`` in a child process, one drawing per training step.

Usage: ``python benchmarks/render.py [CASE ...]`` (default: all; ``--list`` names them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

TARGET_S = 2.0
MODEL_ORDER = ("chain10", "chain100", "transformer", "mobilenetv2", "resnet50", "efficientnetb0", "chain1000", "chain10000")


def _model_case(key: str) -> Callable[[], tuple[str, Any]]:
    def run() -> tuple[str, Any]:
        import models

        import flowcheck

        case = models.build(key)
        return case.name, flowcheck.analyze(case.loss_fn, *case.args)

    return run


def _mobilenet_step() -> tuple[str, Any]:
    import keras
    import numpy as np

    import flowcheck

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((2, 96, 96, 3), dtype=np.float32)
    return "MobileNetV2 train step", flowcheck.analyze(model, x, np.array([1, 2]))


def _example_case(path: Path) -> Callable[[], tuple[str, Any]]:
    def run() -> tuple[str, Any]:
        import flowcheck
        from flowcheck.cli.load import find_target, user_module

        with user_module(str(path)) as module:
            loaded = find_target(module, str(path), None, 0)
            return f"examples/{path.name}", flowcheck.analyze(loaded.target, *loaded.args, **loaded.kwargs)

    return run


class _Drawn:
    """A drawing ``flowcheck run`` wrote: what :func:`measure` reads of a report."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.ops: int | None = None  # the child's graph is not at hand here
        self.variables: tuple[Any, ...] = ()

    def to_dot(self) -> str:
        return self.source


def _script_case(path: Path) -> Callable[[], list[tuple[str, Any]]]:
    def run() -> list[tuple[str, Any]]:
        import subprocess
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            flowcheck = Path(sys.executable).with_name("flowcheck")
            subprocess.run([str(flowcheck), "run", str(path), "--no-verify", "-o", f"{tmp}/flow.dot"],
                           cwd=ROOT, capture_output=True, timeout=600, check=False)
            drawn = sorted(Path(tmp).glob("*.dot"))
            return [(f"examples/{path.name} ({d.stem})", _Drawn(d.read_text())) for d in drawn]

    return run


def _run_scripts() -> set[str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_examples import RUN_EXAMPLES, TF1_EXAMPLES  # the one list of them

    return set(RUN_EXAMPLES) | set(TF1_EXAMPLES)


def cases() -> dict[str, Callable[[], Any]]:
    """Every case, by key, in the order they run."""
    found: dict[str, Callable[[], Any]] = {}
    scripts = _run_scripts()
    for path in sorted((ROOT / "examples").glob("*.py")):
        found[path.stem] = _script_case(path) if path.name in scripts else _example_case(path)
    found["mobilenetv2_step"] = _mobilenet_step
    for key in MODEL_ORDER:
        found[key] = _model_case(key)
    return found


def measure(name: str, report: Any) -> tuple[str, bool]:
    """One line of figures for ``report``, and whether dot met the target."""
    from flowcheck.errors import RenderError
    from flowcheck.render.graphviz import render_svg

    ops = report.ops if isinstance(report, _Drawn) else sum(1 for _, kind in report.graph.nodes(data="kind") if kind == "op")
    t0 = time.perf_counter()
    source = report.to_dot()
    t1 = time.perf_counter()
    nodes, edges = source.count(" [id="), source.count(" -> ")
    try:
        render_svg(source)
        dot_s = time.perf_counter() - t1
        shown, ok = f"{dot_s:6.2f} s", dot_s < TARGET_S
    except RenderError as exc:
        shown, ok = f"failed: {exc}", False
    counts = f"{ops:>7,} ops {len(report.variables):>6,} vars" if ops is not None else f"{'(flowcheck run)':>23}"
    return (f"{name:<42} {counts} | drawn {nodes:>4} nodes {edges:>4} edges"
            f" | DOT text {t1 - t0:5.2f} s | dot {shown}"), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help="case keys (default: all)")
    parser.add_argument("--list", action="store_true", help="list the case keys")
    args = parser.parse_args(argv)
    available = cases()
    if args.list:
        print("\n".join(available))
        return 0
    chosen = args.cases or list(available)
    unknown = [c for c in chosen if c not in available]
    if unknown:
        parser.error(f"unknown cases: {', '.join(unknown)}; known: {', '.join(available)}")
    failed = []
    measured = 0
    for key in chosen:
        t0 = time.perf_counter()
        found = available[key]()
        for name, report in found if isinstance(found, list) else [found]:
            line, ok = measure(name, report)
            print(f"{line} | total {time.perf_counter() - t0:6.1f} s", flush=True)
            measured += 1
            if not ok:
                failed.append(name)
    print(f"dot under {TARGET_S:g} s: {measured - len(failed)} of {measured}"
          + (f"; over: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
