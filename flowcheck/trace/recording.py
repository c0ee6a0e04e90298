"""Recording gradient calls: the patches behind :func:`flowcheck.trace.recording.record_sites`.

While a recorder is active, ``tf.GradientTape``'s ``_push_tape``/``_pop_tape`` (every start and
end of a recording stretch: ``__enter__``, ``__exit__``, ``stop_recording``, ``gradient`` on a
non-persistent tape, ``reset``), ``watch``, ``gradient``, ``jacobian`` and ``batch_jacobian``, and
``tf.gradients`` and ``tf.hessians``, are wrapped. A stretch is remembered as the range of op ids (``op._id``) the
graph handed out while it lasted, so the ops a tape recorded can be told later: those created in
its ``with`` block while it recorded. The wrappers call TensorFlow's own methods and hand back
their results untouched; a call made while another is being recorded (``jacobian`` calls
``gradient``) is not recorded again.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, Final, TypeVar, cast

import tensorflow as tf
from tensorflow.python.eager import backprop
from tensorflow.python.framework import ops

from flowcheck.source.lines import SourceLine, call_column, frame_running, is_library_file, user_frame
from flowcheck.source.names import call_index, watch_labels
from flowcheck.trace.eager_sites import backing
from flowcheck.trace.owners import frame_module_paths, is_keras_layer, untracked_by_keras
from flowcheck.trace.sites import RecordedCall, SiteRecorder, TapeRecord

__all__ = ["record_sites", "recording", "tape_record"]

_LOCK = threading.RLock()
_ACTIVE: list[SiteRecorder] = []
_TAPES: weakref.WeakKeyDictionary[Any, TapeRecord] = weakref.WeakKeyDictionary()
_STATE = threading.local()
_ORIGINAL: dict[str, Any] = {}
_TAPE_METHODS: Final = ("_push_tape", "_pop_tape", "watch", "gradient", "jacobian", "batch_jacobian")
# Keras 3's own training step (TensorFlow backend) asks for gradients here.
_KERAS_TRAINER: Final = ("keras/src/backend/tensorflow/trainer.py",)
_TF1_OPTIMIZER: Final = "tensorflow/python/training/optimizer.py"  # compute_gradients tapes eagerly
_HERE: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the flowcheck package
# AutoGraph would convert the wrappers when the user's converted code calls them: keep them Python.
_F = TypeVar("_F", bound=Callable[..., Any])


def _PLAIN_PYTHON(fn: _F) -> _F:  # noqa: N802 -- reads as the decorator it wraps
    return cast(_F, tf.autograph.experimental.do_not_convert(fn))


@contextlib.contextmanager
def recording() -> Iterator[SiteRecorder]:
    """Install the patches (once for nested recorders) and collect calls into a new recorder."""
    recorder = SiteRecorder()
    with _LOCK:
        if not _ACTIVE:
            _install()
        _ACTIVE.append(recorder)
    try:
        yield recorder
    finally:
        with _LOCK:
            _ACTIVE.remove(recorder)
            if not _ACTIVE:
                _uninstall()


def tape_record(tape: Any) -> TapeRecord | None:
    """The record of a tape seen while recording, if any."""
    return _TAPES.get(tape)


def _install() -> None:
    for name in _TAPE_METHODS:
        _ORIGINAL[name] = getattr(backprop.GradientTape, name)
    _ORIGINAL["tf.gradients"], _ORIGINAL["tf.hessians"] = tf.gradients, tf.hessians
    wrappers: dict[str, Callable[..., Any]] = {
        "_push_tape": _push_tape, "_pop_tape": _pop_tape, "watch": _watch, "gradient": _gradient,
        "jacobian": _jacobian, "batch_jacobian": _batch_jacobian,
    }
    for name, wrapper in wrappers.items():
        setattr(backprop.GradientTape, name, wrapper)
    tf.gradients, tf.hessians = _tf_gradients, _tf_hessians


def _uninstall() -> None:
    for name in _TAPE_METHODS:
        setattr(backprop.GradientTape, name, _ORIGINAL[name])
    tf.gradients, tf.hessians = _ORIGINAL["tf.gradients"], _ORIGINAL["tf.hessians"]
    _ORIGINAL.clear()


def _graph() -> Any:
    return None if tf.executing_eagerly() else ops.get_default_graph()


def _last_id(graph: Any) -> int:
    """The id of the newest op of ``graph`` (ids grow with creation; ``Graph.version`` lags them)."""
    operations = graph.get_operations()
    return int(operations[-1]._id) if operations else 0  # noqa: SLF001


@_PLAIN_PYTHON
def _push_tape(self: Any) -> None:
    fresh = self._tape is None  # noqa: SLF001 -- a new tape (first push or after reset)
    _ORIGINAL["_push_tape"](self)
    record = _TAPES.get(self)
    graph = _graph()
    if fresh or record is None or record.graph is not graph:
        record = TapeRecord(
            persistent=bool(self._persistent), watch_accessed_variables=bool(self._watch_accessed_variables),  # noqa: SLF001
            graph=graph, entered=_caller()[0],
        )
        _TAPES[self] = record
    record.open_since = _last_id(graph) if graph is not None else 0


@_PLAIN_PYTHON
def _pop_tape(self: Any) -> None:
    _ORIGINAL["_pop_tape"](self)
    record = _TAPES.get(self)
    if record is not None and record.open_since is not None:
        if record.graph is not None:
            record.spans.append((record.open_since, _last_id(record.graph)))
        record.open_since = None


@_PLAIN_PYTHON
def _watch(self: Any, tensor: Any) -> None:
    _ORIGINAL["watch"](self, tensor)
    record = _record_of(self)
    flat = tf.nest.flatten(tensor)
    record.watched.extend(flat)
    line = _caller()[0]
    nth = sum(1 for seen in record.watch_lines if seen == line)  # `tape.watch(t); tape.watch(x)` on one line
    record.watch_lines.append(line)
    record.watch_labels.update(
        (id(obj), label) for obj, label in zip(flat, watch_labels(line, nth, len(flat))) if label is not None
    )


def _record_of(tape: Any) -> TapeRecord:
    record = _TAPES.get(tape)
    if record is None:  # a tape pushed before recording began: assume it recorded everything so far
        graph = _graph()
        record = TapeRecord(
            persistent=bool(tape._persistent), watch_accessed_variables=bool(tape._watch_accessed_variables),  # noqa: SLF001
            graph=graph, spans=[(0, _last_id(graph))] if graph is not None else [],
        )
        if graph is None and not record.watch_accessed_variables:
            # Its tape.watch calls went unseen (an eager tape is recorded from its gradient call on);
            # the tape still knows the variables it was told to watch.
            record.watched.extend(tape.watched_variables())
        _TAPES[tape] = record
    return record


def _caller() -> tuple[SourceLine | None, str | None]:
    """The user's line on the Python stack, and the kind of the call when library code made it for the user:
    Keras's own training step, or a TensorFlow 1 optimizer's ``minimize`` / ``compute_gradients`` run eagerly."""
    frames = traceback.extract_stack()[:-2]
    if any(f.filename.endswith(_KERAS_TRAINER) for f in frames[-6:]):
        return None, "Keras train_step"
    optimizer = [f.name for f in frames[-6:] if f.filename.endswith(_TF1_OPTIMIZER)]
    kind = None if not optimizer else "tf1 Optimizer.minimize" if "minimize" in optimizer else "tf1 compute_gradients"
    return user_frame(frames)[0], kind


def _direct_caller() -> SourceLine | None:
    """The library line that called TensorFlow's gradient method (Keras's), None for the user's code."""
    for frame in reversed(traceback.extract_stack()[:-1]):
        if not frame.filename.startswith(_HERE) and "/tensorflow/python/" not in frame.filename:
            if not is_library_file(frame.filename) or "__autograph_generated" in frame.filename:
                return None
            return SourceLine(frame.filename, int(frame.lineno or 0), frame.name, (frame.line or "").strip())
    return None


