"""A plain callable judged as the user calls it: eagerly, under a tape that watches every variable.

``flowcheck.analyze`` traces a plain callable too (the static analysis gives barriers and lines),
but the user runs it eagerly, where TensorFlow may answer otherwise: an untaken ``tf.cond`` branch
and a ``while_loop`` condition give ``None`` eagerly (zeros when traced), and ``float(t)`` or
``t.numpy()`` leave TensorFlow (AutoGraph turns ``float()`` into a cast, and ``.numpy()`` cannot be
traced at all). :func:`run_eagerly` calls the function once under a tape that watches each variable
as it is read, records where the user's code took a value out of TensorFlow, and restores every
variable it read (and the eager random-seed state) afterwards. :func:`eager_difference` says, per
variable, why the eager answer differs from the traced graph's.
"""

from __future__ import annotations

import contextlib
import random
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context, record
from tensorflow.python.ops import resource_variable_ops
from tensorflow.python.util import nest


from flowcheck.errors import LossError, TraceError, unchained
from flowcheck.source.exceptions import op_message
from flowcheck.source.lines import SourceLine, user_frame
from flowcheck.trace.distributed import components, container
from flowcheck.trace.exits import Exit, record_exits
from flowcheck.trace.target import describe_variable
from flowcheck.trace.sites import RecordedCall
from flowcheck.trace.traced import LossOutput, TracedVariable


__all__ = [
    "EagerRun", "Exit", "own_random_seeds",
    "record_exits", "run_eagerly",
]

@dataclass
class EagerRun:
    """The tape's answer for one eager call of the user's function.

    Attributes:
        variables: Every variable known beforehand or read during the call, known ones first.
        total: Per variable, whether the summed losses give it a gradient.
        per_loss: Per loss name, the same for that loss alone.
        read: Indices of the variables the call read.
        losses: The floating-point outputs, named as in a traced function's report.
        exits: Where the user's code took values out of TensorFlow, in call order.
        calls: The gradient calls the function made itself (a training step's), in order.
        error: The tape's ``LookupError`` (an op with no gradient reached), as one line, when
            differentiating a loss raised; that loss then gives no answers (``total`` and
            ``per_loss`` hold the other losses').
        renewed: The variables the function creates anew at each call (``tf.Variable`` in a
            loss), as ``'name' at file:line``: not among ``variables``, as no optimizer
            can train them.
    """

    variables: list[TracedVariable]
    total: list[bool]
    per_loss: dict[str, list[bool]]
    read: set[int]
    losses: list[LossOutput]
    exits: list[Exit] = field(default_factory=list)
    calls: list[RecordedCall] = field(default_factory=list)
    error: str | None = None
    renewed: list[str] = field(default_factory=list)


def run_eagerly(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                known: Sequence[TracedVariable], name: str) -> EagerRun:
    """Call ``fn`` eagerly with every variable watched as it is read; restore what it changed.

    The tape is not persistent, as the truth's: under a persistent tape TensorFlow differentiates
    a nested ``tf.function`` through its higher-order path, which turns a ``None`` a custom gradient
    returns inside it into zeros. A non-persistent tape answers once, for the summed losses; with
    several losses the call runs once more per loss, each time from the same state, for that loss's
    answer (:func:`_answer_per_loss`). The gradient calls the function makes itself are recorded
    (:attr:`EagerRun.calls`): a training step may return no loss.

    Raises:
        TraceError: the eager call raised.
        LossError: it returned no floating-point tensor, and asked for no gradient itself.
    """
    from flowcheck.trace.recording import record_sites

    variables = list(known)
    index = {id(c): i for i, v in enumerate(variables) for c in (v.tf_variable, *components(v.tf_variable))}
    saved = [_read(v.tf_variable) for v in variables]
    read: set[int] = set()
    exits: list[Exit] = []
    # Watching accessed variables too: an eager op's fast path reads a trainable variable in C,
    # where only the tape hears of it (_watch_on_read never does).
    tape = tf.GradientTape(watch_accessed_variables=True)
    created: dict[int, SourceLine | None] = {}
    try:
        with own_random_seeds(), tape, _watch_on_read(tape, variables, index, saved, read), record_exits(exits), \
                _record_creations(created):
            _watch(tape, variables)
            try:
                with record_sites() as recorder, record.VariableWatcher() as reads:
                    outputs = fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 -- the user's call failed: one line, their frame
                raise unchained(TraceError(_failure(exc, name)), exc) from None
        _heard_by_the_tape(tape, reads.watched_variables(), variables, index, saved, read)
        try:
            losses = _loss_tensors(outputs, name, exits)
        except LossError:
            if not recorder.eager_calls:
                raise
            losses = []
        total, error = _answer(tape, [t for _, t in losses], variables)
        del tape
        per_loss = {n: total for n, _ in losses[:1]}
        if len(losses) > 1 and error is None:
            per_loss = _answer_per_loss(fn, args, kwargs, variables, index, saved, [n for n, _ in losses], total, len(known))
        fresh = {i for i, v in enumerate(variables) if id(v.tf_variable) in created}
        renewed = fresh - _read_again(fn, args, kwargs, variables, index, saved) if fresh else set()
    finally:
        _restore(variables, saved)
    outputs_ = [LossOutput(n, t, tuple(t.shape.as_list()) if t.shape.rank is not None else (), t.dtype.name)
                for n, t in losses]
    run = EagerRun(variables, total, per_loss, read, outputs_, exits, recorder.eager_calls, error)
    return _without(run, renewed, created) if renewed else run


