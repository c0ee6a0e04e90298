"""Training steps: a traced function that asks for gradients itself, judged per gradient site.

A *step* is a traced function whose trace holds a gradient call that trains (a Keras optimizer
applies the gradients, they feed a variable update or are returned, or the function returns no
loss), or a Keras model's ``train_step``. Its findings are its
:class:`~flowcheck._sites.GradientSite` s, not the function's outputs. This module traces a step
while recording its gradient calls (Keras optimizers apply nothing meanwhile), decides whether a
trace is a step, reads a trace that raised after asking for gradients as far as it got, and
builds the sites and the never-trained variables of a report (the state a step touches is
``flowcheck._step_state``'s).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Final

import networkx as nx
import tensorflow as tf

from flowcheck._analysis import Verdict, verdicts
from flowcheck._site_analysis import judge_call, site_graph, source_name, target_names, tensor_labels, unique
from flowcheck._sites import GradientSite, RecordedCall, SiteRecorder
from flowcheck._step_state import KERAS_NONE_WARNING, NO_GRADIENTS, applies_skipped, built_state, metric_counts, metric_notes, unbuild
from flowcheck.errors import InvalidTargetError, LossError

__all__ = [
    "FailedTrace", "attach_targets", "build_sites", "failed_trace", "is_training_step", "judged_at_sites",
    "keras_loss_step", "keras_step", "keras_train_step", "never_trained", "never_trained_across", "site_losses",
    "step_findings", "step_variables", "trace_recorded", "watch_text",
]

# Ops through which gradients change variables (Keras optimizers assign; TF1 ones apply).
_UPDATE_OPS: Final = frozenset({"AssignVariableOp", "AssignSubVariableOp", "AssignAddVariableOp"})
_SEARCH_LIMIT: Final = 20000


class FailedTrace:
    """Stands in for a ``ConcreteFunction`` whose trace raised after the step asked for gradients.

    Attributes:
        graph: The ``FuncGraph`` as far as tracing got.
        structured_outputs: None (the function never returned).
        error: The exception the trace raised.
    """

    def __init__(self, graph: Any, error: BaseException) -> None:
        self.graph = graph
        self.structured_outputs = None
        self.error = error

    @property
    def function_type(self) -> Any:
        raise AttributeError("a failed trace has no function type")


def failed_trace(recorder: SiteRecorder, error: BaseException) -> FailedTrace | None:
    """The graph of a trace that raised after a gradient call, or None when none was made."""
    graphs = [c.graph for c in recorder.calls if c.graph is not None]
    if not graphs:
        return None
    graph = graphs[-1]
    from tensorflow.python.framework import func_graph

    while isinstance(getattr(graph, "outer_graph", None), func_graph.FuncGraph):
        graph = graph.outer_graph
    return FailedTrace(graph, error)


def is_training_step(concrete: Any, calls: Sequence[RecordedCall], kind: str, applies: bool = False) -> bool:
    """Whether the trace is judged by its gradient sites rather than by its outputs."""
    if not calls:
        return False
    if kind == "keras model" or isinstance(concrete, FailedTrace):
        return True
    outputs = [t for t in tf.nest.flatten(concrete.structured_outputs) if isinstance(t, tf.Tensor)]
    if not any(t.dtype.is_floating or t.dtype.is_complex for t in outputs):
        return True  # returns nothing, or no loss: the gradients are what it is about
    if applies:
        return True  # a Keras optimizer applies them
    results = {r.ref() for call in calls for r in call.results or () if isinstance(r, tf.Tensor)}
    returned = {t.ref() for t in outputs} | {t.op.inputs[0].ref() for t in outputs if t.op.type == "Identity"}
    if results & returned:
        return True  # it returns its gradients, for the caller to apply
    return any(_feeds_update(call) for call in calls)


def _feeds_update(call: RecordedCall) -> bool:
    stack = [r.op for r in (call.results or ()) if r is not None and hasattr(r, "op")]
    seen: set[int] = set()
    while stack and len(seen) < _SEARCH_LIMIT:
        op = stack.pop()
        if id(op) in seen:
            continue
        seen.add(id(op))
        if op.type in _UPDATE_OPS or op.type.startswith("ResourceApply") or op.type == "StatefulPartitionedCall":
            return True
        stack.extend(c for out in op.outputs for c in out.consumers())
    return False


def keras_train_step(model: Any) -> Any:
    """A ``tf.function`` running the model's own ``train_step`` (Keras's or an override) on a batch."""

    import keras

    def train_step(x: Any, y: Any = None, sample_weight: Any = None) -> Any:
        # As fit batches its data: x alone when there is no y (keras/src/trainers/data_adapters).
        return model.train_step(keras.utils.pack_x_y_sample_weight(x, y, sample_weight))

    train_step.__name__ = f"{model.name}.train_step"
    return tf.function(train_step)


def keras_step(model: Any, notes: list[str]) -> Any:
    """What ``fit`` runs for a compiled model: its ``train_step`` (Keras's own or an override)."""
    overrides = _overrides(model)
    if not overrides and getattr(model, "loss", None) is None:
        raise InvalidTargetError(
            f"Keras model {model.name!r} is not compiled with a loss: call "
            "model.compile(optimizer=..., loss=...) first, or pass a function returning the loss"
        )
    which = "its own train_step override" if overrides else "Keras's train_step (compiled loss, training=True)"
    notes.append(f"Keras model {model.name!r}: analyzing what fit runs, {which}")
    return keras_train_step(model)


def _overrides(model: Any) -> bool:
    import keras

    return type(model).train_step is not keras.Model.train_step


def site_losses(calls: list[RecordedCall]) -> list[Any]:
    """The floating-point targets of the gradient calls, each once, named as the user wrote them."""
    from flowcheck._trace import LossOutput

    found: list[tuple[str, Any]] = []
    seen: set[Any] = set()
    for call in calls:
        for label, tensor in zip(target_names(call.caller or call.source, call.targets), call.targets):
            if isinstance(tensor, tf.Tensor) and (tensor.dtype.is_floating or tensor.dtype.is_complex) \
                    and tensor.ref() not in seen:
                seen.add(tensor.ref())
                found.append((label, tensor))
    names = unique([label for label, _ in found])
    return [
        LossOutput(name, tensor, tuple(tensor.shape.as_list()) if tensor.shape.rank is not None else (), tensor.dtype.name)
        for name, (_, tensor) in zip(names, found)
    ]


def trace_recorded(
    function: Any, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], notes: list[str],
    failure: Callable[[BaseException], str],
) -> tuple[Any, list[RecordedCall], bool]:
    """Trace ``function`` while recording its gradient calls; the calls of the final trace only.

    Keras optimizers apply nothing meanwhile (:func:`~flowcheck._step_state.applies_skipped`);
    the third value says whether the step called one.

    A trace that raises after a gradient call is read as far as it got (:class:`FailedTrace`);
    one that raises before is a :class:`~flowcheck.errors.TraceError` saying ``failure(exc)``.
    """
    from flowcheck._positions import recording as positions  # where each op is made, read for barriers
    from flowcheck._sites import record_sites, running_user_code
    from flowcheck.errors import TraceError

    built, metrics = built_state(fn, args), metric_counts(fn, args)
    applied: list[tuple[str, bool]] = []
    with running_user_code(), record_sites() as recorder, applies_skipped(applied), positions(), \
            warnings.catch_warnings():
        # Keras's warning about None gradients, provoked by this trace: the report explains it.
        warnings.filterwarnings("ignore", message=KERAS_NONE_WARNING, category=UserWarning)
        try:
            concrete: Any = function.get_concrete_function(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 -- any error of the user's code, re-raised as ours
            concrete = failed_trace(recorder, exc)
            if concrete is None:
                raise TraceError(failure(exc)) from exc
            notes.append(failure(exc).replace("tracing", "the trace of", 1)
                         + " (after asking for gradients: the gradient sites are reported)")
        finally:
            unbuild(built)  # an optimizer built by this trace is the user's to build
    notes.extend(metric_notes(metrics))
    notes.extend(
        f"every gradient is None: {name}.apply_gradients raises ValueError: {NO_GRADIENTS}"
        for name, none in dict.fromkeys(applied) if none
    )
    return concrete, recorder.calls_in(concrete.graph), bool(applied)


def keras_loss_step(model: Any, notes: list[str]) -> Any:
    """The compiled loss of a model whose ``train_step`` asks for no gradient (no trainable weights)."""
    if _overrides(model):
        raise LossError(
            f"the train_step of Keras model {model.name!r} asks for no gradient (no tape.gradient call): "
            "fit would train nothing"
        )
    notes.append(f"{model.name!r} has no trainable weights, so its train_step asks for no gradient: "
                 "its compiled loss is analyzed instead")

    def training_step(x: Any, y: Any = None, sample_weight: Any = None) -> Any:
        y_pred = model(x, training=True)
        return model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)

    training_step.__name__ = f"{model.name}_training_step"
    return tf.function(training_step)


