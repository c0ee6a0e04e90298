"""Shared test set-up: quiet TensorFlow, and the markers for what a machine may lack honoured everywhere.

The gradient oracle's kept answers (``flowcheck/graph/kept.py``) go to a temporary folder of
the session. A test marked ``dot`` needs Graphviz's ``dot`` and a test marked ``browser`` headless Chromium: on a
machine without them they are skipped, saying what to install (as graphviz's own tests do).

The suite runs on two workers (``pytest-xdist``, ``--dist loadgroup``): tests go to whichever
worker is free, one at a time, except that the tests of a file that defines a module-scoped
fixture (one costly trace or child process for the whole file) stay in one worker, which makes it
once (:func:`pytest_xdist_make_scheduler`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The oracle's answers kept between runs go to a folder of this session, never the user's cache.
os.environ.setdefault("FLOWCHECK_CACHE_DIR", tempfile.mkdtemp(prefix="flowcheck-tests-cache-"))

CHROMIUM = "/usr/bin/chromium"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests whose marker names something this machine lacks."""
    del config
    missing = {
        "dot": "Graphviz dot is not installed (apt-get install graphviz)" if shutil.which("dot") is None else None,
        "browser": f"headless Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if not os.path.exists(CHROMIUM) else None,
    }
    for item in items:
        for marker, reason in missing.items():
            if reason is not None and item.get_closest_marker(marker) is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup``: each test to the free worker, but a file with a module fixture whole to one.

    pytest-xdist groups by the ``xdist_group`` marks it writes into node ids, which pytest 9.2 no
    longer reads back (pytest-xdist issue 1386: every test is then scheduled alone, and a module
    fixture, one costly child process for a whole file, is made again by the other worker). So the
    groups are made here, from the files that define a module-scoped fixture.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    root = Path(str(config.rootpath))
    together = {
        str(path.relative_to(root)) for path in (root / "tests").glob("test_*.py")
        if 'scope="module"' in path.read_text()
    }

    class Scheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if path in together else nodeid

    return Scheduling(config, log)