def _recorded(
    kind: str, tape: Any, targets: Any, sources: Any, call: Callable[[], Any], zero: bool, answered: bool = False,
    stops: tuple[Any, ...] = (),
) -> Any:
    if getattr(_STATE, "busy", False) or not _ACTIVE:
        return call()
    line, made_for_user = _caller()
    if made_for_user is not None and kind == "GradientTape.gradient":
        kind = made_for_user
    entry = RecordedCall(
        kind=kind, source=line, targets=tuple(tf.nest.flatten(targets)), sources=tuple(tf.nest.flatten(sources)),
        results=None, tape=_record_of(tape) if tape is not None else None, graph=_graph(), unconnected_zero=zero,
        caller=_direct_caller(), zero_answered=answered, stop_gradients=stops, inner=_inside_another_tape(tape),
    )
    if entry.graph is None:  # an eager call: the user's frame names what its owners hold
        frame = frame_running(line)  # its locals and globals hold the models and modules that name the sources
        entry.paths = frame_module_paths(frame, entry.sources) if frame is not None else {}
        entry.untracked = _untracked_at(frame, tape, entry.sources)
    # Eagerly the call's column tells which of its line's calls it is; a trace's frames are AutoGraph's.
    entry.nth = call_index(line, call_column()) if entry.graph is None else sum(
        1 for c in _ACTIVE[-1].calls if c.source == line and c.graph is entry.graph)
    _STATE.busy = True
    try:
        result = call()
    except Exception as exc:
        entry.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        entry.exception = exc
        raise
    else:
        flat = tf.nest.flatten(result) if result is not None else [None]
        entry.results = tuple(flat) if len(flat) == len(entry.sources) else None
        return result
    finally:
        _STATE.busy = False
        for recorder in list(_ACTIVE):
            recorder.calls.append(entry)


