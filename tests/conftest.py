"""Shared test set-up: quiet TensorFlow, and the markers for what a machine may lack honoured everywhere.

The gradient oracle's kept answers (``flowcheck/graph/kept.py``) go to a temporary folder of
the session. A test marked ``dot`` needs Graphviz's ``dot`` and a test marked ``browser`` headless Chromium: on a
machine without them they are skipped, saying what to install (as graphviz's own tests do).

The suite runs on two workers (``pytest-xdist``, ``--dist loadgroup``): tests go to whichever
worker is free, one at a time, except that the tests of a file sharing a module-scoped fixture
(one costly trace or child process for the whole file) stay in one worker, which makes it once.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The oracle's answers kept between runs go to a folder of this session, never the user's cache.
os.environ.setdefault("FLOWCHECK_CACHE_DIR", tempfile.mkdtemp(prefix="flowcheck-tests-cache-"))

CHROMIUM = "/usr/bin/chromium"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests whose marker names something this machine lacks; group a file's sharers of a module fixture."""
    del config
    for item in items:
        if _uses_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    missing = {
        "dot": "Graphviz dot is not installed (apt-get install graphviz)" if shutil.which("dot") is None else None,
        "browser": f"headless Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if not os.path.exists(CHROMIUM) else None,
    }
    for item in items:
        for marker, reason in missing.items():
            if reason is not None and item.get_closest_marker(marker) is not None:
                item.add_marker(pytest.mark.skip(reason=reason))


def _uses_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)  # pytest's own record of the fixtures a test uses
    if info is None:
        return False
    return any(d.scope in ("module", "package") for defs in info.name2fixturedefs.values() for d in defs)
