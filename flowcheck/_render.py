"""Stage 4: the gradient-flow diagram as Graphviz DOT source, built by pure string work.

Two steps, both pure and deterministic (the same graph gives the same bytes):

* :func:`layout` decides what to draw: which ops are folded into one node per Keras layer or
  name scope, where each variable sits, which edges carry a gradient, and each blocked
  variable's blame path. It returns a :class:`Drawing` that tests can assert on.
* :func:`format_dot` writes a :class:`Drawing` as DOT text.

:func:`to_dot` does both. Running the ``dot`` binary is :mod:`flowcheck._rendering`'s job.
Nothing here imports TensorFlow: the input is the ``networkx.DiGraph`` documented in
``flowcheck._graph`` and the report's :class:`~flowcheck.VariableResult` records.

Grouping. An op belongs to the innermost nested function (``cond`` branch, ``while`` body, called
``tf.function``) that holds it; an op of the outer graph belongs to its name scope, cut at the
depth of a Keras layer. A layer's scope is found from its variables: ``sequential/d1/kernel`` is
read by ops named ``sequential_1/d1_1/...``, so ``sequential_1`` is a *container* and every scope
directly below it (``sequential_1/d1_1``, ``sequential_1/relu_1``) is one group. Scopes holding more
than :data:`MAX_GROUP_OPS` ops are split the same way when no variable names them.

Keeping ``dot`` fast. Each variable is drawn in its own layer's box, never in a shared hub, and an
edge that would close a cycle between groups is drawn with ``constraint=false``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import networkx as nx

from flowcheck._analysis import BarrierKind, Verdict, blocking_barriers, feeding_nodes, gradient_errors, gradient_nodes
from flowcheck._source import SourceLine, op_source
from flowcheck.errors import RenderError

__all__ = [
    "DETAILS",
    "Cluster",
    "Drawing",
    "Edge",
    "Node",
    "format_dot",
    "layout",
    "op_sources",
    "svg_id",
    "to_dot",
]

DETAILS: Final = ("collapsed", "ops")
"""The accepted values of ``detail``."""

MAX_GROUP_OPS: Final = 300
"""A name scope with more ops than this is split into its sub-scopes even if no variable says so."""

EDGE_ROLES: Final = ("flow", "barrier", "cut", "inert")
"""Edge roles, strongest first: a folded edge takes the strongest role of the edges it stands for."""

VERDICT_COLORS: Final = {
    Verdict.RECEIVES: ("#1b7837", "#d9f0d3"),
    Verdict.BLOCKED: ("#b2182b", "#fddbc7"),
    Verdict.UNUSED: ("#6b6b6b", "#e8e8e8"),
}
"""Border and fill color of a variable, by verdict."""

_BLAME = "#e66101"
_BARRIER = "#b2182b"
_FLOW = "#1b7837"
_INERT = "#b8b8b8"
_CUT = "#d6604d"
_FONT = "Helvetica"
_KERAS_SUFFIX = re.compile(r"_\d+$")


class VariableLike(Protocol):
    """What the renderer reads from a :class:`flowcheck.VariableResult`."""

    @property
    def name(self) -> str: ...
    @property
    def verdict(self) -> Verdict: ...
    @property
    def barriers(self) -> Sequence[Any]: ...
    @property
    def shape(self) -> tuple[int | None, ...]: ...
    @property
    def dtype(self) -> str: ...
    @property
    def trainable(self) -> bool: ...
    @property
    def node(self) -> str: ...


@dataclass(frozen=True)
class Node:
    """One drawn node.

    Attributes:
        name: Its DOT name.
        role: ``variable``, ``loss``, ``barrier``, ``op`` or ``group``.
        label: The text drawn in it.
        tooltip: The text shown on hover.
        classes: SVG classes (``variable blocked``, ``group``, ``blame``, ...).
        svg_id: The SVG element id (``var-3``, ``loss-0``, ``group-12``, ``op-40``).
        cluster: The DOT name of the cluster drawn around it, or ``None``.
        members: The graph nodes it stands for.
        verdict: A variable's verdict; for a group, the worst verdict of its variables.
        trainable: False for a non-trainable variable.
        counts: For a group: how many of its variables have each verdict.
    """

    name: str
    role: str
    label: str
    tooltip: str
    classes: tuple[str, ...]
    svg_id: str
    cluster: str | None
    members: tuple[str, ...]
    verdict: Verdict | None = None
    trainable: bool = True
    counts: tuple[tuple[Verdict, int], ...] = ()


@dataclass(frozen=True)
class Edge:
    """One drawn edge, standing for one or more edges of the graph.

    Attributes:
        tail: The DOT name of the producer.
        head: The DOT name of the consumer.
        role: ``flow`` (gradient from the loss runs back along it), ``barrier`` (it is cut and
            that blocks a variable), ``cut`` (cut, blocking nothing) or ``inert`` (no gradient
            from the loss reaches it).
        blame: On a blocked variable's path variable -> barrier -> loss.
        label: Text drawn on it (the barrier's kind).
        tooltip: Text shown on hover.
        constraint: False for an edge that would close a cycle between groups.
    """

    tail: str
    head: str
    role: str
    blame: bool
    label: str
    tooltip: str
    constraint: bool = True


@dataclass(frozen=True)
class Cluster:
    """A labelled box around nodes: a Keras layer, a name scope or a nested function.

    Attributes:
        name: Its DOT name (starts with ``cluster_``).
        label: The text at its top.
        kind: ``layer`` (a folded layer and its variables), ``scope``, ``function``, ``cond``,
            ``case`` or ``while``.
        parent: The DOT name of the cluster around it, or ``None``.
        tooltip: Text shown on hover.
    """

    name: str
    label: str
    kind: str
    parent: str | None
    tooltip: str


@dataclass(frozen=True)
class Drawing:
    """Everything :func:`format_dot` writes, in drawing order."""

    title: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    clusters: tuple[Cluster, ...]


def svg_id(node: str) -> str:
    """The SVG element id of a variable or loss node id (``variable:3`` -> ``var-3``)."""
    kind, _, rest = node.partition(":")
    if kind == "variable":
        return f"var-{rest}"
    if kind == "loss":
        return f"loss-{_slug(rest)}"
    return f"op-{_slug(node)}"


def op_sources(graph: nx.DiGraph) -> Callable[[str], SourceLine | None]:
    """A lookup of the user's line that made an op node, reading tracebacks only when asked.

    Ops TensorFlow makes while tracing (argument placeholders, the output ``Identity``) point at
    the line that started the trace; that line says nothing about the op and is left out.
    """
    call_site: list[SourceLine | None] = []

    def line_of(node: str) -> SourceLine | None:
        op = graph.nodes[node].get("op") if node in graph else None
        return None if op is None else op_source(op)[0]

    def lookup(node: str) -> SourceLine | None:
        if not call_site:
            first = next(
                (n for n, d in graph.nodes(data=True) if d.get("op_type") == "Placeholder" and d.get("cluster") is None
                 and not any(graph.nodes[p].get("kind") == "variable" for p in graph.pred[n])),
                None,
            )
            call_site.append(line_of(first) if first is not None else None)
        line = line_of(node)
        return None if line is None or line == call_site[0] else line

    return lookup


def to_dot(
    graph: nx.DiGraph,
    results: Sequence[VariableLike],
    *,
    detail: str = "collapsed",
    focus: Iterable[str] | None = None,
    verification: Any = None,
    sources: Callable[[str], Any] | None = None,
    title: str = "",
) -> str:
    """The DOT source of the gradient-flow diagram (see :func:`layout` for the arguments)."""
    return format_dot(
        layout(graph, results, detail=detail, focus=focus, verification=verification, sources=sources, title=title)
    )


def layout(
    graph: nx.DiGraph,
    results: Sequence[VariableLike],
    *,
    detail: str = "collapsed",
    focus: Iterable[str] | None = None,
    verification: Any = None,
    sources: Callable[[str], Any] | None = None,
    title: str = "",
) -> Drawing:
    """Decide what the diagram shows.

    Args:
        graph: The gradient-annotated graph (``flowcheck._graph``).
        results: One result per variable node (``flowcheck.VariableResult`` or alike).
        detail: ``"collapsed"`` folds each layer or scope into one node, except those holding a
            barrier or a blocked variable; ``"ops"`` draws every op.
        focus: Variable node ids: draw only these and the ops between them and the loss.
        verification: A ``flowcheck.Verification`` whose observations go into the tooltips.
        sources: Maps an op node id to its source line (anything with ``str()``), or ``None``;
            called only for op nodes that are drawn.
        title: The diagram's caption.

    Raises:
        RenderError: ``detail`` is not one of :data:`DETAILS`, or ``focus`` names a node that is
            not a variable of the graph.
    """
    if detail not in DETAILS:
        raise RenderError(f"detail must be one of {', '.join(map(repr, DETAILS))}, not {detail!r}")
    return _Layout(graph, results, detail, focus, verification, sources, title).run()


class _Layout:
    def __init__(
        self, graph: nx.DiGraph, results: Sequence[VariableLike], detail: str, focus: Iterable[str] | None,
        verification: Any, sources: Callable[[str], Any] | None, title: str,
    ) -> None:
        self.g = graph
        self.detail = detail
        self.sources = sources
        self.title = title
        self.var_nodes: list[str] = list(graph.graph.get("variables", ()))
        self.loss_nodes: list[str] = list(graph.graph.get("losses", ()))
        self.results = {r.node: r for r in results if r.node}
        self.checks = {c.name: c for c in getattr(verification, "variables", ())}
        self.receiving = gradient_nodes(graph, self.loss_nodes)
        self.feeding = feeding_nodes(graph, self.loss_nodes)
        self.focus = None if focus is None else list(dict.fromkeys(focus))
        if self.focus is not None:
            unknown = [f for f in self.focus if f not in self.var_nodes]
            if unknown:
                raise RenderError(f"focus must name variables of the graph; not variables: {', '.join(unknown)}")

    # -- what is drawn -------------------------------------------------------------------------

    def run(self) -> Drawing:
        g = self.g
        detail_all = self.detail == "ops"
        self.kept = self._kept()
        self.handles = self._handles()
        verdicts = {v: self._verdict(v) for v in self.var_nodes}
        blocked = [v for v in self.var_nodes if verdicts[v] is Verdict.BLOCKED and v in self.kept]
        cuts = blocking_barriers(g, self.var_nodes, self.loss_nodes, verdict=verdicts) if blocked else {}
        self.barrier_edges = {e for v in blocked for e in cuts.get(v, ())}
        self.barrier_nodes = {w for _, w in self.barrier_edges}
        # Ops where differentiating the loss raises (no gradient defined, and one reaches them).
        self.error_edges = set(gradient_errors(g, self.loss_nodes))
        self.error_nodes = {w for _, w in self.error_edges if w in self.kept}
        self.blame_nodes, self.blame_edges = self._blame(blocked, cuts)
        ops = [
            n for n in g
            if g.nodes[n].get("kind") == "op" and n in self.kept and n not in self.handles
            # An op with no data edge at all (the function's NoOp) only adds noise.
            and (g.pred[n] or g.succ[n] or detail_all)
        ]
        # A variable is drawn by the consumer its gradient comes through (a while loop's
        # condition reads every loop input too, but the body is where the variable matters).
        self.homes = {
            v: sorted(self._consumers(v), key=lambda c: (c not in self.receiving, c not in self.feeding))
            for v in self.var_nodes if v in self.kept
        }
        self.group_of = self._groups(ops)
        expanded = self._expanded(blocked)
        # Ops of an expanded group (or alone in theirs) are drawn one by one.
        members: dict[str, list[str]] = {}
        for op in ops:
            members.setdefault(self.group_of[op], []).append(op)
        self.expanded = {k for k, m in members.items() if k in expanded or len(m) == 1}
        self.members = members
        self.drawn_as: dict[str, str] = {}
        self.var_prefix: dict[str, str] = {}
        nodes, clusters = self._nodes(ops, verdicts)
        edges = self._edges()
        return Drawing(self.title, tuple(nodes), tuple(edges), tuple(clusters))

    def _verdict(self, v: str) -> Verdict:
        r = self.results.get(v)
        if r is not None:
            return r.verdict
        return Verdict.RECEIVES if v in self.receiving else Verdict.BLOCKED if v in self.feeding else Verdict.UNUSED

    def _kept(self) -> set[str]:
        if self.focus is None:
            return set(self.g)
        down: set[str] = set(self.focus)
        stack = list(self.focus)
        succ = self.g.succ
        while stack:
            for s in succ[stack.pop()]:
                if s not in down and s in self.feeding:
                    down.add(s)
                    stack.append(s)
        return down | set(self.loss_nodes)

    def _handles(self) -> dict[str, str]:
        """Resource placeholders fed only by a variable: drawn as that variable."""
        found: dict[str, str] = {}
        for v in self.var_nodes:
            for s in self.g.succ[v]:
                attrs = self.g.nodes[s]
                preds = list(self.g.pred[s])
                if attrs.get("kind") == "op" and attrs.get("op_type") == "Placeholder" and preds == [v]:
                    found[s] = v
        return found

    def _consumers(self, v: str) -> list[str]:
        """The drawn ops reading variable ``v`` (through its handle), in graph order."""
        out: list[str] = []
        for s in self.g.succ[v]:
            for c in self.g.succ[s] if s in self.handles else [s]:
                if c in self.kept and c not in out and self.g.nodes[c].get("kind") == "op":
                    out.append(c)
        return out

    def _blame(
        self, blocked: list[str], cuts: Mapping[str, tuple[tuple[str, str], ...]]
    ) -> tuple[set[str], set[tuple[str, str]]]:
        """Nodes and edges on each blocked variable's path variable -> barrier -> loss."""
        g = self.g
        carrying = nx.subgraph_view(g, filter_edge=lambda u, w: bool(g.edges[u, w]["grad"]))
        losses = set(self.loss_nodes)
        nodes: set[str] = set()
        edges: set[tuple[str, str]] = set()
        for v in blocked:
            for u, w in cuts.get(v, ()):
                head = nx.shortest_path(carrying, v, u)
                tail = _first_path(g, w, losses)
                path = head + tail
                nodes.update(path)
                edges.update(zip(path, path[1:]))
        return nodes, edges

    def _groups(self, ops: list[str]) -> dict[str, str]:
        """The group key of each op: ``fn:<cluster>`` or ``scope:<name scope>``."""
        g = self.g
        containers = self._containers([n for n in ops if g.nodes[n].get("cluster") is None])
        groups: dict[str, str] = {}
        for op in ops:
            cluster = g.nodes[op].get("cluster")
            if cluster is not None:
                groups[op] = f"fn:{cluster}"
                continue
            parts = str(g.nodes[op].get("name", op)).split("/")
            depth = 1
            while depth < len(parts) and "/".join(parts[:depth]) in containers:
                depth += 1
            groups[op] = "scope:" + "/".join(parts[:depth])
        return groups

    def _containers(self, ops: list[str]) -> set[str]:
        """Name scopes whose direct sub-scopes are the groups (a model around its layers)."""
        g = self.g
        containers: set[str] = set()
        for v in self.var_nodes:
            layer = str(g.nodes[v].get("name", "")).split(":")[0].split("/")[:-1]
            if not layer:
                continue
            for s in self._consumers(v):
                if g.nodes[s].get("cluster") is not None:
                    continue
                parts = str(g.nodes[s].get("name", s)).split("/")
                end = _match_layer(parts, layer)
                if end is not None:
                    containers.update("/".join(parts[:i]) for i in range(1, end))
        counts: Counter[str] = Counter()
        for op in ops:
            parts = str(g.nodes[op].get("name", op)).split("/")
            counts.update("/".join(parts[:i]) for i in range(1, len(parts)))
        containers.update(scope for scope, n in counts.items() if n > MAX_GROUP_OPS)
        return containers

    def _expanded(self, blocked: list[str]) -> set[str]:
        if self.detail == "ops":
            return set(self.group_of.values())
        keys = {self.group_of[n] for n in self.barrier_nodes | self.error_nodes if n in self.group_of}
        for v in blocked:
            keys.update(self.group_of[c] for c in self.homes.get(v, ()) if c in self.group_of)
        # A nested function is drawn inside the function holding it: open its ancestors too.
        clusters = self.g.graph.get("clusters", {})
        for key in list(keys):
            if key.startswith("fn:"):
                parent = clusters.get(key[3:], {}).get("parent")
                while parent is not None:
                    keys.add(f"fn:{parent}")
                    parent = clusters.get(parent, {}).get("parent")
        return keys

    # -- nodes ---------------------------------------------------------------------------------

    def _nodes(self, ops: list[str], verdicts: Mapping[str, Verdict]) -> tuple[list[Node], list[Cluster]]:
        g = self.g
        clusters: dict[str, Cluster] = {}
        fn_clusters = g.graph.get("clusters", {})
        group_ids = {k: i for i, k in enumerate(self.members)}

        def cluster_of_group(key: str) -> str | None:
            """The DOT cluster an op of group ``key`` is drawn in (created on first use)."""
            if key.startswith("fn:"):
                return fn_cluster(key[3:])
            if key not in self.expanded or len(self.members[key]) == 1:
                return None
            name = f"cluster_g{group_ids[key]}"
            if name not in clusters:
                scope = key[6:]
                clusters[name] = Cluster(name, scope, "scope", None, f"name scope {scope}")
            return name

        def fn_cluster(cid: str) -> str | None:
            info = fn_clusters.get(cid)
            if info is None:
                return None
            if f"fn:{cid}" not in self.expanded:
                return fn_cluster(info["parent"]) if info.get("parent") is not None else None
            name = "cluster_" + _slug(cid)
            if name not in clusters:
                parent = fn_cluster(info["parent"]) if info.get("parent") is not None else None
                kind = str(info.get("kind", "function"))
                clusters[name] = Cluster(name, str(info.get("label", cid)), kind, parent, f"{_KIND_WORDS.get(kind, kind)}: {info.get('label', cid)}")
            return name

        nodes: list[Node] = []
        # Folded groups, with the variables they read in their own box.
        layer_box: dict[str, str] = {}
        vars_by_group: dict[str, list[str]] = {}
        for v, home in self.homes.items():
            if home:
                vars_by_group.setdefault(self.group_of[home[0]], []).append(v)
        for key, members in self.members.items():
            if key in self.expanded:
                continue
            gid = group_ids[key]
            group_vars = vars_by_group.get(key, [])
            counts = Counter(verdicts[v] for v in group_vars)
            outer: str | None = None
            if key.startswith("fn:"):
                info = fn_clusters.get(key[3:], {})
                kind = str(info.get("kind", "function"))
                label = str(info.get("label", key[3:]))
                what = _KIND_WORDS.get(kind, kind)
                outer = fn_cluster(info["parent"]) if info.get("parent") is not None else None
            else:
                label = key[6:].rsplit("/", 1)[-1]
                what = "name scope " + key[6:]
            box = outer
            tally = ", ".join(f"{counts[v]} {v.value}" for v in Verdict if counts[v])
            sub = f"{len(members)} ops" + (f"\nvariables: {tally}" if tally else "")
            if group_vars:
                # The layer's own name (its variables' path), not the traced scope ("dense_1").
                layer = _common_layer([str(g.nodes[v].get("name", "")) for v in group_vars])
                box = f"cluster_layer{gid}"
                clusters[box] = Cluster(box, layer, "layer", outer, f"layer {layer} ({what})" if layer else what)
                layer_box[key] = box
                if layer:
                    self.var_prefix.update(dict.fromkeys(group_vars, layer + "/"))
                else:
                    sub = f"{label}\n{sub}"
            else:
                sub = f"{label}\n{sub}"
            worst = _worst(counts)
            types = Counter(str(g.nodes[m].get("op_type", "")) for m in members)
            top = ", ".join(f"{t} x{n}" if n > 1 else t for t, n in sorted(types.items(), key=lambda kv: (-kv[1], kv[0]))[:6])
            classes = ("group",) + ((worst.value,) if worst else ()) + (("blame",) if any(m in self.blame_nodes for m in members) else ())
            name = f"group:{key}"
            nodes.append(Node(
                name=name, role="group", label=sub,
                tooltip=f"{what}\n{len(members)} ops: {top}" + (f"\nvariables: {tally}" if tally else ""), classes=classes, svg_id=f"group-{gid}",
                cluster=box, members=tuple(members), verdict=worst, counts=tuple((v, counts[v]) for v in Verdict if counts[v]),
            ))
            for m in members:
                self.drawn_as[m] = name
        # Ops drawn one by one.
        for op in ops:
            key = self.group_of[op]
            if key not in self.expanded:
                continue
            attrs = g.nodes[op]
            self.drawn_as[op] = op
            nodes.append(self._op_node(op, attrs, cluster_of_group(key)))
        # Variables: inside the box of the group that reads them first.
        for v in self.var_nodes:
            if v not in self.kept:
                continue
            home = self.homes.get(v) or []
            home_key = self.group_of.get(home[0]) if home else None
            box = layer_box.get(home_key) if home_key else None
            if box is None and home_key is not None:
                box = cluster_of_group(home_key)
            nodes.append(self._variable_node(v, verdicts[v], box))
            self.drawn_as[v] = v
        for h, v in self.handles.items():
            self.drawn_as[h] = v
        for i, loss in enumerate(self.loss_nodes):
            attrs = g.nodes[loss]
            self.drawn_as[loss] = loss
            nodes.append(Node(
                name=loss, role="loss", label=f"LOSS\n{attrs.get('name', loss)}",
                tooltip=f"loss {attrs.get('name', loss)}: {attrs.get('dtype', '')}{_shape(attrs.get('shape'))}\nthe gradient starts here",
                classes=("loss",), svg_id=svg_id(loss), cluster=None, members=(loss,),
            ))
        return nodes, list(clusters.values())

    def _op_node(self, op: str, attrs: Mapping[str, Any], cluster: str | None) -> Node:
        op_type = str(attrs.get("op_type", ""))
        name = str(attrs.get("name", op))
        outputs = ", ".join(attrs.get("outputs", ())) or "no outputs"
        source = self.sources(op) if self.sources is not None else None
        where = f"\n{source}" if source else ""
        classes: tuple[str, ...] = ("op",)
        if op in self.error_nodes:
            label = f"{op_type}\nNO GRADIENT DEFINED:\nTensorFlow raises here{where}"
            tooltip = (f"{name} ({op_type})\na gradient reaches this op and it has none: differentiating the loss "
                       f"raises LookupError\noutputs: {outputs}{where}")
            return Node(op, "barrier", label, tooltip, ("barrier", "error"), svg_id(op), cluster, (op,))
        if op in self.barrier_nodes:
            blocked = [r.name for r in self.results.values() if any(b.node == op for b in r.barriers)]
            barrier_src = next((b.source for r in self.results.values() for b in r.barriers if b.node == op and b.source), None)
            if barrier_src:
                code = str(getattr(barrier_src, "code", "") or "")
                code = code if len(code) <= 60 else code[:57] + "..."
                where = f"\n{barrier_src}" + (f"\n{code}" if code else "")
            label = f"{op_type}\nGRADIENT STOPS HERE{where}"
            tooltip = f"{name} ({op_type})\nblocks: {', '.join(blocked)}\noutputs: {outputs}{where}"
            return Node(op, "barrier", label, tooltip, ("barrier", "blame"), svg_id(op), cluster, (op,))
        if op in self.blame_nodes:
            classes += ("blame",)
        if op not in self.receiving:
            classes += ("nograd",)
        parts = name.split("/")
        if cluster is not None:
            parts = parts[-1:]  # the box around it names the scope
        if _KERAS_SUFFIX.sub("", parts[-1]).lower() == op_type.lower():
            parts = parts[-2:-1]  # "Relu" says nothing its type does not; its layer does
        label = op_type + ("\n" + "/".join(parts[-2:]) if parts else "")
        return Node(op, "op", label, f"{name} ({op_type})\noutputs: {outputs}{where}", classes, svg_id(op), cluster, (op,))

    def _variable_node(self, v: str, verdict: Verdict, box: str | None) -> Node:
        attrs = self.g.nodes[v]
        r = self.results.get(v)
        name = r.name if r is not None else str(attrs.get("name", v))
        dtype = r.dtype if r is not None else str(attrs.get("dtype", ""))
        shape = r.shape if r is not None else attrs.get("shape")
        trainable = r.trainable if r is not None else bool(attrs.get("trainable", True))
        lines = [f"{name}: {dtype}{_shape(shape)}", f"verdict: {verdict.value}" + ("" if trainable else " (non-trainable)")]
        for b in getattr(r, "barriers", ()):
            lines.append(f"blocked by {b}")
        check = self.checks.get(name)
        if check is not None:
            lines.append(f"real step: gradient {check.gradient}, {'changed' if check.changed else 'unchanged'}")
        tag = verdict.value.upper() + ("" if trainable else ", NON-TRAINABLE")
        classes = ("variable", verdict.value) + (() if trainable else ("nontrainable",)) + (("blame",) if v in self.blame_nodes else ())
        prefix = self.var_prefix.get(v, "")
        short = name[len(prefix):] if prefix and name.startswith(prefix) else name
        return Node(v, "variable", f"{short}\n{dtype}{_shape(shape)}\n{tag}", "\n".join(lines), classes, svg_id(v), box, (v,), verdict, trainable)

    # -- edges ---------------------------------------------------------------------------------

    def _edges(self) -> list[Edge]:
        g = self.g
        order = _order(g)
        folded: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for u, w in g.edges:
            du, dw = self.drawn_as.get(u), self.drawn_as.get(w)
            if du is None or dw is None or du == dw:
                continue
            folded.setdefault((du, dw), []).append((u, w))
        back_edges = _back_edges(list(folded), order, self.drawn_as)
        edges: list[Edge] = []
        for (du, dw), members in folded.items():
            roles = {e: self._role(*e) for e in members}
            role = min(roles.values(), key=EDGE_ROLES.index)
            blame = any(e in self.blame_edges for e in members)
            # Name the cut on a barrier edge, and on a single op-to-op cut; folded cuts stay quiet.
            named = role == "barrier" or (role == "cut" and members == [(du, dw)])
            kinds = sorted({BarrierKind(g.edges[e]["kind"]).label for e, r in roles.items() if r in ("barrier", "cut") and g.edges[e].get("kind")})
            shown = ", ".join(f"{g.edges[e].get('tensor', '')} ({g.edges[e].get('dtype', '')})" for e in members[:4])
            if len(members) > 4:
                shown += f", ... {len(members)} tensors"
            detail = "; ".join(sorted({str(g.edges[e]["detail"]) for e in members if g.edges[e].get("detail")}))
            tooltip = f"{_ROLE_WORDS[role]}\n{shown}" + (f"\n{detail}" if detail else "")
            label = ", ".join(kinds) if named else ""
            edges.append(Edge(du, dw, role, blame, label, tooltip, constraint=(du, dw) not in back_edges))
        return edges

    def _role(self, u: str, w: str) -> str:
        data = self.g.edges[u, w]
        if data["grad"]:
            return "flow" if w in self.receiving else "inert"
        if (u, w) in self.barrier_edges or (u, w) in self.error_edges:
            return "barrier"
        return "cut" if w in self.receiving else "inert"


_KIND_WORDS: Final = {
    "function": "nested tf.function",
    "cond": "tf.cond branch",
    "case": "tf.switch_case branch",
    "while": "tf.while_loop",
}
_ROLE_WORDS: Final = {
    "flow": "gradient flows back along this edge",
    "barrier": "GRADIENT STOPS HERE: this cut blocks a variable",
    "cut": "no gradient passes (nothing upstream needs one from here)",
    "inert": "no gradient from the loss reaches this edge",
}


def _worst(counts: Mapping[Verdict, int]) -> Verdict | None:
    for v in (Verdict.BLOCKED, Verdict.RECEIVES, Verdict.UNUSED):
        if counts.get(v):
            return v
    return None


def _common_layer(names: list[str]) -> str:
    """The layer path shared by all these variable names (``conv1_bn`` for ``conv1_bn/gamma``), or ""."""
    paths = {n.split(":")[0].rpartition("/")[0] for n in names}
    return paths.pop() if len(paths) == 1 else ""


def _match_layer(parts: list[str], layer: list[str]) -> int | None:
    """Where a variable's layer path ends in an op name (Keras adds ``_1`` to traced scopes)."""
    for start in range(len(parts) - len(layer)):
        if all(p == l or (_KERAS_SUFFIX.search(p) and _KERAS_SUFFIX.sub("", p) == l) for p, l in zip(parts[start:], layer)):
            return start + len(layer)
    return None


def _first_path(graph: nx.DiGraph, source: str, targets: set[str]) -> list[str]:
    """A shortest forward path from ``source`` to any of ``targets`` (breadth first, in graph order)."""
    parent: dict[str, str | None] = {source: None}
    frontier = [source]
    while frontier:
        nxt: list[str] = []
        for n in frontier:
            if n in targets:
                path = [n]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])  # type: ignore[arg-type]
                return path[::-1]
            for s in graph.succ[n]:
                if s not in parent:
                    parent[s] = n
                    nxt.append(s)
        frontier = nxt
    return [source]


