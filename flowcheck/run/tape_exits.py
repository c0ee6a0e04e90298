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
import os
import sys
import types
import weakref
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Any

from flowcheck._model import Verdict
from flowcheck.run.step import EAGER_NOTE, EAGERLY_NOTE
from flowcheck.source.lines import is_library_file
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
        self._lines = BlockLines()
        self._reads = BlockReads()
        self._watched: weakref.WeakKeyDictionary[Any, set[int]] = weakref.WeakKeyDictionary()  # tape -> ids tape.watch was given

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Hear the conversions, and each tape's entry, for the duration of the block."""
        import tensorflow as tf
        from tensorflow.python.eager import backprop

        from flowcheck.trace.exits import record_assigns, record_exits

        enter, leave = backprop.GradientTape.__dict__["__enter__"], backprop.GradientTape.__dict__["__exit__"]
        watch = backprop.GradientTape.__dict__["watch"]

        def entered(tape: Any) -> Any:
            if self._active():
                self._starts.setdefault(tape, len(self._exits))  # a persistent tape entered again: from its first block
                self._lines.open(tape, sys._getframe(1))  # noqa: SLF001
                self._reads.open(tape)
            return enter(tape)

        def exited(tape: Any, *args: Any) -> Any:
            self._lines.close(tape)
            self._reads.close(tape)
            return leave(tape, *args)

        def watched(tape: Any, tensor: Any) -> Any:
            with contextlib.suppress(TypeError):  # (a tape that cannot be weakly referenced)
                self._watched.setdefault(tape, set()).update(id(t) for t in tf.nest.flatten(tensor))
            return watch(tape, tensor)

        backprop.GradientTape.__enter__, backprop.GradientTape.__exit__ = entered, exited
        backprop.GradientTape.watch = watched
        try:
            with record_exits(self._exits, self._recorded, self._in_block), record_assigns(self._exits, only=self._recorded):
                yield
        finally:
            backprop.GradientTape.__enter__, backprop.GradientTape.__exit__ = enter, leave
            backprop.GradientTape.watch = watch
            self._lines.close(None)
            self._reads.close(None)

    def lines(self, tape: Any) -> frozenset[tuple[str, int]] | None:
        """The user's lines (absolute file, line) that ran in ``tape``'s blocks; None when not heard."""
        return self._lines.ran.get(tape)

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

    def _in_block(self, tensor: Any) -> bool:
        from tensorflow.python.eager import record

        return self._active() and record.could_possibly_record()

    def site(self, call: RecordedCall, tape: Any, targets: Any) -> GradientSite:
        """The site of ``tape``'s eager gradient ``call`` (of ``targets``), with a note on what cut it, when it can tell."""
        import tensorflow as tf

        from flowcheck.trace.eager_sites import eager_site, explained, unwatched_tensors

        site = _unread_unused(self._reads.read(tape), eager_site(call))
        note = self.note(tape, site, targets)  # (a Python condition that skipped a read says why it is unused)
        if not site.error and all(s.verdict is Verdict.UNUSED for s in site.cut):  # nothing cuts a source never read
            return dataclasses.replace(site, notes=(*site.notes, note)) if note is not None else site
        tensors = unwatched_tensors(site, self._watched.get(tape, set()))
        notes = [f"not watched: {', '.join(tensors)}: tensors, not variables, and no tape.watch call names them: "
                 "the tape watches only the trainable variables it reads (tape.watch a tensor to differentiate it)"] if tensors else []
        if note is not None:
            notes.append(note)
        elif not explained(call, site, tensors):  # (a graph would name no op for a source the tape does not watch)
            notes.append(EAGERLY_NOTE if tf.config.functions_run_eagerly() else EAGER_NOTE)
        return dataclasses.replace(site, notes=(*site.notes, *notes)) if site.cut or site.error else site

    def note(self, tape: Any, site: GradientSite, targets: Any) -> str | None:
        """Why ``site`` (``tape``'s eager call) gave None: values the tape records that left TensorFlow in its block.

        Told only for sources the block read (a variable it never read is unused, not cut), and not
        for the targets themselves (``print(float(loss))`` cuts nothing that is differentiated).
        """
        import tensorflow as tf

        from flowcheck.graph.ops import ASSIGN_DETAIL
        from flowcheck.trace.eager_sites import backing

        read = {id(backing(v)) for v in tape.watched_variables()}
        start = self._starts.get(tape)
        unread = [s.name for s in site.sources if s.tensorflow_none and isinstance(backing(s.variable), tf.Variable)
                  and id(backing(s.variable)) not in read]
        conditions = [e for e in self._exits[start:] if not e.left_tensorflow] if start is not None and unread else []
        said = [f"{conditions[0]}: {', '.join(unread)} {'is' if len(unread) == 1 else 'are'} not read in the tape's block"
                ] if conditions else []
        if not site.error and not any(s.tensorflow_none and id(backing(s.variable)) in read for s in site.sources):
            return "; ".join(said) or None
        own = {id(t) for t in tf.nest.flatten(targets)}
        left = [e for e in self._exits[start:] if e.left_tensorflow and e.tensor not in own] if start is not None else []
        if converted := [e for e in left if not e.assigned]:
            said.append(f"{'; '.join(dict.fromkeys(str(e) for e in converted))} inside the tape's block, with a value "
                        "the tape records: the tape records nothing computed from it (keep that computation in TensorFlow ops)")
        if assigned := [e for e in left if e.assigned and e.variable in read]:  # (a loss's running mean is no cut)
            said.append(f"{'; '.join(dict.fromkeys(str(e) for e in assigned))} inside the tape's block: {ASSIGN_DETAIL} "
                        "(compute with the value itself, as a tensor)")
        return "; ".join(said) or None


