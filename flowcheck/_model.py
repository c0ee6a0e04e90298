"""Plain frozen results that every stage hands on: verdicts, barrier kinds, barriers, variable results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from flowcheck.source.lines import SourceLine

__all__ = ["Barrier", "BarrierKind", "VariableResult", "Verdict"]


class Verdict(str, Enum):
    """What happens to a variable's gradient."""

    RECEIVES = "receives"
    """A gradient path from the loss reaches it (TensorFlow gives a tensor, possibly zeros)."""
    BLOCKED = "blocked"
    """It feeds the loss, but every path is cut: TensorFlow gives ``None``."""
    UNUSED = "unused"
    """It does not feed the loss at all: TensorFlow gives ``None``."""

    def __str__(self) -> str:
        return self.value


class BarrierKind(str, Enum):
    """Why a gradient stops at an edge."""

    STOP_GRADIENT = "stop_gradient"
    NOT_DIFFERENTIABLE = "not_differentiable"
    NO_GRADIENT = "no_gradient"
    NONE_GRADIENT = "none_gradient"
    DTYPE = "dtype"
    CUSTOM_GRADIENT = "custom_gradient"
    CUSTOM_GRADIENT_NONE = "custom_gradient_none"
    PREDICATE = "predicate"
    ASSIGN = "assign"
    NOT_WATCHED = "not_watched"
    NOT_RECORDED = "not_recorded"

    def __str__(self) -> str:
        return self.value

    @property
    def label(self) -> str:
        """A short human label."""
        return _KIND_LABELS[self]


_KIND_LABELS = {
    BarrierKind.STOP_GRADIENT: "stop_gradient",
    BarrierKind.NOT_DIFFERENTIABLE: "not differentiable",
    BarrierKind.NO_GRADIENT: "no gradient defined",
    BarrierKind.NONE_GRADIENT: "gradient is None",
    BarrierKind.DTYPE: "non-float dtype",
    BarrierKind.CUSTOM_GRADIENT: "custom_gradient forward pass",
    BarrierKind.CUSTOM_GRADIENT_NONE: "custom gradient returned None",
    BarrierKind.PREDICATE: "control-flow predicate",
    BarrierKind.ASSIGN: "variable assignment",
    BarrierKind.NOT_WATCHED: "not watched by the tape (trainable=False)",
    BarrierKind.NOT_RECORDED: "computed where the tape was not recording",
}


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

    @property
    def what(self) -> str:
        """``StopGradient 'StopGradient' (stop_gradient)``: the op and why it stops the gradient."""
        return f"{self.op_type} {self.op_name!r} ({self.detail})"

    def where(self, exact: bool = False) -> str:
        """`` at model.py:12`` (``exact``: with the column), `` inside library code called at ...``, or ``""``."""
        if self.source is None:
            return ""
        place = self.source.location if exact else str(self.source)
        return f" at {place}" if self.in_user_code else f" inside library code called at {place}"

    def __str__(self) -> str:
        return self.what + self.where()


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
        created: For an unused variable a layer or module of the user's holds: the user's line
            that created it (``self.w = self.add_weight(...)`` in its ``build``), when found.
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
    created: SourceLine | None = field(default=None, compare=False)

    @property
    def receives(self) -> bool:
        """True when a gradient reaches the variable."""
        return self.verdict is Verdict.RECEIVES
