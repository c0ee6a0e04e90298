"""``flowcheck run`` against the script alone: MobileNetV2 (96 px, weights=None), custom step and fit.

For each script in ``benchmarks/scripts/``, two fresh processes, one run each:

* the script alone (``python SCRIPT``): wall time from start until it prints ``step 0 done``,
  i.e. until its first training step has finished (TensorFlow's import included);
* ``flowcheck run SCRIPT``: wall time until the command exits with its report (the first step
  analyzed, verified and run, the script ended at its second step).

The ratio of the two is printed; the target (issue 12) is at most 1.3. On a shared machine the
figures move with the neighbours' load: read the ratio of one run as a rough figure.

Usage: ``python benchmarks/run_command.py [SCRIPT ...]`` (default: both scripts).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPTS = ("mobilenet_step.py", "mobilenet_fit.py")
TARGET = 1.3


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def script_alone(path: str) -> float:
    """Seconds until the script prints that its first step is done."""
    start = time.perf_counter()
    with subprocess.Popen([sys.executable, path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          env=_env(), cwd=ROOT) as child:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("step 0 done"):
                elapsed = time.perf_counter() - start
                child.kill()
                return elapsed
    raise RuntimeError(f"{path} never printed 'step 0 done'")


def flowcheck_run(path: str) -> tuple[float, int]:
    """Seconds until ``flowcheck run`` exits, and its exit status."""
    flowcheck = os.path.join(os.path.dirname(sys.executable), "flowcheck")
    start = time.perf_counter()
    done = subprocess.run([flowcheck, "run", path], capture_output=True, text=True, env=_env(), cwd=ROOT)
    return time.perf_counter() - start, done.returncode


def main(argv: list[str]) -> int:
    names = argv or list(SCRIPTS)
    print(f"{'script':<20} {'alone: first step s':>20} {'flowcheck run s':>16} {'ratio':>6}  target <= {TARGET}")
    worst = 0.0
    for name in names:
        path = os.path.join("benchmarks", "scripts", name)
        alone = script_alone(path)
        watched, status = flowcheck_run(path)
        ratio = watched / alone
        worst = max(worst, ratio)
        print(f"{name:<20} {alone:>20.1f} {watched:>16.1f} {ratio:>6.2f}  (exit {status})", flush=True)
    print(f"worst ratio {worst:.2f}: {'met' if worst <= TARGET else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