def _unread_unused(read: set[int] | None, site: GradientSite) -> GradientSite:
    """``site`` with the variables its tape's block never read told UNUSED, not BLOCKED.

    ``read``: the ids of the trainable variables the block read (:class:`BlockReads`; None when not
    heard). A trainable float variable given None that the block never read is not in what the
    tape differentiates: nothing cuts it. (An untrainable one is not heard: it stays BLOCKED.)
    """
    import tensorflow as tf

    from flowcheck.trace.eager_sites import backing

    if read is None or site.error or not site.cut:
        return site

    def unread(variable: Any) -> bool:
        v = backing(variable)
        if not isinstance(v, tf.Variable) or not v.trainable or not (v.dtype.is_floating or v.dtype.is_complex):
            return False
        return id(v) not in read and not any(id(c) in read for c in getattr(v, "_values", ()))

    found = {id(s) for s in site.sources if s.tensorflow_none and unread(s.variable)}
    if not found:
        return site
    note = ("unused: a variable the tape's block never read is not in what the tape differentiates; no op cuts it "
            "(use it in the loss, or leave it out of the sources; a value read before the block is a constant to the tape)")
    sources = tuple(dataclasses.replace(s, verdict=Verdict.UNUSED) if id(s) in found else s for s in site.sources)
    return dataclasses.replace(site, sources=sources, notes=(*site.notes, note))


class BlockReads:
    """The trainable variables read inside a tape's blocks, paused or not (``tf.stop_gradient(v)``
    reads ``v`` with the tape paused): TensorFlow's own ``VariableWatcher``, one per open block."""

    def __init__(self) -> None:
        self._read: weakref.WeakKeyDictionary[Any, set[int]] = weakref.WeakKeyDictionary()
        self._open: dict[int, tuple[Any, Any]] = {}

    def open(self, tape: Any) -> None:
        from tensorflow.python.eager import record

        if id(tape) not in self._open:
            with contextlib.suppress(TypeError):  # (a tape that cannot be weakly referenced)
                self._read.setdefault(tape, set())
                self._open[id(tape)] = (tape, record.VariableWatcher().__enter__())

    def read(self, tape: Any) -> set[int] | None:
        """The ids of the variables ``tape``'s blocks read so far (its open block's included); None when not heard."""
        found = self._read.get(tape)
        if found is None:
            return None
        if id(tape) in self._open:
            found = found | {id(v) for v in self._open[id(tape)][1].watched_variables()}
        return found

    def close(self, tape: Any) -> None:
        for key in [k for k in self._open if tape is None or k == id(tape)]:
            kept, watcher = self._open.pop(key)
            self._read[kept] |= {id(v) for v in watcher.watched_variables()}
            watcher.__exit__(None, None, None)


class BlockLines:
    """The user's lines that run inside a tape's block (Python's line events, only while a block is
    open and no other tracer, a debugger or coverage, is set): what an eager call really ran."""

    def __init__(self) -> None:
        self.ran: weakref.WeakKeyDictionary[Any, frozenset[tuple[str, int]]] = weakref.WeakKeyDictionary()
        self._open: dict[int, tuple[Any, set[tuple[str, int]]]] = {}
        self._frames: list[types.FrameType] = []
        self._user: dict[types.CodeType, str | None] = {}
        self._tracing = False

    def open(self, tape: Any, frame: types.FrameType | None) -> None:
        if not self._open and sys.gettrace() is not None:
            return  # someone else's tracer: not heard
        if not self._open:
            while frame is not None:  # the user's frames already running: their next lines too
                if self._file(frame.f_code) is not None:
                    frame.f_trace, frame.f_trace_lines = self._local, True
                    self._frames.append(frame)
                frame = frame.f_back
            sys.settrace(self._global)
            self._tracing = True
        self._open.setdefault(id(tape), (tape, set()))

    def close(self, tape: Any) -> None:
        for key in [k for k in self._open if tape is None or k == id(tape)]:
            kept, lines = self._open.pop(key)
            with contextlib.suppress(TypeError):  # (a tape that cannot be weakly referenced)
                self.ran[kept] = self.ran.get(kept, frozenset()) | lines
        if self._open or not self._tracing:
            return
        self._tracing = False
        if sys.gettrace() == self._global:
            sys.settrace(None)
        else:  # the script was stopped inside the block: its stop's tracer will not put this one back
            from flowcheck.run.stop import forget

            forget(self._global, self._local)
        for frame in self._frames:
            if frame.f_trace == self._local:
                frame.f_trace = None
        self._frames.clear()

    def _file(self, code: types.CodeType) -> str | None:
        if code not in self._user:
            self._user[code] = None if is_library_file(code.co_filename) else os.path.abspath(code.co_filename)
        return self._user[code]

    def _global(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        return self._local if event == "call" and self._file(frame.f_code) is not None else None

    def _local(self, frame: types.FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            file = self._file(frame.f_code)
            for _, lines in self._open.values():
                lines.add((str(file), frame.f_lineno))
        return self._local
