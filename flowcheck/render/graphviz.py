"""The thin layer that runs Graphviz ``dot`` and writes report files.

Every Graphviz call of flowcheck lives here. Building the DOT source is :mod:`flowcheck.render`'s
job and building the HTML page is :mod:`flowcheck.render.html`'s; this module only turns DOT into SVG
and puts text on disk.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

from flowcheck.errors import ExecutableNotFoundError, RenderError

__all__ = ["DOT_BINARY", "INSTALL_HINT", "SUFFIXES", "dot_executable", "render_svg", "save", "write_text"]

DOT_BINARY: Final = "dot"
INSTALL_HINT: Final = "install Graphviz: `apt-get install graphviz` (Debian/Ubuntu) or `brew install graphviz` (macOS)"
SUFFIXES: Final = (".svg", ".html", ".dot", ".me.json", ".json")
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


def save(report: Any, path: str | os.PathLike[str], *, detail: str, focus: Any, written_by: str,
         timeout: float | None) -> Path:
    """Write ``report`` in the format its path's suffix names (see ``flowcheck.Report.save``)."""
    name = Path(path).name.lower()
    suffix = next((s for s in SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        shown = Path(path).suffix.lower()
        raise RenderError(f"cannot save a report as {shown or 'a file without suffix'!r} ({path}): use one of {', '.join(SUFFIXES)}")
    if suffix == ".dot":
        return write_text(path, report.to_dot(detail=detail, focus=focus))
    if suffix == ".me.json":
        from flowcheck.render.explorer import node_data_path, to_explorer

        graph_json, node_data = to_explorer(report)
        write_text(node_data_path(path), node_data)
        return write_text(path, graph_json)
    if suffix == ".json":  # after ".me.json" in SUFFIXES: that is a Model Explorer graph
        return write_text(path, json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n")
    if suffix == ".svg":
        return write_text(path, report.svg(detail=detail, focus=focus, timeout=timeout))
    return write_text(path, report._html(detail, focus, fragment=False, written_by=written_by, timeout=timeout))  # noqa: SLF001