def _untracked_at(frame: FrameType | None, tape: Any, sources: tuple[Any, ...]) -> tuple[tuple[str, str], ...]:
    """The trainable variables ``tape`` watched that no source names and a Keras layer the user's ``frame``
    (the gradient call's) holds untracked (a CLIP temperature left out of ``model.trainable_variables``)."""
    if frame is None or tape is None:
        return ()
    asked = {id(backing(s)) for s in sources} | {id(s) for s in sources}
    left = [v for v in tape.watched_variables() if v.trainable and id(v) not in asked]
    if not left:
        return ()
    held = untracked_by_keras([v for v in [*frame.f_locals.values(), *frame.f_globals.values()] if is_keras_layer(v)])
    return tuple((v.name.split(":")[0], held[id(v)]) for v in left if id(v) in held)


def _inside_another_tape(tape: Any) -> bool:
    """Whether a tape other than ``tape`` is recording now (the call is inside a bigger step's tape)."""
    return any(record.open_since is not None for other, record in list(_TAPES.items()) if other is not tape)


def _is_zero(unconnected: Any) -> bool:
    return str(getattr(unconnected, "value", unconnected)).lower() == "zero"


@_PLAIN_PYTHON
def _gradient(self: Any, target: Any, sources: Any, output_gradients: Any = None,
              unconnected_gradients: Any = tf.UnconnectedGradients.NONE) -> Any:
    if _is_zero(unconnected_gradients) and tf.executing_eagerly() and _ACTIVE and not getattr(_STATE, "busy", False):
        # Eagerly there is no graph to judge: ask with NONE (TensorFlow's answer, recorded) and give the
        # user what ZERO gives, the zeros TensorFlow's tape makes for a source it does not reach.
        result = _recorded(
            "GradientTape.gradient", self, target, sources,
            lambda: _ORIGINAL["gradient"](self, target, sources, output_gradients, tf.UnconnectedGradients.NONE),
            True, answered=True,
        )
        return _zeros_for_none(sources, result)
    return _recorded(
        "GradientTape.gradient", self, target, sources,
        lambda: _ORIGINAL["gradient"](self, target, sources, output_gradients, unconnected_gradients),
        _is_zero(unconnected_gradients),
    )


def _zeros_for_none(sources: Any, result: Any) -> Any:
    """``result`` with each None replaced as ``unconnected_gradients=ZERO`` does (``backprop.py``:
    ``default_gradient.zeros_like`` of the source)."""
    from tensorflow.python.ops import default_gradient

    flat = tf.nest.flatten(result) if result is not None else [None]
    flat_sources = tf.nest.flatten(sources)
    if len(flat) != len(flat_sources):
        return result
    return tf.nest.pack_sequence_as(sources, [
        default_gradient.zeros_like(s) if g is None else g for g, s in zip(flat, flat_sources)
    ])


def _jacobian_like(name: str) -> Callable[..., Any]:
    """The wrapper of ``jacobian`` or ``batch_jacobian`` (same leading parameters)."""

    @_PLAIN_PYTHON
    def wrapper(self: Any, target: Any, sources: Any, *args: Any, **kwargs: Any) -> Any:
        unconnected = kwargs.get("unconnected_gradients", args[0] if args else tf.UnconnectedGradients.NONE)
        return _recorded(
            f"GradientTape.{name}", self, target, sources,
            lambda: _ORIGINAL[name](self, target, sources, *args, **kwargs), _is_zero(unconnected),
        )

    return wrapper


