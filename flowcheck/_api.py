"""``flowcheck.analyze``: validate -> trace -> graph -> analysis -> :class:`~flowcheck._report.Report`."""

from __future__ import annotations

import dataclasses
import warnings
from types import MappingProxyType
from typing import Any

import networkx as nx

from flowcheck._model import Barrier, VariableResult, Verdict
from flowcheck._phrases import a_or_an, untracked_text
from flowcheck._report import Report
from flowcheck.analysis.barriers import barrier, one_per_replica
from flowcheck.analysis.verdicts import Analysis, analyze_graph
from flowcheck.errors import NoVariablesError, TraceError

__all__ = ["analyze", "build_report", "eager_only_report"]


def analyze(fn: Any, *args: Any, **kwargs: Any) -> Report:
    """Trace ``fn(*args, **kwargs)`` and predict which variables receive a gradient from it.

    Args:
        fn: A ``tf.function``, a plain callable (wrapped in ``tf.function``) or a compiled Keras
            model (then ``args`` are ``x, y``: its training step is analyzed).
        *args: Example inputs, as for calling ``fn``.
        **kwargs: Keyword inputs, as for calling ``fn``.

    Returns:
        A :class:`Report`.

    Raises:
        FlowcheckError: a subclass saying what is wrong with ``fn`` or its result.
    """
    from flowcheck.trace.state import global_seed_generator_kept

    _check_inputs(fn, args, kwargs)
    with global_seed_generator_kept():
        return _analyze(fn, args, kwargs)


