"""pytest plugin, registered through the ``pytest11`` entry point (active once flowcheck is installed).

``pytest --flowcheck-report-dir DIR`` saves the HTML report of every failed flowcheck assertion
(:func:`flowcheck.assert_gradient_flow`, :func:`flowcheck.assert_all_trainable_receive`, the Keras
callback with ``on_blocked="raise"``) as ``DIR/<test id>.html`` and adds its path to the failure
message. Without the option the plugin does nothing, and it never imports TensorFlow.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["pytest_addoption", "pytest_runtest_makereport", "pytest_terminal_summary"]

_SAVED = pytest.StashKey[list[Path]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--flowcheck-report-dir``."""
    group = parser.getgroup("flowcheck", "gradient contracts (flowcheck)")
    group.addoption(
        "--flowcheck-report-dir",
        metavar="DIR",
        default=None,
        help="save the HTML report of every failed flowcheck assertion in DIR (created if missing)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Save the report of a failed flowcheck assertion before pytest formats the failure."""
    directory = item.config.getoption("flowcheck_report_dir")
    # The error class can only have been raised if flowcheck.testing was imported.
    testing = sys.modules.get("flowcheck.testing")
    if directory and testing is not None and call.excinfo is not None:
        error = call.excinfo.value
        if isinstance(error, testing.GradientFlowAssertionError) and error.report_path is None:
            root = Path(item.config.invocation_params.dir, directory)
            saved, error.report_path = _save(error.report, root / f"{_slug(item.nodeid)}.html")
            if saved is not None:
                item.config.stash.setdefault(_SAVED, []).append(saved)
    return (yield)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """List where the reports went, once, at the end of the run."""
    saved = terminalreporter.config.stash.get(_SAVED, [])
    if saved:
        terminalreporter.write_sep("-", f"flowcheck: {len(saved)} report{'s' if len(saved) != 1 else ''} saved")
        for path in saved:
            terminalreporter.write_line(str(path))


def _save(report: Any, path: Path) -> tuple[Path | None, str]:
    """Save the report; return its path (None on failure) and what to show in the failure."""
    from flowcheck.errors import FlowcheckError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        saved = Path(report.save(path, written_by="pytest")).resolve()
    except (FlowcheckError, OSError) as exc:  # the test already failed: say why there is no report
        return None, f"not saved ({type(exc).__name__}: {exc})"
    return saved, str(saved)


def _slug(nodeid: str) -> str:
    """A file name from a test id: ``tests/test_a.py::test_b[x-1]`` -> ``tests_test_a.py__test_b_x-1``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.replace("::", "__")).strip("_") or "test"
