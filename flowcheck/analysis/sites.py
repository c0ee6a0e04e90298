"""Per-site verdicts: each gradient call judged on the ops *its* tape recorded, with its watch rules.

A tape differentiates only what it recorded: the ops created inside its ``with`` block while it
was recording (``stop_recording`` stretches excluded), and among the variables read there only
those it watches (every trainable one it accesses by default; only those passed to ``watch`` with
``watch_accessed_variables=False``). So for each recorded call the graph of the whole step is cut
down to those ops (plus the input placeholders through which variables enter), the edges out of
the variable nodes carry a gradient exactly for watched variables, and the usual analysis of
:mod:`flowcheck.analysis.verdicts` runs on that, from the tensors passed as targets. ``tf.gradients``
differentiates the whole graph and watches nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import networkx as nx

from flowcheck._model import BarrierKind, Verdict
from flowcheck._phrases import OUTSIDE_TAPE

from flowcheck.analysis.barriers import one_per_replica, outside_barrier
from flowcheck.analysis.verdicts import blocking_barriers, reach, verdicts
from flowcheck.trace.sites import GradientSite, RecordedCall, SiteSource

__all__ = ["SiteGraph", "judge_call", "site_graph", "tensor_node"]

BarrierOf = Callable[[nx.DiGraph, tuple[str, str], dict[tuple[str, str], Any]], Any]

_NOT_WATCHED_TRAINABLE = "created with trainable=False: GradientTape does not watch it"
_NOT_WATCHED_EXPLICIT = "the tape has watch_accessed_variables=False and was not asked to watch it"


class SiteGraph:
    """The step's graph as one call's tape saw it, and the ids of its sources and targets.

    Attributes:
        graph: A copy of the step's graph holding only what the tape recorded.
        sources: Per source of the call, its node in :attr:`graph` (None: not in it at all).
        targets: The nodes of the call's targets present in :attr:`graph`.
    """

    def __init__(
        self, graph: nx.DiGraph, sources: list[str | None], targets: list[str], full: nx.DiGraph | None = None,
    ) -> None:
        self.graph = graph
        self.sources = sources
        self.targets = targets
        self.full = full  # the step's whole graph, for what the tape did not record
        self._reached: tuple[AbstractSet[str], AbstractSet[str]] | None = None

    def read_outside(self, node: str) -> list[tuple[str, str]]:
        """Where variable ``node``'s values, computed while the tape was not recording, enter what it recorded.

        The edges ``(u, w)``: ``u`` computed from the variable outside the recording (through edges that
        carry a gradient), ``w`` recorded and on the way to a target. Empty when the variable is not read
        that way (then it is simply not used by what the tape differentiates).
        """
        if self.full is None or not self.targets:
            return []
        kept, feeding = self.graph, self.reached()[0]
        full, nodes = self.full._succ, self.full._node  # noqa: SLF001 -- the adjacency dicts, as in verdicts
        seen, stack, crossing = {node}, [node], []
        while stack:
            u = stack.pop()
            for w, data in full[u].items():
                if not data["grad"] or w in seen:
                    continue
                entry = nodes[w].get("op_type") == "Placeholder"
                if w in kept and not entry:
                    if u not in kept and w in feeding:
                        crossing.append((u, w))
                    continue
                seen.add(w)
                stack.append(w)
        return sorted(crossing)

    def reached(self) -> tuple[AbstractSet[str], AbstractSet[str]]:
        """:func:`flowcheck.analysis.verdicts.reach` of :attr:`targets`, computed once for every verdict read here."""
        if self._reached is None:
            self._reached = reach(self.graph, self.targets)
        return self._reached


def _op_id(attrs: dict[str, Any]) -> int | None:
    op = attrs.get("op")
    try:
        return int(op._id) if op is not None else None  # noqa: SLF001 -- creation order in its graph
    except Exception:  # noqa: BLE001 -- an op rebuilt from a FunctionDef
        return None


def _recorded_nodes(graph: nx.DiGraph, call: RecordedCall) -> set[str]:
    """Op nodes the call's tape recorded (every op for ``tf.gradients``), placeholders included."""
    tape = call.tape
    clusters = graph.graph["clusters"]
    verdict_of: dict[str, bool] = {}

    nodes = graph._node  # noqa: SLF001 -- the attribute dicts themselves: a view per node costs more

    def own(node: str) -> bool:
        found = verdict_of.get(node)
        if found is not None:
            return found
        attrs = nodes[node]
        op = attrs.get("op")
        if op is not None and op.type == "Placeholder":
            result = True  # arguments and captures: how variables and inputs enter, not computation
        elif tape is None:
            result = True
        elif op is not None and op.graph is tape.graph:
            op_id = _op_id(attrs)
            result = op_id is not None and tape.recorded(op_id)
        elif attrs.get("cluster") is not None:
            result = own(clusters[attrs["cluster"]]["gate"])  # inside a body: as the op holding it
        else:
            result = False
        verdict_of[node] = result
        return result

    return {n for n, attrs in nodes.items() if attrs.get("kind") == "op" and own(n)}


