"""Training steps: a traced function that asks for gradients itself, judged per gradient site.

A *step* is a traced function whose trace holds a gradient call that trains (a Keras optimizer
applies the gradients, they feed a variable update or are returned, or the function returns no
loss), or a Keras model's ``train_step``. Its findings are its
:class:`~flowcheck.trace.sites.GradientSite` s, not the function's outputs. This module traces a step
while recording its gradient calls (Keras optimizers apply nothing meanwhile), decides whether a
trace is a step, and reads a trace that raised after asking for gradients as far as it got (the
state a step touches is :mod:`flowcheck.trace.state`'s; the sites are judged in
:mod:`flowcheck.analysis.steps`).
"""

from __future__ import annotations

import contextvars
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Final

import tensorflow as tf

from flowcheck.errors import InvalidTargetError, LossError, UsageError
from flowcheck.source.names import target_names, unique
from flowcheck.trace.kept_step import frozen_but_trained, kept_assignments, left_out_of_kept_step, outputs_without_loss, overrides_train_step
from flowcheck.trace.sites import RecordedCall, SiteRecorder
from flowcheck.trace.state import (
    KERAS_FROZEN_WARNING, KERAS_NONE_WARNING, NO_GRADIENTS, applies_skipped, built_state, metric_counts, metric_notes, unbuild,
)

