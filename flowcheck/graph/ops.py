"""What TensorFlow's autodiff does at one op: the single place that knows about ops.

Every answer is asked of TensorFlow itself where it can answer:

* whether a tensor's dtype can carry a gradient is ``backprop_util.IsTrainable`` (the check
  TensorFlow's own gradient code uses; for a resource handle it reads the variable's dtype);
* whether an op passes a gradient to input ``j`` is found by calling the op's registered gradient
  function (``ops.get_gradient_function``, which honours ``tf.custom_gradient`` and
  ``gradient_override_map``) in a scratch ``FuncGraph`` on placeholder output gradients and seeing
  which input gradients come back ``None`` -- exactly how ``gradients_util._GradientsHelper``
  (tensorflow/python/ops/gradients_util.py) calls it, with the output gradients it would pass.

Only the ops that hold functions (calls, ``If``/``Case`` branches, ``While`` bodies) are not asked:
their gradient functions rewrite the op they are called on, so ``flowcheck.graph.build`` follows their
bodies instead. The op types are listed in :data:`FUNCTION_OPS`; an op whose type is itself the name
of a library function (a direct call, as in legacy ``Defun`` bodies) is followed the same way.
"""

from __future__ import annotations

import inspect
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import tensorflow as tf
from tensorflow.python.eager import backprop_util
from tensorflow.python.framework import func_graph as func_graph_module
from tensorflow.python.framework import ops
from tensorflow.python.ops import array_ops

from flowcheck._model import BarrierKind
from flowcheck._phrases import NO_REGISTERED_GRADIENT
from flowcheck.graph import kept

# Op types whose gradient is the gradient of function bodies held in their attributes. Mirrors
# tensorflow/python/ops/cond_v2.py (_IfGrad, _CaseGrad), while_v2.py (_WhileGrad) and
# eager/polymorphic_function/concrete_function.py (_rewrite_forward_and_call_backward).
CALL_OPS: Final = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
IF_OPS: Final = frozenset({"If", "StatelessIf"})
CASE_OPS: Final = frozenset({"Case", "StatelessCase"})
WHILE_OPS: Final = frozenset({"While", "StatelessWhile"})
FUNCTION_OPS: Final = CALL_OPS | IF_OPS | CASE_OPS | WHILE_OPS
# Writes to a variable. They have no registered gradient, yet TensorFlow never raises at one: no
# gradient reaches an op without outputs. A read after one is differentiated with respect to the
# variable, not to the value written (flowcheck.graph.build links each to the reads that follow it).
# Sliced and scattered writes (``v[0].assign``, ``v.scatter_update``, ``v.scatter_nd_add``) are writes too.
ASSIGN_OPS: Final = frozenset({
    "AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp", "ResourceStridedSliceAssign",
    *(f"ResourceScatter{how}" for how in ("Update", "Add", "Sub", "Mul", "Div", "Min", "Max")),
    *(f"ResourceScatterNd{how}" for how in ("Update", "Add", "Sub", "Min", "Max")),
})
ASSIGN_DETAIL: Final = "a value assigned to a variable carries no gradient to later reads of it"


@dataclass(frozen=True)
class InputGradient:
    """Whether the gradient of one op reaches one of its inputs.

    Attributes:
        carries: True when TensorFlow's autodiff gives this input a gradient (zeros count).
        kind: Why it does not, when ``carries`` is False.
        detail: A short human explanation of ``kind`` for this op.
    """

    carries: bool
    kind: BarrierKind | None = None
    detail: str = ""


CARRIES: Final = InputGradient(True)


def is_trainable(tensor: Any) -> bool:
    """Whether TensorFlow lets a gradient flow through ``tensor`` (float, complex, ...): a tensor or a dtype.

    As ``backprop_util.IsTrainable``, which TensorFlow's gradient code asks of each tensor: a
    variant (a TensorList) is trainable unless its handle data says its elements are not.
    """
    dtype = getattr(tensor, "dtype", tensor)
    if dtype is _VARIANT and dtype is not tensor:
        return bool(backprop_util.IsTrainable(tensor))
    found = _TRAINABLE_DTYPES.get(dtype)
    if found is None:
        found = _TRAINABLE_DTYPES[dtype] = bool(backprop_util.IsTrainable(dtype))
    return found


