"""Gradient-flow snapshots: the whole flow of a report as plain data, and its text format.

A snapshot holds one section per loss (and, once gradient sites exist, one per site: a
``tape.gradient`` call, ``optimizer.minimize``, a Keras ``train_step``, keyed by its kind and
``file:line``). Each section maps every variable name, as the report shows it, to its verdict and,
for a blocked variable, the barriers that cut it: kind, op type, file (relative to the snapshot's
folder, so the file is the same in every clone) and line. Nothing else (no op names, no flowcheck
version) goes in, so the bytes change only when the gradient flow does.

The text is a small subset of TOML, sorted, one variable a line, read back by :func:`parse_snapshot`
without a TOML library::

    # flowcheck gradient-flow snapshot: review changes like code; rewrite with --update
    format = 1
    target = "loss_fn"
    raises = ["no_gradient DenseBincount at model.py:12"]    (only when the tape would raise)

    [loss."loss"]
    "w1" = { verdict = "blocked", cut = ["stop_gradient StopGradient at model.py:26"] }
    "w2" = { verdict = "receives" }

    [site."tape.gradient"."train.py:42"]                      (reserved for gradient sites)

Comparing two snapshots is :mod:`flowcheck._snapshot_diff`. Nothing here imports TensorFlow or
touches disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from flowcheck._analysis import Verdict
from flowcheck._site_analysis import unique

if TYPE_CHECKING:
    from flowcheck._report import Barrier, Report
    from flowcheck._sites import GradientSite

__all__ = [
    "FORMAT_VERSION",
    "SECTION_KINDS",
    "Cut",
    "Flow",
    "Section",
    "Snapshot",
    "format_snapshot",
    "parse_snapshot",
    "site_section",
    "sites_snapshot",
    "snapshot_of",
]

FORMAT_VERSION: Final = 1
SECTION_KINDS: Final = ("loss", "site")
_HEADER: Final = "# flowcheck gradient-flow snapshot: review changes like code; rewrite with --update"


@dataclass(frozen=True, order=True)
class Cut:
    """A barrier as a snapshot stores it.

    Attributes:
        kind: Why the gradient stops (a :class:`BarrierKind` value).
        op_type: The op's type (``StopGradient``, ``Cast``, ...).
        file: The user's file that made it, ``/``-separated, relative to the snapshot's folder
            ("" when no line of user code made it).
        line: The line in that file (0 when there is no file).
    """

    kind: str
    op_type: str
    file: str = ""
    line: int = 0

    def __str__(self) -> str:
        where = f" at {self.file}:{self.line}" if self.file else ""
        return f"{self.kind} {self.op_type}{where}"

    @property
    def label(self) -> str:
        """How a diff names it: ``StopGradient at model.py:42`` (the kind too when the type hides it)."""
        what = self.op_type if self.kind.replace("_", "") == self.op_type.lower() else f"{self.op_type} ({self.kind})"
        return f"{what} at {self.file}:{self.line}" if self.file else what


@dataclass(frozen=True)
class Flow:
    """One variable's entry: its verdict and, when blocked, the cuts (sorted, each once)."""

    verdict: Verdict
    cuts: tuple[Cut, ...] = ()

    @property
    def label(self) -> str:
        """``blocked (StopGradient at model.py:42)``, or just the verdict."""
        if not self.cuts:
            return self.verdict.value
        shown = ", ".join(c.label for c in self.cuts[:3])
        more = f", and {len(self.cuts) - 3} more" if len(self.cuts) > 3 else ""
        return f"{self.verdict.value} ({shown}{more})"


@dataclass(frozen=True)
class Section:
    """The flow from one loss (or one gradient site) to every variable.

    Attributes:
        kind: ``"loss"`` or ``"site"``.
        name: The loss's name, or the site's kind (``"tape.gradient"``).
        file: For a site, the file of the call (relative to the snapshot's folder).
        line: For a site, its line.
        variables: ``(name, flow)`` pairs sorted by name.
    """

    kind: str
    name: str
    variables: tuple[tuple[str, Flow], ...]
    file: str = ""
    line: int = 0

    @property
    def title(self) -> str:
        """How a diff names the section: ``loss 'd_loss'``, ``site tape.gradient at train.py:42``."""
        if self.kind == "site":
            return f"site {self.name} at {self.file}:{self.line}"
        return f"{self.kind} {self.name!r}"

    @property
    def flows(self) -> Mapping[str, Flow]:
        """The variables as a mapping."""
        return dict(self.variables)


@dataclass(frozen=True)
class Snapshot:
    """The gradient flow of a target, as stored in a snapshot file.

    Attributes:
        target: The analyzed target's name (shown, never compared).
        sections: One per loss (and per gradient site), sorted.
        raises: Ops with no gradient that a gradient reaches: the tape raises at each.
        version: The format version it was written in.
    """

    target: str
    sections: tuple[Section, ...]
    raises: tuple[Cut, ...] = ()
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        # One order, whatever the order given: equal flows compare equal and format the same.
        object.__setattr__(self, "sections", tuple(sorted(self.sections, key=_section_key)))
        object.__setattr__(self, "raises", tuple(sorted(set(self.raises))))

    @property
    def variable_count(self) -> int:
        """How many distinct variables the sections name."""
        return len({name for s in self.sections for name, _ in s.variables})


# --- from a report ------------------------------------------------------------------------------


