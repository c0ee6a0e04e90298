"""A Keras callback that explains, before the first step, which weights ``fit`` will not train.

Keras only warns ``Gradients do not exist for variables [...] when minimizing the loss`` once
training runs, without saying why. :class:`GradientFlowCheck` analyzes the model's training step
(its ``train_step``, Keras's own or an override, judged at each gradient call it makes) at the
start of ``fit`` and, for each trainable weight that will receive no gradient, names the ops that
cut it off and the line of code that made them, in place of Keras's warning (silenced until the end of that ``fit`` once explained). Weights
that get no gradient by design are kept apart: BatchNormalization moving statistics (assigned in
training, never differentiated) and non-trainable weights (frozen layers).

>>> model.fit(x, y, callbacks=[flowcheck.keras.GradientFlowCheck(on_blocked="raise")])
"""

from __future__ import annotations

import contextlib
import inspect
import re
import sys
import warnings
import weakref
from collections.abc import Iterator
from typing import Any, Final, cast

import keras

from flowcheck._api import analyze
from flowcheck._datasets import first_element
from flowcheck._fit_cache import cached_report, keep_report
from flowcheck._model import Verdict
from flowcheck._phrases import FROZEN_MODEL, NEVER_TRAINED, disagreement, gradient_error_message, left_out_lines, still_trained_lines
from flowcheck._report import Report, VariableResult
from flowcheck.errors import InvalidTargetError, UsageError
from flowcheck.source.lines import is_library_file
from flowcheck.testing import GradientFlowAssertionError, _format_results
from flowcheck.trace.state import KERAS_NONE_WARNING
from flowcheck.trace.kept_step import frozen_but_trained, kept_assignments, left_out_by_fit

__all__ = ["GradientFlowCheck", "GradientFlowWarning"]

ON_BLOCKED: Final = ("warn", "raise")
# fit's own batch size when the user gives none; a sample this size shows every shape fit will see.
_DEFAULT_BATCH: Final = 32
_MAX_FRAMES: Final = 64
# keras/src/optimizers/base_optimizer.py and backend/tensorflow/optimizer.py (_filter_grads)
_KERAS_WARNING: Final = KERAS_NONE_WARNING


class GradientFlowWarning(UserWarning):
    """Trainable weights of a model will receive no gradient in ``fit``."""