__all__ = [
    "FailedTrace", "failed_trace", "is_training_step", "keras_loss_step", "keras_step", "keras_train_step",
    "site_losses", "trace_recorded",
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
    if not graph.variables:  # set when a trace returns: the variables its gradient calls name stand in for them
        found = (v if isinstance(v, tf.Variable) else getattr(v, "value", None) for c in recorder.calls for v in c.sources)
        graph.variables = list({id(v): v for v in found if isinstance(v, tf.Variable)}.values())
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


def eagerly_run_step(model: Any) -> Any:
    """The Python ``train_step`` of a Keras model compiled with ``run_eagerly=True`` (else None).

    ``fit`` runs it eagerly, so one that cannot be traced (a ``.numpy()`` in an override) trains;
    it is judged as it runs, as a plain function (under ``flowcheck run`` at its gradient call instead).
    """
    keras = sys.modules.get("keras")
    if keras is None or not isinstance(model, keras.Model) or not runs_eagerly(model) or not EAGER_FALLBACK.get():
        return None
    return keras_train_step(model).python_function


# False under `flowcheck run`, which judges such a step at its eager gradient calls as the script runs it.
EAGER_FALLBACK: Final[contextvars.ContextVar[bool]] = contextvars.ContextVar("flowcheck_eager_fallback", default=True)


def runs_eagerly(model: Any) -> bool:
    """Whether ``fit`` runs the model's ``train_step`` eagerly: ``run_eagerly=True``, or ``tf.config.run_functions_eagerly(True)``."""
    return bool(getattr(model, "run_eagerly", False)) or tf.config.functions_run_eagerly()


def keras_step(model: Any, notes: list[str]) -> Any:
    """What ``fit`` runs for a compiled model: its ``train_step`` (Keras's own or an override)."""
    overrides = overrides_train_step(model)
    if not getattr(model, "compiled", True):
        raise InvalidTargetError(
            f"Keras model {model.name!r} is not compiled: call "
            "model.compile(optimizer=..., loss=...) first, or pass a function returning the loss"
        )
    which = "its own train_step override" if overrides else "Keras's train_step (compiled loss, training=True)"
    why = "compiled with run_eagerly=True" if getattr(model, "run_eagerly", False) else "tf.config.run_functions_eagerly(True)"
    how = f", eagerly ({why}): judged as its eager tape answers" if runs_eagerly(model) else ""
    notes.append(f"Keras model {model.name!r}: analyzing what fit runs, {which}{how}")
    notes.extend(_kept_step_notes(model))
    notes.extend([] if overrides else outputs_without_loss(model))
    return keras_train_step(model)


def _kept_step_notes(model: Any) -> list[str]:
    """Said when the step ``fit`` kept from an earlier call trains other weights than today's flags say."""
    assigned = kept_assignments(model)
    still, left_out = frozen_but_trained(model, assigned), left_out_of_kept_step(model, assigned)
    if not still and not left_out:
        return []
    parts = [f"still trains {len(still)} weights frozen since ({', '.join(w.path for w in still)})"] if still else []
    if left_out:
        parts.append(f"does not train {len(left_out)} made trainable since ({', '.join(w.path for w in left_out)})")
    return [
        f"Keras model {model.name!r}: fit will run the step it traced before, kept until model.compile() is "
        f"called again: it {' and '.join(parts)}; this analysis traces the step anew, on today's trainable flags"
    ]


def no_loss(model: Any, exc: BaseException | None) -> InvalidTargetError | None:
    """The error to raise when tracing ``model``'s train_step failed because it has no loss to compute.

    ``Trainer.compute_loss`` (keras/src/trainers/trainer.py) raises it when there is no compiled
    loss, no ``add_loss`` and no override: known only once the model has run, as ``add_loss`` is
    called inside ``call`` (a VAE compiled with an optimizer alone trains).
    """
    if exc is None or "No loss to compute" not in str(exc):
        return None
    return InvalidTargetError(
        f"Keras model {model.name!r} is not compiled with a loss and adds none (add_loss): call "
        "model.compile(optimizer=..., loss=...) first, or pass a function returning the loss"
    )


_COMPILED_LOSS: Final = os.path.join("trainers", "compile_utils.py")  # Keras's CompileLoss


def no_labels(model: Any, args: tuple[Any, ...], kwargs: dict[str, Any], exc: BaseException | None) -> UsageError | None:
    """The error to raise when tracing ``model``'s train_step failed because its compiled loss got no labels.

    ``fit(x)`` with no ``y`` gives a compiled loss ``y_true=None``, and Keras fails deep inside it
    with ``None values not supported``; Keras's own ``train_step`` and ``compute_loss`` are the ones
    that hand it over (an override may need no labels).
    """
    import keras

    given_y = (len(args) > 1 and args[1] is not None) or kwargs.get("y") is not None
    in_loss = exc is not None and any(  # not an error of the model's call (an input of the wrong shape)
        frame.filename.endswith(_COMPILED_LOSS) for frame in traceback.extract_tb(exc.__traceback__))
    if not in_loss or given_y or getattr(model, "_compile_loss", None) is None or overrides_train_step(model) \
            or type(model).compute_loss is not keras.Model.compute_loss:
        return None
    return UsageError(
        f"Keras model {model.name!r} is compiled with a loss that compares its outputs with labels, "
        "and no labels were given: pass them, (model, x, y)"
    )


def site_losses(calls: list[RecordedCall]) -> list[Any]:
    """The floating-point targets of the gradient calls, each once, named as the user wrote them."""
    from flowcheck.trace.traced import LossOutput

    found: list[tuple[str, Any]] = []
    seen: set[Any] = set()
    for call in calls:
        for label, tensor in zip(target_names(call.caller or call.source, call.targets, call.nth), call.targets):
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
) -> tuple[Any, list[RecordedCall], tuple[Any, ...]]:
    """Trace ``function`` while recording its gradient calls; the calls of the final trace only.

    Keras optimizers apply nothing meanwhile (:func:`~flowcheck.trace.state.applies_skipped`);
    the third value is the ones the step called, each once.

    A trace that raises after a gradient call is read as far as it got (:class:`FailedTrace`);
    one that raises before is a :class:`~flowcheck.errors.TraceError` saying ``failure(exc)``.
    """
    from flowcheck.errors import TraceError, unchained
    from flowcheck.source.positions import recording as positions  # where each op is made, read for barriers
    from flowcheck.trace.recording import nested_functions_afresh, record_sites
    from flowcheck.trace.sites import running_user_code

    built, metrics = built_state(fn, args), metric_counts(fn, args)
    applied: list[tuple[Any, bool]] = []
    dropped: list[Any] = []
    with running_user_code(), record_sites() as recorder, applies_skipped(applied), positions(), \
            nested_functions_afresh(), warnings.catch_warnings():
        # Keras's warnings about None gradients and a frozen model, provoked by this trace: the report explains them.
        warnings.filterwarnings("ignore", message=KERAS_NONE_WARNING, category=UserWarning)
        warnings.filterwarnings("ignore", message=KERAS_FROZEN_WARNING, category=UserWarning)
        try:
            concrete: Any = function.get_concrete_function(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 -- any error of the user's code, re-raised as ours
            concrete = failed_trace(recorder, exc)
            if concrete is None:
                raise unchained(TraceError(failure(exc)), exc) from None
            notes.append(failure(exc).replace("tracing", "the trace of", 1)
                         + " (after asking for gradients: the gradient sites are reported)")
        finally:
            dropped = unbuild(built)  # an optimizer built by this trace is the user's to build
    # A tf.compat.v1 optimizer's slots made by this trace, no longer the optimizer's: the trace holds
    # them weakly (its graph's variables), so they live as long as it does.
    concrete._flowcheck_dropped = dropped  # noqa: SLF001
    notes.extend(metric_notes(metrics))
    notes.extend(
        f"every gradient is None: {name}.apply_gradients raises ValueError: {NO_GRADIENTS}"
        for name, none in dict.fromkeys((str(opt.name), none) for opt, none in applied) if none
    )
    optimizers = tuple({id(opt): opt for opt, _ in applied}.values())
    return concrete, recorder.calls_in(concrete.graph, finished=not isinstance(concrete, FailedTrace)), optimizers


def keras_loss_step(model: Any, notes: list[str]) -> Any:
    """The compiled loss of a model whose ``train_step`` asks for no gradient (no trainable weights)."""
    if overrides_train_step(model):
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
