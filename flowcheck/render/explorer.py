"""Google Model Explorer's graph JSON and node-data overlay for a report (pure; no Model Explorer import).

Model Explorer (``pip install flowcheck[explore]``) lays out graphs of tens of thousands of nodes and
folds them by *namespace*. What flowcheck gives it:

* the graph: every op (a variable's resource handle is drawn as the variable), each variable and
  loss; namespaces are the Keras layer paths (``transformer_block/keep_gate``); each nested
  function body (``tf.cond`` branch, ``while`` body, called ``tf.function``) is a graph of its own,
  reached from the op holding it through ``subgraphIds``; node attributes carry the verdicts,
  barriers and lines;
* an edge overlay (in each graph's ``tasksData``): the blame paths, blocked variable -> barrier -> loss;
* a node-data overlay (its own file): each variable's verdict (0 receives, 1 unused, 2 blocked) and
  the barriers (3), colored as in the SVG.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from flowcheck._model import Verdict
from flowcheck.render.context import Context, build_context
from flowcheck.render.model import VERDICT_COLORS, VariableLike

__all__ = ["BARRIER_COLOR", "BLAME_COLOR", "VALUES", "explorer_graphs", "me_id", "node_data", "node_data_path", "to_explorer"]

BLAME_COLOR: Final = "#e66101"
BARRIER_COLOR: Final = "#b2182b"
VALUES: Final = {Verdict.RECEIVES: 0, Verdict.UNUSED: 1, Verdict.BLOCKED: 2}
"""Node-data values of the verdicts; a barrier (or an op where the tape raises) is 3."""
_MAIN: Final = "flowcheck"


def me_id(node: str) -> str:
    """The Model Explorer id of a graph node: an op's id gets ``op:`` (TensorFlow names an op
    ``MatMul`` and its inputs ``MatMul/...``, and Model Explorer's layer ``MatMul`` would take its id)."""
    return node if node.startswith(("variable:", "loss:")) else f"op:{node}"


def node_data_path(path: str | os.PathLike[str]) -> Path:
    """Where the node-data overlay of the graph JSON at ``path`` goes (``flow.me.json`` -> ``flow.nodedata.json``)."""
    p = Path(path)
    stem = p.name[: -len(".me.json")] if p.name.lower().endswith(".me.json") else p.stem
    return p.with_name(f"{stem}.nodedata.json")


def to_explorer(report: Any) -> tuple[str, str]:
    """The graph JSON and the node-data JSON of a :class:`flowcheck.Report`, as text."""
    ctx = build_context(report.graph, report.variables, "ops", None, report.verification, None, report.analysis)
    graphs = explorer_graphs(ctx, report.variables, report.gradient_errors, str(report.target))
    return json.dumps(graphs, indent=1), json.dumps(node_data(ctx, graphs), indent=1)


def _graph_of(ctx: Context) -> dict[str, str]:
    """Which Model Explorer graph each drawn node goes into: ``flowcheck`` or a cluster id."""
    placed: dict[str, str] = {}
    step = bool(ctx.g.graph.get("step"))  # a step's backward pass feeds none of its targets: left out
    for n in ctx.g:
        if n in ctx.handles or (step and n not in ctx.kept):
            continue
        cluster = ctx.g.nodes[n].get("cluster")
        placed[n] = _MAIN if cluster is None else str(cluster)
    return placed


def _chain(clusters: Mapping[str, Any], graph_id: str) -> list[str]:
    """``graph_id`` and its ancestors, innermost first, ending with the main graph."""
    out = [graph_id]
    while out[-1] != _MAIN:
        parent = clusters.get(out[-1], {}).get("parent")
        out.append(_MAIN if parent is None else str(parent))
    return out


def _lift(ctx: Context, node: str, where: str, into: str) -> str | None:
    """The node standing for ``node`` (in graph ``where``) inside graph ``into``: itself or a gate."""
    clusters = ctx.g.graph.get("clusters", {})
    chain = _chain(clusters, where)
    if into not in chain:
        return None
    if into == where:
        return node
    below = chain[chain.index(into) - 1]
    gate = clusters.get(below, {}).get("gate")
    return None if gate is None else str(gate)


def _edges(ctx: Context, placed: Mapping[str, str]) -> dict[str, list[tuple[str, str, tuple[str, str]]]]:
    """Per graph, its edges ``(source, target, graph edge)``; edges across bodies go to the gates."""
    clusters = ctx.g.graph.get("clusters", {})
    out: dict[str, list[tuple[str, str, tuple[str, str]]]] = {}
    seen: set[tuple[str, str, str]] = set()
    for u, w in ctx.g.edges:
        u2 = ctx.handles.get(u, u)
        if u2 == w or w in ctx.handles or u2 not in placed or w not in placed:
            continue
        gu, gw = placed[u2], placed[w]
        common = next(c for c in _chain(clusters, gu) if c in _chain(clusters, gw))
        a, b = _lift(ctx, u2, gu, common), _lift(ctx, w, gw, common)
        if a is None or b is None or a == b or (common, a, b) in seen:
            continue
        seen.add((common, a, b))
        out.setdefault(common, []).append((me_id(a), me_id(b), (u, w)))
    return out


def _attrs(pairs: Sequence[tuple[str, Any]]) -> list[dict[str, str]]:
    return [{"key": k, "value": str(v)} for k, v in pairs if v not in (None, "")]


