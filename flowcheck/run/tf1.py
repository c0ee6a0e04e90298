"""TensorFlow 1 graph mode (``tf.compat.v1``, v2 behaviour disabled): a ``Session.run`` as a training step.

The pipeline for a TF1 script: :func:`install` records every graph-mode gradient call while the
script builds its graph (:mod:`flowcheck.trace.tf1`); the first ``Session.run`` whose fetches
depend on one is the step. :func:`analyze_session_run` then builds the graph of the ops that feed
those calls' targets and judges each source (:mod:`flowcheck.graph.tf1`), runs the fetched train
op once with the run's ``feed_dict`` in the user's own session, compares, and restores every
variable (:mod:`flowcheck.verify.tf1`). The result is a :class:`SessionReport`: a
:class:`~flowcheck._report.Report` whose ``gradient_sites`` are the calls the fetches depend on.
:func:`analyze_graph` judges the calls recorded on a graph without a session (a ``minimize`` that
raised "No gradients provided for any variable" never reaches ``Session.run``).
"""

from __future__ import annotations

import contextlib
import re
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import networkx as nx

from flowcheck._model import Verdict
from flowcheck._report import Report, VariableResult
from flowcheck.analysis.tf1 import CallAnalysis, analyze_calls
from flowcheck.analysis.verdicts import verdicts
from flowcheck.errors import VerificationError
from flowcheck.graph.ops import GradientOracle, save_kept
from flowcheck.graph.tf1 import GraphSource, build_graph, differentiated_tensor, graph_variables, resolve_sources
from flowcheck.source.lines import SourceLine, user_frame
from flowcheck.source.exceptions import describe_exception, exception_line
from flowcheck.run.tf1_fetches import dependent, dependent_calls, depends_on_gradient_site, fetch_ops
from flowcheck.trace.sites import GradientSite, SiteSource
from flowcheck.trace.tf1 import GraphCall, graphs_with_calls, install, made_calls, python_names, recorded_calls, uninstall, user_frames
from flowcheck.trace.traced import TracedVariable

if TYPE_CHECKING:
    from flowcheck.verify.loss import Verification

__all__ = ["SessionReport", "SessionSteps", "analyze_failed_call", "analyze_graph", "analyze_session_run", "dependent_calls", "depends_on_gradient_site",
           "graph_mode_recording", "install", "made_calls", "not_run_reports", "uninstall"]

TARGET_KIND = "tf1 Session.run"


@dataclass
class _SessionStep:
    """What :class:`~flowcheck._report.Report` reads of a traced target, for a session step."""

    function: Any
    target_kind: str
    variables: list[TracedVariable]
    losses: list[Any]
    notes: list[str] = field(default_factory=list)
    name: str = ""  # as Traced.name: "" names the step by its function


@dataclass(frozen=True)
class _Loss:
    name: str


