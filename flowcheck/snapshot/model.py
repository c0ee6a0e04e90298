"""A gradient-flow snapshot as plain data: sections of variables, each a verdict and its cuts.

The text these are written as and read from is :mod:`flowcheck.snapshot.text`; a report made one by
:mod:`flowcheck.snapshot.build`. Nothing here imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from flowcheck._model import Verdict

__all__ = ["FORMAT_VERSION", "SECTION_KINDS", "Cut", "Flow", "Section", "Snapshot"]

FORMAT_VERSION: Final = 1
SECTION_KINDS: Final = ("loss", "site")


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


def _section_key(section: Section) -> tuple[int, str, str, int]:
    return SECTION_KINDS.index(section.kind), section.name, section.file, section.line
