"""flowcheck: which TensorFlow variables receive a gradient from a loss, and exactly why not.

>>> report = flowcheck.analyze(loss_fn, x, y)
>>> report.receives_gradient(w2)
True
>>> report.verify().agrees
True

A training step with its own tape is judged at each gradient call (``report.gradient_sites``).
"""

from __future__ import annotations

from flowcheck._api import analyze
from flowcheck._model import BarrierKind, Verdict
from flowcheck._report import Barrier, Report, VariableResult
from flowcheck.source.lines import SourceLine
from flowcheck.trace.sites import GradientSite, SiteSource
from flowcheck.verify.loss import GradientState, VariableCheck, Verification
from flowcheck.errors import (
    ExecutableNotFoundError,
    FlowcheckError,
    InvalidTargetError,
    LossError,
    NoVariablesError,
    RenderError,
    SnapshotError,
    TraceError,
    UsageError,
    VariableNotFoundError,
    VerificationError,
)
from flowcheck.testing import GradientFlowAssertionError, assert_all_trainable_receive, assert_gradient_flow

from flowcheck._version import __version__

__all__ = [
    "Barrier",
    "BarrierKind",
    "ExecutableNotFoundError",
    "FlowcheckError",
    "GradientFlowAssertionError",
    "GradientSite",
    "GradientState",
    "InvalidTargetError",
    "LossError",
    "NoVariablesError",
    "RenderError",
    "Report",
    "SiteSource",
    "SnapshotError",
    "SourceLine",
    "TraceError",
    "UsageError",
    "VariableCheck",
    "VariableNotFoundError",
    "VariableResult",
    "Verdict",
    "Verification",
    "VerificationError",
    "__version__",
    "analyze",
    "assert_all_trainable_receive",
    "assert_gradient_flow",
]