def _back_edges(edges: list[tuple[str, str]], order: Mapping[str, int], drawn_as: Mapping[str, str]) -> set[tuple[str, str]]:
    """Edges that close a cycle between folded nodes, found by depth-first search in data-flow order.

    Without them the remaining edges form a DAG, which ``dot`` lays out quickly.
    """
    pos: dict[str, int] = {}
    for n, d in drawn_as.items():
        if n in order:
            pos[d] = min(pos.get(d, order[n]), order[n])
    succ: dict[str, list[str]] = {}
    for u, w in edges:
        succ.setdefault(u, []).append(w)
    for targets in succ.values():
        targets.sort(key=lambda n: (pos.get(n, -1), n))
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    back: set[tuple[str, str]] = set()
    for root in sorted(succ, key=lambda n: (pos.get(n, -1), n)):
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(succ.get(root, ())))]
        while stack:
            node, it = stack[-1]
            for w in it:
                seen = state.get(w)
                if seen == 1:
                    back.add((node, w))
                elif seen is None:
                    state[w] = 1
                    stack.append((w, iter(succ.get(w, ()))))
                    break
            else:
                state[node] = 2
                stack.pop()
    return back


def _order(graph: nx.DiGraph) -> dict[str, int]:
    """A topological position for every node (graph order when the graph has a cycle)."""
    index = {n: i for i, n in enumerate(graph)}
    try:
        ordered = list(nx.lexicographical_topological_sort(graph, key=index.__getitem__))
    except nx.NetworkXUnfeasible:
        ordered = list(graph)
    return {n: i for i, n in enumerate(ordered)}