# IsTrainable's answer for a dtype (every analysis asks it for every tensor). DTypes are interned,
# so identity compares them (``==`` is a Python call, once per tensor). IsTrainable looks past the
# dtype only for a variant (its handle data); a resource handle is trainable whatever its
# variable's dtype (an integer variable is cut where it is read: ``_read_barrier``).
_TRAINABLE_DTYPES: dict[Any, bool] = {}
_RESOURCE: Final = tf.resource
_VARIANT: Final = tf.variant


def dtype_barrier(tensor: Any) -> InputGradient:
    """The barrier a non-differentiable dtype makes."""
    name = _dtype_name(tensor)
    return InputGradient(False, BarrierKind.DTYPE, f"{name} tensors carry no gradient")


def _dtype_name(tensor: Any) -> str:
    handle = getattr(tensor, "_handle_data", None) if tensor.dtype == tf.resource else None  # the variable's own dtype
    if handle is not None and handle.shape_and_type:
        return f"a {tf.dtypes.as_dtype(handle.shape_and_type[0].dtype).name} variable's"
    return str(tensor.dtype.name)


# Probing a gradient function builds ops in a scratch graph (milliseconds each): for small models
# that is most of the analysis. Bounded, so that a long session cannot grow it without end.
_SHARED: dict[tuple[Any, ...], tuple[InputGradient, ...]] = {}
_SHARED_MAX: Final = 4096
# The same answers kept between runs (flowcheck.graph.kept): read on the first probe, written by save_kept().
_KEPT: dict[str, list[tuple[bool, str | None, str]]] | None = None
_NEW: dict[str, list[tuple[bool, str | None, str]]] = {}


