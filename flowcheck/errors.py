"""The one error hierarchy of flowcheck.

Every error a user can cause is a :class:`FlowcheckError`; the command line prints it as one
line (``TypeName: message``) and exits with status 2::

    FlowcheckError
    ├── TargetLoadError(FlowcheckError)                 the CLI could not load a target and inputs from a file
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
    └── SnapshotError(FlowcheckError, ValueError)       a gradient-flow snapshot cannot be read or written
"""

from __future__ import annotations

__all__ = [
    "FlowcheckError",
    "TargetLoadError",
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
]


class FlowcheckError(Exception):
    """Base class of every error flowcheck raises on purpose."""


class TargetLoadError(FlowcheckError):
    """``flowcheck analyze PATH[:NAME]`` could not import the file, pick its target or find inputs."""


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
