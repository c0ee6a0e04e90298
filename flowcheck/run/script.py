"""``flowcheck run``: execute the user's script as ``python`` would, with the hooks installed.

The script runs as ``__main__`` (``runpy``), with ``sys.argv`` = ``[script, *arguments]`` and its
directory first on ``sys.path`` (or a package's module, as ``python -m`` runs it:
:mod:`flowcheck.run.entry`); every training step of its first round is analyzed at its first call
(:mod:`flowcheck.run.intercept`), and the script ends when one of them is about to run again, or
goes on (``--continue``) exactly as it would have without flowcheck.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowcheck.errors import FlowcheckError, TraceError
from flowcheck.source.exceptions import describe_exception
from flowcheck.run.intercept import KERAS_WARNING, Interceptor
from flowcheck.run.eager_trace import explain
from flowcheck.run.step import Step, StopScript, keep_values, never_trained_ids, updated_ids
from flowcheck.run.stop import release
from flowcheck.run.entry import Entry, import_time_environment, module_entry, package_hint, script_entry

__all__ = [
    "RunOptions", "RunResult", "import_tensorflow", "quiet_tensorflow_import", "run_script",
    "variable_owners",
]

# TensorFlow's start-up notices (absl and oneDNN, from C++, printed whatever TF_CPP_MIN_LOG_LEVEL says).
_NOTICE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called|oneDNN custom operations are on"
    r"|cpu_feature_guard\.cc|^To enable the following instructions: .*rebuild TensorFlow"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered"
    r"|TF-TRT Warning|Could not find cuda drivers|cuda_executor\.cc"
)


@dataclass(frozen=True)
class RunOptions:
    """What ``flowcheck run`` was asked.

    Attributes:
        script: The script's path ("" with ``module``).
        module: ``-m``: the module to run as ``python -m`` runs it, instead of a script.
        arguments: Its own arguments (``sys.argv[1:]`` while it runs).
        keep_going: ``--continue``: let the script train on once its first round is analyzed.
        verify: Run the step once for real and compare (``--no-verify`` clears it).
        optimizer: ``--optimizer``, where flowcheck supplies the optimizer.
        learning_rate: ``--learning-rate``.
        verbose: Show TensorFlow's start-up notices.
    """

    script: str
    module: str | None = None
    arguments: tuple[str, ...] = ()
    keep_going: bool = False
    verify: bool = True
    optimizer: str | None = None
    learning_rate: float | None = None
    verbose: bool = False


@dataclass
class RunResult:
    """What the run found.

    Attributes:
        script: What ran, as the report names it: the script's path, or the ``-m`` module's file.
        steps: The analyzed training steps, in the order of their first call.
        exit_code: The script's own ``sys.exit`` code, when it called it.
        error: The script raised (outside an analyzed step): one line with its file:line.
        stopped: flowcheck ended the script after its first round.
        untrained: Keras ``fit`` / ``train_on_batch`` calls of the round that train nothing, or not what
            ``trainable`` says now (the step Keras kept from their first call), one line each.
        graph_calls: The TF1 graph-mode gradient calls the script made (``"kind at file:line"``).
    """

    script: str = ""
    steps: list[Step] = field(default_factory=list)
    exit_code: int | str | None = None
    error: str | None = None
    stopped: bool = False
    untrained: list[str] = field(default_factory=list)
    graph_calls: list[str] = field(default_factory=list)


@contextlib.contextmanager
def quiet_tensorflow_import(verbose: bool) -> Iterator[None]:
    """Import TensorFlow and Keras with their start-up notices filtered out at the file descriptor.

    Everything else written to stderr meanwhile is written again once the import is done.
    """
    if verbose or "tensorflow" in sys.modules:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                captured.seek(0)
                kept = [line for line in captured.read().splitlines(keepends=True)
                        if not _NOTICE.search(line.decode(errors="replace"))]
                if kept:
                    os.write(2, b"".join(kept))
    finally:
        os.close(saved)


def import_tensorflow(verbose: bool) -> None:
    """Import TensorFlow and Keras quietly (see :func:`quiet_tensorflow_import`)."""
    with quiet_tensorflow_import(verbose):
        import keras  # noqa: F401
        import tensorflow  # noqa: F401


def run_script(options: RunOptions) -> RunResult:
    """Run the script with the hooks installed; analyze, verify and restore each first step.

    Raises:
        TargetLoadError: the script is not a readable Python file.
    """
    entry = script_entry(options.script) if options.module is None else None  # checked as analyze checks a file
    if entry is not None:
        import_time_environment(entry)
    import_tensorflow(options.verbose)
    if entry is None:
        entry = _module(options)
    full = entry.full
    from flowcheck.run.tf1 import graph_mode_recording, made_calls  # TF1 gradient calls, recorded as the graph is built

    result = RunResult(script=entry.shown)
    interceptor = Interceptor(_analyzer(options), options.keep_going, _session_analyzer(options))
    saved_argv, saved_path, saved_globals = list(sys.argv), list(sys.path), _global_settings()
    saved_cwd = os.getcwd()  # a script that chdirs into its run folder: -o files and paths stay the command's
    sys.argv = [entry.argv0, *options.arguments]
    sys.path.insert(0, entry.path0)
    try:
        with interceptor.installed(), graph_mode_recording(), warnings.catch_warnings():
            if not options.keep_going:  # the report explains each None gradient Keras warns about
                warnings.filterwarnings("ignore", message=KERAS_WARNING)
            entry.run()
    except StopScript:
        result.stopped = True
    except SystemExit as exc:
        result.exit_code = exc.code
        if interceptor.steps and exc.code not in (None, 0):  # sys.exit(1) after its first round: the script failed
            result.error = describe_exception(exc, full)
    except KeyboardInterrupt as exc:  # Ctrl-C in a --continue run's training: the steps analyzed are kept
        if not interceptor.steps:
            raise  # nothing to report: the command says "interrupted" in one line
        result.error = describe_exception(exc, full)
    except Exception as exc:  # noqa: BLE001 -- the script's own error, told in one line
        failed = graph_mode_failure(exc)  # a TF1 minimize whose loss cuts everything is a finding
        if failed is not None:
            interceptor.steps.append(failed)
        else:
            result.error = describe_exception(exc, full) + package_hint(exc, entry)
    finally:
        release()  # the stop raised at every line of a script that swallowed it
        sys.argv[:] = saved_argv
        sys.path[:] = saved_path
        with contextlib.suppress(OSError):  # (the folder it was started in may have gone meanwhile)
            os.chdir(saved_cwd)
        _restore_global_settings(saved_globals)  # the script may have been ended before it undid them
        result.steps, result.untrained, result.graph_calls = interceptor.steps, interceptor.untrained, made_calls()
    for step in result.steps:  # verified by the script's first call of the step, or not (it never came)
        if step.first_call is not None:
            step.verification, step.error = step.first_call.verification, step.error or step.first_call.error
            step.report.verification = step.verification  # as Report.verify keeps it: diagrams show it
    for step in result.steps:  # an eager site's cuts, from a trace of the function holding its tape
        explain(step)
    if result.steps:  # gradient calls the script built that no step of its first round ran
        result.steps += _graph_calls_not_run(result.steps)
    _never_trained_across(result.steps)
    return result


def _module(options: RunOptions) -> Entry:
    """``-m NAME``: found with the current folder first on ``sys.path``, as ``python -m`` finds it."""
    saved = list(sys.path)
    sys.path.insert(0, os.getcwd())
    try:
        return module_entry(str(options.module))
    finally:
        sys.path[:] = saved


def _graph_calls_not_run(steps: Sequence[Step]) -> list[Step]:
    from flowcheck.run import tf1 as _tf1

    covered = {id(c) for s in steps for c in getattr(s.report, "calls", ())}
    return [Step("tf1 graph", "gradient calls no Session.run computed", r.gradient_sites[0].source, report=r)
            for r in _tf1.not_run_reports(covered)]


def _global_settings() -> tuple[Any, bool]:
    import keras
    import tensorflow as tf

    return keras.mixed_precision.global_policy(), tf.config.functions_run_eagerly()


def _restore_global_settings(saved: tuple[Any, bool]) -> None:
    import keras
    import tensorflow as tf

    keras.mixed_precision.set_global_policy(saved[0])
    tf.config.run_functions_eagerly(saved[1])


def _never_trained_across(steps: Sequence[Step]) -> None:
    """A variable another step's site asks for does train: "never trained" is judged over all steps."""
    remaining, moved = never_trained_ids(steps), updated_ids(steps)
    for report in (s.report for s in steps if getattr(s.report, "gradient_sites", None) is not None):
        kept = tuple(r for r in report.never_trained if id(r.variable) in remaining)
        n = sum(id(r.variable) in moved for r in report.never_trained)
        report.never_trained = kept
        report.notes += (f"{n} variable{'s' if n != 1 else ''} the step reads and no gradient call asks for "
                         "changed between its calls (the script updates them itself, as a target network by "
                         "assign or set_weights): trained without a gradient, not findings",) if n else ()


