"""TensorFlow 1 graph mode, stage 1: recording the gradient calls a script makes while it builds its graph.

A graph-mode gradient request passes through one of a few module attributes: the user's
``tf.compat.v1.gradients`` (``tf.gradients`` after ``import tensorflow.compat.v1 as tf``), the
TensorFlow 2 ``tf.gradients`` outside any ``tf.function``, and ``tensorflow.python.ops.gradients.
gradients``, which ``tf.compat.v1.train.Optimizer.compute_gradients`` (and so ``minimize``) calls
(tensorflow/python/training/optimizer.py); and ``tf.compat.v1.hessians`` (a Newton step), one call
whose own ``gradients`` calls, the one before and those of its while loop, are TensorFlow's and not
recorded (they call the module's function itself). :func:`install` wraps those attributes; each wrapper
calls the function it replaced and keeps, per graph, a :class:`GraphCall`: the kind, the user's
line, the targets and the sources exactly as passed, and TensorFlow's own answer (the gradients it
returned, ``None`` for a cut source) or the error it raised. Nothing is recorded inside a
``tf.function`` (a ``FuncGraph``) or eagerly: those sites are recorded elsewhere.
"""

from __future__ import annotations

import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from flowcheck.source.lines import SourceLine, is_library_file, user_frame
from flowcheck.source.names import is_default_name

__all__ = ["GraphCall", "graphs_with_calls", "install", "is_default_name", "made_calls", "python_names", "recorded_calls", "uninstall",
           "user_frames"]

_OPTIMIZER_FILE = "/training/optimizer.py"


@dataclass
class GraphCall:
    """One graph-mode gradient call, as the script made it.

    Attributes:
        kind: ``"tf1 Optimizer.minimize"``, ``"tf1 compute_gradients"`` or ``"tf1 tf.gradients"``.
        source: The user's line of the call.
        graph: The ``tf.Graph`` the gradient ops were added to.
        targets: The tensors differentiated (``ys``, or the optimizer's loss).
        sources: The sources, in order, as the user passed them (variables or tensors).
        grads: What TensorFlow returned, one per source (``None`` for a cut one); None if it raised.
        error: The exception TensorFlow raised, in one line, if it did.
        stop_gradients: The ``stop_gradients=`` tensors of ``tf.gradients``.
        unconnected_zero: ``unconnected_gradients="zero"`` was asked (no ``None`` then).
        var_list_given: For an optimizer call, whether the user passed ``var_list`` (None: cannot
            tell, the list is the default one).
        optimizer: For an optimizer call, the optimizer's class name.
        names: Python names the calling code binds graph objects to (``id(obj) -> name``).
    """

    kind: str
    source: SourceLine | None
    graph: Any = field(repr=False)
    targets: tuple[Any, ...] = field(repr=False)
    sources: tuple[Any, ...] = field(repr=False)
    grads: tuple[Any, ...] | None = field(repr=False)
    error: str | None = None
    stop_gradients: tuple[Any, ...] = field(default=(), repr=False)
    unconnected_zero: bool = False
    var_list_given: bool | None = True
    optimizer: str | None = None
    names: dict[int, str] = field(default_factory=dict, repr=False)
    keep: list[Any] = field(default_factory=list, repr=False)  # keeps ``names``' objects alive


# Kept on the graph itself (a call refers to its graph's tensors, so a table keyed by graph would
# keep every graph alive): graph and calls are collected together.
_CALLS_ATTR = "_flowcheck_gradient_calls"
_STATE = threading.local()
_LOCK = threading.Lock()
_INSTALLED: list[tuple[Any, str, Any]] = []
_MADE: list[str] = []  # every call recorded since install, in words (no graph kept alive)
_GRAPHS: weakref.WeakSet[Any] = weakref.WeakSet()  # the graphs holding calls recorded since install


def graphs_with_calls() -> list[Any]:
    """The graphs still alive that hold calls recorded since :func:`install`."""
    return list(_GRAPHS)


def made_calls() -> list[str]:
    """Every call recorded since :func:`install`, as ``"kind at file:line"``, in the order made."""
    return list(_MADE)


def recorded_calls(graph: Any) -> list[GraphCall]:
    """The gradient calls recorded so far on ``graph``, in the order they were made."""
    return list(getattr(graph, _CALLS_ATTR, ()))