def watch_text(call: RecordedCall, names: dict[int, str]) -> str:
    """The call's watch semantics in words."""
    tape = call.tape
    if tape is None:
        return "tf.gradients: every op of the graph, nothing to watch"
    parts = ["watches accessed trainable variables" if tape.watch_accessed_variables else "watch_accessed_variables=False"]
    if tape.watched:
        shown = [names.get(id(w)) or source_name(w) for w in tape.watched]
        parts.append("watched: " + ", ".join(shown[:6]) + (", ..." if len(shown) > 6 else ""))
    if tape.persistent:
        parts.append("persistent")
    if len(tape.spans) > 1:
        parts.append(f"recorded in {len(tape.spans)} stretches (stop_recording)")
    if call.unconnected_zero:
        parts.append("unconnected_gradients=ZERO (TensorFlow gives zeros, not None)")
    return "; ".join(parts)


class _Index:
    """Maps the objects a call names (tf or Keras variables) to ``Traced.variables``."""

    def __init__(self, variables: Sequence[Any]) -> None:
        self.variables = variables
        self.by_id: dict[int, int] = {}
        for i, var in enumerate(variables):
            for obj in (var.variable, var.tf_variable, getattr(var.variable, "_value", None)):
                if obj is not None:
                    self.by_id.setdefault(id(obj), i)
            for handle in var.handles:
                self.by_id.setdefault(id(handle), i)

    def __call__(self, obj: Any) -> int | None:
        found = self.by_id.get(id(obj))
        if found is None and getattr(obj, "_value", None) is not None:
            found = self.by_id.get(id(obj._value))  # noqa: SLF001 -- a Keras variable's backing
        return found

    def watched(self, call: RecordedCall, i: int) -> bool:
        tape = call.tape
        if tape is None:
            return True
        if any(self(w) == i for w in tape.watched):
            return True
        return tape.watch_accessed_variables and bool(self.variables[i].tf_variable.trainable)


