"""An exception of the user's script in one line: its type, the user's line, the real message.

TensorFlow's "in user code:" wrapper (a traced function that raised) is unwrapped to the error inside it.
"""

from __future__ import annotations

import contextlib
import io
import linecache
import os
import re
import sys
import traceback

from flowcheck.source.lines import SourceLine, is_library_file, user_frame

__all__ = ["describe_exception", "exception_line", "first_line", "op_message", "without_ansi"]

_FUNCTION_NODE = re.compile(r"^\{\{function_node [^}]*\}\}\s*")  # TensorFlow's eager op errors
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Keras's bold and colours
_KERAS_CALL = re.compile(r"^(\w+(Error|Exception): )?Exception encountered when calling ")  # Keras's layer-call wrapper
_NODE = re.compile(r"\s*(\[\[\{\{node .*|\[Op:[^\]]*\]\s*)$", re.S)  # the node and function, said again
_GRAPH_ERROR = "Graph execution error:"  # a kernel failed in a graph (a Session's run, a tf.function's)
_USER_CODE = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)')
# An eager op's error ends with the op said again: "... [Op:MatMul] name: ".
_OP = re.compile(r"\s*\[Op:[^\]]*\](?:\s*name:\s*\S*)?\s*$")


def op_message(message: str) -> str:
    """An eager op's error message without the kernel's function name before it and the op's after it.

    "{{function_node __wrapped__MatMul_...}} Matrix size-incompatible: ... [Op:MatMul] name: "
    """
    return _OP.sub("", _FUNCTION_NODE.sub("", message))


def without_ansi(text: str) -> str:
    """``text`` without the terminal's bold and colours (Keras adds them to its messages)."""
    return _ANSI.sub("", text)


def describe_exception(exc: BaseException, script: str | None) -> str:
    """``"<Type> at <file:line> (<code>): <message>"``, TensorFlow's "in user code:" and "Graph execution error:" unwrapped."""
    text = _suggested(exc, str(exc).strip())
    where: SourceLine | None = None
    if text.startswith("in user code:"):
        where, text = _unwrap_user_code(text)
    elif text.startswith(_GRAPH_ERROR):
        where, text = _unwrap_graph_error(text)
    if where is None and isinstance(exc, SyntaxError) and exc.filename and os.path.isfile(exc.filename):
        # A module the script imports does not compile: its own line, not the script's import of it.
        where = SourceLine(exc.filename, int(exc.lineno or 0), "<module>", (exc.text or "").strip())
        text = str(exc.msg)
    if where is None:
        frames = traceback.extract_tb(exc.__traceback__)
        # The innermost line of the user's own files, as Python's traceback ends: in the model.py or
        # losses.py the script imports when it raised there, not the script's call into it.
        where = user_frame(frames)[0]
        in_script = [f for f in frames if script is not None and os.path.abspath(f.filename) == script]
        if where is None and in_script:
            f = in_script[-1]
            where = SourceLine(f.filename, int(f.lineno or 0), f.name, (f.line or "").strip())
    at = f" at {where}" + (f" ({where.code})" if where.code else "") if where else ""
    message = _message(text)
    return f"{type(exc).__name__}{at}" + (f": {message}" if message else "")


def _suggested(exc: BaseException, text: str) -> str:
    """``text`` with Python's "Did you mean: 'MeanSquaredError'?", which its traceback adds to an
    ``AttributeError`` or ``NameError`` (it is not in the message): the script alone would show it."""
    if not isinstance(exc, (AttributeError, NameError)):
        return text
    shown = io.StringIO()
    with contextlib.redirect_stderr(shown):  # (Python 3.11 computes the hint in its C display, nowhere else)
        sys.__excepthook__(type(exc), exc, exc.__traceback__)
    hint = _SUGGESTION.search(shown.getvalue().strip())
    return text + hint.group(0) if hint is not None and hint.group(0) not in text else text


_SUGGESTION = re.compile(r"\. Did you mean: '[^']*'\?$")


def exception_line(exc: BaseException) -> str:
    """``"<Type>: <message>"`` of a TensorFlow or Python exception, its message in one line (:func:`first_line`)."""
    return f"{type(exc).__name__}: {first_line(str(getattr(exc, 'message', None) or exc))}"


def first_line(text: str) -> str:
    """An error's message in one line; under TensorFlow's "Graph execution error:", the kernel's own."""
    text = text.strip()
    return _message(_unwrap_graph_error(text)[1] if text.startswith(_GRAPH_ERROR) else text)


def _message(text: str) -> str:
    """The message's first paragraph in one line, past Keras's "Exception encountered when calling" wrapper.

    A paragraph, not a line: Keras says which sizes disagree on the lines after its sentence. The
    terminal's bold and colours Keras adds are left out.
    """
    paragraphs = [p for p in re.split(r"\n\s*\n", _ANSI.sub("", text)) if p.strip()]
    while len(paragraphs) > 1 and _KERAS_CALL.match(paragraphs[0].strip()):
        paragraphs = paragraphs[1:]
    return _FUNCTION_NODE.sub("", " ".join(paragraphs[0].split())) if paragraphs else ""


def _unwrap_graph_error(text: str) -> tuple[SourceLine | None, str]:
    """The user's line and the kernel's message inside TensorFlow's "Graph execution error:" text.

    The text names the failing node, the stack that defined it (``File`` lines without code),
    the kernel's message, then the node again (``[[{{node ...}}]]``) and the function (``[Op:...]``).
    """
    where: SourceLine | None = None
    message: list[str] = []
    frames = False
    for line in text.splitlines()[1:]:
        match = _USER_CODE.match(line)
        if match is not None and not message:
            frames, file, number = True, match["file"], int(match["line"])
            if not is_library_file(file) and not file.startswith("<"):
                where = SourceLine(file, number, match["function"], linecache.getline(file, number).strip())
        elif frames and (line.strip() or message):
            if not line.strip() or line.lstrip().startswith("[[{{node"):
                break
            if not line.lstrip().startswith("Node: "):  # a Session's error names the node before its message
                message.append(line)
    return where, _NODE.sub("", "\n".join(message)) if message else text


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
    message = _first_message(rest) if rest else text
    # "ValueError: msg": the wrapper's type is the real one; keep only the message.
    return where, message.split(": ", 1)[1] if re.match(r"^\w+(Error|Exception|Warning): ", message) else message


def _first_message(lines: list[str]) -> str:
    """The first line that says what went wrong: past Keras's "Exception encountered when calling
    Layer.call()." wrapper, to the layer's own message under it, without its terminal colors."""
    shown = [_ANSI.sub("", line).strip() for line in lines]
    shown = [line for line in shown if line]
    if len(shown) > 1 and _KERAS_CALL.match(shown[0]):
        return shown[1]
    return shown[0] if shown else ""