def snapshot_of(report: Report, root: str | os.PathLike[str] | None = None) -> Snapshot:
    """The gradient flow of ``report``: one section per loss, each variable's verdict and cuts.

    Args:
        report: The analysis.
        root: The folder the snapshot file will live in: files are stored relative to it
            (default: the working directory).

    Returns:
        A :class:`Snapshot`; the same report always gives the same snapshot.
    """
    from flowcheck.testing import _loss_barriers

    if report.gradient_sites:  # a training step: its findings are its gradient calls
        return sites_snapshot(report.target, report.gradient_sites, root, _cuts(report.gradient_errors, _base(root)))
    base = _base(root)
    names = _unique_names([r.name for r in report.variables])
    sections = []
    for loss in report.losses:
        barriers = _loss_barriers(report, report.variables, loss)
        flows = []
        for name, r in zip(names, report.variables):
            verdict = r.per_loss.get(loss, r.verdict)
            cuts = _cuts(barriers.get(id(r.variable), ()), base) if verdict is Verdict.BLOCKED else ()
            flows.append((name, Flow(verdict, cuts)))
        sections.append(Section("loss", loss, tuple(sorted(flows))))
    return Snapshot(
        target=report.target, sections=tuple(sections), raises=_cuts(report.gradient_errors, base),
    )


def sites_snapshot(
    target: str, sites: Sequence[GradientSite], root: str | os.PathLike[str] | None = None, raises: tuple[Cut, ...] = (),
) -> Snapshot:
    """The gradient flow at gradient sites: one section per call, each source's verdict and cuts.

    ``flowcheck run`` puts every analyzed step's sites in one snapshot (a GAN's two steps).
    """
    base = _base(root)
    sections = []
    for site in sites:
        flows = [
            (name, Flow(src.verdict, _cuts(src.barriers, base) if src.verdict is Verdict.BLOCKED else ()))
            for name, src in zip(_unique_names([src.name for src in site.sources]), site.sources)
        ]
        # A call made by library code (Keras's own train_step) has no line of the user's.
        file, line = (_relative(site.source.file, base), site.source.line) if site.source is not None else ("(library)", 0)
        sections.append(Section("site", site.kind, tuple(sorted(flows)), file, line))
    return Snapshot(target=target, sections=tuple(sections), raises=raises)


def _base(root: str | os.PathLike[str] | None) -> str:
    return os.path.abspath(root if root is not None else os.curdir)


def site_section(
    report: Report, kind: str, file: str, line: int, root: str | os.PathLike[str] | None = None
) -> Section:
    """A gradient site's section: the verdicts of ``report`` (the site's own analysis) for its total loss.

    For ``flowcheck run``'s gradient sites (a ``tape.gradient``, ``optimizer.minimize`` or Keras
    ``train_step`` call): put the sections in a :class:`Snapshot` of their own, or next to
    :func:`snapshot_of`'s.

    Args:
        report: The analysis of what the call differentiates.
        kind: The call's kind, e.g. ``"tape.gradient"``.
        file: The file of the call.
        line: Its line.
        root: The snapshot file's folder (default: the working directory).
    """
    base = os.path.abspath(root if root is not None else os.curdir)
    flows = [
        (name, Flow(r.verdict, _cuts(r.barriers, base) if r.verdict is Verdict.BLOCKED else ()))
        for name, r in zip(_unique_names([r.name for r in report.variables]), report.variables)
    ]
    return Section("site", kind, tuple(sorted(flows)), _relative(file, base), line)


def _unique_names(names: list[str]) -> list[str]:
    """Names as keys: a name given to several variables gets ``#2``, ``#3`` in the report's order."""
    return unique(names, "{name} #{n}")


def _cuts(barriers: tuple[Barrier, ...], base: str) -> tuple[Cut, ...]:
    found = set()
    for b in barriers:
        if b.source is None:
            found.add(Cut(b.kind.value, b.op_type))
        else:
            found.add(Cut(b.kind.value, b.op_type, _relative(b.source.file, base), b.source.line))
    return tuple(sorted(found))


def _relative(file: str, base: str) -> str:
    full = os.path.abspath(file)
    try:
        rel = os.path.relpath(full, base)
    except ValueError:  # another drive (Windows): keep it whole
        rel = full
    return Path(rel).as_posix()


def _section_key(section: Section) -> tuple[int, str, str, int]:
    return SECTION_KINDS.index(section.kind), section.name, section.file, section.line


# --- text ---------------------------------------------------------------------------------------


def format_snapshot(snapshot: Snapshot) -> str:
    """The snapshot's text: deterministic bytes, one variable a line, valid TOML."""
    lines = [_HEADER, f"format = {snapshot.version}", f"target = {_quote(snapshot.target)}"]
    if snapshot.raises:
        lines.append(f"raises = {_array(str(c) for c in snapshot.raises)}")
    for section in snapshot.sections:
        lines.append("")
        keys = [section.kind, section.name]
        if section.kind == "site":
            keys.append(f"{section.file}:{section.line}")
        lines.append("[" + ".".join([keys[0], *map(_quote, keys[1:])]) + "]")
        for name, flow in sorted(section.variables):
            cut = f", cut = {_array(str(c) for c in flow.cuts)}" if flow.cuts else ""
            lines.append(f"{_quote(name)} = {{ verdict = {_quote(flow.verdict.value)}{cut} }}")
    return "\n".join(lines) + "\n"


def _array(items: Iterator[str]) -> str:
    return "[" + ", ".join(_quote(i) for i in items) + "]"


_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _quote(text: str) -> str:
    """A TOML basic string (control characters escaped, as TOML requires)."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def parse_snapshot(text: str, name: str = "snapshot") -> Snapshot:
    """Read a snapshot written by :func:`format_snapshot` (see :mod:`flowcheck._snapshot_parse`).

    Args:
        text: The file's text.
        name: What to call it in errors (its path).

    Raises:
        SnapshotError: the text is not a snapshot of a format this flowcheck reads, with the
            line at fault.
    """
    from flowcheck._snapshot_parse import read

    return read(text, name)
