"""The collapsed view at scale, on literal graphs: folded repeats, the node budget, Keras names,
the first view on the finding. Needs neither TensorFlow nor Graphviz."""

from __future__ import annotations

from typing import Any

import networkx as nx
from test_render import SEED_SOURCE, G, results, seed

from flowcheck import BarrierKind
from flowcheck.render import format_dot, layout
from flowcheck.render.model import BUDGET
from flowcheck.render.svg import node_boxes, open_on


def dense_chain(n: int, cut_at: int | None = None, model: str = "chain", types: Any = None) -> nx.DiGraph:
    """``n`` Keras Dense layers ``model/dense{i}`` (ops traced as ``model_1/dense{i}_1/...``), then a loss;
    a StopGradient after layer ``cut_at`` when given. ``types`` picks each layer's activation op."""
    b = G()
    b.op("x", "Placeholder")
    prev = "x"
    for i in range(n):
        scope = f"{model}_1/dense{i}_1"
        act = types(i) if types else "Tanh"
        for j, part in enumerate(("kernel", "bias")):
            handle = f"{scope}/{part}/ReadVariableOp/resource"
            b.op(handle, "Placeholder", out="resource[]").op(f"{scope}/{part}/ReadVariableOp", "ReadVariableOp")
            v = b.var(2 * i + j, f"{model}/dense{i}/{part}")
            b.edge(v, handle, dtype="resource").edge(handle, f"{scope}/{part}/ReadVariableOp", dtype="resource")
        b.op(f"{scope}/MatMul", "MatMul").op(f"{scope}/BiasAdd", "BiasAdd").op(f"{scope}/{act}", act)
        b.edge(prev, f"{scope}/MatMul").edge(f"{scope}/kernel/ReadVariableOp", f"{scope}/MatMul")
        b.edge(f"{scope}/MatMul", f"{scope}/BiasAdd").edge(f"{scope}/bias/ReadVariableOp", f"{scope}/BiasAdd")
        b.edge(f"{scope}/BiasAdd", f"{scope}/{act}")
        prev = f"{scope}/{act}"
        if cut_at == i:
            b.op("cut/StopGradient", "StopGradient").edge(prev, "cut/StopGradient", BarrierKind.STOP_GRADIENT)
            prev = "cut/StopGradient"
    b.op("Sum", "Sum").edge(prev, "Sum").edge("Sum", b.loss())
    return b.g


def test_repeated_layers_fold_into_one_node_with_first_and_last_names() -> None:
    g = dense_chain(12)
    d = layout(g, results(g))
    runs = [n for n in d.nodes if "repeat" in n.classes]
    assert len(runs) == 1 and runs[0].label.startswith("dense0 ... dense11\nx 12")
    assert dict(runs[0].counts) == {r.verdict: 24 for r in results(g)[:1]}
    assert len(d.nodes) == 4  # x, the run, Sum, the loss
    assert not any(n.role == "variable" for n in d.nodes)


def test_a_layer_holding_a_blocked_variable_is_never_folded() -> None:
    g = dense_chain(12, cut_at=6)
    res = results(g)
    assert {r.name for r in res if r.verdict.value == "blocked"} == {f"chain/dense{i}/{p}" for i in range(7) for p in ("kernel", "bias")}
    d = layout(g, res)
    names = {n.name for n in d.nodes}
    assert "cut/StopGradient" in names and {"variable:0", "variable:13"} <= names
    runs = [n for n in d.nodes if "repeat" in n.classes]
    assert [n.label.split("\n")[:2] for n in runs] == [["dense7 ... dense11", "x 5"]]
    assert d.focus[0] == "op-cut_StopGradient" and "var-0" in d.focus and "loss-loss" in d.focus


