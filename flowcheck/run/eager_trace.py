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

import builtins
import contextlib
import dataclasses
import dis
import gc
import io
import logging
import inspect
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

from flowcheck._phrases import EAGER_ANSWER, OUTSIDE_TAPE
from flowcheck.run.step import EAGER_NOTE, EAGERLY_NOTE, Step
from flowcheck.source.lines import SourceLine, frame_running

__all__ = ["explain", "holder"]


def holder(
    call: SourceLine | None, nth: int = 0, ran: frozenset[tuple[str, int]] | None = None,
) -> tuple[Any, tuple[Any, ...], dict[str, Any], int, frozenset[tuple[str, int]] | None] | None:
    """The script's function making the gradient call at ``call``, the arguments it was called with,
    ``nth``: the call's place among the gradient calls written on its line (the recorded call's), and
    ``ran``: the user's lines (absolute file, line) its tape's block ran, when heard."""
    if call is None or call.function.startswith("<"):
        return None
    frame = frame_running(call)
    if frame is None or _rebinds_parameters(frame.f_code):  # which arguments it was called with is not known
        return None
    code, values = frame.f_code, frame.f_locals
    found = [f for f in gc.get_referrers(code) if isinstance(f, types.FunctionType) and f.__code__ is code
             and _same_cells(f, values)]  # closures of one def: the one whose cells the frame reads
    if len(found) != 1:  # which function is not known
        return None
    fn = found[0]
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
    return fn, tuple(args), kwargs, nth, ran


def _same_cells(fn: types.FunctionType, values: dict[str, Any]) -> bool:
    """Whether each free variable of ``fn`` holds what the frame reads under its name."""
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            if name in values and cell.cell_contents is not values[name]:
                return False
        except ValueError:  # an empty cell: the frame reads nothing under its name either
            if name in values:
                return False
    return True


def _rebinds_parameters(code: types.CodeType) -> bool:
    """Whether the function assigns to one of its parameters (``x = preprocess(x)``): its frame no
    longer holds the arguments it was called with."""
    count = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & inspect.CO_VARARGS) \
        + bool(code.co_flags & inspect.CO_VARKEYWORDS)
    parameters = set(code.co_varnames[:count])
    return any(i.opname in ("STORE_FAST", "STORE_DEREF", "DELETE_FAST") and i.argval in parameters
               for i in dis.get_instructions(code))


def explain(step: Step) -> None:
    """Give ``step``'s eager site the barriers a trace of the function holding its tape finds, where it can."""
    held, site = step.held_by, step.eager
    step.held_by = None
    if held is None or site is None or not site.cut:
        return
    from flowcheck.errors import TraceError
    from flowcheck.trace.eager_sites import backing

    given = {id(backing(s.variable)) for s in site.sources if not s.tensorflow_none}
    try:
        with _no_side_effects():
            cuts, unread, outside = _traced_cuts(*held, site.source, given)
    except TraceError as exc:  # a NumPy function no conversion was heard for (np.square(t) reads the buffer)
        if _SYMBOLIC in str(exc) and (EAGER_NOTE in site.notes or EAGERLY_NOTE in site.notes):
            notes = tuple(n for n in site.notes if n not in (EAGER_NOTE, EAGERLY_NOTE))
            step.eager = dataclasses.replace(site, notes=(*notes, f"{exc}: a value the tape records leaves TensorFlow there"))
        return
    except (Exception, SystemExit, KeyboardInterrupt):  # noqa: BLE001 -- untraceable otherwise (a sys.exit in
        return  # a branch the call did not take runs at the trace): the site stays as TensorFlow answered

    from flowcheck._model import Verdict

    sources = tuple(  # a source the trace's tape does not reach at all is unused there, not cut
        s if not s.tensorflow_none else dataclasses.replace(s, verdict=Verdict.UNUSED) if id(backing(s.variable)) in unread
        else dataclasses.replace(s, barriers=cuts.get(id(backing(s.variable)), ())) for s in site.sources
    )
    if not any(s.barriers or s.verdict is Verdict.UNUSED for s in sources):
        return
    name = getattr(held[0], "__name__", "the function")
    notes = tuple(n for n in site.notes if n not in (EAGER_ANSWER, EAGER_NOTE, EAGERLY_NOTE))
    unused = " and the sources its targets do not read" if any(s.verdict is Verdict.UNUSED for s in sources) else ""
    told = (f"called eagerly: TensorFlow's own answer; the ops and lines that cut{unused} are those of {name} traced "
            "by tf.function once the script had ended, with the arguments of its first call as the script left them")
    step.eager = dataclasses.replace(site, sources=sources, notes=(told, *notes, *outside))


