"""The hooks ``flowcheck run`` installs before the user's script runs, and what they find.

Four kinds of training step are caught at their first call, with that call's real inputs:

* Keras ``Model.fit`` / ``train_on_batch``: the model's ``train_function`` (``make_train_function``) is wrapped; its
  first batch, analyzed through the model's ``train_step``, goes to the real step.
* a ``tf.function`` whose trace asks for a gradient: traced into its own cache (where the real call finds it), and
  analyzed before it runs when a ``tape.gradient`` or ``tf.gradients`` ran inside.
* TF1 ``Session.run`` (the ``tf1`` stage says which gradient calls the fetches compute: the step).
* an eager ``tape.gradient`` outside any ``tf.function``: TensorFlow's own answer, per source (its cuts named by a
  trace of the script's function holding the tape, once the script has ended); a ``fit`` run eagerly, its model's.

A step analyzed once that is about to run again ends the script (:class:`StopScript`), unless ``--continue`` lets it go
on (hooks then pass calls through) or the round looks unfinished (``round_unfinished``: a WGAN's generator after its critic
steps). A Keras step called again from another line (a GAN's discriminator on real, then fake images) is the first round.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Protocol

from flowcheck.run.batches import first_batch, keras_caller, kept_step_text, one_step_function, trainable_ids, unwrap_train_function
from flowcheck.run.eager_trace import holder
from flowcheck.run.step import Step, StopScript, code_file, round_unfinished, step_name, untrained_text
from flowcheck.run.stop import stop_for_good, stop_unwinding
from flowcheck.run.tape_exits import TapeExits
from flowcheck.source.exceptions import describe_exception
from flowcheck.source.lines import call_column, call_path, call_site, called_at

__all__ = ["KERAS_WARNING", "Interceptor"]

KERAS_WARNING = r"Gradients do not exist for variables"  # Keras's, for None gradients: the report explains it instead


# (target, args, kwargs, step) -> None: analyzes, verifies, fills step.report / .verification / .first_call / .error
Analyzer = Callable[[Any, tuple[Any, ...], dict[str, Any], Step], None]


class SessionAnalyzer(Protocol):
    """From the tf1 stage: ``key``, the step a ``Session.run`` makes (None: none); a call, its report."""
    def key(self, session: Any, fetches: Any) -> Hashable | None: ...
    def __call__(self, session: Any, fetches: Any, feed_dict: Any) -> Any: ...


class Interceptor:
    """Installs the hooks for the duration of :meth:`installed` and collects the analyzed steps."""

    def __init__(self, analyzer: Analyzer, keep_going: bool, session_analyzer: SessionAnalyzer | None = None) -> None:
        self.steps: list[Step] = []
        self._analyzer = analyzer
        self._session_analyzer = session_analyzer
        self._keep_going = keep_going
        self._stops = 0
        self._repeats = 0  # repeated calls let through while the round looked unfinished
        self._done = False  # --continue, after the first round: pass everything through
        self._busy = 0  # inside a hooked call: nested hooks pass through
        self._seen: dict[Any, Any] = {}  # step key -> the object it is about (kept alive) or None: no gradient
        self._kept: list[Any] = []  # functions without a gradient, kept alive so that their ids stay unique
        self._site_seen = False
        self._eager_tapes: dict[tuple[Any, ...], tuple[Any, int]] = {}  # eager call position -> (its tape, calls)
        self._eager_paths: set[tuple[Any, Any]] = set()  # (eager step key, the user's lines calling it) seen this round
        self._restore: list[Callable[[], None]] = []
        self._first_calls: dict[int, Any] = {}  # id of an analyzed tf.function -> its next call's FirstCall or None
        self._keras_sites: set[tuple[Any, Any]] = set()  # (step key, the user's lines calling it) seen this round
        self.untrained: list[str] = []  # Keras fit / train_on_batch calls that train nothing, told in one line
        self._tape_exits = TapeExits(self._active)  # values the script takes out of a tape's block
        self._keras_eager: str | None = None  # a fit run eagerly (untraceable): its eager site is Keras's train_step

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interceptor]:
        """Patch TensorFlow and Keras; undo every patch on exit."""
        try:
            for patch in (self._patch_tape, self._patch_function, self._patch_keras, self._patch_session):
                patch()
            with self._tape_exits.installed():
                yield self
        finally:
            for undo in reversed(self._restore):
                undo()
            self._restore.clear()

    # --- shared machinery ---------------------------------------------------------------------

    def _patch(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = owner.__dict__[name]
        setattr(owner, name, make(original))
        self._restore.append(lambda: setattr(owner, name, original))

    def _active(self) -> bool:
        from flowcheck.trace.sites import in_flowcheck

        return not self._done and self._busy == 0 and not in_flowcheck()

    @contextlib.contextmanager
    def _inside(self, quiet: bool = True) -> Iterator[None]:
        self._busy += 1
        try:
            with warnings.catch_warnings():
                if quiet and not self._keep_going:
                    warnings.filterwarnings("ignore", message=KERAS_WARNING)
                yield
        finally:
            self._busy -= 1

    def _again(self) -> None:
        """An analyzed step is about to run again: the round is over, unless it looks unfinished (it passes)."""
        if self._stops == 0 and round_unfinished(self.steps, self._repeats):
            self._repeats += 1
        elif self._keep_going:
            self._done = True
        else:
            self._stops += 1
            (stop_for_good if self._stops > 1 else stop_unwinding)()  # (a bare except: swallowed the first)
            raise StopScript

    def _analyze(self, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], step: Step) -> None:
        self.steps.append(step)
        with self._inside():
            self._analyzer(target, args, kwargs, step)

    # --- eager tape.gradient, and gradient calls seen while a tf.function traces ----------------

    def _patch_tape(self) -> None:
        import tensorflow as tf
        from tensorflow.python.eager import backprop
        from tensorflow.python.ops import gradients_util

        def make(name: str) -> Callable[[Any], Any]:  # gradient, jacobian, batch_jacobian
            def wrap(original: Any) -> Any:
                def method(tape: Any, target: Any, sources: Any, *args: Any, **kwargs: Any) -> Any:
                    if not tf.executing_eagerly():
                        self._site_seen = True
                    if not tf.executing_eagerly() or not self._active():
                        return original(tape, target, sources, *args, **kwargs)
                    return self._eager_gradient(name, original, tape, target, sources, args, kwargs)

                return method

            return wrap

        def make_helper(original: Any) -> Any:
            def helper(*args: Any, **kwargs: Any) -> Any:
                self._site_seen = True
                return original(*args, **kwargs)

            return helper

        for name in ("gradient", "jacobian", "batch_jacobian"):  # eagerly, a jacobian runs TensorFlow's own pfor function
            self._patch(backprop.GradientTape, name, make(name))
        self._patch(gradients_util, "_GradientsHelper", make_helper)

    def _eager_gradient(self, name: str, original: Any, tape: Any, target: Any, sources: Any, args: Any, kwargs: Any) -> Any:
        from tensorflow.python.eager import backprop

        from flowcheck.trace.recording import record_sites
        from flowcheck.trace.sites import SiteRecorder

        call = call_site()
        # Two calls on one line (u_t, u_x = tape.gradient(u, t), tape.gradient(u, x)) are two sites (columns); the same call
        # again is the next round, unless its function is called from another line or a tape around its first call records (MAML).
        key = self._eager_key(("eager", call.file, call.line, call_column()) if call else ("eager", id(tape)), tape)
        path = call_path()
        if key in self._seen:
            if (key, path) not in self._eager_paths or self._tape_exits.still_around(key):
                self._eager_paths.add((key, path))
                with self._inside():
                    return original(tape, target, sources, *args, **kwargs)
            return self._eager_again(self._seen[key], lambda: original(tape, target, sources, *args, **kwargs), sources)
        self._eager_paths.add((key, path))
        self._tape_exits.first_call(key, tape)
        named = self._keras_eager or (call.function if call and call.function[:1] != "<" else f"tape.{name}")
        step, self._keras_eager = Step("eager tape.gradient", named, called_at(call)), None
        self._seen[key] = step
        self.steps.append(step)
        recorder = SiteRecorder()
        try:
            with self._inside(), record_sites() as recorder:  # through the recorder's own wrapper
                return getattr(backprop.GradientTape, name)(tape, target, sources, *args, **kwargs)
        except Exception:
            if self._keep_going:
                self._done = True
                raise
            raise StopScript from None
        finally:
            if recorder.eager_calls:
                step.eager = self._tape_exits.site(recorder.eager_calls[-1], tape, target)
                if step.eager.blocked:  # named by a trace of the function holding the tape (none at top level), as the script ends
                    step.held_by = holder(call, recorder.eager_calls[-1].nth, self._tape_exits.lines(tape))

    def _eager_key(self, position: tuple[Any, ...], tape: Any) -> tuple[Any, ...]:
        """The step key of an eager call at ``position``. The same tape asking again from there (a
        persistent tape's loop over a multi-task model's losses) is another call of the same round."""
        first = self._eager_tapes.get(position)
        if first is None or first[0]() is not tape:
            self._eager_tapes[position] = (weakref.ref(tape), 0)
            return position
        self._eager_tapes[position] = (first[0], first[1] + 1)
        return (*position, first[1] + 1)

    def _eager_again(self, step: Step, call: Callable[[], Any], sources: Any) -> Any:
        """An eager site's next call, compared with its first one's answer; then the first round is over."""
        from flowcheck.trace.eager_sites import next_call_finding

        try:
            with self._inside():
                result = call()
        except Exception:
            self._again()  # with --continue the script's own error, as without flowcheck
            raise
        step.next_call = step.next_call or next_call_finding(step.eager, sources, result)  # the first repeat's
        self._again()
        return result

    # --- tf.function ------------------------------------------------------------------------------

    def _patch_function(self) -> None:
        from tensorflow.python.eager.polymorphic_function import polymorphic_function

        def make(original: Any) -> Any:
            def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
                import tensorflow as tf
                if self._first_calls.get(id(fn)) is not None:  # the call after its analysis verifies the step
                    return self._first_calls.pop(id(fn)).call(original, fn, args, kwargs)
                if not self._active() or not tf.executing_eagerly() or "/tensorflow/python/" in code_file(fn) \
                        or tf.config.functions_run_eagerly():  # its Python runs eagerly: its tapes are eager ones
                    return original(fn, *args, **kwargs)  # (TensorFlow's own functions are not the script's steps)
                return self._function_call(original, fn, args, kwargs)

            return call

        self._patch(polymorphic_function.Function, "__call__", make)

    def _function_call(self, original: Any, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key = ("function", id(fn))
        if key in self._seen:
            if self._seen[key] is None:  # no gradient in it: not a training step
                with self._inside(quiet=False):
                    return original(fn, *args, **kwargs)
            with self._inside():  # a repeat let through (the round unfinished) is no new step
                self._again()
                return original(fn, *args, **kwargs)
        name = step_name(fn)
        step = Step("tf.function", name, call_site())
        if not self._traced_step(fn, args, step, kwargs):
            self._seen[key] = None
            self._kept.append(fn)  # its id stays its own while the script runs
            with self._inside(quiet=False):
                return original(fn, *args, **kwargs)
        self._seen[key] = fn
        return self._real_call(step, lambda: fn(*args, **kwargs))  # through the hook: it may verify the step

    def _traced_step(
        self, fn: Any, args: tuple[Any, ...], step: Step, kwargs: dict[str, Any] | None = None,
        fallback: tuple[Any, tuple[Any, ...]] | None = None,
    ) -> bool:
        """Trace ``fn`` into its own cache; when it asks for a gradient, analyze that trace (True), or
        ``fallback`` (target, args) instead when the trace fails.

        Raises:
            StopScript: the trace raised after asking for gradients (e.g. "No gradients provided
                for any variable"): the step cannot run, and the report explains why.
        """
        from flowcheck.trace.reuse import reusing_trace
        from flowcheck.trace.state import without_update_notes

        kwargs = kwargs or {}
        recorder, trace_error = self._has_gradient_site(fn, args, kwargs)
        if recorder is None:
            if trace_error is not None:
                raise trace_error  # what the real call raises
            return False
        if trace_error is None:
            with reusing_trace(recorder):  # analyze the trace just made, not a fresh copy's
                self._analyze(fn, args, kwargs, step)
            self._first_calls[id(fn)] = step.first_call
            if step.report is not None:
                step.report.notes = without_update_notes(step.report.notes, fn, args)
            return True
        target, target_args = fallback or (fn, args)
        step.raised = describe_exception(trace_error, None)  # before the analysis: no step to verify
        self._analyze(target, target_args, kwargs, step)
        if self._keep_going:
            self._done = True
            raise trace_error
        raise StopScript from trace_error

    def _has_gradient_site(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Exception | None]:
        """Trace the call (into the function's own cache, as its first call would) with the gradient
        calls recorded: the recorder when it asks for a gradient (else None), and what the trace raised."""
        from flowcheck.source.positions import recording as positions
        from flowcheck.trace.recording import nested_functions_afresh, record_sites
        from flowcheck.trace.sites import running_user_code
        from flowcheck.trace.state import built_state, unbuild

        self._site_seen = False
        built = built_state(fn, args)
        # The trace the real call reuses: Keras's None-gradient warning is provoked here, and silenced.
        with self._inside(), running_user_code(), record_sites() as recorder, positions(), nested_functions_afresh():
            try:
                fn.get_concrete_function(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 -- the user's own error, raised again by the caller
                unbuild(built)  # slots built inside a failed trace are unusable: the next build makes them again
                return (recorder if self._site_seen or recorder.calls else None), exc
        return (recorder if self._site_seen or recorder.calls else None), None

    def _real_call(self, step: Step, call: Callable[[], Any]) -> Any:
        """Run the analyzed step for real; its failure is part of the finding."""
        with self._inside():
            try:
                return call()
            except Exception as exc:
                step.raised = describe_exception(exc, None)
                if self._keep_going:
                    self._done = True
                    raise
                raise StopScript from exc

    # --- Keras fit / train_on_batch -----------------------------------------------------------

    def _patch_keras(self) -> None:
        from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

        def make(original: Any) -> Any:
            def make_train_function(model: Any, force: bool = False) -> Any:
                result = original(model, force)
                function = model.train_function
                if function is not None and not getattr(function, "_flowcheck_wrapped", False):
                    model.train_function = self._train_function(model, function)
                    self._restore.append(lambda: unwrap_train_function(model, function))
                return result if result is None else model.train_function

            return make_train_function

        self._patch(TensorFlowTrainer, "make_train_function", make)

    def _train_function(self, model: Any, function: Any) -> Any:
        from keras.src.trainers.data_adapters import data_adapter_utils

        from flowcheck.trace.kept_step import outputs_without_loss

        def train_function(iterator: Any) -> Any:
            if not self._active():
                return function(iterator)
            # (its train function: a compile() after a fit makes another, a later phase's distinct step)
            key, site, path = ("keras", id(model), id(function)), call_site(), call_path()
            if key in self._seen:  # the step fit keeps, maybe after a trainable change it ignores: told
                changed = kept_step_text(self._seen[key], site)
                self.untrained.extend([changed] if changed and changed not in self.untrained else [])
                if self._seen[key] is None or (key, path) not in self._keras_sites:
                    self._keras_sites.add((key, path))  # no gradient, or a call of this round from another line
                    with self._inside(quiet=self._seen[key] is not None):
                        return function(iterator)
                self._again()
                with self._inside():  # a repeat let through: Keras's own tf.function in it is no new step
                    return function(iterator)
            step = Step("keras train_step", f"{model.name}.{keras_caller()}", site)
            self._seen[key], self._keras_sites = (model, step, trainable_ids(model)), self._keras_sites | {(key, path)}
            data, again = first_batch(iterator, exact=self._keep_going)
            x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
            through_model = (model, (x, y) if sample_weight is None else (x, y, sample_weight))
            one_step = one_step_function(function)
            if one_step is None:  # run_eagerly: through the model's train_step
                self._analyze(*through_model, {}, step)
                if step.untraceable:  # (a .numpy() in it): its gradient calls are judged as they run, eagerly
                    self.steps.remove(step)
                    self._keras_eager = step.name  # its eager site: the model's train_step, not a tape of the script's
                    return function(again())
            elif not self._traced_step(one_step, (data,), step, fallback=through_model):
                self._seen[key] = None  # Keras asks for no gradient: not a training step
                self.untrained.extend([untrained_text(step, model)] if not model.trainable_weights else [])
                with self._inside(quiet=False):
                    return function(again())
            elif step.report is not None and step.report.target == "one_step_on_data":  # fit's own trace of a step
                step.report.target, step.report.target_kind = f"{model.name}.train_step", "keras model"
                step.report.notes += tuple(outputs_without_loss(model))  # (a head compile gives no loss)
            result = self._real_call(step, lambda: function(again()))
            self._seen[key] = (model, step, trainable_ids(model))  # with the weights a model built lazily made in it
            return result

        train_function._flowcheck_wrapped = True  # type: ignore[attr-defined]
        return train_function

    # --- TF1 Session.run ------------------------------------------------------------------------

    def _patch_session(self) -> None:
        if self._session_analyzer is None:
            return  # the tf1 stage provides it
        from tensorflow.python.client import session as session_lib

        from flowcheck.run.sessions import callable_hook, make_callable_hook, run_hook
        analyzer, real_run = self._session_analyzer, session_lib.BaseSession.run
        self._patch(session_lib.BaseSession, "run", lambda original: run_hook(self, analyzer, original))
        self._patch(session_lib.BaseSession, "_make_callable_from_options",
                    lambda original: callable_hook(self, analyzer, original, real_run))
        self._patch(session_lib.BaseSession, "make_callable", make_callable_hook)
