"""The drawn nodes and boxes of a :class:`~flowcheck.render.budget.Plan`: folded groups, single ops,
variables and losses, each labelled with the user's names."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from flowcheck._model import Verdict
from flowcheck._phrases import shape_text
from flowcheck.render.budget import Plan, shows_variable
from flowcheck.render.context import Context
from flowcheck.render.groups import group_name
from flowcheck.render.model import Cluster, Node, slug, svg_id
from flowcheck.render.names import KERAS_SUFFIX, common_layer

__all__ = ["KIND_WORDS", "Nodes", "build_nodes"]

KIND_WORDS: Final = {
    "function": "nested tf.function",
    "cond": "tf.cond branch",
    "case": "tf.switch_case branch",
    "while": "tf.while_loop",
}


@dataclass
class Nodes:
    """What :func:`build_nodes` made: the nodes, the boxes, and which drawn node stands for each graph node."""

    nodes: list[Node] = field(default_factory=list)
    clusters: dict[str, Cluster] = field(default_factory=dict)
    drawn_as: dict[str, str] = field(default_factory=dict)
    var_prefix: dict[str, str] = field(default_factory=dict)


def build_nodes(ctx: Context, plan: Plan) -> Nodes:
    """Nodes and clusters in drawing order: folded groups, single ops, variables, losses."""
    out = Nodes()
    members: dict[str, list[str]] = {}
    for op in ctx.ops:
        members.setdefault(plan.group_of[op], []).append(op)
    ids = {k: i for i, k in enumerate(members)}
    boxes = _Boxes(ctx, plan, members, ids, out.clusters)
    homed: dict[str, list[str]] = {}
    for v, home in ctx.homes.items():
        key = plan.group_of.get(home[0]) if home else None
        if key is not None:
            homed.setdefault(key, []).append(v)
    layer_box: dict[str, str] = {}
    for key, ops in members.items():
        if key not in plan.expanded:
            layer_box.update(_group_node(ctx, plan, key, (ops, homed.get(key, [])), ids[key], boxes, out))
    for op in ctx.ops:
        key = plan.group_of[op]
        if key in plan.expanded:
            out.drawn_as[op] = op
            out.nodes.append(op_node(ctx, op, boxes.of_group(key)))
    for v in ctx.var_nodes:
        if v not in ctx.kept:
            continue
        home = ctx.homes.get(v) or ()
        key = plan.group_of.get(home[0]) if home else None
        if not shows_variable(ctx, plan, v):
            if key is not None:
                out.drawn_as[v] = f"group:{key}"
            continue
        box = layer_box.get(key) if key else None
        if box is None and key is not None:
            box = boxes.of_group(key)
        out.nodes.append(_variable_node(ctx, v, box, out.var_prefix.get(v, "")))
        out.drawn_as[v] = v
    for h, v in ctx.handles.items():
        if v in out.drawn_as:
            out.drawn_as[h] = out.drawn_as[v]
    for loss in ctx.loss_nodes:
        out.drawn_as[loss] = loss
        out.nodes.append(_loss_node(ctx, loss))
    return out


class _Boxes:
    """Creates the clusters ops are drawn in, on first use."""

    def __init__(self, ctx: Context, plan: Plan, members: Mapping[str, list[str]], ids: Mapping[str, int],
                 clusters: dict[str, Cluster]) -> None:
        self.ctx, self.plan, self.members, self.ids, self.clusters = ctx, plan, members, ids, clusters
        self.fn_clusters: Mapping[str, Any] = ctx.g.graph.get("clusters", {})

    def of_group(self, key: str) -> str | None:
        """The DOT cluster an op of group ``key`` is drawn in."""
        if key.startswith("rest:"):
            return self.of_group(key[5:]) if key[5:] in self.plan.expanded else None
        if key.startswith("fn:"):
            return self.of_function(key[3:])
        if key not in self.plan.expanded or len(self.members.get(key, ())) + len(self.members.get(f"rest:{key}", ())) < 2:
            return None
        name = f"cluster_g{self.ids[key]}"
        if name not in self.clusters:
            scope = key.partition(":")[2]
            label = group_name(self.ctx, key)
            self.clusters[name] = Cluster(name, label, "scope", None, f"name scope {scope}")
        return name

    def of_function(self, cid: str) -> str | None:
        info = self.fn_clusters.get(cid)
        if info is None:
            return None
        parent = info.get("parent")
        if f"fn:{cid}" not in self.plan.expanded:
            return self.of_function(parent) if parent is not None else None
        name = "cluster_" + slug(cid)
        if name not in self.clusters:
            outer = self.of_function(parent) if parent is not None else None
            kind = str(info.get("kind", "function"))
            label = str(info.get("label", cid))
            self.clusters[name] = Cluster(name, label, kind, outer, f"{KIND_WORDS.get(kind, kind)}: {label}")
        return name


def _describe(ctx: Context, plan: Plan, key: str, boxes: _Boxes) -> tuple[str, str, str | None, str]:
    """A folded group's label, what it is (for the tooltip), the box around it, and its namespace."""
    kind, _, rest = key.partition(":")
    if kind == "rest":
        return f"{len(boxes.members[key]):,} other ops", f"ops of {group_name(ctx, rest)} off the blame paths", \
            boxes.of_group(rest), group_name(ctx, rest)
    if kind == "fn":
        info = boxes.fn_clusters.get(rest, {})
        what = KIND_WORDS.get(str(info.get("kind", "function")), "function")
        outer = boxes.of_function(info["parent"]) if info.get("parent") is not None else None
        return group_name(ctx, key), what, outer, ""
    if key in plan.titles:
        title = plan.titles[key]
        first, last, n = title.first, title.last, title.layers
        if kind == "run":
            block = "layers" if title.count == n else f"blocks of {n // title.count} layers"
            return (f"{_leaf(first)} ... {_leaf(last)}\nx {title.count:,}", f"{title.count:,} repeated {block}: {first} ... {last}",
                    None, _common_path(first, last))
        if kind == "coarse":
            return f"{first}\n({n:,} layers)", f"scope {first}, {n:,} layers folded", None, first
        return f"{first} ...\n{last}\n({n:,} layers)", f"{n:,} consecutive layers {first} ... {last}", None, ""
    name = group_name(ctx, key)
    return _leaf(name), f"name scope {rest}", None, name