def install() -> Callable[[], None]:
    """Wrap the graph-mode gradient entry points; returns the function that unwraps them.

    Installing twice is harmless (the second call wraps nothing and returns a no-op).
    """
    import importlib

    import tensorflow as tf
    from tensorflow.python.ops import gradients as gradients_module
    from tensorflow.python.ops import gradients_impl

    with _LOCK:
        if _INSTALLED:
            return lambda: None
        _MADE.clear()
        _GRAPHS.clear()
        v1, v2, hessians = gradients_impl.gradients, gradients_impl.gradients_v2, gradients_impl.hessians
        # ``import tensorflow.compat.v1 as tf`` makes a new module when that name is not yet in
        # sys.modules (the one ``tf.compat.v1`` held is ``tensorflow._api.v2.compat.v1``) and binds
        # the unwrapped function again: import it under the user's name first, then wrap.
        compat = [importlib.import_module(f"tensorflow.compat.{v}") for v in ("v1", "v2")]
        modules = [gradients_module, tf, tf.compat.v1, tf.compat.v2, *compat]
        modules += [m for name, m in list(sys.modules.items()) if name.startswith("tensorflow._api.")]
        seen: set[int] = set()
        for module in modules:
            if id(module) in seen:
                continue
            seen.add(id(module))
            current = getattr(module, "gradients", None)
            if current is v1:
                _patch(module, "gradients", _wrap(current, _PARAMS))
            elif current is v2:
                _patch(module, "gradients", _wrap(current, _V2_PARAMS))
            if getattr(module, "hessians", None) is hessians:  # (its own gradients calls are not the user's)
                _patch(module, "hessians", _wrap(gradients_impl.hessians, _HESSIAN_PARAMS))
    return uninstall


def uninstall() -> None:
    """Put back every attribute :func:`install` replaced."""
    with _LOCK:
        while _INSTALLED:
            module, attr, original = _INSTALLED.pop()
            setattr(module, attr, original)


def _patch(module: Any, attr: str, wrapper: Any) -> None:
    _INSTALLED.append((module, attr, getattr(module, attr)))
    setattr(module, attr, wrapper)


def _wrap(original: Callable[..., Any], params: tuple[str, ...]) -> Callable[..., Any]:
    def gradients(*args: Any, **kwargs: Any) -> Any:
        if getattr(_STATE, "busy", False) or not _graph_mode():
            return original(*args, **kwargs)
        _STATE.busy = True
        try:
            return _recorded(original, params, args, kwargs)
        finally:
            _STATE.busy = False

    gradients.__wrapped__ = original  # type: ignore[attr-defined]
    gradients.__doc__ = original.__doc__
    return gradients


def _graph_mode() -> bool:
    import tensorflow as tf
    from tensorflow.python.framework import func_graph, ops

    return not tf.executing_eagerly() and not isinstance(ops.get_default_graph(), func_graph.FuncGraph)


# The parameters of tf.compat.v1.gradients, tf.gradients and tf.compat.v1.hessians, in order.
_PARAMS = ("ys", "xs", "grad_ys", "name", "colocate_gradients_with_ops", "gate_gradients",
           "aggregation_method", "stop_gradients", "unconnected_gradients")
_V2_PARAMS = tuple(p for p in _PARAMS if p != "colocate_gradients_with_ops")
_HESSIAN_PARAMS = ("ys", "xs", "name", "colocate_gradients_with_ops", "gate_gradients", "aggregation_method")


