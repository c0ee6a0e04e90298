"""Stage 2: the graph's nodes, edges and attributes are what ``flowcheck/graph/build.py`` documents."""

from __future__ import annotations

from typing import Any

import networkx as nx
import tensorflow as tf

import flowcheck
from flowcheck._model import BarrierKind
from truth import watched_truth


def _seed_graph() -> tuple[nx.DiGraph, list[tf.Variable], Any]:
    w1, w2 = tf.Variable(tf.ones((2, 3)), name="w1"), tf.Variable(tf.ones((3, 1)), name="w2")
    gate = tf.Variable(0.5, name="gate")
    x = tf.ones((4, 2))

    @tf.function
    def loss_fn(x: Any) -> Any:
        hidden = tf.stop_gradient(x @ w1)
        out = tf.cond(gate > 0.0, lambda: hidden @ w2, lambda: hidden @ w2 * 2.0)
        return tf.reduce_sum(out)

    return flowcheck.analyze(loss_fn, x).graph, [w1, w2, gate], lambda: loss_fn(x)


def test_every_node_and_edge_has_the_documented_attributes() -> None:
    graph, _, _ = _seed_graph()
    kinds = {"op": {"name", "op_type", "cluster", "outputs", "op"}, "variable": {"name", "dtype", "shape", "trainable", "index"},
             "loss": {"name", "dtype", "shape"}}
    for node, attrs in graph.nodes(data=True):
        assert attrs["kind"] in kinds and "label" in attrs, node
        assert kinds[attrs["kind"]] <= attrs.keys(), node
    for u, w, attrs in graph.edges(data=True):
        assert {"grad", "kind", "detail", "tensor", "dtype"} <= attrs.keys(), (u, w)
        assert (attrs["kind"] is None) == attrs["grad"], (u, w)
        assert attrs["kind"] is None or isinstance(attrs["kind"], BarrierKind)
    assert graph.graph["variables"] == [f"variable:{i}" for i in range(3)]
    assert sorted(graph.nodes[v]["name"] for v in graph.graph["variables"]) == ["gate", "w1", "w2"]
    assert [graph.nodes[v]["index"] for v in graph.graph["variables"]] == [0, 1, 2]
    assert all(graph.nodes[loss]["kind"] == "loss" for loss in graph.graph["losses"])
    assert nx.is_directed_acyclic_graph(graph)


def test_a_cond_is_a_cluster_whose_gate_holds_both_branches() -> None:
    graph, _, _ = _seed_graph()
    branches = [c for c in graph.graph["clusters"].values() if c["kind"] == "cond"]
    assert len(branches) == 2 and len({c["gate"] for c in branches}) == 1
    gate = branches[0]["gate"]
    assert graph.nodes[gate]["op_type"] in {"If", "StatelessIf"}
    for cluster in branches:
        assert all(p in graph for p in cluster["inputs"])


def test_the_stop_gradient_edge_is_the_only_cut_between_w1_and_the_loss() -> None:
    graph, variables, call = _seed_graph()
    stops = [(u, w) for u, w, kind in graph.edges(data="kind") if kind is BarrierKind.STOP_GRADIENT]
    assert len(stops) == 1 and graph.nodes[stops[0][1]]["op_type"] == "StopGradient"
    carrying = nx.subgraph_view(graph, filter_edge=lambda u, w: graph.edges[u, w]["grad"])
    reached = {v for v in graph.graph["variables"] if any(nx.has_path(carrying, v, loss) for loss in graph.graph["losses"])}
    truth = dict(zip((v.name.split(":")[0] for v in variables), watched_truth(call, variables)))
    assert {graph.nodes[v]["name"]: v in reached for v in graph.graph["variables"]} == truth


def test_an_op_nodes_outputs_describe_its_tensors_when_read() -> None:
    graph, _, _ = _seed_graph()

    def described(t: Any) -> str:
        dims = "?" if t.shape.rank is None else ",".join("?" if d is None else str(d) for d in t.shape.as_list())
        return f"{t.dtype.name}[{dims}]"

    ops = [attrs for _, attrs in graph.nodes(data=True) if attrs["kind"] == "op"]
    assert any(attrs["op"].outputs for attrs in ops)
    for attrs in ops:
        expected = tuple(described(t) for t in attrs["op"].outputs)
        outputs = attrs["outputs"]
        assert outputs == expected and tuple(outputs) == expected and len(outputs) == len(expected)
        assert list(outputs[:1]) == list(expected[:1]) and hash(outputs) == hash(expected)


def test_two_inputs_from_one_op_make_one_edge_that_carries_if_either_does() -> None:
    v = tf.Variable([3.0, 1.0, 2.0], name="v")

    @tf.function
    def loss_fn() -> Any:
        top = tf.math.top_k(v, k=3)  # one op: float values (carry), int32 indices (cut)
        return tf.reduce_sum(tf.gather(top.values, top.indices)) + tf.reduce_sum(v * v)

    report = flowcheck.analyze(loss_fn)
    graph = report.graph
    gathers = [n for n, t in graph.nodes(data="op_type") if t == "GatherV2"]
    squares = [n for n, t in graph.nodes(data="op_type") if t == "Mul"]
    (gather,) = gathers
    (top_k,) = [u for u in graph.predecessors(gather) if graph.nodes[u]["op_type"] == "TopKV2"]
    assert graph.edges[top_k, gather]["grad"] is True
    assert all(graph.edges[u, w]["grad"] for w in squares for u in graph.predecessors(w))
    assert [r.receives for r in report.variables] == watched_truth(loss_fn, [v])


def test_an_op_nodes_outputs_are_those_it_had_when_analyzed() -> None:
    v = tf.Variable(2.0, name="v")

    @tf.function
    def loss_fn() -> Any:
        return tf.cond(v > 1.0, lambda: v * v, lambda: v * 3.0)

    report = flowcheck.analyze(loss_fn)
    (gate,) = [attrs for _, attrs in report.graph.nodes(data=True) if attrs.get("op_type") in {"If", "StatelessIf"}]
    before = len(gate["op"].outputs)
    report.verify()  # differentiates the function: cond_v2 appends the branches' intermediates to the If op
    assert len(gate["outputs"]) == before