# What TensorFlow raises when a traced function hands a tensor to NumPy.
_SYMBOLIC = "Cannot convert a symbolic"


def _traced_cuts(
    fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], nth: int, ran: frozenset[tuple[str, int]] | None,
    call: SourceLine | None, given: set[int],
) -> tuple[dict[int, tuple[Any, ...]], frozenset[int], tuple[str, ...]]:
    """Per variable (id of its ``tf.Variable``): the barriers of a trace of ``fn`` for the variables it blocks,
    at the traced gradient call that is the ``nth`` written on ``call``'s line when the trace is judged at
    its gradient calls; the variables that call's targets do not read at all (unused), and whether they were
    computed outside the tape's block (:data:`OUTSIDE_TAPE`, or nothing). Nothing when the
    trace gives no gradient to a variable in ``given`` (TensorFlow gave it one: the trace is not what ran), no
    barrier inside a ``cond``/``case`` branch (eagerly only the branch taken ran), and none at a line the
    tape's block did not run (``ran``, when heard)."""
    from flowcheck._api import build_report
    from flowcheck._gc import collector_paused
    from flowcheck._model import Verdict
    from flowcheck.graph.build import build_graph
    from flowcheck.source.names import call_starts
    from flowcheck.trace.eager_sites import backing
    from flowcheck.trace.target import trace

    traced = dataclasses.replace(trace(fn, args, kwargs), python_function=None, target_kind="tf.function")  # nothing run
    with collector_paused():
        graph = build_graph(traced)
        report = build_report(traced, graph)
    same = [s for s in report.gradient_sites if s.source is not None and call is not None
            and (s.source.file, s.source.line) == (call.file, call.line)]
    if len(same) > 1 and len(same) == len(call_starts(call)) and nth < len(same):
        same = [same[nth]]  # two calls written on one line: the eager call's own
    results = same[0].sources if len(same) == 1 else () if report.gradient_sites else report.variables
    if any(r.verdict is not Verdict.RECEIVES and id(backing(r.variable)) in given for r in results):
        return {}, frozenset(), ()
    cuts = {id(backing(r.variable)): tuple(b for b in r.barriers if not _in_branch(graph, b.node) and _ran(b, ran))
            for r in results if r.verdict is Verdict.BLOCKED}
    unread = frozenset(id(backing(r.variable)) for r in results if r.verdict is Verdict.UNUSED) if len(same) == 1 else frozenset()
    outside = tuple(n for n in same[0].notes if n == OUTSIDE_TAPE) if len(same) == 1 else ()
    return {k: v for k, v in cuts.items() if v}, unread, outside


def _ran(barrier: Any, ran: frozenset[tuple[str, int]] | None) -> bool:
    """Whether the eager call ran the barrier's line in its tape's block (the trace is made with the
    objects as the script left them: a branch on a state it changed since takes another path)."""
    source = barrier.source
    return ran is None or (source is not None and (os.path.abspath(source.file), source.line) in ran)


def _in_branch(graph: Any, node: str) -> bool:
    """Whether ``node`` lies inside a ``cond``/``case`` branch of the traced graph."""
    clusters = graph.graph["clusters"]
    cluster = graph.nodes[node].get("cluster") if node in graph else None
    while cluster is not None:
        if clusters[cluster]["kind"] in ("cond", "case"):
            return True
        cluster = clusters[cluster]["parent"]
    return False


@contextlib.contextmanager
def _no_side_effects() -> Iterator[None]:
    """The trace runs the function's Python once more, after the script has ended: what it prints or
    logs is not shown, files it opens for writing are ``os.devnull``, files the script left open end
    as they were (a log written through a handle opened before), and summaries are not recorded."""
    import tensorflow as tf

    files = _open_files()

    original = builtins.open

    def opened(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wax+") and not isinstance(file, int):
            return original(os.devnull, mode.replace("x", "w"), *args, **kwargs)
        return original(file, mode, *args, **kwargs)

    disabled = logging.root.manager.disable
    builtins.open = io.open = opened
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                tf.summary.record_if(False):
            yield
    finally:
        builtins.open = io.open = original
        logging.disable(disabled)
        for file, position in files:
            with contextlib.suppress(OSError, ValueError):
                file.flush()
                if file.tell() != position:
                    file.truncate(position)
                    file.seek(position)


def _open_files() -> list[tuple[Any, int]]:
    """The files open for writing (flushed) with their positions, but the standard streams."""
    standard = {id(s) for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)}
    found = []
    for file in gc.get_objects():
        if isinstance(file, io.IOBase) and id(file) not in standard:
            with contextlib.suppress(OSError, ValueError):  # closed, detached, unsupported
                if not file.closed and file.writable() and file.seekable():
                    file.flush()
                    found.append((file, file.tell()))
    return found
