"""Gradient sites: the places where the user's code asks TensorFlow for gradients (issue 12).

A *gradient site* is one call such as ``tape.gradient(loss, model.trainable_variables)`` seen
while flowcheck traces (or runs) a training step. Each site lists its sources exactly as the
user passed them, in order, with flowcheck's verdict for each, judged by *that* call's semantics
(the ops its tape recorded, what the tape watches), and TensorFlow's own answer at the call.

This module holds the plain data (no TensorFlow import):

* :class:`SiteSource` and :class:`GradientSite`, the results every output shows;
* :class:`TapeRecord` and :class:`RecordedCall`, what the recorder saw (TensorFlow objects
  inside; :mod:`flowcheck.analysis.sites` turns them into sites);
* :class:`SiteRecorder`, what :func:`flowcheck.trace.recording.record_sites` yields while it records
  every gradient call;
* :func:`running_user_code` / :func:`in_flowcheck`: whether a call is flowcheck's own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from flowcheck._model import Verdict
from flowcheck.source.lines import SourceLine
from flowcheck.source.names import source_name

if TYPE_CHECKING:
    from flowcheck._model import Barrier

__all__ = [
    "KINDS",
    "GradientSite",
    "RecordedCall",
    "SiteRecorder",
    "SiteSource",
    "TapeRecord",
    "in_flowcheck",
    "running_user_code",
    "watch_text",
]

KINDS: Final = (
    "GradientTape.gradient",
    "GradientTape.jacobian",
    "GradientTape.batch_jacobian",
    "Optimizer.minimize",
    "Keras train_step",
    "tf.gradients",
    "tf1 Optimizer.minimize",
    "tf1 compute_gradients",
    "tf1 tf.gradients",
    "tf.hessians",
    "tf1 tf.hessians",
)
"""Every value :attr:`GradientSite.kind` takes."""


@dataclass(frozen=True)
class SiteSource:
    """One source of a gradient call, exactly as the user passed it (in order).

    Attributes:
        name: As reports show it: the Keras path, the ``tf.Variable``'s name without ``:0``, a
            tensor's name, or the Python name the script binds it to (TF1 ``Variable`` -> ``w1``);
            unique within the site (duplicates get `` (2)``, `` (3)``, ...).
        variable: The object the user passed.
        verdict: RECEIVES / BLOCKED / UNUSED, judged by that call's semantics (its tape).
        barriers: For BLOCKED: the ops that cut every path, at the user's lines.
        tensorflow_none: TensorFlow's own answer at the call: True when it gave None, False when
            it gave a gradient; None when it gave no usable answer (it raised, or the call asked
            for ``unconnected_gradients=ZERO``).
        trainable: The variable's trainable flag (False for a tensor source).
        eager_difference: For a step that is a plain Python function (run eagerly): why its
            eager call answers otherwise than its traced graph (the eager answer is the verdict).
        created: For an unused source a layer or module of the user's holds: the user's line that
            created it, when found.
    """

    name: str
    variable: Any = field(compare=False, repr=False)
    verdict: Verdict
    barriers: tuple[Barrier, ...]
    tensorflow_none: bool | None
    trainable: bool
    eager_difference: str | None = None
    created: SourceLine | None = field(default=None, compare=False)

    @property
    def receives(self) -> bool:
        """True when flowcheck says a gradient reaches this source at this call."""
        return self.verdict is Verdict.RECEIVES

    @property
    def agrees(self) -> bool:
        """Whether the verdict equals TensorFlow's answer (True when TensorFlow gave none)."""
        return self.tensorflow_none is None or self.receives == (not self.tensorflow_none)


