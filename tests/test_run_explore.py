"""``flowcheck run SCRIPT --explore``: every analyzed step served in Model Explorer on 127.0.0.1.

The server is started by the command under test on a free port, asked for its health and the
step's graph, and stopped with Ctrl-C within bounded time.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("model_explorer", reason="the flowcheck[explore] extra is not installed")
pytestmark = pytest.mark.slow  # a flowcheck run and a Model Explorer server per test, each a process of its own

ROOT = Path(__file__).resolve().parent.parent
START_S = 240.0


# A command started in the background by a non-interactive shell (nohup, `cmd &` in a CI script)
# inherits SIGINT ignored: Ctrl-C must stop the server all the same.
SIGINT_IGNORED = ["bash", "-c", 'trap "" INT; exec "$@"', "flowcheck"]


@pytest.mark.parametrize("launcher", [[], SIGINT_IGNORED], ids=["sigint-default", "sigint-inherited-ignored"])
def test_run_explore_serves_each_step_and_stops_on_ctrl_c(launcher: list[str]) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [*launcher, sys.executable, "-m", "flowcheck.cli", "run", "examples/gan_two_tapes.py", "--no-verify", "--explore"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        url = ""
        while not url:
            line = lines.get(timeout=START_S)
            if line.startswith("Model Explorer: http://127.0.0.1:"):
                url = line.split(" ", 2)[2].strip()
        parsed = urllib.parse.urlparse(url)
        assert parsed.hostname == "127.0.0.1"
        base = f"{parsed.scheme}://{parsed.netloc}"
        with urllib.request.urlopen(f"{base}/check_health", timeout=10) as answer:  # noqa: S310 -- the test's own server
            assert answer.read() == b"model_explorer_ok"
        assert "graphs%3A%2F%2F" in url or "graphs://" in urllib.parse.unquote(url)  # the step's graph is loaded
        assert any(line.startswith("step 1:") for line in output)  # the report came first
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("flowcheck run --explore did not stop on Ctrl-C within 30 s")
    assert code == 0, "".join(output)  # gan_two_tapes: every source of both tapes receives