def site_graph(
    graph: nx.DiGraph, call: RecordedCall, variables: Sequence[Any], watched_ids: Callable[[int], bool],
    variable_index: Callable[[Any], int | None],
) -> SiteGraph:
    """Cut the step's graph down to what ``call`` differentiates.

    Args:
        graph: The step's graph (:func:`flowcheck.graph.build.build_graph`).
        call: The recorded call.
        variables: ``Traced.variables``.
        watched_ids: Whether the tape watches variable ``i`` (called per variable node).
        variable_index: The index in ``variables`` of a source object, or None.
    """
    keep = _recorded_nodes(graph, call)
    var_nodes: list[str] = graph.graph["variables"]
    keep.update(var_nodes)
    # A tensor source (``tape.watch(x)``) may be made before the block: it is where gradients end.
    keep.update(n for obj in call.sources if variable_index(obj) is None and (n := tensor_node(graph, obj)))
    # So may a tensor given to tape.watch: where what the tape holds starts (flowcheck.analysis.sites._on_tape).
    watching = call.tape.watched if call.tape is not None else ()
    keep.update(n for obj in watching if variable_index(obj) is None and (n := tensor_node(graph, obj)))
    sub = _induced_copy(graph, keep)
    if call.tape is not None:
        # The tape looks up the own type of each op it recorded, overrides aside; the bodies of the
        # functions, conds and loops it recorded are differentiated by tf.gradients, overrides honoured.
        for _, w, data in sub.edges(data=True):
            if "tape" in data and getattr(sub.nodes[w].get("op"), "graph", None) is call.tape.graph:
                grad, kind, detail = data["tape"]
                data.update(grad=grad, kind=kind, detail=detail)
    for tensor in call.stop_gradients:  # tf.gradients(stop_gradients=...): constants for this call
        stop = tensor_node(sub, tensor)
        for u in list(sub.pred[stop]) if stop is not None else ():
            sub.edges[u, stop].update(grad=False, kind=BarrierKind.STOP_GRADIENT,
                                      detail=f"listed in tf.gradients(stop_gradients=...): {tensor.name}")
    for i, node in enumerate(var_nodes):
        watched = watched_ids(i)
        for succ in list(sub.succ[node]):
            data = sub.edges[node, succ]
            if data["kind"] is BarrierKind.DTYPE:
                continue  # an integer variable carries nothing, watched or not
            if watched:
                data.update(grad=True, kind=None, detail="")
            else:
                detail = _NOT_WATCHED_EXPLICIT if call.tape is not None and not call.tape.watch_accessed_variables \
                    else _NOT_WATCHED_TRAINABLE
                data.update(grad=False, kind=BarrierKind.NOT_WATCHED, detail=detail)
    sources: list[str | None] = []
    for obj in call.sources:
        index = variable_index(obj)
        sources.append(var_nodes[index] if index is not None else tensor_node(sub, obj))
    targets = [n for n in (tensor_node(sub, t) for t in call.targets) if n is not None]
    return SiteGraph(sub, sources, targets, full=graph)


def _induced_copy(graph: nx.DiGraph, keep: set[str]) -> nx.DiGraph:
    """``graph.subgraph(keep).copy()``, in the graph's order, without the views' filtering per read.

    As that copy does, every node and edge gets its own attribute dict (a site changes the edges out
    of variables) and the graph's attributes are shared.
    """
    sub = nx.DiGraph()
    sub.graph.update(graph.graph)
    nodes, succ = graph._node, graph._succ  # noqa: SLF001 -- as in flowcheck.analysis.verdicts
    sub_nodes, sub_succ, sub_pred = sub._node, sub._succ, sub._pred  # noqa: SLF001
    order = [n for n in nodes if n in keep]
    for n in order:
        sub_nodes[n] = nodes[n].copy()
        sub_succ[n] = {}
        sub_pred[n] = {}
    for u in order:
        out = sub_succ[u]
        for w, data in succ[u].items():
            if w in keep:
                out[w] = sub_pred[w][u] = data.copy()
    return sub


