"""The analysis stage on literal graphs: no TensorFlow needed."""

from __future__ import annotations

import copy

import networkx as nx
import pytest

from flowcheck._model import BarrierKind, Verdict
from flowcheck.analysis.verdicts import (
    analyze_graph,
    blocking_barriers,
    feeding_nodes,
    gradient_errors,
    gradient_nodes,
    reach,
    verdicts,
)


def graph(edges: list[tuple[str, str, bool]]) -> nx.DiGraph:
    g = nx.DiGraph()
    for u, w, carries in edges:
        g.add_edge(u, w, grad=carries, kind=None if carries else BarrierKind.STOP_GRADIENT)
    return g


SEED = graph([
    ("w1", "matmul1", True), ("x", "matmul1", True), ("matmul1", "stop", False),
    ("stop", "matmul2", True), ("w2", "matmul2", True), ("matmul2", "loss", True),
])


def test_gradient_nodes_follow_only_carrying_edges() -> None:
    assert gradient_nodes(SEED, ["loss"]) == {"loss", "matmul2", "stop", "w2"}


def test_feeding_nodes_follow_every_edge() -> None:
    assert feeding_nodes(SEED, ["loss"]) == {"loss", "matmul2", "stop", "w2", "matmul1", "w1", "x"}


@pytest.mark.parametrize("seed", range(20))
def test_reach_in_one_walk_is_both_walks(seed: int) -> None:
    # reach walks the gradient once and what lies behind its stops; the two sets it returns are the
    # two separate walks', on random graphs (cycles, several targets, unreached nodes included).
    import random

    rng = random.Random(seed)
    nodes = [f"n{i}" for i in range(rng.randint(2, 30))]
    g = graph([(rng.choice(nodes), rng.choice(nodes), rng.random() < 0.7) for _ in range(rng.randint(1, 60))])
    targets = rng.sample(nodes, rng.randint(1, 3)) + ["not a node"]
    assert reach(g, targets) == (feeding_nodes(g, targets), gradient_nodes(g, targets))


def test_verdicts_of_seed_and_an_unused_variable() -> None:
    g = SEED.copy()
    g.add_node("w3")
    assert verdicts(g, ["w1", "w2", "w3"], ["loss"]) == {
        "w1": Verdict.BLOCKED, "w2": Verdict.RECEIVES, "w3": Verdict.UNUSED,
    }


def test_barrier_of_seed_is_the_stop_gradient_edge() -> None:
    assert blocking_barriers(SEED, ["w1", "w2"], ["loss"]) == {"w1": (("matmul1", "stop"),)}


def test_one_open_path_is_enough_to_receive() -> None:
    g = graph([("v", "a", True), ("v", "b", True), ("a", "loss", False), ("b", "loss", True)])
    assert verdicts(g, ["v"], ["loss"]) == {"v": Verdict.RECEIVES}
    assert blocking_barriers(g, ["v"], ["loss"]) == {}


def test_every_path_cut_reports_the_first_barrier_on_each_path() -> None:
    # v -> cast(int) -> add -> cast(float) -> loss, and v -> stop -> loss.
    g = graph([
        ("v", "to_int", False), ("to_int", "add", False), ("add", "to_float", False),
        ("to_float", "loss", True), ("v", "stop", False), ("stop", "loss", True),
    ])
    assert blocking_barriers(g, ["v"], ["loss"]) == {"v": (("v", "stop"), ("v", "to_int"))}


def test_barriers_beyond_a_carrying_stretch_and_off_path_edges_are_ignored() -> None:
    g = graph([
        ("v", "a", True), ("a", "b", False), ("b", "loss", True),
        ("a", "metric", False),  # does not feed the loss
    ])
    assert blocking_barriers(g, ["v"], ["loss"]) == {"v": (("a", "b"),)}


def test_shared_barrier_serves_many_variables() -> None:
    edges = [(f"v{i}", f"h{i}", True) for i in range(5)]
    edges += [(f"h{i}", f"h{i + 1}", True) for i in range(4)]
    edges += [("h4", "stop", False), ("stop", "loss", True)]
    g = graph(edges)
    result = blocking_barriers(g, [f"v{i}" for i in range(5)], ["loss"])
    assert set(result.values()) == {(("h4", "stop"),)}
    assert len(result) == 5


def test_several_targets_union() -> None:
    g = graph([("v", "a", True), ("a", "loss_a", True), ("u", "b", True), ("b", "loss_b", True)])
    assert verdicts(g, ["v", "u"], ["loss_a"]) == {"v": Verdict.RECEIVES, "u": Verdict.UNUSED}
    assert verdicts(g, ["v", "u"], ["loss_a", "loss_b"]) == {"v": Verdict.RECEIVES, "u": Verdict.RECEIVES}