@dataclass(frozen=True)
class GradientSite:
    """A place where the user's code asks TensorFlow for gradients.

    Attributes:
        kind: One of :data:`KINDS`.
        source: The user's file:line of the call (None inside library code with no user frame).
        targets: Names of the tensors differentiated (the loss), for display.
        sources: One per source, in the order passed (nested structures flattened).
        watch: The tape's watch semantics in words, e.g. ``"watches accessed trainable
            variables"``, ``"watch_accessed_variables=False; watched: a, b"``, ``"persistent"``.
        error: The call raised instead (e.g. the loss left TensorFlow): the reason in words.
        notes: Further things worth knowing about this site (added field; empty by default).
    """

    kind: str
    source: SourceLine | None
    targets: tuple[str, ...]
    sources: tuple[SiteSource, ...]
    watch: str
    error: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def agrees(self) -> bool:
        """Static verdict (receives?) equals ``not tensorflow_none`` for every source."""
        return all(s.agrees for s in self.sources)

    @property
    def cut(self) -> tuple[SiteSource, ...]:
        """The sources that get no gradient (blocked or unused)."""
        return tuple(s for s in self.sources if not s.receives)

    @property
    def blocked(self) -> tuple[SiteSource, ...]:
        """The sources that feed the targets and get no gradient (cut, not unused)."""
        return tuple(s for s in self.sources if s.verdict is Verdict.BLOCKED)

    @property
    def receiving(self) -> tuple[SiteSource, ...]:
        """The sources that get a gradient."""
        return tuple(s for s in self.sources if s.receives)

    def __str__(self) -> str:
        where = f" at {self.source}" if self.source else ""
        return f"{self.kind}{where}: {len(self.receiving)} of {len(self.sources)} sources receive"


@dataclass
class TapeRecord:
    """What one ``tf.GradientTape`` did while the recorder watched it.

    Attributes:
        persistent: The tape's ``persistent`` flag.
        watch_accessed_variables: Its ``watch_accessed_variables`` flag.
        watched: Objects passed to ``tape.watch`` (variables or tensors), flattened, in order.
        watch_labels: How the ``tape.watch`` calls wrote the watched objects (``id`` -> ``"t"``), where
            the line tells: a tensor is otherwise named by its graph name, its tf.function argument's.
        graph: The ``FuncGraph`` the tape recorded in (None when eager).
        spans: ``(first, last)`` op ids (``op._id``) of the ops created while it recorded, one
            span per recording stretch (``stop_recording`` and ``gradient`` end a stretch).
        entered: The user's line of the ``with`` statement, when found.
    """

    persistent: bool
    watch_accessed_variables: bool
    watched: list[Any] = field(default_factory=list)
    watch_labels: dict[int, str] = field(default_factory=dict)
    watch_lines: list[Any] = field(default_factory=list)  # the line of each watch call, in order
    graph: Any = None
    spans: list[tuple[int, int]] = field(default_factory=list)
    entered: SourceLine | None = None
    open_since: int | None = None  # op id when the current stretch began (None: not recording)

    def recorded(self, op_id: int) -> bool:
        """Whether an op of :attr:`graph` with this id was created while the tape recorded."""
        if self.open_since is not None and op_id > self.open_since:
            return True
        return any(first < op_id <= last for first, last in self.spans)


@dataclass
class RecordedCall:
    """One gradient call the recorder saw, with TensorFlow's answer.

    Attributes:
        kind: One of :data:`KINDS`.
        source: The user's line of the call.
        targets: The target tensors, flattened.
        sources: The sources, flattened, exactly as passed.
        results: What TensorFlow returned per source (tensors, IndexedSlices or None; symbolic
            inside a ``tf.function``, values when eager); None when it raised.
        tape: The tape's record (None for ``tf.gradients``).
        graph: The ``FuncGraph`` of the call (None when eager).
        unconnected_zero: The call asked for ``unconnected_gradients=ZERO``.
        error: What TensorFlow raised, as one line, if it did.
        exception: The exception itself, if it raised.
        caller: The library line that made the call (Keras's ``train_step``); None when user code did.
        zero_answered: For ``unconnected_gradients=ZERO`` made eagerly: flowcheck asked with NONE
            (``results`` hold TensorFlow's Nones) and handed the user the zeros ZERO gives.
        stop_gradients: The ``stop_gradients=`` tensors of ``tf.gradients``: nothing flows through them.
        nth: The call's place among the gradient calls its line makes in the same trace
            (``u_t, u_x = tape.gradient(u, t), tape.gradient(u, x)``: 0, then 1), to read its own text.
        paths: Eagerly, the sources' paths in the ``tf.Module`` objects the user's frame holds
            (``model/dense_1/w``), by ``id``: what names them when their own names repeat.
        inner: Made while another tape recorded (MAML's inner step, a gradient penalty, a PINN's
            derivatives): its target is part of a bigger loss, not the step's loss.
        untracked: Eagerly, ``(name, held as)`` of the trainable variables the tape watched that no
            source names and a Keras layer holds untracked (:func:`flowcheck.trace.owners.untracked_by_keras`).
    """

    kind: str
    source: SourceLine | None
    targets: tuple[Any, ...]
    sources: tuple[Any, ...]
    results: tuple[Any, ...] | None
    tape: TapeRecord | None
    graph: Any
    unconnected_zero: bool = False
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False)
    caller: SourceLine | None = None
    zero_answered: bool = False
    stop_gradients: tuple[Any, ...] = field(default=(), repr=False)
    inner: bool = False
    nth: int = 0
    paths: dict[int, str] = field(default_factory=dict, repr=False)
    untracked: tuple[tuple[str, str], ...] = ()

    @property
    def tensorflow_none(self) -> tuple[bool | None, ...]:
        """Per source: True when TensorFlow gave None (None when it gave no usable answer)."""
        if self.results is None or (self.unconnected_zero and not self.zero_answered):
            return (None,) * len(self.sources)
        return tuple(r is None for r in self.results)


