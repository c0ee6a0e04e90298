"""``flowcheck analyze ... --explore`` as a person uses it: Model Explorer in headless Chromium.

The test starts the command on 127.0.0.1 (a free port, chosen by flowcheck), reads the URL it
prints, opens it through Playwright with Debian's Chromium (every request off 127.0.0.1 refused),
finds the barrier with Model Explorer's own search, checks that the verdict overlay is applied and
the blame-path edge overlay can be shown, saves a screenshot (a tmp dir, and a copy in
/tmp/flowcheck-shots/ for people), then stops the server with Ctrl-C.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_cases import MOBILENET_STEP, chromium, keep

ROOT = Path(__file__).resolve().parents[1]
START_S = 240.0

pytestmark = [
    pytest.mark.browser,
]
model_explorer = pytest.importorskip("model_explorer", reason="the flowcheck[explore] extra is not installed")



class Served:
    """The ``flowcheck analyze --explore`` process and the URL it printed."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flowcheck.cli", "analyze", *args, "--explore"], cwd=cwd, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def url(self) -> str:
        while True:
            try:
                line = self.lines.get(timeout=START_S)
            except queue.Empty:
                pytest.fail(f"no Model Explorer URL within {START_S:g} s:\n{''.join(self.output)}")
            if line.startswith("Model Explorer: http://127.0.0.1:"):
                return line.split(" ", 2)[2].strip()
            if self.proc.poll() is not None and self.lines.empty():
                pytest.fail(f"flowcheck exited {self.proc.returncode}:\n{''.join(self.output)}")

    def stop(self) -> int:
        """Ctrl-C, as a person stops it; the exit status."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("flowcheck did not stop on Ctrl-C within 30 s")


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def explore(browser: Any, served: Served, barrier: str, shot: Path) -> str:
    """Open the page, find the barrier whose op name ends in ``barrier`` by search, show the overlays;
    the page's text with it selected."""
    url = served.url()
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    outside: list[str] = []

    def local_only(route: Any) -> None:
        if route.request.url.startswith("http://127.0.0.1:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", local_only)
    page = context.new_page()
    page.goto(url)
    page.get_by_text("flowcheck verdicts").first.wait_for(timeout=60_000)  # the node-data overlay is loaded
    search = page.get_by_placeholder("Search nodes/layers by regex")
    search.fill("GRADIENT STOPS HERE")  # flowcheck's attribute on every barrier
    search.press("Enter")
    # Alt+click on a search result locates and selects the node: its attributes fill the side panel.
    page.locator(f'mat-tree-node[data-id$="{barrier}"]').first.click(modifiers=["Alt"])
    page.get_by_text("GRADIENT STOPS HERE", exact=False).first.wait_for(state="attached", timeout=30_000)
    text = page.inner_text("body")
    page.get_by_text("polyline", exact=True).click()
    overlay = page.locator(".cdk-overlay-container input[type=checkbox]").first
    if not overlay.is_checked():
        overlay.check()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(shot))
    keep(shot)
    assert overlay.is_checked()
    context.close()
    return text


@pytest.mark.slow
def test_seed_in_model_explorer(browser: Any, tmp_path: Path) -> None:
    served = Served(["examples/seed_stop_gradient.py"], ROOT)
    try:
        text = explore(browser, served, "StopGradient", tmp_path / "explorer-seed.png")
    finally:
        code = served.stop()
    assert "GRADIENT STOPS HERE: blocks w1" in text and "seed_stop_gradient.py:26" in text
    assert "flowcheck verdicts" in text
    assert code == 0, "".join(served.output)


@pytest.mark.slow
def test_mobilenet_train_step_in_model_explorer(browser: Any, tmp_path: Path) -> None:
    script = tmp_path / "mobilenet_step.py"
    script.write_text(MOBILENET_STEP, encoding="utf-8")
    served = Served([str(script), "--no-verify"], tmp_path)
    try:
        text = explore(browser, served, "frozen_calibration_1/StopGradient", tmp_path / "explorer-mobilenetv2.png")
    finally:
        code = served.stop()
    assert "GRADIENT STOPS HERE: blocks calibration/kernel calibration/bias" in text
    assert "flowcheck verdicts" in text
    assert code == 1, "".join(served.output)  # a finding: the step's site has cut sources
