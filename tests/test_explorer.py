"""Model Explorer's graph JSON and node-data overlay, from literal graphs (no Model Explorer, no TensorFlow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_render import keras_like, results, seed, with_cond

from flowcheck.render.context import build_context
from flowcheck.render.explorer import VALUES, explorer_graphs, me_id, node_data, node_data_path


def export(g: Any) -> tuple[dict[str, Any], dict[str, Any], Any]:
    res = results(g)
    ctx = build_context(g, res, "ops", None, None, None)
    graphs = explorer_graphs(ctx, res, (), "loss_fn")
    return graphs, node_data(ctx, graphs), res


def nodes_of(graph: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in graph["nodes"]}


def test_every_op_variable_and_loss_is_a_node_and_handles_are_their_variables() -> None:
    g = seed()
    graphs, _, _ = export(g)
    assert graphs["label"] == "loss_fn"  # a graph collection: what Model Explorer's JSON loader reads from a file
    (main,) = graphs["graphs"]
    nodes = nodes_of(main)
    ops = {n for n, a in g.nodes(data=True) if a["kind"] == "op" and not n.endswith("/resource")}
    assert set(nodes) == {me_id(n) for n in ops} | {"variable:0", "variable:1", "loss:loss"}
    read = nodes["op:MatMul/ReadVariableOp"]
    assert [e["sourceNodeId"] for e in read["incomingEdges"]] == ["variable:0"]
    # Model Explorer would hide ReadVariableOp, cutting the variables off: nothing but Const and NoOp is hidden.
    assert main["nodeLabelsToHide"] == ["Const", "NoOp"]
    # Op ids never equal a namespace (TensorFlow's "MatMul" op and its "MatMul/..." inputs).
    namespaces = {n["namespace"] for n in main["nodes"]}
    assert not namespaces & set(nodes)


def test_the_blame_path_is_an_edge_overlay_and_verdicts_are_node_data() -> None:
    graphs, data, res = export(seed())
    (main,) = graphs["graphs"]
    (overlay,) = main["tasksData"]["edgeOverlaysDataListLeftPane"][0]["overlays"]
    path = {(e["sourceNodeId"], e["targetNodeId"]) for e in overlay["edges"]}
    assert ("op:MatMul", "op:StopGradient") in path and ("op:Identity", "loss:loss") in path
    assert not any("variable:1" in edge for edge in path)  # w2 receives: not on any blame path
    values = {k: v["value"] for k, v in data["loss_fn"]["results"].items()}
    assert values == {"variable:0": VALUES[res[0].verdict], "variable:1": VALUES[res[1].verdict], "op:StopGradient": 3}
    barrier = nodes_of(main)["op:StopGradient"]
    assert {"key": "flowcheck", "value": "GRADIENT STOPS HERE: blocks w1"} in barrier["attrs"]


def test_namespaces_are_keras_layer_paths() -> None:
    graphs, _, _ = export(keras_like())
    nodes = nodes_of(graphs["graphs"][0])
    assert nodes["op:sequential_1/d1_1/MatMul"]["namespace"] == "sequential/d1"
    assert nodes["variable:0"]["namespace"] == "sequential/d1" and nodes["variable:0"]["label"] == "kernel"
    assert nodes["op:head/Cast"]["namespace"] == "head"


def test_nested_function_bodies_are_subgraphs_of_their_op() -> None:
    g = with_cond()
    for body in ("cond/then", "cond/else"):
        g.graph["clusters"][body]["gate"] = "cond"  # as flowcheck.graph.build records the op holding a body
    graphs, data, _ = export(g)
    by_id = {graph["id"]: graph for graph in graphs["graphs"]}
    assert set(by_id) == {"loss_fn", "cond/then", "cond/else"}
    gate = nodes_of(by_id["loss_fn"])["op:cond"]
    assert gate["subgraphIds"] == ["cond/then", "cond/else"]
    # Inputs of a body reach the op holding it in the outer graph; the barrier lives in its branch.
    assert {e["sourceNodeId"] for e in gate["incomingEdges"]} == {"op:p", "variable:0", "variable:1"}
    assert "op:cond/then:StopGradient" in nodes_of(by_id["cond/then"])
    assert data["cond/then"]["results"]["op:cond/then:StopGradient"]["value"] == 3


def test_the_node_data_file_goes_beside_the_graph() -> None:
    assert node_data_path("out/flow.me.json") == Path("out/flow.nodedata.json")


def test_a_ctrl_c_as_soon_as_the_address_shows_stops_the_wait_even_with_sigint_inherited_ignored() -> None:
    """The wait puts Python's SIGINT handler back before the address is said, not after."""
    import os
    import signal
    import threading

    from flowcheck.render.server import Explorer

    forever = threading.Event()
    serving = threading.Thread(target=forever.wait, daemon=True)
    serving.start()
    inherited = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under `nohup` or `cmd &` in a script
    try:
        Explorer("http://127.0.0.1:1/", serving).wait(lambda: os.kill(os.getpid(), signal.SIGINT))
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # the inherited handler is back
    finally:
        signal.signal(signal.SIGINT, inherited)
        forever.set()
