"""TensorFlow 1 ``Session.run``: which recorded gradient calls a run's fetches compute (a training step's).

A fetch (a train op, a gradient, anything downstream of one) computes a call's gradients when the
call's gradient ops are among what it depends on, through data inputs and control dependencies.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from flowcheck.trace.tf1 import GraphCall, recorded_calls

__all__ = ["dependent", "dependent_calls", "depends_on_gradient_site", "fetch_ops"]

_FREE_ATTR = "_flowcheck_gradient_free_ops"  # kept on the graph, whose ops the ids name


def depends_on_gradient_site(session: Any, fetches: Any) -> bool:
    """Whether running ``fetches`` in ``session`` computes a recorded gradient call's gradients."""
    return bool(dependent_calls(session, fetches))


def dependent_calls(session: Any, fetches: Any) -> list[GraphCall]:
    """The recorded gradient calls whose gradients running ``fetches`` computes, in the order made."""
    return dependent(session.graph, fetch_ops(session.graph, fetches))[0]


def fetch_ops(graph: Any, fetches: Any) -> list[Any]:
    """The ops of a run's fetches (a tensor's op; names looked up; what is not in the graph left out)."""
    import tensorflow as tf

    found = []
    for element in _leaves(fetches):
        try:
            item = graph.as_graph_element(element, allow_tensor=True, allow_operation=True)
        except (TypeError, ValueError, KeyError):
            continue
        found.append(item if isinstance(item, tf.Operation) else item.op)
    return found


def _leaves(fetches: Any) -> Iterator[Any]:
    """The fetches of a nested structure as ``Session.run`` reads them: a dict's values, in its order.

    (``tf.nest.flatten`` sorts a dict's keys, and ``MonitoredSession`` fetches a dict keyed by its hooks
    and ``"caller"``, which do not compare.)
    """
    if isinstance(fetches, Mapping):
        for value in fetches.values():
            yield from _leaves(value)
    elif isinstance(fetches, (list, tuple)):
        for value in fetches:
            yield from _leaves(value)
    else:
        yield fetches


def dependent(graph: Any, ops: Sequence[Any]) -> tuple[list[GraphCall], list[Any]]:
    """The recorded calls whose gradients the fetches compute, and the fetched ops that do."""
    calls = [c for c in recorded_calls(graph) if c.grads is not None]
    grad_ops = {id(_op(g)): c for c in calls for g in c.grads or () if g is not None}
    if not grad_ops:
        return [], []
    # An op never comes to depend on gradients built after it: a fetch found free of them stays so,
    # and an evaluation run repeated every step is not walked again.
    free: set[int] | None = getattr(graph, _FREE_ATTR, None)
    if free is None:
        free = set()
        setattr(graph, _FREE_ATTR, free)
    hit: dict[int, GraphCall] = {}
    train_ops = []
    for op in ops:
        if id(op) in free:
            continue
        reached = _reached(op, grad_ops)
        if reached:
            train_ops.append(op)
            hit.update((id(c), c) for c in reached)
        else:
            free.add(id(op))
    return [c for c in calls if id(c) in hit], train_ops


def _op(grad: Any) -> Any:
    return grad.op if hasattr(grad, "op") else grad.values.op


def _reached(start: Any, targets: dict[int, GraphCall]) -> list[GraphCall]:
    seen: set[int] = set()
    found: dict[int, GraphCall] = {}
    stack = [start]
    while stack:
        op = stack.pop()
        if id(op) in seen:
            continue
        seen.add(id(op))
        if id(op) in targets:
            found[id(targets[id(op)])] = targets[id(op)]
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return list(found.values())
