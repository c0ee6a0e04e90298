"""Ending the user's script when its first round of steps has been analyzed, even through a bare ``except:``.

flowcheck raises :class:`~flowcheck.run.step.StopScript` (a ``BaseException``) into the script.
A bare ``except:`` around the step (a loop that retries a failed batch) catches that too, and the
script would go on calling the step for ever. When the script calls a step again after the stop,
the stop is raised again at every line of the script's own code that runs, until it has unwound
out of the script: an exception raised in an ``except`` block is not caught by its own ``try``.
"""

from __future__ import annotations

import sys
import threading
from types import FrameType
from typing import Any

from flowcheck.run.step import StopScript
from flowcheck.source.lines import is_library_file

__all__ = ["release", "stop_for_good"]


def _stop_at_user_lines(frame: FrameType, event: str, arg: Any) -> Any:
    del arg
    if is_library_file(frame.f_code.co_filename):
        return None
    if event == "line":
        raise StopScript
    return _stop_at_user_lines


_PREVIOUS: list[Any] = []  # the trace functions in place before the stop (a coverage tool's, a debugger's)


def stop_for_good() -> None:
    """From now on every line of the script's own code raises :class:`StopScript`, until :func:`release`.

    Installed in every user frame on the stack and in every frame started after.
    """
    if not _PREVIOUS:
        _PREVIOUS.append(sys.gettrace())
    frame: FrameType | None = sys._getframe(1)  # noqa: SLF001 -- the frames already running
    while frame is not None:
        if not is_library_file(frame.f_code.co_filename):
            frame.f_trace = _stop_at_user_lines
            frame.f_trace_lines = True
        frame = frame.f_back
    sys.settrace(_stop_at_user_lines)
    threading.settrace(_stop_at_user_lines)


def release() -> None:
    """The script has ended: the trace functions in place before :func:`stop_for_good` are back."""
    if _PREVIOUS:
        previous = _PREVIOUS.pop()
        sys.settrace(previous)
        threading.settrace(previous)
