"""Ending the user's script when its first round of steps has been analyzed, even through a bare ``except:``.

The script is ended, not interrupted: the ``finally`` and ``except`` blocks it is inside when the
stop is raised do not run their lines (:func:`stop_unwinding`), so that a ``finally`` that saves
the weights does not write the one step the analysis let run over the user's checkpoint.

flowcheck raises :class:`~flowcheck.run.step.StopScript` (a ``BaseException``) into the script.
A bare ``except:`` around the step (a loop that retries a failed batch) catches that too, and the
script would go on calling the step for ever. When the script calls a step again after the stop,
the stop is raised again at every line of the script's own code that runs, until it has unwound
out of the script: an exception raised in an ``except`` block is not caught by its own ``try``.
"""

from __future__ import annotations

import dis
import inspect
import sys
import threading
from types import CodeType, FrameType
from typing import Any

from flowcheck.run.step import StopScript
from flowcheck.source.lines import is_library_file

__all__ = ["release", "stop_for_good", "stop_unwinding"]


def _stop_at_user_lines(frame: FrameType, event: str, arg: Any) -> Any:
    del arg
    if is_library_file(frame.f_code.co_filename):
        return None
    if event == "line" and not _exits_a_with(frame):
        raise StopScript
    return _stop_at_user_lines


_OPS: dict[CodeType, dict[int, str]] = {}  # per code object: its instructions' names by offset


def _exits_a_with(frame: FrameType) -> bool:
    """Whether the line about to run is a ``with`` statement's exit on the way out: its ``__exit__`` runs
    (a ``GradientTape``, ``strategy.scope()`` or ``writer.as_default()`` must not stay entered)."""
    ops = _OPS.get(frame.f_code)
    if ops is None:
        ops = _OPS[frame.f_code] = {i.offset: i.opname for i in dis.get_instructions(frame.f_code)}
    offset = frame.f_lasti
    for _ in range(4):  # PUSH_EXC_INFO (and NOPs) before it
        name = ops.get(offset)
        if name == "WITH_EXCEPT_START":
            return True
        if name not in ("PUSH_EXC_INFO", "NOP", "CACHE"):
            return False
        offset += 2
    return False


_PREVIOUS: list[Any] = []  # the trace functions in place before the stop (a coverage tool's, a debugger's)


def stop_for_good() -> None:
    """From now on every line of the script's own code raises :class:`StopScript`, until :func:`release`.

    Installed in every user frame on the stack and in every frame started after.
    """
    if not _PREVIOUS:
        _PREVIOUS.append(sys.gettrace())
    _mark_user_frames(sys._getframe(1))  # noqa: SLF001 -- the frames already running
    sys.settrace(_stop_at_user_lines)
    threading.settrace(_stop_at_user_lines)


def _untraced(frame: FrameType, event: str, arg: Any) -> Any:
    """Calls made while the script unwinds (a ``__del__``, a Keras callback) run as they are; a generator
    of the script's resumed then is one of its frames unwinding (a ``@contextmanager``'s ``finally``)."""
    del event, arg
    resumed = frame.f_code.co_flags & (inspect.CO_GENERATOR | inspect.CO_COROUTINE) and frame.f_lasti >= 0
    return _stop_at_user_lines if resumed and not is_library_file(frame.f_code.co_filename) else None


def stop_unwinding() -> None:
    """The script's frames now on the stack unwind without running the lines of their ``finally`` and
    ``except`` blocks, until :func:`release`: the script is ended, not interrupted, and a ``finally`` that
    saves the weights (or a log line) would write one step's training over the user's files.
    """
    if not _PREVIOUS:
        _PREVIOUS.append(sys.gettrace())
    _mark_user_frames(sys._getframe(1))  # noqa: SLF001 -- the frames already running
    sys.settrace(_untraced)  # line events reach the marked frames only while a trace function is set


# Each marked frame and its own trace function before, put back by release: a caller's frame (a test's)
# must not stop at a later trace, and a coverage tool's or debugger's tracing of it goes on.
_MARKED: list[tuple[FrameType, Any]] = []


def _mark_user_frames(frame: FrameType | None) -> None:
    while frame is not None:
        if not is_library_file(frame.f_code.co_filename):
            _MARKED.append((frame, frame.f_trace))
            frame.f_trace = _stop_at_user_lines
            frame.f_trace_lines = True
        frame = frame.f_back


def release() -> None:
    """The script has ended: the trace functions in place before :func:`stop_for_good` are back."""
    for frame, trace in reversed(_MARKED):  # (a frame marked twice gets its first trace back)
        frame.f_trace = trace
    _MARKED.clear()
    if _PREVIOUS:
        previous = _PREVIOUS.pop()
        sys.settrace(previous)
        threading.settrace(previous)


def forget(*traces: Any) -> None:
    """``traces`` (a tracer that has since ended) are not put back by :func:`release`: none is, instead."""
    _PREVIOUS[:] = [None if any(p == t for t in traces) else p for p in _PREVIOUS]
    _MARKED[:] = [(frame, None if any(trace == t for t in traces) else trace) for frame, trace in _MARKED]
