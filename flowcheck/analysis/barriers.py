"""The cuts as users read them: a :class:`~flowcheck._model.Barrier` per cut edge, at the user's line.

Only the barriers that are reported have their op's traceback read (:func:`flowcheck.source.op.op_source`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import networkx as nx

from flowcheck._model import Barrier
from flowcheck._model import BarrierKind
from flowcheck.source.lines import SourceLine
from flowcheck.source.lines import display_path
from flowcheck.source.lines import is_library_file
from flowcheck.source.op import op_source

__all__ = ["barrier", "one_per_replica", "outside_barrier"]


def one_per_replica(barriers: Iterable[Barrier]) -> tuple[Barrier, ...]:
    """The barriers as reported: one per op and reason, and one per ``tf.custom_gradient``.

    Under a distribution strategy each replica has its own copy of an op ("replica_1/..."). A
    ``tf.custom_gradient`` whose ``grad_fn`` returns None for an input is one cut at its
    ``IdentityN`` with two edges (that input, and the forward pass's result whose own gradient
    is never asked): the user reads one barrier, the ``grad_fn``'s None.
    """
    seen: set[tuple[Any, ...]] = set()
    kept = []
    for b in barriers:
        # A variable read in cross-replica context is read once per component, each its own op.
        name = "" if b.kind is BarrierKind.NOT_WATCHED else _REPLICA.sub("", b.op_name)
        key = (b.kind, b.op_type, name, b.source)
        if key not in seen:
            seen.add(key)
            kept.append(b)
    returned_none = {b.node for b in kept if b.kind is BarrierKind.CUSTOM_GRADIENT_NONE}
    if returned_none:
        kept = [b for b in kept if not (b.kind is BarrierKind.CUSTOM_GRADIENT and b.node in returned_none)]
    return tuple(kept)


_REPLICA = re.compile(r"^replica_\d+/")


def barrier(graph: nx.DiGraph, edge: tuple[str, str], cache: dict[tuple[str, str], Barrier]) -> Barrier:
    found = cache.get(edge)
    if found is not None:
        return found
    u, w = edge
    data = graph.edges[u, w]
    attrs = graph.nodes[w]
    op = attrs.get("op")
    source, via_library = op_source(op) if op is not None else (None, True)
    kind = BarrierKind(data["kind"])
    detail = str(data.get("detail") or kind.label)
    if kind is BarrierKind.DTYPE:
        detail += _made_elsewhere(graph, u, source)
    elif kind is BarrierKind.ASSIGN:
        detail += _assigned_at(graph, u, source)
    elif kind is BarrierKind.CUSTOM_GRADIENT_NONE and op is not None:
        detail += _grad_fn_at(op)
    if source is None and op is not None and not _has_traceback(op):
        # Rebuilt from a FunctionDef (a restored SavedModel's function): the user's line is the call.
        source, via_library = _call_line(graph, w), True
        detail += "; in a function loaded without its source, as a SavedModel's are" if source else ""
    barrier = Barrier(
        op_name=str(attrs.get("name", w)), op_type=str(attrs.get("op_type", attrs.get("kind", ""))),
        kind=kind, detail=detail,
        tensor=str(data.get("tensor", "")), source=source, in_user_code=source is not None and not via_library,
        node=w,
    )
    cache[edge] = barrier
    return barrier


def _has_traceback(op: Any) -> bool:
    try:
        return bool(op.traceback)
    except Exception:  # noqa: BLE001 -- as op_source: a rebuilt op may have none to give
        return False


def _call_line(graph: nx.DiGraph, node: str) -> SourceLine | None:
    """The user's line that called the function ``node`` lives in (the nearest enclosing call that has one)."""
    clusters = graph.graph["clusters"]
    cluster = graph.nodes[node].get("cluster")
    while cluster is not None:
        gate = graph.nodes[clusters[cluster]["gate"]].get("op")
        found = op_source(gate)[0] if gate is not None else None
        if found is not None:
            return found
        cluster = clusters[cluster]["parent"]
    return None


