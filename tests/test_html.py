"""The HTML page's texts, by who writes it (pure; no browser, no Graphviz)."""

from __future__ import annotations

import pytest

import flowcheck
from flowcheck.render.html import UNVERIFIED, to_html

SVG = '<svg viewBox="0 0 10 10" data-full-viewbox="0 0 10 10"><g id="graph0"></g></svg>'


@pytest.mark.parametrize(("written_by", "says"), [
    ("api", "report.verify()"),
    ("cli", "--no-verify"),
    ("keras", "GradientFlowCheck(verify=True)"),
    ("pytest", "the test's failure message says what the gradient-flow assertion found"),
])
def test_an_unverified_report_tells_its_reader_what_to_do(written_by: str, says: str) -> None:
    page = to_html(SVG, [], title="t", written_by=written_by)
    assert says in page
    others = [text for key, text in UNVERIFIED.items() if key != written_by]
    assert not any(text in page for text in others)
    if written_by in ("keras", "pytest"):
        assert "report.verify()" not in page  # they never hold the report


def test_unknown_writer_is_refused() -> None:
    with pytest.raises(flowcheck.RenderError, match="'api', 'cli', 'keras', 'pytest'"):
        to_html(SVG, [], title="t", written_by="notebook")
