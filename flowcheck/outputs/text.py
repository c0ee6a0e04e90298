"""Pure formatters for the command line: the terminal summary (plain or colored) and the JSON report.

Nothing here prints, imports TensorFlow or touches disk. The summary is laid out once, as lines
of styled segments; :func:`format_summary` joins their text and :func:`format_rich` styles them.

JSON schema, version 2 (``to_json``; a field is only ever added within a version; version 2
added ``gradient_sites``, ``never_trained`` and ``other_state``)::

    {
      "schema_version": 2,
      "flowcheck_version": "0.1.0",
      "target": {"name": str, "kind": "tf.function" | "callable" | "keras model",
                 "file": str | null, "chosen_by": str | null, "inputs": str | null},
      "losses": [str, ...],
      "counts": {"receives": int, "blocked": int, "unused": int},
      "variables": [{
          "name": str, "verdict": "receives" | "blocked" | "unused",
          "shape": [int | null, ...], "dtype": str, "trainable": bool,
          "watched_by_default": bool (a default GradientTape would watch it),
          "eager_difference": str | null (a plain callable: why its eager call's answer, which is
                              the verdict, differs from its traced graph's),
          "created": source | null (an unused variable a layer or module holds: the line creating it),
          "per_loss": {loss name: verdict},
          "barriers": [{"op_name": str, "op_type": str, "kind": str (a BarrierKind value),
                        "detail": str, "tensor": str, "in_user_code": bool,
                        "source": {"file": str, "line": int, "column": int | null (1-based, in
                                   characters), "function": str, "code": str} | null}]
      }],
      "gradient_errors": [barrier, ...] (as in "barriers": ops with no gradient that a gradient
                        reaches; TensorFlow raises LookupError at each),
      "gradient_sites": [{ (a training step's gradient calls, in order; [] for a loss function)
          "kind": str (flowcheck.trace.sites.KINDS), "source": source | null (the call's line),
          "targets": [str, ...], "watch": str, "error": str | null, "agrees": bool,
          "counts": {"receives": int, "blocked": int, "unused": int}, "notes": [str, ...],
          "sources": [{"name": str, "verdict": verdict, "trainable": bool,
                       "tensorflow_none": bool | null (TensorFlow's own answer at the call),
                       "barriers": [barrier, ...],
                       "eager_difference": str | null (a plain-function step: why its eager
                                           call answers otherwise than its traced graph),
                       "created": source | null (as a variable's)}]
                      (in the order passed)
      }],
      "never_trained": [str, ...] (trainable variables a site's tape would reach that no site asks for),
      "other_state": int (variables the step reads that no site lists: optimizer, metric state),
      "other_frozen": [str, ...] (among those, frozen weights: trainable=False, watched by a default tape),
      "notes": [str, ...],
      "verification": null | {
          "agrees": bool, "optimizer": str, "loss": float | null (null when not finite),
          "loss_finite": bool, "loss_seen": bool (false: made inside a tf.cond branch or nested function,
          where its value cannot be read), "problems": [str, ...], "error": str | null (the tape's LookupError), "restored":
          bool (false: the run was the script's own first call of the step, its update kept as training),
          "variables": [{"name": str, "predicted_receives": bool,
                         "gradient": "none" | "zero" | "nonzero" | "nonfinite" | "unseen" (not None,
                         made inside a tf.cond branch or nested function: its value cannot be read),
                         "changed": bool, "agrees": bool}]
      },
      "expectations": [{"expect": "receives" | "blocked", "pattern": str,
                        "matched": [str, ...], "holds": bool, "failures": [str, ...]}],
      "outputs": [str, ...],
      "ok": bool
    }

``ok`` is true when no gradient error is predicted, every source of every gradient site receives a
gradient (and the sites raised nothing), no variable is never trained, every expectation holds and
verification (if run) agrees and found no problem; the command's exit status is then 0, else 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flowcheck._model import Verdict
from flowcheck._phrases import (
    FROZEN_MODEL, GRADIENT_ERROR_ADVICE, disagreement, gradient_error_cause, shape_text, verdict_counts,
)
from flowcheck.outputs.expect import Expectation
from flowcheck.outputs.sites import created_lines, site_failures, site_lines, sites_json, source_json

if TYPE_CHECKING:
    from rich.console import RenderableType

    from flowcheck._model import Barrier, VariableResult
    from flowcheck.outputs.view import ReportView
    from flowcheck.verify.loss import Verification


__all__ = ["SCHEMA_VERSION", "RunInfo", "failures", "format_rich", "format_summary", "to_json"]

SCHEMA_VERSION = 2
_RECEIVING_SHOWN = 12  # a summary of a 260-variable model should stay readable; --json lists all


@dataclass(frozen=True)
class RunInfo:
    """What the command line knows beyond the report: where the target came from, what it wrote."""

    file: str | None = None
    chosen_by: str | None = None
    inputs: str | None = None
    expectations: tuple[Expectation, ...] = ()
    outputs: tuple[str, ...] = field(default=())
    all_sources: bool = False  # list every receiving source of a gradient site, not a count
    every_step: bool = False  # one of the steps a ``flowcheck run`` analyzed: "never trained" is judged over them all


def failures(
    report: ReportView, verification: Verification | None, run: RunInfo | None = None, *, pinned: bool = False,
    expected_cut: frozenset[str] = frozenset(),
) -> list[str]:
    """Why the run fails (exit status 1), in words; empty when it passes.

    ``pinned``: a snapshot checks the flow (``--check``), so a site's cut source it records is no failure.
    ``expected_cut``: sources ``flowcheck run``'s ``--expect-blocked`` matched (over all its steps): cut on purpose.
    """
    reasons = [f"differentiating the loss raises at {b.op_type} {b.op_name!r} ({_error_cause(b)})" for b in report.gradient_errors]
    if report.target_kind == "keras model" and not report.gradient_sites:
        # Its train_step asks for no gradient (flowcheck analyzed its compiled loss): as `flowcheck run` says of its fit.
        reasons.append(f"fit trains nothing: the Keras model {FROZEN_MODEL}")
    on_purpose = expected_cut | frozenset(n for e in (run.expectations if run else ()) if e.expect == "blocked" for n in e.matched)
    if not pinned:
        reasons.extend(site_failures(report, on_purpose))
    for e in run.expectations if run else ():
        if not e.matched:
            reasons.append(f"--expect-{e.expect} {e.pattern!r} {e.no_match}")
        elif e.failures:
            reasons.append(f"--expect-{e.expect} {e.pattern!r}: " + ", ".join(e.failures))
    if verification is not None:
        if verification.disagreements:
            names = ", ".join(c.name for c in verification.disagreements)
            reasons.append(f"verification disagrees with the prediction for {names}")
        reasons.extend(verification.problems)
    return reasons


def _error_cause(b: Barrier) -> str:
    cause = gradient_error_cause([b.detail])
    return "no gradient defined" if cause.startswith("LookupError") else b.detail


# --- the summary, as styled lines ---------------------------------------------------------------

_Line = list[tuple[str, str]]  # (text, rich style) segments


def _lines(report: ReportView, verification: Verification | None, run: RunInfo | None) -> list[_Line]:
    out: list[_Line] = []
    where = f" in {run.file}" if run and run.file else ""
    out.append([("flowcheck: ", "bold"), (report.target, "bold cyan"), (f" ({report.target_kind}){where}", "")])
    if run and run.chosen_by:
        out.append([(f"  target: {run.chosen_by}", "dim")])
    if run and run.inputs:
        out.append([(f"  inputs: {run.inputs}", "dim")])
    if len(report.losses) > 1:
        out.append([(f"  losses: {', '.join(report.losses)}", "dim")])
    if report.gradient_errors:
        out.append([])
        out.append([("gradient errors", "bold red"),
                    (f": TensorFlow raises {gradient_error_cause(b.detail for b in report.gradient_errors)}"
                     " when it differentiates the loss", "red")])
        for b in report.gradient_errors:
            out.extend(_barrier(b))
        out.append([(f"      {GRADIENT_ERROR_ADVICE}", "dim")])
    if report.gradient_sites:  # a training step: its gradient calls are the findings
        out.extend(site_lines(report, _barrier, all_sources=bool(run and run.all_sources), every_step=bool(run and run.every_step)))
    for verdict in (Verdict.BLOCKED, Verdict.UNUSED, Verdict.RECEIVES) if not report.gradient_sites else ():
        group = report.by_verdict(verdict)
        if group:
            out.append([])
            out.extend(_group(verdict, group, report.losses))
    if verification is not None:
        out.append([])
        out.extend(_verification(verification))
    if run and run.expectations:
        out.append([])
        out.append([("expectations", "bold")])
        for e in run.expectations:
            status = ("ok  ", "green") if e.holds else ("FAIL", "bold red")
            detail = ", ".join(e.failures) if e.failures else _names(e.matched) if e.matched else e.no_match
            out.append([("  ", ""), status, (f"  {e.expect} {e.pattern}: {detail}", "")])
    if report.notes:
        out.append([])
        out.append([("notes", "bold")])
        out.extend([[(f"  - {note}", "dim")] for note in report.notes])
    if run and run.outputs:
        out.append([])
        out.append([("wrote ", ""), (", ".join(run.outputs), "cyan")])
    reasons = failures(report, verification, run)
    out.append([])
    if reasons:
        out.append([("FAILED", "bold red"), (": " + "; ".join(reasons), "red")])
    else:
        # A step flowcheck could not run again without changing what the script sees says why in its notes.
        skipped = any(note.startswith("not verified:") for note in report.notes)
        checked = ["verification agrees"] if verification is not None else [
            "not verified (see notes)" if skipped else "not verified (--no-verify)" if run else "not verified (report.verify())"
        ]
        if run and run.expectations:
            n = len(run.expectations)
            checked.insert(0, f"{n} expectation{'s hold' if n != 1 else ' holds'}")
        out.append([("OK", "bold green"), (": " + ", ".join(checked), "")])
    return out


def _names(names: Sequence[str], shown: int = 4) -> str:
    if len(names) <= shown:
        return ", ".join(names)
    return f"{len(names)} variables ({', '.join(names[:shown - 1])}, ...)"


_HEADINGS = {
    Verdict.BLOCKED: ("blocked", "bold red", "feed the loss, but every gradient path is cut"),
    Verdict.UNUSED: ("unused", "bold yellow", "do not feed the loss at all"),
    Verdict.RECEIVES: ("receives", "bold green", "a gradient reaches them"),
}


def _group(verdict: Verdict, group: Sequence[VariableResult], losses: Sequence[str]) -> list[_Line]:
    title, style, meaning = _HEADINGS[verdict]
    out: list[_Line] = [[(f"{title} ({len(group)})", style), (f": {meaning}", "dim")]]
    frozen: Sequence[VariableResult] = ()
    shown = group
    if verdict is Verdict.RECEIVES:
        # What training will update comes first; a frozen backbone's statistics get one count line.
        shown = [r for r in group if r.trainable]
        frozen = [r for r in group if not r.trainable]
    listed = shown if verdict is not Verdict.RECEIVES or len(shown) <= _RECEIVING_SHOWN else shown[: _RECEIVING_SHOWN - 2]
    width = max((len(r.name) for r in listed), default=0)
    shape_width = max((len(_shape(r)) for r in listed), default=0)
    for i, r in enumerate(listed):
        line: _Line = [("  ", ""), (r.name.ljust(width), style.replace("bold ", "")), (f"  {_shape(r).ljust(shape_width)}", "dim")]
        if not r.trainable:
            line.append(("  not trainable", "yellow"))
        if len(losses) > 1:
            line.append(("  " + ", ".join(f"{loss}: {v.value}" for loss, v in r.per_loss.items()), "dim"))
        out.append(line)
        out.extend(created_lines(r.created, "      "))
        if r.eager_difference:
            out.append([("      called eagerly: ", "cyan"), (r.eager_difference, "")])
        # Variables cut by the same barriers (a whole layer, a whole network) share one explanation.
        if r.barriers and (i + 1 == len(listed) or listed[i + 1].barriers != r.barriers):
            places = [str(b.source) for b in r.barriers]
            for b in r.barriers:
                out.extend(_barrier(b, exact=places.count(str(b.source)) > 1))
    if len(listed) < len(shown):
        out.append([(f"  ... and {len(shown) - len(listed)} more (--json lists every variable)", "dim")])
    if frozen:
        out.append(_non_trainable_receivers(frozen))
    return out


def _non_trainable_receivers(group: Sequence[VariableResult]) -> _Line:
    statistics = sum(r.name.rsplit("/", 1)[-1] in _BATCHNORM_STATISTICS for r in group)
    what = " (BatchNorm statistics in inference mode)" if statistics == len(group) else (
        f" ({statistics} BatchNorm statistics in inference mode)" if statistics else ""
    )
    names = ", ".join(r.name for r in group[:3]) + (", ..." if len(group) > 3 else "")
    plural = "s receive" if len(group) != 1 else " receives"
    return [(f"  + {len(group)} non-trainable variable{plural}{what}; no optimizer updates them: ", "yellow"),
            (names, "dim")]


_BATCHNORM_STATISTICS = frozenset({"moving_mean", "moving_variance"})


def _shape(r: VariableResult) -> str:
    return f"{r.dtype}{shape_text(r.shape)}"


def _barrier(b: Barrier, exact: bool = False) -> list[_Line]:
    # Two barriers on one line are told apart by their columns (exact).
    out: list[_Line] = [[("      ", ""), (b.op_type, "magenta"), (b.what[len(b.op_type):], ""), (b.where(exact), "cyan")]]
    if b.source is not None and b.source.code:
        out.append([(f"        {b.source.code}", "dim")])
    return out


def _verification(v: Verification) -> list[_Line]:
    run = "one step, loss {}; every variable restored" if v.restored else "the script's own first call, loss {}"
    if v.error is not None and v.agrees:
        head: _Line = [("verification: ", "bold"), ("agrees: the tape raised, as predicted", "bold green")]
    elif v.problems and not v.disagreements:  # a NaN loss: every verdict confirmed, the step meaningless
        head = [("verification: ", "bold"), ("agrees, but found problems", "bold red")]
    elif v.agrees:
        head = [("verification: ", "bold"), ("agrees", "bold green")]
    else:
        head = [("verification: ", "bold"), ("DISAGREES", "bold red")]
    loss = f"{v.loss:.6g}" if v.loss_seen else f"unseen ({v.unseen})"
    loss += f", the sum of its {v.loss_values} values (as the tape differentiates it)" if v.loss_seen and v.loss_values > 1 else ""
    head.append((f"  ({v.optimizer}, {run.format(loss)})", "dim"))
    out = [head]
    zeroed = sum(not c.predicted and c.gradient.value == "zero" for c in v.variables)  # unconnected_gradients=ZERO
    gave = sum(c.gradient.value != "none" for c in v.variables) - zeroed
    if v.error is not None:
        out.append([(f"  the tape raised {v.error}" + (", as predicted" if v.agrees else ""), "")])
        return out + [[("  problem: ", "bold red"), (p, "red")] for p in v.problems]
    zeros = f" and zeros to {zeroed} no path reaches (unconnected_gradients=ZERO)" if zeroed else ""
    out.append([(f"  TensorFlow gave a gradient to {gave} of {len(v.variables)} variables{zeros}, "
                 f"as predicted" if not v.disagreements else "  the tape contradicts the prediction:", "")])
    for c in v.disagreements:
        out.append([(f"    {c.name}: {disagreement(c.predicted, c.gradient)}", "red")])
    for p in v.problems:
        out.append([("  problem: ", "bold red"), (p, "red")])
    return out


def format_summary(report: ReportView, verification: Verification | None, run: RunInfo | None = None) -> str:
    """The terminal summary as plain text (no color codes)."""
    return "\n".join("".join(text for text, _ in line).rstrip() for line in _lines(report, verification, run)) + "\n"


def format_rich(report: ReportView, verification: Verification | None, run: RunInfo | None = None) -> RenderableType:
    """The terminal summary as a ``rich`` renderable, colored by verdict."""
    from rich.text import Text

    text = Text()
    for line in _lines(report, verification, run):
        for segment, style in line:
            text.append(segment, style=style or None)
        text.append("\n")
    return text


# --- JSON ---------------------------------------------------------------------------------------


def to_json(report: ReportView, verification: Verification | None, run: RunInfo | None = None) -> dict[str, Any]:
    """The report as JSON-ready data, following the schema in this module's docstring."""
    from flowcheck._version import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "flowcheck_version": __version__,
        "target": {
            "name": report.target,
            "kind": report.target_kind,
            "file": run.file if run else None,
            "chosen_by": run.chosen_by if run else None,
            "inputs": run.inputs if run else None,
        },
        "losses": list(report.losses),
        "counts": {v.value: n for v, n in verdict_counts(report.variables).items()},
        "variables": [_variable_json(r) for r in report.variables],
        "gradient_errors": [_barrier_json(b) for b in report.gradient_errors],
        **sites_json(report, _barrier_json),
        "notes": list(report.notes),
        "verification": _verification_json(verification) if verification is not None else None,
        "expectations": [
            {"expect": e.expect, "pattern": e.pattern, "matched": list(e.matched), "holds": e.holds,
             "failures": list(e.failures)}
            for e in (run.expectations if run else ())
        ],
        "outputs": list(run.outputs if run else ()),
        "ok": not failures(report, verification, run),
    }


