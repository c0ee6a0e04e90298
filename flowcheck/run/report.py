"""What ``flowcheck run`` prints and writes: the text summary, the JSON document, the exit status.

Pure formatting over :class:`flowcheck.run.script.RunResult` (each step's own report is formatted by
:mod:`flowcheck.outputs.text`); nothing here prints or imports TensorFlow.

JSON document of ``flowcheck run --json`` / ``-o run.json`` (``run_schema_version`` 1)::

    {
      "run_schema_version": 1, "flowcheck_version": str,
      "script": str, "arguments": [str, ...],
      "stopped": bool (flowcheck ended the script after its first round),
      "script_error": str | null (the script raised outside an analyzed step),
      "steps": [{
          "kind": "keras train_step" | "tf.function" | "tf1 Session.run" | "tf1 graph" | "eager tape.gradient",
          "name": str, "call": {"file", "line", "function", "code"} | null,
          "report": the report of ``flowcheck analyze --json`` (its schema) | null,
          "site": an eager step's gradient site, as in the report's "gradient_sites" (its verdicts
                  are TensorFlow's own answer) | null,
          "error": str | null (flowcheck could not analyze it), "raised": str | null (the step
          raised when it ran), "next_call": str | null (an eager site whose next call gives None
          to a source its first call gave a gradient), "failures": [str, ...]
      }],
      "untrained": [str, ...] (Keras fit / train_on_batch calls of a model with no trainable
                   weights: they train nothing; and those running the step Keras kept after a
                   change of trainable it ignores: each fails the run),
      "expectations": [{"expect", "pattern", "matched", "holds", "failures"}],
      "ok": bool
    }
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from flowcheck._model import Verdict
from flowcheck._phrases import receiving_text
from flowcheck.outputs.expect import Candidate, Expectation
from flowcheck.outputs.text import _barrier  # noqa: PLC2701 -- a barrier laid out as a traced step's are

if TYPE_CHECKING:
    from flowcheck.run.script import RunResult
    from flowcheck.run.step import Step
    from flowcheck.source.lines import SourceLine

__all__ = ["RUN_SCHEMA_VERSION", "candidates", "exit_status", "expected_cut", "format_run", "run_json", "step_failures"]

RUN_SCHEMA_VERSION = 1


def sites_of(step: Step) -> tuple[Any, ...]:
    """The gradient sites of a step: the report's, or the eager site."""
    if step.eager is not None:
        return (step.eager,)
    return tuple(getattr(step.report, "gradient_sites", ()) or ())


def expected_cut(expectations: Sequence[Expectation]) -> frozenset[str]:
    """The sources ``--expect-blocked`` matched: cut on purpose (a DQN's target network), no finding of a step."""
    return frozenset(n for e in expectations if e.expect == "blocked" for n in e.matched)


def step_failures(step: Step, expected: frozenset[str] = frozenset()) -> list[str]:
    """Why this step fails (exit status 1), in words; empty when it passes.

    ``expected``: the sources ``--expect-blocked`` matched, whose cut is no failure (as under ``analyze``).
    """
    from flowcheck.outputs.text import failures

    if step.error is not None and step.report is None:  # (after its own trace raised: that error is the finding)
        return [f"{step.name} raised {step.raised}" if step.raised else f"{step.name} could not be analyzed: {step.error}"]
    reasons = [f"{step.name}: {step.error}"] if step.error is not None else []
    if step.report is not None:
        reasons.extend(failures(step.report, step.verification, expected_cut=expected))  # the sites' findings included
        if not getattr(step.report, "gradient_sites", ()):  # a report without sites: its trainable variables
            cut = [r.name for r in step.report.variables
                   if r.trainable and r.verdict is not Verdict.RECEIVES and r.name not in expected]
            reasons.extend(["no gradient for " + ", ".join(cut)] if cut else [])
    if step.raised is not None and not reasons:
        reasons.append(f"{step.name} raised {step.raised}")
    site = step.eager
    if site is not None:
        where = f" at {site.source}" if site.source else ""
        cut = [s.name for s in site.cut if s.name not in expected]
        if site.error:
            reasons.append(f"{site.kind}{where} raised: {site.error}")
        elif cut:
            reasons.append(f"{site.kind}{where}: TensorFlow gives no gradient to " + ", ".join(cut))
        if step.next_call is not None:
            reasons.append(f"{site.kind}{where}: {step.next_call}")
    return reasons


