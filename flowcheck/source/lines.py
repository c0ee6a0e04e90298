"""Finding the user's own line in a stack of frames (TensorFlow's, Keras's and ours skipped)."""

from __future__ import annotations

import itertools
import linecache
import os
import sys
import sysconfig
import traceback
import types
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the flowcheck package
AUTOGRAPH_FILE: Final = "__autograph_generated_file"  # in the name of every file AutoGraph generates
_LIBRARY_PARTS = ("/site-packages/", "/dist-packages/", "<frozen ", AUTOGRAPH_FILE)
_KERAS_PARTS = ("/keras/", "/tf_keras/")


@dataclass(frozen=True)
class SourceLine:
    """A line of the user's code.

    Attributes:
        file: The file's path as the frame names it.
        line: 1-based line number.
        function: The function the line is in.
        code: The line's text, stripped ("" when the file cannot be read).
        column: 1-based column (in characters) where the call or expression that made the op
            starts, when Python's code positions tell it (``None`` otherwise). ``str()`` leaves
            it out; :attr:`location` includes it.
    """

    file: str
    line: int
    function: str
    code: str = ""
    column: int | None = None

    def __str__(self) -> str:
        return f"{self.short_file}:{self.line}"

    @property
    def short_file(self) -> str:
        """The file as :func:`display_path` shows it."""
        return display_path(self.file)

    @property
    def location(self) -> str:
        """``file:line:column`` (``file:line`` when the column is unknown)."""
        return f"{self}:{self.column}" if self.column is not None else str(self)


def display_path(path: str) -> str:
    """A path as flowcheck shows it: normalised, relative to the working directory when it lies
    below it, else absolute (``run/../model.py`` is ``model.py``)."""
    if path.startswith("<"):
        return path  # "<stdin>", "<string>": not a file
    full = os.path.normpath(os.path.abspath(path))
    try:
        rel = os.path.relpath(full)
    except ValueError:  # another drive (Windows)
        return full
    return full if rel == ".." or rel.startswith(".." + os.sep) else rel


# The name of a flowcheck function that hands a user's call on to TensorFlow unchanged (a nested
# tf.function's call while a step is traced): a frame of it in an op's traceback is not a call into flowcheck.
PASSES_THROUGH = "passes_through"


def is_own_file(path: str) -> bool:
    """True for flowcheck's own files."""
    return os.path.abspath(path).startswith(_PACKAGE_DIR + os.sep)


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
    line, inner = user_frame_within(frames)
    return line, line is None or through_keras(inner)


def through_keras(frames: Sequence[Any]) -> bool:
    """Whether any of ``frames`` is Keras's code."""
    return any(any(p in f.filename for p in _KERAS_PARTS) for f in frames)


def user_frame_within(frames: Sequence[Any]) -> tuple[SourceLine | None, Sequence[Any]]:
    """The innermost frame of user code and the (library) frames inside it."""
    for i in range(len(frames) - 1, -1, -1):
        frame = frames[i]
        line = _line(frame) if not is_library_file(frame.filename) else None
        if line is None and AUTOGRAPH_FILE in frame.filename:
            line = _autograph_line(frame)
        if line is not None:
            return line, frames[i + 1 :]
    return None, ()


def _autograph_line(frame: Any) -> SourceLine | None:
    """The user's line behind a frame of AutoGraph's generated code, from AutoGraph's source maps.

    TensorFlow maps these frames itself for ops made on the tracing thread; ops made on the
    replica threads of a distribution strategy (``strategy.run``) keep them.
    """
    origin = _autograph_origin_info(frame.filename, frame.lineno)
    if origin is None:
        return None
    code = origin.source_code_line or linecache.getline(origin.loc.filename, origin.loc.lineno)
    return SourceLine(origin.loc.filename, int(origin.loc.lineno), str(origin.function_name), str(code).strip())


def autograph_origin(generated: str, line: int) -> tuple[str, int] | None:
    """The user's file and line that AutoGraph's source map gives for a line of generated code."""
    origin = _autograph_origin_info(generated, line)
    return None if origin is None else (str(origin.loc.filename), int(origin.loc.lineno))


