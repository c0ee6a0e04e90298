"""The SVG and HTML reports open on the finding, in headless Chromium (Playwright, no network).

``flowcheck analyze`` writes both for a MobileNetV2 training step with one barrier; the SVG opened
as a file shows the barrier in its first view (its viewBox), and ``#whole`` fits every node; the
HTML report's first view contains the barrier and "fit" shows the whole graph. Screenshots go to
a tmp dir and to /tmp/flowcheck-shots/.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_cases import MOBILENET_STEP, chromium, keep

pytestmark = [
    pytest.mark.browser,
    pytest.mark.dot,
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import tensorflow as tf

    root = tmp_path_factory.mktemp("views")
    script = root / "mobilenet_step.py"
    script.write_text(MOBILENET_STEP, encoding="utf-8")
    svg, html = root / "mobilenet.svg", root / "mobilenet.html"
    command = [sys.executable, "-m", "flowcheck.cli", "analyze", str(script), "--no-verify", "-o", str(svg), "-o", str(html)]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 1, done.stdout + done.stderr  # a finding: the step's site has cut sources
    # The truth the pictures show: the tape gives the calibration head None.
    ns: dict[str, Any] = {}
    exec(compile(MOBILENET_STEP, str(script), "exec"), ns)  # noqa: S102 -- the test's own script
    model = ns["model"]
    x, y = ns["example_inputs"]
    head = [v.value for v in model.variables if v.path.startswith("calibration/")]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(head)
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True))
    assert [g is None for g in tape.gradient(loss, head)] == [True, True]
    return {"svg": svg, "html": html}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def _page(browser: Any) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://") else route.abort())
    return context.new_page()


def _inside(inner: dict[str, float], outer: dict[str, float]) -> bool:
    cx, cy = inner["x"] + inner["width"] / 2, inner["y"] + inner["height"] / 2
    return outer["x"] <= cx <= outer["x"] + outer["width"] and outer["y"] <= cy <= outer["y"] + outer["height"]


def test_svg_opens_on_the_barrier_and_whole_fits_everything(browser: Any, reports: dict[str, Path], tmp_path: Path) -> None:
    page = _page(browser)
    page.goto(reports["svg"].as_uri())
    window = {"x": 0.0, "y": 0.0, "width": 1280.0, "height": 900.0}
    barrier = page.locator("g.node.barrier").first.bounding_box()
    assert barrier is not None and _inside(barrier, window)
    assert "StopGradient" in page.locator("g.node.barrier").first.text_content()
    blocked = page.locator("g.node.variable.blocked")
    assert blocked.count() == 2 and all(_inside(blocked.nth(i).bounding_box(), window) for i in range(2))
    page.screenshot(path=str(tmp_path / "svg-mobilenetv2.png"))
    keep(tmp_path / "svg-mobilenetv2.png")
    first, full = page.locator("svg").get_attribute("viewBox"), page.locator("svg").get_attribute("data-full-viewbox")
    area = [float(v.split()[2]) * float(v.split()[3]) for v in (first, full)]
    assert area[0] < area[1]  # the first view is a part of the graph
    page.locator("a.fc-svg-only", has_text="show the whole graph").click()
    page.wait_for_timeout(300)
    svg_box = page.locator("svg").bounding_box()
    loss = page.locator("g.node.loss").first.bounding_box()
    assert loss is not None and _inside(loss, svg_box)
    page.screenshot(path=str(tmp_path / "svg-mobilenetv2-whole.png"))
    keep(tmp_path / "svg-mobilenetv2-whole.png")


def test_html_opens_on_the_barrier_and_fit_shows_the_whole_graph(browser: Any, reports: dict[str, Path], tmp_path: Path) -> None:
    page = _page(browser)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(reports["html"].as_uri())
    page.wait_for_selector(".fc-diagram svg g.node")
    view = page.locator(".fc-diagram").bounding_box()
    barrier = page.locator(".fc-diagram g.node.barrier").first.bounding_box()
    assert view is not None and barrier is not None and _inside(barrier, view)
    page.locator(".fc-diagram").screenshot(path=str(tmp_path / "html-mobilenetv2.png"))
    keep(tmp_path / "html-mobilenetv2.png")
    first = page.locator(".fc-diagram svg").get_attribute("viewBox")
    page.locator(".fc-fit").click()
    fitted = page.locator(".fc-diagram svg").get_attribute("viewBox")
    assert float(fitted.split()[3]) > float(first.split()[3])  # the whole graph is taller than the finding
    nodes = page.locator(".fc-diagram g.node")
    assert all(_inside(nodes.nth(i).bounding_box(), view) for i in range(0, nodes.count(), max(1, nodes.count() // 20)))
    page.locator(".fc-diagram").screenshot(path=str(tmp_path / "html-mobilenetv2-fit.png"))
    keep(tmp_path / "html-mobilenetv2-fit.png")
    assert "report.verify()" not in page.inner_text("body") and "--no-verify" in page.inner_text("body")
    assert errors == []
