"""The diagram: DOT built from literal graphs (snapshots, layout rules), SVG via dot, Report.save.

Most tests build small graphs with the schema of ``flowcheck.graph.build`` by hand and need neither
TensorFlow nor Graphviz. Set ``FLOWCHECK_UPDATE_SNAPSHOTS=1`` to rewrite the golden DOT files.
"""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from types import MappingProxyType
from typing import Any

import networkx as nx
import pytest

import flowcheck
from flowcheck import Barrier, BarrierKind, SourceLine, Verdict, VariableResult
from flowcheck.analysis.verdicts import blocking_barriers, verdicts
from flowcheck.render import layout, svg_id, to_dot

SNAPSHOTS = Path(__file__).parent / "snapshots"
SVG_NS = "{http://www.w3.org/2000/svg}"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot is not installed")


# -- literal graphs ----------------------------------------------------------------------------


class G:
    """A small graph in ``flowcheck.graph.build``'s schema, built edge by edge."""

    def __init__(self) -> None:
        self.g = nx.DiGraph(clusters={}, variables=[], losses=[])

    def op(self, name: str, op_type: str, cluster: str | None = None, out: str = "float32[2]") -> G:
        self.g.add_node(name, kind="op", label=op_type, name=name.rsplit(":", 1)[-1], op_type=op_type,
                        cluster=cluster, outputs=(out,) if out else ())
        return self

    def var(self, index: int, name: str, trainable: bool = True, shape: tuple[int, ...] = (2,)) -> str:
        node = f"variable:{index}"
        self.g.add_node(node, kind="variable", label=name, name=name, dtype="float32", shape=shape,
                        trainable=trainable, index=index)
        self.g.graph["variables"].append(node)
        return node

    def loss(self, name: str = "loss") -> str:
        node = f"loss:{name}"
        self.g.add_node(node, kind="loss", label=name, name=name, dtype="float32", shape=())
        self.g.graph["losses"].append(node)
        return node

    def edge(self, u: str, w: str, kind: BarrierKind | None = None, dtype: str = "float32") -> G:
        self.g.add_edge(u, w, grad=kind is None, kind=kind, detail=kind.label if kind else "",
                        tensor=f"{u.rsplit(':', 1)[-1]}:0", dtype=dtype)
        return self

    def cluster(self, cid: str, label: str, kind: str, parent: str | None = None) -> G:
        self.g.graph["clusters"][cid] = {"label": label, "parent": parent, "kind": kind}
        return self


def results(g: nx.DiGraph, sources: dict[str, SourceLine] | None = None) -> list[VariableResult]:
    """What the report would hold for ``g``, computed by the analysis stage."""
    var_nodes, loss_nodes = g.graph["variables"], g.graph["losses"]
    total = verdicts(g, var_nodes, loss_nodes)
    cuts = blocking_barriers(g, var_nodes, loss_nodes, verdict=total)
    out = []
    for v in var_nodes:
        barriers = tuple(
            Barrier(op_name=g.nodes[w]["name"], op_type=g.nodes[w]["op_type"], kind=g.edges[u, w]["kind"],
                    detail=g.edges[u, w]["detail"], tensor=g.edges[u, w]["tensor"],
                    source=(sources or {}).get(w), in_user_code=True, node=w)
            for u, w in cuts.get(v, ())
        )
        a = g.nodes[v]
        out.append(VariableResult(
            name=a["name"], verdict=total[v], barriers=barriers, shape=a["shape"], dtype=a["dtype"],
            trainable=a["trainable"], per_loss=MappingProxyType({}), variable=None, node=v,
        ))
    return out