@contextlib.contextmanager
def _record_creations(created: dict[int, SourceLine | None]) -> Iterator[None]:
    """Record each ``tf.Variable`` the call creates, by id, with the user's line that created it."""
    def creator(next_creator: Callable[..., Any], **kwargs: Any) -> Any:
        variable = next_creator(**kwargs)
        created[id(variable)] = user_frame(traceback.extract_stack(limit=40))[0]
        return variable

    with tf.variable_creator_scope(creator):
        yield


def _read_again(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                variables: list[TracedVariable], index: dict[int, int], saved: list[tuple[np.ndarray, ...]]) -> set[int]:
    """The variables a second call, from the state of the first, reads: a variable created by the
    first call and not read by the second is made anew at each call (a layer built lazily is read again).
    """
    _restore(variables, saved)
    tape = tf.GradientTape(watch_accessed_variables=False)
    read: set[int] = set()
    known, known_index, known_saved = list(variables), dict(index), list(saved)  # a new variable stays out
    with own_random_seeds(), tape, _watch_on_read(tape, known, known_index, known_saved, read), \
            record.VariableWatcher() as reads:
        try:
            fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 -- the second call failed: no variable is said to be renewed
            return set(range(len(variables)))
    read.update(index[id(container(v))] for v in reads.watched_variables() if id(container(v)) in index)
    return read


def _without(run: EagerRun, renewed: set[int], created: dict[int, SourceLine | None]) -> EagerRun:
    """``run`` without the variables made anew at each call, which are named in ``renewed``."""
    keep = [i for i in range(len(run.variables)) if i not in renewed]
    new_index = {old: new for new, old in enumerate(keep)}
    wheres = [(run.variables[i].name, created[id(run.variables[i].tf_variable)]) for i in sorted(renewed)]
    return replace(
        run, variables=[run.variables[i] for i in keep], total=[run.total[i] for i in keep],
        per_loss={n: [a[i] for i in keep] for n, a in run.per_loss.items()},
        read={new_index[i] for i in run.read if i in new_index},
        renewed=[f"'{name}'" + (f" at {where}" if where else "") for name, where in wheres],
    )


def _answer_per_loss(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                     variables: list[TracedVariable], index: dict[int, int], saved: list[tuple[np.ndarray, ...]],
                     names: Sequence[str], total: list[bool], first_met: int) -> dict[str, list[bool]]:
    """Per loss, the answer of a non-persistent tape around one more call, from the state of the first.

    When the repeated call meets variables the first did not (the function creates them anew each
    call), those the first call met (``variables[first_met:]``) keep its total answer: the
    repeated call never read them.
    """
    per_loss: dict[str, list[bool]] = {}
    called = str(getattr(fn, "__name__", "function"))
    for name in names:
        _restore(variables, saved)
        tape = tf.GradientTape(watch_accessed_variables=False)
        read: set[int] = set()  # not asked: the fast path of an eager op reads a variable unseen
        known, known_index, known_saved = list(variables), dict(index), list(saved)  # a new variable stays out
        with own_random_seeds(), tape, _watch_on_read(tape, known, known_index, known_saved, read):
            _watch(tape, variables)
            try:
                outputs = fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 -- the user's call failed the second time: one line, their frame
                raise unchained(TraceError(_failure(exc, called)), exc) from None
        target = dict(_loss_tensors(outputs, called, ())).get(name)
        answers, _ = _answer(tape, [] if target is None else [target], variables)
        renewed = first_met if len(known) > len(variables) else len(variables)
        per_loss[name] = [a if i < renewed else t for i, (a, t) in enumerate(zip(answers, total))]
    return per_loss