class SessionReport(Report):
    """The report on one TF1 ``Session.run`` step (or on a graph's gradient calls, without a session).

    ``gradient_sites`` are the gradient calls the step depends on; ``never_trained`` the trainable
    variables a target depends on differentiably that no gradient call of the graph lists.

    Attributes (beyond :class:`~flowcheck._report.Report`'s):
        after_step: One line per source variable saying what the verifying step did to it.
        step_values: Each source variable's value before and after the verifying step, by name.
        read_trainable: The graph's trainable variables the targets read, sources or not (a WGAN
            critic's step reads the generator's, whose own step comes after ``n_critic`` of these).
    """

    def __init__(
        self, step: _SessionStep, graph: nx.DiGraph, variables: tuple[VariableResult, ...],
        sites: tuple[GradientSite, ...], never_trained: tuple[VariableResult, ...], where: SourceLine | None,
        run: tuple[Any, Any, Any, tuple[CallAnalysis, ...]] | None,
    ) -> None:
        super().__init__(step, graph, variables, tuple(step.notes), gradient_sites=sites, never_trained=never_trained)
        self.target = f"Session.run at {where}" if where else "Session.run" if run else "the graph's gradient calls"
        self.after_step: tuple[str, ...] = ()
        self.step_values: dict[str, tuple[Any, Any]] = {}
        self.unrepeatable: tuple[str, ...] = ()  # why the step cannot be run a second time, if it cannot
        self.calls: tuple[GraphCall, ...] = ()  # the recorded calls judged
        self.read_trainable: tuple[Any, ...] = ()
        self._run = run

    def verify(self, optimizer: Any = None, learning_rate: float | None = None) -> Verification:
        """Run the script's own train op once in its session with the step's feed, compare, restore.

        ``optimizer`` and ``learning_rate`` are not used: the step applies its own optimizer.

        Raises:
            VerificationError: there is no session step to run (the report judged a graph alone).
        """
        del optimizer, learning_rate
        if self._run is None:
            raise VerificationError("no Session.run to verify: the graph's gradient calls were judged without a session")
        from flowcheck.verify.tf1 import verify_session_step

        session, ops, feed_dict, analyses = self._run
        self.verification, self.after_step, self.step_values = verify_session_step(_run, session, ops, feed_dict, analyses)
        return self.verification

    def verify_in_script_run(self, script_run: Callable[[Any], Any], fetches: Any) -> Any:
        """Verify a step that cannot run twice by the script's own run of ``fetches``; returns what it returns.

        ``script_run`` makes the script's ``Session.run`` call with other fetches (feeds and options kept).
        """
        if self._run is None:
            raise VerificationError("no Session.run to verify: the graph's gradient calls were judged without a session")
        from flowcheck.verify.tf1 import verify_in_script_run

        session, _ops, _feed_dict, analyses = self._run
        try:
            result, outcome = verify_in_script_run(_run, session, script_run, fetches, analyses,
                                                   fetch_ops(session.graph, fetches))
        except VerificationError as exc:
            cause = exc.original
            why = f" {exception_line(cause)}" if cause else ""
            self.notes += (f"not verified: {exc}{why}",)
            return script_run(fetches)
        self.verification, self.after_step, self.step_values = outcome
        kept = tuple(n for n in self.notes if not n.startswith("not verified: "))
        self.notes = kept + (f"verified by the script's own run of the step, not a second one: {'; '.join(self.unrepeatable)}",
                             *self.after_step)
        return result


@contextlib.contextmanager
def graph_mode_recording() -> Iterator[None]:
    """Record graph-mode gradient calls while active (``flowcheck run`` wraps the script in it)."""
    undo = install()
    try:
        yield
    finally:
        undo()


def _run(session: Any, fetches: Any, feed_dict: Any) -> Any:
    # Inside ``flowcheck run`` the interception passes flowcheck's own calls through.
    return session.run(fetches, feed_dict)


class SessionSteps:
    """``flowcheck run``'s questions about a ``Session.run``: which training step it makes, and its report."""

    def __init__(self, verify: bool) -> None:
        self.verify = verify

    def key(self, session: Any, fetches: Any) -> tuple[Any, ...] | None:
        """The step: the session and the gradient calls the run computes (None: it computes none).

        A run that fetches a summary or the loss beside the same train op is the same step.
        """
        calls = dependent_calls(session, fetches)
        return ("tf1 session", id(session), *sorted(id(c) for c in calls)) if calls else None

    def __call__(self, session: Any, fetches: Any, feed_dict: Any) -> SessionReport | None:
        return analyze_session_run(session, fetches, feed_dict, verify=self.verify)


def analyze_session_run(session: Any, fetches: Any, feed_dict: Any = None, *, verify: bool = True) -> SessionReport | None:
    """Judge the gradient calls a ``Session.run`` depends on; verify with the user's session.

    Args:
        session: The user's ``tf.compat.v1.Session``.
        fetches: The run's fetches, as passed to ``Session.run``.
        feed_dict: The run's feeds: the step's inputs.
        verify: Run the fetched train op once with ``feed_dict``, compare, restore every variable.

    Returns:
        The report, or None when the fetches depend on no recorded gradient call.
    """
    graph = session.graph
    calls, train_ops = dependent(graph, fetch_ops(graph, fetches))
    if not calls:
        return None
    where, _ = user_frame(traceback.extract_stack())
    report = _report(graph, calls, where, (session, tuple(train_ops), feed_dict))
    if verify:
        _verify(report, train_ops)
    return report


def analyze_graph(graph: Any = None) -> SessionReport | None:
    """Judge every gradient call recorded on ``graph`` (the default graph), without running anything."""
    if graph is None:
        from tensorflow.python.framework import ops

        graph = ops.get_default_graph()
    calls = recorded_calls(graph)
    return _report(graph, calls, None, None) if calls else None


_NO_GRADIENTS = "No gradients provided for any variable"
# TF1-era Keras (tf_keras's OptimizerV2.get_gradients, graph mode) raises at the first None it is given.
_KERAS_NONE = "has `None` for gradient"


