"""Where the user's code takes a tensor's value out of TensorFlow during an eager call.

``float(t)``, ``t.numpy()``, ``np.mean(t)``, ``np.array(variable)`` and a Python condition on a
tensor are invisible to a traced graph (or cannot be traced at all); :func:`record_exits` hears them
as they happen, at the user's line, so that a verdict only the eager call gives can say why. NumPy
reads a tensor's buffer directly: a NumPy function is heard through its ``__array_function__``
protocol, a ufunc (``np.square(t)``) and ``np.array(t)`` of a tensor not at all.
"""

from __future__ import annotations

import contextlib
import re
import sys
import traceback
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from tensorflow.python.framework import ops

from flowcheck.source.lines import SourceLine, is_library_file, user_frame

__all__ = ["Exit", "record_assigns", "record_exits"]

# A variable's methods that take a value into it: reading the variable later carries no gradient to the value.
_ASSIGNS: Final = ("assign", "assign_add", "assign_sub")

# The conversions by which a value leaves TensorFlow, as the user wrote them.
_EXITS = {"__float__": "float()", "__int__": "int()", "__index__": "int()", "numpy": ".numpy()",
          "item": ".item()", "__bool__": "a Python condition", "__array__": "a NumPy call"}

# A NumPy function as the user's line calls it (``np.mean(t)``: NumPy's ``__array_function__`` protocol).
_NUMPY_CALL = re.compile(r"\b(?:np|numpy)\.[A-Za-z_][\w.]*(?=\s*\()")
# Python builtins that compare tensors (``max(a, b)`` asks ``bool(a > b)``): they keep one of them.
_PYTHON_CHOICE = re.compile(r"(?<![\w.])(max|min|sorted)\s*\(")


@dataclass(frozen=True)
class Exit:
    """Where the user's code took a tensor's value out of TensorFlow during the eager call."""

    what: str
    source: SourceLine
    tensor: int = 0  # id of the eager tensor converted (a target printed is no cut)
    variable: int = 0  # for an assignment, id of the tf.Variable assigned

    def __str__(self) -> str:
        line = self.source.line
        if self.what == "a Python condition":
            choice = _PYTHON_CHOICE.search(self.source.code)
            if choice:  # no branch in sight: a builtin compared the tensors and kept what it chose
                return f"`{choice.group(1)}()` at line {line} compares tensors in Python: only what it keeps is differentiated"
            return f"the Python condition at line {line} runs only the branch taken"
        if self.assigned:
            return f"`{self.what}` at line {line} puts a value the tape records into a variable"
        if self.what == "a NumPy call":
            call = _NUMPY_CALL.search(self.source.code)
            return f"`{call.group(0)}()` at line {line} leaves TensorFlow" if call else f"a NumPy call at line {line} leaves TensorFlow"
        return f"`{self.what}` at line {line} leaves TensorFlow"

    @property
    def assigned(self) -> bool:
        """True when the user's line assigned the value to a variable (``v.assign(t)``), not converted it."""
        return self.what.removeprefix(".").removesuffix("()") in _ASSIGNS

    @property
    def left_tensorflow(self) -> bool:
        """True when the value left TensorFlow (a NumPy or Python number), not only chose a branch."""
        return self.what != "a Python condition"