def _node(ctx: Context, n: str, results: Mapping[str, VariableLike], barriers: Mapping[str, Any]) -> dict[str, Any]:
    attrs = ctx.g.nodes[n]
    kind = attrs.get("kind")
    if kind == "variable":
        r = results.get(n)
        name = r.name if r is not None else str(attrs.get("name", n))
        verdict = ctx.verdicts[n]
        line, fill = VERDICT_COLORS[verdict]
        return {
            "id": me_id(n), "label": name.split(":")[0].rsplit("/", 1)[-1], "namespace": name.split(":")[0].rpartition("/")[0],
            "attrs": _attrs([("variable", name), ("verdict", verdict.value), ("trainable", attrs.get("trainable")),
                             ("blocked by", "; ".join(str(b) for b in getattr(r, "barriers", ())))]),
            "style": {"backgroundColor": fill, "borderColor": line},
        }
    if kind == "loss":
        return {"id": me_id(n), "label": f"LOSS {attrs.get('name', n)}", "namespace": "",
                "style": {"backgroundColor": "#2166ac", "borderColor": "#08306b"}}
    name = str(attrs.get("name", n))
    barrier = barriers.get(n)
    node: dict[str, Any] = {
        "id": me_id(n), "label": name if attrs.get("op_type") == "Placeholder" else str(attrs.get("op_type", "")),
        "namespace": ctx.names.keras(name.rpartition("/")[0]) if "/" in name and attrs.get("cluster") is None else "",
        "attrs": _attrs([("name", name), ("outputs", ", ".join(attrs.get("outputs", ()))),
                         ("flowcheck", barrier[0] if barrier else None), ("line", barrier[1] if barrier else None)]),
    }
    if barrier:
        node["style"] = {"backgroundColor": "#fddbc7", "borderColor": BARRIER_COLOR}
    return node


def _barriers(ctx: Context, results: Sequence[VariableLike], errors: Sequence[Any]) -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for r in results:
        for b in r.barriers:
            text, line = found.get(b.node, ("GRADIENT STOPS HERE: blocks", ""))
            found[b.node] = (f"{text} {r.name}", line or (str(b.source) if b.source else ""))
    for b in errors:
        found[b.node] = ("NO GRADIENT DEFINED: TensorFlow raises here", str(b.source) if b.source else "")
    return found


def explorer_graphs(ctx: Context, results: Sequence[VariableLike], errors: Sequence[Any], title: str) -> dict[str, Any]:
    """The ``{"label": ..., "graphs": [...]}`` JSON object Model Explorer loads (see the module docstring)."""
    placed = _graph_of(ctx)
    edges = _edges(ctx, placed)
    by_node = {r.node: r for r in results if r.node}
    barriers = _barriers(ctx, results, errors)
    clusters = ctx.g.graph.get("clusters", {})
    nodes: dict[str, dict[str, dict[str, Any]]] = {}
    for n in ctx.g:
        if n in placed:
            nodes.setdefault(placed[n], {})[me_id(n)] = _node(ctx, n, by_node, barriers)
    for cid, info in clusters.items():
        gate = info.get("gate")
        home = placed.get(str(gate)) if gate is not None else None
        if home is not None:
            nodes[home][me_id(str(gate))].setdefault("subgraphIds", []).append(str(cid))
    for gid, items in edges.items():
        inputs: dict[str, int] = {}
        for a, b, _ in items:
            nodes[gid][b].setdefault("incomingEdges", []).append(
                {"sourceNodeId": a, "sourceNodeOutputId": "0", "targetNodeInputId": str(inputs.get(b, 0))})
            inputs[b] = inputs.get(b, 0) + 1
    out = []
    for gid in [_MAIN, *[c for c in clusters if c in nodes]]:
        blame = [{"sourceNodeId": a, "targetNodeId": b} for a, b, e in edges.get(gid, ()) if e in ctx.blame_edges]
        # Model Explorer hides ReadVariableOp by default, which would cut every variable off.
        graph: dict[str, Any] = {"id": title if gid == _MAIN else gid, "nodeLabelsToHide": ["Const", "NoOp"],
                                 "nodes": list(nodes.get(gid, {}).values())}
        if blame:
            graph["tasksData"] = {"edgeOverlaysDataListLeftPane": [{
                "name": "flowcheck", "type": "edge_overlays",
                "overlays": [{"name": "blame paths: blocked variable -> barrier -> loss", "edgeColor": BLAME_COLOR,
                              "edgeWidth": 3, "edges": blame}],
            }]}
        out.append(graph)
    # A graph collection: what Model Explorer's JSON loader reads from a file, and what its server
    # hands the page for an in-memory graph.
    return {"label": title, "graphs": out}


def node_data(ctx: Context, graphs: Mapping[str, Any]) -> dict[str, Any]:
    """The node-data overlay, per graph id: verdicts of variables, barriers (see :data:`VALUES`)."""
    data: dict[str, Any] = {}
    barrier_nodes = {me_id(n) for n in ctx.barrier_nodes | {w for _, w in ctx.error_edges}}
    verdicts = {me_id(v): verdict for v, verdict in ctx.verdicts.items()}
    for graph in graphs["graphs"]:
        results: dict[str, Any] = {}
        for node in graph["nodes"]:
            n = node["id"]
            if n in verdicts:
                results[n] = {"value": VALUES[verdicts[n]], "bgColor": VERDICT_COLORS[verdicts[n]][1]}
            elif n in barrier_nodes:
                results[n] = {"value": 3, "bgColor": BARRIER_COLOR}
        if results:
            data[graph["id"]] = {"name": "flowcheck verdicts", "results": results}
    return data