def _variable_json(r: VariableResult) -> dict[str, Any]:
    return {
        "name": r.name,
        "verdict": r.verdict.value,
        "shape": list(r.shape),
        "dtype": r.dtype,
        "trainable": r.trainable,
        "watched_by_default": r.watched_by_default,
        "eager_difference": r.eager_difference, "created": source_json(r.created),
        "per_loss": {loss: v.value for loss, v in r.per_loss.items()},
        "barriers": [_barrier_json(b) for b in r.barriers],
    }


def _barrier_json(b: Barrier) -> dict[str, Any]:
    return {
        "op_name": b.op_name, "op_type": b.op_type, "kind": b.kind.value, "detail": b.detail,
        "tensor": b.tensor, "in_user_code": b.in_user_code,
        "source": None if b.source is None else {
            "file": b.source.short_file, "line": b.source.line, "column": b.source.column,
            "function": b.source.function,
            "code": b.source.code,
        },
    }


def _verification_json(v: Verification) -> dict[str, Any]:
    finite = math.isfinite(v.loss)
    return {
        "agrees": v.agrees,
        "optimizer": v.optimizer,
        "loss": v.loss if finite else None,  # JSON has no NaN
        "loss_finite": finite, "loss_seen": v.loss_seen,
        "problems": list(v.problems),
        "error": v.error, "restored": v.restored,
        "variables": [
            {"name": c.name, "predicted_receives": c.predicted, "gradient": c.gradient.value, "changed": c.changed,
             "agrees": c.agrees}
            for c in v.variables
        ],
    }