def _assigned_at(graph: nx.DiGraph, node: str, source: SourceLine | None) -> str:
    """Where the write a read after it follows was made, when the cut is that read and not on its line.

    ``store[i].assign(loss_i)`` in a loop, then ``tf.reduce_sum(store)``: the cut is the read (one
    edge, where the writes are several), and the line to change is the assign's.
    """
    from flowcheck.graph.ops import ASSIGN_OPS  # (graph.ops imports TensorFlow: the analysis does not, until asked)

    attrs = graph.nodes[node]
    if attrs.get("op_type") not in ASSIGN_OPS or attrs.get("op") is None:
        return ""
    made, _ = op_source(attrs["op"])
    if made is None or (source is not None and (made.file, made.line) == (source.file, source.line)):
        return ""
    return f"; the value was written by {attrs.get('op_type')} at {made}"


def _grad_fn_at(op: Any) -> str:
    """The user's ``grad_fn`` a ``tf.custom_gradient`` registered for ``op`` (its ``IdentityN``), and its line.

    The op's line is the call of the decorated function; the line to change is the ``grad_fn``'s,
    which returned None. TensorFlow keeps it in the closures of the gradient it registered (graph
    mode's ``internal_grad_fn`` over ``tape_grad_fn``); anything else found there says nothing.
    """
    try:
        from tensorflow.python.framework import ops

        fn = ops.gradient_registry.lookup(op.get_attr("_gradient_op_type").decode())
        for _ in range(2):
            cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))
            fn = (cells.get("tape_grad_fn") or cells["grad_fn"]).cell_contents
        code = fn.__code__
    except Exception:  # noqa: BLE001 -- not a custom gradient TensorFlow registered as expected
        return ""
    if is_library_file(code.co_filename):
        return ""
    return f"; its grad_fn {fn.__qualname__.replace('.<locals>.', '.')} at {display_path(code.co_filename)}:{code.co_firstlineno}"


def _made_elsewhere(graph: nx.DiGraph, node: str, source: SourceLine | None) -> str:
    """Where the integer tensor a ``dtype`` barrier receives was made from floats, when not on its line.

    An ``argmin`` on one line whose indices an ``Embedding`` gathers on the next: the cut is the
    gather's integer input (a cut nearer the variable has more edges: ``keras.ops.argmin`` also
    compares and bitcasts its input), and the line to change is the ``argmin``'s.
    """
    origins = _integer_origins(graph, node)
    if len(origins) != 1:
        return ""
    attrs = graph.nodes[origins[0]]
    made, _ = op_source(attrs["op"])
    if made is None or (source is not None and (made.file, made.line) == (source.file, source.line)):
        return ""
    return f"; made from floats by {attrs.get('op_type')} at {made}"


def _integer_origins(graph: nx.DiGraph, node: str, limit: int = 64) -> list[str]:
    """The ops, up the integer-only edges from ``node``, that make an integer from a float (an ``ArgMin``)."""
    seen, stack, origins = {node}, [node], []
    while stack and len(seen) < limit:
        n = stack.pop()
        if graph.nodes[n].get("kind") != "op" or graph.nodes[n].get("op") is None:
            continue
        ins = [(p, BarrierKind(d["kind"]) if d.get("kind") else None) for p, d in graph.pred[n].items()
               if graph.nodes[p].get("op_type") != "Const"]
        if any(kind is not BarrierKind.DTYPE for _, kind in ins):
            origins.append(n)  # a float input cut here: the integer starts at this op
            continue
        for p, _ in ins:
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return origins


NOT_RECORDED_DETAIL = "computed outside the tape's with block (or while it was paused, or before a tape.reset()): the tape recorded none of it"


def outside_barrier(graph: nx.DiGraph, edge: tuple[str, str]) -> Barrier:
    """The barrier where a value computed without the tape recording (``u``) enters what it recorded (``w``)."""
    u, w = edge
    attrs = graph.nodes[u]
    op = attrs.get("op")
    source, via_library = op_source(op) if op is not None else (None, True)
    return Barrier(
        op_name=str(attrs.get("name", u)), op_type=str(attrs.get("op_type", "")), kind=BarrierKind.NOT_RECORDED,
        detail=NOT_RECORDED_DETAIL, tensor=str(graph.edges[u, w].get("tensor", "")), source=source,
        in_user_code=source is not None and not via_library, node=u,
    )