_ABOUT_NONE: Final = re.compile(r"None values not supported|convert a value \(None\)|NoneType")


def analyze_failed_call(exc: BaseException) -> SessionReport | None:
    """The report on the graph-mode gradient call that made the script raise ``exc``, if one did.

    A TF1 ``minimize`` whose loss cuts every variable raises ``ValueError: No gradients provided
    for any variable`` while the graph is built, before any ``Session.run``; a gradient that
    reaches an op with none raises ``LookupError`` in ``tf.gradients`` itself. Either way the
    call was recorded, with TensorFlow's answer: the report judges it (nothing is run).
    """
    from tensorflow.python.framework import ops

    calls = recorded_calls(ops.get_default_graph())
    message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    for call in reversed(calls):
        found = call.error is not None and call.error == message
        nones = [g is None for g in call.grads] if call.grads is not None else []
        if not found and nones and (_NO_GRADIENTS in str(exc) and all(nones) or _KERAS_NONE in str(exc) and any(nones)):
            call.error = message  # the user's call (minimize, apply_gradients, Keras's fit) raised after it
            found = True
        # The user's own code choking on the None gradients this call gave (tf.clip_by_norm(None), ...).
        took_none = call.grads is not None and any(g is None for g in call.grads) and _ABOUT_NONE.search(message)
        if found or took_none:
            report = _report(call.graph, [call], None, None)
            # Where the script choked on the None (its clip_by_value line), not only what it raised.
            said = "" if found else f" ({describe_exception(exc, None)}, after this call gave None gradients)"
            report.notes += (f"not verified: the script raised while it built its graph{said}, before any Session.run",)
            return report
    return None


def not_run_reports(covered: set[int]) -> list[SessionReport]:
    """Reports on the recorded gradient calls (ids not in ``covered``) that no analyzed step computed, one per graph.

    TensorFlow answered each when the script built it (a generator's ``compute_gradients`` that
    gave ``None`` everywhere, guarded by a ``tf.no_op``): judged on the graph, nothing run.
    """
    reports = []
    for graph in graphs_with_calls():
        calls = [c for c in recorded_calls(graph) if id(c) not in covered and c.grads is not None]
        if calls:
            report = _report(graph, calls, None, None)
            report.notes += ("not verified: no Session.run of the script's first round (which ends when an analyzed "
                             "step is about to run again) computed these gradients; judged as TensorFlow built them",)
            reports.append(report)
    return reports


def _verify(report: SessionReport, train_ops: Sequence[Any]) -> None:
    import tensorflow as tf

    from flowcheck.verify.tf1 import fetched_ops, unrepeatable_ops

    graph = train_ops[0].graph
    analyses = report._run[3] if report._run is not None else ()  # noqa: SLF001 -- this module's own report
    ran = fetched_ops(train_ops, analyses)
    reasons = unrepeatable_ops(ran, graph_variables(graph) + [r.variable for r in report.variables])
    if reasons:  # ``flowcheck run`` verifies it with the script's own run (verify_in_script_run)
        report.unrepeatable = tuple(reasons)
        report.notes += (f"not verified: {'; '.join(reasons)}; running it once more would change what the script sees next",)
        return
    try:
        report.verify()
    except (tf.errors.OpError, ValueError, TypeError) as exc:  # the script's own run fails the same way
        report.notes += (f"not verified: running the step raised {exception_line(exc)}",)
        return
    report.notes += report.after_step


def _report(
    graph: Any, calls: Sequence[GraphCall], where: SourceLine | None, run: tuple[Any, Any, Any] | None,
) -> SessionReport:
    names, _keep = python_names(user_frames())
    variables = graph_variables(graph)
    everything = recorded_calls(graph)
    listed = {id(obj) for c in everything for obj in c.sources}
    trainable = [v for v in _trainable(graph) if id(v) not in listed]
    sources = resolve_sources(list(calls) + [_extra_call(calls, trainable)], variables, names)
    oracle = GradientOracle()
    nxgraph = build_graph(calls, sources, oracle)
    save_kept()
    analyses = analyze_calls(calls, sources, nxgraph)
    distinct = sorted({s.node: s for s in sources.values()}.values(), key=lambda s: int(s.node.split(":")[1]))
    step = _SessionStep(None, TARGET_KIND, [_traced(s) for s in distinct], [_Loss(n) for n in _loss_names(analyses)])
    step.notes.extend(f"could not ask the gradient of {what}; assumed it passes the gradient" for _, what in oracle.uncertain)
    results = _results(analyses, distinct)
    extra = [s for s in distinct if s.variable is not None and id(s.variable) in {id(v) for v in trainable}]
    never = _never_trained(nxgraph, analyses, extra)
    sites = tuple(_site(a) for a in analyses)
    report = SessionReport(step, nxgraph, results, sites, never, where, None if run is None else (*run, analyses))
    report.calls = tuple(calls)
    # The graph holds every op the targets read: a variable's own op among them is a variable read.
    report.read_trainable = tuple(v for v in _trainable(graph) if differentiated_tensor(v).op.name in nxgraph)
    return report


