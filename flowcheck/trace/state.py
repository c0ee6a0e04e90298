"""The state a training step touches: its optimizers, their lazy build, every variable it can change.

Keras optimizers build their slots on first use. While flowcheck traces a step they apply (and
build) nothing (:func:`applies_skipped`); a verification run of the step would build them for the
user, so flowcheck records which were built before and puts the others back (:func:`unbuild`).
:func:`state_of` lists every variable a step can change, for verification to save and restore.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence
from typing import Any, Final

import tensorflow as tf

from flowcheck.trace.owners import seen_through, user_function

__all__ = [
    "KERAS_FROZEN_WARNING", "KERAS_NONE_WARNING", "NO_GRADIENTS", "all_none_tolerated", "applied_optimizers", "applies_skipped", "built_state",
    "global_seed_generator_kept", "iterators_of", "metric_counts", "metric_notes", "optimizers_of", "state_of", "unbuild",
    "update_scopes", "without_update_notes", "wrapped_optimizers",
]


@contextlib.contextmanager
def global_seed_generator_kept() -> Iterator[None]:
    """Keras's global ``SeedGenerator`` and TensorFlow's global ``tf.random.Generator`` as they were
    (one made while flowcheck traces or runs is removed), and Python's and NumPy's global random states too.

    ``keras.random.normal(seed=None)`` makes it on first use. Made inside flowcheck's trace it would
    hold a variable of that graph (its value unreadable outside it); made by flowcheck at all, the
    user's own first call would find it instead of making it. A ``SeedGenerator`` without a seed
    (Keras's global one, a layer's made in the step) draws its seed from Python's ``random``: the
    user's own, made later, must draw the number it would have drawn without flowcheck. Keras's
    name counters too: a Nadam built for flowcheck and put back unbuilt had its ``variable`` named
    ``variable_4`` at the user's first step, a layer made later ``dense_3`` for ``dense_2``.
    """
    import random

    import numpy as np
    from keras.src.backend.common import global_state
    from tensorflow.python.ops import stateful_random_ops

    before = global_state.get_global_attribute("global_seed_generator")
    # TensorFlow's global tf.random.Generator, made on first use too (an error then under op determinism).
    tf_before = stateful_random_ops.global_generator
    python_state, numpy_state = random.getstate(), np.random.get_state()
    names = global_state.get_global_attribute("object_name_uids")
    names_before = dict(names) if names is not None else None
    try:
        yield
    finally:
        _names_put_back(names_before)
        if before is None and global_state.get_global_attribute("global_seed_generator") is not None:
            global_state.set_global_attribute("global_seed_generator", None)
        if tf_before is None:
            stateful_random_ops.global_generator = None
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _names_put_back(before: dict[str, int] | None) -> None:
    """Keras's counters of auto-made names (``keras.src.utils.naming.uniquify``) as they were."""
    from keras.src.backend.common import global_state

    names = global_state.get_global_attribute("object_name_uids")
    if before is None:
        global_state.set_global_attribute("object_name_uids", None)
    elif names is not None:
        names.clear()
        names.update(before)


def optimizers_of(fn: Any, args: Sequence[Any] = ()) -> list[Any]:
    """The Keras optimizers a step can reach: a model's or its layers', or named by its code, closures or ``self``."""
    import keras

    found: list[Any] = []

    def add(value: Any) -> None:
        if isinstance(value, keras.optimizers.Optimizer):
            if all(value is not o for o in found):
                found.append(value)
                for inner in wrapped_optimizers(value):  # LossScaleOptimizer's, a hand-written Lookahead's
                    add(inner)
        if isinstance(value, keras.Model):
            add(getattr(value, "optimizer", None))

    scanned: set[int] = set()
    for value in _reachable(fn, args):
        add(value)
        owners = value._flatten_layers() if isinstance(value, keras.Layer) else [value]  # noqa: SLF001
        for owner in owners:
            # Keras's own layers (a Dense, a BatchNormalization) keep no optimizer: only the user's are read.
            if id(owner) in scanned or (owner is not value and type(owner).__module__.startswith("keras.")):
                continue
            scanned.add(id(owner))
            for attr in _attributes(owner):
                add(attr)
    return found


