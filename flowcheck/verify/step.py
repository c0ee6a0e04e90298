"""Verifying a training step by running it: the user's own step, once, then every state restored.

The step's Python function runs eagerly on the example inputs with its own tape and optimizer,
as a training step would, while :func:`flowcheck.trace.recording.record_sites` records what each
``tape.gradient`` returned. Per source of each site: whether the gradient was None (and zero,
non-zero or non-finite) and whether the variable changed. Before the run every variable the step
can touch is saved (its captures; its models' weights, metric totals and seed-generator states;
its optimizers' slots, iteration counters, learning rates and loss-scale state; the global random
generators when they exist) and afterwards assigned back bit for bit, also when the step fails.

Under ``flowcheck run`` a traced step is verified by the script's own first call instead
(:mod:`flowcheck.verify.first_call`): nothing to restore, since that run is the script's own first step.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import tensorflow as tf
from tensorflow.python.ops import gen_dataset_ops

from flowcheck.errors import VerificationError, unchained
from flowcheck.trace.eager import own_random_seeds
from flowcheck.trace.recording import nested_functions_afresh, record_sites
from flowcheck.trace.sites import GradientSite, RecordedCall, running_user_code
from flowcheck.trace.state import (
    KERAS_NONE_WARNING, NO_GRADIENTS, all_none_tolerated, applied_optimizers, built_state, iterators_of, state_of, unbuild,
)
from flowcheck.verify.iterators import iterator_state, unrestorable
from flowcheck.verify.loss import (
    GradientState, VariableCheck, Verification, _describe, _digest, _first_line, _save_components, _state, loss_scale, scaled_text,
)

__all__ = [
    "eager_calls", "match_calls", "maybe_digest", "restoring", "restoring_global_generator", "unrestorable",
    "verification_of", "verify_step",
]


def _global_state() -> list[Any]:
    from tensorflow.python.ops import stateful_random_ops

    generator = getattr(stateful_random_ops, "global_generator", None)
    return [generator.state] if generator is not None else []


@contextlib.contextmanager
def restoring_global_generator() -> Iterator[None]:
    """``tf.random.get_global_generator()``'s state as it was (when it exists)."""
    generators = _global_state()
    saved = [_save_components(g) for g in generators]
    try:
        yield
    finally:
        _restore(generators, saved)


def _restore(variables: Sequence[Any], saved: Sequence[Any]) -> None:
    for v, values in zip(variables, saved):
        for component, value in zip(tuple(getattr(v, "_values", None) or (v,)), values):
            if not component.shape.is_compatible_with(value.shape):
                # Made in a trace the user's first call has not run yet (Keras's global seed
                # generator inside fit's step): it had no value to save, its initializer gives it one.
                continue
            component.assign(value)


class _Saved:
    """Every piece of state the step can touch, saved, to be assigned back bit for bit."""

    def __init__(self, traced: Any) -> None:
        self._built = built_state(traced.function, traced.args)
        self._variables = state_of(traced.function, traced.args, traced.variables) + _global_state()
        self._values = [_save_components(v) for v in self._variables]
        self._iterators = [(it, iterator_state(it)) for it in iterators_of(traced.function, traced.args)]

    def restore(self) -> None:
        _restore(self._variables, self._values)
        for iterator, state in self._iterators:
            if state is not None:
                gen_dataset_ops.deserialize_iterator(iterator._iterator_resource, state)  # noqa: SLF001
        unbuild(self._built)


@contextlib.contextmanager
def restoring(traced: Any) -> Iterator[None]:
    """Save every piece of state the step can touch; assign it back afterwards, also on failure."""
    saved = _Saved(traced)
    try:
        yield
    finally:
        saved.restore()