def _on_tape(graph: nx.DiGraph, call: RecordedCall) -> set[str]:
    """The nodes whose tensors the call's tape holds: what it watches (its variables, the tensors
    given to ``tape.watch``) and what the ops it recorded made from them. A tensor source outside
    this set gets None from TensorFlow, however it feeds the target (the tape never saw it made)."""
    variables: list[str] = graph.graph["variables"]
    roots = [*variables, *(n for w in call.tape.watched if (n := tensor_node(graph, w)) is not None)] if call.tape else []
    seen, stack = set(roots), list(roots)
    succ = graph._succ  # noqa: SLF001 -- as in flowcheck.analysis.verdicts
    while stack:
        for w, data in succ[stack.pop()].items():
            # Round's output is on the tape (its gradient is None, but it is recorded); StopGradient's
            # (registered not differentiable: never recorded), an integer's or an unwatched variable's is not.
            if w not in seen and (data["grad"] or data["kind"] not in _OFF_TAPE):
                seen.add(w)
                stack.append(w)
    return seen


_OFF_TAPE = (
    BarrierKind.DTYPE, BarrierKind.NOT_WATCHED, BarrierKind.NOT_RECORDED, BarrierKind.STOP_GRADIENT,
    BarrierKind.NOT_DIFFERENTIABLE,
)


def tensor_node(graph: nx.DiGraph, tensor: Any) -> str | None:
    """The node of the op that makes ``tensor`` (searched in inlined bodies too), if any."""
    op = getattr(tensor, "op", None)
    if op is None:
        return None
    name = str(op.name)
    if name in graph and graph.nodes[name].get("op") is op:
        return name
    for node, attrs in graph.nodes(data=True):  # a tensor of a nested function's graph
        if attrs.get("op") is op:
            return str(node)
    return None


def judge_call(
    call: RecordedCall, sub: SiteGraph, names: Sequence[str], trainable: Sequence[bool],
    barrier_of: BarrierOf, watch: str, target_labels: tuple[str, ...],
) -> GradientSite:
    """The :class:`GradientSite` of one call from its cut-down graph."""
    present = [n for n in sub.sources if n is not None]
    verdict = verdicts(sub.graph, present, sub.targets, reached=sub.reached()) if sub.targets \
        else dict.fromkeys(present, Verdict.UNUSED)
    cuts = blocking_barriers(sub.graph, present, sub.targets, verdict=verdict, reached=sub.reached()) if sub.targets else {}
    cache: dict[tuple[str, str], Any] = {}
    answers = call.tensorflow_none
    on_tape = _on_tape(sub.graph, call) if call.tape is not None else set()
    unwatched: list[str] = []
    sources = []
    for i, node in enumerate(sub.sources):
        found = verdict.get(node, Verdict.UNUSED) if node is not None else Verdict.UNUSED
        barriers = one_per_replica(barrier_of(sub.graph, edge, cache) for edge in cuts.get(node, ())) if node else ()
        outside = sub.read_outside(node) if found is Verdict.UNUSED and node is not None and sub.full is not None else []
        if outside:  # read before the tape's block: cut by the tape itself, at the ops computed outside it
            found, barriers = Verdict.BLOCKED, tuple(dict.fromkeys(outside_barrier(sub.full, e) for e in outside))
        if found is Verdict.RECEIVES and node is not None and call.tape is not None and node not in on_tape:
            found, barriers = Verdict.BLOCKED, ()  # a tensor the tape holds no record of: its gradient is None
            unwatched.append(names[i])
        sources.append(SiteSource(
            name=names[i], variable=call.sources[i], verdict=found, barriers=barriers,
            tensorflow_none=answers[i], trainable=trainable[i],
        ))
    notes: tuple[str, ...] = () if sub.targets else (OUTSIDE_TAPE,)
    if unwatched:
        notes += (f"{', '.join(unwatched)}: the tape was not asked to watch it (tape.watch) and recorded no op "
                  "that makes it from something it watches: TensorFlow gives None",)
    return GradientSite(
        kind=call.kind, source=call.source, targets=target_labels, sources=tuple(sources), watch=watch,
        error=call.error, notes=notes,
    )
