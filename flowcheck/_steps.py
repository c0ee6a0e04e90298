"""Training steps: a traced function that asks for gradients itself, judged per gradient site.

A *step* is a traced function whose trace holds a gradient call that trains (its gradients feed
a variable update, or the function returns no loss), or a Keras model's ``train_step``. Its
findings are its :class:`~flowcheck._sites.GradientSite` s, not the function's outputs. This
module decides whether a trace is a step, turns a trace that failed after asking for gradients
(Keras's ``No gradients provided for any variable`` while tracing) into one that can be read,
finds the optimizers and the state a step touches, and builds the sites and the never-trained
variables of a report.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator, Sequence
from typing import Any, Final

import networkx as nx
import tensorflow as tf

from flowcheck._analysis import Verdict, verdicts
from flowcheck._site_analysis import judge_call, site_graph, source_name, target_names, unique
from flowcheck._sites import GradientSite, RecordedCall, SiteRecorder
from flowcheck.errors import InvalidTargetError

__all__ = [
    "FailedTrace", "build_sites", "built_state", "failed_trace", "is_training_step", "keras_step",
    "keras_train_step", "never_trained", "site_losses", "state_of", "unbuild", "watch_text",
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


def is_training_step(concrete: Any, calls: Sequence[RecordedCall], kind: str) -> bool:
    """Whether the trace is judged by its gradient sites rather than by its outputs."""
    if kind == "keras model" or isinstance(concrete, FailedTrace):
        return True
    if not calls:
        return False
    outputs = [t for t in tf.nest.flatten(concrete.structured_outputs) if isinstance(t, tf.Tensor)]
    if not any(t.dtype.is_floating or t.dtype.is_complex for t in outputs):
        return True  # returns nothing, or no loss: the gradients are what it is about
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

    def train_step(x: Any, y: Any = None, sample_weight: Any = None) -> Any:
        data = (x,) if y is None and sample_weight is None else (x, y) if sample_weight is None else (x, y, sample_weight)
        return model.train_step(data)

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
        for label, tensor in zip(target_names(call.source, call.targets), call.targets):
            if isinstance(tensor, tf.Tensor) and (tensor.dtype.is_floating or tensor.dtype.is_complex) \
                    and tensor.ref() not in seen:
                seen.add(tensor.ref())
                found.append((label, tensor))
    names = unique([label for label, _ in found])
    return [
        LossOutput(name, tensor, tuple(tensor.shape.as_list()) if tensor.shape.rank is not None else (), tensor.dtype.name)
        for name, (_, tensor) in zip(names, found)
    ]


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


def build_sites(traced: Any, graph: nx.DiGraph, barrier_of: Any) -> tuple[GradientSite, ...]:
    """The report's gradient sites, one per call in the final trace, in the order made."""
    index = _Index(traced.variables)
    sites = []
    for call in traced.calls:
        sub = site_graph(graph, call, traced.variables, functools.partial(index.watched, call), index)
        raw = [traced.variables[i].name if (i := index(obj)) is not None else source_name(obj) for obj in call.sources]
        names = unique(raw)
        trainable = [
            bool(traced.variables[i].trainable) if (i := index(obj)) is not None else bool(getattr(obj, "trainable", False))
            for obj in call.sources
        ]
        labels = {id(obj): n for obj, n in zip(call.sources, names)}
        sites.append(judge_call(
            call, sub, names, trainable, barrier_of, watch_text(call, labels), target_names(call.source, call.targets),
        ))
    return tuple(sites)


def never_trained(traced: Any, graph: nx.DiGraph, results: Sequence[Any]) -> tuple[Any, ...]:
    """Trainable variables a gradient from the sites' targets reaches that no site lists."""
    index = _Index(traced.variables)
    listed = {i for call in traced.calls for obj in call.sources if (i := index(obj)) is not None}
    var_nodes: list[str] = graph.graph["variables"]
    total = verdicts(graph, var_nodes, graph.graph["losses"])
    return tuple(
        r for i, (r, node) in enumerate(zip(results, var_nodes))
        if r.trainable and i not in listed and total[node] is Verdict.RECEIVES
    )


# --- the state a step touches --------------------------------------------------------------------


