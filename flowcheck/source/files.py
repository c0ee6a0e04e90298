"""A user's Python file, checked before it is run: it exists, is a ``.py`` file, and is readable text."""

from __future__ import annotations

import os
from types import CodeType

from flowcheck.errors import TargetLoadError

__all__ = ["check_file", "compile_python", "read_python"]


def check_file(path: str) -> str:
    """The file's absolute path.

    Raises:
        TargetLoadError: it does not exist, is a directory, or is not a ``.py`` file.
    """
    if not path.strip():  # an unset shell variable (flowcheck run "$SCRIPT"): "" is the current directory
        raise TargetLoadError("the file name is empty; give a Python file (path/to/model.py[:NAME])")
    full = os.path.abspath(path)
    if not os.path.exists(full):
        raise TargetLoadError(f"no such file: {path}")
    if os.path.isdir(full):
        raise TargetLoadError(f"{path} is a directory; give a Python file (path/to/model.py[:NAME])")
    if not full.endswith(".py"):
        raise TargetLoadError(f"{path} is not a Python file; give a .py file (path/to/model.py[:NAME])")
    return full


def read_python(path: str, full: str) -> bytes:
    """The bytes of the file at ``full`` (``path`` as the user gave it, for errors).

    Raises:
        TargetLoadError: it cannot be read, or is not UTF-8 text without a coding cookie.
    """
    try:
        with open(full, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise TargetLoadError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # compile() would honour a coding cookie; without one, non-UTF-8 bytes mean "not Python"
        if b"coding" not in data[:200]:
            raise TargetLoadError(f"{path} is not a Python file: it is not UTF-8 text") from exc
    return data


def compile_python(path: str, full: str) -> CodeType:
    """The file's code, compiled as Python would run it (``path`` as the user gave it, for errors).

    Raises:
        TargetLoadError: it cannot be read, is not UTF-8 text, or has a syntax error (said with its
            line and code, as one line).
    """
    source = read_python(path, full)
    try:
        return compile(source, full, "exec", dont_inherit=True)
    except SyntaxError as exc:
        line = f":{exc.lineno}" if exc.lineno else ""
        text = f" ({exc.text.strip()})" if exc.text and exc.text.strip() else ""
        raise TargetLoadError(f"{path}{line}: {type(exc).__name__}: {exc.msg}{text}") from exc
    except ValueError as exc:  # Python 3.11: null bytes in the source
        raise TargetLoadError(f"{path} is not a Python file: {exc}") from exc
