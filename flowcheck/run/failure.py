"""An exception of the user's script in one line: its type, the user's line, the real message.

TensorFlow's "in user code:" wrapper (a traced function that raised) is unwrapped to the error inside it.
"""

from __future__ import annotations

import os
import re
import traceback

from flowcheck.source.lines import SourceLine, is_library_file, user_frame

__all__ = ["describe_exception", "first_line"]

_FUNCTION_NODE = re.compile(r"^\{\{function_node [^}]*\}\}\s*")  # TensorFlow's eager op errors
_USER_CODE = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)')


def describe_exception(exc: BaseException, script: str | None) -> str:
    """``"<Type> at <file:line> (<code>): <message>"``, TensorFlow's "in user code:" unwrapped."""
    text = str(exc).strip()
    where: SourceLine | None = None
    if text.startswith("in user code:"):
        where, text = _unwrap_user_code(text)
    if where is None:
        frames = traceback.extract_tb(exc.__traceback__)
        in_script = [f for f in frames if script is not None and os.path.abspath(f.filename) == script]
        if in_script:
            f = in_script[-1]
            where = SourceLine(f.filename, int(f.lineno or 0), f.name, (f.line or "").strip())
        else:
            where = user_frame(frames)[0]
    at = f" at {where}" + (f" ({where.code})" if where.code else "") if where else ""
    message = _FUNCTION_NODE.sub("", first_line(text))
    return f"{type(exc).__name__}{at}" + (f": {message}" if message else "")


_GRAPH_ERROR = "Graph execution error:"
_NOT_THE_MESSAGE = ("Detected at node", "File ", "Node:", "[[", "(most recent call last)")


def first_line(text: str) -> str:
    """The message of an error's text in one line; under a Session's "Graph execution error:", the real one.

    TensorFlow puts the op's creation stack ("Detected at node ... File ... Node: 'x'") between the
    header and the message ("You must feed a value for placeholder tensor ...").
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0] == _GRAPH_ERROR:
        nodes = [i for i, line in enumerate(lines) if line.startswith("Node:")]
        rest = [line for line in lines[(nodes[-1] if nodes else 0) + 1:] if not line.startswith(_NOT_THE_MESSAGE)]
        lines = rest or lines
    return " ".join(lines[0].split())


def _unwrap_user_code(text: str) -> tuple[SourceLine | None, str]:
    """The user's innermost line and the real message inside TensorFlow's "in user code:" text."""
    lines = text.splitlines()
    where: SourceLine | None = None
    last = 0
    for i, line in enumerate(lines):
        match = _USER_CODE.match(line)
        if match is None:
            continue
        last = i + 1
        file = match["file"]
        if not is_library_file(file):
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            where = SourceLine(file, int(match["line"]), match["function"], code)
    rest = [line.strip() for line in lines[last + 1:] if line.strip()]
    message = rest[0] if rest else text
    # "ValueError: msg": the wrapper's type is the real one; keep only the message.
    return where, message.split(": ", 1)[1] if re.match(r"^\w+(Error|Exception|Warning): ", message) else message