def optimizers_of(fn: Any, args: Sequence[Any] = ()) -> list[Any]:
    """The Keras optimizers a step can reach: a model's, or named by its code, closures or ``self``."""
    import keras

    found: list[Any] = []

    def add(value: Any) -> None:
        if isinstance(value, keras.optimizers.Optimizer) and all(value is not o for o in found):
            found.append(value)
        if isinstance(value, keras.Model):
            add(getattr(value, "optimizer", None))
        inner = getattr(value, "inner_optimizer", None)  # LossScaleOptimizer
        if inner is not None:
            add(inner)

    for value in _reachable(fn, args):
        add(value)
        if not isinstance(value, (int, float, str, bytes, type(None))) and hasattr(value, "__dict__"):
            with contextlib.suppress(Exception):
                for attr in list(vars(value).values()):
                    add(attr)
    return found


def _reachable(fn: Any, args: Sequence[Any]) -> Iterator[Any]:
    yield fn
    yield from args
    target = getattr(fn, "python_function", fn)
    target = inspect.unwrap(target) if callable(target) else target
    bound = getattr(target, "__self__", None)
    if bound is not None:
        yield bound
        target = getattr(target, "__func__", target)
    for cell in getattr(target, "__closure__", None) or ():
        with contextlib.suppress(ValueError):
            yield cell.cell_contents
    code = getattr(target, "__code__", None)
    globals_ = getattr(target, "__globals__", {})
    if code is not None:
        yield from (globals_[n] for n in code.co_names if n in globals_)


def state_of(fn: Any, args: Sequence[Any], traced_variables: Sequence[Any]) -> list[Any]:
    """Every variable a step may change: its captures, its models' (metrics and seeds too), its optimizers'."""
    import keras

    found: list[Any] = [v.tf_variable for v in traced_variables]
    for opt in optimizers_of(fn, args):
        found.extend(opt.variables)
    for value in _reachable(fn, args):
        for model in [value, *[a for a in (vars(value).values() if hasattr(value, "__dict__") else ())]]:
            if isinstance(model, keras.Layer):
                found.extend(model.variables)
                found.extend(getattr(model, "metrics_variables", []))
    from keras.src.backend.common import global_state

    shared = global_state.get_global_attribute("global_seed_generator")  # never create one
    if shared is not None:
        found.append(shared.state)
    unique_vars: list[Any] = []
    seen: set[int] = set()
    for v in found:
        backing = getattr(v, "_value", None)
        real = backing if isinstance(backing, tf.Variable) else v
        if isinstance(real, tf.Variable) and id(real) not in seen:
            seen.add(id(real))
            unique_vars.append(real)
    return unique_vars


def built_state(fn: Any, args: Sequence[Any]) -> list[tuple[Any, bool, int]]:
    """Each optimizer the step can reach, whether it is built, and how many variables it owns."""
    return [(opt, bool(opt.built), len(opt._variables)) for opt in optimizers_of(fn, args)]  # noqa: SLF001


def unbuild(before: Sequence[tuple[Any, bool, int]]) -> None:
    """Put optimizers that flowcheck's trace or run built back to unbuilt, as the user had them.

    A Keras optimizer builds its slots on first use (``BaseOptimizer.build``); inside a trace
    that fails they stay uninitialized. Undone here to what ``BaseOptimizer.__init__`` leaves, so
    that the user's first real step builds them itself.
    """
    for opt, built, count in before:
        if not built and opt.built:
            del opt._variables[count:]  # noqa: SLF001 -- the optimizer's own variable store
            opt._trainable_variables = []  # noqa: SLF001
            opt._trainable_variables_indices = {}  # noqa: SLF001
            opt.built = False


NO_GRADIENTS: Final = "No gradients provided for any variable"
"""Keras's error when every gradient given to ``apply_gradients`` is None."""


@contextlib.contextmanager
def all_none_tolerated(seen: list[str]) -> Iterator[None]:
    """While tracing, let a Keras optimizer given only None gradients apply nothing instead of raising.

    Keras raises ``No gradients provided for any variable`` inside ``apply_gradients``
    (``BaseOptimizer._filter_empty_gradients``), which would end the trace; the step is then still
    traced to its end, so that variables it creates are initialized as usual, and ``seen`` gets one
    entry per such call.
    """
    from keras.src.optimizers import base_optimizer

    cls = base_optimizer.BaseOptimizer
    original = cls._filter_empty_gradients  # noqa: SLF001

    def tolerant(self: Any, grads: Any, variables: Any) -> Any:
        if list(grads) and all(g is None for g in grads):
            seen.append(f"{self.name}.apply_gradients")
            return [], []
        return original(self, grads, variables)

    cls._filter_empty_gradients = tolerant  # noqa: SLF001
    try:
        yield
    finally:
        cls._filter_empty_gradients = original  # noqa: SLF001