def _runs_as_called(
    traced: Any, sites: Sequence[GradientSite], control_flow: bool = True, raised: list[str] | None = None,
) -> list[RecordedCall]:
    """Run the user's step once as training calls it: a plain function eagerly, else as traced.

    A traced step without control flow (``tf.cond``, ``while_loop``) answers as an eager run of
    the same Python does, which costs no new trace: then it runs eagerly.
    """
    step = getattr(traced.function, "python_function", traced.function)
    with running_user_code(), warnings.catch_warnings(), own_random_seeds():
        # Keras's bare warning about None gradients: the report explains those sources.
        warnings.filterwarnings("ignore", message=KERAS_NONE_WARNING, category=UserWarning)
        if any(site.kind in ("tf.gradients", "tf.hessians") for site in sites):  # (both raise eagerly)
            return _run_traced(step, traced.args, traced.kwargs)
        if traced.target_kind != "callable" and not traced.eager and control_flow:  # run_eagerly: fit's is eager
            saved = _Saved(traced)
            recorded = _run_traced(step, traced.args, traced.kwargs)
            if all(call is not None for call in match_calls(sites, recorded)):
                return recorded
            saved.restore()
            # A tape inside a nested tf.function already traced is out of sight of a new trace:
            # only an eager run sees it (as traced and eager answers differ only at control flow).
        own = _own_tapes(traced, step) if traced.target_kind == "callable" and _calls_functions(traced) else []
        return _as_written(_run_eagerly(step, traced.args, traced.kwargs, [] if raised is None else raised), own)


def _calls_functions(traced: Any) -> bool:
    """Whether the step calls a nested ``tf.function`` (its trace holds a call op; none when it has no trace)."""
    graph = getattr(traced.concrete, "graph", None)
    return graph is not None and any(op.type in ("PartitionedCall", "StatefulPartitionedCall") for op in graph.get_operations())


def _own_tapes(traced: Any, step: Any) -> list[RecordedCall]:
    """The answers of the step's own eager tapes when it runs as its user calls it; its state restored after.

    :func:`_run_eagerly` runs the nested ``tf.function`` s eagerly too, to see the tapes inside them;
    but a tape of the step itself differentiates a nested function as traced (an untaken ``tf.cond``
    branch in it gets zeros, not None), so the step runs once more with them as they are.
    """
    saved = _Saved(traced)
    try:
        with record_sites() as recorder:
            try:
                step(*traced.args, **traced.kwargs)
            except ValueError as exc:
                if NO_GRADIENTS not in str(exc):
                    raise
    finally:
        saved.restore()
    return recorder.eager_calls


def _as_written(recorded: list[RecordedCall], own: Sequence[RecordedCall]) -> list[RecordedCall]:
    """``recorded``, each call of the step's own tapes replaced by its answer in ``own`` (same kind and line)."""
    left = list(own)
    calls = []
    for call in recorded:
        found = next((c for c in left if c.kind == call.kind and c.source == call.source), None)
        if found is not None:
            left.remove(found)
        calls.append(found or call)
    return calls


def eager_calls(
    traced: Any, sites: Sequence[GradientSite], exits: list[Any], failed: list[str],
) -> list[RecordedCall | None]:
    """What each site's tape answers when a plain-function step runs eagerly, as its user calls it.

    The step runs once (its own optimizer too) and every state it can touch is restored; the
    places where the user's code took values out of TensorFlow are appended to ``exits``. When the
    eager run raises, there is no eager answer (None per site) and the error, in one line, goes
    to ``failed``, for the report to say that the traced answers stand.
    """
    from flowcheck.trace.eager import record_exits

    why = unrestorable(traced)
    if why is not None:  # its run would move the user's iterator for good: the traced answers stand
        failed.append(f"flowcheck did not run the step eagerly ({why.removeprefix('not verified: ')}): "
                      "its calls are judged as traced by tf.function")
        return [None] * len(sites)
    with restoring(traced), record_exits(exits):
        try:
            recorded = _runs_as_called(traced, sites)
        except Exception as exc:  # noqa: BLE001 -- the user's own code can raise anything: it is reported
            failed.append(_first_line(exc))
            return [None] * len(sites)
    return match_calls(sites, recorded)


def verify_step(traced: Any, sites: Sequence[GradientSite], *, control_flow: bool = True) -> Verification:
    """Run the user's step once, compare each site's sources with the prediction, restore all state.

    A plain Python step runs eagerly (as its user calls it); a ``tf.function`` or a Keras
    ``train_step`` with ``control_flow`` as traced, in a new function that returns what each
    gradient call gave (without control flow an eager run answers the same, for less).

    Raises:
        VerificationError: the step failed for another reason than every gradient being None, or
            running it would move an iterator whose position cannot be put back (:func:`unrestorable`).
    """
    why = unrestorable(traced)
    if why is not None:
        raise VerificationError(why)
    optimizers = applied_optimizers(traced)
    sources = [s.variable for site in sites for s in site.sources]
    before, scale = [maybe_digest(v) for v in sources], loss_scale(optimizers)
    problems: list[str] = []
    try:
        with restoring(traced):
            raised: list[str] = []
            recorded = _runs_as_called(traced, sites, control_flow, raised)
            if raised and any(s.receiving for s in sites):
                problems.extend(f"the step raised {r}" for r in raised)
            after = [maybe_digest(v) for v in sources]
        calls = match_calls(sites, recorded)
    except VerificationError:
        raise
    except Exception as exc:  # noqa: BLE001 -- the user's step failed: say how, as one error
        raise unchained(VerificationError(f"the real step failed: {_first_line(exc)}"), exc) from None
    return verification_of(sites, calls, (before, after), problems, optimizers, scale=scale)