def candidates(steps: Sequence[Step]) -> list[Candidate]:
    """Every source (or, without sites, every variable) of every step, for ``--expect-*``."""
    found: list[Candidate] = []
    for step in steps:
        sites = sites_of(step)
        items: list[tuple[str, Any, bool]] = [(s.name, s.variable, s.receives) for site in sites for s in site.sources]
        if not sites and step.report is not None:
            items = [(r.name, r.variable, r.receives) for r in step.report.variables]
        for name, variable, receives in items:
            owners = step.owners.get(id(getattr(variable, "value", variable)), ())
            found.append(Candidate(name, receives, owners))
    return found


def exit_status(result: RunResult, expectations: Sequence[Expectation]) -> int:
    """0 every source receives and verification agrees; 1 a finding; 2 nothing was analyzed."""
    if not result.steps:
        return 2
    if all(step.error is not None and step.report is None for step in result.steps):
        return 2
    expected = expected_cut(expectations)
    failed = any(step_failures(s, expected) for s in result.steps) or any(not e.holds for e in expectations) or result.untrained
    return 1 if failed or result.error is not None else 0


_INPUTS = {"keras train_step": "its first batch", "tf1 Session.run": "the feed_dict of its first run",
           "tf1 graph": "none: judged on the graph, nothing was run"}


def format_run(result: RunResult, script: str, expectations: Sequence[Expectation], all_sources: bool = False) -> str:
    """The run's summary as plain text: each step, then the overall verdict."""
    from flowcheck.outputs.text import RunInfo, format_summary

    n = len(result.steps)
    out = [f"flowcheck run {script}: {n} training step{'s' if n != 1 else ''} analyzed at {'their' if n != 1 else 'its'} first call"]
    for i, step in enumerate(result.steps, 1):
        out.append("")
        call = f", {'at' if step.kind == 'tf1 graph' else 'first called at'} {step.call}" if step.call else ""
        kind = "keras train_step, run eagerly" if step.eager is not None and step.eager.kind == "Keras train_step" else step.kind
        out.append(f"step {i}: {step.name} ({kind}){call}")
        if step.error is not None and step.report is None:
            out.append(f"  could not analyze it: {step.error}")
        elif step.eager is not None:
            out.extend(_site_lines(step.eager))
            out.extend([f"  {step.next_call}"] if step.next_call else [])
        elif step.report is not None:
            inputs = _INPUTS.get(step.kind, "the arguments of its first call")
            info = RunInfo(file=script, inputs=inputs, all_sources=all_sources, every_step=True)
            summary = format_summary(step.report, step.verification, info)
            out.extend("  " + line if line else "" for line in _without_verdict(summary))
        if step.error is not None and step.report is not None:
            out.append(f"  {step.error}")
        if step.raised is not None:
            out.append(f"  then the step raised {step.raised}")
    if result.error is not None:
        out += ["", f"the script then failed: {result.error}"]
    if result.stopped and any(s.eager is not None and s.eager.error for s in result.steps):  # (its own except: unrun)
        out += ["", "the script was ended at the gradient call that raised: what follows it (an `except` of the script's "
                    "that handles the error included) did not run (--continue lets it run on)"]
    elif result.stopped and result.steps and not any(s.raised for s in result.steps):  # a later phase (a fit after compile(), a trainable change) goes unseen
        out += ["", "the script was ended at its next call of a step analyzed: what it does after its first round "
                    "(more epochs, a later phase of training) was not analyzed (--continue lets it run on)"]
    out += [line for text in result.untrained for line in ("", text)]
    if expectations:
        out += ["", "expectations"]
        for e in expectations:
            detail = ", ".join(e.failures) if e.failures else ", ".join(e.matched) if e.matched else "matched no variable"
            out.append(f"  {'ok  ' if e.holds else 'FAIL'}  {e.expect} {e.pattern}: {detail}")
    expected = expected_cut(expectations)
    reasons = [r for s in result.steps for r in step_failures(s, expected)] + [
        f"--expect-{e.expect} {e.pattern!r}: " + (", ".join(e.failures) or "matched no variable")
        for e in expectations if not e.holds
    ] + result.untrained
    if result.error is not None:
        reasons.append("the script failed after its first step")
    out.append("")
    out.append(("FAILED: " + "; ".join(reasons)) if reasons else _passed(result, len(expectations), expected))
    return "\n".join(out) + "\n"


