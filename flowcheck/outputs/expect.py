"""``--expect-receives`` / ``--expect-blocked``: glob patterns over variable names and their owners.

A pattern matches a variable by its name (with or without ``:0``) or by ``OWNER/NAME`` for each
Keras model or layer that owns it, so that ``discriminator/*`` finds a functional model's
variables, whose Keras paths carry no model prefix.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Candidate", "Expectation", "match_expectations"]


@dataclass(frozen=True)
class Expectation:
    """One ``--expect-receives`` / ``--expect-blocked`` pattern and how it fared.

    Attributes:
        expect: ``"receives"`` or ``"blocked"`` (no gradient: blocked or unused).
        pattern: The glob, as given.
        matched: Names of the variables it matched.
        failures: One ``"name verdict"`` string per matched variable that breaks it.
        unasked: When it matched nothing, the names it matches among the variables a training step
            reads that none of its gradient calls asks for (a frozen backbone's weights).
    """

    expect: str
    pattern: str
    matched: tuple[str, ...]
    failures: tuple[str, ...]
    unasked: tuple[str, ...] = ()

    @property
    def no_match(self) -> str:
        """Why it matched nothing, in words."""
        if not self.unasked:
            return "matched no variable"
        shown = ", ".join(self.unasked[:5]) + (f", ... ({len(self.unasked)} in all)" if len(self.unasked) > 5 else "")
        return (f"matched only variables the step's gradient calls do not ask for ({shown}: not trainable, or not "
                "among the sources), so they have no verdict and its optimizer does not train them")

    @property
    def holds(self) -> bool:
        """True when the pattern matched something and every match has the expected verdict."""
        return bool(self.matched) and not self.failures


@dataclass(frozen=True)
class Candidate:
    """A variable a pattern may match.

    Attributes:
        name: Its name in the report.
        receives: Whether it receives a gradient.
        owners: Names of the Keras models and layers that own it.
    """

    name: str
    receives: bool
    owners: tuple[str, ...] = ()

    def matches(self, pattern: str) -> bool:
        """Whether ``pattern`` matches the name or an ``OWNER/NAME`` form of it."""
        names = [self.name, self.name.split(":")[0]]
        names += [f"{owner}/{name}" for owner in self.owners for name in names[:2]]
        return any(fnmatch.fnmatchcase(n, pattern) for n in names)


def match_expectations(found: Sequence[Candidate], receives: Sequence[str], blocked: Sequence[str]) -> tuple[Expectation, ...]:
    """One :class:`Expectation` per pattern, in the order given (receives first)."""
    out = []
    for expect, patterns in (("receives", receives), ("blocked", blocked)):
        for pattern in patterns:
            matched = list(dict.fromkeys(c.name for c in found if c.matches(pattern)))
            wrong = [c for c in found if c.matches(pattern) and c.receives != (expect == "receives")]
            failures = tuple(dict.fromkeys(f"{c.name} {'receives' if c.receives else 'gets no gradient'}" for c in wrong))
            out.append(Expectation(expect, pattern, tuple(matched), failures))
    return tuple(out)
