"""An eager site's cuts named by a trace of the script's function that holds its tape, for ``flowcheck run``.

An eager ``tape.gradient`` keeps no graph, so the op that cuts a source cannot be read off it. When
the call is made inside a function of the script (the custom-training walkthrough's
``grad(model, inputs, targets)``, a ``train_step`` run without ``@tf.function``), flowcheck keeps
that function and the arguments of the call (:func:`holder`), and once the script has ended traces
it with ``tf.function`` (nothing runs; Python code the function runs at its trace does not touch the
finished script) to name, for each source TensorFlow gave None, the ops and lines the trace finds
cutting it (:func:`explain`). The verdicts stay TensorFlow's own answers at the eager call.
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
import os
import sys
import types
from typing import Any

from flowcheck._phrases import EAGER_ANSWER
from flowcheck.run.step import EAGER_NOTE, EAGERLY_NOTE, Step
from flowcheck.source.lines import SourceLine

__all__ = ["explain", "holder"]


def holder(call: SourceLine | None) -> tuple[Any, tuple[Any, ...], dict[str, Any]] | None:
    """The script's function making the gradient call at ``call`` and the arguments it was called with."""
    if call is None or call.function.startswith("<"):
        return None
    frame: types.FrameType | None = sys._getframe(1)  # noqa: SLF001
    target = os.path.abspath(call.file)
    while frame is not None and not (frame.f_lineno == call.line and os.path.abspath(frame.f_code.co_filename) == target):
        frame = frame.f_back
    if frame is None:
        return None
    found = [f for f in gc.get_referrers(frame.f_code) if isinstance(f, types.FunctionType) and f.__code__ is frame.f_code]
    if len(found) != 1:  # none, or closures of one def with cells of their own: which is this call's is not known
        return None
    fn, values = found[0], frame.f_locals
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for name, parameter in inspect.signature(fn).parameters.items():
        if name not in values:
            return None
        if parameter.kind is parameter.VAR_POSITIONAL:
            args.extend(values[name])
        elif parameter.kind is parameter.VAR_KEYWORD:
            kwargs.update(values[name])
        elif parameter.kind is parameter.KEYWORD_ONLY:
            kwargs[name] = values[name]
        else:
            args.append(values[name])
    return fn, tuple(args), kwargs


def explain(step: Step) -> None:
    """Give ``step``'s eager site the barriers a trace of the function holding its tape finds, where it can."""
    held, site = step.held_by, step.eager
    step.held_by = None
    if held is None or site is None or not site.cut:
        return
    from flowcheck.errors import TraceError

    try:
        cuts = _traced_cuts(*held, site.source)
    except TraceError as exc:  # a NumPy function no conversion was heard for (np.square(t) reads the buffer)
        if _SYMBOLIC in str(exc) and (EAGER_NOTE in site.notes or EAGERLY_NOTE in site.notes):
            notes = tuple(n for n in site.notes if n not in (EAGER_NOTE, EAGERLY_NOTE))
            step.eager = dataclasses.replace(site, notes=(*notes, f"{exc}: a value the tape records leaves TensorFlow there"))
        return
    except Exception:  # noqa: BLE001 -- untraceable otherwise: the site stays as TensorFlow answered
        return
    from flowcheck.trace.eager_sites import backing

    sources = tuple(
        dataclasses.replace(s, barriers=cuts.get(id(backing(s.variable)), ())) if s.tensorflow_none else s
        for s in site.sources
    )
    if not any(s.barriers for s in sources):
        return
    name = getattr(held[0], "__name__", "the function")
    notes = tuple(n for n in site.notes if n not in (EAGER_ANSWER, EAGER_NOTE, EAGERLY_NOTE))
    told = (f"called eagerly: TensorFlow's own answer; the ops and lines that cut are those of {name} traced "
            "by tf.function with the arguments of its first call")
    step.eager = dataclasses.replace(site, sources=sources, notes=(told, *notes))


# What TensorFlow raises when a traced function hands a tensor to NumPy.
_SYMBOLIC = "Cannot convert a symbolic"


def _traced_cuts(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], call: SourceLine | None) -> dict[int, tuple[Any, ...]]:
    """Per variable (id of its ``tf.Variable``): the barriers of a trace of ``fn`` for the variables it blocks,
    at the traced gradient call on ``call``'s line when the trace is judged at its gradient calls."""
    from flowcheck._api import build_report
    from flowcheck._gc import collector_paused
    from flowcheck._model import Verdict
    from flowcheck.graph.build import build_graph
    from flowcheck.trace.eager_sites import backing
    from flowcheck.trace.target import trace

    traced = dataclasses.replace(trace(fn, args, kwargs), python_function=None, target_kind="tf.function")  # nothing run
    with collector_paused():
        report = build_report(traced, build_graph(traced))
    same = [s for s in report.gradient_sites if s.source is not None and call is not None
            and (s.source.file, s.source.line) == (call.file, call.line)]
    results = same[0].sources if len(same) == 1 else () if report.gradient_sites else report.variables
    return {id(backing(r.variable)): tuple(r.barriers) for r in results if r.verdict is Verdict.BLOCKED and r.barriers}