def seed() -> nx.DiGraph:
    """The seed example's graph: ``loss = stop_gradient(x @ w1) @ w2 - y``."""
    b = G()
    for name, t in [("x", "Placeholder"), ("y", "Placeholder"), ("MatMul/ReadVariableOp/resource", "Placeholder"),
                    ("MatMul/ReadVariableOp", "ReadVariableOp"), ("MatMul", "MatMul"), ("StopGradient", "StopGradient"),
                    ("MatMul_1/ReadVariableOp/resource", "Placeholder"), ("MatMul_1/ReadVariableOp", "ReadVariableOp"),
                    ("MatMul_1", "MatMul"), ("sub", "Sub"), ("Identity", "Identity"), ("NoOp", "NoOp")]:
        b.op(name, t)
    w1, w2, loss = b.var(0, "w1"), b.var(1, "w2"), b.loss()
    b.edge("x", "MatMul").edge("y", "sub").edge("MatMul/ReadVariableOp/resource", "MatMul/ReadVariableOp", dtype="resource")
    b.edge("MatMul/ReadVariableOp", "MatMul").edge("MatMul", "StopGradient", BarrierKind.STOP_GRADIENT)
    b.edge("StopGradient", "MatMul_1").edge("MatMul_1/ReadVariableOp/resource", "MatMul_1/ReadVariableOp", dtype="resource")
    b.edge("MatMul_1/ReadVariableOp", "MatMul_1").edge("MatMul_1", "sub").edge("sub", "Identity").edge("Identity", loss)
    b.edge(w1, "MatMul/ReadVariableOp/resource", dtype="resource").edge(w2, "MatMul_1/ReadVariableOp/resource", dtype="resource")
    return b.g


SEED_SOURCE = {"StopGradient": SourceLine("seed.py", 26, "loss_fn", "hidden = tf.stop_gradient(tf.matmul(x, w1))")}


def keras_like() -> nx.DiGraph:
    """A Keras model ``sequential`` with layers d1 (frozen bias), relu, d2, whose d2 output is cast to int."""
    b = G()
    b.op("x", "Placeholder")
    vars_ = {}
    for layer, i in (("d1", 0), ("d2", 2)):
        scope = f"sequential_1/{layer}_1"
        for j, part in enumerate(("kernel", "bias")):
            handle = f"{scope}/{part}/ReadVariableOp/resource"
            b.op(handle, "Placeholder", out="resource[]").op(f"{scope}/{part}/ReadVariableOp", "ReadVariableOp")
            v = vars_[f"{layer}/{part}"] = b.var(i + j, f"sequential/{layer}/{part}", trainable=not (layer == "d1" and part == "bias"))
            b.edge(v, handle, dtype="resource").edge(handle, f"{scope}/{part}/ReadVariableOp", dtype="resource")
        b.op(f"{scope}/MatMul", "MatMul").op(f"{scope}/BiasAdd", "BiasAdd")
        b.edge(f"{scope}/kernel/ReadVariableOp", f"{scope}/MatMul").edge(f"{scope}/MatMul", f"{scope}/BiasAdd")
        b.edge(f"{scope}/bias/ReadVariableOp", f"{scope}/BiasAdd")
    b.op("sequential_1/relu_1/Relu", "Relu")
    b.edge("x", "sequential_1/d1_1/MatMul").edge("sequential_1/d1_1/BiasAdd", "sequential_1/relu_1/Relu")
    b.edge("sequential_1/relu_1/Relu", "sequential_1/d2_1/MatMul")
    b.op("head/Cast", "Cast", out="int32[2]").op("head/Cast_1", "Cast").op("head/Sum", "Sum")
    b.edge("sequential_1/d2_1/BiasAdd", "head/Cast", BarrierKind.DTYPE).edge("head/Cast", "head/Cast_1", BarrierKind.DTYPE, dtype="int32")
    b.edge("head/Cast_1", "head/Sum").edge("sequential_1/relu_1/Relu", "head/Sum")
    b.edge("head/Sum", b.loss())
    b.var(4, "sequential/spare/w")  # owned by the model, never read
    return b.g


def with_cond() -> nx.DiGraph:
    """``loss = cond(p, lambda: stop_gradient(a), lambda: b)``: a barrier inside a cond branch."""
    b = G()
    b.cluster("cond/then", "cond: then", "cond").cluster("cond/else", "cond: else", "cond")
    b.op("p", "Placeholder", out="bool[]").op("a/resource", "Placeholder", out="resource[]").op("b/resource", "Placeholder", out="resource[]")
    b.op("cond", "If")
    for tag, inner in (("then", ["input_a", "ReadVariableOp", "StopGradient", "Identity"]), ("else", ["input_b", "ReadVariableOp", "Identity"])):
        for name in inner:
            b.op(f"cond/{tag}:{name}", "Placeholder" if name.startswith("input") else name, cluster=f"cond/{tag}")
    a, bb, loss = b.var(0, "a"), b.var(1, "b"), b.loss()
    b.edge(a, "a/resource", dtype="resource").edge(bb, "b/resource", dtype="resource")
    b.edge("p", "cond", BarrierKind.PREDICATE, dtype="bool")
    b.edge("a/resource", "cond/then:input_a", dtype="resource").edge("cond/then:input_a", "cond/then:ReadVariableOp", dtype="resource")
    b.edge("cond/then:ReadVariableOp", "cond/then:StopGradient", BarrierKind.STOP_GRADIENT)
    b.edge("cond/then:StopGradient", "cond/then:Identity").edge("cond/then:Identity", "cond")
    b.edge("b/resource", "cond/else:input_b", dtype="resource").edge("cond/else:input_b", "cond/else:ReadVariableOp", dtype="resource")
    b.edge("cond/else:ReadVariableOp", "cond/else:Identity").edge("cond/else:Identity", "cond").edge("cond", loss)
    return b.g


