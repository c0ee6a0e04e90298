"""The ``gradient_flow_snapshot`` pytest fixture's object (the fixture itself is in the plugin).

Snapshots live next to the test, as syrupy keeps them: ``__snapshots__/<test module>/<test>.flow.toml``
(``<test>.1.flow.toml``, ... for further calls in one test). A missing snapshot is written and
reported at the end of the run, except under ``CI=true``, where it fails the test; a changed one
fails the test with the diff; ``pytest --flowcheck-update-snapshots`` rewrites changed ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

from flowcheck._report import Report
from flowcheck.snapshot.diff import SnapshotCheck

__all__ = ["SUFFIX", "GradientFlowSnapshot"]

SUFFIX: Final = ".flow.toml"
_UPDATE_OPTION: Final = "--flowcheck-update-snapshots"


class GradientFlowSnapshot:
    """Compare a function's gradient flow with the snapshot stored for the running test.

    Attributes:
        directory: Where this test's snapshots are (``__snapshots__/<test module>``).
        update: Rewrite snapshots that differ (``--flowcheck-update-snapshots``).
        ci: Fail instead of writing a missing snapshot (``CI=true``).
        written: ``(status, path)`` of every file this fixture wrote (``"written"``, ``"updated"``).
    """

    def __init__(self, test_file: Path, test_name: str, *, update: bool, ci: bool, shown_from: Path) -> None:
        """``test_name`` is already a file name (the plugin's slug of the test id)."""
        self.directory = Path(test_file).parent / "__snapshots__" / Path(test_file).stem
        self.update = update
        self.ci = ci
        self.written: list[tuple[str, Path]] = []
        self._name = test_name
        self._calls = 0
        self._shown_from = shown_from

    def __repr__(self) -> str:
        return f"<gradient_flow_snapshot {self._shown(self.directory / (self._name + SUFFIX))}>"

    def assert_match(self, fn: Any, *args: Any, **kwargs: Any) -> Report:
        """Assert that the gradient flow of ``fn(*args, **kwargs)`` is the one stored for this test.

        Args:
            fn: What :func:`flowcheck.analyze` takes, or a :class:`flowcheck.Report` (no inputs then).
            *args: Example inputs for ``fn``.
            **kwargs: Keyword inputs for ``fn``.

        Returns:
            The :class:`flowcheck.Report`.

        Raises:
            GradientFlowAssertionError: the flow differs from the snapshot (with the diff), or
                there is no snapshot and ``CI`` is set.
            SnapshotError: the stored snapshot cannot be read.
        """
        __tracebackhide__ = True
        from flowcheck.snapshot.build import snapshot_of
        from flowcheck.snapshot.diff import check_snapshot
        from flowcheck.testing import GradientFlowAssertionError, _report_of

        report = _report_of(fn, *args, **kwargs)
        path = self.directory / f"{self._name}{f'.{self._calls}' if self._calls else ''}{SUFFIX}"
        self._calls += 1
        check = check_snapshot(snapshot_of(report, path.parent), path, update=self.update, create=not self.ci)
        if check.status in ("written", "updated"):
            self.written.append((check.status, path))
        message = self._failure(check, report.target, self._shown(path))
        if message is not None:
            raise GradientFlowAssertionError(message, report)
        return report

    def _shown(self, path: Path) -> str:
        try:
            return os.path.relpath(path, self._shown_from)
        except ValueError:
            return str(path)

    def _failure(self, check: SnapshotCheck, target: str, shown: str) -> str | None:
        from flowcheck.snapshot.diff import format_check

        if check.status == "missing":
            return (f"no gradient-flow snapshot {shown} for {target}, and CI is set: snapshots are not written "
                    f"in CI; run pytest {_UPDATE_OPTION} (or the test without CI) and commit the file")
        if check.status == "changed":
            lines = format_check(check, target, shown)
            lines.append(f"if the change is intended, run pytest {_UPDATE_OPTION} and commit {shown}")
            return "\n".join(lines)
        return None