class GradientFlowCheck(keras.callbacks.Callback):  # type: ignore[misc]  # keras ships no types
    """Check at the start of ``fit`` that every trainable weight will receive a gradient.

    The sample batch the training step is traced on is ``sample`` when given; otherwise it is taken
    from the data ``fit`` was called with: the first ``batch_size`` rows of arrays (NumPy,
    tensors, or dicts/lists of them), the first element of a ``tf.data.Dataset``, or item 0 of a
    ``keras.utils.PyDataset``. A Python generator cannot be sampled without consuming a batch of
    training data: pass ``sample=`` then.

    Args:
        sample: ``(x, y)`` or ``(x, y, sample_weight)``: a batch like those ``fit`` will see.
        on_blocked: ``"warn"`` (a :class:`GradientFlowWarning`) or ``"raise"`` (a
            :class:`flowcheck.testing.GradientFlowAssertionError`, which stops ``fit`` before
            its first step) when a trainable weight will receive no gradient.
        report_path: Also save the report there (``.html``, ``.svg`` or ``.dot``).
        verify: Also run one real optimizer step on the sample (every variable restored
            afterwards) and treat a disagreement with the prediction as a problem.
        snapshot: A gradient-flow snapshot file to check the training step against before the
            first batch: a change is a problem (told as a diff); a missing file is written
            (under ``CI=true`` it is a problem instead).

    Attributes:
        report: The analysis, once ``fit`` has started.
        problems: Trainable weights that will receive no gradient.
        harmless: ``(result, reason)`` for the weights that get no gradient by design.
    """

    def __init__(
        self, sample: Any = None, *, on_blocked: str = "warn", report_path: Any = None, verify: bool = False,
        snapshot: Any = None,
    ) -> None:
        super().__init__()
        if on_blocked not in ON_BLOCKED:
            raise UsageError(f"on_blocked must be one of {', '.join(map(repr, ON_BLOCKED))}, not {on_blocked!r}")
        if sample is not None and not (isinstance(sample, (tuple, list)) and 1 <= len(sample) <= 3):
            raise UsageError("sample must be (x, y) or (x, y, sample_weight)")
        _check_options(report_path, verify, snapshot)  # here, not after the analysis inside fit
        self.sample = sample
        self.on_blocked = on_blocked
        self.report_path = report_path
        self.verify = verify
        self.snapshot = snapshot
        self.snapshot_check: Any = None
        self.report: Report | None = None
        self.problems: tuple[VariableResult, ...] = ()
        self.unknown: tuple[VariableResult, ...] = ()  # trainable, a gradient, but unknown to the optimizer
        self.still_trained: tuple[VariableResult, ...] = ()  # frozen, but trained by the step fit kept
        self.harmless: tuple[tuple[VariableResult, str], ...] = ()
        self._trainable: tuple[int, ...] = ()  # the trainable weights when last checked, by id
        self._silenced: Any = None  # the warnings filter hiding Keras's bare warning during fit
        self._cut: dict[int, tuple[Verdict | None, tuple[Any, ...]]] = {}  # id -> (site verdict, barriers)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Analyze the training step on the sample batch and report what will not train."""
        __tracebackhide__ = True
        model = self.model
        x, y, sample_weight = self._sample_batch()
        extra = {} if sample_weight is None else {"sample_weight": sample_weight}
        report = None if self.verify else cached_report(model, (x, y, sample_weight))
        if report is None:  # a fit per epoch in a loop: the same step, analyzed once
            with _quiet():
                report = analyze(model, x, y, **extra)
            keep_report(model, (x, y, sample_weight), report)
        self.report = report
        self._trainable = tuple(id(w) for w in model.trainable_weights)
        problems, harmless, self._cut = _judge(report, _moving_statistics(model), {id(w) for w in model.weights})
        self.problems, self.harmless = tuple(problems), tuple(harmless)
        kept = self._kept_step_lines(model, report)  # first: a weight fit still trains is not harmless
        lines = [*(self._problem_lines() if problems else []), *kept]
        if report.gradient_errors:  # fit itself will fail: say why first
            lines[:0] = gradient_error_message(report).splitlines()
        if not report.gradient_sites and not self.still_trained:  # Keras's train_step asks for no gradient
            lines.insert(0, f"fit will train nothing: model {model.name!r} {FROZEN_MODEL}")
        if self.verify and self.unknown:  # the step traced now applies the optimizer to them: Keras raises
            lines.append("  (not verified: a step with these weights makes the optimizer raise 'Unknown variable')")
        elif self.verify:
            with _quiet():
                check = report.verify()
            if check.disagreements:
                lines.append("one real optimizer step disagrees with flowcheck's prediction "
                             "(a flowcheck bug: please report it with this model):")
                lines.extend(
                    f"  {c.name}: {disagreement(c.predicted, c.gradient)}" for c in check.disagreements
                )
        if self.snapshot is not None:
            lines.extend(self._snapshot_lines(report))
        if self.report_path is not None:  # after verify, so that the report shows the real step
            report.save(self.report_path, written_by="keras")
        if lines:
            self._complain("\n".join(lines), report=report)
            if problems:  # explained: Keras's bare warning about the same weights adds nothing
                self._silenced = ("ignore", _WhileFitting(self.model), UserWarning, None, 0)
                cast(list[Any], warnings.filters).insert(0, self._silenced)
                warnings._filters_mutated()  # type: ignore[attr-defined]  # noqa: SLF001 -- as filterwarnings does

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Say what the step ``fit`` keeps will do once a callback changed ``trainable`` during ``fit``."""
        __tracebackhide__ = True
        trainable = tuple(id(w) for w in self.model.trainable_weights)
        if self.report is None or trainable == self._trainable:
            return
        self._trainable = trainable  # said once per change: Keras changes its step only when told to
        lines = self._kept_step_lines(self.model, self.report)
        if lines:
            self._complain(f"trainable changed during fit (epoch {epoch}): " + "\n".join(lines), report=self.report)

    on_epoch_end = on_epoch_begin  # also a change made after this callback's turn at the epoch's start

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Let Keras's own warning be seen again after this ``fit``."""
        if self._silenced is not None:
            filters = cast(list[Any], warnings.filters)  # a list at run time; typeshed says Sequence
            if self._silenced in filters:
                filters.remove(self._silenced)
                warnings._filters_mutated()  # type: ignore[attr-defined]  # noqa: SLF001
            self._silenced = None

    def _kept_step_lines(self, model: Any, report: Report) -> list[str]:
        """What the step Keras kept from an earlier ``fit`` trains unlike today's ``trainable`` flags."""
        assigned = kept_assignments(model)  # the kept step's graphs, walked once for both questions
        left_out = left_out_by_fit(model, assigned, report.gradient_sites)
        self.unknown = tuple(r for r in map(report.result, left_out) if id(r.variable) not in self._cut)
        self.still_trained = tuple(map(report.result, frozen_but_trained(model, assigned)))
        trained = {id(r.variable) for r in self.still_trained}  # not harmless: fit trains them
        self.harmless = tuple(h for h in self.harmless if id(h[0].variable) not in trained)
        lines = left_out_lines(model.name, [r.name for r in self.unknown], assigned is not None) if self.unknown else []
        if self.still_trained:
            lines += still_trained_lines(model.name, [r.name for r in self.still_trained])
        return lines

    def _snapshot_lines(self, report: Report) -> list[str]:
        """What is wrong with the flow against ``snapshot`` (nothing when it matches or was written)."""
        from pathlib import Path

        from flowcheck.snapshot.build import snapshot_of
        from flowcheck.snapshot.diff import check_snapshot, format_check, in_ci

        path = Path(self.snapshot)
        check = self.snapshot_check = check_snapshot(snapshot_of(report, path.parent), path, create=not in_ci())
        if check.status == "written":
            print(f"flowcheck: {format_check(check, report.target, str(path))[0]}; commit it", file=sys.stderr)
        elif check.status == "missing":
            return [f"no gradient-flow snapshot {path} for model {self.model.name!r}, and CI is set: "
                    "snapshots are not written in CI; run fit once without CI and commit the file"]
        elif check.status == "changed":
            return [*format_check(check, report.target, str(path)),
                    f"  if the change is intended, delete {path} and run fit again to record the new flow"]
        return []

    def _problem_lines(self) -> list[str]:
        n = len(self.problems)
        lines = [
            f"{n} trainable weight{'s' if n != 1 else ''} of model {self.model.name!r} will receive no "
            "gradient from its loss, so fit will not train them:"
        ]
        barriers = {key: cut for key, (_, cut) in self._cut.items()}
        for verdict in (Verdict.BLOCKED, Verdict.UNUSED):
            members = [r for r in self.problems if self._cut[id(r.variable)][0] is verdict]
            if members:
                lines.extend(_format_results(str(verdict), members, verdict, barriers))
        never = [r for r in self.problems if self._cut[id(r.variable)][0] is None]
        if never:
            lines.append(f"  {NEVER_TRAINED}:")
            lines.extend(f"    {r.name}" for r in never)
        if self.harmless:
            statistics = sum(reason.startswith("BatchNormalization") for _, reason in self.harmless)
            lines.append(
                f"  (harmless, no gradient by design: {statistics} BatchNormalization moving statistics, "
                f"{len(self.harmless) - statistics} non-trainable weights)"
            )
        if self.report_path is not None:
            lines.append(f"  report: {self.report_path}")
        return lines

    def _complain(self, message: str, report: Report | None = None, error: type[Exception] | None = None) -> None:
        __tracebackhide__ = True
        if self.on_blocked == "warn":
            warnings.warn(f"flowcheck: {message}", GradientFlowWarning, stacklevel=_user_stacklevel())
        elif report is not None:
            raise GradientFlowAssertionError(message, report)
        else:
            raise (error or InvalidTargetError)(message)

    def _sample_batch(self) -> tuple[Any, Any, Any]:
        if self.sample is not None:
            return _element(tuple(self.sample))
        found = _fit_arguments(self.model)
        if found is None:
            raise InvalidTargetError(
                "GradientFlowCheck found no fit call to take a sample batch from: "
                "pass GradientFlowCheck(sample=(x, y))"
            )
        with _random_states_kept():  # a PyDataset's __getitem__ may draw augmentations from them
            return _first_batch(*found)