def draw(g: nx.DiGraph, **kw: Any) -> str:
    return to_dot(g, results(g, SEED_SOURCE), title="test", **kw)


# -- snapshots ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "make", "kw"),
    [
        ("seed_collapsed", seed, {}),
        ("seed_ops", seed, {"detail": "ops"}),
        ("seed_focus_w2", seed, {"focus": ["variable:1"]}),
        ("keras_collapsed", keras_like, {}),
        ("cond_collapsed", with_cond, {}),
    ],
)
def test_dot_matches_snapshot(name: str, make: Any, kw: dict[str, Any]) -> None:
    text = draw(make(), **kw)
    golden = SNAPSHOTS / f"{name}.dot"
    if os.environ.get("FLOWCHECK_UPDATE_SNAPSHOTS") == "1" or not golden.exists():
        if os.environ.get("FLOWCHECK_UPDATE_SNAPSHOTS") != "1":
            pytest.fail(f"no snapshot {golden}; run with FLOWCHECK_UPDATE_SNAPSHOTS=1 to write it")
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


def test_same_graph_gives_the_same_bytes() -> None:
    assert draw(keras_like()) == draw(keras_like())
    assert draw(seed(), detail="ops") == draw(seed(), detail="ops")


# -- what is drawn -----------------------------------------------------------------------------


def test_seed_barrier_blame_path_and_edge_roles() -> None:
    g = seed()
    d = layout(g, results(g, SEED_SOURCE))
    nodes = {n.name: n for n in d.nodes}
    edges = {(e.tail, e.head): e for e in d.edges}
    barrier = nodes["StopGradient"]
    assert barrier.role == "barrier" and "seed.py:26" in barrier.label and "tf.stop_gradient(" in barrier.label
    assert edges["MatMul", "StopGradient"].role == "barrier"
    # The blame path runs from w1 through the barrier to the loss, and w2's edge is plain flow.
    blame = [(e.tail, e.head) for e in d.edges if e.blame]
    path = nx.DiGraph(blame)
    assert nx.has_path(path, "variable:0", "loss:loss") and "StopGradient" in path
    assert not edges["variable:1", "group:scope:MatMul_1"].blame
    assert edges["variable:1", "group:scope:MatMul_1"].role == "flow"
    assert edges["x", "MatMul"].role == "inert"  # the gradient never gets past StopGradient
    assert nodes["variable:0"].classes[:2] == ("variable", "blocked")
    assert nodes["loss:loss"].role == "loss"
    assert "NoOp" not in nodes and "NoOp" in {n.name for n in layout(g, results(g), detail="ops").nodes}


def test_handles_are_drawn_as_their_variable() -> None:
    g = seed()
    names = {n.name for n in layout(g, results(g), detail="ops").nodes}
    assert "MatMul/ReadVariableOp/resource" not in names
    edges = {(e.tail, e.head) for e in layout(g, results(g), detail="ops").edges}
    assert ("variable:0", "MatMul/ReadVariableOp") in edges


