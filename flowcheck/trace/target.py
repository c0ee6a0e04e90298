"""Stage 1: turn the user's target into a traced ``ConcreteFunction`` and name what is in it.

The target may be a ``tf.function``, a plain callable (wrapped in ``tf.function``) or a compiled
Keras model (its ``train_step``, Keras's own or an override, as ``fit`` runs it). While tracing,
every gradient call is recorded (``flowcheck.trace.sites``): a trace whose gradients train (see
``flowcheck.trace.steps``) is a *step*, judged per gradient site, and its losses are the calls' targets. A
``tf.function`` is traced as a fresh copy so that its graph is the one TensorFlow would
differentiate, never one already rewritten by an earlier gradient computation, and so that the
user's own function and its trace cache are left untouched. (Nested ``tf.function``s keep their
own caches; ``flowcheck.graph.build`` reads past what a gradient appended to them.) Variables reach
the graph as captures or as arguments; both are mapped back to the variable objects.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.util import nest

from flowcheck._gc import collector_paused
from flowcheck._phrases import a_or_an
from flowcheck.errors import InvalidTargetError, LossError, NoVariablesError, TraceError, unchained
from flowcheck.source.names import is_default_name
from flowcheck.source.positions import recording
from flowcheck.trace import distributed as _distributed
from flowcheck.trace.created import creating_remembered, initialize_created
from flowcheck.trace.failure import trace_failure
from flowcheck.trace.owners import is_keras_layer, module_paths, owners_in, owners_of
from flowcheck.trace.reuse import reused_recorder
from flowcheck.trace.steps import (
    FailedTrace, is_training_step, keras_loss_step, keras_step, no_labels, no_loss, runs_eagerly, site_losses, trace_recorded,
)
from flowcheck.trace.traced import LossOutput, Traced, TracedVariable

__all__ = [
    "LossOutput", "Traced", "TracedVariable", "describe_variable", "is_plain_callable", "owned_variables", "trace",
]


def trace(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Traced:
    """Trace ``fn(*args, **kwargs)`` and map its captures to variables.

    Raises:
        InvalidTargetError: ``fn`` is not something flowcheck can trace.
        TraceError: TensorFlow raised while tracing.
        LossError: the function returns no floating-point tensor.
        NoVariablesError: the function reads no variable at all.
    """
    notes: list[str] = []
    function, kind, owners = _as_function(fn, notes)
    reused = reused_recorder()
    if reused is not None:  # `flowcheck run`: the trace the script's first call has just made
        concrete: Any = function.get_concrete_function(*args, **kwargs)
        calls, applies = reused.calls_in(concrete.graph), True  # a script's step: judged at its calls (see reuse)
        applied: tuple[Any, ...] = ()  # its own trace made the updates: applied_optimizers reads them
    else:
        try:
            concrete, calls, applied = trace_recorded(function, fn, args, kwargs, notes, lambda exc: trace_failure(exc, _name(fn)))
        except TraceError as exc:
            initialize_created(function)
            original = exc.original
            error = (no_loss(fn, original) or no_labels(fn, args, kwargs, original)) \
                if kind == "keras model" and original is not None else None
            if error is not None and original is not None:
                raise unchained(error, original) from None
            raise
        applies = bool(applied)
    if kind == "keras model" and not calls:
        function = keras_loss_step(fn, notes)  # a model without trainable weights: its compiled loss
        with recording():  # where each op is made, read only for the barriers reported
            concrete = function.get_concrete_function(*args, **kwargs)
    step = is_training_step(concrete, calls, kind, applies)
    losses = site_losses(calls) if step else _losses(concrete, _name(fn), notes)
    if step and not losses:
        raise LossError(f"{_name(fn)} asks for gradients only of non-floating-point tensors: nothing can be trained")
    with collector_paused():  # as for the graph: objects per variable, none cyclic
        owners.extend(owners_in(args) + owners_in(tuple(kwargs.values())))
        arguments = [] if isinstance(concrete, FailedTrace) else _variable_arguments(function, concrete, args, kwargs, notes)
        owners.extend(variable for variable, _ in arguments)  # defaults included
        inputs = list(concrete.graph.captures) + [(_variable_handle(v), inner) for v, inner in arguments]
        variables, captured = _variables(concrete, owners, inputs)
    # (a complete step may differentiate its input tensors only: DeepDream's, the autodiff guide's sigmoid)
    if not variables and not (step and calls and not isinstance(concrete, FailedTrace)):
        raise NoVariablesError(
            f"{_name(fn)} reads no variable: nothing can be trained "
            "(create the variables outside the function and use them inside)"
        )
    if kind == "callable" and step:  # judged at its gradient calls, each as the eager call answers it
        notes[:] = [n for n in notes if not n.startswith(_plain(fn))]
        notes.insert(0, f"{_plain(fn)}: its gradient calls are judged as you call "
                        "it, eagerly (its graph, traced by tf.function, gives the barriers and lines)")
    python_function = fn if kind == "callable" and not step else None  # a step is run by verify, not here
    return Traced(
        function, concrete, tuple(args), dict(kwargs), kind, variables, captured, losses, notes, python_function,
        calls=calls if step else [], step=step, name="" if kind == "keras model" else _name(fn), applied=applied,
        eager=kind == "keras model" and runs_eagerly(fn), owners=tuple(owners),
    )


def is_plain_callable(fn: Any) -> bool:
    """Whether ``fn`` is analyzed as a plain Python callable (run eagerly by its user)."""
    keras = _keras()
    return (
        callable(fn)
        and not isinstance(fn, (tf.types.experimental.PolymorphicFunction, tf.types.experimental.ConcreteFunction))
        and not (keras is not None and isinstance(fn, keras.Model))
    )


def owned_variables(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[TracedVariable]:
    """The variables reachable from a callable and its arguments (closures, globals, ``self``, modules)."""
    found: list[TracedVariable] = []
    seen: set[int] = set()
    for owner in owners_of(fn) + owners_in(args) + owners_in(tuple(kwargs.values())):
        for var in _owned_variables(owner):
            if id(var.tf_variable) not in seen:
                seen.add(id(var.tf_variable))
                found.append(var)
    return found


def describe_variable(variable: Any) -> TracedVariable:
    """A variable found without an owner, named by its own name."""
    return _describe_tf(variable, variable, None)


def _name(fn: Any) -> str:
    """The target as its user knows it: a function's name, a callable object's class (``tf.function``
    of either included: its own name is ``function``)."""
    if isinstance(fn, tf.types.experimental.PolymorphicFunction) and not hasattr(fn, "__name__"):
        fn = fn.python_function
    fn = getattr(fn, "func", fn) if isinstance(fn, functools.partial) else fn
    name = getattr(fn, "__name__", None) or getattr(fn, "name", None) or type(fn).__name__
    return str(name)


def _plain(fn: Any) -> str:
    """How the note on a plain callable begins: a function, or an object whose class defines ``__call__``."""
    if inspect.isfunction(fn) or inspect.ismethod(fn) or not hasattr(fn, "__call__"):
        return f"{_name(fn)} is a plain Python function"
    return f"{_name(fn)} is a callable object (its class defines __call__)"


def _as_function(fn: Any, notes: list[str]) -> tuple[Any, str, list[Any]]:
    keras = _keras()
    if keras is not None and isinstance(fn, keras.Model):
        return keras_step(fn, notes), "keras model", [fn]
    if isinstance(fn, tf.types.experimental.PolymorphicFunction):
        python_function = fn.python_function
        own = fn if reused_recorder() is not None else fn._clone(python_function)  # noqa: SLF001
        return own, "tf.function", owners_of(python_function)
    if isinstance(fn, tf.types.experimental.ConcreteFunction):
        raise InvalidTargetError(
            "got a ConcreteFunction; pass the tf.function itself (or the Python function) so that flowcheck can trace a "
            "fresh copy; a SavedModel's signature has none: pass a function calling it, lambda x: signature(x=x)['output']"
        )
    if inspect.isclass(fn):  # calling it builds an instance, never a loss: say so, not "returned <instance>"
        raise InvalidTargetError(f"{fn.__name__} is a class: pass an instance (a compiled Keras model), a tf.function "
                                 "or a function returning the loss")
    if callable(fn):
        notes.append(
            f"{_plain(fn)}: judged as you call it, eagerly (its graph, traced "
            "by tf.function, gives the barriers and lines)"
        )
        return tf.function(creating_remembered(fn)), "callable", owners_of(fn)
    raise InvalidTargetError(
        f"cannot analyze {type(fn).__name__!r}: expected a tf.function, a Python callable "
        "returning a loss, or a compiled Keras model"
    )


def _keras() -> Any:
    try:
        import keras
    except ImportError:  # pragma: no cover - keras ships with tensorflow
        return None
    return keras


def _constant(tensor: Any) -> bool:
    while tensor.op.type == "Identity":  # the function's output wraps the value it returned
        tensor = tensor.op.inputs[0]
    return bool(tensor.op.type == "Const")


def _losses(concrete: Any, name: str, notes: list[str]) -> list[LossOutput]:
    structured = concrete.structured_outputs
    if structured is None:
        raise LossError(f"{name} returned None; return the loss tensor")
    leaves = list(_named_leaves(structured))
    tensors = [(n, t) for n, t in leaves if isinstance(t, tf.Tensor)]
    if not tensors:
        found = ", ".join(sorted({type(t).__name__ for _, t in leaves})) or "nothing"
        raise LossError(f"{name} returned {found}, not a tensor; return the loss tensor")
    floats = [(n, t) for n, t in tensors if t.dtype.is_floating or t.dtype.is_complex]
    if not floats:
        dtypes = ", ".join(sorted({t.dtype.name for _, t in tensors}))
        constant = " (a constant: a Python number?)" if all(t.dtype.is_integer and _constant(t) for _, t in tensors) else ""
        raise LossError(f"{name} returned {a_or_an(dtypes)} tensor{constant}: a loss must be floating-point to have a gradient")
    skipped = [n for n, t in tensors if (n, t) not in floats]
    if skipped:
        notes.append(f"outputs {', '.join(skipped)} are not floating-point and are not differentiated" if len(skipped) > 1
                     else f"output {skipped[0]} is not floating-point and is not differentiated")
    losses = []
    for loss_name, tensor in floats:
        shape = tuple(tensor.shape.as_list()) if tensor.shape.rank is not None else ()
        if tensor.shape.rank != 0:
            notes.append(f"loss {loss_name!r} has shape {tensor.shape}: it is summed, as TensorFlow does")
        losses.append(LossOutput(loss_name, tensor, shape, tensor.dtype.name))
    return losses


def _named_leaves(structured: Any) -> Iterator[tuple[str, Any]]:
    if nest.is_nested(structured):
        for path, leaf in nest.flatten_with_joined_string_paths(structured):
            yield str(path), leaf
    else:
        yield "loss", structured


def _variable_arguments(
    function: Any, concrete: Any, args: tuple[Any, ...], kwargs: dict[str, Any], notes: list[str],
) -> list[tuple[Any, Any]]:
    """(variable, graph input) for each variable passed as an argument (or default) rather than captured.

    Mirrors how a ``tf.function`` feeds its concrete function (``Function._call`` and
    ``tracing_compilation.call_function``): canonicalize the arguments, bind them to the concrete
    ``FunctionType`` and unpack them, parameter by parameter, into the values that feed
    ``concrete.graph.inputs`` in order. A ``tf.Variable`` unpacks to its handle (a resource input);
    a Keras variable to a tensor of its value, read outside the graph, where the tape still sees it.
    """
    from tensorflow.python.eager.polymorphic_function import function_type_utils

    ftype = concrete.function_type
    try:
        canonical = function_type_utils.canonicalize_function_inputs(
            args, kwargs, function._function_type, function._default_values  # noqa: SLF001
        )
        bound = ftype.bind(*canonical.args, **canonical.kwargs)
        sources: list[Any] = []
        for param in ftype._sorted_parameters:  # noqa: SLF001 -- the order unpack_inputs uses
            value = bound.arguments[param.name]
            count = len(param.type_constraint.to_tensors(value))
            leaves = [leaf for leaf in nest.flatten(value) if _is_tensor_like(leaf)]
            sources.extend(leaves if len(leaves) == count else [None] * count)
    except Exception as exc:  # noqa: BLE001 -- another TensorFlow's private API: said in a note, not dropped silently
        passed = [leaf for leaf in nest.flatten((args, kwargs)) if isinstance(leaf, tf.Variable) or _is_keras_variable(leaf)]
        if passed:
            notes.append(
                f"could not match the arguments to the trace ({type(exc).__name__}: {exc}): the {len(passed)} "
                "variables passed as arguments are not analyzed; capture them (a closure or an attribute) instead"
            )
        return []
    pairs = []
    aliases: set[int] = set()
    inputs = iter(concrete.graph.inputs)
    for source, input_type in zip(sources, ftype.flat_inputs):
        alias = input_type._alias_id()  # noqa: SLF001 -- an aliased variable is fed once
        if alias is not None and alias in aliases:
            continue
        if alias is not None:
            aliases.add(alias)
        inner = next(inputs)
        if isinstance(source, tf.Variable) or _is_keras_variable(source):
            pairs.append((source, inner))
    return pairs


def _is_tensor_like(value: Any) -> bool:
    return isinstance(value, (tf.Tensor, tf.Variable, np.ndarray, np.generic)) or _is_keras_variable(value)


def _is_keras_variable(value: Any) -> bool:
    keras = _keras()
    return keras is not None and isinstance(value, keras.Variable)


def _variable_handle(variable: Any) -> Any:
    if _is_keras_variable(variable):
        backing = getattr(variable, "_value", None)
        return (backing if isinstance(backing, tf.Variable) else variable.value).handle
    return variable.handle


def _variables(
    concrete: Any, owners: list[Any], inputs: list[tuple[Any, Any]]
) -> tuple[list[TracedVariable], dict[Any, int]]:
    known: dict[int, TracedVariable] = {}  # id(handle) -> variable
    order: list[TracedVariable] = []

    def add(var: TracedVariable) -> None:
        ids = [id(h) for h in var.handles]
        if any(i in known for i in ids):
            return
        order.append(var)
        for i in ids:
            known[i] = var

    for var in _told_apart([(owner, var) for owner in owners for var in _owned_variables(owner)]):
        add(var)
    # Those no owner lists (an owner's replica is listed already), in capture order:
    # FuncGraph.variables' order changes from run to run (workers must agree).
    described = {id(var.tf_variable) for var in order}  # known without reading their handles again
    others = [v for v in concrete.graph.variables if id(v) not in described and id(v.handle) not in known]
    position = {id(outer): i for i, (outer, _) in enumerate(inputs)} if others else {}
    for v in sorted(others, key=lambda v: position.get(id(v.handle), len(position))):
        if id(v.handle) in known:  # a replica of a variable listed in this loop
            continue
        container = _distributed.container(v)  # replicas: one
        if not any(id(h) in known for h in _distributed.handles(container)):
            add(_describe_tf(container, container, None))
    captured: dict[Any, int] = {}
    index = {id(v): i for i, v in enumerate(order)}
    used: set[int] = set()
    for outer, inner in inputs:
        found = known.get(id(outer))
        if found is not None:
            captured[inner.ref()] = index[id(found)]
            used.add(index[id(found)])
    # The order: the owners' variables as their models list them, then any others the graph reads.
    if not used:
        return [], {}
    return order, captured


def _told_apart(owned: list[tuple[Any, TracedVariable]]) -> Iterator[TracedVariable]:
    """The owners' variables, those of ``tf.Module`` s whose names repeat across modules (``w`` in an
    encoder and two heads a trainer holds) named by their module's path (``aux/w``)."""
    names: dict[str, set[int]] = {}
    for _, var in owned:
        names.setdefault(var.name, set()).add(id(var.tf_variable))
    paths: dict[int, dict[int, str]] = {}  # per owner, walked once
    for owner, var in owned:
        if len(names[var.name]) > 1 and isinstance(owner, tf.Module) and not is_keras_layer(owner):
            path = paths.setdefault(id(owner), module_paths(owner)).get(id(var.tf_variable), var.name)
            var = replace(var, name=path)
        yield var


