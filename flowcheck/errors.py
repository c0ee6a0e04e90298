"""The one error hierarchy of flowcheck.

Every error a user can cause is a :class:`FlowcheckError`; the command line prints it as one
line (``TypeName: message``) and exits with status 2::

    FlowcheckError
    ├── TargetLoadError(FlowcheckError)                 the CLI could not load a target and inputs from a file
    ├── UsageError(FlowcheckError, TypeError, ValueError)  an argument of flowcheck's own API is wrong
    ├── InvalidTargetError(FlowcheckError, TypeError)   the thing to analyze is not usable
    ├── TraceError(FlowcheckError)                      TensorFlow failed while tracing it
    ├── LossError(FlowcheckError, TypeError)            its result is not a differentiable loss
    ├── NoVariablesError(FlowcheckError)                nothing in it can be trained
    ├── VariableNotFoundError(FlowcheckError, KeyError) a variable asked about is not in the report
    ├── VerificationError(FlowcheckError)               the real optimizer step could not run
    ├── RenderError(FlowcheckError)                     a report could not be drawn or written
    │   └── ExecutableNotFoundError(RenderError, RuntimeError)  Graphviz ``dot`` is missing
    ├── ExplorerError(FlowcheckError)                   Model Explorer could not show the report
    │   └── ExplorerNotInstalledError(ExplorerError, ImportError)  the ``flowcheck[explore]`` extra is missing
    ├── SnapshotError(FlowcheckError, ValueError)       a gradient-flow snapshot cannot be read or written
    └── GradientFlowAssertionError(FlowcheckError, AssertionError)  a gradient contract does not hold (in a test)
"""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = [
    "FlowcheckError",
    "TargetLoadError",
    "UsageError",
    "InvalidTargetError",
    "TraceError",
    "LossError",
    "NoVariablesError",
    "VariableNotFoundError",
    "VerificationError",
    "RenderError",
    "ExecutableNotFoundError",
    "ExplorerError",
    "ExplorerNotInstalledError",
    "SnapshotError",
    "GradientFlowAssertionError",
]


_E = TypeVar("_E", bound="FlowcheckError")


class FlowcheckError(Exception):
    """Base class of every error flowcheck raises on purpose.

    Attributes:
        original: The user's or TensorFlow's exception behind this one, or None. Kept here, not
            chained as ``__cause__``: a traceback then shows flowcheck's one message, not pages of
            TensorFlow's internals (``flowcheck --debug`` prints it too).
    """

    original: BaseException | None = None


class TargetLoadError(FlowcheckError):
    """``flowcheck analyze PATH[:NAME]`` could not import the file, pick its target or find inputs."""


class UsageError(FlowcheckError, TypeError, ValueError):
    """An argument of flowcheck's own API is wrong (``assert_gradient_flow``, the Keras callback).

    A ``TypeError`` and a ``ValueError`` both, so that code catching either keeps working.
    """


class InvalidTargetError(FlowcheckError, TypeError):
    """The object given to analyze is not a function, a ``tf.function`` or a Keras model."""


class TraceError(FlowcheckError):
    """TensorFlow raised while tracing the user's function."""


class LossError(FlowcheckError, TypeError):
    """The traced function does not return a floating-point tensor to differentiate."""


class NoVariablesError(FlowcheckError):
    """The traced function reads no variable, so nothing can be trained."""


class VariableNotFoundError(FlowcheckError, KeyError):
    """A variable (or name) asked about is not part of the report."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class VerificationError(FlowcheckError):
    """The real optimizer step could not be run."""


class RenderError(FlowcheckError):
    """A diagram or report could not be produced."""


class ExecutableNotFoundError(RenderError, RuntimeError):
    """The Graphviz ``dot`` binary is not installed."""


class ExplorerError(FlowcheckError):
    """Model Explorer could not be started for a report."""


class ExplorerNotInstalledError(ExplorerError, ImportError):
    """``--explore`` needs the optional extra: ``pip install 'flowcheck[explore]'``."""


class SnapshotError(FlowcheckError, ValueError):
    """A gradient-flow snapshot file is missing, unreadable, or of another format version."""


def unchained(error: _E, original: BaseException) -> _E:
    """``error`` with ``original`` kept as :attr:`FlowcheckError.original`: raise it ``from None``."""
    error.original = original
    return error


class GradientFlowAssertionError(FlowcheckError, AssertionError):
    """A gradient contract does not hold.

    Attributes:
        report: The analysis the contract was checked against (the pytest plugin saves it).
        loss: The loss the contract was about, or None for the total.
        report_path: Where the pytest plugin saved the report (None when not saved).
    """

    def __init__(self, message: str, report: Any, loss: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.report = report
        self.loss = loss
        self.report_path: str | None = None

    def __str__(self) -> str:
        if self.report_path:
            return f"{self.message}\n\nflowcheck report: {self.report_path}"
        return self.message
