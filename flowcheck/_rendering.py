"""The thin layer that runs Graphviz ``dot`` and writes report files.

Every Graphviz call of flowcheck lives here. Building the DOT source is :mod:`flowcheck.render`'s
job and building the HTML page is :mod:`flowcheck.render.html`'s; this module only turns DOT into SVG
and puts text on disk.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Final

from flowcheck.errors import ExecutableNotFoundError, RenderError

__all__ = ["DOT_BINARY", "INSTALL_HINT", "SUFFIXES", "dot_executable", "render_svg", "write_text"]

DOT_BINARY: Final = "dot"
INSTALL_HINT: Final = "install Graphviz: `apt-get install graphviz` (Debian/Ubuntu) or `brew install graphviz` (macOS)"
SUFFIXES: Final = (".svg", ".html", ".dot", ".me.json")
"""The report formats ``Report.save`` writes, chosen by the path's suffix."""

_TIMEOUT_S: Final = 120.0
# Graphviz puts the DOT node name in <title> and the tooltip in <a xlink:title>; browsers and
# readers expect the tooltip in <title>, so the tooltip text is copied there.
_TITLED = re.compile(r'<title>[^<]*</title>(\s*<g id="a_[^"]*"><a xlink:title="([^"]*)")')


def dot_executable() -> str:
    """The path of Graphviz's ``dot``.

    Raises:
        ExecutableNotFoundError: ``dot`` is not on ``PATH``.
    """
    found = shutil.which(DOT_BINARY)
    if found is None:
        raise ExecutableNotFoundError(f"the Graphviz executable {DOT_BINARY!r} is not on PATH; {INSTALL_HINT}")
    return found


def render_svg(dot_source: str, timeout: float = _TIMEOUT_S) -> str:
    """Run ``dot -Tsvg`` on ``dot_source`` and return the SVG text, tooltips in ``<title>``.

    Raises:
        ExecutableNotFoundError: ``dot`` is not installed.
        RenderError: ``dot`` failed or took longer than ``timeout`` seconds.
    """
    exe = dot_executable()
    try:
        proc = subprocess.run(
            [exe, "-Tsvg"], input=dot_source.encode("utf-8"), capture_output=True, timeout=timeout, check=False,
        )
    except FileNotFoundError as exc:  # removed between the lookup and the call
        raise ExecutableNotFoundError(f"the Graphviz executable {DOT_BINARY!r} could not be run; {INSTALL_HINT}") from exc
    except subprocess.TimeoutExpired as exc:
        raise RenderError(
            f"Graphviz dot did not finish within {timeout:g} s; draw less with focus=[...] (--focus), "
            "or browse every op in Model Explorer (a .me.json report, --explore)"
        ) from exc
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RenderError(f"Graphviz dot failed (exit status {proc.returncode}): {message[0] if message else 'no message'}")
    svg = proc.stdout.decode("utf-8")
    return _TITLED.sub(lambda m: f"<title>{m.group(2)}</title>{m.group(1)}", svg)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` as UTF-8 to ``path``, creating its directory; return the path."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise RenderError(f"could not write {target}: {exc.strerror or exc}") from exc
    return target
