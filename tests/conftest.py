"""Shared test set-up: quiet TensorFlow, and the markers for what a machine may lack honoured everywhere.

The gradient oracle's kept answers (``flowcheck/graph/kept.py``) go to a temporary folder of
the session. A test marked ``dot`` needs Graphviz's ``dot`` and a test marked ``browser`` headless Chromium: on a
machine without them they are skipped, saying what to install (as graphviz's own tests do).
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