def verification_of(
    sites: Sequence[GradientSite], calls: Sequence[RecordedCall | None],
    digests: tuple[Sequence[bytes | None], Sequence[bytes | None]], problems: list[str], optimizers: Sequence[Any],
    restored: bool = True, scale: float | None = None,
) -> Verification:
    """The verdict of one real run: each site's answers (``calls``) and each source's digests before and after.

    Under a ``LossScaleOptimizer`` (mixed precision) the loss and gradients are scaled, and a step
    whose scaled gradients are not finite is skipped while the scale is lowered, by design: that is
    no problem of the step's. Keras's own ``train_step`` differentiates ``scale_loss(loss)``: its loss
    is told unscaled, over ``scale`` (:func:`~flowcheck.verify.loss.loss_scale`, read before the run).
    """
    scaled = any(type(o).__name__ == "LossScaleOptimizer" for o in optimizers)
    unscale = scale if scaled and scale and sites and all(s.kind == "Keras train_step" for s in sites) else None
    found: list[str] = []
    checks, (loss, values) = _checks(sites, calls, digests[0], digests[1], found)
    problems.extend(p for p in found if not (scaled and p.endswith(_NOT_FINITE)))
    targets = [c.targets[0] for c in calls if c is not None and c.targets]
    seen = not targets or any(t is not UNSEEN for t in targets)  # else every loss was made inside a branch
    if not math.isfinite(loss) and not scaled and seen:
        problems.append(f"the loss is {loss}: gradients and the step are not meaningful")
    described = ", ".join(_describe(o) for o in optimizers) if optimizers else "update"
    if scaled:
        described += scaled_text(unscale)
    return Verification(
        agrees=all(c.agrees for c in checks) and not problems,
        optimizer="the step's own " + described,
        loss=loss / unscale if unscale else loss,
        variables=tuple(checks),
        problems=tuple(problems),
        restored=restored,
        loss_seen=seen,
        loss_values=values,
    )


def _run_eagerly(step: Any, args: Any, kwargs: Any, raised: list[str]) -> list[RecordedCall]:
    """Run a plain-function step eagerly, as its user calls it.

    Its nested ``tf.function`` s run eagerly too, so that every tape answers with values (a tape
    inside one would otherwise answer inside a graph, out of sight). Keras's ``No gradients
    provided`` ends the step as it would end training: it goes to ``raised``.
    """
    with record_sites() as recorder, _eagerly():
        try:
            step(*args, **kwargs)
        except ValueError as exc:
            if NO_GRADIENTS not in str(exc):
                raise
            raised.append(_first_line(exc))
    return recorder.eager_calls


def _run_traced(step: Any, args: Any, kwargs: Any) -> list[RecordedCall]:
    """Run the step as a new ``tf.function`` returning its gradients (``tf.gradients`` needs a graph)."""
    last: list[tuple[list[RecordedCall], Any]] = [([], None)]

    def probe(*a: Any, **k: Any) -> list[tuple[list[Any], list[Any]]]:
        graph = tf.compat.v1.get_default_graph()  # a call in a branch or nested function answers in another
        with record_sites() as recorder, all_none_tolerated([]), nested_functions_afresh():
            step(*a, **k)
        last[0] = recorder.calls, graph  # a trace that creates variables runs twice: keep the final one
        return [([r for r in c.results or () if _in(r, graph)], [t for t in c.targets if _in(t, graph)])
                for c in recorder.calls]

    values = tf.function(probe)(*args, **kwargs)
    calls, graph = last[0]
    for call, (grads, targets) in zip(calls, values):
        given, made = iter(grads), iter(targets)
        call.targets = tuple(next(made) if _in(t, graph) else UNSEEN for t in call.targets)
        if call.results is not None:
            call.results = tuple(r if r is None else next(given) if _in(r, graph) else UNSEEN for r in call.results)
    return calls


