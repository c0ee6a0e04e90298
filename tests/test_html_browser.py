"""The HTML report in a real browser: Debian's headless Chromium driven by Playwright.

Playwright is pointed at ``/usr/bin/chromium`` and never downloads a browser. The page is the
seed example's report, loaded from ``file://`` with every network request refused.
"""

from __future__ import annotations

import os
import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowcheck

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
SEED = Path(__file__).resolve().parents[1] / "examples" / "seed_stop_gradient.py"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.dot,
]


@pytest.fixture(scope="module")
def seed_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import tensorflow as tf

    ns = runpy.run_path(str(SEED))
    report = flowcheck.analyze(ns["loss_fn"], *ns["example_inputs"])
    check = report.verify(optimizer="sgd", learning_rate=1.0)
    # The truth the page must show, from the tape itself.
    with tf.GradientTape() as tape:
        loss = ns["loss_fn"](*ns["example_inputs"])
    grads = tape.gradient(loss, [ns["w1"], ns["w2"]])
    assert [g is None for g in grads] == [True, False] and check.agrees
    return report.save(tmp_path_factory.mktemp("html") / "seed.html")


@pytest.fixture(scope="module")
def page(seed_page: Path) -> Iterator[Any]:
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            requests: list[str] = []

            def offline(route: Any) -> None:
                requests.append(route.request.url)
                if route.request.url.startswith("file://"):
                    route.continue_()
                else:
                    route.abort()

            context.route("**/*", offline)
            tab = context.new_page()
            errors: list[str] = []
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.goto(seed_page.as_uri())
            tab.wait_for_selector(".fc-diagram svg g.node")
            yield tab
            assert errors == [], f"script errors: {errors}"
            assert all(url.startswith("file://") for url in requests), f"the page fetched {requests}"
        finally:
            browser.close()


def test_table_lists_every_variable_with_its_verdict_and_the_tape(page: Any) -> None:
    rows = page.locator("table.fc-variables tbody tr")
    assert rows.count() == 2
    texts = {rows.nth(i).locator("td").first.inner_text(): rows.nth(i).inner_text() for i in range(2)}
    assert "blocked" in texts["w1"] and "seed_stop_gradient.py:26" in texts["w1"] and "none" in texts["w1"]
    assert "receives" in texts["w2"] and "nonzero" in texts["w2"]
    assert "agrees" in page.locator(".fc-verification").inner_text()


def test_diagram_renders_with_its_variables_barrier_and_loss(page: Any) -> None:
    svg = page.locator(".fc-diagram svg")
    box = svg.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 200
    for selector in ('[id="var-0"]', '[id="var-1"]', "g.node.barrier", "g.node.loss", "g.edge.barrier"):
        node = page.locator(f".fc-diagram svg {selector}").first
        assert node.is_visible(), selector
    assert "w1" in page.locator('.fc-diagram svg [id="var-0"]').text_content()


def test_clicking_a_row_highlights_its_variable(page: Any) -> None:
    page.locator('tr[data-node="var-0"]').click()
    assert "fc-hl" in page.locator('[id="var-0"]').get_attribute("class")
    assert "fc-hl" not in page.locator('[id="var-1"]').get_attribute("class")
    assert "fc-selected" in page.locator('tr[data-node="var-0"]').get_attribute("class")
    page.locator('tr[data-node="var-1"]').click()
    assert "fc-hl" in page.locator('[id="var-1"]').get_attribute("class")
    assert "fc-hl" not in page.locator('[id="var-0"]').get_attribute("class")
    # The highlighted node is in view after the click.
    node, view = page.locator('[id="var-1"]').bounding_box(), page.locator(".fc-diagram").bounding_box()
    cx, cy = node["x"] + node["width"] / 2, node["y"] + node["height"] / 2
    assert view["x"] <= cx <= view["x"] + view["width"] and view["y"] <= cy <= view["y"] + view["height"]


def test_sorting_and_zoom(page: Any) -> None:
    head = page.locator("table.fc-variables th", has_text="Verdict")
    head.click()  # ascending: blocked before receives
    first = page.locator("table.fc-variables tbody tr").first.locator("td").first.inner_text()
    head.click()
    again = page.locator("table.fc-variables tbody tr").first.locator("td").first.inner_text()
    assert (first, again) == ("w1", "w2")
    before = page.locator(".fc-diagram svg").get_attribute("viewBox")
    page.locator(".fc-zoom-in").click()
    after = page.locator(".fc-diagram svg").get_attribute("viewBox")
    assert float(after.split()[2]) < float(before.split()[2])
