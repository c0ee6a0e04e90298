"""TensorFlow 1 gradient calls judged: each source's static verdict on the graph, beside TensorFlow's answer.

``tf.gradients``, ``Optimizer.compute_gradients`` and ``minimize`` calls recorded while the user's
``tf.Graph`` was built (:mod:`flowcheck.trace.tf1`), on the graph of :mod:`flowcheck.graph.tf1`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from flowcheck._model import Barrier, BarrierKind, Verdict
from flowcheck.analysis.barriers import barrier, one_per_replica
from flowcheck.analysis.verdicts import blocking_barriers, gradient_errors, verdicts
from flowcheck.graph.build import loss_node
from flowcheck.graph.tf1 import GraphSource, display_name
from flowcheck.trace.tf1 import GraphCall

__all__ = ["CallAnalysis", "SourceVerdict", "analyze_calls"]


@dataclass(frozen=True)
class SourceVerdict:
    """The static verdict on one source of one call, with TensorFlow's recorded answer."""

    source: GraphSource
    verdict: Verdict
    barriers: tuple[Barrier, ...]
    tensorflow_none: bool | None


@dataclass(frozen=True)
class CallAnalysis:
    """One recorded call, judged.

    Attributes:
        call: The call as recorded.
        targets: The targets' display names.
        sources: One verdict per source, in the call's order.
        errors: Ops with no gradient that TensorFlow raises at (when the call raised LookupError).
        watch: What the call differentiates with respect to, in words.
        hints: Why no source can get a gradient, when a target says so by itself (a fed placeholder).
    """

    call: GraphCall
    targets: tuple[str, ...]
    sources: tuple[SourceVerdict, ...]
    errors: tuple[Barrier, ...]
    watch: str
    hints: tuple[str, ...] = ()


def _site_view(graph: nx.DiGraph, call: GraphCall, sources: Sequence[GraphSource]) -> nx.DiGraph:
    """The graph as this call differentiates it: its ``stop_gradients`` ops pass nothing back."""
    view = graph
    if call.stop_gradients:
        view = graph.copy()
        for tensor in call.stop_gradients:
            op_node = tensor.op.name
            if op_node not in view:
                continue
            for u in list(view.pred[op_node]):
                if view.nodes[u].get("kind") != "variable":
                    view.edges[u, op_node].update(
                        grad=False, kind=BarrierKind.STOP_GRADIENT,
                        detail=f"listed in tf.gradients(stop_gradients=...): {_written(call, tensor)}",
                    )
    if call.error is not None and call.error.startswith("LookupError"):
        view = view.copy() if view is graph else view
        view.graph["inputs"] = [s.tensor.op.name for s in sources]
    return view


def analyze_calls(
    calls: Sequence[GraphCall], sources: dict[int, GraphSource], graph: nx.DiGraph
) -> tuple[CallAnalysis, ...]:
    """The static verdict of every source of every call, beside TensorFlow's recorded answer."""
    cache: dict[tuple[str, str], Barrier] = {}
    results = []
    for call in calls:
        site_sources = [sources[id(obj)] for obj in call.sources]
        view = _site_view(graph, call, site_sources)
        targets = [loss_node(t.name) for t in call.targets]
        nodes = [s.node for s in site_sources]
        verdict = verdicts(view, nodes, targets)
        cuts = blocking_barriers(view, nodes, targets, verdict=verdict)
        judged = []
        for i, src in enumerate(site_sources):
            barriers = one_per_replica(barrier(view, edge, cache) for edge in cuts.get(src.node, ()))
            answer = None if call.grads is None else call.grads[i] is None
            judged.append(SourceVerdict(src, verdict[src.node], barriers, answer))
        errors: tuple[Barrier, ...] = ()
        if "inputs" in view.graph and view is not graph:
            errors = one_per_replica(barrier(view, edge, cache) for edge in gradient_errors(view, targets))
        shown = tuple(call.names.get(id(t)) or display_name(t) for t in call.targets)
        results.append(CallAnalysis(
            call=call, targets=shown, sources=tuple(judged), errors=errors, watch=_watch(call, site_sources),
            hints=_fed_targets(graph, dict(zip(targets, shown))),
        ))
    return tuple(results)


_FED = frozenset({"Placeholder", "PlaceholderWithDefault", "PlaceholderV2"})


def _fed_targets(graph: nx.DiGraph, targets: dict[str, str]) -> tuple[str, ...]:
    """A target that is a placeholder is a value fed from outside the graph: no variable is upstream of it."""
    hints = []
    for node, shown in targets.items():
        for op in graph.pred[node]:
            if graph.nodes[op].get("op_type") in _FED:
                hints.append(f"the target {shown} is a placeholder: a value fed from outside the "
                             "graph (a loss computed with NumPy) depends on no variable; compute it with TensorFlow ops")
    return tuple(hints)


def _watch(call: GraphCall, sources: Sequence[GraphSource]) -> str:
    names = ", ".join(s.name for s in sources)
    if call.kind in ("tf1 tf.gradients", "tf1 tf.hessians"):
        words = f"graph mode: differentiates with respect to the xs given: {names}"
        if call.stop_gradients:
            words += "; stop_gradients: " + ", ".join(_written(call, t) for t in call.stop_gradients)
    elif call.var_list_given:
        words = f"graph mode: var_list={names}"
    elif call.var_list_given is None:
        words = f"graph mode: var_list (the graph's trainable variables): {names}"
    else:
        words = f"graph mode: no var_list, so the graph's trainable variables: {names}"
    if call.unconnected_zero:
        words += "; unconnected_gradients='zero' (TensorFlow gives zeros, not None, to cut sources)"
    return words


def _written(call: GraphCall, tensor: Any) -> str:
    """A tensor as the script names it where it made the call (``h``), else TensorFlow's name (``MatMul:0``)."""
    return call.names.get(id(tensor)) or str(tensor.name)
