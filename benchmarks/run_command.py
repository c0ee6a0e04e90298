"""``flowcheck run`` against the script alone: MobileNetV2 (96 px, weights=None), custom step and fit.

For each script in ``benchmarks/scripts/``, two fresh processes, one run each:

* the script alone (``python SCRIPT``): wall time from start until it prints ``step 0 done``,
  i.e. until its first training step has finished (TensorFlow's import included);
* ``flowcheck run SCRIPT``: wall time until it has printed its report (the first step analyzed,
  verified by the script's own first call, the script ended at its second step), and until the
  process has exited.

The ratio of the two is printed, of wall-clock time (the target of issue 12: at most 1.3) and of
process CPU time (all threads, read from ``/proc`` at the same moments). Both sides are timed up to
their answer, neither's process teardown included (TensorFlow's takes 2-3 s for a MobileNetV2, the
script's as much as flowcheck's); the time to ``flowcheck run``'s exit is printed beside, with its
ratio. On a shared machine the wall clock moves with the neighbours' load; the CPU time less.

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


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of a running process, all its threads."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def script_alone(path: str) -> tuple[float, float]:
    """Wall and CPU seconds until the script prints that its first step is done."""
    start = time.perf_counter()
    with subprocess.Popen([sys.executable, path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          env=_env(), cwd=ROOT) as child:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("step 0 done"):
                elapsed, cpu = time.perf_counter() - start, _cpu_of(child.pid)
                child.kill()
                return elapsed, cpu
    raise RuntimeError(f"{path} never printed 'step 0 done'")


def flowcheck_run(path: str) -> tuple[float, float, float, int]:
    """Wall and CPU seconds until ``flowcheck run`` has printed its report, wall seconds until it
    exits, and its exit status."""
    flowcheck = os.path.join(os.path.dirname(sys.executable), "flowcheck")
    start = time.perf_counter()
    answered, cpu = None, 0.0
    child = subprocess.Popen([flowcheck, "run", path], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env=_env(), cwd=ROOT)
    assert child.stdout is not None
    for line in child.stdout:
        if line.startswith(("OK:", "FAILED")):  # the report's last line
            answered, cpu = time.perf_counter() - start, _cpu_of(child.pid)
    _, status, _ = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if answered is None:
        raise RuntimeError(f"flowcheck run {path} printed no report (exit {child.returncode})")
    return answered, cpu, time.perf_counter() - start, child.returncode


def main(argv: list[str]) -> int:
    names = argv or list(SCRIPTS)
    print(f"{'script':<18} {'alone: first step':>18} {'flowcheck run':>14} {'ratio':>6}   "
          f"{'CPU: alone':>10} {'flowcheck':>9} {'ratio':>6}   {'exited':>7} {'ratio':>6}   "
          f"(target: wall ratio <= {TARGET})")
    worst = 0.0
    for name in names:
        path = os.path.join("benchmarks", "scripts", name)
        alone, alone_cpu = script_alone(path)
        watched, watched_cpu, exited, status = flowcheck_run(path)
        worst = max(worst, watched / alone)
        print(f"{name:<18} {alone:>17.1f}s {watched:>13.1f}s {watched / alone:>6.2f}   "
              f"{alone_cpu:>9.1f}s {watched_cpu:>8.1f}s {watched_cpu / alone_cpu:>6.2f}   "
              f"{exited:>6.1f}s {exited / alone:>6.2f}   (exit {status})", flush=True)
    print(f"worst wall-clock ratio {worst:.2f}: target {'met' if worst <= TARGET else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
