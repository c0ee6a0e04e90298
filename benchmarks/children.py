"""The children of ``make bench`` (``benchmarks/run.py``): each runs in a fresh process and prints one line ``RESULT {json}``.

* ``timing KEY RUNS VERIFY``: the median of ``RUNS`` runs of each stage of ``flowcheck.analyze`` as
  ``stages.StageClock`` splits it, then render collapsed and (``VERIFY`` 1) verify, plus the warm
  rebuild of the graph and analysis from the same trace; a line ``PARTIAL {json}`` after each stage,
  so that a child killed at the budget still tells what it measured;
* ``flowcheck KEY``: what ``flowcheck analyze`` does once, cold (analyze, verify, collapsed SVG);
* ``hand KEY``: what a user does instead, cold: one eager tape over every variable, then one step.

Usage (by ``run.py``): ``python benchmarks/children.py timing|flowcheck|hand KEY [...]``.
"""

from __future__ import annotations

import inspect
import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

STAGES = ("trace", "graph", "analysis", "own", "warm", "render", "verify")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _import_tensorflow() -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    import tensorflow  # noqa: F401

    return time.perf_counter() - wall, time.process_time() - cpu


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - wall, time.process_time() - cpu


def _render(report: Any) -> tuple[str | None, str]:
    """The collapsed SVG, or why there is none (the renderer may not have landed yet)."""
    svg = getattr(report, "svg", None)
    if svg is None:
        return None, "Report.svg() not available"
    collapsed = {"detail": "collapsed"} if "detail" in inspect.signature(svg).parameters else {}
    try:
        return str(svg(**collapsed)), ""
    except Exception as exc:  # noqa: BLE001 -- a benchmark reports a failing stage and goes on
        return None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def _op_count(graph: Any) -> int:
    return sum(1 for _, kind in graph.nodes(data="kind") if kind == "op")


def child_timing(key: str, runs: int, verify: bool) -> dict[str, Any]:
    """Each stage ``runs`` times on a fresh trace (a fresh copy of the tf.function each time)."""
    import_s, _ = _import_tensorflow()
    import models
    from stages import StageClock

    from flowcheck._api import build_report as _report
    from flowcheck._gc import collector_paused
    from flowcheck.graph.build import build_graph
    from flowcheck.graph.ops import GradientOracle

    case, build_s, _ = _timed(lambda: models.build(key))
    wall: dict[str, list[float]] = {s: [] for s in STAGES}
    cpu: dict[str, list[float]] = {s: [] for s in STAGES}
    result: dict[str, Any] = {
        "import_s": import_s, "build_s": build_s, "wall": wall, "cpu": cpu, "size": {}, "verdicts": {},
        "render_note": "", "agrees": None, "runs": runs, "peak_mb": _peak_mb(),
    }

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        value, w, c = _timed(fn)
        wall[name].append(w)
        cpu[name].append(c)
        return value

    def rebuilt(report: Any) -> None:  # the oracle warm: what a second analysis in one process pays
        with collector_paused():
            _report(report._traced, build_graph(report._traced, GradientOracle()))  # noqa: SLF001

    def partial() -> None:
        # What is measured so far, so that a child killed at the budget still reports it.
        result["peak_mb"] = _peak_mb()
        print("PARTIAL " + json.dumps(result), flush=True)

    for _ in range(runs):
        with StageClock() as clock:
            report, figures = clock.analyze(case)
        for clock_name, found in (("wall", wall), ("cpu", cpu)):
            for name in ("trace", "graph", "analysis", "own"):
                found[name].append(figures[clock_name][name])
        stage("warm", lambda: rebuilt(report))
        result["size"] = {"ops": _op_count(report.graph), "variables": len(report.variables),
                          "edges": report.graph.number_of_edges()}
        result["verdicts"] = {v: sum(1 for r in report.variables if r.verdict.value == v) for v in ("receives", "blocked", "unused")}
        partial()
        if verify:
            check = stage("verify", report.verify)
            result["agrees"] = bool(check.agrees) and (result["agrees"] is not False)
            partial()
        # Last: on the biggest graphs Graphviz may take longer than everything else together.
        svg, result["render_note"] = stage("render", lambda: _render(report))
        if svg is None:  # no renderer: not a measurement
            wall["render"].pop()
            cpu["render"].pop()
        partial()
        del report
    result["peak_mb"] = _peak_mb()
    return result


class _Clocks:
    """Wall-clock and process CPU seconds of named steps."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        value, self.wall[name], self.cpu[name] = _timed(fn)
        return value


def child_flowcheck(key: str) -> dict[str, Any]:
    """What ``flowcheck analyze`` does, once, in a fresh process: analyze, verify, then render."""
    clocks = _Clocks()
    clocks.wall["import"], clocks.cpu["import"] = _import_tensorflow()
    import models
    from stages import StageClock

    case = clocks("build", lambda: models.build(key))
    base_mb = _peak_mb()
    with StageClock() as stage_clock:
        report, stages = clocks("analyze", lambda: stage_clock.analyze(case))
    check = clocks("verify", report.verify)
    peak_mb = _peak_mb()  # analyze + verify
    svg, render_note = clocks("render", lambda: _render(report))
    if svg is None:
        del clocks.wall["render"], clocks.cpu["render"]
    return {
        "wall": clocks.wall, "cpu": clocks.cpu, "stages": stages, "render_note": render_note, "agrees": bool(check.agrees),
        "base_mb": base_mb, "peak_mb": peak_mb, "peak_after_render_mb": _peak_mb(),
        "none": sorted(r.name for r in report.variables if not r.receives),
    }


def child_hand_written(key: str) -> dict[str, Any]:
    """What a user does instead, once, in a fresh process: the tape check, then one optimizer step."""
    clocks = _Clocks()
    clocks.wall["import"], clocks.cpu["import"] = _import_tensorflow()
    import models

    case = clocks("build", lambda: models.build(key))
    base_mb = _peak_mb()
    none = clocks("check", lambda: models.hand_written_check(case))
    clocks("step", lambda: models.hand_written_step(case))
    return {"wall": clocks.wall, "cpu": clocks.cpu, "base_mb": base_mb, "peak_mb": _peak_mb(), "none": sorted(none)}


def main(argv: list[str]) -> int:
    kind, key, *rest = argv
    if kind == "timing":
        result = child_timing(key, int(rest[0]), bool(int(rest[1])))
    elif kind == "flowcheck":
        result = child_flowcheck(key)
    else:
        result = child_hand_written(key)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