def test_the_collapsed_view_keeps_within_the_budget() -> None:
    kinds = ("Tanh", "Relu", "Sigmoid", "Elu", "Selu", "Softplus", "Softsign")
    g = dense_chain(400, types=lambda i: kinds[(i * i + i // 7) % len(kinds)])
    d = layout(g, results(g))
    assert len(d.nodes) <= BUDGET
    assert any("layers)" in n.label for n in d.nodes)  # segments or coarsened scopes name their span
    assert nx.is_directed_acyclic_graph(nx.DiGraph([(e.tail, e.head) for e in d.edges if e.constraint]))
    assert len(layout(g, results(g), detail="ops").nodes) > 2000  # the ops view is never cut down


def test_scope_labels_are_the_users_keras_paths() -> None:
    g = dense_chain(3, cut_at=1, model="functional")
    d = layout(g, results(g))
    labels = {c.label for c in d.clusters}
    assert "functional/dense1" in labels and not any("_1" in label for label in labels)


def test_integer_edges_are_not_drawn_as_cuts() -> None:
    from test_render import keras_like

    g = keras_like()
    edges = {(e.tail, e.head): e for e in layout(g, results(g)).edges}
    assert edges["head/Cast", "head/Cast_1"].role == "integer"
    assert edges["sequential_1/d2_1/BiasAdd", "head/Cast"].role == "barrier"
    text = format_dot(layout(g, results(g)))
    assert 'class="integer blame"' in text and 'style="dotted"' in text


def test_the_legend_has_no_blank_swatch() -> None:
    g = seed()
    text = format_dot(layout(g, results(g, SEED_SOURCE)))
    legend = next(line for line in text.splitlines() if line.strip().startswith("legend"))
    swatches = legend.count('<TD BORDER="1"')
    assert swatches >= 10 and legend.count("BGCOLOR=") == swatches
    for words in ("non-trainable", "folded layer", "x N", "integer or boolean", "nested tf.function"):
        assert words in legend


SVG = """<svg width="2000pt" height="3000pt"
 viewBox="0.00 0.00 2000.00 3000.00" xmlns="http://www.w3.org/2000/svg">
<g id="graph0" class="graph" transform="scale(1 1) rotate(0) translate(4 2996)">
<!-- a -->
<g id="op&#45;cut" class="node barrier blame">
<title>cut</title>
<polygon points="100,-200 300,-200 300,-150 100,-150 100,-200"/>
<text x="200" y="-170">StopGradient</text>
</g>
<!-- b -->
<g id="loss&#45;loss" class="node loss">
<polygon points="150,-100 250,-100 250,-50 150,-50 150,-100"/>
</g>
<!-- c -->
<g id="var&#45;0" class="node variable blocked">
<ellipse cx="1800" cy="-2900" rx="30" ry="20"/>
</g>
</g>
</svg>
"""


def test_the_first_view_is_on_the_barrier_and_the_whole_graph_is_one_view_away() -> None:
    opened = open_on(SVG, ["op-cut", "loss-loss"])
    assert 'data-full-viewbox="0.00 0.00 2000.00 3000.00"' in opened and '<view id="whole"' in opened
    first = [float(v) for v in opened.split('viewBox="', 1)[1].split('"', 1)[0].split()]
    (x0, y0, x1, y1), = node_boxes(opened, ["op-cut"]).values()
    assert first[0] <= x0 and x1 <= first[0] + first[2] and first[1] <= y0 and y1 <= first[1] + first[3]
    assert first[2] < 2000 and first[3] < 3000
    # A finding spread over more than a screen: the view is on the barrier (listed first).
    spread = open_on(SVG, ["op-cut", "var-0"])
    view = [float(v) for v in spread.split('viewBox="', 1)[1].split('"', 1)[0].split()]
    assert view[0] <= 104 + 200 <= view[0] + view[2] and view[1] <= 2996 - 175 <= view[1] + view[3]
    small = SVG.replace('width="2000pt" height="3000pt"', 'width="200pt" height="300pt"').replace("2000.00 3000.00", "200.00 300.00")
    assert 'viewBox="0.00 0.00 200.00 300.00"' in open_on(small, ["op-cut"])


def test_repeated_blocks_of_layers_fold_too() -> None:
    # Blocks of two layers (Tanh, then Relu), four of them: one node for the four blocks.
    g = dense_chain(8, types=lambda i: ("Tanh", "Relu")[i % 2])
    d = layout(g, results(g))
    (run,) = [n for n in d.nodes if "repeat" in n.classes]
    assert run.label.startswith("dense0 ... dense7\nx 4") and "4 repeated blocks of 2 layers" in run.tooltip
