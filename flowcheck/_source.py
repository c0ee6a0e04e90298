"""Finding the user's own line in a stack of frames (TensorFlow's, Keras's and ours skipped)."""

from __future__ import annotations

import linecache
import os
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_LIBRARY_PARTS = ("/site-packages/", "/dist-packages/", "<frozen ", "__autograph_generated_file")
_KERAS_PARTS = ("/keras/", "/tf_keras/")


@dataclass(frozen=True)
class SourceLine:
    """A line of the user's code.

    Attributes:
        file: The file's path as the frame names it.
        line: 1-based line number.
        function: The function the line is in.
        code: The line's text, stripped ("" when the file cannot be read).
    """

    file: str
    line: int
    function: str
    code: str = ""

    def __str__(self) -> str:
        return f"{self.short_file}:{self.line}"

    @property
    def short_file(self) -> str:
        """The file relative to the working directory when it lies below it."""
        try:
            rel = os.path.relpath(self.file)
        except ValueError:
            return self.file
        return self.file if rel.startswith("..") else rel


@lru_cache(maxsize=4096)
def is_library_file(path: str) -> bool:
    """True for TensorFlow's, Keras's, Python's, installed packages' and flowcheck's own files."""
    if any(part in path for part in _LIBRARY_PARTS):
        return True
    full = os.path.abspath(path)
    if full.startswith(_PACKAGE_DIR + os.sep):
        return True
    paths = sysconfig.get_paths()
    # Console scripts (the `flowcheck` command itself, pytest's) are entry points, not user code.
    return any(
        bool(root) and full.startswith(os.path.abspath(str(root)) + os.sep)
        for root in (paths.get("stdlib"), paths.get("scripts"))
    )


def user_frame(frames: Sequence[Any]) -> tuple[SourceLine | None, bool]:
    """The innermost frame of user code, and whether library code sits between it and the op.

    Args:
        frames: Frames outermost first, each with ``filename``, ``lineno`` and ``name`` (a
            ``tf.Operation.traceback`` or ``traceback.extract_tb``).

    Returns:
        ``(line, via_library)``: ``via_library`` is True when a Keras frame lies between the user's
        line and the op (the op was made inside a Keras layer, not written by the user).
    """
    for i in range(len(frames) - 1, -1, -1):
        frame = frames[i]
        if not is_library_file(frame.filename):
            inner = frames[i + 1 :]
            via_library = any(any(p in f.filename for p in _KERAS_PARTS) for f in inner)
            return _line(frame), via_library
    return None, True


def _line(frame: Any) -> SourceLine:
    code = getattr(frame, "line", None) or linecache.getline(frame.filename, frame.lineno)
    return SourceLine(frame.filename, int(frame.lineno), str(frame.name), (code or "").strip())


def op_source(op: Any) -> tuple[SourceLine | None, bool]:
    """The user's line that created ``op`` (a ``tf.Operation``), read from its traceback."""
    try:
        frames = list(op.traceback)
    except Exception:  # noqa: BLE001 -- ops rebuilt from a FunctionDef have no traceback
        return None, True
    return user_frame(frames)
