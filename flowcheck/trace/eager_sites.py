"""Gradient calls made eagerly (outside any ``tf.function``): TensorFlow's answer, as a site.

The "custom training walkthrough" style runs ``tape.gradient`` eagerly: there is no graph to cut
down, so a site is TensorFlow's own answer at the call, told as such.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from flowcheck._model import Verdict
from flowcheck._phrases import EAGER_ANSWER, untracked_text
from flowcheck.source.names import is_default_name, shown_name, source_name, target_names, tensor_labels, unique
from flowcheck.trace.sites import GradientSite, RecordedCall, SiteSource
from flowcheck.trace.sites import watch_text

__all__ = ["backing", "eager_site", "next_call_finding"]


def eager_site(call: RecordedCall) -> GradientSite:
    """The site of a gradient call made eagerly (outside any ``tf.function``): TensorFlow's answer.

    Without a graph nothing can be cut down to ops: a source is RECEIVES when the tape gave a
    gradient and BLOCKED when it gave None, with no barriers. A call that raised because the
    target left TensorFlow (a loss computed with NumPy: ``AttributeError ... '_id'``) gets that
    reason in words as its ``error``.
    """
    written = tensor_labels(call.caller or call.source, len(call.sources), call.nth)
    own = [
        label if label and not hasattr(obj, "trainable") else shown_name(source_name(obj), label) for obj, label in zip(call.sources, written)
    ]
    names = unique([_by_path(name, obj, own, call.paths) for name, obj in zip(own, call.sources)])
    answers = call.tensorflow_none
    sources = tuple(
        SiteSource(
            name=name, variable=obj, verdict=Verdict.RECEIVES if answer is False else Verdict.BLOCKED, barriers=(),
            tensorflow_none=answer, trainable=bool(getattr(obj, "trainable", False)),
        )
        for name, obj, answer in zip(names, call.sources, answers)
    )
    labels = {id(backing(o)): n for o, n in zip(call.sources, names)}
    labels.update(zip((id(o) for o in call.sources), names))
    notes = (EAGER_ANSWER, *_unwatched_note(call, sources),
             *_integer_note(sources), *(f"not asked for: {untracked_text(n, held)}" for n, held in call.untracked))
    return GradientSite(
        kind=call.kind, source=call.source, targets=target_names(call.caller or call.source, call.targets, call.nth),
        sources=sources, watch=watch_text(call, labels), error=_error_in_words(call), notes=notes,
    )


def backing(obj: Any) -> Any:
    """The ``tf.Variable`` behind a Keras 3 variable (what ``tape.watch`` takes), else the object."""
    value = getattr(obj, "value", None)
    return value if isinstance(value, tf.Variable) and not isinstance(obj, tf.Variable) else obj


def _unwatched(call: RecordedCall, sources: tuple[SiteSource, ...]) -> list[str]:
    """The variables that got None from a tape not watching them (watch_accessed_variables=False and no
    tape.watch naming them, or trainable=False)."""
    tape = call.tape
    if tape is None:
        return []
    watched = {id(backing(w)) for w in tape.watched}
    return [
        s.name for s in sources
        if s.tensorflow_none and isinstance(backing(s.variable), tf.Variable) and id(backing(s.variable)) not in watched
        and not (tape.watch_accessed_variables and backing(s.variable).trainable)
    ]


def _unwatched_note(call: RecordedCall, sources: tuple[SiteSource, ...]) -> tuple[str, ...]:
    """Why variables got None from a tape that watches only what it is told: it was not told to watch them."""
    unwatched = _unwatched(call, sources)
    if not unwatched or call.tape is None:
        return ()
    if call.tape.watch_accessed_variables:  # it watches the trainable variables it reads: these are not trainable
        return (f"not watched: {', '.join(unwatched)}: trainable=False, and the tape watches only the trainable "
                "variables it reads, so TensorFlow gives them None whatever the loss reads (tape.watch them)",)
    return (f"not watched: {', '.join(unwatched)}: the tape has watch_accessed_variables=False and no "
            "tape.watch call names them, so TensorFlow gives them None whatever the loss reads",)


def _non_float(sources: tuple[SiteSource, ...]) -> list[tuple[str, str]]:
    """The sources given None that hold integers or booleans (a variable, or a watched tensor: ``tf.constant(10)``)."""
    found = []
    for s in sources:
        dtype = getattr(backing(s.variable), "dtype", None)
        if s.tensorflow_none and dtype is not None and not _differentiable(dtype):
            found.append((s.name, tf.as_dtype(dtype).name))
    return found


def _integer_note(sources: tuple[SiteSource, ...]) -> tuple[str, ...]:
    """Sources that get None whatever the loss: integer and boolean values carry no gradient."""
    found = _non_float(sources)
    if not found:
        return ()
    named = ", ".join(f"{name} ({dtype})" for name, dtype in found)
    variables = all(isinstance(backing(s.variable), tf.Variable) for s in sources if s.name in dict(found))
    what = ("a variable" if len(found) == 1 else "variables") if variables else ("a value" if len(found) == 1 else "values")
    return (f"{named}: {what} of a non-float dtype, which carries no gradient: TensorFlow gives None whatever "
            "the loss reads", )


def unwatched_tensors(site: GradientSite, watched: set[int]) -> list[str]:
    """The float tensors (not variables) given None that no ``tape.watch`` named (``watched``: ids of what it did)."""
    return [
        s.name for s in site.sources
        if s.tensorflow_none and isinstance(s.variable, tf.Tensor) and _differentiable(s.variable.dtype)
        and id(s.variable) not in watched
    ]


def explained(call: RecordedCall, site: GradientSite, tensors: list[str]) -> bool:
    """Whether every source given None is told why without a graph: a variable the tape does not watch,
    a non-float value, or an unwatched tensor (``tensors``)."""
    told = {*_unwatched(call, site.sources), *(name for name, _ in _non_float(site.sources)), *tensors}
    return not site.error and all(s.name in told for s in site.sources if s.tensorflow_none)


def _differentiable(dtype: Any) -> bool:
    dtype = tf.as_dtype(dtype)
    return bool(dtype.is_floating or dtype.is_complex)


def _error_in_words(call: RecordedCall) -> str | None:
    exc = call.exception
    if exc is None:
        return call.error
    left = [type(t).__name__ for t in call.targets if not isinstance(t, (tf.Tensor, tf.Variable))]
    if isinstance(exc, AttributeError) and "_id" in str(exc) and left:
        return (f"the target is a {left[0]}, not a TensorFlow tensor: the loss left TensorFlow (computed with "
                f"NumPy?), so the tape recorded nothing to differentiate ({call.error})")
    return call.error


def next_call_finding(site: GradientSite | None, sources: Any, result: Any) -> str | None:
    """What an eager site's next call answers otherwise than its first: the sources that got a
    gradient then and None now, and why when the script replaced a variable by a tensor
    (``w = w - lr * grad`` rebinds ``w``; the next tape does not watch a tensor)."""
    if site is None or site.error or "unconnected_gradients=ZERO" in site.watch:  # ZERO: no None to compare
        return None
    sources, results = tf.nest.flatten(sources), tf.nest.flatten(result) if result is not None else [None]
    if len(sources) != len(site.sources) or len(results) != len(sources):
        return None
    lost = [(first, now) for first, now, result in zip(site.sources, sources, results) if first.receives and result is None]
    if not lost:
        return None
    found = f"at its next call TensorFlow gives no gradient to {', '.join(first.name for first, _ in lost)}"
    rebound = [first.name for first, now in lost if now is not first.variable and not hasattr(now, "assign")]
    if not rebound:
        return found
    now = "is no longer a variable but a tensor" if len(rebound) == 1 else "are no longer variables but tensors"
    return (f"{found}: {', '.join(rebound)} {now} the tape does not watch (the script rebinds the name, as "
            "`w = w - lr * grad` does; update a variable in place with `w.assign_sub(lr * grad)` or an optimizer)")


def _by_path(name: str, obj: Any, names: list[str], paths: dict[int, str]) -> str:
    """A source's path in its ``tf.Module`` (``mlp/l1/w``) where its own name tells it from no
    other (``w`` twice in ``model.trainable_variables``) or is TensorFlow's made-up ``Variable``."""
    path = paths.get(id(obj))
    return path if path and (names.count(name) > 1 or is_default_name(name)) else name
