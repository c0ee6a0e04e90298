"""What the words read of a report: :class:`ReportView`, which ``flowcheck.Report`` is.

``Report.summary`` and ``Report.to_json`` call this package; its functions name this protocol, not
the report's class, so that the report's module and the words do not import each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from flowcheck._model import Barrier, VariableResult, Verdict
    from flowcheck.trace.sites import GradientSite

__all__ = ["ReportView"]


class ReportView(Protocol):
    """The attributes of ``flowcheck.Report`` that the summary and the JSON document read (documented there)."""

    target: str
    target_kind: str
    variables: tuple[VariableResult, ...]
    losses: tuple[str, ...]
    notes: tuple[str, ...]
    gradient_errors: tuple[Barrier, ...]
    gradient_sites: tuple[GradientSite, ...]
    never_trained: tuple[VariableResult, ...]
    other_state: int

    @property
    def frozen_state(self) -> tuple[VariableResult, ...]: ...

    def by_verdict(self, verdict: Verdict | str) -> tuple[VariableResult, ...]: ...