class GradientOracle:
    """Answers, per op, which inputs its registered gradient function reaches.

    Answers are cached per op signature (gradient type, input and output dtypes) for the life of
    the oracle; create one per analysis so that a changed registry is seen next time. The answers
    of TensorFlow's registered gradient functions are also shared between oracles, keyed by the
    function object itself, so a gradient registered later is still probed afresh.
    """

    def __init__(self) -> None:
        self._answers: dict[tuple[Any, ...], tuple[InputGradient, ...]] = {}
        self._scratch: Any = None
        self.uncertain: list[tuple[str, str]] = []  # (op name, what could not be asked)

    def inputs(self, op: Any) -> tuple[InputGradient, ...]:
        """Per input of ``op`` (not a function op), whether a gradient reaches it."""
        return self.answers(op, op.type, op.inputs)

    def answers(self, op: Any, op_type: str, inputs: Any, grad_type: str | None = None) -> tuple[InputGradient, ...]:
        """:meth:`inputs`, given the op's type and inputs (``op.type``, ``op.inputs``) read already.

        ``grad_type`` asks the registry's entry of that name instead of the op's own gradient type.
        """
        if not inputs:
            return ()
        outputs = op.outputs
        # The answer is a function of this signature alone (each part is asked of TensorFlow once
        # per signature): ops of a model share a few hundred, so most ops cost a dict lookup.
        key = (
            grad_type or gradient_type(op, op_type),
            op_type,
            tuple([t.dtype for t in inputs]),
            tuple([t.dtype for t in outputs]),
            tuple([bool(t.consumers()) for t in outputs]) if op_type == "IdentityN" else _deciding(op, op_type),
        )
        found = self._answers.get(key)
        if found is None:
            found = self._answers[key] = self._answer(op, key)
        return found

    def tape_answers(self, op: Any, op_type: str, inputs: Any) -> tuple[InputGradient, ...] | None:
        """What a ``GradientTape`` recording inside the function gets at ``op``, when not :meth:`answers`.

        A tape looks the op's own type up in the registry (``backprop._gradient_function``), so a
        ``gradient_override_map`` reaches ``tf.gradients`` and a tape around the call, not a tape
        in the function (a ``tf.custom_gradient`` records its function on the tape: it reaches all).
        """
        grad_type = gradient_type(op, op_type)
        if grad_type == op_type or grad_type.startswith("CustomGradient") or not inputs:
            return None
        ignored = f"a GradientTape in the function ignores gradient_override_map ({grad_type!r}): "
        return tuple(
            info if info.carries else InputGradient(False, info.kind, ignored + info.detail)
            for info in self.answers(op, op_type, inputs, grad_type=op_type)
        )

    def _answer(self, op: Any, signature: tuple[Any, ...]) -> tuple[InputGradient, ...]:
        found = self._ask(op, signature)
        inputs, outputs = op.inputs, op.outputs
        # TensorFlow counts every resource handle as trainable; an integer variable is cut where it
        # is read, because its values (the read's outputs) carry no gradient.
        untrainable_read = bool(outputs) and not any(is_trainable(t) for t in outputs)
        # An integer or boolean input is cut by its dtype whatever the op: say that, not "None".
        return tuple(
            _read_barrier(op) if untrainable_read and tensor.dtype is _RESOURCE
            else answer if is_trainable(tensor) else dtype_barrier(tensor)
            for answer, tensor in zip(found, inputs)
        )

    def _ask(self, op: Any, signature: tuple[Any, ...]) -> tuple[InputGradient, ...]:
        n = len(op.inputs)
        grad_type = signature[0]
        if op.type in ASSIGN_OPS:
            return (InputGradient(False, BarrierKind.ASSIGN, ASSIGN_DETAIL),) * n
        try:
            grad_fn = _gradient_function(op, grad_type)
        except LookupError:
            if op.outputs and not any(is_trainable(out) for out in op.outputs):
                return _untrainable_outputs(op)  # tf.searchsorted's indices: no gradient ever reaches it
            detail = f"{op.type} {NO_REGISTERED_GRADIENT}; TensorFlow raises if it is reached"
            return (InputGradient(False, BarrierKind.NO_GRADIENT, detail),) * n
        if grad_fn is None:
            if op.type == "StopGradient":
                return (InputGradient(False, BarrierKind.STOP_GRADIENT, "tf.stop_gradient"),) * n
            detail = f"{op.type} is registered as not differentiable"
            return (InputGradient(False, BarrierKind.NOT_DIFFERENTIABLE, detail),) * n
        # Custom gradients live under one-off names: a user's are never shared (nor kept alive);
        # TensorFlow's and Keras's own (swish, ...) are shared by their code and plain settings.
        shared_key = (signature, grad_fn) if grad_type == op.type else kept.library_key(signature, grad_fn)
        if shared_key is not None and shared_key in _SHARED:
            return _SHARED[shared_key]
        kept_key = _kept_key(shared_key, grad_fn, n)
        if shared_key is not None and kept_key is not None and kept_key in _kept():
            answer = tuple(InputGradient(c, None if k is None else BarrierKind(k), d) for c, k, d in _kept()[kept_key])
            _SHARED[shared_key] = answer
            return answer
        try:
            grads = self._call_as_tape(grad_fn, op)
        except LookupError as exc:  # e.g. PreventGradient's explicit refusal
            detail = f"{op.type}: {exc}".strip()
            return (InputGradient(False, BarrierKind.NO_GRADIENT, detail),) * n
        except Exception as exc:  # noqa: BLE001 -- a gradient function we cannot probe
            if _refuses(exc, grad_fn):  # as it will when TensorFlow differentiates this op
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                detail = f"the registered gradient of {_describe(op)} raises {type(exc).__name__}: {first}".strip()
                return (InputGradient(False, BarrierKind.NO_GRADIENT, detail),) * n
            if op.outputs and not any(is_trainable(out) for out in op.outputs):
                return _untrainable_outputs(op)
            # Assume the gradient flows (the cautious answer for "does it train") and say so.
            self.uncertain.append((op.name, f"{op.type} ({op.name}): {type(exc).__name__}: {exc}"))
            return (CARRIES,) * n
        if len(grads) < n:
            grads = grads + [None] * (n - len(grads))
        custom = grad_type != op.type and str(grad_type).startswith("CustomGradient")
        answer = tuple(
            CARRIES if g is not None else _none_barrier(op, j, custom, grad_type) for j, g in enumerate(grads[:n])
        )
        if shared_key is not None and len(_SHARED) < _SHARED_MAX:
            _SHARED[shared_key] = answer
            if kept_key is not None:
                _NEW[kept_key] = [(a.carries, None if a.kind is None else a.kind.value, a.detail) for a in answer]
        return answer

    def _call_as_tape(self, grad_fn: Callable[..., Any], op: Any) -> list[Any]:
        """The gradient function's answer; asked again as a tape asks it (zeros for every unused output) where
        None for an integer output breaks it (OptionalGetValue's of an (image, label) batch)."""
        try:
            return self._call(grad_fn, op)
        except (TypeError, ValueError):
            if all(is_trainable(out) or out.dtype == tf.resource for out in op.outputs):
                raise
        return self._call(grad_fn, op, every=True)

    def _call(self, grad_fn: Callable[..., Any], op: Any, every: bool = False) -> list[Any]:
        if self._scratch is None:
            self._scratch = func_graph_module.FuncGraph("flowcheck_gradient_probe")
        with self._scratch.as_default(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # _GradientsHelper passes zeros for trainable outputs nobody used, None for the rest.
            # An op with no trainable output (a Cast to int32) is reached only by a gradient of its
            # own dtype, so it is asked with one: its answer names the real culprit.
            any_trainable = any(is_trainable(out) for out in op.outputs)
            out_grads = [
                array_ops.placeholder(out.dtype, out.shape)
                if is_trainable(out) or ((every or not any_trainable) and out.dtype != tf.resource) else None
                for out in op.outputs
            ]
            result = grad_fn(op, *out_grads)
        if not isinstance(result, (list, tuple)):
            result = [result]
        return list(result)


# Ops whose gradient function refuses (raises) for some settings or static shapes only
# (tensorflow/python/ops/linalg_grad.py: _MatrixSolveLsGrad for fast=False, _QrGrad and _SvdGrad
# for full matrices of some shapes): their answer is asked per those attributes and shapes.
_DECIDING_ATTRS: Final = {"MatrixSolveLs": ("fast",), "Qr": ("full_matrices",), "Svd": ("compute_uv", "full_matrices")}


def _deciding(op: Any, op_type: str) -> tuple[Any, ...]:
    """The attributes and input shapes that decide whether ``op``'s gradient function raises, for its key."""
    names = _DECIDING_ATTRS.get(op_type)
    if names is None:
        return ()
    shapes = tuple(tuple(t.shape.as_list()) if t.shape.rank is not None else None for t in op.inputs)
    return (*(bool(op.get_attr(a)) for a in names), shapes)


def _refuses(exc: Exception, grad_fn: Any) -> bool:
    """Whether the gradient function itself raised ``exc`` on purpose (not an op it built, nor the probe).

    ``NotImplementedError`` and a ``ValueError`` raised by the gradient function's own code (QR or SVD
    of full matrices, least squares with ``fast=False``) are refusals TensorFlow makes whenever the
    op is differentiated: the tape raises the same.
    """
    if not isinstance(exc, (NotImplementedError, ValueError)):
        return False
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    code = getattr(inspect.unwrap(grad_fn), "__code__", None)
    return tb is not None and code is not None and tb.tb_frame.f_code is code


def _kept() -> dict[str, list[tuple[bool, str | None, str]]]:
    global _KEPT  # noqa: PLW0603 -- read once per process
    if _KEPT is None:
        _KEPT = kept.load()
    return _KEPT


def _kept_key(shared_key: tuple[Any, ...] | None, grad_fn: Any, inputs: int) -> str | None:
    """The key an answer is kept under between runs, or None when it must not be kept.

    A registered gradient function is kept by its code when it is a plain function of an installed
    package (no closure); a library custom gradient by its :func:`flowcheck.graph.kept.library_key`, code included.
    """
    if shared_key is None:
        return None
    try:
        if shared_key[0] == "library custom gradient":
            return json.dumps([inputs, kept.describe(shared_key)])
        code = getattr(grad_fn, "__code__", None)
        if code is None or grad_fn.__closure__ or not kept.installed(code.co_filename):
            return None
        return json.dumps([inputs, "registered", kept.code_key(code), kept.describe(shared_key[0])])
    except TypeError:  # a part that has no text of its own: not kept
        return None


def save_kept() -> None:
    """Keep the answers probed since the last call for the next runs (:mod:`flowcheck.graph.kept`)."""
    if _NEW:
        kept.save(_NEW)
        _kept().update(_NEW)
        _NEW.clear()


def _untrainable_outputs(op: Any) -> tuple[InputGradient, ...]:
    """Every input of an op whose outputs are all integers (or booleans): no gradient can reach it."""
    dtypes = "/".join(sorted({out.dtype.name for out in op.outputs}))
    return (InputGradient(False, BarrierKind.DTYPE, f"its {dtypes} outputs carry no gradient"),) * len(op.inputs)


def _read_barrier(op: Any) -> InputGradient:
    dtype = op.outputs[0].dtype.name
    return InputGradient(False, BarrierKind.DTYPE, f"{dtype} variables carry no gradient")


def _none_barrier(op: Any, index: int, custom: bool, override: str) -> InputGradient:
    if custom:
        if index < len(op.outputs) and op.outputs[index].consumers():
            return InputGradient(
                False,
                BarrierKind.CUSTOM_GRADIENT,
                "inside a tf.custom_gradient function: only its grad_fn's results flow back",
            )
        return InputGradient(False, BarrierKind.CUSTOM_GRADIENT_NONE, "the custom gradient returned None")
    if override != op.type:  # graph.gradient_override_map (a TF1 straight-through estimator's map)
        return InputGradient(
            False, BarrierKind.NONE_GRADIENT,
            f"the gradient {override!r} that gradient_override_map sets for {_describe(op)} returns None here",
        )
    return InputGradient(
        False, BarrierKind.NONE_GRADIENT, f"the registered gradient of {_describe(op)} returns None here"
    )


def _describe(op: Any) -> str:
    if op.type == "Cast":
        return f"Cast to {op.outputs[0].dtype.name}"
    return str(op.type)


def _gradient_function(op: Any, grad_type: str) -> Any:
    """``ops.get_gradient_function(op)`` (for an op with inputs), its gradient type read already.

    TensorFlow's own asks ``op.get_attr("_gradient_op_type")``, which raises and catches a C++ error
    for most ops; the rest is the same: an override on the op, else the registry's entry.
    """
    found = op._gradient_function  # noqa: SLF001 -- as get_gradient_function reads it
    if found:
        return found
    return ops.gradient_registry.lookup(grad_type)


def gradient_type(op: Any, op_type: str) -> str:
    # Most ops lack the attribute; asking get_attr for it costs a raised and caught C++ error, and
    # parsing the op's NodeDef a few microseconds. Its serialized form holds the attribute's name
    # verbatim when the attribute is there (a name or a value may hold those bytes too: then the
    # attribute is asked for).
    if b"_gradient_op_type" not in op._node_def:  # noqa: SLF001 -- the NodeDef's bytes, unparsed
        return op_type
    try:
        found = op.get_attr("_gradient_op_type")
    except (ValueError, TypeError):
        return op_type
    # The attribute is a bytes string (b"CustomGradient-16"); the registry key is its text.
    return found.decode() if isinstance(found, bytes) else str(found)
