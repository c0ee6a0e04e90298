"""``--snapshot FILE``, ``--check FILE`` and ``--update`` of the command line.

Kept apart from :mod:`flowcheck.cli` so that any command that produces a :class:`Report`
(``flowcheck analyze``, ``flowcheck run``) wires them the same way: :func:`add_options`
on its parser, :func:`validate` before the slow part, :func:`record` once the report exists, and
:func:`check_output` for the exit status of ``--check``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from flowcheck.errors import TargetLoadError

if TYPE_CHECKING:
    from flowcheck._report import Report
    from flowcheck.snapshot.diff import SnapshotCheck
    from flowcheck.snapshot.model import Snapshot

__all__ = ["add_options", "check_output", "record", "record_snapshot", "validate"]


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--snapshot``, ``--check`` and ``--update`` to a command's parser."""
    parser.add_argument("--snapshot", metavar="FILE",
                        help="write the gradient-flow snapshot (every variable's verdict and barriers) to FILE")
    parser.add_argument("--check", metavar="FILE",
                        help="compare the gradient flow with the snapshot FILE: exit 1 with a diff when it changed")
    parser.add_argument("--update", action="store_true",
                        help="with --check: rewrite FILE to the current flow and say what changed")


def validate(ns: argparse.Namespace) -> None:
    """Refuse what cannot work before anything slow runs (exit status 2).

    Raises:
        TargetLoadError: ``--update`` without ``--check``, or ``--check`` with ``--json``.
        SnapshotError: the ``--check`` file is missing (without ``--update``) or unreadable.
    """
    from flowcheck.snapshot.diff import read_snapshot

    if ns.update and not ns.check and not ns.snapshot:
        raise TargetLoadError("--update rewrites the snapshot given by --check FILE: add --check FILE")
    if ns.check and ns.json:
        raise TargetLoadError("--check prints a diff, not JSON: drop --json (--snapshot FILE works with --json)")
    if ns.check and not ns.update and not Path(ns.check).exists():
        raise TargetLoadError(
            f"no snapshot {ns.check} to check against: record it first with --snapshot {ns.check} (or add --update)"
        )
    if ns.check and Path(ns.check).exists():
        read_snapshot(ns.check)  # a broken file is a usage error, found before tracing


def record(ns: argparse.Namespace, report: Report, err: TextIO) -> SnapshotCheck | None:
    """Write ``--snapshot`` (saying on ``err`` what changed) and compare with ``--check``.

    Returns:
        The ``--check`` comparison, or None without ``--check``.
    """
    from flowcheck.snapshot.build import snapshot_of

    return record_snapshot(ns, lambda root: snapshot_of(report, root), report.target, err)


def record_snapshot(
    ns: argparse.Namespace, snapshot: Callable[[Path], Snapshot], target: str, err: TextIO
) -> SnapshotCheck | None:
    """:func:`record` for any flow: ``snapshot(folder)`` makes it with files relative to ``folder``."""
    from flowcheck.snapshot.diff import check_snapshot, format_check

    if ns.snapshot:
        written = check_snapshot(snapshot(Path(ns.snapshot).parent), ns.snapshot, update=True)
        if not ns.json:
            head, *rest = format_check(written, target, ns.snapshot)
            err.write("\n".join([f"flowcheck: {head}", *rest]) + "\n")
    if not ns.check:
        return None
    return check_snapshot(snapshot(Path(ns.check).parent), ns.check, update=ns.update, create=False)


def check_output(check: SnapshotCheck, target: str, shown: str, reasons: Sequence[str], out: TextIO) -> int:
    """Print what ``--check`` found and the verdict line; return the exit status."""
    from flowcheck.snapshot.diff import format_check

    head, *rest = format_check(check, target, shown)
    lines = [f"flowcheck: {head}", *rest, ""]
    failing = list(reasons)
    if check.failed:
        failing.insert(0, f"the gradient flow changed: if that is intended, run again with --update and commit {shown}")
    if failing:
        lines.append("FAILED: " + "; ".join(failing))
    elif check.status == "same" and check.diff is not None and check.diff.moved:
        lines.append(f"OK: {shown} records the current gradient flow (add --update to record the new lines)")
    else:
        lines.append(f"OK: {shown} records the current gradient flow")
    out.write("\n".join(lines) + "\n")
    return 1 if failing else 0