@contextlib.contextmanager
def record_exits(
    exits: list[Exit], only: Callable[[Any], bool] | None = None, conditions: Callable[[Any], bool] | None = None,
) -> Iterator[None]:
    """Record the user's lines that convert an eager tensor (one ``only`` accepts, if given) to a Python or NumPy
    value; a Python condition on one, where ``conditions`` accepts it (``x > 0.0`` is a boolean no tape records)."""
    base = ops._EagerTensorBase  # noqa: SLF001 -- the Python class behind every eager tensor
    originals = {name: base.__dict__[name] for name in _EXITS if name in base.__dict__}

    def heard(tensor: Any, frame: Any, name: str) -> None:
        test = conditions if name == "__bool__" and conditions is not None else only
        if test is not None and not test(tensor):
            return
        # ``float(variable)`` reaches the tensor's ``.numpy()`` through the variable's ``__float__``: the
        # user's frame is the one above, and it asked for ``float()``.
        caller, asked = _asking_caller(frame, name, _EXIT_NAMES, _EXITS)
        where = _user_line(caller)
        if where is not None:
            exits.append(Exit(_EXITS.get(asked, _EXITS[name]), where, id(tensor)))

    def wrap(name: str, method: Any) -> Any:
        def recorded(self: Any, *a: Any, **k: Any) -> Any:
            heard(self, sys._getframe(1), name)  # noqa: SLF001
            return method(self, *a, **k)

        return recorded

    def array_function(self: Any, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        # ``np.mean(t)`` reads the tensor through its buffer, never its ``__array__``; NumPy asks
        # this first, and the function then runs exactly as it would have (its implementation).
        heard(self, sys._getframe(1), "__array__")  # noqa: SLF001
        return func._implementation(*args, **kwargs)  # noqa: SLF001

    for name, method in originals.items():
        setattr(base, name, wrap(name, method))
    dispatching = "__array_function__" not in base.__dict__ and hasattr(np.mean, "_implementation")
    if dispatching:
        base.__array_function__ = array_function
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(base, name, method)
        if dispatching:
            del base.__array_function__


@contextlib.contextmanager
def record_assigns(exits: list[Exit], only: Callable[[Any], bool]) -> Iterator[None]:
    """Record the user's lines that assign a value ``only`` accepts (one a tape records) to a variable.

    Reading the variable afterwards carries no gradient back to the value (MAML's fast weights
    assigned into a clone model). Only assignments the user's line makes count: a Keras layer's
    own (BatchNormalization's statistics) are its business.
    """
    from tensorflow.python.ops import resource_variable_ops

    # ResourceVariable holds its own (weak-tensor) wrappers of BaseResourceVariable's methods.
    classes = (resource_variable_ops.BaseResourceVariable, resource_variable_ops.ResourceVariable)
    originals = {(cls, name): cls.__dict__[name] for cls in classes for name in _ASSIGNS if name in cls.__dict__}

    def wrap(name: str, method: Any) -> Any:
        # (named for flowcheck.source.lines.PASSES_THROUGH: the op a traced assign makes keeps the user's line)
        def passes_through(self: Any, *a: Any, **k: Any) -> Any:
            value = a[0] if a else k.get("value", k.get("delta"))  # (assign_add's is called delta)
            frame = sys._getframe(1)  # noqa: SLF001
            result = method(self, *a, **k)
            # A variable as the value (``x1.assign_add(x0)``, the autodiff guide's case) is watched as the
            # assign reads it: asked afterwards, through its handle, what the tape watches.
            recorded = value.handle if isinstance(value, classes[0]) else value
            if isinstance(recorded, ops._EagerTensorBase) and only(recorded):  # noqa: SLF001
                # past a Keras variable's own ``assign``
                caller, caller_name = _asking_caller(frame, name, _ASSIGN_NAMES, _ASSIGNS)
                where = _user_line(caller)
                if where is not None:
                    exits.append(Exit(f".{caller_name}()", where, id(value), id(self)))
            return result

        return passes_through

    for (cls, name), method in originals.items():
        setattr(cls, name, wrap(name, method))
    try:
        yield
    finally:
        for (cls, name), method in originals.items():
            setattr(cls, name, method)


_ASSIGN_NAMES = frozenset(_ASSIGNS) | {"_direct_assign"}
_EXIT_NAMES = frozenset(_EXITS) | {"__array__", "_dense_var_to_tensor", "value", "read_value"}


def _asking_caller(frame: Any, name: str, through: frozenset[str], asked: Collection[str]) -> tuple[Any, str]:
    """The frame that asked for ``name``, past the library's own methods named in ``through`` (a variable's
    conversion or assign methods), and what it asked: the last of ``asked`` passed on the way. Any other
    library frame (``tf.cond`` reading its predicate) is not the user's."""
    while frame is not None and frame.f_code.co_name in through and is_library_file(frame.f_code.co_filename):
        name = frame.f_code.co_name if frame.f_code.co_name in asked else name
        frame = frame.f_back
    return frame, name


def _user_line(caller: Any) -> SourceLine | None:
    """The user's line ``caller`` (a frame) runs, or None for a library frame."""
    if caller is None or is_library_file(caller.f_code.co_filename):
        return None
    return user_frame(traceback.extract_stack(caller, limit=1))[0]
