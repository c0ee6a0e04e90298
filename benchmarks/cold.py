"""flowcheck's own work over the trace in a fresh process: the first run ever, and a run after it.

A cold ``flowcheck`` process pays the gradient oracle's probing of every op signature. The answers
for TensorFlow's and Keras's own gradient functions are kept between runs
(``flowcheck/graph/kept.py``), so only the very first run on a machine (per TensorFlow, Keras and
Python version) pays it. For each model, in fresh processes, one run each: *first* with an empty
store, then *kept* with the store the first run wrote; each the first ``flowcheck.analyze`` of its
process (:class:`stages.StageClock`, CPU time), flowcheck's modules imported from compiled
bytecode as an installed package is. Target (issue 15): own work <= 0.1 x the trace.

Usage: ``python benchmarks/cold.py [MODEL ...]`` (default: the image models, the Transformer and
the MobileNetV2 train step).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = ("resnet50", "mobilenetv2", "efficientnetb0", "transformer", "mobilenetv2_step")
TARGET = 0.1


def child(key: str) -> None:
    """Analyze model ``key`` once in this process and print its stages' CPU seconds as JSON (``StageClock``'s)."""
    sys.path.insert(0, str(HERE))
    import models
    from stages import StageClock

    case = models.build(key)
    with StageClock() as clock:
        _, figures = clock.analyze(case)
    print(json.dumps(figures["cpu"]))  # trace, own and each stage of the own work


def run_child(key: str, store: str) -> dict[str, float]:
    """The CPU seconds of :func:`child` in a fresh process, the oracle's kept answers in folder ``store``."""
    env = {**os.environ, "FLOWCHECK_CACHE_DIR": store, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # As an installed flowcheck runs: from compiled bytecode (a machine that forbids writing it
    # would compile every module of flowcheck's again in each process, counted as own work).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    done = subprocess.run([sys.executable, __file__, "--child", key], capture_output=True, text=True, env=env,
                          check=True, timeout=900)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        child(argv[1])
        return 0
    print(f"{'model':<18} {'first run: trace':>17} {'own':>8} {'own/trace':>9}   {'kept: trace':>11} {'own':>8} "
          f"{'own/trace':>9}   (target: own/trace <= {TARGET})")
    for key in argv or DEFAULT:
        with tempfile.TemporaryDirectory(prefix="flowcheck-store-") as store:
            first, kept = run_child(key, store), run_child(key, store)
        ratios = [r["own"] / r["trace"] for r in (first, kept)]
        print(f"{key:<18} {first['trace']:>16.3f}s {first['own']:>7.3f}s {ratios[0]:>9.3f}   {kept['trace']:>10.3f}s "
              f"{kept['own']:>7.3f}s {ratios[1]:>9.3f}   ({'met' if ratios[1] <= TARGET else 'missed'})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