UNSEEN: Any = object()
"""A gradient or target made inside a ``tf.cond`` branch or nested function of the step: not None, value unread."""


def _in(tensor: Any, graph: Any) -> bool:
    return tensor is not None and getattr(tensor, "graph", None) is graph


@contextlib.contextmanager
def _eagerly() -> Iterator[None]:
    """Nested ``tf.function`` s run eagerly too, so that every tape answers with values."""
    before = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(True)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(before)


def maybe_digest(value: Any) -> bytes | None:
    backing = getattr(value, "_value", None)
    var = backing if isinstance(backing, tf.Variable) else value
    return _digest(var) if isinstance(var, tf.Variable) else None


def match_calls(sites: Sequence[GradientSite], calls: Sequence[RecordedCall]) -> list[RecordedCall | None]:
    """The eager call made at each site: in order, by kind and line when the counts differ."""
    if len(calls) == len(sites):
        return list(calls)
    remaining = list(calls)
    matched: list[RecordedCall | None] = []
    for site in sites:
        found = next((c for c in remaining if c.kind == site.kind and c.source == site.source), None)
        if found is not None:
            remaining.remove(found)
        matched.append(found)
    return matched


_NOT_FINITE = " is not finite"


def _checks(
    sites: Sequence[GradientSite], calls: Sequence[RecordedCall | None], before: Sequence[bytes | None],
    after: Sequence[bytes | None], problems: list[str],
) -> tuple[list[VariableCheck], tuple[float, int]]:
    checks: list[VariableCheck] = []
    k = 0
    for site, call in zip(sites, calls):
        prefix = f"{', '.join(site.targets)}: " if len(sites) > 1 else ""
        if call is None:
            problems.append(f"the real step made no {site.kind} call at {site.source or 'this site'}")
        elif call.results is None:
            problems.append(f"the real step's {site.kind} at {site.source or 'this site'} raised {call.error}")
        for j, source in enumerate(site.sources):
            result = call.results[j] if call is not None and call.results is not None else None
            state = _state(result) if call is not None and call.results is not None and result is not UNSEEN else (
                GradientState.UNSEEN if result is UNSEEN else GradientState.NONE)
            if state is GradientState.NONFINITE:
                problems.append(f"the gradient of {prefix}{source.name}{_NOT_FINITE}")
            changed = before[k] is not None and before[k] != after[k]
            known = call is not None and call.results is not None
            checks.append(VariableCheck(
                name=prefix + source.name, predicted=source.receives, gradient=state, changed=changed,
                agrees=known and _as_predicted(source.receives, state, call is not None and call.unconnected_zero),
            ))
            k += 1
    return checks, _step_loss(calls)


def _step_loss(calls: Sequence[RecordedCall | None]) -> tuple[float, int]:
    """The step's loss: the first target of its first answered gradient call that no other tape was
    recording around (MAML's inner loss, a gradient penalty's critic output or a PINN's ``u`` is part of
    the loss, not the loss), else of its first answered call; NaN when none has one. Summed, as the
    tape differentiates it, over its values, how many is the second item."""
    answered = [
        c for c in calls
        if c is not None and c.results is not None and c.targets and c.targets[0] is not UNSEEN
        and not c.kind.endswith("jacobian")  # a jacobian's target is no loss
    ]
    outer = [c for c in answered if not c.inner] or answered
    if not outer:
        return math.nan, 1
    target = outer[0].targets[0]
    return float(tf.reduce_sum(tf.math.real(tf.cast(target, tf.float64))).numpy()), int(tf.size(target))


def _as_predicted(receives: bool, state: GradientState, unconnected_zero: bool) -> bool:
    """Whether the tape's gradient is what the verdict says, under the call's own semantics.

    With ``unconnected_gradients=ZERO`` TensorFlow gives a source no path reaches zeros instead of
    None: a blocked source must get exactly zeros (or None, where flowcheck asked eagerly with NONE
    for TensorFlow's own answer), a receiving one anything but None.
    """
    if unconnected_zero and not receives:
        return state in (GradientState.ZERO, GradientState.NONE)
    return (state is not GradientState.NONE) == receives