def _autograph_origin_info(generated: str, line: int) -> Any:
    try:
        from tensorflow.python.autograph.pyct import origin_info

        key = origin_info.LineLocation(generated, line)
    except Exception:  # noqa: BLE001 -- another TensorFlow: no line rather than a wrong one
        return None
    for source_map in _source_maps():
        origin = source_map.get(key)
        if origin is not None and not is_library_file(origin.loc.filename):
            return origin
    return None


def autograph_converted(line: SourceLine) -> bool:
    """Whether AutoGraph's source maps point at ``line`` (its function ran converted)."""
    for source_map in _source_maps():
        for origin in list(source_map.values()):
            loc = origin.loc
            if loc.lineno == line.line and origin.function_name == line.function and loc.filename == line.file:
                return True
    return False


def _source_maps() -> list[Any]:
    try:
        from tensorflow.python.autograph.impl import api

        # The transpiler's cache of converted functions (pyct/transpiler.py, PyToPy._cache).
        buckets = list(api._TRANSPILER._cache._cache.values())  # noqa: SLF001
    except Exception:  # noqa: BLE001 -- another TensorFlow: no line rather than a wrong one
        return []
    return [f.source_map for b in buckets for f in list(b.values()) if getattr(f, "source_map", None)]


def _line(frame: Any) -> SourceLine:
    code = getattr(frame, "line", None) or linecache.getline(frame.filename, frame.lineno)
    return SourceLine(frame.filename, int(frame.lineno), str(frame.name), (code or "").strip())


def call_site() -> SourceLine | None:
    """The user's innermost line on the caller's stack (the call of a step)."""
    return user_frame(traceback.extract_stack()[:-2])[0]


def call_column() -> int | None:
    """The 0-based column where the user's innermost frame's current call starts (Python 3.11's code
    positions), which tells apart two calls on one line; None when Python does not tell it."""
    frame: types.FrameType | None = sys._getframe(1)  # noqa: SLF001 -- frames hold the positions; extract_stack drops them
    while frame is not None and is_library_file(frame.f_code.co_filename):
        frame = frame.f_back
    return frame_column(frame) if frame is not None else None


def frame_running(line: SourceLine | None) -> types.FrameType | None:
    """The frame on the caller's stack running the user's ``line`` (a call made there), or None."""
    frame: types.FrameType | None = sys._getframe(1)  # noqa: SLF001
    while frame is not None and line is not None:
        if frame.f_code.co_filename == line.file and frame.f_lineno == line.line:
            return frame
        frame = frame.f_back
    return None


def frame_column(frame: types.FrameType) -> int | None:
    """The 0-based column where ``frame``'s current instruction starts; None when Python does not tell it (3.10)."""
    positions_of = getattr(frame.f_code, "co_positions", None)
    if positions_of is None:  # Python 3.10 keeps no columns
        return None
    position = next(itertools.islice(positions_of(), frame.f_lasti // 2, None), None)  # one per 2-byte code unit
    column = position[2] if position is not None else None
    return int(column) if column is not None else None


def called_at(tape_line: SourceLine | None) -> SourceLine | None:
    """Where the user's function holding an eager tape's line was called from: its step's call.

    An eager ``tape.gradient`` in ``def grad(...)`` is a step named ``grad``, first called where
    ``grad(...)`` is called, not at the tape's own line. ``tape_line`` itself when it is at a
    script's top level (no function of the user's encloses it) or no user frame calls it.
    """
    if tape_line is None or tape_line.function.startswith("<"):
        return tape_line
    frames = [f for f in traceback.extract_stack()[:-2] if not is_library_file(f.filename)]
    return _line(frames[-2]) if len(frames) >= 2 else tape_line


def call_path() -> tuple[tuple[str, int, int | None], ...]:
    """The user's lines and columns on the caller's stack, outermost first: a step called through a
    helper from two lines differs, and so do two calls on one line (``train_a(x); train_b(x)``)."""
    path = []
    frame: types.FrameType | None = sys._getframe(2)  # noqa: SLF001 -- the caller's caller, as extract_stack()[:-2]
    while frame is not None:
        if not is_library_file(frame.f_code.co_filename):
            path.append((frame.f_code.co_filename, frame.f_lineno or 0, frame_column(frame)))
        frame = frame.f_back
    return tuple(reversed(path))
