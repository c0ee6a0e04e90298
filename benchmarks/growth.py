"""Where flowcheck's own time goes, stage by stage, and how it grows with the graph, oracle warm.

In one process (so that the gradient oracle's shared answers are warm after the first model),
each model is analyzed with ``flowcheck.analyze`` while ``stages.StageClock`` clocks every
``get_concrete_function`` call inside it (the trace) and counts the rest as flowcheck's own work:
the bookkeeping of stage 1 around the trace, the graph build (the gradient oracle asks TensorFlow
per op signature), the analysis (verdicts, barriers, lines: ``build_report``) and the rest of
``analyze``. CPU seconds of this process (``time.process_time``), which load from other processes
disturbs less than wall time; medians of ``--runs`` (the 10,000-layer chain once). Printed: the
stages per model, flowcheck's own work over the trace (target 0.1) and the warm growth of the own
work from the 1,000-layer chain to the 10,000-layer chain (target 10.5x for 10x the ops).
``benchmarks/run.py`` measures the cold figures, each model in a fresh process.

Usage: ``python benchmarks/growth.py [--runs N] [MODEL ...]`` (default: the image models, the
MobileNetV2 train step, the Transformer and both chains).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT = (
    "resnet50", "mobilenetv2", "efficientnetb0", "transformer", "mobilenetv2_step", "chain1000", "chain10000",
)
GROWTH_TARGET = 10.5
OWN_TARGET = 0.1


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(DEFAULT))
    parser.add_argument("--runs", type=int, default=5, help="runs of each model but the 10,000-layer chain")
    ns = parser.parse_args(argv)
    stages("chain10")  # warms the oracle's shared answers for Dense, tanh and the loss
    own: dict[str, float] = {}
    print("CPU seconds, medians; own = stage 1 around the trace + graph + analysis + the rest of analyze", flush=True)
    for key in ns.models:
        runs = [stages(key) for _ in range(1 if key == "chain10000" else ns.runs)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        own[key] = med["own"]
        ratio = med["own"] / med["trace"]
        print(f"{key:<17} {int(med['ops']):>7,} ops | trace {med['trace']:7.3f} s | stage 1 {med['trace_rest']:6.3f} s"
              f" | graph {med['graph']:6.3f} s | analysis {med['analysis']:6.3f} s | rest {med['other']:6.3f} s"
              f" | own / trace {ratio:5.3f} ({'met' if ratio <= OWN_TARGET else 'missed'}: {OWN_TARGET})", flush=True)
    if "chain1000" in own and "chain10000" in own:
        growth = own["chain10000"] / own["chain1000"]
        print(f"warm growth of the own work 1,000 -> 10,000 layers: {growth:.2f}x for 10x the ops "
              f"({'met' if growth <= GROWTH_TARGET else 'missed'}: {GROWTH_TARGET}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