def test_keras_layers_fold_and_keep_their_variables() -> None:
    g = keras_like()
    res = results(g)
    d = layout(g, res)
    nodes = {n.name: n for n in d.nodes}
    clusters = {c.name: c for c in d.clusters}
    groups = {n.name for n in d.nodes if n.role == "group"}
    # Blocked variables (the cast cuts d2's output off) keep op detail; d1 folds into one node.
    assert {r.name: r.verdict for r in res}["sequential/d1/kernel"] is Verdict.RECEIVES
    assert "group:scope:sequential_1/d1_1" in groups
    assert "sequential_1/d2_1/MatMul" in nodes and "group:scope:sequential_1/d2_1" not in groups
    assert "head/Cast" in nodes and nodes["head/Cast"].role == "barrier"
    # Each variable sits in its own layer's box, labelled with the layer's name (not "d1_1").
    d1_box = nodes["group:scope:sequential_1/d1_1"].cluster
    assert d1_box is not None and clusters[d1_box].label == "sequential/d1"
    assert nodes["variable:0"].cluster == d1_box and nodes["variable:1"].cluster == d1_box
    assert nodes["variable:0"].label.startswith("kernel\n")
    assert "nontrainable" in nodes["variable:1"].classes and "NON-TRAINABLE" in nodes["variable:1"].label
    assert nodes["variable:2"].cluster != d1_box
    # The never-read variable is drawn, unused, and no node gathers every variable.
    assert nodes["variable:4"].verdict is Verdict.UNUSED
    layers_feeding: dict[str, set[str]] = {}
    for e in d.edges:
        if nodes[e.tail].role == "variable":
            layers_feeding.setdefault(e.head, set()).add(g.nodes[e.tail]["name"].rpartition("/")[0])
    assert layers_feeding and all(len(layers) == 1 for layers in layers_feeding.values())
    # The folded group is striped by its variables' verdicts.
    assert dict(nodes["group:scope:sequential_1/d1_1"].counts) == {Verdict.RECEIVES: 2}


def test_ops_detail_draws_every_op_in_scope_boxes() -> None:
    g = keras_like()
    d = layout(g, results(g), detail="ops")
    drawn = {n.name for n in d.nodes if n.role in ("op", "barrier")}
    handles = {n for n in g if n.endswith("/resource")}
    assert drawn == {n for n, a in g.nodes(data=True) if a["kind"] == "op"} - handles
    assert not any(n.role == "group" for n in d.nodes)


def test_focus_keeps_only_the_paths_to_the_loss() -> None:
    g = keras_like()
    d = layout(g, results(g), focus=["variable:2"], detail="ops")
    names = {n.name for n in d.nodes}
    assert names == {
        "variable:2", "sequential_1/d2_1/kernel/ReadVariableOp", "sequential_1/d2_1/MatMul",
        "sequential_1/d2_1/BiasAdd", "head/Cast", "head/Cast_1", "head/Sum", "loss:loss",
    }
    with pytest.raises(flowcheck.RenderError, match="not variables: x"):
        layout(g, results(g), focus=["x"])


def test_cond_branches_are_labelled_clusters_with_the_barrier_inside() -> None:
    g = with_cond()
    d = layout(g, results(g))
    clusters = {c.name: c for c in d.clusters}
    nodes = {n.name: n for n in d.nodes}
    then = nodes["cond/then:StopGradient"]
    assert then.role == "barrier" and then.cluster is not None
    assert clusters[then.cluster].kind == "cond" and clusters[then.cluster].label == "cond: then"
    # The else branch holds nothing blocked: it is folded into one node.
    assert nodes["group:fn:cond/else"].role == "group"
    assert nodes["variable:0"].cluster == then.cluster


def test_cycles_between_groups_are_not_layout_constraints() -> None:
    b = G()
    b.op("x", "Placeholder").op("a/one", "Relu").op("b/two", "Relu").op("a/three", "Relu")
    b.edge("x", "a/one").edge("a/one", "b/two").edge("b/two", "a/three")
    w = b.var(0, "w")
    b.op("a/w", "Placeholder", out="resource[]").op("a/read", "ReadVariableOp")
    b.edge(w, "a/w", dtype="resource").edge("a/w", "a/read", dtype="resource").edge("a/read", "a/three")
    b.edge("a/three", b.loss())
    d = layout(b.g, results(b.g))
    folded = [(e.tail, e.head) for e in d.edges]
    assert ("group:scope:a", "b/two") in folded and ("b/two", "group:scope:a") in folded
    constrained = nx.DiGraph([(e.tail, e.head) for e in d.edges if e.constraint])
    assert nx.is_directed_acyclic_graph(constrained)
    assert sum(not e.constraint for e in d.edges) == 1


def test_unknown_detail_lists_the_accepted_ones() -> None:
    g = seed()
    with pytest.raises(flowcheck.RenderError, match="'collapsed', 'ops'"):
        to_dot(g, results(g), detail="layers")


