"""A report's gradient flow as a :class:`~flowcheck.snapshot.model.Snapshot`: one section per loss, or per gradient site.

Each section maps every variable name, as the report shows it, to its verdict and, for a blocked
variable, the barriers that cut it: kind, op type, file (relative to the snapshot's folder, so the
file is the same in every clone) and line. Nothing else (no op names, no flowcheck version) goes in,
so the bytes change only when the gradient flow does. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from flowcheck._model import Verdict
from flowcheck.snapshot.model import Cut, Flow, Section, Snapshot
from flowcheck.source.names import unique

if TYPE_CHECKING:
    from flowcheck._report import Barrier, Report
    from flowcheck.trace.sites import GradientSite

__all__ = ["site_section", "sites_snapshot", "snapshot_of"]


def snapshot_of(report: Report, root: str | os.PathLike[str] | None = None) -> Snapshot:
    """The gradient flow of ``report``: one section per loss, each variable's verdict and cuts.

    Args:
        report: The analysis.
        root: The folder the snapshot file will live in: files are stored relative to it
            (default: the working directory).

    Returns:
        A :class:`Snapshot`; the same report always gives the same snapshot.
    """
    if report.gradient_sites:  # a training step: its findings are its gradient calls
        return sites_snapshot(report.target, report.gradient_sites, root, _cuts(report.gradient_errors, _base(root)))
    base = _base(root)
    names = _unique_names([r.name for r in report.variables])
    sections = []
    for loss in report.losses:
        barriers = report.barriers_for(report.variables, loss)
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