def _analyzer(options: RunOptions) -> Any:
    def analyze_step(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], step: Step) -> None:
        import flowcheck
        from flowcheck.trace.steps import EAGER_FALLBACK

        step.owners = variable_owners(target, args)
        fallback = EAGER_FALLBACK.set(False)  # an untraceable eager train_step: judged at its calls as it runs
        try:
            step.report = flowcheck.analyze(target, *args, **kwargs)
            keep_values(step)  # before the step's first run: what the script itself then moves trains
            if options.verify and step.raised is None:  # a step whose own trace raised cannot run
                _verify_step(step, target, args, kwargs, options)
        except FlowcheckError as exc:
            step.error = f"{type(exc).__name__}: {' '.join(str(exc).split())}" if step.raised is None else \
                "its trace raised (below) before it was complete: no step to read"
            step.untraceable = isinstance(exc, TraceError) and step.report is None
        except Exception as exc:  # noqa: BLE001 -- not the script's failure but flowcheck's: said as such
            what = "verification failed" if step.report is not None else "flowcheck failed while analyzing it"
            step.error = f"{what}: {describe_exception(exc, None)}"
        finally:
            EAGER_FALLBACK.reset(fallback)

    return analyze_step


def _verify_step(step: Step, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], options: RunOptions) -> None:
    """Verify the step: by the script's own first call of it, else by a run of it now, state restored."""
    from tensorflow.python.eager import record

    own = _first_call(step.report, target) if not record.could_possibly_record() else None  # else: see FirstCall._run
    if own is not None and not options.keep_going:
        step.first_call = own  # the script's own call verifies it
        return
    why = _unverifiable(step.report)
    if why is not None:
        step.report.notes += (why,)
        return
    if own is not None:  # --continue: its own trace, run now (its Python is not run again), restored
        step.verification = own.run_ahead(args, kwargs)
    if step.verification is None:  # (a tape of the script's around the call records this run too)
        step.verification = _verify(step.report, options)


