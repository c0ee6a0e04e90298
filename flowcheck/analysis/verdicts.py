"""Stage 3: which variables a gradient reaches, and what cuts the others off.

Pure functions over the graph built by :mod:`flowcheck.graph.build` (its docstring documents the node
and edge attributes). Nothing here imports TensorFlow or changes the graph; every function is
linear in the size of the graph. :func:`analyze_graph` computes them once for a report: the
:class:`Analysis` that every later stage reads.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import networkx as nx

from flowcheck._model import BarrierKind, Verdict

__all__ = [
    "Analysis",
    "analyze_graph",
    "blocking_barriers",
    "feeding_nodes",
    "gradient_errors",
    "gradient_nodes",
    "loop_free_cuts",
    "reach",
    "verdicts",
]


def _reaching(graph: nx.DiGraph, targets: Iterable[str], reached: AbstractSet[str] = frozenset()) -> set[str]:
    """The nodes with a path to ``targets``, and ``reached``, nodes known to have one already, whose
    predecessors are not walked again."""
    seen = set(reached)
    stack = [t for t in targets if t in graph and t not in seen]
    seen.update(stack)
    pred = graph._pred  # noqa: SLF001 -- the adjacency dicts themselves: a view per node costs more than the walk
    while stack:
        for p in pred[stack.pop()]:
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def feeding_nodes(graph: nx.DiGraph, targets: Iterable[str]) -> set[str]:
    """Nodes with a forward path to any of ``targets`` (the targets included)."""
    return _reaching(graph, targets)


def gradient_nodes(graph: nx.DiGraph, targets: Iterable[str]) -> set[str]:
    """Nodes a gradient from ``targets`` reaches: a path of gradient-carrying edges exists."""
    return _gradient_walk(graph, targets)[0]


def reach(graph: nx.DiGraph, targets: Collection[str]) -> tuple[AbstractSet[str], AbstractSet[str]]:
    """``(feeding_nodes(graph, targets), gradient_nodes(graph, targets))``, which every verdict reads."""
    receiving, stops = _gradient_walk(graph, targets)
    return _feeding(graph, receiving, stops), receiving


def _gradient_walk(graph: nx.DiGraph, targets: Iterable[str]) -> tuple[set[str], list[tuple[str, str]]]:
    """:func:`gradient_nodes`, and the edges where the gradient stops: carrying none, into a node it reaches.

    :func:`reach` and :func:`gradient_errors` read both, so that each node's predecessors are
    read once, not once per set (on a large graph nearly every read is a cache miss).
    """
    pred = graph._pred  # noqa: SLF001 -- as in _reaching
    receiving = {t for t in targets if t in graph}
    stack, stops = list(receiving), list[tuple[str, str]]()
    push, pop, add, stop = stack.append, stack.pop, receiving.add, stops.append  # bound once: every node calls them
    while stack:
        node = pop()
        for p, data in pred[node].items():
            if not data["grad"]:  # whether or not p is reached another way: TensorFlow looks at node's gradient
                stop((p, node))
            elif p not in receiving:
                add(p)
                push(p)
    return receiving, stops


def _feeding(graph: nx.DiGraph, receiving: AbstractSet[str], stops: Iterable[tuple[str, str]]) -> set[str]:
    """:func:`feeding_nodes`: what the gradient reaches and what feeds the points where it stops."""
    return _reaching(graph, (p for p, _ in stops), reached=receiving)


def verdicts(
    graph: nx.DiGraph, variables: Iterable[str], targets: Collection[str],
    *, reached: tuple[AbstractSet[str], AbstractSet[str]] | None = None,
) -> dict[str, Verdict]:
    """The verdict of each variable node with respect to the loss nodes ``targets``.

    ``reached`` is :func:`reach`'s answer for the same ``targets``, when the caller has it.
    """
    feeding, receiving = reached or reach(graph, targets)
    return {
        v: Verdict.RECEIVES if v in receiving else Verdict.BLOCKED if v in feeding else Verdict.UNUSED
        for v in variables
    }


def blocking_barriers(
    graph: nx.DiGraph,
    variables: Iterable[str],
    targets: Collection[str],
    *,
    verdict: Mapping[str, Verdict] | None = None,
    reached: tuple[AbstractSet[str], AbstractSet[str]] | None = None,
) -> dict[str, tuple[tuple[str, str], ...]]:
    """For each blocked variable, a small set of barrier edges that cut all its paths to ``targets``.

    Two cuts are true for every blocked variable, and the smaller one is reported (the first on a
    tie):

    * *nearest the variable*: the first edge that carries no gradient on each forward path from the
      variable, i.e. an edge ``(u, w)`` where ``w`` feeds a target and ``u`` is reached from the
      variable along gradient-carrying edges (the ``Cast`` to an integer, not the later cast back);
    * *nearest the loss*: the edge on each path where the gradient from the targets stops, i.e. an
      edge ``(u, w)`` where a gradient reaches ``w`` but not ``u`` (the user's ``stop_gradient``,
      not the one inside ``tf.nn.moments`` whose path runs into it anyway).

    Every forward path crosses an edge of each cut, and each reported edge lies on such a path.
    One pass in reverse topological order serves every variable at once: each node holds its two
    sets as bitsets over the barrier edges, so the whole is linear in the size of the graph.

    ``verdict`` and ``reached`` (:func:`reach`) may be given when the caller has them for ``targets``.

    Returns:
        ``{variable: ((u, w), ...)}`` for the blocked variables, edges sorted.
    """
    reached = reached or reach(graph, targets)
    verdict = verdict or verdicts(graph, variables, targets, reached=reached)
    blocked = [v for v in variables if verdict.get(v) is Verdict.BLOCKED]
    if not blocked:
        return {}
    near, far, by_bit = _cut_sets(graph, *reached)
    result: dict[str, tuple[tuple[str, str], ...]] = {}
    for v in blocked:
        a, b = near.get(v, 0), far.get(v, 0)
        # On a tie, the cut at fewer ops: a tf.custom_gradient whose grad_fn returns None, not also a Round
        # inside its forward function, which its gradient never runs through.
        tie = b.bit_count() == a.bit_count()
        mask = b if b.bit_count() < a.bit_count() or (tie and _ops(b, by_bit) < _ops(a, by_bit)) else a
        edges = []
        while mask:
            low = mask & -mask
            edges.append(by_bit[low.bit_length() - 1])
            mask ^= low
        result[v] = tuple(sorted(edges))
    return result


def _ops(mask: int, by_bit: dict[int, tuple[str, str]]) -> int:
    """How many ops the edges of a cut (a bitset) go into."""
    ops = set()
    while mask:
        low = mask & -mask
        ops.add(by_bit[low.bit_length() - 1][1])
        mask ^= low
    return len(ops)


def loop_free_cuts(graph: nx.DiGraph, nodes: Collection[str], targets: Collection[str]) -> dict[str, tuple[tuple[str, str], ...]]:
    """:func:`blocking_barriers` of ``nodes`` in ``graph`` without its ``loop_carry`` edges.

    Traced, a ``While`` gives every value it carries a gradient, zeros at least; eagerly only its
    iterations' ops count. Without those edges the cut shows what cuts the iterations' paths (a
    ``tf.stop_gradient`` in the body, the loop condition). A node still reached another way (an
    untaken branch, which eagerly never ran) gets no cut.
    """
    if not nodes or not targets:
        return {}
    edges = graph.edges
    view = nx.subgraph_view(graph, filter_edge=lambda u, w: not edges[u, w].get("loop_carry"))
    return blocking_barriers(view, nodes, targets)


def _cut_sets(
    graph: nx.DiGraph, feeding: AbstractSet[str], receiving: AbstractSet[str]
) -> tuple[dict[str, int], dict[str, int], dict[int, tuple[str, str]]]:
    """Per node that feeds a target without a gradient: its near and far cuts as bitsets over edges."""
    edge_bits: dict[tuple[str, str], int] = {}

    def bit(edge: tuple[str, str]) -> int:
        found = edge_bits.get(edge)
        if found is None:
            found = edge_bits[edge] = 1 << len(edge_bits)
        return found

    near: dict[str, int] = {}
    far: dict[str, int] = {}
    succ = graph._succ  # noqa: SLF001 -- as in _reaching
    region = feeding - receiving  # nodes that feed a target but get no gradient
    for node in _reverse_topological(graph, region):
        near_acc = far_acc = 0
        for s, data in succ[node].items():
            if s not in feeding:
                continue
            if s in receiving:  # never a carrying edge: ``node`` would receive too
                far_acc |= bit((node, s))
            else:
                far_acc |= far[s]
            near_acc |= near[s] if data["grad"] else bit((node, s))
        near[node] = near_acc
        far[node] = far_acc
    return near, far, {b.bit_length() - 1: edge for edge, b in edge_bits.items()}


def _reverse_topological(graph: nx.DiGraph, region: AbstractSet[str]) -> list[str]:
    """The nodes of ``region``, each after all its successors in ``region`` (Kahn's algorithm).

    ``nx.topological_sort(graph.subgraph(region))`` gives such an order too, through a view that
    filters every adjacency it reads: several times the cost of the whole barrier search.
    """
    pred, succ = graph._pred, graph._succ  # noqa: SLF001 -- as in _reaching
    nodes = [n for n in graph._node if n in region]  # noqa: SLF001 -- in the graph's order: a stable answer
    waiting = {n: sum(1 for p in pred[n] if p in region) for n in nodes}
    ready = [n for n in nodes if not waiting[n]]
    order: list[str] = []
    while ready:
        node = ready.pop()
        order.append(node)
        for s in succ[node]:
            if s in waiting:
                waiting[s] -= 1
                if not waiting[s]:
                    ready.append(s)
    if len(order) != len(nodes):
        raise nx.NetworkXUnfeasible("Graph contains a cycle or graph changed during iteration")
    order.reverse()
    return order


# Edges along which TensorFlow's gradient code looks for the ops between the inputs and the loss:
# tensors of a differentiable dtype (gradients_util._MarkReachedOps skips the others).
_UNREACHING = frozenset({BarrierKind.DTYPE, BarrierKind.PREDICATE, BarrierKind.ASSIGN})


def gradient_errors(
    graph: nx.DiGraph, targets: Collection[str], *, stops: Iterable[tuple[str, str]] | None = None,
    sources: Collection[str] | None = None,
) -> tuple[tuple[str, str], ...]:
    """The edges into ops at which differentiating ``targets`` raises instead of giving None.

    TensorFlow differentiates a function with respect to all its inputs of a differentiable dtype
    (and each nested body with respect to its own inputs, once the op holding it is reached). An op
    with no registered gradient (``NO_GRADIENT`` edges) that lies downstream of such an input and
    that a gradient reaches makes ``gradients_util._GradientsHelper`` raise ``LookupError: No
    gradient defined for operation ...``: the tape then answers nothing at all.

    ``stops`` are the edges where the gradient from ``targets`` stops (:func:`_gradient_walk`), when
    the caller has them. ``sources`` are the nodes differentiated with respect to, the top
    function's inputs unless given: an eager tape around a plain callable watches only its
    variables (``graph.graph["variables"]``).

    Returns:
        ``((u, w), ...)`` sorted: the ``NO_GRADIENT`` edges into each such op ``w`` from a reached ``u``.
    """
    succ = graph._succ  # noqa: SLF001 -- as in _reaching
    if stops is None:
        stops = _gradient_walk(graph, targets)[1]
    # Into an op a gradient reaches, which passes it on (every assign has no gradient, and no outputs).
    candidates = [
        (u, w) for u, w in stops
        if succ[u][w].get("kind") is BarrierKind.NO_GRADIENT and any(data["grad"] for data in succ[w].values())
    ]
    if not candidates:
        return ()
    bodies: dict[str, list[str]] = {}  # gate -> the input placeholders of all its bodies
    body_of: dict[str, str] = {}  # input placeholder -> its gate
    for info in graph.graph["clusters"].values():
        bodies.setdefault(info["gate"], []).extend(info["inputs"])
        body_of.update((p, info["gate"]) for p in info["inputs"])
    reached = set(graph.graph["inputs"] if sources is None else sources)
    stack = list(reached)
    opened: set[str] = set()
    while stack:
        node = stack.pop()
        gate = body_of.get(node)
        if gate is not None and gate not in opened:
            opened.add(gate)  # the op holding the body is reached: all its bodies' inputs are xs
            fresh = [p for p in bodies[gate] if p not in reached]
            reached.update(fresh)
            stack.extend(fresh)
        for s, data in succ[node].items():
            if s not in reached and data["kind"] not in _UNREACHING:
                reached.add(s)
                stack.append(s)
    return tuple(sorted((u, w) for u, w in candidates if u in reached))


@dataclass(frozen=True)
class Analysis:
    """The analysis of one graph, computed once (:func:`analyze_graph`) and read by every output.

    Attributes:
        graph: The gradient-annotated graph.
        variables: Its variable nodes; ``losses``: its loss nodes.
        feeding: Nodes with a forward path to a loss; ``receiving``: nodes a gradient reaches.
        verdicts: Each variable node's verdict with respect to all losses.
        per_loss: Loss node -> each variable node's verdict with respect to that loss alone.
        cuts: For each blocked variable node, the barrier edges that cut all its paths.
        errors: The edges into ops where differentiating the losses raises (:func:`gradient_errors`).
    """

    graph: nx.DiGraph = field(repr=False)
    variables: tuple[str, ...]
    losses: tuple[str, ...]
    feeding: AbstractSet[str] = field(repr=False)
    receiving: AbstractSet[str] = field(repr=False)
    verdicts: Mapping[str, Verdict]
    per_loss: Mapping[str, Mapping[str, Verdict]]
    cuts: Mapping[str, tuple[tuple[str, str], ...]]
    errors: tuple[tuple[str, str], ...]
    _loss_cuts: dict[str, Mapping[str, tuple[tuple[str, str], ...]]] = field(default_factory=dict, repr=False, compare=False)

    def cuts_for(self, loss: str) -> Mapping[str, tuple[tuple[str, str], ...]]:
        """The cuts with respect to loss node ``loss`` alone (computed on first use, then kept)."""
        if len(self.losses) == 1:
            return self.cuts
        found = self._loss_cuts.get(loss)
        if found is None:
            found = self._loss_cuts[loss] = blocking_barriers(
                self.graph, self.variables, [loss], verdict=self.per_loss[loss],
            )
        return found


def analyze_graph(graph: nx.DiGraph) -> Analysis:
    """Verdicts (total and per loss), cuts and gradient errors of ``graph``'s variables and losses."""
    variables = tuple(graph.graph["variables"])
    losses = tuple(graph.graph["losses"])
    receiving, stops = _gradient_walk(graph, losses)
    feeding = _feeding(graph, receiving, stops)
    total = verdicts(graph, variables, losses, reached=(feeding, receiving))
    per_loss = {loss: verdicts(graph, variables, [loss]) for loss in losses} if len(losses) > 1 else dict.fromkeys(losses, total)
    return Analysis(
        graph=graph, variables=variables, losses=losses, feeding=feeding, receiving=receiving, verdicts=total,
        per_loss=per_loss, cuts=blocking_barriers(graph, variables, losses, verdict=total, reached=(feeding, receiving)),
        errors=gradient_errors(graph, losses, stops=stops),
    )