def wrapped_optimizers(optimizer: Any) -> list[Any]:
    """The Keras optimizers an optimizer holds and applies itself (a LossScaleOptimizer's inner one, a hand-written Lookahead's)."""
    import keras

    # Its own attributes only: the items of its lists are its variables (thousands on a large model).
    held = [getattr(optimizer, "inner_optimizer", None), *getattr(optimizer, "__dict__", {}).values()]
    return list({id(a): a for a in held if isinstance(a, keras.optimizers.Optimizer) and a is not optimizer}.values())


def _attributes(value: Any) -> Iterator[Any]:
    """An object's attributes, and the items of those that are lists, tuples or dicts (a layer that trains
    itself, forward-forward, keeps its own optimizer; a model keeps its layers in a list)."""
    if not hasattr(value, "__dict__") or isinstance(value, type):
        return
    for attr in list(vars(value).values()):
        yield attr
        if isinstance(attr, (list, tuple)):
            yield from attr
        elif isinstance(attr, dict):
            yield from attr.values()


def applied_optimizers(traced: Any) -> list[Any]:
    """The Keras optimizers the step can apply: those whose variables its trace reads.

    A ``Model`` subclass whose ``train_step`` applies optimizers of its own still has the one its
    ``compile()`` made by default (RMSprop): the step never reads it (nor applies it, when flowcheck's
    own trace, which skips the updates, saw which it applies), so it is not named. Without a
    trace of its own (a plain function), or when the trace reads none, every reachable one counts.
    """
    found = optimizers_of(traced.function, traced.args)
    applied = {id(o) for opt in getattr(traced, "applied", ()) for o in (opt, *wrapped_optimizers(opt))}
    if applied:  # flowcheck's own trace skipped their updates, so it reads none of them: the ones it saw applied
        return [o for o in found if id(o) in applied] or found
    inputs = getattr(getattr(traced, "concrete", None), "captured_inputs", None)  # none from a failed trace
    if inputs is None or traced.python_function is not None:
        return found
    captured = {id(h) for h in inputs}

    def read(opt: Any) -> bool:
        backings = (getattr(v, "value", v) for v in opt.variables)
        return any(id(getattr(b, "handle", None)) in captured for b in backings)

    return [o for o in found if read(o)] or found


def _reachable(fn: Any, args: Sequence[Any], depth: int = 3, seen: set[int] | None = None) -> Iterator[Any]:
    """What the step can reach, and what the user's own helper functions it names reach (an
    ``apply(grads)`` that calls the optimizer), a few calls deep, as :mod:`flowcheck.trace.owners` does."""
    seen = set() if seen is None else seen
    seen.add(id(fn))
    for value in _reached(fn, args):
        yield value
        helper = user_function(value) if depth > 0 else None
        if helper is not None and id(helper) not in seen:
            yield from _reachable(helper, (), depth - 1, seen)


def _reached(fn: Any, args: Sequence[Any]) -> Iterator[Any]:
    yield fn
    yield from args
    bound_values, target = seen_through(getattr(fn, "python_function", fn))
    yield from bound_values
    target = inspect.unwrap(target) if callable(target) else target
    method = getattr(target, "weakrefself_target__", None)  # a tf.function bound to an instance
    if method is not None:
        yield method()
        target = target.weakrefself_func__()
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
        yield from (globals_[n] for n in _names(code) if n in globals_)


def _names(code: Any) -> Iterator[str]:
    """The global names a function's code uses, its nested functions' included."""
    yield from code.co_names
    for const in code.co_consts:
        if inspect.iscode(const):
            yield from _names(const)


