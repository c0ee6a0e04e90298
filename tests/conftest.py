"""Shared test set-up: quiet TensorFlow, and tape helpers that compute the truth in each test."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