def build_sites(traced: Any, graph: nx.DiGraph, barrier_of: Any) -> tuple[tuple[GradientSite, ...], set[int]]:
    """The report's gradient sites, one per call in the final trace, in the order made, and the
    variables (indices) a gradient would reach at some site if they were asked for."""
    index = _Index(traced.variables)
    sites = []
    reached: set[int] = set()
    var_nodes: list[str] = graph.graph["variables"]
    for call in traced.calls:
        sub = site_graph(graph, call, traced.variables, functools.partial(index.watched, call), index)
        if sub.targets:
            found = verdicts(sub.graph, var_nodes, sub.targets, reached=sub.reached())
            reached.update(i for i, node in enumerate(var_nodes) if found[node] is Verdict.RECEIVES)
        written = tensor_labels(call.caller or call.source, len(call.sources))
        raw = [
            traced.variables[i].name if (i := index(obj)) is not None else label or source_name(obj)
            for obj, label in zip(call.sources, written)
        ]
        names = unique(raw)
        trainable = [
            bool(traced.variables[i].trainable) if (i := index(obj)) is not None else bool(getattr(obj, "trainable", False))
            for obj in call.sources
        ]
        labels = {id(obj): n for obj, n in zip(call.sources, names)}
        sites.append(judge_call(
            call, sub, names, trainable, barrier_of, watch_text(call, labels), target_names(call.caller or call.source, call.targets),
        ))
    return tuple(sites), reached


