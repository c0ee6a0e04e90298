"""pytest plugin, registered through the ``pytest11`` entry point (active once flowcheck is installed).

``pytest --flowcheck-report-dir DIR`` saves the HTML report of every failed flowcheck assertion
(:func:`flowcheck.assert_gradient_flow`, :func:`flowcheck.assert_all_trainable_receive`, the Keras
callback with ``on_blocked="raise"``) as ``DIR/<test id>.html`` and adds its path to the failure
message. Without the option the plugin does nothing, and it never imports TensorFlow.

The fixture ``gradient_flow_snapshot`` pins a function's whole gradient flow:
``gradient_flow_snapshot.assert_match(fn, *args)`` compares it with the snapshot stored in
``__snapshots__/`` next to the test (see :mod:`flowcheck.snapshot.fixture`);
``--flowcheck-update-snapshots`` rewrites the snapshots that differ.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from flowcheck.snapshot.fixture import GradientFlowSnapshot

__all__ = ["gradient_flow_snapshot", "pytest_addoption", "pytest_runtest_makereport", "pytest_terminal_summary"]

_SAVED = pytest.StashKey[list[Path]]()
_SNAPSHOTS = pytest.StashKey[list[tuple[str, Path]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--flowcheck-report-dir``."""
    group = parser.getgroup("flowcheck", "gradient contracts (flowcheck)")
    group.addoption(
        "--flowcheck-report-dir",
        metavar="DIR",
        default=None,
        help="save the HTML report of every failed flowcheck assertion in DIR (created if missing)",
    )
    group.addoption(
        "--flowcheck-update-snapshots",
        action="store_true",
        default=False,
        help="rewrite the gradient-flow snapshots (gradient_flow_snapshot) that differ from the current flow",
    )


@pytest.fixture
def gradient_flow_snapshot(request: pytest.FixtureRequest) -> Generator[GradientFlowSnapshot, None, None]:
    """Compare a function's gradient flow with the snapshot stored next to the test:
    ``gradient_flow_snapshot.assert_match(fn, *args)``."""
    from flowcheck.snapshot.diff import in_ci
    from flowcheck.snapshot.fixture import GradientFlowSnapshot

    config = request.config
    test_name = _slug(request.node.nodeid.split("::", 1)[-1])
    snapshot = GradientFlowSnapshot(
        request.path, test_name, update=bool(config.getoption("flowcheck_update_snapshots")), ci=in_ci(),
        shown_from=Path(config.invocation_params.dir),
    )
    yield snapshot
    config.stash.setdefault(_SNAPSHOTS, []).extend(snapshot.written)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Save the report of a failed flowcheck assertion before pytest formats the failure."""
    directory = item.config.getoption("flowcheck_report_dir")
    # The error class can only have been raised if flowcheck.testing was imported.
    testing = sys.modules.get("flowcheck.testing")
    saved = None
    if directory and testing is not None and call.excinfo is not None:
        error = call.excinfo.value
        if isinstance(error, testing.GradientFlowAssertionError) and error.report_path is None:
            root = Path(item.config.invocation_params.dir, directory)
            saved, error.report_path = _save(error.report, root / f"{_slug(item.nodeid)}.html")
    report = yield  # the failure's text, made from the error's message, shows the report's path
    if saved is not None:
        if hasattr(report, "wasxfail"):  # an expected failure: no finding, no report
            saved.unlink(missing_ok=True)
        else:
            item.config.stash.setdefault(_SAVED, []).append(saved)
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """List where the reports went, and which snapshots were written, once, at the end of the run."""
    saved = terminalreporter.config.stash.get(_SAVED, [])
    if saved:
        terminalreporter.write_sep("-", f"flowcheck: {len(saved)} report{'s' if len(saved) != 1 else ''} saved")
        for path in saved:
            terminalreporter.write_line(str(path))
    snapshots = terminalreporter.config.stash.get(_SNAPSHOTS, [])
    if snapshots:
        counts = [f"{sum(s == status for s, _ in snapshots)} {status}" for status in ("written", "updated")]
        terminalreporter.write_sep("-", "flowcheck: gradient-flow snapshots " + ", ".join(
            c for c in counts if not c.startswith("0 ")))
        root = Path(terminalreporter.config.invocation_params.dir)
        for status, path in snapshots:
            terminalreporter.write_line(f"{status} {_relative(path, root)}")


def _save(report: Any, path: Path) -> tuple[Path | None, str]:
    """Save the report; return its path (None on failure) and what to show in the failure."""
    from flowcheck.errors import FlowcheckError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        saved = Path(report.save(path, written_by="pytest")).resolve()
    except (FlowcheckError, OSError) as exc:  # the test already failed: say why there is no report
        return None, f"not saved ({type(exc).__name__}: {exc})"
    return saved, str(saved)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _slug(nodeid: str) -> str:
    """A file name from a test id: ``tests/test_a.py::test_b[x-1]`` -> ``tests_test_a.py__test_b_x-1``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.replace("::", "__")).strip("_") or "test"
