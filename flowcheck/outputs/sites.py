"""Pure formatters for a training step's gradient sites: summary lines and JSON (no TensorFlow).

Per site: its kind and line, targets and watch rules, then the sources that get no gradient with
their barriers first, the receiving ones as a count (listed with ``all_sources``). Then the
variables that never train, and one count line for the state no site differentiates (optimizer
slots, BatchNorm statistics, metric totals). The segments are ``(text, rich style)`` pairs, as in
:mod:`flowcheck.outputs.text`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowcheck._model import Verdict
from flowcheck._phrases import NEVER_TRAINED, receiving_text, would_receive_text
from flowcheck.trace.sites import GradientSite

if TYPE_CHECKING:
    from flowcheck._model import Barrier
    from flowcheck.source.lines import SourceLine
    from flowcheck.outputs.view import ReportView

__all__ = ["created_lines", "site_failures", "site_lines", "sites_json", "source_json"]

_Line = list[tuple[str, str]]


def site_failures(report: ReportView, expected_cut: frozenset[str] = frozenset()) -> list[str]:
    """Why a step fails (exit status 1), in words: sources cut, never trained, errors, disagreements.

    Sources named in ``expected_cut`` (matched by ``--expect-blocked``) are cut on purpose.
    """
    reasons = []
    for i, site in enumerate(report.gradient_sites, start=1):
        where = f"site {i} ({site.kind}{f' at {site.source}' if site.source else ''})"
        if site.error:
            reasons.append(f"{where} raised {site.error}")
        cut = [s for s in site.cut if s.name not in expected_cut]
        if cut:
            reasons.append(f"{where}: {len(cut)} of {len(site.sources)} sources get no gradient")
        if not site.agrees:
            reasons.append(f"{where}: flowcheck disagrees with TensorFlow's answer (a flowcheck bug)")
    if report.never_trained:
        count = len(report.never_trained)
        never = f"{count} variable{'s' if count != 1 else ''} never train{'s' if count == 1 else ''}: "
        reasons.append(never + ", ".join(r.name for r in report.never_trained))
    return reasons


def site_lines(
    report: ReportView, barrier: Callable[[Barrier], list[_Line]], all_sources: bool = False, every_step: bool = False,
) -> list[_Line]:
    """The summary lines of every site, the never-trained variables and the other state (``every_step``:
    the report is one of the steps a ``flowcheck run`` analyzed, whose never-trained variables no step asks for)."""
    out: list[_Line] = []
    for i, site in enumerate(report.gradient_sites, start=1):
        out.append([])
        out.extend(_site(i, site, barrier, all_sources))
    if report.never_trained:
        out.append([])
        out.append([(f"never trained ({len(report.never_trained)})", "bold red"), (f": {NEVER_TRAINED}", "dim")])
        out.extend([[("  ", ""), (r.name, "red")] for r in report.never_trained])
        out.append([("  (no gradient call of any step the run analyzed asks for them)" if every_step else
                     "  (another training step may train them: analyze it too; flowcheck run analyzes every step)", "dim")])
    others = report.other_state
    if others:
        out.append([])
        frozen = len(report.frozen_state)  # a frozen backbone's weights are among them: not optimizer state
        kinds = (f"{frozen} frozen weight{'s' if frozen != 1 else ''}, trainable=False; " if frozen else "") + (
            "optimizer slots and counters, BatchNorm statistics, metric totals" if others > frozen else "")
        out.append([(f"+ {others} other variables the step reads and no site differentiates "
                     f"({kinds.removesuffix('; ')}): not findings", "dim")])
    return out


def created_lines(source: SourceLine | None, indent: str) -> list[_Line]:
    """Where an unused variable was created (``self.w = self.add_weight(...)`` in a layer's ``build``), and the line."""
    if source is None:
        return []
    out: list[_Line] = [[(f"{indent}created at {source} in {source.function}", "cyan")]]
    return out + ([[(f"{indent}  {source.code}", "dim")]] if source.code else [])


_NAMED = 3
_UNUSED_TAPE = "unused: not in what the tape differentiates"
_UNUSED_GRAPH = "unused: no path from it to the targets in the graph"  # a TF1 graph has no tape


def _site(i: int, site: GradientSite, barrier: Callable[[Barrier], list[_Line]], all_sources: bool) -> list[_Line]:
    where = f" at {site.source}" if site.source else ""
    n, got = len(site.sources), len(site.receiving)
    style = "bold green" if got == n and not site.error else "bold red"
    # A call that raises gives no gradient at all: the counts are what its graph would give.
    count = f": {got} of {n} sources would receive, but the call raises" if site.error else f": {got} of {n} sources receive"
    out: list[_Line] = [[(f"site {i}: ", "bold"), (site.kind, "bold cyan"), (where, "cyan"), (count, style)]]
    if site.source is not None and site.source.code:
        out.append([(f"    {site.source.code}", "dim")])
    out.append([(f"  targets: {', '.join(site.targets)}; {site.watch}", "dim")])
    if site.error:
        out.append([("  raised: ", "bold red"), (site.error, "red")])
    unused = _UNUSED_GRAPH if site.kind.startswith("tf1 ") else _UNUSED_TAPE
    for verdict, title in ((Verdict.BLOCKED, "blocked: every path is cut"), (Verdict.UNUSED, unused)):
        group = [s for s in site.sources if s.verdict is verdict]
        if not group:
            continue
        out.append([(f"  {title} ({len(group)})", "bold red" if verdict is Verdict.BLOCKED else "bold yellow")])
        for j, s in enumerate(group):
            out.append([("    ", ""), (s.name, "red" if verdict is Verdict.BLOCKED else "yellow")])
            out.extend(created_lines(s.created, "      "))
            if s.eager_difference:
                out.append([("      called eagerly: ", "cyan"), (s.eager_difference, "")])
            if s.barriers and (j + 1 == len(group) or group[j + 1].barriers != s.barriers):
                for b in s.barriers:
                    out.extend(barrier(b))
    received = would_receive_text if site.error else receiving_text
    if site.receiving:
        if all_sources:
            out.append([(f"  receive a gradient ({got})", "bold green")])
            out.extend([[("    ", ""), (s.name, "green")] for s in site.receiving])
        elif got <= _NAMED:  # a few receiving sources are named where they are counted
            names = ", ".join(s.name for s in site.receiving)
            out.append([(f"  {received(got)}: ", "green"),
                        (names, "green")])
        else:
            out.append([(f"  {received(got)}", "green"),
                        (" (--all lists them)", "dim")])
    if not site.agrees:
        wrong = ", ".join(s.name for s in site.sources if not s.agrees)
        out.append([("  flowcheck disagrees with TensorFlow's answer at this call for ", "bold red"), (wrong, "red")])
    out.extend([[(f"  note: {note}", "dim")] for note in site.notes])
    return out


def sites_json(report: ReportView, barrier_json: Callable[[Barrier], dict[str, Any]]) -> dict[str, Any]:
    """The JSON fields of schema version 2 about sites (see ``flowcheck.outputs.text``)."""
    return {
        "gradient_sites": [_site_json(site, barrier_json) for site in report.gradient_sites],
        "never_trained": [r.name for r in report.never_trained],
        "other_state": report.other_state,
        "other_frozen": [r.name for r in report.frozen_state],
    }


def source_json(source: SourceLine | None) -> dict[str, Any] | None:
    """A user's line as JSON: file, line, function, code."""
    return None if source is None else {
        "file": source.short_file, "line": source.line, "function": source.function, "code": source.code,
    }


def _site_json(site: GradientSite, barrier_json: Callable[[Barrier], dict[str, Any]]) -> dict[str, Any]:
    return {
        "kind": site.kind,
        "source": source_json(site.source),
        "targets": list(site.targets),
        "watch": site.watch,
        "error": site.error,
        "agrees": site.agrees,
        "counts": {v.value: sum(s.verdict is v for s in site.sources) for v in Verdict},
        "sources": [_source_json(s, barrier_json) for s in site.sources],
        "notes": list(site.notes),
    }


def _source_json(s: Any, barrier_json: Callable[[Barrier], dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": s.name, "verdict": s.verdict.value, "trainable": s.trainable,
        "tensorflow_none": s.tensorflow_none, "barriers": [barrier_json(b) for b in s.barriers],
        "eager_difference": s.eager_difference, "created": source_json(s.created),
    }