def _group_node(
    ctx: Context, plan: Plan, key: str, contents: tuple[list[str], list[str]], gid: int, boxes: _Boxes, out: Nodes,
) -> dict[str, str]:
    """Draw one folded group (its ops and the variables homed there; in a layer box with the drawn ones)."""
    g = ctx.g
    ops, homed = contents
    label, what, box, namespace = _describe(ctx, plan, key, boxes)
    counts = Counter(ctx.verdicts[v] for v in homed)
    shown = [v for v in homed if shows_variable(ctx, plan, v)]
    tally = ", ".join(f"{counts[v]:,} {v.value}" for v in Verdict if counts[v])
    sub = f"{len(ops):,} ops" + (f"\nvariables: {tally}" if tally else "")
    placed: dict[str, str] = {}
    layer = common_layer(str(g.nodes[v].get("name", "")) for v in shown) if shown else ""
    if shown:
        outer = box
        box = f"cluster_layer{gid}"
        boxes.clusters[box] = Cluster(box, layer, "layer", outer, f"layer {layer} ({what})" if layer else what)
        placed[key] = box
        if layer:
            out.var_prefix.update(dict.fromkeys(shown, layer + "/"))
    text = sub if layer and key not in plan.titles else f"{label}\n{sub}"
    types = Counter(str(g.nodes[m].get("op_type", "")) for m in ops)
    top = ", ".join(f"{t} x{n}" if n > 1 else t for t, n in sorted(types.items(), key=lambda kv: (-kv[1], kv[0]))[:6])
    worst = next((v for v in (Verdict.BLOCKED, Verdict.RECEIVES, Verdict.UNUSED) if counts[v]), None)
    classes = ("group",) + (("repeat",) if key.startswith(("run:", "seg:", "coarse:")) else ()) \
        + ((worst.value,) if worst else ()) + (("blame",) if any(m in ctx.blame_nodes for m in ops) else ())
    name = f"group:{key}"
    out.nodes.append(Node(
        name=name, role="group", label=text,
        tooltip=f"{what}\n{len(ops):,} ops: {top}" + (f"\nvariables: {tally}" if tally else ""), classes=classes,
        svg_id=f"group-{gid}", cluster=box, members=tuple(ops), verdict=worst,
        counts=tuple((v, counts[v]) for v in Verdict if counts[v]), namespace=namespace or layer,
    ))
    out.drawn_as.update(dict.fromkeys(ops, name))
    return placed


