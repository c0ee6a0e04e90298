"""What the browser tests share: Debian's Chromium for Playwright, where screenshots go, and a
MobileNetV2 training step with one barrier (a file ``flowcheck analyze`` loads as a user's)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
SHOTS = Path("/tmp/flowcheck-shots")
"""A copy of every screenshot goes here, for people to look at."""

MOBILENET_STEP = '''
import keras
import numpy as np
import tensorflow as tf

keras.utils.set_random_seed(0)
backbone = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3))
features = keras.layers.GlobalAveragePooling2D(name="pool")(backbone.output)
logits = keras.layers.Dense(10, name="logits")(features)
# A calibration head added as a constant by mistake: its own weights are cut off with it.
calibration = keras.layers.Dense(10, name="calibration")(features)
frozen = keras.layers.Lambda(tf.stop_gradient, name="frozen_calibration")(calibration)
model = keras.Model(backbone.input, keras.layers.Add(name="calibrated")([logits, frozen]))
model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
example_inputs = (np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32), np.array([1, 2]))
'''
"""The training step of a compiled MobileNetV2 (32x32 inputs, weights=None) whose calibration head
is cut off by a ``tf.stop_gradient``: ``calibration/kernel`` and ``calibration/bias`` are blocked."""


def keep(shot: Path) -> Path:
    """Copy a screenshot to :data:`SHOTS`; return the copy."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(shot, SHOTS / shot.name))


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Debian's headless Chromium through Playwright (which never downloads a browser here)."""
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
