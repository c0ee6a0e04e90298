"""Comparing gradient-flow snapshots, and the one place that reads and writes snapshot files.

:func:`diff_snapshots` is pure: one :class:`Change` per variable whose flow changed, appeared or
disappeared (and per section or op-where-the-tape-raises that did). A barrier that only moved —
the same kind, op type and file at another line — is not a change; it is listed in
:attr:`SnapshotDiff.moved` so that the footer can say so. :func:`check_snapshot` is what the
command line, the pytest fixture and the Keras callback share: compare with the file, and write
it when asked to.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from flowcheck.errors import SnapshotError
from flowcheck.snapshot.model import Cut, Flow, Section, Snapshot
from flowcheck.snapshot.text import format_snapshot, parse_snapshot

__all__ = [
    "STATUSES",
    "Change",
    "Move",
    "SnapshotCheck",
    "SnapshotDiff",
    "check_snapshot",
    "diff_snapshots",
    "format_check",
    "format_diff",
    "in_ci",
    "read_snapshot",
    "write_snapshot",
]

STATUSES: Final = ("same", "changed", "written", "updated", "missing")
_NOT_CI: Final = frozenset({"", "0", "false", "no", "off"})
_RAISES: Final = "ops where differentiating raises (no gradient defined)"
_MOVES_SHOWN: Final = 3


@dataclass(frozen=True)
class Change:
    """One changed line of the flow: ``encoder/dense/kernel: receives -> blocked (...)``."""

    section: str
    text: str


@dataclass(frozen=True, order=True)
class Move:
    """A barrier (or gradient site) that is the same but sits at another line."""

    what: str
    file: str
    old_line: int
    new_line: int
    site: bool = False


@dataclass(frozen=True)
class SnapshotDiff:
    """What differs between a stored snapshot and the current flow.

    Attributes:
        changes: One per change, in a stable order.
        moved: Barriers and sites that only moved to another line (not changes).
        headers: Whether the lines need their section named (more than one section is involved).
    """

    changes: tuple[Change, ...]
    moved: tuple[Move, ...]
    headers: bool = False

    @property
    def same(self) -> bool:
        """True when the flow is unchanged (moved lines aside)."""
        return not self.changes


def diff_snapshots(old: Snapshot, new: Snapshot) -> SnapshotDiff:
    """The changes from ``old`` (the stored snapshot) to ``new`` (the current flow)."""
    changes: list[Change] = []
    moves: set[Move] = set()
    pairs, gone, came = _pair_sections(old.sections, new.sections, moves)
    for section in gone:
        changes.append(Change(section.title, f"disappeared (it had {_count(len(section.variables), 'variable')})"))
    for section in came:
        changes.append(Change(section.title, f"appeared: {_counts(section.flows)}"))
    for a, b in pairs:
        changes.extend(_compare_flows(b.title, a.flows, b.flows, moves))
    moved = _moved(old.raises, new.raises)
    if moved is None:
        changes.extend(Change(_RAISES, f"{c.label}: no longer reached") for c in old.raises if c not in new.raises)
        changes.extend(Change(_RAISES, f"{c.label}: appeared (the tape raises there)") for c in new.raises if c not in old.raises)
    else:
        moves.update(moved)
    titles = {s.title for s in (*old.sections, *new.sections)} | {c.section for c in changes}
    return SnapshotDiff(tuple(changes), tuple(sorted(moves)), headers=len(titles) > 1)


def _pair_sections(
    old: Sequence[Section], new: Sequence[Section], moves: set[Move]
) -> tuple[list[tuple[Section, Section]], list[Section], list[Section]]:
    """Sections paired by key; a site found at another line of the same file is the same site."""
    by_key = {(s.kind, s.name, s.file, s.line): s for s in new}
    pairs, gone = [], []
    for s in old:
        match = by_key.pop((s.kind, s.name, s.file, s.line), None)
        if match is None:
            gone.append(s)
        else:
            pairs.append((s, match))
    came = list(by_key.values())
    for key in sorted({(s.kind, s.name, s.file) for s in gone}):
        olds = sorted((s for s in gone if (s.kind, s.name, s.file) == key), key=lambda s: s.line)
        news = sorted((s for s in came if (s.kind, s.name, s.file) == key), key=lambda s: s.line)
        if len(olds) == len(news) and olds:
            for a, b in zip(olds, news):
                pairs.append((a, b))
                moves.add(Move(a.name, a.file, a.line, b.line, site=True))
                gone.remove(a)
                came.remove(b)
    return pairs, gone, came


def _compare_flows(title: str, old: Mapping[str, Flow], new: Mapping[str, Flow], moves: set[Move]) -> list[Change]:
    changes = []
    for name in sorted(old.keys() | new.keys()):
        a, b = old.get(name), new.get(name)
        if b is None and a is not None:
            changes.append(Change(title, f"{name}: disappeared (was {a.label})"))
        elif a is None and b is not None:
            changes.append(Change(title, f"{name}: appeared, {b.label}"))
        elif a is not None and b is not None and a != b:
            moved = _moved(a.cuts, b.cuts) if a.verdict is b.verdict else None
            if moved is None:
                changes.append(Change(title, f"{name}: {a.label} -> {b.label}"))
            else:
                moves.update(moved)
    return changes


def _moved(old: Sequence[Cut], new: Sequence[Cut]) -> list[Move] | None:
    """The moves that turn ``old`` into ``new``, or None when they differ by more than lines."""
    def groups(cuts: Iterable[Cut]) -> dict[tuple[str, str, str], list[int]]:
        found: dict[tuple[str, str, str], list[int]] = {}
        for c in cuts:
            found.setdefault((c.kind, c.op_type, c.file), []).append(c.line)
        return {k: sorted(v) for k, v in found.items()}

    a, b = groups(old), groups(new)
    if a.keys() != b.keys() or any(len(a[k]) != len(b[k]) for k in a):
        return None
    return [
        Move(key[1], key[2], x, y) for key, lines in a.items() for x, y in zip(lines, b[key]) if x != y
    ]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _counts(flows: Mapping[str, Flow]) -> str:
    verdicts: dict[str, int] = {}
    for flow in flows.values():
        verdicts[flow.verdict.value] = verdicts.get(flow.verdict.value, 0) + 1
    detail = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
    return _count(len(flows), "variable") + (f" ({detail})" if detail else "")


def format_diff(diff: SnapshotDiff, indent: str = "  ") -> list[str]:
    """The diff as lines: one per change (under its section's title when several are involved),
    then a footer line when barriers only moved."""
    lines: list[str] = []
    section = None
    for change in diff.changes:
        if diff.headers and change.section != section:
            section = change.section
            lines.append(f"{indent}{section}:")
        lines.append(f"{indent}{indent if diff.headers else ''}{change.text}")
    if diff.moved:
        shown = ", ".join(
            f"{'site ' if m.site else ''}{m.what} at {m.file}:{m.old_line} -> {m.new_line}" for m in diff.moved[:_MOVES_SHOWN]
        )
        more = f", and {len(diff.moved) - _MOVES_SHOWN} more" if len(diff.moved) > _MOVES_SHOWN else ""
        sites = sum(m.site for m in diff.moved)
        counts = [_count(n, noun) for n, noun in ((len(diff.moved) - sites, "barrier"), (sites, "site")) if n]
        lines.append(f"{indent}(not a change: {' and '.join(counts)} only moved to another line: {shown}{more})")
    return lines


# --- files --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotCheck:
    """The current flow against a snapshot file.

    Attributes:
        path: The snapshot file.
        status: ``"same"``, ``"changed"`` (the file is left alone), ``"written"`` (it did not
            exist and was created), ``"updated"`` (rewritten to the current flow) or
            ``"missing"`` (it does not exist and was not created).
        current: The current flow.
        diff: The comparison with the stored snapshot (None when there was none).
    """

    path: Path
    status: str
    current: Snapshot
    diff: SnapshotDiff | None = None

    @property
    def failed(self) -> bool:
        """True when the check fails: the flow changed, or there is no snapshot to check."""
        return self.status in ("changed", "missing")


def in_ci() -> bool:
    """True when the ``CI`` environment variable is set (``CI=true``): missing snapshots are not written."""
    return os.environ.get("CI", "").strip().lower() not in _NOT_CI


def read_snapshot(path: str | os.PathLike[str]) -> Snapshot:
    """Read a snapshot file.

    Raises:
        SnapshotError: it does not exist, cannot be read, or is not a snapshot.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SnapshotError(f"no snapshot {os.fspath(path)!r}: record one first (--snapshot FILE, or --update)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SnapshotError(f"cannot read the snapshot {os.fspath(path)!r}: {exc}") from exc
    return parse_snapshot(text, os.fspath(path))


def write_snapshot(path: str | os.PathLike[str], snapshot: Snapshot) -> Path:
    """Write ``snapshot`` to ``path`` (its folders created); returns the path.

    Raises:
        SnapshotError: the file cannot be written.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(format_snapshot(snapshot).encode("utf-8"))
    except OSError as exc:
        raise SnapshotError(f"cannot write the snapshot {os.fspath(path)!r}: {exc}") from exc
    return target


def check_snapshot(current: Snapshot, path: str | os.PathLike[str], *, update: bool = False, create: bool = True) -> SnapshotCheck:
    """Compare ``current`` with the snapshot at ``path``.

    Args:
        current: The current flow (from :func:`flowcheck.snapshot.build.snapshot_of` with the file's
            folder as root).
        path: The snapshot file.
        update: Rewrite the file to ``current`` when it differs (moved lines included).
        create: Write the file when it does not exist (otherwise the status is ``"missing"``).

    Raises:
        SnapshotError: the file exists but cannot be read or written, or is not a snapshot.
    """
    target = Path(path)
    if not target.exists():
        if update or create:
            return SnapshotCheck(write_snapshot(target, current), "written", current)
        return SnapshotCheck(target, "missing", current)
    stored = read_snapshot(target)
    diff = diff_snapshots(stored, current)
    if update and format_snapshot(stored) != format_snapshot(current):
        write_snapshot(target, current)
        return SnapshotCheck(target, "updated", current, diff)
    return SnapshotCheck(target, "same" if diff.same else "changed", current, diff)


def _size(snapshot: Snapshot) -> str:
    kinds = [s.kind for s in snapshot.sections]
    parts = [f"{kinds.count('loss')} loss{'es' if kinds.count('loss') != 1 else ''}"] if "loss" in kinds else []
    if "site" in kinds:
        parts.append(_count(kinds.count("site"), "gradient site"))
    return ", ".join([*parts, _count(snapshot.variable_count, "variable")])


def format_check(check: SnapshotCheck, target: str, shown: str | None = None) -> list[str]:
    """What a check found, as lines: a headline, then the diff's lines."""
    where = shown if shown is not None else os.fspath(check.path)
    size = _size(check.current)
    diff = check.diff
    body = format_diff(diff) if diff is not None else []
    n = _count(len(diff.changes), "change") if diff is not None else ""
    heads = {
        "same": f"gradient flow of {target} matches {where} ({size})",
        "changed": f"gradient flow of {target} differs from {where}: {n}",
        "written": f"wrote a new snapshot {where} ({size})",
        "updated": f"updated {where}: {n}" if diff is not None and diff.changes else f"updated {where}: no change, new lines",
        "missing": f"no snapshot {where} for {target}",
    }
    return [heads[check.status], *body]
