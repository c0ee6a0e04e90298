"""Example inputs for ``flowcheck analyze``: the module's own, or random ones made to fit the target.

1. a module-level ``NAME_inputs``, else ``example_inputs``: a tuple of positional arguments (any
   other value is one positional argument);
2. random tensors (``numpy`` generator seeded by ``--seed``; unknown batch dimension 2, other
   unknown dimensions 4; integers 0 or 1) from the ``tf.function``'s ``input_signature``, or from a
   Keras model's input shapes, with labels made to suit its compiled loss;
3. none, when the function takes no required argument; else a :class:`TargetLoadError` saying how
   to provide them.
"""

from __future__ import annotations

import inspect
from types import ModuleType
from typing import Any

from flowcheck.errors import TargetLoadError

__all__ = ["check_arity", "example_inputs", "is_keras_model", "is_tf_function", "tf_function_methods"]

_BATCH = 2
_OTHER_DIM = 4


def is_tf_function(value: Any) -> bool:
    """Whether ``value`` is a ``tf.function`` (without importing TensorFlow for the question)."""
    import tensorflow as tf

    return isinstance(value, tf.types.experimental.PolymorphicFunction)


def tf_function_methods(module: ModuleType) -> list[str]:
    """``agent.loss``: the tf.function methods of the module's objects whose class the file defines."""
    return [f"{key}.{attr}" for key, value in vars(module).items() if not key.startswith("_")
            and getattr(type(value), "__module__", None) == module.__name__ and not inspect.isclass(value)
            for attr, member in vars(type(value)).items() if is_tf_function(member) and not attr.startswith("_")]


def is_keras_model(value: Any) -> bool:
    """Whether ``value`` is a Keras model."""
    import keras

    return isinstance(value, keras.Model)


def example_inputs(module: ModuleType, path: str, name: str, target: Any, seed: int) -> tuple[tuple[Any, ...], dict[str, Any], str]:
    for attribute in (f"{name}_inputs", "example_inputs"):
        if hasattr(module, attribute):
            value = getattr(module, attribute)
            args = tuple(value) if isinstance(value, tuple) else (value,)
            return args, {}, attribute
    import numpy as np

    rng = np.random.default_rng(seed)
    how = f"random (seed {seed}, batch {_BATCH})"
    if is_keras_model(target):
        x = _keras_inputs(target, name, path, rng)
        y = _keras_labels(target, name, path, rng)
        return (x, y), {}, f"{how}, from the model's input shapes and its loss"
    signature = getattr(target, "input_signature", None) if is_tf_function(target) else None
    if signature:  # a tf.function of no argument has the empty signature
        import tensorflow as tf

        args = tuple(tf.nest.map_structure(lambda spec: _random(spec.shape.as_list(), spec.dtype, rng, name), list(signature)))
        return args, {}, f"{how}, from its input_signature"
    required = _required_parameters(target)
    if not required:
        return (), {}, "no inputs (it takes none)"
    raise TargetLoadError(
        f"{name} takes ({', '.join(required)}) but flowcheck has no example inputs for it: define "
        f"example_inputs = ({', '.join(required)}{',' if len(required) == 1 else ''}) (or {name}_inputs) in {path}, "
        f"give the tf.function an input_signature, or point at a zero-argument function returning "
        f"({name}, (inputs...))"
    )


def _required_parameters(target: Any) -> list[str]:
    function = target.python_function if is_tf_function(target) else target
    try:
        signature = inspect.signature(function, follow_wrapped=False)  # a decorator's own parameters, as _api
    except (TypeError, ValueError):
        return []
    return [
        p.name for p in signature.parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def check_arity(target: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], inputs_from: str) -> None:
    """Catch a wrong number of inputs before tracing, where the message can be plain."""
    if is_keras_model(target):
        if not 2 <= len(args) <= 3 or kwargs:
            raise TargetLoadError(
                f"{name} is a Keras model: its example inputs ({inputs_from}) must be (x, y) (or (x, y, sample_weight)), "
                f"got {len(args)} positional value(s)"
            )
        return
    from flowcheck._api import unbindable

    mismatch = unbindable(target, args, kwargs)
    if mismatch is not None:
        raise TargetLoadError(f"{name}{mismatch[0]} cannot take the example inputs ({inputs_from}): {mismatch[1]}")


def _random(shape: list[int | None], dtype: Any, rng: Any, name: str) -> Any:
    import numpy as np
    import tensorflow as tf

    dims = [(_BATCH if i == 0 else _OTHER_DIM) if d is None else d for i, d in enumerate(shape)]
    dtype = tf.as_dtype(dtype)
    if dtype.is_floating or dtype.is_complex:
        return tf.constant(rng.standard_normal(dims).astype(np.float32), dtype=dtype)
    if dtype.is_integer:
        return tf.constant(rng.integers(0, 2, size=dims), dtype=dtype)  # 0/1 are valid indices anywhere
    if dtype.is_bool:
        return tf.constant(rng.integers(0, 2, size=dims).astype(bool))
    raise TargetLoadError(f"cannot make a random {dtype.name} input for {name}; define example_inputs")


def _keras_inputs(model: Any, name: str, path: str, rng: Any) -> Any:
    import keras

    try:
        structure = model.input
    except (AttributeError, ValueError):
        structure = getattr(model, "inputs", None)
        if isinstance(structure, list) and len(structure) == 1:
            structure = structure[0]
    if structure is None or (isinstance(structure, (list, tuple, dict)) and not structure):
        raise TargetLoadError(
            f"Keras model {name!r} has no known input shape (a subclassed model?): define "
            f"example_inputs = (x, y) in {path}"
        )
    return keras.tree.map_structure(lambda t: _random(list(t.shape), t.dtype, rng, name), structure)


def _keras_labels(model: Any, name: str, path: str, rng: Any) -> Any:
    import numpy as np
    import tensorflow as tf

    outputs = list(getattr(model, "outputs", None) or [])
    if not outputs:
        raise TargetLoadError(f"Keras model {name} has no known output shape: define example_inputs = (x, y) in {path}")
    losses = model.loss
    if isinstance(losses, dict):
        names = list(getattr(model, "output_names", None) or [])
        per_output = [losses.get(n) for n in names] if len(names) == len(outputs) else [None] * len(outputs)
    elif isinstance(losses, (list, tuple)):
        per_output = list(losses) if len(losses) == len(outputs) else [None] * len(outputs)
    else:
        per_output = [losses] * len(outputs)
    labels = []
    for output, loss in zip(outputs, per_output):
        kind = _loss_name(loss)
        dims = [_BATCH if i == 0 or d is None else d for i, d in enumerate(output.shape)]
        if "sparse" in kind:
            classes = dims[-1] if len(dims) > 1 else 2
            labels.append(tf.constant(rng.integers(0, classes, size=dims[:-1]), dtype=tf.int32))
        elif "categorical" in kind:
            classes = dims[-1]
            labels.append(tf.one_hot(rng.integers(0, classes, size=dims[:-1]), classes, dtype=tf.float32))
        elif "binary" in kind or "hinge" in kind:
            labels.append(tf.constant(rng.integers(0, 2, size=dims).astype(np.float32)))
        else:
            labels.append(tf.constant(rng.standard_normal(dims).astype(np.float32)))
    return labels[0] if len(labels) == 1 else labels


def _loss_name(loss: Any) -> str:
    if loss is None:
        return ""
    if isinstance(loss, str):
        return loss.lower()
    return str(getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__).lower()
