"""Peak memory of ``flowcheck.analyze`` + ``Report.verify`` against what a user pays without flowcheck.

Two fresh processes per model, one after the other, so that each peak RSS belongs to one activity:

* *flowcheck*: ``flowcheck.analyze(loss_fn, *args)`` then ``report.verify()``;
* *hand-written*: tracing the same ``tf.function`` (its first call) and one hand-written step
  around it: an eager ``tf.GradientTape``, ``tape.gradient`` and one SGD ``apply_gradients``
  (``models.hand_written_step``).

Both build the model first (``benchmarks/models.py``); the peak RSS (``ru_maxrss``) of each
process includes Python, TensorFlow and the model. Printed: each process's RSS when the model is
built, after each step and at its peak, and the ratio of the peaks (target: at most 1.3).

Usage: ``python benchmarks/memory.py [MODEL ...]`` (default ``chain10000``; keys of ``models.BUILDERS``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGET = 1.3


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(kind: str, key: str) -> dict[str, Any]:
    """One activity on model ``key`` in this (fresh) process: RSS after each step, and the peak."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, HERE)
    import models

    steps: list[tuple[str, float, float, float]] = []  # name, seconds, RSS MB, peak MB so far

    def step(name: str, fn: Any) -> Any:
        start = time.perf_counter()
        value = fn()
        steps.append((name, time.perf_counter() - start, _rss_mb(), _peak_mb()))
        return value

    case = step("build the model", lambda: models.build(key))
    if kind == "flowcheck":
        import flowcheck

        report = step("flowcheck.analyze", lambda: flowcheck.analyze(case.loss_fn, *case.args))
        check = step("report.verify", report.verify)
        agrees = bool(check.agrees)
    else:
        step("trace + one hand-written tape step", lambda: models.hand_written_step(case))
        agrees = True
    return {"steps": steps, "peak_mb": _peak_mb(), "agrees": agrees}


def _run(kind: str, key: str) -> dict[str, Any] | None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join([HERE, ROOT, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", kind, key],
        capture_output=True, text=True, env=env, check=False,
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT "):]))
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    print(f"  {kind} child failed (exit {proc.returncode}): {tail}")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("models", nargs="*", default=["chain10000"])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.child:
        print("RESULT " + json.dumps(child(*ns.child)), flush=True)
        return 0
    for key in ns.models:
        print(f"== {key}: peak RSS, each activity in a fresh process ==", flush=True)
        results = {kind: _run(kind, key) for kind in ("flowcheck", "hand")}
        for kind, result in results.items():
            if result is None:
                continue
            print(f"  {'flowcheck analyze + verify' if kind == 'flowcheck' else 'trace + hand-written step'}:"
                  f" peak {result['peak_mb']:,.0f} MB" + ("" if result["agrees"] else " (verify disagreed)"))
            for name, seconds, rss, peak in result["steps"]:
                print(f"    {name:<36} {seconds:8.2f} s   RSS {rss:7,.0f} MB   peak so far {peak:7,.0f} MB")
        fc, hand = results["flowcheck"], results["hand"]
        if fc is not None and hand is not None:
            ratio = fc["peak_mb"] / hand["peak_mb"]
            print(f"  peak RSS flowcheck / hand-written: {ratio:.2f} (target <= {TARGET:g}) "
                  f"{'MET' if ratio <= TARGET else 'MISSED'} -- {fc['peak_mb']:,.0f} MB / {hand['peak_mb']:,.0f} MB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