def _first_call(report: Any, target: Any) -> Any:
    """The script's next call of ``target`` as the step's verification (None: verify it now).

    When the script is ended after its first round, the step's first run is then this call, as
    without flowcheck, and nothing needs restoring. Under ``--continue`` the same run is made ahead of
    the call and restored instead, so that the script's own function makes its first call itself.
    """
    from flowcheck.verify.first_call import first_call

    traced = getattr(report, "_traced", None)
    if traced is None or traced.function is not target or not report.gradient_sites:
        return None
    return first_call(traced, report.gradient_sites)


def _unverifiable(report: Any) -> str | None:
    """Why the step is not run to verify it (None: it is): the run would change what the script does next."""
    from flowcheck.verify.iterators import python_effects
    from flowcheck.verify.step import unrestorable

    traced = getattr(report, "_traced", None)
    return (unrestorable(traced) or python_effects(traced)) if traced is not None and traced.step else None


def _verify(report: Any, options: RunOptions) -> Any:
    if options.optimizer is None and options.learning_rate is None:
        return report.verify()
    return report.verify(optimizer=options.optimizer, learning_rate=options.learning_rate)


def graph_mode_failure(exc: BaseException) -> Step | None:
    """The step a TF1 script's graph-mode gradient call failed in, as a finding (None: not one)."""
    from flowcheck.run import tf1 as _tf1

    report = _tf1.analyze_failed_call(exc)
    if report is None:
        return None
    site = report.gradient_sites[0]
    return Step("tf1 graph", f"{site.kind}, raised while the graph was built", site.source, report=report)


def _session_analyzer(options: RunOptions) -> Any:
    from flowcheck.run import tf1 as _tf1

    return _tf1.SessionSteps(verify=options.verify)


def variable_owners(target: Any, args: Sequence[Any]) -> dict[int, tuple[str, ...]]:
    """For each variable (by id of its backing tf.Variable): the Keras models and layers owning it."""
    import keras

    layers: list[Any] = []
    seen: set[int] = set()

    def visit(value: Any, depth: int) -> None:
        if isinstance(value, keras.layers.Layer) and id(value) not in seen:
            seen.add(id(value))
            layers.append(value)
            for sub in value._flatten_layers(include_self=False):  # noqa: SLF001
                visit(sub, depth)
        elif depth > 0 and hasattr(value, "__dict__") and not isinstance(value, type):
            for attr in list(vars(value).values()):
                visit(attr, depth - 1)

    for value in (target, *args, *_closure(target)):
        visit(value, 1)
    owners: dict[int, list[str]] = {}
    for layer in layers:
        for v in layer.variables:
            owners.setdefault(id(getattr(v, "value", v)), []).append(layer.name)
    return {k: tuple(dict.fromkeys(v)) for k, v in owners.items()}


def _closure(target: Any) -> list[Any]:
    function = getattr(target, "python_function", target)
    found: list[Any] = [getattr(function, "__self__", None)]
    function = getattr(function, "__func__", function)
    for cell in getattr(function, "__closure__", None) or ():
        with contextlib.suppress(ValueError):
            found.append(cell.cell_contents)
    code = getattr(function, "__code__", None)
    globals_ = getattr(function, "__globals__", {})
    if code is not None:
        found.extend(globals_[n] for n in code.co_names if n in globals_)
    return [f for f in found if f is not None]