def _owned_variables(owner: Any) -> Iterator[TracedVariable]:
    if isinstance(owner, tf.Variable):
        yield _describe_tf(owner, owner, None)
        return
    if _is_keras_variable(owner):
        backing = getattr(owner, "_value", None)
        backing = backing if isinstance(backing, tf.Variable) else owner.value
        yield _describe_tf(owner, backing, bool(owner.trainable), name=str(owner.path))
        return
    if is_keras_layer(owner):
        variables = owner.variables
        # As Layer.trainable_variables, read in the same pass (on a large model each pass over its
        # variables misses the cache for every one); an override is asked.
        overridden = type(owner).trainable_variables is not _keras().Layer.trainable_variables
        trainable_ids = {id(v) for v in owner.trainable_variables} if overridden else None
        layer_trainable = bool(owner.trainable)
        for kv in variables:
            backing = getattr(kv, "_value", None)
            if backing is None or not isinstance(backing, tf.Variable):
                backing = kv.value
            trainable = id(kv) in trainable_ids if trainable_ids is not None else layer_trainable and bool(kv.trainable)
            yield _describe_tf(kv, backing, trainable, name=str(kv.path))
        return
    if isinstance(owner, tf.Module):
        trainable_ids = {id(v) for v in owner.trainable_variables}
        paths = _module_paths(owner)
        for v in owner.variables:
            yield _describe_tf(v, v, id(v) in trainable_ids, name=paths.get(id(v)))


