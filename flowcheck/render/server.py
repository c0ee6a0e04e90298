"""Serving a report in Google Model Explorer (the optional extra ``flowcheck[explore]``).

The only place flowcheck starts Model Explorer's local server. The graph JSON and the node-data
overlay come from :mod:`flowcheck.render.explorer`; they are handed over in memory (a
``graphs://`` source and a ``node_data://`` source, as Model Explorer's own PyTorch entry point
does), so nothing is written to disk.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from flowcheck.errors import ExplorerError, ExplorerNotInstalledError

__all__ = ["INSTALL_HINT", "Explorer", "check_installed", "start"]

INSTALL_HINT: Final = "install it with: pip install 'flowcheck[explore]'"
_READY_S: Final = 60.0


def check_installed() -> None:
    """Raise :class:`ExplorerNotInstalledError` unless Model Explorer can be imported."""
    try:
        import model_explorer  # noqa: F401
    except ImportError as exc:
        raise ExplorerNotInstalledError(f"Model Explorer is not installed; {INSTALL_HINT}") from exc


def free_port(host: str) -> int:
    """A TCP port nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Explorer:
    """A running Model Explorer server.

    Attributes:
        url: The page with the report's graph and overlays loaded.
        thread: The thread serving it (a daemon: it ends with the process).
    """

    url: str
    thread: threading.Thread

    def wait(self, announce: Callable[[], None] = lambda: None, sleep: Callable[[float], None] = time.sleep) -> None:
        """Call ``announce`` (say the address), then block until Ctrl-C (``KeyboardInterrupt``) or the server stops.

        A process started in the background by a non-interactive shell (``nohup``, ``cmd &`` in a
        script or a CI runner) inherits SIGINT ignored, and Python then never raises
        ``KeyboardInterrupt``: the server would outlive every Ctrl-C. Python's own handler is put
        back before ``announce`` (a Ctrl-C as soon as the address shows stops it too), and the
        inherited one after the wait.
        """
        main = threading.current_thread() is threading.main_thread()
        inherited = signal.signal(signal.SIGINT, signal.default_int_handler) if main else None
        try:
            announce()
            while self.thread.is_alive():
                sleep(0.5)
        except KeyboardInterrupt:
            return
        finally:
            if inherited is not None:
                signal.signal(signal.SIGINT, inherited)


def _no_new_version(print_msg: bool = True) -> dict[str, str]:
    return {"version": "", "runningVersion": "", "releaseUrl": "", "desktopAppUrl": ""}


def start(report: Any, host: str = "127.0.0.1", port: int | None = None) -> Explorer:
    """Serve ``report`` (or a list of reports: a run's steps) in Model Explorer on ``host``; return once the page answers.

    Raises:
        ExplorerNotInstalledError: the extra is not installed.
        ExplorerError: the server did not answer within a minute.
    """
    check_installed()
    import model_explorer
    from model_explorer import server

    from flowcheck.render.explorer import to_explorer

    config = model_explorer.config()
    for i, one in enumerate(report if isinstance(report, (list, tuple)) else [report]):
        graphs, node_data = to_explorer(one)
        config.graphs_list.append(graphs)
        config.model_sources.append({"url": f"graphs://{one.target}/{i}"})
        config.add_node_data("flowcheck verdicts" if i == 0 else f"flowcheck verdicts ({one.target})", node_data)
    chosen = port or free_port(host)
    # Model Explorer asks the internet for a newer release (on start and from the page); flowcheck's
    # page stays local: the answer "no newer version" in Model Explorer's own format.
    server._check_new_version = _no_new_version  # noqa: SLF001
    thread = threading.Thread(
        target=server.start, kwargs={"host": host, "port": chosen, "config": config, "no_open_in_browser": True},
        daemon=True, name="flowcheck-model-explorer",
    )
    thread.start()
    base = f"http://{host}:{chosen}"
    deadline = time.monotonic() + _READY_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/check_health", timeout=2) as answer:  # noqa: S310 -- our own server
                if answer.read() == b"model_explorer_ok":
                    return Explorer(f"{base}/?data={config.to_url_param_value()}", thread)
        except OSError:
            time.sleep(0.2)
        if not thread.is_alive():
            break
    raise ExplorerError(f"Model Explorer did not start on {base} within {_READY_S:g} s")