def _check_inputs(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Inputs ``fn`` cannot take, said before tracing (a trace, then an eager call, each raised TypeError).

    Raises:
        UsageError: the inputs do not bind to ``fn``'s signature.
    """
    import sys

    from flowcheck.errors import UsageError

    keras = sys.modules.get("keras")  # not imported: fn is no Keras model
    if keras is not None and isinstance(fn, keras.Model):  # its training step takes (x, y)
        if not args and "x" not in kwargs:
            raise UsageError(f"the Keras model {getattr(fn, 'name', '')!r} is analyzed on a batch: pass its inputs, (model, x, y)")
        data = args[0] if args else kwargs["x"]
        if type(data).__name__.endswith("Dataset") and not hasattr(data, "shape"):  # tf.data, a PyDataset: fit's data
            kind = "a tf.data.Dataset" if "tensorflow" in type(data).__module__ else a_or_an(type(data).__name__)
            raise UsageError(f"the Keras model {getattr(fn, 'name', '')!r} is analyzed on a batch, as its train_step "
                             f"takes one, not on {kind}: pass one of its batches, "
                             "(model, *next(iter(dataset))), or use flowcheck.keras.GradientFlowCheck in fit")
        return
    mismatch = unbindable(fn, args, kwargs)
    if mismatch is not None:
        name = getattr(getattr(fn, "python_function", fn), "__name__", None) or type(fn).__name__
        given = f"{len(args)} positional input{'s' if len(args) != 1 else ''}" + (
            f" and {', '.join(kwargs)}=" if kwargs else "")
        raise UsageError(f"{name}{mismatch[0]} cannot take the {given}: {mismatch[1]}") from None


def unbindable(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, str] | None:
    """``fn``'s parameters as called, ``"(x, y)"``, and why ``args`` and ``kwargs`` do not bind to them.

    A ``tf.function`` is read through its Python function; a decorated function by the wrapper's own
    parameters (``functools.wraps`` names the function it calls, whose parameters may not be the
    wrapper's). None when they bind, or when ``inspect`` cannot read the signature (the call will tell).
    """
    import inspect

    function = getattr(fn, "python_function", fn)
    try:
        signature = inspect.signature(function, follow_wrapped=False)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        plain = signature.replace(  # without the annotations' noise
            parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
            return_annotation=signature.empty,
        )
        return str(plain), str(exc)
    return None


def _analyze(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Report:
    from flowcheck._gc import collector_paused
    from flowcheck.graph.build import build_graph
    from flowcheck.graph.ops import save_kept
    from flowcheck.graph.ops import GradientOracle
    from flowcheck.trace.steps import eagerly_run_step
    from flowcheck.trace.target import is_plain_callable, trace

    try:
        traced = trace(fn, args, kwargs)
    except TraceError as exc:
        eager_step = eagerly_run_step(fn)
        if eager_step is not None:  # fit runs it eagerly: judged as it runs, from its eager call alone
            try:
                return eager_only_report(eager_step, args, kwargs, exc)
            except (TraceError, ValueError) as eager_exc:  # layers the failed trace built hold its variables
                raise exc from eager_exc  # the trace's error stands, as before the fallback
        if not is_plain_callable(fn):
            raise
        return eager_only_report(fn, args, kwargs, exc)  # a NumPy round trip: judged from its eager call alone
    except NoVariablesError as exc:
        if not is_plain_callable(fn):
            raise
        return eager_only_report(fn, args, kwargs, exc)  # read only where no graph sees: inside a tf.py_function
    oracle = GradientOracle()
    with collector_paused():
        graph = build_graph(traced, oracle)
        save_kept()  # the answers probed for TensorFlow's and Keras's own gradients, for the next run
        report = build_report(traced, graph)
    if oracle.uncertain:  # only an op on a path to a loss can change a verdict (a step's optimizer update cannot)
        feeding = {graph.nodes[n].get("name") for n in report.analysis.feeding}
        report.notes += tuple(
            f"could not ask the gradient of {what}; assumed it passes the gradient"
            for name, what in oracle.uncertain if name in feeding
        )
    return report


def build_report(traced: Any, graph: nx.DiGraph) -> Report:
    """The report of a traced target over its graph: verdicts, barriers, sites, the eager answers of a plain callable."""
    from flowcheck.analysis import steps as _steps  # a training step's gradient sites

    if traced.step:
        _steps.attach_targets(graph, traced)
        graph.graph["step"] = True
    analysis = analyze_graph(graph)
    cache: dict[tuple[str, str], Barrier] = {}
    results = _results(traced, analysis, cache)
    # A step's gradient calls have given TensorFlow's answer already: differentiating raises only where one raised.
    raised = not traced.step or any(call.error is not None for call in traced.calls)
    error_edges = analysis.errors if raised else ()
    notes = list(traced.notes)
    judged = results
    if traced.python_function is not None:  # a plain callable: the tape's answer as the user calls it
        from flowcheck.analysis.eager import as_called, as_called_errors
        from flowcheck.trace.eager import run_eagerly

        fn = traced.python_function
        run = run_eagerly(fn, traced.args, traced.kwargs, traced.variables, traced.name)
        judged = as_called(judged, graph, run)
        error_edges = as_called_errors(analysis, run)
    errors = one_per_replica(barrier(graph, edge, cache) for edge in error_edges)
    if len(traced.losses) > 1 and not traced.step:
        # Users who check with a tape around the whole call see zeros and think the report is wrong.
        notes.append(
            f"{len(traced.losses)} losses ({', '.join(l.name for l in traced.losses)}): a per-loss verdict is "
            "what a tape gives when that loss alone is differentiated inside the step; a tape around "
            "one call returning all of them gives zeros, not None, to variables only another loss uses"
        )
    sites, never, listed = _steps.step_findings(traced, graph, list(judged), barrier) if traced.step else ((), (), judged)
    if never:  # a tf.Variable a Keras layer holds untracked is why, for some (looked for only then: a walk of every layer)
        from flowcheck.trace.owners import untracked_by_keras

        untracked = untracked_by_keras(list(traced.owners))
        notes.extend(untracked_text(r.name, held) for r in never if (held := _untracked(traced, untracked, r)) is not None)
    if traced.step and (traced.target_kind == "callable" or traced.eager):  # as its eager call answers
        from flowcheck.analysis.eager import as_called_sites
        from flowcheck.verify.step import eager_calls

        exits: list[Any] = []  # the step runs once eagerly, every state it touches restored
        failed: list[str] = []
        calls = eager_calls(traced, sites, exits, failed)
        sites = as_called_sites(traced, graph, sites, calls, exits, failed)
    listed, sites = _with_creation(traced, listed, sites)
    report = Report(
        traced, graph, tuple(listed), tuple(notes), errors, gradient_sites=sites, never_trained=never,
        analysis=analysis, barriers=cache,
    )
    report.other_state, report._everything = len(judged) - len(listed), judged
    return report


def _with_creation(traced: Any, results: Any, sites: Any) -> tuple[list[VariableResult], Any]:
    """The unused variables (and sources) with the user's line that created them, where a layer or module holds
    them (looked for only when one is unused: a walk of the owners' layers and their classes' source)."""
    unused = [r.variable for r in results if r.verdict is Verdict.UNUSED]
    unused += [s.variable for site in sites for s in site.sources if s.verdict is Verdict.UNUSED]
    if not unused or not traced.owners:
        return list(results), sites
    from flowcheck.source.created import creation_line
    from flowcheck.trace.owners import variable_holders

    wanted = {id(v): id(v) for v in unused}  # a source is the Keras variable or the tf.Variable behind it
    names = {}
    for t in traced.variables:
        key = wanted.get(id(t.variable), wanted.get(id(t.tf_variable)))
        if key is not None:
            wanted[id(t.variable)] = wanted[id(t.tf_variable)] = key
            names[key] = t.tf_variable.name.split(":")[0].rsplit("/", 1)[-1]
    lines = {key: creation_line(holder, attribute, names.get(key))
             for key, (holder, attribute) in variable_holders(list(traced.owners), wanted).items()}
    if not any(lines.values()):
        return list(results), sites

    def told(item: Any) -> Any:
        line = lines.get(id(item.variable)) if item.verdict is Verdict.UNUSED else None
        return dataclasses.replace(item, created=line) if line is not None else item

    sites = tuple(dataclasses.replace(site, sources=tuple(told(s) for s in site.sources)) for site in sites)
    return [told(r) for r in results], sites


def _untracked(traced: Any, untracked: dict[int, str], result: VariableResult) -> str | None:
    """How a Keras layer holds ``result`` 's variable untracked (``clip.logit_scale``), or None."""
    return next((untracked.get(id(v.tf_variable)) for v in traced.variables if v.variable is result.variable), None)


def _results(traced: Any, analysis: Analysis, cache: dict[tuple[str, str], Barrier]) -> tuple[VariableResult, ...]:
    """One result per traced variable: its verdicts (total and per loss) and the barriers of its cut."""
    graph, cuts, verdicts = analysis.graph, analysis.cuts, analysis.verdicts
    per_loss = [(loss.name, analysis.per_loss[node]) for loss, node in zip(traced.losses, analysis.losses)]
    results = []
    for node, var in zip(analysis.variables, traced.variables):
        cut = cuts.get(node)  # a blocked variable's; most have none
        results.append(VariableResult(
            name=var.name, verdict=verdicts[node],
            barriers=one_per_replica([barrier(graph, edge, cache) for edge in cut]) if cut else (),
            shape=var.shape, dtype=var.dtype, trainable=var.trainable,
            per_loss=MappingProxyType({name: found[node] for name, found in per_loss}),
            variable=var.variable, node=node, watched_by_default=var.watched_by_default,
        ))
    return tuple(results)


def eager_only_report(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                      failure: TraceError | NoVariablesError) -> Report:
    """The report of a callable judged from its eager call alone: it cannot be traced, or its graph reads no variable.

    Raises:
        NoVariablesError: the call reads no variable.
    """
    from flowcheck.analysis.eager import eager_only, untraced_advice
    from flowcheck.graph.build import endpoints_graph
    from flowcheck.trace.eager import run_eagerly
    from flowcheck.trace.target import owned_variables
    from flowcheck.trace.traced import Traced

    from flowcheck.trace.eager_sites import eager_site
    from flowcheck.trace.state import KERAS_NONE_WARNING, built_state, unbuild
    from flowcheck._phrases import a_or_an
    from flowcheck.verify.iterators import put_back, saved_positions

    name = str(getattr(fn, "__name__", None) or type(fn).__name__)
    positions = saved_positions(fn, args)  # the batches a step draws (next(it)) are the script's to draw
    moving = next((type(it).__name__ for it, position in positions if position is None), None)
    if moving is not None:
        raise TraceError(f"{failure}; {name} draws batches from {a_or_an(moving)} whose position cannot be saved, so "
                         "flowcheck did not run it eagerly either: a run would change the batches the script trains on")
    built = built_state(fn, args)
    try:
        with warnings.catch_warnings():  # Keras's bare warning about None gradients: the report explains them
            warnings.filterwarnings("ignore", message=KERAS_NONE_WARNING, category=UserWarning)
            run = run_eagerly(fn, args, kwargs, owned_variables(fn, args, kwargs), name)
    finally:
        unbuild(built)  # an optimizer the step built is the user's to build
        put_back(positions)
    renewed = (f"{name} creates {', '.join(run.renewed)} anew at each call: a tf.Variable made again at every "
               "call starts over each time and no optimizer can train it; create it once, outside the function")
    if not run.variables:
        if isinstance(failure, NoVariablesError) and not run.renewed:
            raise failure
        raise NoVariablesError(renewed if run.renewed else f"{name} reads no variable: nothing can be trained") from failure
    if isinstance(failure, NoVariablesError):  # the eager call read variables the graph never saw
        failure = TraceError(f"the graph traced from {name} reads no variable: one read only inside a "
                             "tf.py_function (or tf.numpy_function) runs in Python, unseen by the graph and the tape")
    notes = [f"{failure}: no static analysis was possible, so the verdicts are the eager tape's alone "
             f"(no barriers, lines or diagram){untraced_advice(run.exits, str(failure))}"] + ([renewed] if run.renewed else [])
    if run.error is not None:
        notes.append(f"differentiating the loss raises {run.error}: no static analysis can say which op")
    sites = tuple(_with_exits(eager_site(call), run.exits) for call in run.calls)  # a step's calls: TensorFlow's
    results = eager_only(run, str(failure))
    if sites:  # a step lists its sources and the trainable variables it reads, not its optimizer's slots
        sources = {id(s.variable) for site in sites for s in site.sources}
        results = tuple(r for r in results if r.trainable or id(r.variable) in sources)
    traced = Traced(fn, None, tuple(args), dict(kwargs), "callable", run.variables, {}, run.losses, notes, fn, name=name)
    return Report(traced, endpoints_graph(traced), results, tuple(notes), (), sites)


def _with_exits(site: Any, exits: Any) -> Any:
    """An eager site with a source that got None, told where the step's values left TensorFlow (the likely cut)."""
    left = list(dict.fromkeys(str(e) for e in exits))
    if not left or not any(s.tensorflow_none for s in site.sources):
        return site
    return dataclasses.replace(site, notes=(*site.notes, f"while the step ran: {'; '.join(left)}"))
