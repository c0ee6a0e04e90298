"""What every later step of the layout reads: the analysis results, computed once per drawing.

:func:`build_context` reads the report's :class:`~flowcheck.analysis.verdicts.Analysis` (which nodes a
gradient reaches, which edges cut a blocked variable off, where the tape would raise), adds the
blame paths through the cuts, and nothing downstream recomputes any of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import networkx as nx

from flowcheck._model import Verdict

from flowcheck.analysis.verdicts import Analysis, analyze_graph
from flowcheck.errors import RenderError
from flowcheck.render.model import VariableLike
from flowcheck.render.names import ScopeNames, scope_names

__all__ = ["Context", "build_context", "data_flow_order", "first_path"]


@dataclass(frozen=True)
class Context:
    """The analysis as the layout needs it (graph node ids throughout)."""

    g: nx.DiGraph
    detail: str
    sources: Callable[[str], Any] | None
    results: Mapping[str, VariableLike]
    checks: Mapping[str, Any]
    var_nodes: tuple[str, ...]
    loss_nodes: tuple[str, ...]
    receiving: AbstractSet[str]
    feeding: AbstractSet[str]
    kept: frozenset[str]
    handles: Mapping[str, str]
    verdicts: Mapping[str, Verdict]
    blocked: tuple[str, ...]
    barrier_edges: frozenset[tuple[str, str]]
    error_edges: frozenset[tuple[str, str]]
    blame_nodes: frozenset[str]
    blame_edges: frozenset[tuple[str, str]]
    finding: tuple[str, ...]
    ops: tuple[str, ...]
    homes: Mapping[str, tuple[str, ...]]
    names: ScopeNames
    order: Mapping[str, int]

    @property
    def barrier_nodes(self) -> frozenset[str]:
        """Ops at which a cut blocks a variable."""
        return frozenset(w for _, w in self.barrier_edges)

    @property
    def error_nodes(self) -> frozenset[str]:
        """Ops where differentiating the loss raises (drawn ones)."""
        return frozenset(w for _, w in self.error_edges if w in self.kept)

    def consumers(self, v: str) -> list[str]:
        """The drawn ops reading variable ``v`` (through its handle), in graph order."""
        return _consumers(self.g, v, self.handles, self.kept)


def build_context(
    graph: nx.DiGraph, results: Sequence[VariableLike], detail: str, focus: Iterable[str] | None,
    verification: Any, sources: Callable[[str], Any] | None, analysis: Analysis | None = None,
) -> Context:
    """Compute everything the layout reads (see :class:`Context`), from the graph's ``analysis``."""
    analysis = analysis or analyze_graph(graph)
    var_nodes, loss_nodes = analysis.variables, analysis.losses
    by_node = {r.node: r for r in results if r.node}
    receiving, feeding = analysis.receiving, analysis.feeding
    kept = _kept(graph, var_nodes, loss_nodes, feeding, focus)
    handles = _handles(graph, var_nodes)
    verdicts = {v: _verdict(by_node.get(v), v, receiving, feeding) for v in var_nodes}
    blocked = tuple(v for v in var_nodes if verdicts[v] is Verdict.BLOCKED and v in kept)
    # A variable the eager call blocks where the graph lets a gradient through has no cut: it gets none.
    cuts = analysis.cuts
    paths = _blame_paths(graph, blocked, cuts, set(loss_nodes))
    errors = frozenset(analysis.errors)
    finding = paths[0] if paths else _error_finding(graph, errors, kept, set(loss_nodes))
    ops = tuple(
        n for n in graph
        if graph.nodes[n].get("kind") == "op" and n in kept and n not in handles
        # An op with no data edge at all (the function's NoOp) only adds noise.
        and (graph.pred[n] or graph.succ[n] or detail == "ops")
    )
    # A variable is drawn by the consumer its gradient comes through (a while loop's
    # condition reads every loop input too, but the body is where the variable matters).
    homes = {
        v: tuple(sorted(_consumers(graph, v, handles, kept), key=lambda c: (c not in receiving, c not in feeding)))
        for v in var_nodes if v in kept
    }
    return Context(
        g=graph, detail=detail, sources=sources, results=by_node,
        checks={c.name: c for c in getattr(verification, "variables", ())},
        var_nodes=var_nodes, loss_nodes=loss_nodes, receiving=receiving, feeding=feeding, kept=kept,
        handles=handles, verdicts=verdicts, blocked=blocked,
        barrier_edges=frozenset(e for v in blocked for e in cuts.get(v, ())), error_edges=errors,
        blame_nodes=frozenset(n for p in paths for n in p),
        blame_edges=frozenset(e for p in paths for e in zip(p, p[1:])),
        finding=finding, ops=ops, homes=homes,
        names=scope_names(graph, var_nodes, lambda v: _consumers(graph, v, handles, kept)),
        order=data_flow_order(graph),
    )


