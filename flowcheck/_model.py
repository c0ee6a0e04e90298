"""Plain frozen results that every stage after the analysis hands on: barriers and verdicts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flowcheck._analysis import BarrierKind, Verdict
from flowcheck._source import SourceLine

__all__ = ["Barrier", "VariableResult"]


@dataclass(frozen=True)
class Barrier:
    """An op at which a gradient stops.

    Attributes:
        op_name: The TensorFlow op's name.
        op_type: Its type (``StopGradient``, ``Cast``, ...).
        kind: Why the gradient stops.
        detail: The same, in words, for this op.
        tensor: The tensor whose gradient is cut (an input of the op).
        source: The user's line that created the op, when it can be found.
        in_user_code: False when the op was made inside library code (a Keras layer).
        node: The op's node id in :attr:`Report.graph`.
    """

    op_name: str
    op_type: str
    kind: BarrierKind
    detail: str
    tensor: str
    source: SourceLine | None
    in_user_code: bool
    node: str

    def __str__(self) -> str:
        where = f" at {self.source}" if self.source else ""
        return f"{self.op_type} {self.op_name!r} ({self.detail}){where}"


@dataclass(frozen=True)
class VariableResult:
    """flowcheck's verdict on one variable.

    Attributes:
        name: The variable's name (the Keras path for Keras variables).
        verdict: Whether a gradient reaches it from the loss (all losses, summed).
        barriers: For a blocked variable, the ops that cut every path to the loss.
        shape: Its shape.
        dtype: Its dtype's name.
        trainable: Whether training would update it (an optimizer given ``trainable_variables``).
        per_loss: The verdict for each loss output alone.
        variable: The variable object itself.
        node: Its node id in :attr:`Report.graph`.
        watched_by_default: Whether a default ``tf.GradientTape`` watches it when it is read (its
            ``tf.Variable`` is trainable). The verdict is the answer of a tape that watches the
            variable, whatever this says.
        eager_difference: For a plain callable, why its eager call answers otherwise than its
            traced graph (the eager answer is the verdict), e.g. "only the branch taken runs
            eagerly (line 12)"; None when they agree.
    """

    name: str
    verdict: Verdict
    barriers: tuple[Barrier, ...]
    shape: tuple[int | None, ...]
    dtype: str
    trainable: bool
    per_loss: Mapping[str, Verdict] = field(compare=False)
    variable: Any = field(repr=False, compare=False)
    node: str = field(repr=False)
    watched_by_default: bool = True
    eager_difference: str | None = None

    @property
    def receives(self) -> bool:
        """True when a gradient reaches the variable."""
        return self.verdict is Verdict.RECEIVES
