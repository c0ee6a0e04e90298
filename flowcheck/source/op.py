"""The user's line (and column) of an op: its traceback, refined by the recorded positions and the call on the line."""

from __future__ import annotations

import linecache
import os
from typing import Any

from flowcheck.source.callsite import guess_call
from flowcheck.source.lines import PASSES_THROUGH, SourceLine, is_own_file, through_keras, user_frame_within
from flowcheck.source.positions import op_position

__all__ = ["op_source"]


def op_source(op: Any) -> tuple[SourceLine | None, bool]:
    """The user's line that created ``op`` (a ``tf.Operation``), read from its traceback.

    Where flowcheck recorded the instruction that made the op (``flowcheck.source.positions``), the
    line is that of the op's own call and the column is known, also inside a multi-line
    statement under AutoGraph (whose traceback gives the statement's line). An op whose
    innermost user frame called into flowcheck has no line of its own (None).
    """
    try:
        frames = list(op.traceback)
    except Exception:  # noqa: BLE001 -- ops rebuilt from a FunctionDef have no traceback
        return None, True
    line, inner = user_frame_within(frames)
    if line is None or any(is_own_file(f.filename) and f.name != PASSES_THROUGH for f in inner):
        # Made below flowcheck's own call (a built-in layer of a functional model, which runs its
        # layers with no user frame): that line called flowcheck (``analyze``, ``fit`` with the
        # callback), it made no op. No line rather than one pointing at the wrong statement.
        return None, True
    via_library = through_keras(inner)
    exact = op_position(op)
    if exact is None and not via_library:
        exact = guess_call(line, [str(f.name) for f in inner])
    if exact is None or os.path.abspath(exact[0]) != os.path.abspath(line.file):
        return line, via_library  # not known, or recorded for another frame
    file, number, column = exact
    code = line.code if number == line.line else linecache.getline(file, number).strip()
    return SourceLine(line.file, number, line.function, code, column), via_library