def _passed(result: RunResult, n: int, expected: frozenset[str]) -> str:
    """The run's OK line (``n`` expectations): every source receives, or every one cut is one ``--expect-blocked`` named."""
    if any(s.name in expected for step in result.steps for site in sites_of(step) for s in site.cut):
        return f"OK: {n} expectation{'s hold' if n != 1 else ' holds'}; every source not expected blocked receives a gradient"
    return "OK: every source of every gradient call receives a gradient"


def _site_lines(site: Any) -> list[str]:
    """An eager site, laid out like the sites of a traced step."""
    where = f" at {site.source}" if site.source else ""
    out = [f"  site 1: {site.kind}{where} (eager): {len(site.receiving)} of {len(site.sources)} sources receive"]
    if site.source is not None and site.source.code:
        out.append(f"      {site.source.code}")
    out.append(f"    targets: {', '.join(site.targets)}; {site.watch}")
    if site.error:
        out.append(f"    raised: {site.error}")
    elif site.cut:
        out.append(f"    TensorFlow gave None ({len(site.cut)})")
        for (barriers, unused), group in itertools.groupby(site.cut, key=lambda s: (s.barriers, s.verdict is Verdict.UNUSED)):
            out.extend(f"      {s.name}" for s in group)  # named by a trace of its function (or not read in it)
            out.extend("  " + "".join(text for text, _ in line) for b in barriers for line in _barrier(b))
            out.extend(["        unused: not in what the tape differentiates"] if unused else [])
    out.append(f"    {receiving_text(len(site.receiving))}")
    out.extend(f"    note: {note}" for note in site.notes)
    return out


def _without_verdict(summary: str) -> list[str]:
    """A step's summary without its title (the step's heading says it) and its last OK/FAILED
    line (the run's own verdict comes last)."""
    lines = summary.rstrip("\n").splitlines()
    if lines and lines[0].startswith("flowcheck: "):
        lines = lines[1:]
        head = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))
        lines[:head] = [line.removeprefix("  ") for line in lines[:head]]  # were under the title
    if lines and lines[-1].startswith(("OK", "FAILED")):
        lines = lines[:-1]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def run_json(result: RunResult, script: str, arguments: Sequence[str], expectations: Sequence[Expectation]) -> dict[str, Any]:
    """The run as JSON-ready data (the schema is in this module's docstring)."""
    from flowcheck._version import __version__

    return {
        "run_schema_version": RUN_SCHEMA_VERSION,
        "flowcheck_version": __version__,
        "script": script,
        "arguments": list(arguments),
        "stopped": result.stopped,
        "script_error": result.error,
        "steps": [_step_json(s, script, expected_cut(expectations)) for s in result.steps],
        "untrained": list(result.untrained),
        "expectations": [
            {"expect": e.expect, "pattern": e.pattern, "matched": list(e.matched), "holds": e.holds,
             "failures": list(e.failures)}
            for e in expectations
        ],
        "ok": exit_status(result, expectations) == 0,
    }


def _step_json(step: Step, script: str, expected: frozenset[str]) -> dict[str, Any]:
    from flowcheck.outputs.sites import _site_json  # noqa: PLC2701 -- for a site, too
    from flowcheck.outputs.text import RunInfo, _barrier_json, failures, to_json  # noqa: PLC2701 -- one JSON shape

    report = None
    if step.report is not None:
        report = to_json(step.report, step.verification, RunInfo(file=script))
        report["ok"] = not failures(step.report, step.verification, expected_cut=expected)  # its cuts --expect-blocked named
    return {
        "kind": step.kind, "name": step.name, "call": _source_json(step.call), "report": report,
        "site": _site_json(step.eager, _barrier_json) if step.eager is not None else None,
        "error": step.error, "raised": step.raised, "next_call": step.next_call, "failures": step_failures(step, expected),
    }


def _source_json(source: SourceLine | None) -> dict[str, Any] | None:
    if source is None:
        return None
    return {"file": source.short_file, "line": source.line, "function": source.function, "code": source.code}
