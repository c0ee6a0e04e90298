"""Stage 5: one real optimizer step checks the prediction, then every variable is restored.

The step runs eagerly around the traced function (a tape + ``apply_gradients`` wrapped in a new
``tf.function`` costs many times more to trace). Every variable the function captures is saved
before the step and assigned back bit for bit afterwards, including those the function itself
assigns (BatchNormalization statistics, step counters). The optimizer is always a fresh one.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from flowcheck.errors import VerificationError, unchained
from flowcheck.trace.distributed import components

if TYPE_CHECKING:
    from flowcheck.trace.traced import Traced
__all__ = ["GradientState", "Verification", "VariableCheck", "loss_scale", "run_step", "scaled_text"]

OPTIMIZERS = ("sgd", "adam")


class GradientState(str, Enum):
    """What the tape gave a variable."""

    NONE = "none"
    ZERO = "zero"
    NONZERO = "nonzero"
    NONFINITE = "nonfinite"
    UNSEEN = "unseen"  # not None, but made inside a tf.cond branch or nested function: its value cannot be read

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class VariableCheck:
    """The real step's outcome for one variable.

    Attributes:
        name: The variable's name.
        predicted: flowcheck's prediction: a gradient reaches it.
        gradient: What ``tape.gradient`` gave (None, all zeros, non-zero, non-finite).
        changed: Whether the optimizer step changed its value.
        agrees: Whether "the gradient is not None" equals the prediction.
    """

    name: str
    predicted: bool
    gradient: GradientState
    changed: bool
    agrees: bool


@dataclass(frozen=True)
class Verification:
    """The result of one real optimizer step.

    Attributes:
        agrees: True when the tape confirms the prediction for every variable (or, when the
            report predicted ``gradient_errors``, when the tape raised as predicted).
        optimizer: The optimizer used (a fresh one).
        loss: The loss the step saw (outputs summed), possibly not finite. For a training step:
            the target of its first gradient call made outside every other tape (MAML's meta loss,
            not a task's inner loss).
        variables: One check per variable, in the report's order; empty when the tape raised.
        problems: Findings such as a non-finite loss or gradient, or an error of the tape's that
            the analysis did not predict.
        error: The tape's error (no gradient defined for an op, or one that refuses), as one line, if it raised.
        restored: True when every variable was assigned back after the step; False when the step
            run was the script's own first call of it (``flowcheck run``), whose update training keeps.
        loss_seen: False when every loss was computed inside a ``tf.cond`` branch or a nested
            function, where its value cannot be read (``loss`` is then NaN, and no problem).
        loss_values: How many values the step's loss has (a per-example loss the step never reduced):
            ``loss`` is their sum, what the tape differentiates.
        unseen: Why the loss was not seen, when it was not.
    """

    agrees: bool
    optimizer: str
    loss: float
    variables: tuple[VariableCheck, ...]
    problems: tuple[str, ...]
    error: str | None = None
    restored: bool = True
    loss_seen: bool = True
    loss_values: int = 1
    unseen: str = "made inside a tf.cond branch or nested function"

    @property
    def disagreements(self) -> tuple[VariableCheck, ...]:
        """The variables whose real gradient contradicts the prediction."""
        return tuple(c for c in self.variables if not c.agrees)


def make_optimizer(optimizer: Any, learning_rate: float | None) -> Any:
    """A fresh Keras optimizer: from a name, a class, or a copy of the user's instance."""
    import keras

    if isinstance(learning_rate, (str, bool)) or (
        isinstance(learning_rate, (int, float)) and not (math.isfinite(learning_rate) and learning_rate > 0)
    ):  # a schedule or another object Keras takes passes on to Keras
        raise VerificationError(f"learning_rate must be a positive number, not {learning_rate!r}")
    if optimizer is None:
        optimizer = "sgd"
    if isinstance(optimizer, str):
        key = optimizer.lower()
        if key not in OPTIMIZERS:
            raise VerificationError(f"unknown optimizer {optimizer!r}: expected one of {', '.join(OPTIMIZERS)} or a Keras optimizer")
        cls = keras.optimizers.SGD if key == "sgd" else keras.optimizers.Adam
        return cls() if learning_rate is None else cls(learning_rate=learning_rate)
    if isinstance(optimizer, type) and issubclass(optimizer, keras.optimizers.Optimizer):
        return optimizer() if learning_rate is None else optimizer(learning_rate=learning_rate)
    if isinstance(optimizer, keras.optimizers.Optimizer):
        config = optimizer.get_config()
        if learning_rate is not None:
            config["learning_rate"] = learning_rate
        return type(optimizer).from_config(config)  # never step the user's own optimizer
    raise VerificationError(f"optimizer must be 'sgd', 'adam' or a Keras optimizer, not {type(optimizer).__name__}")


def run_step(
    traced: Traced, predicted: Sequence[bool], optimizer: Any = None, learning_rate: float | None = None,
    expect_error: bool = False,
) -> Verification:
    """Run one optimizer step on the traced function's variables, compare, and restore them.

    ``expect_error`` says that the analysis predicts the tape to raise (an op with no gradient, or
    whose gradient refuses, is reached): that outcome is then a confirmed prediction, not a failure.
    """
    variables = [v.tf_variable for v in traced.variables]
    with _strategy_scope(variables):  # a distributed variable's optimizer must live in its strategy
        opt = make_optimizer(optimizer, learning_rate)
    saved = [_save_components(v) for v in variables]
    # The verdict's tape: every floating-point variable watched, whatever its trainable flag.
    differentiable = [i for i, v in enumerate(variables) if v.dtype.is_floating or v.dtype.is_complex]
    try:
        try:
            total, grads = _differentiate(traced, [variables[i] for i in differentiable])
        except (LookupError, NotImplementedError, ValueError) as exc:
            if type(exc) is not LookupError and not (expect_error and isinstance(exc, (NotImplementedError, ValueError))):
                raise  # a KeyError or IndexError of the user's; a failure the analysis did not foresee
            # "No gradient defined for operation ...", or a gradient that refuses (QR of full matrices)
            return _raised(traced, exc, opt, expect_error)
        loss_value, states, problems = _outcome(traced, total, dict(zip(differentiable, grads)))
        before = [_digest(v) for v in variables]  # after the function's own assigns
        _apply(opt, variables, [(g, traced.variables[i].variable) for i, g in zip(differentiable, grads) if g is not None])
        changed = [b != _digest(v) for b, v in zip(before, variables)]
    except VerificationError:
        raise
    except Exception as exc:  # noqa: BLE001 -- the user's step failed: say how, as one error
        raise unchained(VerificationError(f"the real step failed: {_first_line(exc)}"), exc) from None
    finally:
        for v, values in zip(variables, saved):
            for component, value in zip(components(v), values):
                component.assign(value)
    if expect_error:
        problems.append("flowcheck predicted that the tape raises (an op with no gradient is reached), but it did not")
    checks = tuple(
        VariableCheck(
            name=var.name, predicted=bool(predicted[i]), gradient=states[i], changed=changed[i],
            agrees=(states[i] is not GradientState.NONE) == bool(predicted[i]),
        )
        for i, var in enumerate(traced.variables)
    )
    return Verification(
        agrees=all(c.agrees for c in checks) and not expect_error, optimizer=_describe(opt), loss=loss_value,
        variables=checks, problems=tuple(problems),
    )


def _differentiate(traced: Traced, watched: Sequence[Any]) -> tuple[Any, list[Any]]:
    """The summed losses and each watched variable's gradient, from a tape around one call."""
    import tensorflow as tf

    # A tf.function called under a tape builds its gradient right away, so the forward call
    # raises too when an op with no gradient is reached.
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        for v in watched:
            tape.watch(v)
        total = _total_loss(_call(traced), [loss.name for loss in traced.losses])
    grads = tape.gradient(total, list(watched), unconnected_gradients=tf.UnconnectedGradients.NONE)
    return total, list(grads)


def _raised(traced: Traced, exc: Exception, opt: Any, expect_error: bool) -> Verification:
    error = _first_line(exc)
    return Verification(
        agrees=expect_error, optimizer=_describe(opt), loss=_loss_without_tape(traced), variables=(),
        problems=() if expect_error else (f"the tape raised {error}, which the analysis did not predict",),
        error=error,
    )


def _outcome(traced: Traced, total: Any, grads: dict[int, Any]) -> tuple[float, list[GradientState], list[str]]:
    """The loss, what the tape gave each variable, and the problems found (non-finite values)."""
    import tensorflow as tf

    problems: list[str] = []
    loss_value = float(tf.math.real(total).numpy())
    if not math.isfinite(loss_value):
        problems.append(f"the loss is {loss_value}: gradients and the step are not meaningful")
    states = [GradientState.NONE] * len(traced.variables)
    for i, g in grads.items():
        states[i] = _state(g)
        if states[i] is GradientState.NONFINITE:
            problems.append(f"the gradient of {traced.variables[i].name} is not finite")
    return loss_value, states, problems


def _apply(opt: Any, variables: Sequence[Any], pairs: list[tuple[Any, Any]]) -> None:
    if not pairs:
        return
    with _strategy_scope(variables):
        # Under a distribution strategy the slots must be made in its scope, while the update
        # itself runs outside it (Keras merges it from the default replica context).
        opt.build([v for _, v in pairs])
    opt.apply_gradients(pairs)


def _call(traced: Traced) -> Any:
    # A plain callable runs as its user calls it, eagerly (on random seeds of its own); anything
    # else as traced, where random ops hold their own state.
    from flowcheck.trace.eager import own_random_seeds

    if traced.python_function is None:
        return traced.function(*traced.args, **traced.kwargs)
    with own_random_seeds():
        return traced.python_function(*traced.args, **traced.kwargs)


def _loss_without_tape(traced: Traced) -> float:
    import tensorflow as tf

    try:
        total = _total_loss(_call(traced), [loss.name for loss in traced.losses])
        return float(tf.math.real(total).numpy())
    except Exception:  # noqa: BLE001 -- only for the record: the error is what matters
        return math.nan


# keras/src/optimizers/base_optimizer.py _check_variables_are_known
_UNKNOWN_VARIABLE: Final = re.compile(r"Unknown variable: <Variable path=([^,>]+)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = text.splitlines()
    first = lines[0] if text else ""
    if first == "in user code:" and len(lines) > 1:  # AutoGraph's frames, then the error itself, last
        return lines[-1].strip()
    if first == "Graph execution error:":  # a kernel failed (a tf.debugging assert): its own message, not this
        from flowcheck.source.exceptions import exception_line

        return exception_line(exc)
    unknown = _UNKNOWN_VARIABLE.match(first)
    if unknown:  # Keras's repr runs on over lines with the weight's values: its path and the cause instead
        return (f"{type(exc).__name__}: Unknown variable {unknown.group(1)}: the optimizer was built before it was "
                "trainable (give model.compile() a new optimizer)")
    # TensorFlow's message goes on with advice in the same sentence run: keep its first sentence.
    if isinstance(exc, LookupError) and ". " in first:
        first = first.split(". ", 1)[0]
    return f"{type(exc).__name__}: {first}"


def _total_loss(outputs: Any, names: list[str]) -> Any:
    import tensorflow as tf
    from tensorflow.python.util import nest

    if nest.is_nested(outputs):
        leaves = dict(nest.flatten_with_joined_string_paths(outputs))
        picked = [leaves[n] for n in names]
    else:
        picked = [outputs]
    return tf.add_n([tf.reduce_sum(tf.cast(t, picked[0].dtype)) for t in picked])


def _strategy_scope(variables: Sequence[Any]) -> contextlib.AbstractContextManager[Any]:
    """The scope of the distribution strategy the variables were made in, if any."""
    import tensorflow as tf

    for v in variables:
        if isinstance(v, tf.distribute.DistributedValues):
            return v.distribute_strategy.scope()  # type: ignore[no-any-return]
    return contextlib.nullcontext()


def _save_components(v: Any) -> tuple[np.ndarray, ...]:
    # A distributed variable holds one variable per replica; each is restored bit for bit
    # (sync-on-read components, e.g. BatchNormalization statistics or metrics, differ per replica).
    return tuple(_save(c) for c in components(v))


def _save(v: Any) -> np.ndarray:
    return np.array(v.read_value().numpy(), copy=True)


def _digest(v: Any) -> bytes:
    # A digest, not a copy: a second copy of every variable would add a model's size to the peak.
    # Per component: reading a sync-on-read variable whole would sum its replicas.
    digest = hashlib.blake2b(digest_size=32)
    for component in components(v):
        value = np.ascontiguousarray(component.read_value().numpy())
        digest.update(value.tobytes())
        digest.update(f"{value.dtype.str}{value.shape}".encode())
    return digest.digest()


def _state(grad: Any) -> GradientState:
    import tensorflow as tf

    if grad is None:
        return GradientState.NONE
    values = grad.values if isinstance(grad, tf.IndexedSlices) else grad
    array = np.asarray(tf.convert_to_tensor(values).numpy())
    if not np.all(np.isfinite(array)):
        return GradientState.NONFINITE
    return GradientState.NONZERO if np.any(array != 0) else GradientState.ZERO


def _describe(opt: Any) -> str:
    return f"{type(opt).__name__}(learning_rate={_lr(opt)})"


def _lr(opt: Any) -> str:
    try:
        return f"{float(opt.learning_rate.numpy()):g}"
    except Exception:  # noqa: BLE001 -- a schedule: show its class
        return type(opt.learning_rate).__name__


def loss_scale(optimizers: Any) -> float | None:
    """The scale a ``LossScaleOptimizer`` among ``optimizers`` multiplies the loss by now (``scale_loss``: its
    dynamic scale once built, its initial scale before), read before a step runs; None without one."""
    for opt in optimizers:
        if type(opt).__name__ == "LossScaleOptimizer":
            return float(opt.dynamic_scale.numpy()) if opt.built else float(opt.initial_scale)
    return None


def scaled_text(unscaled_by: float | None) -> str:
    """What a verification under a ``LossScaleOptimizer`` says of its loss: unscaled (Keras's own
    ``train_step`` differentiates ``scale_loss(loss)``: its loss is that over the scale), or scaled."""
    skipped = "a step with non-finite scaled gradients is skipped, by design"
    if unscaled_by is None:
        return f" (loss and gradients scaled; {skipped})"
    return f" (loss unscaled: the tape's target over the loss scale {unscaled_by:g}; gradients scaled; {skipped})"