_jacobian = _jacobian_like("jacobian")
_batch_jacobian = _jacobian_like("batch_jacobian")


@_PLAIN_PYTHON
def _tf_gradients(ys: Any, xs: Any, *args: Any, **kwargs: Any) -> Any:
    original = _ORIGINAL.get("tf.gradients") or tf.gradients
    if tf.executing_eagerly():
        return original(ys, xs, *args, **kwargs)
    try:  # stop_gradients and unconnected_gradients may come by position, as tf.gradients allows
        bound = inspect.signature(original).bind(ys, xs, *args, **kwargs).arguments
    except TypeError:  # TensorFlow raises its own error for a bad call
        bound = kwargs
    unconnected = bound.get("unconnected_gradients", tf.UnconnectedGradients.NONE)
    stops = tuple(tf.nest.flatten(bound["stop_gradients"])) if bound.get("stop_gradients") is not None else ()
    return _recorded("tf.gradients", None, ys, xs, lambda: original(ys, xs, *args, **kwargs), _is_zero(unconnected),
                     stops=stops)


@_PLAIN_PYTHON
def _tf_hessians(ys: Any, xs: Any, *args: Any, **kwargs: Any) -> Any:
    """``tf.hessians``: one call (its own ``gradients`` calls, first order and per element in its
    while loop, call TensorFlow's module function, not ``tf.gradients``: they are not recorded)."""
    original = _ORIGINAL.get("tf.hessians") or tf.hessians
    if tf.executing_eagerly():
        return original(ys, xs, *args, **kwargs)
    return _recorded("tf.hessians", None, ys, xs, lambda: original(ys, xs, *args, **kwargs), False)


@contextlib.contextmanager
def record_sites() -> Iterator[SiteRecorder]:
    """Record every gradient call (tape ``gradient``/``jacobian``/``batch_jacobian``,
    ``tf.gradients`` inside a ``tf.function``) made while active, eager or traced.

    The patches are installed on entry and removed on exit; recorders nest (each sees every
    call). A call made by flowcheck's own code is not recorded.

    Yields:
        The :class:`SiteRecorder` collecting the calls.
    """
    with recording() as recorder:
        yield recorder


@contextlib.contextmanager
def nested_functions_afresh() -> Iterator[None]:
    """While a step is traced, trace every ``tf.function`` it calls afresh, so that its gradient calls are seen.

    A nested ``tf.function`` that has run before answers from its cache without running its Python
    code again: its ``tape.gradient`` would go unrecorded and the step would look like no step. A
    call made inside the trace (not eagerly) goes to a clone of the function instead (TensorFlow's
    own ``Function._clone``: the same code and options), one clone per function for each trace of
    the outermost function: a step traced twice on its first call (it creates variables, e.g. an
    optimizer's slots) runs its nested functions' Python code again in its second, final trace.
    """
    from tensorflow.python.eager.polymorphic_function import polymorphic_function
    from tensorflow.python.framework import func_graph, ops

    function = polymorphic_function.Function
    current = function.__call__
    clones: dict[tuple[int, int], tuple[Any, Any, Any]] = {}  # (id, outer trace) -> (function, graph, clone)

    def passes_through(self: Any, *args: Any, **kwargs: Any) -> Any:  # named for flowcheck.source.lines.PASSES_THROUGH
        if tf.executing_eagerly() or getattr(self, "_flowcheck_clone", False):
            return current(self, *args, **kwargs)
        outermost = ops.get_default_graph()
        while isinstance(getattr(outermost, "outer_graph", None), func_graph.FuncGraph):
            outermost = outermost.outer_graph
        found = clones.get((id(self), id(outermost)))
        if found is None:
            clone = self._clone(self.python_function)  # noqa: SLF001 -- as flowcheck's own trace copies a step
            clone._flowcheck_clone = True  # noqa: SLF001
            found = clones[(id(self), id(outermost))] = (self, outermost, clone)  # both kept alive: ids stay unique
        return current(found[2], *args, **kwargs)

    function.__call__ = passes_through
    try:
        yield
    finally:
        function.__call__ = current