def _heard_by_the_tape(tape: Any, reads: Sequence[Any], variables: list[TracedVariable], index: dict[int, int],
                       saved: list[tuple[np.ndarray, ...]], read: set[int]) -> None:
    """Add the variables the tape watched as accessed and ``_watch_on_read`` never saw; mark ``reads`` read.

    Such a read happened in an eager op's fast path, in C, which tells only the tapes and variable
    watchers, and only of a trainable variable. Its value is saved now, after the call (a read does
    not change it; an assign passes through Python).
    """
    for variable in tape.watched_variables():
        variable = container(variable)
        if index.get(id(variable)) is None:
            index.update((id(c), len(variables)) for c in (variable, *components(variable)))
            saved.append(_read(variable))
            variables.append(describe_variable(variable))
    read.update(index[id(container(v))] for v in reads if id(container(v)) in index)


def _watch(tape: Any, variables: Sequence[TracedVariable]) -> None:
    for v in variables:
        if _is_float(v.tf_variable):
            tape.watch(v.tf_variable)


def _restore(variables: Sequence[TracedVariable], saved: Sequence[tuple[np.ndarray, ...]]) -> None:
    for v, values in zip(variables, saved):
        for component, value in zip(components(v.tf_variable), values):
            component.assign(value)


@contextlib.contextmanager
def own_random_seeds() -> Iterator[None]:
    """Give eager random ops run by flowcheck seeds of their own, never the user's next ones.

    TensorFlow keeps one eager kernel, with its state, per pair of seeds (the global seed, or a
    default one, and the op's): an op the user gave a seed (``tf.random.normal(seed=5)``,
    ``tf.nn.dropout(seed=7)``) run by flowcheck would advance the very kernel the user's next call
    draws from; its first seed is flowcheck's own here. Under ``tf.random.set_seed`` an op without
    a seed takes one from the context's generator, and drawing the user's next one would change
    their numbers too: the generator is flowcheck's own. The global seed itself stays the user's,
    for a ``tf.function`` first traced here keeps it in its graph (and ``set_seed`` would reset
    every kernel the user has drawn from).
    """
    from tensorflow.python.framework import random_seed

    ctx = context.context()
    user_rng, original = getattr(ctx, "_rng", None), random_seed.get_seed

    def own_seed(op_seed: Any) -> tuple[Any, Any]:
        first, second = original(op_seed)
        if not context.executing_eagerly() or first is None:  # a graph's op, or nondeterministic anyway
            return first, second
        return _OWN_SEED, second

    ctx._rng = random.Random(_OWN_SEED)  # noqa: SLF001
    random_seed.get_seed = own_seed
    try:
        yield
    finally:
        random_seed.get_seed = original
        ctx._rng = user_rng  # noqa: SLF001


_OWN_SEED = 0x5EED_F10C


def _answer(tape: Any, targets: Sequence[Any], variables: Sequence[TracedVariable]) -> tuple[list[bool], str | None]:
    """Which variables the tape gives a gradient of the summed ``targets``; or its error, when it raised.

    With no target every answer is False (a step that returns no loss).
    """
    if not targets:
        return [False] * len(variables), None
    try:
        grads = tape.gradient(list(targets), [v.tf_variable for v in variables],
                              unconnected_gradients=tf.UnconnectedGradients.NONE)
    except (LookupError, NotImplementedError, ValueError, tf.errors.OpError) as exc:  # the user's tape raises the same
        if isinstance(exc, LookupError) and type(exc) is not LookupError:  # a KeyError or IndexError of the user's
            raise  # (not "No gradient defined for ...", nor a gradient that refuses: QR of full matrices)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return [False] * len(variables), f"{type(exc).__name__}: {first}"
    return [g is not None for g in grads], None


def _is_float(v: Any) -> bool:
    return bool(v.dtype.is_floating or v.dtype.is_complex)


def _read(v: Any) -> tuple[np.ndarray, ...]:
    # Per replica's component for a distributed variable (sync-on-read ones differ per replica).
    return tuple(np.array(c.read_value().numpy(), copy=True) for c in components(v))