def _module_paths(owner: Any) -> dict[int, str]:
    """Names for a ``tf.Module``'s variables whose own names repeat (``w`` in two ``Linear``s) or
    are TensorFlow's made-up ``Variable`` (``self.unused = tf.Variable(1.0)``): the module's name
    and the attributes that lead to each (``mlp/l1/w``, ``mlp/unused``)."""
    found = list(owner._flatten(predicate=lambda v: isinstance(v, tf.Variable), with_path=True))  # noqa: SLF001
    counts: dict[str, int] = {}
    for _, v in found:
        counts[v.name] = counts.get(v.name, 0) + 1
    paths = module_paths(owner)
    return {id(v): paths[id(v)] for _, v in found if counts[v.name] > 1 or is_default_name(v.name)}


def _describe_tf(user: Any, var: Any, trainable: bool | None, name: str | None = None) -> TracedVariable:
    shape = tuple(var.shape.as_list()) if var.shape.rank is not None else ()
    watched = bool(var.trainable)  # read now, with the rest of the variable (later it is out of the cache)
    return TracedVariable(
        variable=user,
        tf_variable=var,
        name=name or var.name.split(":")[0],
        shape=shape,
        dtype=var.dtype.name,
        trainable=watched if trainable is None else trainable,
        handles=_distributed.handles(var),
        watched=watched,
    )
