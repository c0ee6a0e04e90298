"""Where the script takes a value a tape records out of TensorFlow, for ``flowcheck run``'s eager sites.

An eager ``tape.gradient`` has no graph to cut down to an op, so a source that gets None cannot be
explained by a barrier. The commonest cause in an eager loop is a value that left TensorFlow inside
the tape's block (``pred.numpy() - y``, ``float(loss)``, ``np.mean(t)``): the tape records nothing
computed from it. :class:`TapeExits` hears those conversions as they happen, at the user's line,
for the tensors an active tape records (``record.should_record_backprop``, the test TensorFlow
makes before recording an op), so that the site can name them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Any

from flowcheck.run.step import EAGER_NOTE, EAGERLY_NOTE
from flowcheck.trace.sites import GradientSite, RecordedCall

if TYPE_CHECKING:  # TensorFlow is imported once the script runs, quietly (flowcheck.run.script)
    from flowcheck.trace.exits import Exit

__all__ = ["TapeExits"]


class TapeExits:
    """The user's conversions of recorded tensors to Python or NumPy values, while ``active()``, per tape."""

    def __init__(self, active: Callable[[], bool]) -> None:
        self._active = active
        self._exits: list[Exit] = []
        self._starts: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()  # tape -> exits before it
        self._around: dict[Hashable, list[weakref.ref[Any]]] = {}  # eager site -> other tapes recording at its first call

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Hear the conversions, and each tape's entry, for the duration of the block."""
        from tensorflow.python.eager import backprop

        from flowcheck.trace.exits import record_assigns, record_exits

        enter = backprop.GradientTape.__dict__["__enter__"]

        def entered(tape: Any) -> Any:
            if self._active():
                self._starts.setdefault(tape, len(self._exits))  # a persistent tape entered again: from its first block
            return enter(tape)

        backprop.GradientTape.__enter__ = entered
        try:
            with record_exits(self._exits, only=self._recorded), record_assigns(self._exits, only=self._recorded):
                yield
        finally:
            backprop.GradientTape.__enter__ = enter

    def first_call(self, site: Hashable, tape: Any) -> None:
        """Keep the tapes besides ``tape`` recording as ``site`` is first called (MAML's meta tape around a task's)."""
        self._around[site] = [weakref.ref(t) for t in self._starts if t is not tape and t._recording]  # noqa: SLF001

    def still_around(self, site: Hashable) -> bool:
        """Whether a tape recording around ``site``'s first call still records: the site's next call is in
        the same round (the next task's inner tape in the meta tape's block), not the next one's."""
        return any(t is not None and t._recording for t in (ref() for ref in self._around.get(site, ())))  # noqa: SLF001

    def _recorded(self, tensor: Any) -> bool:
        from tensorflow.python.eager import record

        return self._active() and record.could_possibly_record() and bool(record.should_record_backprop([tensor]))

    def site(self, call: RecordedCall, tape: Any, targets: Any) -> GradientSite:
        """The site of ``tape``'s eager gradient ``call`` (of ``targets``), with a note on what cut it, when it can tell."""
        import tensorflow as tf

        from flowcheck.trace.eager_sites import eager_site

        site = eager_site(call)
        note = self.note(tape, site, targets) or (EAGERLY_NOTE if tf.config.functions_run_eagerly() else EAGER_NOTE)
        return dataclasses.replace(site, notes=(*site.notes, note)) if site.cut or site.error else site

    def note(self, tape: Any, site: GradientSite, targets: Any) -> str | None:
        """Why ``site`` (``tape``'s eager call) gave None: values the tape records that left TensorFlow in its block.

        Told only for sources the block read (a variable it never read is unused, not cut), and not
        for the targets themselves (``print(float(loss))`` cuts nothing that is differentiated).
        """
        import tensorflow as tf

        from flowcheck.graph.ops import ASSIGN_DETAIL
        from flowcheck.trace.eager_sites import backing

        read = {id(backing(v)) for v in tape.watched_variables()}
        if not site.error and not any(s.tensorflow_none and id(backing(s.variable)) in read for s in site.sources):
            return None
        start = self._starts.get(tape)
        own = {id(t) for t in tf.nest.flatten(targets)}
        left = [e for e in self._exits[start:] if e.left_tensorflow and e.tensor not in own] if start is not None else []
        said = []
        if converted := [e for e in left if not e.assigned]:
            said.append(f"{'; '.join(dict.fromkeys(str(e) for e in converted))} inside the tape's block, with a value "
                        "the tape records: the tape records nothing computed from it (keep that computation in TensorFlow ops)")
        if assigned := [e for e in left if e.assigned and e.variable in read]:  # (a loss's running mean is no cut)
            said.append(f"{'; '.join(dict.fromkeys(str(e) for e in assigned))} inside the tape's block: {ASSIGN_DETAIL} "
                        "(compute with the value itself, as a tensor)")
        return "; ".join(said) or None