def _verdict(r: VariableLike | None, v: str, receiving: AbstractSet[str], feeding: AbstractSet[str]) -> Verdict:
    if r is not None:
        return r.verdict
    return Verdict.RECEIVES if v in receiving else Verdict.BLOCKED if v in feeding else Verdict.UNUSED


def _kept(
    g: nx.DiGraph, var_nodes: tuple[str, ...], loss_nodes: tuple[str, ...], feeding: AbstractSet[str],
    focus: Iterable[str] | None,
) -> frozenset[str]:
    if focus is None and g.graph.get("step"):
        # A training step's graph also holds its backward pass, metric updates and the like:
        # only what feeds a gradient call's targets is part of the gradient flow.
        return frozenset(feeding | set(var_nodes) | set(loss_nodes))
    if focus is None:
        return frozenset(g)
    wanted = list(dict.fromkeys(focus))
    unknown = [f for f in wanted if f not in var_nodes]
    if unknown:
        raise RenderError(f"focus must name variables of the graph; not variables: {', '.join(unknown)}")
    down: set[str] = set(wanted)
    stack = list(wanted)
    while stack:
        for s in g.succ[stack.pop()]:
            if s not in down and s in feeding:
                down.add(s)
                stack.append(s)
    return frozenset(down | set(loss_nodes))


def _handles(g: nx.DiGraph, var_nodes: tuple[str, ...]) -> dict[str, str]:
    """Resource placeholders fed only by a variable: drawn as that variable."""
    found: dict[str, str] = {}
    for v in var_nodes:
        for s in g.succ[v]:
            attrs = g.nodes[s]
            if attrs.get("kind") == "op" and attrs.get("op_type") == "Placeholder" and list(g.pred[s]) == [v]:
                found[s] = v
    return found


def _consumers(g: nx.DiGraph, v: str, handles: Mapping[str, str], kept: frozenset[str]) -> list[str]:
    out: list[str] = []
    for s in g.succ[v]:
        for c in g.succ[s] if s in handles else [s]:
            if c in kept and c not in out and g.nodes[c].get("kind") == "op":
                out.append(c)
    return out


def _blame_paths(
    g: nx.DiGraph, blocked: tuple[str, ...], cuts: Mapping[str, tuple[tuple[str, str], ...]], losses: set[str],
) -> list[tuple[str, ...]]:
    """Each blocked variable's paths variable -> barrier -> loss, first variable's first cut first."""
    carrying = nx.subgraph_view(g, filter_edge=lambda u, w: bool(g.edges[u, w]["grad"]))
    paths: list[tuple[str, ...]] = []
    for v in blocked:
        for u, w in cuts.get(v, ()):
            paths.append(tuple(nx.shortest_path(carrying, v, u) + first_path(g, w, losses)))
    return paths


def _error_finding(g: nx.DiGraph, errors: frozenset[tuple[str, str]], kept: frozenset[str], losses: set[str]) -> tuple[str, ...]:
    heads = {w for _, w in errors if w in kept}
    first = next((n for n in g if n in heads), None)
    return tuple(first_path(g, first, losses)) if first is not None else ()


def first_path(graph: nx.DiGraph, source: str, targets: set[str]) -> list[str]:
    """A shortest forward path from ``source`` to any of ``targets`` (breadth first, in graph order)."""
    parent: dict[str, str | None] = {source: None}
    frontier = [source]
    while frontier:
        nxt: list[str] = []
        for n in frontier:
            if n in targets:
                path = [n]
                while (up := parent[path[-1]]) is not None:
                    path.append(up)
                return path[::-1]
            for s in graph.succ[n]:
                if s not in parent:
                    parent[s] = n
                    nxt.append(s)
        frontier = nxt
    return [source]


def data_flow_order(graph: nx.DiGraph) -> dict[str, int]:
    """A topological position for every node (graph order when the graph has a cycle)."""
    index = {n: i for i, n in enumerate(graph)}
    try:
        ordered = list(nx.lexicographical_topological_sort(graph, key=index.__getitem__))
    except nx.NetworkXUnfeasible:
        ordered = list(graph)
    return {n: i for i, n in enumerate(ordered)}