def test_quotes_and_backslashes_in_names_are_escaped() -> None:
    b = G()
    b.op('odd"name\\x', "Placeholder")
    v = b.var(0, 'w"\\')
    b.op("read", "ReadVariableOp").edge(v, "read").edge('odd"name\\x', "read").edge("read", b.loss())
    text = to_dot(b.g, results(b.g))
    assert '"odd\\"name\\\\x"' in text and 'label="w\\"\\\\\\n' in text


# -- SVG through dot ---------------------------------------------------------------------------


def _svg_nodes(svg: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg.encode("utf-8"))
    return {g.get("id", ""): g for g in root.iter(f"{SVG_NS}g") if "node" in (g.get("class") or "").split()}


@pytest.mark.dot
@needs_dot
@pytest.mark.parametrize("make", [seed, keras_like, with_cond])
def test_svg_is_xml_with_ids_classes_and_tooltips(make: Any) -> None:
    from flowcheck.render.graphviz import render_svg

    g = make()
    res = results(g, SEED_SOURCE)
    svg = render_svg(to_dot(g, res, title="t"))
    nodes = _svg_nodes(svg)
    for r in res:
        node = nodes[svg_id(r.node)]
        assert (node.get("class") or "").split()[:3] == ["node", "variable", r.verdict.value]
        title = node.find(f"{SVG_NS}title")
        assert title is not None and title.text is not None and f"verdict: {r.verdict.value}" in title.text
    assert "legend" in nodes and any("loss" in (n.get("class") or "").split() for n in nodes.values())
    barriers = [n for n in nodes.values() if "barrier" in (n.get("class") or "").split()]
    assert len(barriers) == len({b.node for r in res for b in r.barriers})


# -- through the public Report -----------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_report() -> flowcheck.Report:
    import tensorflow as tf

    w1 = tf.Variable(tf.ones((2, 3)), name="w1")
    w2 = tf.Variable(tf.ones((3, 1)), name="w2")

    @tf.function
    def loss_fn(x: tf.Tensor) -> tf.Tensor:
        return tf.matmul(tf.stop_gradient(tf.matmul(x, w1)), w2)

    report = flowcheck.analyze(loss_fn, tf.ones((1, 2)))
    with tf.GradientTape() as tape:
        loss = loss_fn(tf.ones((1, 2)))
    g1, g2 = tape.gradient(loss, [w1, w2])
    assert (g1 is None, g2 is None) == (True, False)  # the truth the drawing must show
    return report


