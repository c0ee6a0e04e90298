"""What a trace gives: :class:`Traced` -- the concrete function, the user's variables behind its captures, its losses.

Plain data (no TensorFlow import): stage 1's output, read by every later stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowcheck.trace.sites import RecordedCall

__all__ = ["LossOutput", "Traced", "TracedVariable"]


@dataclass(frozen=True)
class TracedVariable:
    """A variable the traced function captures, or one its model owns but never reads.

    Attributes:
        variable: The object the user holds (a ``tf.Variable`` or a Keras variable).
        tf_variable: The ``tf.Variable`` behind it.
        name: Its name (the Keras path for Keras variables).
        shape: Its shape.
        dtype: Its dtype's name.
        trainable: Whether training would update it (Keras: the variable and its layer).
        handles: The resource handles by which a graph may capture it (one per replica).
    """

    variable: Any
    tf_variable: Any
    name: str
    shape: tuple[int | None, ...]
    dtype: str
    trainable: bool
    handles: tuple[Any, ...] = field(repr=False, compare=False)
    watched: bool | None = field(default=None, repr=False, compare=False)  # watched_by_default, read with the rest

    @property
    def watched_by_default(self) -> bool:
        """Whether a default ``tf.GradientTape`` watches it when read: its ``tf.Variable`` is trainable."""
        return self.watched if self.watched is not None else bool(self.tf_variable.trainable)


@dataclass(frozen=True)
class LossOutput:
    """One floating-point output of the traced function, differentiated as a loss."""

    name: str
    tensor: Any = field(repr=False, compare=False)
    shape: tuple[int | None, ...]
    dtype: str


@dataclass
class Traced:
    """The traced target: its concrete function and what it captures and returns.

    ``captured`` maps each graph input that carries a variable (``tensor.ref()`` of a captured
    handle, of a variable argument's handle, or of a Keras variable argument's value) to the
    variable's index in ``variables``.
    """

    function: Any
    concrete: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    target_kind: str
    variables: list[TracedVariable]
    captured: dict[Any, int]
    losses: list[LossOutput]
    notes: list[str]
    python_function: Any = None  # a plain callable as the user calls it (eagerly); else None
    calls: list[RecordedCall] = field(default_factory=list)  # a step's gradient calls
    step: bool = False  # judged at its gradient sites (flowcheck.trace.steps)
    name: str = ""  # the target as its user knows it; "" for a Keras model (its step function's name)
    eager: bool = False  # a Keras model compiled with run_eagerly=True: fit runs its train_step eagerly
    applied: tuple[Any, ...] = ()  # the Keras optimizers flowcheck's own trace saw the step apply (their updates skipped)
    owners: tuple[Any, ...] = ()  # what the variables were found in: models, layers, modules, variables