def _shape(shape: Any) -> str:
    if shape is None:
        return "[?]"
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


# -- DOT text ----------------------------------------------------------------------------------


def quote(text: str) -> str:
    """A DOT double-quoted string (backslashes, quotes and newlines escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(pairs: Iterable[tuple[str, str]]) -> str:
    merged = dict(pairs)  # a later style (the blame color) overrides an earlier one in place
    return "[" + " ".join(f"{k}={quote(v)}" for k, v in merged.items()) + "]"


_CLUSTER_STYLE: Final = {
    "layer": (("style", "rounded"), ("color", "#c7c7c7"), ("penwidth", "1")),
    "scope": (("style", "rounded,dashed"), ("color", "#7f7f7f"), ("penwidth", "1")),
    "function": (("style", "rounded,filled"), ("color", "#4a6fa5"), ("fillcolor", "#eef3fa"), ("penwidth", "1.5")),
    "cond": (("style", "rounded,filled"), ("color", "#8e6bb3"), ("fillcolor", "#f3eefa"), ("penwidth", "1.5")),
    "case": (("style", "rounded,filled"), ("color", "#8e6bb3"), ("fillcolor", "#f3eefa"), ("penwidth", "1.5")),
    "while": (("style", "rounded,filled"), ("color", "#b38a1e"), ("fillcolor", "#fbf5e6"), ("penwidth", "1.5")),
}
_CLUSTER_WORDS: Final = {"layer": "layer", "scope": "scope", "cond": "tf.cond branch", "case": "tf.switch_case branch", "while": "tf.while_loop"}


def _node_style(node: Node) -> list[tuple[str, str]]:
    if node.role == "variable":
        line, fill = VERDICT_COLORS[node.verdict or Verdict.UNUSED]
        look = "filled,bold" + ("" if node.trainable else ",dashed")
        return [("shape", "cylinder"), ("style", look), ("color", line), ("fillcolor", fill), ("penwidth", "2")]
    if node.role == "loss":
        return [("shape", "doubleoctagon"), ("style", "filled,bold"), ("color", "#08306b"), ("fillcolor", "#2166ac"), ("fontcolor", "white")]
    if node.role == "barrier":
        return [("shape", "octagon"), ("style", "filled,bold"), ("color", "#67001f"), ("fillcolor", _BARRIER), ("fontcolor", "white"), ("penwidth", "3")]
    if node.role == "group":
        total = sum(n for _, n in node.counts)
        style: list[tuple[str, str]] = [("shape", "box")]
        if total:
            stripes = ":".join(f"{VERDICT_COLORS[v][1]};{n / total:.3f}" for v, n in node.counts)
            line = VERDICT_COLORS[node.verdict or Verdict.UNUSED][0]
            style += [("style", "rounded,striped,bold"), ("fillcolor", stripes), ("color", line)]
        else:
            style += [("style", "rounded,filled"), ("fillcolor", "#ffffff"), ("color", "#4d4d4d")]
        if "blame" in node.classes:
            style += [("penwidth", "3"), ("color", _BLAME)]
        return style
    style = [("shape", "box"), ("style", "rounded"), ("fontsize", "10"), ("height", "0.3")]
    if "nograd" in node.classes:
        style += [("color", "#9e9e9e"), ("fontcolor", "#6b6b6b")]
    if "blame" in node.classes:
        style += [("penwidth", "2.5"), ("color", _BLAME)]
    return style


def _edge_style(edge: Edge) -> list[tuple[str, str]]:
    if edge.role == "flow":
        style = [("color", _FLOW), ("penwidth", "1.6")]
    elif edge.role == "barrier":
        style = [("color", _BARRIER), ("style", "dashed"), ("penwidth", "3"), ("arrowhead", "tee")]
    elif edge.role == "cut":
        style = [("color", _CUT), ("style", "dashed"), ("arrowhead", "tee")]
    else:
        style = [("color", _INERT), ("style", "dashed")]
    if edge.blame:
        style = [(k, v) for k, v in style if k not in ("color", "penwidth")] + [("color", f"{_BLAME}:{_BARRIER}" if edge.role == "barrier" else _BLAME), ("penwidth", "3.5")]
    if edge.label:
        style += [("label", edge.label), ("fontcolor", _BARRIER), ("fontsize", "10")]
    if not edge.constraint:
        style.append(("constraint", "false"))
    return style


def _legend() -> str:
    def swatch(fill: str, line: str, text: str, dashed: bool = False) -> str:
        border = f' COLOR="{line}"'
        mark = " (dashed border)" if dashed else ""
        return f'<TR><TD BGCOLOR="{fill}"{border} WIDTH="18"></TD><TD ALIGN="LEFT">{text}{mark}</TD></TR>'

    rows = [
        '<TR><TD COLSPAN="2"><B>Legend</B></TD></TR>',
        swatch(VERDICT_COLORS[Verdict.RECEIVES][1], VERDICT_COLORS[Verdict.RECEIVES][0], "variable: receives a gradient"),
        swatch(VERDICT_COLORS[Verdict.BLOCKED][1], VERDICT_COLORS[Verdict.BLOCKED][0], "variable: BLOCKED (feeds the loss, gradient cut)"),
        swatch(VERDICT_COLORS[Verdict.UNUSED][1], VERDICT_COLORS[Verdict.UNUSED][0], "variable: unused (does not feed the loss)"),
        swatch("#ffffff", "#000000", "non-trainable variable", dashed=True),
        swatch("#2166ac", "#08306b", "the loss (where the gradient starts)"),
        swatch(_BARRIER, "#67001f", "barrier op: gradient stops here (file:line)"),
        swatch("#ffffff", "#4d4d4d", "box: a layer / name scope folded into one node; stripes = its variables' verdicts"),
        f'<TR><TD><FONT COLOR="{_FLOW}"><B>&#8212;&#8212;</B></FONT></TD><TD ALIGN="LEFT">gradient flows back along the edge</TD></TR>',
        f'<TR><TD><FONT COLOR="{_BARRIER}"><B>- -|</B></FONT></TD><TD ALIGN="LEFT">edge cut by a barrier</TD></TR>',
        f'<TR><TD><FONT COLOR="{_CUT}">- -|</FONT></TD><TD ALIGN="LEFT">cut, but blocks no variable</TD></TR>',
        f'<TR><TD><FONT COLOR="{_INERT}">- - -</FONT></TD><TD ALIGN="LEFT">no gradient from the loss reaches it</TD></TR>',
        f'<TR><TD><FONT COLOR="{_BLAME}"><B>&#8212;&#8212;</B></FONT></TD><TD ALIGN="LEFT">blame path: blocked variable -&gt; barrier -&gt; loss</TD></TR>',
    ]
    label = '<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="2" CELLPADDING="3" COLOR="#9e9e9e">' + "".join(rows) + "</TABLE>>"
    return f'  legend [shape=plaintext id="legend" class="legend" tooltip="legend" fontsize="9" label={label}];\n'


def format_dot(drawing: Drawing) -> str:
    """Write a :class:`Drawing` as DOT source."""
    out = [
        "digraph flowcheck {\n",
        f'  graph [rankdir="TB" fontname="{_FONT}" fontsize="12" nodesep="0.25" ranksep="0.35" newrank="true"'
        f' labelloc="t" label={quote(drawing.title)} tooltip={quote(drawing.title or "gradient flow")}];\n',
        f'  node [fontname="{_FONT}" fontsize="11" margin="0.08,0.04"];\n',
        f'  edge [fontname="{_FONT}" fontsize="10" arrowsize="0.7"];\n',
        _legend(),
    ]
    children: dict[str | None, list[Cluster]] = {}
    for c in drawing.clusters:
        children.setdefault(c.parent, []).append(c)
    inside: dict[str | None, list[Node]] = {}
    for n in drawing.nodes:
        inside.setdefault(n.cluster, []).append(n)

    def write(cluster: str | None, indent: str) -> None:
        for n in inside.get(cluster, ()):
            attrs = [("id", n.svg_id), ("class", " ".join(n.classes)), ("label", n.label), ("tooltip", n.tooltip)]
            out.append(f"{indent}{quote(n.name)} {_attrs(attrs + _node_style(n))};\n")
        for c in children.get(cluster, ()):
            word = _CLUSTER_WORDS.get(c.kind)
            if not c.label or word is None:
                label = c.label
            elif c.kind in ("layer", "scope"):
                label = f"{word}: {c.label}"
            else:
                label = f"{c.label} ({word})"
            out.append(f"{indent}subgraph {quote(c.name)} {{\n")
            out.append(f"{indent}  graph {_attrs([('label', label), ('tooltip', c.tooltip), ('class', 'cluster ' + c.kind), *_CLUSTER_STYLE[c.kind]])};\n")
            write(c.name, indent + "  ")
            out.append(f"{indent}}}\n")

    write(None, "  ")
    for e in drawing.edges:
        attrs = [("class", " ".join((e.role,) + (("blame",) if e.blame else ()))), ("tooltip", e.tooltip)]
        out.append(f"  {quote(e.tail)} -> {quote(e.head)} {_attrs(attrs + _edge_style(e))};\n")
    out.append("}\n")
    return "".join(out)