def _recorded(original: Callable[..., Any], params: tuple[str, ...], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    from tensorflow.python.framework import ops
    from tensorflow.python.util import nest

    bound = dict(zip(params, args)) | kwargs
    targets = tuple(nest.flatten(bound.get("ys")))
    sources = tuple(nest.flatten(bound.get("xs")))
    stops = tuple(nest.flatten(bound.get("stop_gradients"))) if bound.get("stop_gradients") is not None else ()
    unconnected = str(getattr(bound.get("unconnected_gradients"), "value", bound.get("unconnected_gradients") or "none"))
    kind, compute, given = _kind() if params is not _HESSIAN_PARAMS else ("tf1 tf.hessians", None, None)
    source, _ = user_frame(traceback.extract_stack())
    names, keep = python_names(user_frames())
    graph = ops.get_default_graph()
    sources = _as_sources(sources, compute)
    call = GraphCall(
        kind=kind, source=source, graph=graph, targets=targets, sources=sources, grads=None,
        stop_gradients=stops, unconnected_zero=unconnected.lower() == "zero",
        var_list_given=given if given is not None else (
            True if compute is None or not _default_var_list(graph, sources) else None
        ), names=names, keep=keep,
        optimizer=type(compute.f_locals["self"]).__name__ if compute is not None and "self" in compute.f_locals else None,
    )
    try:
        result = original(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 -- recorded as TensorFlow's answer, then re-raised as is
        call.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        _remember(call)
        raise
    call.grads = tuple(result) if isinstance(result, (list, tuple)) else (result,)
    _remember(call)
    return result


def _remember(call: GraphCall) -> None:
    with _LOCK:
        calls = getattr(call.graph, _CALLS_ATTR, None)
        if calls is None:
            calls = []
            setattr(call.graph, _CALLS_ATTR, calls)
        calls.append(call)
        _MADE.append(f"{call.kind} at {call.source}" if call.source else call.kind)
        _GRAPHS.add(call.graph)


def _kind() -> tuple[str, FrameType | None, bool | None]:
    """The kind of call, the optimizer's ``compute_gradients`` frame when an optimizer made it, and
    whether ``minimize`` was given a ``var_list`` (None: not through ``minimize``)."""
    frame: FrameType | None = sys._getframe(2)  # noqa: SLF001 -- the caller of the wrapper
    kind, compute = "tf1 tf.gradients", None
    while frame is not None:
        code = frame.f_code
        if code.co_filename.replace("\\", "/").endswith(_OPTIMIZER_FILE):
            if code.co_name == "minimize":
                return "tf1 Optimizer.minimize", compute, frame.f_locals.get("var_list") is not None
            if code.co_name == "compute_gradients" and compute is None:
                kind, compute = "tf1 compute_gradients", frame
        elif not is_library_file(code.co_filename):
            break
        frame = frame.f_back
    return kind, compute, None


def _as_sources(xs: tuple[Any, ...], compute: FrameType | None) -> tuple[Any, ...]:
    """The sources as the user passed them: an optimizer's ``var_list`` holds the variables.

    ``compute_gradients`` passes TensorFlow a ref tensor for each ``RefVariable`` of its
    ``var_list`` (``_RefVariableProcessor.target``); the user passed the variable.
    """
    var_list = compute.f_locals.get("var_list") if compute is not None else None
    if isinstance(var_list, (list, tuple)) and len(var_list) == len(xs):
        return tuple(var_list)
    return xs


def _default_var_list(graph: Any, sources: tuple[Any, ...]) -> bool:
    """Whether ``sources`` is the list an optimizer takes when given no ``var_list``."""
    from tensorflow.python.framework import ops

    default = graph.get_collection(ops.GraphKeys.TRAINABLE_VARIABLES) + graph.get_collection(
        ops.GraphKeys.TRAINABLE_RESOURCE_VARIABLES
    )
    return [id(v) for v in default] == [id(v) for v in sources]


def user_frames() -> list[FrameType]:
    frames = []
    frame: FrameType | None = sys._getframe(1)  # noqa: SLF001
    while frame is not None:
        if not is_library_file(frame.f_code.co_filename):
            frames.append(frame)
        frame = frame.f_back
    return frames


def python_names(frames: Iterable[FrameType]) -> tuple[dict[int, str], list[Any]]:
    """``id(obj) -> name`` for the graph objects (variables, tensors) the frames' code binds to names.

    The innermost frame's locals come first, then its globals, then the outer frames', then
    ``__main__``'s globals. An object no plain name binds is named as the script reaches it: by a
    dict entry (``weights['h1']``), else by an attribute of one of the script's own objects
    (``self.loss`` of a class-based model). The objects are returned too: an id means nothing once
    its object is gone.
    """
    import tensorflow as tf

    scopes: list[dict[str, Any]] = []
    for frame in frames:
        scopes += [frame.f_locals, frame.f_globals]
    main = sys.modules.get("__main__")
    if main is not None:
        scopes.append(vars(main))
    graph_types = (tf.Variable, tf.Tensor)
    names: dict[int, str] = {}
    keep: list[Any] = []
    for members in (_plain, _dict_entries, _attributes):
        for scope in scopes:
            for name, value in members(scope):
                if id(value) not in names and isinstance(value, graph_types):
                    names[id(value)] = name
                    keep.append(value)
    return names, keep


def _plain(scope: dict[str, Any]) -> Iterable[tuple[str, Any]]:
    return [(name, value) for name, value in list(scope.items()) if not name.startswith("_")]


def _dict_entries(scope: dict[str, Any]) -> Iterable[tuple[str, Any]]:
    """``weights['h1']``: the entries of the scope's dicts (TF1 code keeps weights = {'h1': tf.Variable(...)})."""
    for name, value in _plain(scope):
        if type(value) is dict:
            yield from ((f"{name}[{key!r}]", entry) for key, entry in list(value.items()) if isinstance(key, str))


def _attributes(scope: dict[str, Any]) -> Iterable[tuple[str, Any]]:
    """``self.loss``: the attributes of the scope's instances of classes the script defines (its own
    ``self._loss`` too, as a DQN class keeps it; not the ``__dunder__`` ones)."""
    for name, value in _plain(scope):
        module = sys.modules.get(type(value).__module__)
        path = getattr(module, "__file__", None)
        if path is None or is_library_file(path) or not isinstance(getattr(value, "__dict__", None), dict):
            continue
        yield from ((f"{name}.{attr}", entry) for attr, entry in list(vars(value).items()) if not attr.startswith("__"))




