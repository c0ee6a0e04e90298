"""Where flowcheck's own time goes, stage by stage, and how it grows with the graph, warm and cold.

In one process (so that the gradient oracle's shared answers are warm after the first model),
each model is analyzed with ``flowcheck.analyze`` while ``stages.StageClock`` clocks every
``get_concrete_function`` call inside it (the trace) and counts the rest as flowcheck's own work:
the bookkeeping of stage 1 around the trace, the graph build (the gradient oracle asks TensorFlow
per op signature), the analysis (verdicts, barriers, lines: ``build_report``) and the rest of
``analyze``. CPU seconds of this process (``time.process_time``), which load from other processes
disturbs less than wall time; medians of ``--runs`` (the 10,000-layer chain: of ``--big-runs``). Printed: the
stages per model, flowcheck's own work over the trace (target 0.1) and the growth of the own work
from the 1,000-layer chain to the 10,000-layer chain (target 10.5x for 10x the ops), in total and
per stage: *warm* from the runs above, *cold* from each chain's first analysis in a fresh process
(``cold.py``'s child; the oracle's kept answers in a new store that a 10-layer chain's run filled,
as any run after the first on a machine finds it), the 1,000-layer chain the median of
``--cold-runs`` processes, the 10,000-layer chain of ``--big-runs``. One run of the big chain moves
by more than the target's margin from run to run (9.5x-14x over the same code), hence its median.

Usage: ``python benchmarks/growth.py [--runs N] [--cold-runs N] [--big-runs N] [MODEL ...]`` (default: the image
models, the MobileNetV2 train step, the Transformer and both chains; ``--cold-runs 0``: no cold).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT = (
    "resnet50", "mobilenetv2", "efficientnetb0", "transformer", "mobilenetv2_step", "chain1000", "chain10000",
)
GROWTH_TARGET = 10.5
OWN_TARGET = 0.1
SMALL, BIG = "chain1000", "chain10000"
# The stages of the own work, as StageClock names them, and as printed.
PARTS = (("trace_rest", "stage 1"), ("graph", "graph"), ("analysis", "analysis"), ("other", "rest"), ("own", "own"))


def stages(key: str) -> dict[str, float]:
    """CPU seconds of each stage of one ``flowcheck.analyze`` of model ``key`` (the oracle as it is)."""
    import models
    from stages import StageClock

    case = models.build(key)
    with StageClock() as clock:
        report, figures = clock.analyze(case)
    ops = sum(1 for _, kind in report.graph.nodes(data="kind") if kind == "op")
    del report, case
    gc.collect()
    return {"ops": ops, **figures["cpu"]}


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median of each figure over ``runs``."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def line(key: str, med: dict[str, float], ops: str) -> str:
    """One model's stages, as printed."""
    ratio = med["own"] / med["trace"]
    size = f"{ops:>7} ops" if ops else " " * 11
    return (f"{key:<17} {size} | trace {med['trace']:7.3f} s | stage 1 {med['trace_rest']:6.3f} s"
            f" | graph {med['graph']:6.3f} s | analysis {med['analysis']:6.3f} s | rest {med['other']:6.3f} s"
            f" | own / trace {ratio:5.3f} ({'met' if ratio <= OWN_TARGET else 'missed'}: {OWN_TARGET})")


def growth(label: str, small: dict[str, float], big: dict[str, float]) -> str:
    """The growth of the own work and of each of its stages from the small chain to the big one."""
    total = big["own"] / small["own"]
    each = ", ".join(f"{name} {big[k] / small[k]:.1f}x" for k, name in PARTS[:-1] if small[k] > 0)
    return (f"{label} growth of the own work 1,000 -> 10,000 layers: {total:.2f}x for 10x the ops "
            f"({'met' if total <= GROWTH_TARGET else 'missed'}: {GROWTH_TARGET}x; {each})")


def cold(runs: int, big_runs: int) -> tuple[dict[str, float], dict[str, float]]:
    """Each chain's first analysis in a fresh process: the small chain's median of ``runs``, the big one's of ``big_runs``."""
    from cold import run_child

    with tempfile.TemporaryDirectory(prefix="flowcheck-store-") as store:
        run_child("chain10", store)  # the kept answers any run after the first finds
        small = [run_child(SMALL, store) for _ in range(runs)]
        for i, figures in enumerate(small):
            print(line(f"{SMALL} cold {i + 1}", figures, ""), flush=True)
        big = [run_child(BIG, store) for _ in range(big_runs)]
        for i, figures in enumerate(big):
            print(line(f"{BIG} cold {i + 1}", figures, ""), flush=True)
    return median(small), median(big)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(DEFAULT))
    parser.add_argument("--runs", type=int, default=5, help="runs of each model but the 10,000-layer chain")
    parser.add_argument("--big-runs", type=int, default=3, help="runs of the 10,000-layer chain, warm and cold")
    parser.add_argument("--cold-runs", type=int, default=5, help="fresh processes of the 1,000-layer chain (0: no cold)")
    ns = parser.parse_args(argv)
    stages("chain10")  # warms the oracle's shared answers for Dense, tanh and the loss
    warm: dict[str, dict[str, float]] = {}
    print("CPU seconds, medians; own = stage 1 around the trace + graph + analysis + the rest of analyze", flush=True)
    for key in ns.models:
        runs = [stages(key) for _ in range(ns.big_runs if key == BIG else ns.runs)]
        warm[key] = median(runs)
        print(line(key, warm[key], f"{int(warm[key]['ops']):,}"), flush=True)
        if key in (SMALL, BIG):
            each = ", ".join(f"{r['own']:.3f}" for r in runs)
            print(f"{'':<17} own work of each run: {each} s", flush=True)
    if SMALL in warm and BIG in warm:
        print(growth("warm", warm[SMALL], warm[BIG]), flush=True)
        if ns.cold_runs > 0:
            print(f"cold: each chain's first analysis in a fresh process (medians: {SMALL} of {ns.cold_runs}, "
                  f"{BIG} of {ns.big_runs})", flush=True)
            small, big = cold(ns.cold_runs, ns.big_runs)
            print(growth("warm", warm[SMALL], warm[BIG]))
            print(growth("cold", small, big))
    return 0


if __name__ == "__main__":
    sys.exit(main())