def state_of(fn: Any, args: Sequence[Any], traced_variables: Sequence[Any]) -> list[Any]:
    """Every variable a step may change: its captures, its models' (metrics and seeds too), its optimizers'
    (Keras's and ``tf.compat.v1.train``'s)."""
    import keras

    from tensorflow.python.training import optimizer as v1_optimizer

    found: list[Any] = [v.tf_variable for v in traced_variables]
    for opt in optimizers_of(fn, args):
        found.extend(opt.variables)
    for value in _reachable(fn, args):
        if isinstance(value, v1_optimizer.Optimizer):
            # A tf.compat.v1 optimizer's slots and beta powers: its apply ops take their handles
            # without reading them, so the trace's variables leave them out.
            found.extend(value.variables())
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


def iterators_of(fn: Any, args: Sequence[Any], kinds: tuple[type, ...] = ()) -> list[Any]:
    """The ``tf.data`` iterators a step can advance (or the objects of ``kinds``): passed to it, or named by it (a
    global ``it``, a trainer's ``self.iterator``), each once. A verification run draws its batches from them too."""
    from tensorflow.python.data.ops import iterator_ops
    from tensorflow.python.distribute import input_lib

    kinds = kinds or (iterator_ops.OwnedIterator, input_lib.DistributedIterator)
    found: dict[int, Any] = {}
    for value in _reachable(fn, args):
        for item in [value, *_attributes(value)]:
            if isinstance(item, kinds):
                found.setdefault(id(item), item)
    return list(found.values())


def built_state(fn: Any, args: Sequence[Any]) -> list[tuple[Any, bool, Any]]:
    """Each optimizer the step can reach, whether it is built, and what it owns: a Keras optimizer's
    count of variables, a ``tf.compat.v1.train`` optimizer's slots and non-slot variables (copies of its dicts)."""
    from tensorflow.python.training import optimizer as v1_optimizer

    found: list[tuple[Any, bool, Any]] = [
        (opt, bool(opt.built), len(opt._variables)) for opt in optimizers_of(fn, args)  # noqa: SLF001
    ]
    v1 = {id(value): value for value in _reachable(fn, args) if isinstance(value, v1_optimizer.Optimizer)}
    found.extend((opt, True, _v1_owned(opt)) for opt in v1.values())
    return found


def _v1_owned(opt: Any) -> tuple[dict[Any, Any], dict[Any, Any]]:
    """A ``tf.compat.v1`` optimizer's slots (per slot name, per variable) and non-slot variables (beta powers)."""
    return {name: dict(slots) for name, slots in opt._slots.items()}, dict(opt._non_slot_dict)  # noqa: SLF001


def _v1_variables(slots: dict[Any, Any], non_slot: dict[Any, Any]) -> list[Any]:
    return [*non_slot.values(), *(v for per_variable in slots.values() for v in per_variable.values())]


def unbuild(before: Sequence[tuple[Any, bool, Any]]) -> list[Any]:
    """Put optimizers that flowcheck's trace or run built back to unbuilt, as the user had them.

    A Keras optimizer builds its slots on first use (``BaseOptimizer.build``); inside a trace that fails they
    stay uninitialized. Undone here to what ``BaseOptimizer.__init__`` leaves: the user's first step builds them. A ``tf.compat.v1`` optimizer makes its slots
    and beta powers on first use too (``_create_slots``): those it made for flowcheck are dropped,
    so that ``get_slot_names()``, ``variables()`` and a checkpoint are as before.

    Returns:
        The ``tf.compat.v1`` variables dropped: a trace that made them holds them only weakly, so
        whoever keeps that trace must keep them.
    """
    dropped: list[Any] = []
    for opt, built, owned in before:
        if isinstance(owned, tuple):
            slots, non_slot = owned
            kept = {id(v) for v in _v1_variables(slots, non_slot)}
            dropped.extend(v for v in _v1_variables(*_v1_owned(opt)) if id(v) not in kept)
            opt._slots.clear()  # noqa: SLF001 -- the optimizer's own slot store
            opt._slots.update({name: dict(per_variable) for name, per_variable in slots.items()})  # noqa: SLF001
            opt._non_slot_dict.clear()  # noqa: SLF001
            opt._non_slot_dict.update(non_slot)  # noqa: SLF001
        elif not built and opt.built:
            del opt._variables[owned:]  # noqa: SLF001 -- the optimizer's own variable store
            opt._trainable_variables = []  # noqa: SLF001
            opt._trainable_variables_indices = {}  # noqa: SLF001
            opt.built = False
    return dropped