def _check_options(report_path: Any, verify: Any, snapshot: Any) -> None:
    import os

    from flowcheck.render.graphviz import SUFFIXES

    for name, value in (("report_path", report_path), ("snapshot", snapshot)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise UsageError(f"{name} must be a path (str or pathlib.Path), not {type(value).__name__}")
    if report_path is not None and not str(os.fspath(report_path)).lower().endswith(SUFFIXES):
        raise UsageError(f"report_path {str(report_path)!r} must end in one of {', '.join(SUFFIXES)}")
    if not isinstance(verify, bool):
        raise UsageError(f"verify must be True or False, not {verify!r}")


class _WhileFitting:
    """A warnings filter's message matcher: Keras's bare warning, only while ``model``'s ``fit`` runs.

    Keras calls ``on_train_end`` only when ``fit`` returns; a ``fit`` stopped by an exception (Ctrl-C
    in a notebook) would leave a plain filter hiding Keras's warning in every later ``fit``.
    """

    def __init__(self, model: Any) -> None:
        self._model = weakref.ref(model)
        self._pattern = re.compile(_KERAS_WARNING, re.IGNORECASE)  # as filterwarnings compiles it

    def match(self, text: str) -> bool:
        model = self._model()
        if model is None or self._pattern.match(text) is None:
            return False
        frame: Any = sys._getframe(1)  # noqa: SLF001 -- is the model's fit on the stack?
        while frame is not None:  # the warning comes from deep inside the traced step: walk it all
            if frame.f_code.co_name == "fit" and frame.f_locals.get("self") is model:
                return True
            frame = frame.f_back
        return False


def _judge(
    report: Report, statistics: set[int], weights: set[int]
) -> tuple[list[VariableResult], list[tuple[VariableResult, str]], dict[int, tuple[Verdict | None, tuple[Any, ...]]]]:
    """Weights fit will not train (with their barriers), and those without a gradient by design.

    Judged at the gradient sites of the model's ``train_step`` (Keras's or an override): a source a
    site cuts is a problem, and so is a trainable weight the loss reaches that no site asks for.
    Only the model's own ``weights`` can be harmless; optimizer and metric state is no finding.
    """
    problems: list[VariableResult] = []
    barriers: dict[int, tuple[Verdict | None, tuple[Any, ...]]] = {}
    for site in report.gradient_sites:
        for source in site.cut:
            r = report.result(source.variable)
            if id(r.variable) not in barriers:
                problems.append(r)
                barriers[id(r.variable)] = (source.verdict, source.barriers)
    for r in report.never_trained:
        if id(r.variable) not in barriers:
            problems.append(r)
            barriers[id(r.variable)] = (None, ())
    listed = {id(report.result(s.variable).variable) for site in report.gradient_sites for s in site.sources}
    harmless: list[tuple[VariableResult, str]] = []
    for r in report._everything:  # noqa: SLF001 -- the state a step's report leaves out of variables
        if r.receives or id(r.variable) in barriers or id(r.variable) in listed or id(r.variable) not in weights:
            continue
        if id(r.variable) in statistics:
            harmless.append((r, "BatchNormalization moving statistic (assigned in training, never differentiated)"))
        elif not r.trainable:
            harmless.append((r, "non-trainable (a frozen layer, optimizer or metric state)"))
    return problems, harmless, barriers


def _user_stacklevel() -> int:
    """The ``stacklevel`` that attributes a warning to the user's ``fit`` call, not to Keras or us."""
    frame: Any = sys._getframe(1)  # noqa: SLF001 -- stacklevel 1: the function that calls warn
    level = 1
    while frame is not None and is_library_file(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    return level if frame is not None else 2


def _frames() -> Iterator[Any]:
    frame: Any = sys._getframe(1)  # noqa: SLF001 -- the caller chain is the only way to fit's arguments
    for _ in range(_MAX_FRAMES):
        if frame is None:
            return
        yield frame
        frame = frame.f_back


def _fit_arguments(model: Any) -> tuple[Any, Any, Any, Any] | None:
    """The training data of the ``fit`` call running ``model``: ``(x, y, sample_weight, batch_size)``.

    Keras gives callbacks no access to the data, so the data is read from ``fit``'s frame (after
    ``validation_split`` it holds the training part only).
    """
    for frame in _frames():
        local = frame.f_locals
        if frame.f_code.co_name == "fit" and local.get("self") is model and "x" in local:
            return local.get("x"), local.get("y"), local.get("sample_weight"), local.get("batch_size")
    return None


def _first_batch(x: Any, y: Any, sample_weight: Any, batch_size: Any) -> tuple[Any, Any, Any]:
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        return _element(first_element(x))
    if isinstance(x, keras.utils.PyDataset):
        return _element(x[0])
    if inspect.isgenerator(x) or isinstance(x, Iterator):
        raise InvalidTargetError(
            "fit was given a Python generator: taking a sample batch would consume training data; "
            "pass GradientFlowCheck(sample=(x, y))"
        )
    n = int(batch_size or _DEFAULT_BATCH)

    def head(data: Any) -> Any:
        return None if data is None else keras.tree.map_structure(lambda a: a[:n], data)

    return head(x), head(y), head(sample_weight)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The warnings of the user's code that flowcheck's trace provokes: ``fit``'s own trace gives them, once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _random_states_kept() -> Iterator[None]:
    """Python's, NumPy's and TensorFlow's global random states as they were: fit draws from them next."""
    from flowcheck.trace.eager import own_random_seeds
    from flowcheck.trace.state import global_seed_generator_kept
    from flowcheck.verify.step import restoring_global_generator

    with global_seed_generator_kept(), own_random_seeds(), restoring_global_generator():
        yield


def _element(element: Any) -> tuple[Any, Any, Any]:
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(element)
    return x, y, sample_weight


def _moving_statistics(model: Any) -> set[int]:
    """ids of the moving mean and variance of every BatchNormalization layer in the model."""
    found: set[int] = set()
    for layer in model._flatten_layers(include_self=True):  # noqa: SLF001 -- nested models included
        if isinstance(layer, keras.layers.BatchNormalization):
            found.update(id(v) for v in (layer.moving_mean, layer.moving_variance) if v is not None)
    return found