@contextlib.contextmanager
def _watch_on_read(tape: Any, variables: list[TracedVariable], index: dict[int, int],
                   saved: list[tuple[np.ndarray, ...]], read: set[int]) -> Iterator[None]:
    """Watch each variable when it is first read (as a default tape does, whatever its trainable flag).

    A variable met first by a write (``counter.assign_add(1)``) is saved before the write runs,
    so that restoring it undoes the write.
    """
    original = resource_variable_ops.variable_accessed
    busy = False
    home = threading.get_ident()

    def met(variable: Any) -> int | None:
        nonlocal busy
        i = index.get(id(variable))
        if i is not None or busy:
            return i
        variable = container(variable)  # one replica's component: the variable the user made
        busy = True
        try:
            with tape.stop_recording():
                saved.append(_read(variable))  # before the op that reads or writes it runs
        finally:
            busy = False
        i = len(variables)
        index.update((id(c), i) for c in (variable, *components(variable)))
        variables.append(describe_variable(variable))
        # A user's tape watches on their own thread; strategy.run's replica threads read
        # variables that such a tape, watching before the call, gets no gradient for.
        if _is_float(variable) and threading.get_ident() == home:
            tape.watch(variable)
        return i

    def accessed(variable: Any) -> None:
        original(variable)
        i = met(variable)
        if i is not None:
            read.add(i)

    resource_variable_ops.variable_accessed = accessed
    try:
        with _before_writes(met):
            yield
    finally:
        resource_variable_ops.variable_accessed = original


# The methods by which a resource variable's value is written (BaseResourceVariable's own).
_WRITES = ("assign", "assign_add", "assign_sub", "scatter_add", "scatter_sub", "scatter_max", "scatter_min",
           "scatter_mul", "scatter_div", "scatter_update", "batch_scatter_update", "scatter_nd_add",
           "scatter_nd_sub", "scatter_nd_update", "scatter_nd_max", "scatter_nd_min")


@contextlib.contextmanager
def _before_writes(hook: Callable[[Any], Any]) -> Iterator[None]:
    """Call ``hook(variable)`` before each write to a resource variable.

    ``ResourceVariable`` holds wrappers of its own (``weak_tensor_ops`` wraps ``assign_add``) around
    ``BaseResourceVariable``'s methods: both classes' own are wrapped.
    """
    classes = (resource_variable_ops.ResourceVariable, resource_variable_ops.BaseResourceVariable)
    originals = [(cls, name, cls.__dict__[name]) for cls in classes for name in _WRITES if name in cls.__dict__]

    def wrap(method: Any) -> Any:
        def write(self: Any, *args: Any, **kwargs: Any) -> Any:
            hook(self)
            return method(self, *args, **kwargs)

        return write

    for cls, name, method in originals:
        setattr(cls, name, wrap(method))
    try:
        yield
    finally:
        for cls, name, method in originals:
            setattr(cls, name, method)


def _loss_tensors(outputs: Any, name: str, exits: Sequence[Exit]) -> list[tuple[str, Any]]:
    leaves = ([(str(p), t) for p, t in nest.flatten_with_joined_string_paths(outputs)]
              if nest.is_nested(outputs) else [("loss", outputs)])
    tensors = [(n, t) for n, t in leaves if isinstance(t, tf.Tensor) and (t.dtype.is_floating or t.dtype.is_complex)]
    if tensors:
        return tensors
    found = ", ".join(sorted({_kind(t) for _, t in leaves})) or "nothing"
    left = [e for e in exits if e.what != "a Python condition"]
    why = f" (the loss left TensorFlow: {left[-1]})" if left else ""
    raise LossError(f"{name} returned {found}, not a floating-point tensor{why}; return the loss tensor")


def _kind(value: Any) -> str:
    """``numpy.float32`` (a NumPy scalar is no tensor, and its bare name reads as a dtype), else the type's name."""
    kind = type(value)
    return f"numpy.{kind.__name__}" if kind.__module__ == "numpy" else kind.__name__


def _failure(exc: BaseException, name: str) -> str:
    where, _ = user_frame(traceback.extract_tb(exc.__traceback__))
    at = f" at {where}" + (f" ({where.code})" if where and where.code else "") if where else ""
    message = op_message(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
    return f"calling {name} eagerly raised {type(exc).__name__}{at}: {message}"