def _trainable(graph: Any) -> list[Any]:
    from tensorflow.python.framework import ops

    found = graph.get_collection(ops.GraphKeys.TRAINABLE_VARIABLES) + graph.get_collection(
        ops.GraphKeys.TRAINABLE_RESOURCE_VARIABLES
    )
    return list({id(v): v for v in found}.values())


def _extra_call(calls: Sequence[GraphCall], extra: list[Any]) -> GraphCall:
    # Not a call: it numbers the trainable variables no call lists, after the sources.
    first = calls[0]
    return GraphCall(kind="", source=None, graph=first.graph, targets=(), sources=tuple(extra), grads=None,
                     names=first.names)


def _loss_names(analyses: Sequence[CallAnalysis]) -> list[str]:
    return list(dict.fromkeys(t for a in analyses for t in a.targets))


def _traced(src: GraphSource) -> TracedVariable:
    return TracedVariable(
        variable=src.user, tf_variable=src.variable if src.variable is not None else src.user, name=src.name,
        shape=src.shape, dtype=src.dtype,
        trainable=src.trainable, handles=(src.tensor,),
    )


def _results(analyses: Sequence[CallAnalysis], distinct: Sequence[GraphSource]) -> tuple[VariableResult, ...]:
    """One result per distinct source: it receives if some call gives it a gradient."""
    by_node: dict[str, list[tuple[str, Any]]] = {}
    for a in analyses:
        for judged in a.sources:
            by_node.setdefault(judged.source.node, []).append((", ".join(a.targets), judged))
    results = []
    for src in distinct:
        seen = by_node.get(src.node)
        if not seen:
            continue
        order = (Verdict.RECEIVES, Verdict.BLOCKED, Verdict.UNUSED)
        verdict = min((j.verdict for _, j in seen), key=order.index)
        barriers = tuple(b for _, j in seen if j.verdict is Verdict.BLOCKED for b in j.barriers)
        t = _traced(src)
        results.append(VariableResult(
            name=src.name, verdict=verdict, barriers=tuple(dict.fromkeys(barriers)), shape=t.shape, dtype=t.dtype,
            trainable=t.trainable, per_loss=MappingProxyType({loss: j.verdict for loss, j in seen}),
            variable=src.user, node=src.node,
        ))
    return tuple(results)


def _never_trained(graph: nx.DiGraph, analyses: Sequence[CallAnalysis], extra: Sequence[GraphSource]) -> tuple[VariableResult, ...]:
    if not extra:
        return ()
    from flowcheck.graph.build import loss_node

    targets = [loss_node(t.name) for a in analyses for t in a.call.targets]
    verdict = verdicts(graph, [s.node for s in extra], targets)
    return tuple(
        VariableResult(
            name=s.name, verdict=Verdict.RECEIVES, barriers=(), shape=_traced(s).shape, dtype=_traced(s).dtype,
            trainable=True, per_loss=MappingProxyType({}), variable=s.user, node=s.node,
        )
        for s in extra if verdict[s.node] is Verdict.RECEIVES
    )


def _site(a: CallAnalysis) -> GradientSite:
    counts: dict[str, int] = {}
    sources = []
    for judged in a.sources:
        counts[judged.source.name] = counts.get(judged.source.name, 0) + 1
        n = counts[judged.source.name]
        sources.append(SiteSource(
            name=judged.source.name if n == 1 else f"{judged.source.name} ({n})", variable=judged.source.user,
            verdict=judged.verdict, barriers=judged.barriers,
            tensorflow_none=None if a.call.unconnected_zero else judged.tensorflow_none,
            trainable=judged.source.trainable,
        ))
    return GradientSite(kind=a.call.kind, source=a.call.source, targets=a.targets, sources=tuple(sources),
                        watch=a.watch, error=a.call.error, notes=tuple(dict.fromkeys((*a.hints, *(f"{e}" for e in a.errors)))))
