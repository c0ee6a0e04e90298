"""The one line that says why tracing the user's function failed, in the user's terms."""

from __future__ import annotations

import re
import traceback
from typing import Any

from flowcheck.source.exceptions import without_ansi
from flowcheck.source.lines import SourceLine, user_frame

__all__ = ["trace_failure"]


def trace_failure(exc: BaseException, name: str) -> str:
    """``tracing NAME raised TYPE at FILE:LINE (code): message``, without TensorFlow's advice after it."""
    frames: list[Any] = list(traceback.extract_tb(exc.__traceback__))
    message = str(exc)
    metadata = getattr(exc, "ag_error_metadata", None)  # AutoGraph's map back to the user's code
    if metadata is not None:
        frames = [
            traceback.FrameSummary(f.filename, f.lineno, f.function_name, line=f.code)
            for f in reversed(metadata.translated_stack)
        ] or frames
        message = str(metadata.cause_message)
    where, _ = user_frame(frames)
    lines = [line.strip() for line in without_ansi(message).splitlines() if line.strip()]
    first = lines[0].removeprefix(f"{type(exc).__name__}: ") if lines else ""  # AutoGraph repeats the type
    if first.startswith("Exception encountered when calling") and len(lines) > 1:
        # Keras wraps a layer's error; its own message is the next line.
        first = f"{lines[1]} ({first.removeprefix('Exception encountered when calling ').rstrip('.')})"
    at = f" at {where} ({where.code})" if isinstance(where, SourceLine) and where.code else (
        f" at {where}" if where else ""
    )
    return f"tracing {name} raised {type(exc).__name__}{at}: {_first_sentence(first)}"


# TensorFlow's messages go on with advice about graph mode and AutoGraph after their first
# sentence ("Using a symbolic `tf.Tensor` as a Python `bool` is not allowed. You can attempt the
# following resolutions ..."): for a plain callable flowcheck's own advice follows instead.
_TF_ADVICE = re.compile(r"(?<=\.) (?=(?:You can attempt|This error may indicate|Make sure|See https?:|If you))")


def _first_sentence(message: str) -> str:
    first = _TF_ADVICE.split(message, maxsplit=1)[0]
    return first.removesuffix(".") if first != message else message
