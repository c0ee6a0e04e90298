"""Where flowcheck's own time goes, stage by stage, and how it grows with the graph, oracle warm.

In one process (so that the gradient oracle's shared answers are warm after the first model):
each model is traced, then its graph built (the gradient oracle asks TensorFlow per op
signature), then analyzed (verdicts, barriers, lines: ``_report``). CPU seconds of this process
(``time.process_time``), which load from other processes disturbs less than wall time. Printed:
the stages per model, flowcheck's own work over the trace, and the warm growth from the
1,000-layer chain (median of ``--runs``) to the 10,000-layer chain (target 10.5x for 10x the ops).
``benchmarks/run.py`` measures the cold figures, each model in a fresh process.

Usage: ``python benchmarks/growth.py [--runs N] [MODEL ...]`` (default: the image models, the
Transformer and both chains).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT = ("resnet50", "mobilenetv2", "efficientnetb0", "transformer", "chain1000", "chain10000")
GROWTH_TARGET = 10.5
OWN_TARGET = 0.1


def stages(key: str) -> dict[str, float]:
    """CPU seconds of each stage of one analysis of model ``key`` (its own process, oracle as it is)."""
    import models

    from flowcheck._api import build_report as _report
    from flowcheck.graph.build import build_graph
    from flowcheck.graph.build import collector_paused as _collector_paused
    from flowcheck.graph.ops import GradientOracle
    from flowcheck.trace.target import trace

    case = models.build(key)
    t0 = time.process_time()
    traced = trace(case.loss_fn, case.args, {})
    t1 = time.process_time()
    with _collector_paused():  # as flowcheck.analyze runs the two stages
        graph = build_graph(traced, GradientOracle())
        t2 = time.process_time()
        _report(traced, graph)
        t3 = time.process_time()
    ops = sum(1 for _, kind in graph.nodes(data="kind") if kind == "op")
    del graph, traced, case
    gc.collect()
    return {"ops": ops, "trace": t1 - t0, "graph": t2 - t1, "analysis": t3 - t2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(DEFAULT))
    parser.add_argument("--runs", type=int, default=3, help="runs of each model but the 10,000-layer chain")
    ns = parser.parse_args(argv)
    stages("chain10")  # warms the oracle's shared answers for Dense, ReLU and the loss
    own: dict[str, float] = {}
    for key in ns.models:
        runs = [stages(key) for _ in range(1 if key == "chain10000" else ns.runs)]
        med = {k: statistics.median(r[k] for r in runs) for k in ("trace", "graph", "analysis")}
        own[key] = med["graph"] + med["analysis"]
        ratio = own[key] / med["trace"]
        print(f"{key:<15} {int(runs[0]['ops']):>7,} ops | trace {med['trace']:7.3f} s | graph {med['graph']:6.3f} s"
              f" | analysis {med['analysis']:6.3f} s | own / trace {ratio:5.3f}"
              f" ({'met' if ratio <= OWN_TARGET else 'missed'}: {OWN_TARGET})", flush=True)
    if "chain1000" in own and "chain10000" in own:
        growth = own["chain10000"] / own["chain1000"]
        print(f"warm growth 1,000 -> 10,000 layers: {growth:.2f}x for 10x the ops "
              f"({'met' if growth <= GROWTH_TARGET else 'missed'}: {GROWTH_TARGET}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