def _leaf(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _common_path(a: str, b: str) -> str:
    pa, pb = a.split("/")[:-1], b.split("/")[:-1]
    return "/".join(x for x, y in zip(pa, pb) if x == y)


def op_node(ctx: Context, op: str, cluster: str | None) -> Node:
    """One op drawn alone: a barrier, an op where the tape raises, or a plain op."""
    attrs = ctx.g.nodes[op]
    op_type = str(attrs.get("op_type", ""))
    name = str(attrs.get("name", op))
    outputs = ", ".join(attrs.get("outputs", ())) or "no outputs"
    source = ctx.sources(op) if ctx.sources is not None else None
    where = f"\n{source}" if source else ""
    namespace = ctx.names.keras(name.rpartition("/")[0]) if "/" in name else ""
    if op in ctx.error_nodes:
        label = f"{op_type}\nNO GRADIENT DEFINED:\nTensorFlow raises here{where}"
        tooltip = (f"{name} ({op_type})\na gradient reaches this op and it has none: differentiating the loss "
                   f"raises LookupError\noutputs: {outputs}{where}")
        return Node(op, "barrier", label, tooltip, ("barrier", "error"), svg_id(op), cluster, (op,), namespace=namespace)
    if op in ctx.barrier_nodes:
        return _barrier_node(ctx, op, op_type, name, outputs, where, cluster, namespace)
    classes: tuple[str, ...] = ("op",) + (("blame",) if op in ctx.blame_nodes else ()) \
        + (("nograd",) if op not in ctx.receiving else ())
    scope, _, leaf = name.rpartition("/")
    keras_scope = ctx.names.keras(scope) if scope else ""
    # The box around it names the scope; else the layer's own (Keras) name goes with the op's.
    parts = [leaf] if cluster is not None or not keras_scope else [keras_scope.rsplit("/", 1)[-1], leaf]
    if KERAS_SUFFIX.sub("", leaf).lower() == op_type.lower():
        parts = parts[:-1]  # "Relu" says nothing its type does not; its layer does
    label = op_type + ("\n" + "/".join(parts[-2:]) if parts else "")
    return Node(op, "op", label, f"{name} ({op_type})\noutputs: {outputs}{where}", classes, svg_id(op), cluster,
                (op,), namespace=namespace)


def _barrier_node(ctx: Context, op: str, op_type: str, name: str, outputs: str, where: str, cluster: str | None,
                  namespace: str) -> Node:
    results = list(ctx.results.values())
    blocked = [r.name for r in results if any(b.node == op for b in r.barriers)]
    barrier_src = next((b.source for r in results for b in r.barriers if b.node == op and b.source), None)
    if barrier_src:
        code = str(getattr(barrier_src, "code", "") or "")
        code = code if len(code) <= 60 else code[:57] + "..."
        where = f"\n{barrier_src}" + (f"\n{code}" if code else "")
    label = f"{op_type}\nGRADIENT STOPS HERE{where}"
    tooltip = f"{name} ({op_type})\nblocks: {', '.join(blocked)}\noutputs: {outputs}{where}"
    return Node(op, "barrier", label, tooltip, ("barrier", "blame"), svg_id(op), cluster, (op,), namespace=namespace)


def _variable_node(ctx: Context, v: str, box: str | None, prefix: str) -> Node:
    attrs = ctx.g.nodes[v]
    r = ctx.results.get(v)
    verdict = ctx.verdicts[v]
    name = r.name if r is not None else str(attrs.get("name", v))
    dtype = r.dtype if r is not None else str(attrs.get("dtype", ""))
    shape = r.shape if r is not None else attrs.get("shape")
    trainable = r.trainable if r is not None else bool(attrs.get("trainable", True))
    lines = [f"{name}: {dtype}{shape_text(shape)}", f"verdict: {verdict.value}" + ("" if trainable else " (non-trainable)")]
    lines.extend(f"blocked by {b}" for b in getattr(r, "barriers", ()))
    check = ctx.checks.get(name)
    if check is not None:
        lines.append(f"real step: gradient {check.gradient}, {'changed' if check.changed else 'unchanged'}")
    tag = verdict.value.upper() + ("" if trainable else ", NON-TRAINABLE")
    classes = ("variable", verdict.value) + (() if trainable else ("nontrainable",)) + (("blame",) if v in ctx.blame_nodes else ())
    short = name[len(prefix):] if prefix and name.startswith(prefix) else name
    return Node(v, "variable", f"{short}\n{dtype}{shape_text(shape)}\n{tag}", "\n".join(lines), classes, svg_id(v), box,
                (v,), verdict, trainable, namespace=name.split(":")[0].rpartition("/")[0])


def _loss_node(ctx: Context, loss: str) -> Node:
    attrs = ctx.g.nodes[loss]
    return Node(
        name=loss, role="loss", label=f"LOSS\n{attrs.get('name', loss)}",
        tooltip=f"loss {attrs.get('name', loss)}: {attrs.get('dtype', '')}{shape_text(attrs.get('shape'))}\nthe gradient starts here",
        classes=("loss",), svg_id=svg_id(loss), cluster=None, members=(loss,),
    )