KERAS_NONE_WARNING: Final = "Gradients do not exist for variables"
"""The start of Keras's warning about None gradients (``BaseOptimizer._filter_empty_gradients``)."""
KERAS_FROZEN_WARNING: Final = "The model does not have any trainable weights"
"""Keras's ``train_step`` warning (keras/src/backend/tensorflow/trainer.py) for a frozen model."""

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


@contextlib.contextmanager
def applies_skipped(seen: list[tuple[Any, bool]]) -> Iterator[None]:
    """While flowcheck traces a step, Keras optimizers apply nothing and build nothing.

    The gradient calls come before the update, and the update is what makes a trace of a training
    step slow (slot variables created inside the function, so that it is traced twice, and an
    update per variable). ``apply`` of every Keras optimizer class that defines it is replaced;
    ``seen`` gets ``(optimizer, every gradient was None)`` per call, the latter being where Keras
    would raise ``No gradients provided for any variable``. Given a tensor for a variable, it applies.
    """
    import keras
    from keras.src.optimizers import base_optimizer

    classes, stack = [], [base_optimizer.BaseOptimizer]
    while stack:
        stack.extend((cls := stack.pop()).__subclasses__())
        classes.extend([(cls, vars(cls)["apply"])] if "apply" in vars(cls) else [])
    originals = dict(classes)

    def skipped(self: Any, grads: Any, trainable_variables: Any = None) -> Any:
        grads, variables = list(grads), list(trainable_variables or ())
        if any(not isinstance(v, (tf.Variable, keras.Variable)) for v in variables):  # (a tensor: Keras raises first)
            return next(originals[c] for c in type(self).__mro__ if c in originals)(self, grads, variables)
        seen.append((self, bool(grads) and all(g is None for g in grads)))
        return None

    for cls, _ in classes:
        cls.apply = skipped
    try:
        yield
    finally:
        for cls, original in classes:
            cls.apply = original


def metric_counts(fn: Any, args: Sequence[Any]) -> list[tuple[Any, int]]:
    """Each Keras model the step can reach, with how many metric variables it has."""
    import keras

    # Only a compiled model has compiled metrics (metrics_variables walks every layer: a 10,000-layer
    # model's walk cost more than mapping its variables).
    models = [v for v in _reachable(fn, args) if isinstance(v, keras.Model) and getattr(v, "compiled", True)]
    return [(m, len(m.metrics_variables)) for m in dict.fromkeys(models)]


def metric_notes(before: Sequence[tuple[Any, int]]) -> list[str]:
    """What a trace built in the models' compiled metrics (Keras builds them on the first step)."""
    return [  # metrics_variables walks every layer: asked once per model
        f"flowcheck's trace built the compiled metrics of {model.name!r} ({built} "
        "variables, at their initial values), as fit's first step would"
        for model, count in before if (built := len(model.metrics_variables) - count) > 0
    ]


def update_scopes(fn: Any, args: tuple[Any, ...]) -> tuple[str, ...]:
    """The name scopes of the update ops of the step's optimizers, as an op's note shows them.

    They are in the step's own trace (flowcheck's own trace of a step skips them) and come after
    every gradient, so a gradient function of theirs that could not be asked about changes no verdict.
    """
    found = optimizers_of(fn, args)
    return tuple(f"({o.name}/" for o in found) + tuple(f"({o.name}_" for o in found)  # under a strategy: sgd_1/...


def without_update_notes(notes: Sequence[str], fn: Any, args: tuple[Any, ...]) -> tuple[str, ...]:
    """``notes`` without those about the update ops of the step's optimizers (see :func:`update_scopes`)."""
    scopes = update_scopes(fn, args)
    return tuple(n for n in notes if not (n.startswith("could not ask the gradient of") and any(s in n for s in scopes)))
