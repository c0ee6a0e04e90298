"""What ``flowcheck analyze`` does after its summary: draw the ``-o`` reports, serve ``--explore``.

Each drawing that fails (``dot`` missing, failing or over its time) is one line after the summary;
the exit status stays the analysis's. :class:`Progress` is the spinner both commands show on stderr.
"""

from __future__ import annotations

import contextlib
import fnmatch
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final, TextIO

from flowcheck.errors import FlowcheckError

__all__ = ["DRAW_TIMEOUT_S", "Progress", "draw_outputs", "explore", "focus_names"]

DRAW_TIMEOUT_S: Final = 60.0
"""How long ``dot`` may take on one ``-o`` report before the command gives it up."""


def focus_names(report: Any, patterns: Sequence[str] | None) -> list[str] | None:
    """The variables ``--focus`` patterns (globs on names, ``:0`` optional) select, in report order.

    Raises:
        VariableNotFoundError: a pattern matches no variable.
    """
    if patterns is None:
        return None
    from flowcheck.errors import VariableNotFoundError

    chosen: list[str] = []
    for pattern in patterns:
        matched = [r.name for r in report.variables
                   if fnmatch.fnmatchcase(r.name, pattern) or fnmatch.fnmatchcase(r.name.split(":")[0], pattern)]
        if not matched:
            names = ", ".join(r.name for r in report.variables[:12]) + (", ..." if len(report.variables) > 12 else "")
            raise VariableNotFoundError(f"--focus {pattern!r} matches no variable (variables: {names})")
        chosen.extend(m for m in matched if m not in chosen)
    return chosen


def draw_outputs(
    report: Any, outputs: Sequence[str], detail: str, focus: Sequence[str] | None, out: TextIO,
    step: Callable[[str], None],
) -> None:
    """Write each ``-o`` file; say ``wrote FILE`` or, in one line, why it was not drawn."""
    try:
        names = focus_names(report, focus)
    except FlowcheckError as exc:
        for output in outputs:
            out.write(f"not drawn: {output}: {type(exc).__name__}: {exc}\n")
        return
    for output in outputs:
        step(f"drawing {output}")
        try:
            report.save(output, detail=detail, focus=names, written_by="cli", timeout=DRAW_TIMEOUT_S)
        except FlowcheckError as exc:
            message = " ".join(str(exc).split())
            out.write(f"not drawn: {output}: {type(exc).__name__}: {message}\n")
        else:
            out.write(f"wrote {output}\n")
        out.flush()


def explore(report: Any, out: TextIO) -> None:
    """Serve the report in Model Explorer on 127.0.0.1 until Ctrl-C."""
    from flowcheck.render.server import start

    try:
        server = start(report)
    except FlowcheckError as exc:
        out.write(f"not explored: {type(exc).__name__}: {exc}\n")
        return
    def announce() -> None:
        out.write(f"Model Explorer: {server.url}\n(Ctrl-C stops it)\n")
        out.flush()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C may come before the wait's own handler is in place
        server.wait(announce)


class Progress:
    """A spinner on stderr naming the current stage, shown once the work takes more than ``delay``.

    Drawn only when enabled (stderr is a terminal and not ``--json``); messages printed through
    :meth:`say` go above the spinner instead of through it.
    """

    def __init__(self, enabled: bool, err: TextIO, delay: float = 0.5) -> None:
        self._err = err
        self._status: Any = None
        self._lock = threading.Lock()
        self._done = False
        self._timer: threading.Timer | None = None
        if enabled:
            from rich.console import Console

            self._status = Console(file=err, highlight=False).status("starting ...")
            self._timer = threading.Timer(delay, self._show)
            self._timer.daemon = True

    def _show(self) -> None:
        with self._lock:
            if not self._done:
                self._status.start()

    def __enter__(self) -> Progress:
        if self._timer is not None:
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            self._done = True
            if self._status is not None:
                self._status.stop()

    def step(self, message: str) -> None:
        """Name the stage now running."""
        if self._status is not None:
            self._status.update(f"{message} ...")

    def say(self, message: str) -> None:
        """Print a line on stderr (above the spinner when it is drawn)."""
        if self._status is not None:
            self._status.console.print(message, markup=False, soft_wrap=True)
        else:
            print(message, file=self._err)
