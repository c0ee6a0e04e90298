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
_AUTOGRAPH = "__autograph_generated_file"
_LIBRARY_PARTS = ("/site-packages/", "/dist-packages/", "<frozen ", _AUTOGRAPH)
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
        line = _line(frame) if not is_library_file(frame.filename) else None
        if line is None and _AUTOGRAPH in frame.filename:
            line = _autograph_line(frame)
        if line is not None:
            inner = frames[i + 1 :]
            via_library = any(any(p in f.filename for p in _KERAS_PARTS) for f in inner)
            return line, via_library
    return None, True


def _autograph_line(frame: Any) -> SourceLine | None:
    """The user's line behind a frame of AutoGraph's generated code, from AutoGraph's source maps.

    TensorFlow maps these frames itself for ops made on the tracing thread; ops made on the
    replica threads of a distribution strategy (``strategy.run``) keep them.
    """
    try:
        from tensorflow.python.autograph.impl import api
        from tensorflow.python.autograph.pyct import origin_info

        # The transpiler's cache of converted functions (pyct/transpiler.py, PyToPy._cache).
        buckets = list(api._TRANSPILER._cache._cache.values())  # noqa: SLF001
        key = origin_info.LineLocation(frame.filename, frame.lineno)
    except Exception:  # noqa: BLE001 -- another TensorFlow: no line rather than a wrong one
        return None
    for bucket in buckets:
        for factory in list(bucket.values()):
            origin = (getattr(factory, "source_map", None) or {}).get(key)
            if origin is not None and not is_library_file(origin.loc.filename):
                code = origin.source_code_line or linecache.getline(origin.loc.filename, origin.loc.lineno)
                return SourceLine(origin.loc.filename, int(origin.loc.lineno), str(origin.function_name), str(code).strip())
    return None


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