def test_analysis_does_not_change_the_graph() -> None:
    g = SEED.copy()
    g.graph.update(variables=["w1", "w2"], losses=["loss"], clusters={}, inputs=[])
    before = copy.deepcopy((list(g.nodes(data=True)), list(g.edges(data=True)), g.graph))  # the attribute dicts too
    verdicts(g, ["w1", "w2"], ["loss"])
    blocking_barriers(g, ["w1", "w2"], ["loss"])
    gradient_errors(g, ["loss"])
    analyze_graph(g).cuts_for("loss")
    assert (list(g.nodes(data=True)), list(g.edges(data=True)), g.graph) == before


@pytest.mark.parametrize("length", [10, 2000])
def test_long_chain_is_linear_and_exact(length: int) -> None:
    edges = [(f"v{i}", f"n{i}", True) for i in range(length)]
    edges += [(f"n{i}", f"n{i + 1}", True) for i in range(length - 1)]
    edges += [(f"n{length - 1}", "stop", False), ("stop", "loss", True), ("w", "stop", True)]
    g = graph(edges)
    names = [f"v{i}" for i in range(length)]
    result = blocking_barriers(g, names, ["loss"])
    assert len(result) == length
    assert all(edges == ((f"n{length - 1}", "stop"),) for edges in result.values())


def test_the_smaller_true_cut_wins_over_a_library_barrier_that_rejoins_the_path() -> None:
    # A BatchNormalization-like layer: its tf.nn.moments holds a StopGradient whose path rejoins
    # the main path before the user's stop_gradient. Only the user's barrier needs naming.
    g = graph([
        ("v", "conv", True), ("conv", "moments_stop", False), ("moments_stop", "normalize", True),
        ("conv", "normalize", True), ("normalize", "user_stop", False), ("user_stop", "loss", True),
    ])
    assert blocking_barriers(g, ["v"], ["loss"]) == {"v": (("normalize", "user_stop"),)}


def test_on_a_tie_the_cut_nearest_the_variable_is_named() -> None:
    # float -> Cast(int) -> Cast(float): the cast to an integer is the culprit, not the cast back.
    g = graph([("v", "to_int", False), ("to_int", "to_float", False), ("to_float", "loss", True)])
    assert blocking_barriers(g, ["v"], ["loss"]) == {"v": (("v", "to_int"),)}


def _no_gradient_graph() -> nx.DiGraph:
    """x (an input) and c (a constant) feed ops with no gradient; a body's input is fed by c."""
    g = nx.DiGraph(inputs=["x"], clusters={"call/f": {"gate": "call", "inputs": ["call/f:arg", "call/f:arg2"]}})
    for u, w, kind in [
        ("x", "bincount", BarrierKind.NO_GRADIENT), ("bincount", "loss", None),
        ("c", "mod", BarrierKind.NO_GRADIENT), ("mod", "loss", None),
        ("x", "call/f:arg2", None), ("c", "call/f:arg", None),
        ("call/f:arg", "call/f:mod", BarrierKind.NO_GRADIENT), ("call/f:mod", "call", None), ("call", "loss", None),
        ("x", "int", BarrierKind.DTYPE), ("int", "mod2", BarrierKind.NO_GRADIENT), ("mod2", "loss", None),
        ("x", "cut", BarrierKind.NO_GRADIENT), ("cut", "stop", None), ("stop", "loss", BarrierKind.STOP_GRADIENT),
    ]:
        g.add_edge(u, w, grad=kind is None, kind=kind)
    return g


def test_gradient_errors_at_an_op_whose_input_the_gradient_reaches_another_way_too() -> None:
    # x feeds the loss directly and through bincount, which has no gradient: the gradient reaches
    # x before bincount's edge from it is looked at, and TensorFlow still raises at bincount.
    g = nx.DiGraph(inputs=["x"], clusters={}, variables=[], losses=["loss"])
    for u, w, kind in [("x", "loss", None), ("x", "bincount", BarrierKind.NO_GRADIENT), ("bincount", "loss", None)]:
        g.add_edge(u, w, grad=kind is None, kind=kind)
    assert gradient_errors(g, ["loss"]) == (("x", "bincount"),)
    assert analyze_graph(g).errors == (("x", "bincount"),)


def test_gradient_errors_where_a_reached_op_without_gradient_gets_one() -> None:
    # bincount: reached from the input x. mod: fed by a constant only. The body's mod: its input
    # is a constant, but the call is reached through its other argument, so the body is
    # differentiated with respect to all its inputs. mod2: reached only through an integer.
    # cut: no gradient reaches it (stop_gradient after it).
    assert gradient_errors(_no_gradient_graph(), ["loss"]) == (("call/f:arg", "call/f:mod"), ("x", "bincount"))