def never_trained(traced: Any, results: Sequence[Any], reached: set[int]) -> tuple[Any, ...]:
    """Trainable variables that some site's tape would give a gradient (``reached``) but no site lists.

    Judged by each tape: a variable read inside its block and watched by it (a plain
    ``tf.Variable`` codebook), not one read before the block (a distillation's teacher).
    """
    index = _Index(traced.variables)
    listed = {i for call in traced.calls for obj in call.sources if (i := index(obj)) is not None}
    return tuple(r for i, r in enumerate(results) if r.trainable and i not in listed and i in reached)


def step_variables(traced: Any, results: Sequence[Any]) -> list[Any]:
    """The variables a step's report lists: every site's sources and the trainable ones its targets
    reach; the rest (optimizer slots and counters, metric totals, seeds, BatchNorm statistics) is
    counted, not listed."""
    index = _Index(traced.variables)
    listed = {i for call in traced.calls for obj in call.sources if (i := index(obj)) is not None}
    kept = [r for i, r in enumerate(results) if i in listed or (r.trainable and r.verdict is not Verdict.UNUSED)]
    return kept


def judged_at_sites(report: Any) -> Any:
    """A shallow copy of a step's report whose variables carry their verdicts at the gradient sites.

    A source gets the verdict of the sites that list it (RECEIVES when any gives it a gradient,
    else the first site's verdict and barriers); a variable no site lists gets UNUSED: no gradient
    call asks for it. Contracts (``assert_gradient_flow``) are checked against this view.
    """
    import copy
    import dataclasses

    found: dict[int, tuple[Verdict, tuple[Any, ...]]] = {}
    for site in report.gradient_sites:
        for s in site.sources:
            key = id(report.result(s.variable).variable)
            if key not in found or (s.receives and found[key][0] is not Verdict.RECEIVES):
                found[key] = (s.verdict, s.barriers)
    view = copy.copy(report)

    def judged(r: Any) -> Any:
        verdict, barriers = found.get(id(r.variable), (Verdict.UNUSED, ()))
        return dataclasses.replace(r, verdict=verdict, barriers=barriers)

    view.variables = tuple(judged(r) for r in report.variables)
    view._everything = tuple(judged(r) for r in report._everything)  # noqa: SLF001
    return view


def attach_targets(graph: nx.DiGraph, traced: Any) -> None:
    """Connect each loss node to its target's op when the target lives in a nested function.

    ``build_graph`` links a loss to the top graph's op of that name; a gradient call made inside
    a nested ``tf.function`` has its target there, under the prefixed id of the inlined body.
    """
    from flowcheck._site_analysis import tensor_node

    for loss, node in zip(traced.losses, graph.graph["losses"]):
        for pred in list(graph.pred[node]):
            if "kind" in graph.nodes[pred]:
                continue  # a real op of the top graph
            real = tensor_node(graph, loss.tensor)
            data = dict(graph.edges[pred, node])
            graph.remove_node(pred)
            if real is not None:
                graph.add_edge(real, node, **data)


def step_findings(
    traced: Any, graph: nx.DiGraph, results: list[Any], barrier_of: Any
) -> tuple[tuple[GradientSite, ...], tuple[Any, ...], list[Any]]:
    """A step's sites, its never-trained variables and the variables its report lists."""
    sites, reached = build_sites(traced, graph, barrier_of)
    return sites, never_trained(traced, results, reached), step_variables(traced, results)


def never_trained_across(reports: Sequence[Any]) -> tuple[Any, ...]:
    """The never-trained variables of several steps' reports (a GAN's two steps, a script's steps).

    A variable one step never asks for (the discriminator, in the generator's step) is trained when
    another step's site lists it: only those no site of any report lists remain, each once.
    """
    listed: set[int] = set()
    for report in reports:
        for site in report.gradient_sites:
            for s in site.sources:
                listed.update({id(s.variable), id(getattr(s.variable, "_value", None))})
    found: dict[int, Any] = {}
    for report in reports:
        for r in report.never_trained:
            if id(r.variable) not in listed and id(getattr(r.variable, "_value", None)) not in listed:
                found.setdefault(id(r.variable), r)
    return tuple(found.values())