def test_report_dot_needs_no_graphviz(seed_report: flowcheck.Report, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    path = seed_report.save(tmp_path / "out" / "seed.dot")
    text = path.read_text(encoding="utf-8")
    assert path.suffix == ".dot" and text == seed_report.to_dot()
    assert 'class="variable blocked' in text and 'class="variable receives' in text
    assert "tf.stop_gradient(tf.matmul(x, w1))" in text  # the user's line, on the barrier
    with pytest.raises(flowcheck.ExecutableNotFoundError, match="apt-get install graphviz"):
        seed_report.save(tmp_path / "seed.svg")
    with pytest.raises(flowcheck.ExecutableNotFoundError):
        seed_report.svg()


def test_tooltips_carry_the_real_step(seed_report: flowcheck.Report) -> None:
    check = seed_report.verify()
    by_name = {c.name: c for c in check.variables}
    text = seed_report.to_dot()
    for r in seed_report.variables:
        state = by_name[r.name]
        assert f"real step: gradient {state.gradient}, {'changed' if state.changed else 'unchanged'}" in text


def test_report_rejects_unknown_suffix(seed_report: flowcheck.Report, tmp_path: Path) -> None:
    with pytest.raises(flowcheck.RenderError, match=r"'\.png'.*\.svg, \.html, \.dot"):
        seed_report.save(tmp_path / "seed.png")
    assert not (tmp_path / "seed.png").exists()


def test_report_focus_by_name(seed_report: flowcheck.Report) -> None:
    text = seed_report.to_dot(focus=["w2"])
    assert 'id="var-1"' in text and 'id="var-0"' not in text
    with pytest.raises(flowcheck.VariableNotFoundError):
        seed_report.to_dot(focus=["nope"])


@pytest.mark.dot
@needs_dot
def test_report_svg_html_and_jupyter_reprs(seed_report: flowcheck.Report, tmp_path: Path) -> None:
    svg_path = seed_report.save(tmp_path / "seed.svg")
    nodes = _svg_nodes(svg_path.read_text(encoding="utf-8"))
    assert "blocked" in (nodes["var-0"].get("class") or "") and "receives" in (nodes["var-1"].get("class") or "")
    assert seed_report._repr_svg_() == svg_path.read_text(encoding="utf-8")
    page = seed_report.save(tmp_path / "seed.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and 'data-node="var-0"' in page and "<svg" in page
    # Self-contained: nothing is fetched (the only URLs are XML namespace names).
    for needle in ("<link", " src=", "@import", "url(http"):
        assert needle not in page
    fragment = seed_report._repr_html_()
    assert fragment.startswith('<div class="flowcheck-report"') and "<html" not in fragment


def test_real_control_flow_draws_nested_clusters_around_the_barrier() -> None:
    import tensorflow as tf

    a = tf.Variable(2.0, name="a")
    b = tf.Variable(3.0, name="b")

    @tf.function
    def inner(x: tf.Tensor) -> tf.Tensor:
        return tf.stop_gradient(x * a) + x * b

    @tf.function
    def loss_fn(x: tf.Tensor, p: tf.Tensor) -> tf.Tensor:
        y = tf.cond(p, lambda: inner(x), lambda: x * b)
        _, out = tf.while_loop(lambda i, acc: i < 2, lambda i, acc: (i + 1, acc * 1.5), [tf.constant(0), y])
        return out

    args = (tf.constant(1.0), tf.constant(True))
    with tf.GradientTape() as tape:
        loss = loss_fn(*args)
    ga, gb = tape.gradient(loss, [a, b])
    report = flowcheck.analyze(loss_fn, *args)
    assert (report.receives_gradient(a), report.receives_gradient(b)) == (ga is not None, gb is not None) == (False, True)

    from flowcheck.render import op_sources

    d = layout(report.graph, report.variables, sources=op_sources(report.graph))
    clusters = {c.name: c for c in d.clusters}
    (barrier,) = [n for n in d.nodes if n.role == "barrier"]
    chain = []
    box = barrier.cluster
    while box is not None:
        chain.append(clusters[box].kind)
        box = clusters[box].parent
    assert chain == ["function", "cond"]
    assert f"test_render.py:{inner.python_function.__code__.co_firstlineno + 2}" in barrier.label
    # The loop was cut nowhere that matters: its body is one folded node.
    assert any(n.role == "group" and "while: body" in n.label for n in d.nodes)
    assert all(n.tooltip for n in d.nodes)
    # Argument placeholders point at the line that traced the function: no source is shown for them.
    (x,) = [n for n in d.nodes if n.name == "x"]
    assert "test_render.py" not in x.tooltip


def test_an_op_where_the_tape_raises_is_drawn_as_one_with_its_line() -> None:
    import tensorflow as tf

    weights = tf.Variable([0.5, 1.0, 1.5], name="weights")

    @tf.function
    def loss_fn(x: tf.Tensor) -> tf.Tensor:
        counts = tf.math.bincount(tf.constant([0, 1, 1]), weights=weights, minlength=2)  # DenseBincount
        return tf.reduce_sum(counts) + tf.reduce_sum(weights * x)

    x = tf.ones(3)
    with pytest.raises(LookupError, match="No gradient defined"), tf.GradientTape() as tape:
        tape.gradient(loss_fn(x), weights)  # the truth: the tape raises
    report = flowcheck.analyze(loss_fn, x)
    assert [b.op_type for b in report.gradient_errors] == ["DenseBincount"]

    from flowcheck.render import op_sources

    d = layout(report.graph, report.variables, sources=op_sources(report.graph))
    (error,) = [n for n in d.nodes if "error" in n.classes]
    assert error.role == "barrier" and error.name == report.gradient_errors[0].node
    line = loss_fn.python_function.__code__.co_firstlineno + 2
    assert error.label.startswith("DenseBincount\nNO GRADIENT DEFINED:\nTensorFlow raises here\n")
    assert f"test_render.py:{line}" in error.label
    assert any(e.head == error.name and e.role == "barrier" and e.label == "no gradient defined" for e in d.edges)
    assert d.focus[0] == error.svg_id  # with nothing blocked, the views open on where the tape raises