class SiteRecorder:
    """Collects the gradient calls made while :func:`record_sites` is active.

    Attributes:
        calls: Every call, in the order made (a step traced twice shows its calls twice; use
            :meth:`calls_in` with the final graph to keep one copy).
    """

    def __init__(self) -> None:
        self.calls: list[RecordedCall] = []

    def calls_in(self, graph: Any, finished: bool = True) -> list[RecordedCall]:
        """The calls made in ``graph`` or in a function graph nested in it (``finished``: a trace that
        completed, whose nested graphs are all bodies of functions it holds; a trace that raised may
        have stopped inside a body before making the op that holds it)."""
        return [c for c in self.calls if c.graph is not None and _within(c.graph, graph, finished)]

    @property
    def eager_calls(self) -> list[RecordedCall]:
        """The calls made eagerly (outside any ``tf.function``)."""
        return [c for c in self.calls if c.graph is None]


def _within(inner: Any, outer: Any, finished: bool = True) -> bool:
    """Whether ``inner`` is ``outer`` or the body of a function it holds, however deeply nested.

    A graph traced and thrown away is not: AutoGraph traces a loop body once more in a scratch
    ``FuncGraph('tmp')`` to learn the loop variables first set inside it, and a gradient call there
    made ops that the function never holds.
    """
    graph = inner
    while graph is not None:
        if graph is outer:
            return True
        parent = getattr(graph, "outer_graph", None)
        if finished and parent is not None and not _registered(graph, parent):
            return False
        graph = parent
    return False


def _registered(body: Any, graph: Any) -> bool:
    """Whether ``body`` is the graph of a function in the registry of ``graph`` or of a graph holding it."""
    while graph is not None:
        if any(getattr(fn, "graph", None) is body for fn in getattr(graph, "_functions", {}).values()):
            return True
        graph = getattr(graph, "outer_graph", None)
    return False


_BUSY: list[int] = [0]  # how many of flowcheck's own traces and runs of user code are under way


@contextlib.contextmanager
def running_user_code() -> Iterator[None]:
    """Mark that flowcheck itself is tracing or running the user's step (see :func:`in_flowcheck`)."""
    _BUSY[0] += 1
    try:
        yield
    finally:
        _BUSY[0] -= 1


def in_flowcheck() -> bool:
    """True while flowcheck traces or runs a user's step itself (its analysis or verification).

    An interception of the user's calls (``flowcheck run``) should let these calls through.
    """
    return _BUSY[0] > 0


def watch_text(call: RecordedCall, names: dict[int, str]) -> str:
    """The call's watch semantics in words."""
    tape = call.tape
    if tape is None:
        return f"{call.kind}: every op of the graph, nothing to watch"
    parts = ["watches accessed trainable variables" if tape.watch_accessed_variables else "watch_accessed_variables=False"]
    if tape.watched:
        shown = [names.get(id(w)) or tape.watch_labels.get(id(w)) or source_name(w) for w in tape.watched]
        parts.append("watched: " + ", ".join(shown[:6]) + (", ..." if len(shown) > 6 else ""))
    if tape.persistent:
        parts.append("persistent")
    if len(tape.spans) > 1:
        parts.append(f"recorded in {len(tape.spans)} stretches (paused in between: stop_recording or a jacobian)")
    if call.unconnected_zero:
        parts.append("unconnected_gradients=ZERO (TensorFlow gives zeros, not None)")
    return "; ".join(parts)
