"""Gradient calls made eagerly (outside any ``tf.function``): TensorFlow's answer, as a site.

The "custom training walkthrough" style runs ``tape.gradient`` eagerly: there is no graph to cut
down, so a site is TensorFlow's own answer at the call, told as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import networkx as nx
import tensorflow as tf

from flowcheck._analysis import Verdict
from flowcheck._site_analysis import source_name, target_names, tensor_labels, unique
from flowcheck._sites import GradientSite, RecordedCall, SiteSource
from flowcheck._steps import watch_text

__all__ = ["as_called_sites", "eager_site"]


def eager_site(call: RecordedCall) -> GradientSite:
    """The site of a gradient call made eagerly (outside any ``tf.function``): TensorFlow's answer.

    Without a graph nothing can be cut down to ops: a source is RECEIVES when the tape gave a
    gradient and BLOCKED when it gave None, with no barriers. A call that raised because the
    target left TensorFlow (a loss computed with NumPy: ``AttributeError ... '_id'``) gets that
    reason in words as its ``error``.
    """
    written = tensor_labels(call.caller or call.source, len(call.sources))
    names = unique([
        label if label and not hasattr(obj, "trainable") else source_name(obj) for obj, label in zip(call.sources, written)
    ])
    answers = call.tensorflow_none
    sources = tuple(
        SiteSource(
            name=name, variable=obj, verdict=Verdict.RECEIVES if answer is False else Verdict.BLOCKED, barriers=(),
            tensorflow_none=answer, trainable=bool(getattr(obj, "trainable", False)),
        )
        for name, obj, answer in zip(names, call.sources, answers)
    )
    return GradientSite(
        kind=call.kind, source=call.source, targets=target_names(call.caller or call.source, call.targets),
        sources=sources, watch=watch_text(call, dict(zip((id(o) for o in call.sources), names))),
        error=_error_in_words(call), notes=("called eagerly: TensorFlow's own answer, without a graph to explain it",),
    )


def _error_in_words(call: RecordedCall) -> str | None:
    exc = call.exception
    if exc is None:
        return call.error
    left = [type(t).__name__ for t in call.targets if not isinstance(t, (tf.Tensor, tf.Variable))]
    if isinstance(exc, AttributeError) and "_id" in str(exc) and left:
        return (f"the target is a {left[0]}, not a TensorFlow tensor: the loss left TensorFlow (computed with "
                f"NumPy?), so the tape recorded nothing to differentiate ({call.error})")
    return call.error


_NOT_RUN = ("the step raised when flowcheck ran it eagerly, as you call it ({}): this call is judged as traced "
            "by tf.function instead")


def as_called_sites(traced: Any, graph: nx.DiGraph, sites: Sequence[GradientSite]) -> tuple[GradientSite, ...]:
    """A plain-function step's sites with the answers of its eager call, and why they differ.

    The step runs once eagerly (every state it touches restored); where a tape answers otherwise
    than the traced graph (an untaken branch, a ``float()``), its answer is the verdict.
    """
    from flowcheck._eager import eager_difference
    from flowcheck._graph import variable_node
    from flowcheck._step_verify import eager_calls

    exits: list[Any] = []
    failed: list[str] = []
    calls = eager_calls(traced, sites, exits, failed)
    if failed:  # no eager answer: every site keeps the traced graph's, and says so
        return tuple(replace(site, notes=(*site.notes, _NOT_RUN.format(failed[0]))) for site in sites)
    index = {id(v.variable): i for i, v in enumerate(traced.variables)}
    index.update((id(v.tf_variable), i) for i, v in enumerate(traced.variables))
    judged = []
    for site, call in zip(sites, calls):
        answers = call.tensorflow_none if call is not None and call.results is not None else ()
        sources = []
        for source, none in zip(site.sources, answers or (None,) * len(site.sources)):
            if none is None or source.receives == (not none):
                sources.append(source)
                continue
            verdict = Verdict.RECEIVES if not none else (
                Verdict.UNUSED if source.verdict is Verdict.UNUSED else Verdict.BLOCKED
            )
            i = index.get(id(source.variable))
            why = (eager_difference(graph, variable_node(i), not none, exits) if i is not None
                   else "the eager call answers otherwise than the traced graph")
            sources.append(replace(
                source, verdict=verdict, tensorflow_none=none, eager_difference=why,
                barriers=() if verdict is Verdict.RECEIVES else source.barriers,
            ))
        judged.append(replace(site, sources=tuple(sources)))
    return tuple(judged)
