"""A plain callable as the user calls it, eagerly: the eager tape's answers as verdicts, and why they differ.

:func:`flowcheck.trace.eager.run_eagerly` runs the callable once under a watching tape; here its
answers replace the traced graph's where they differ (only the branch taken runs eagerly; a
``float()`` leaves TensorFlow), each with the reason in words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import networkx as nx

from flowcheck._model import Barrier, BarrierKind, VariableResult, Verdict
from flowcheck.analysis.barriers import barrier, one_per_replica
from flowcheck.analysis.steps import loop_free_site_barriers
from flowcheck.analysis.verdicts import Analysis, gradient_errors, gradient_nodes, loop_free_cuts
from flowcheck.graph.build import variable_node
from flowcheck.source.op import op_source
from flowcheck.trace.distributed import replica_threads
from flowcheck.trace.eager import EagerRun, Exit
from flowcheck.trace.sites import GradientSite, RecordedCall

__all__ = ["as_called", "as_called_errors", "as_called_sites", "eager_difference", "eager_only", "untraced_advice"]


def as_called(results: Sequence[VariableResult], graph: nx.DiGraph, run: EagerRun) -> tuple[VariableResult, ...]:
    """The static results with the eager call's answers as verdicts, and why they differ.

    When differentiating the call raised (``run.error``), the tape answered nothing: the static
    results stand, as for a traced function whose gradient raises.
    """
    if run.error is not None:
        return tuple(results)
    cut = _eager_barriers(graph, [r.node for i, r in enumerate(results) if r.receives and not run.total[i]])
    judged = []
    for i, r in enumerate(results):
        per_loss = {n: _verdict(answers[i], r.per_loss.get(n, r.verdict)) for n, answers in run.per_loss.items()}
        verdict = _verdict(run.total[i], r.verdict)
        if verdict is r.verdict and all(r.per_loss.get(n) is v for n, v in per_loss.items()):
            judged.append(r)
            continue
        reason = (replica_threads(run.variables[i].tf_variable, run.total[i])
                  or eager_difference(graph, r.node, run.total[i], run.exits)) if verdict is not r.verdict else None
        judged.append(replace(
            r, verdict=verdict,
            barriers=() if verdict is Verdict.RECEIVES else r.barriers or cut.get(r.node) or _override_cut(graph, r.node, run.exits),
            per_loss=MappingProxyType(per_loss), eager_difference=reason,
        ))
    return tuple(judged)


def _eager_barriers(graph: nx.DiGraph, nodes: Sequence[str]) -> dict[str, tuple[Barrier, ...]]:
    """The barriers of variables the traced graph gives a gradient only because a ``While`` carries it."""
    cache: dict[tuple[str, str], Barrier] = {}
    return {
        node: one_per_replica(barrier(graph, e, cache) for e in cut)
        for node, cut in loop_free_cuts(graph, nodes, graph.graph["losses"]).items()
    }


def as_called_errors(analysis: Analysis, run: EagerRun) -> tuple[tuple[str, str], ...]:
    """The edges into ops without a gradient at which the eager call's tape raises: none unless it raised.

    Traced, TensorFlow differentiates a function with respect to all its inputs, arguments and
    captured constants included; a tape around the eager call watches its variables alone.
    """
    if run.error is None:
        return ()
    graph = analysis.graph
    return gradient_errors(graph, analysis.losses, sources=analysis.variables) or analysis.errors


def eager_only(run: EagerRun, failure: str) -> tuple[VariableResult, ...]:
    """Results from the eager call alone, for a callable that cannot be traced."""
    left = [e for e in run.exits if e.left_tensorflow] or list(run.exits)  # a Python `max()` alone is the cause too
    why = f"{'; '.join(dict.fromkeys(str(e) for e in left)) or failure}; no static analysis was possible"
    results = []
    for i, v in enumerate(run.variables):
        unread = Verdict.BLOCKED if i in run.read else Verdict.UNUSED
        results.append(VariableResult(
            name=v.name, verdict=Verdict.RECEIVES if run.total[i] else unread, barriers=(), shape=v.shape,
            dtype=v.dtype, trainable=v.trainable,
            per_loss=MappingProxyType({n: Verdict.RECEIVES if a[i] else unread for n, a in run.per_loss.items()}),
            variable=v.variable, node=f"variable:{i}", watched_by_default=v.watched_by_default,
            eager_difference=why if unread is Verdict.BLOCKED and not run.total[i] else None,
        ))
    return tuple(results)


def untraced_advice(exits: Sequence[Exit], failure: str) -> str:
    """What to change so that a callable that cannot be traced can be: said after why it cannot.

    NumPy's own functions (``np.mean(t)``) read an eager tensor's buffer in C, unseen: the
    trace's failure tells those.
    """
    if any(e.left_tensorflow for e in exits) or "to a numpy array" in failure:
        return "; wrap the NumPy part in tf.numpy_function or keep it in TensorFlow"
    if exits:  # tensors compared in Python: max(), sorted(), an `if` AutoGraph cannot convert
        return "; compare tensors in TensorFlow (tf.maximum, tf.minimum, tf.where, tf.cond, tf.sort) rather than in Python"
    return ""


def _verdict(receives: bool, static: Verdict) -> Verdict:
    if receives:
        return Verdict.RECEIVES
    return Verdict.UNUSED if static is Verdict.UNUSED else Verdict.BLOCKED


def eager_difference(graph: nx.DiGraph, node: str, eager_receives: bool, exits: Sequence[Exit]) -> str:
    """Why the eager call answers ``eager_receives`` for variable ``node`` when the traced graph does not."""
    if eager_receives:  # a replaced gradient the traced graph follows and the eager call does not
        found = list(dict.fromkeys(_overridden(graph, nx.descendants(graph, node))))
        return "; ".join(found) if found else "the eager call gives a gradient where the traced graph gives none"
    region = _region(graph, node)
    reasons = _control_flow(graph, node, region)
    left = [e for e in exits if e.what != "a Python condition"]
    if not reasons:  # no branch or loop explains it: a value that left TensorFlow on its path
        region_lines = _region_lines(graph, region)
        reasons = [str(e) for e in left if (e.source.file, e.source.line) in region_lines]
    if not reasons:
        reasons = [str(e) for e in left] or [str(e) for e in exits] or _overridden(graph, region)
    reasons = list(dict.fromkeys(reasons))
    return "; ".join(reasons) if reasons else "the eager call gives no gradient where the traced graph does"


def _override_cut(graph: nx.DiGraph, node: str, exits: Sequence[Exit]) -> tuple[Barrier, ...]:
    """The barriers of a variable only a replaced gradient explains: the ops whose own gradient applies eagerly.

    Traced, ``gradient_override_map`` (or a ``tf.custom_gradient``'s order of variables) makes a
    gradient flow where, eagerly, the op's own gradient returns None. Nothing is named when a
    branch, a loop or a value that left TensorFlow explains the eager answer instead.
    """
    region = _region(graph, node)
    if exits or _control_flow(graph, node, region):
        return ()
    cut = []
    for n, op, override in _overrides(graph, region):
        source, via_library = op_source(op)
        custom = override.startswith("CustomGradient")
        cut.append(Barrier(
            op_name=op.name, op_type=op.type,
            kind=BarrierKind.CUSTOM_GRADIENT_NONE if custom else BarrierKind.NONE_GRADIENT,
            detail="the custom gradient returned None for it eagerly" if custom
            else f"eagerly the registered gradient of {op.type} applies, and returns None here",
            tensor=op.inputs[0].name if op.inputs else "", source=source,
            in_user_code=source is not None and not via_library, node=n,
        ))
    return tuple(cut)


def _overrides(graph: nx.DiGraph, region: set[str]) -> list[tuple[str, Any, str]]:
    """``(node, op, override)`` of the ops in ``region`` whose gradient was replaced, in node order."""
    found = []
    for n in sorted(region):
        op = graph.nodes[n].get("op")
        try:
            override = op.get_attr("_gradient_op_type").decode() if op is not None else None
        except (ValueError, AttributeError):
            continue
        if override:
            found.append((n, op, override))
    return found


def _overridden(graph: nx.DiGraph, region: set[str]) -> list[str]:
    """The ops on the traced paths whose gradient was replaced, by ``gradient_override_map`` or ``tf.custom_gradient``."""
    reasons = []
    for _, op, override in _overrides(graph, region):
        source, _ = op_source(op)
        line = f" (line {source.line})" if source is not None else ""
        if override.startswith("CustomGradient"):
            reasons.append(f"the custom gradient{line} answers otherwise eagerly than traced (TensorFlow hands a "
                           "tf.custom_gradient the variables it reads in another order eagerly)")
        else:
            reasons.append(f"gradient_override_map gives {op.type} the gradient of {override} when traced{line}; "
                           f"eagerly {op.type}'s own gradient applies")
    return reasons


def _region(graph: nx.DiGraph, node: str) -> set[str]:
    """Nodes on the traced graph's gradient paths between the variable and the losses."""
    carrying = nx.subgraph_view(graph, filter_edge=lambda u, w: bool(graph.edges[u, w]["grad"]))
    reached: set[str] = nx.descendants(carrying, node) | {node}
    return reached & gradient_nodes(graph, graph.graph["losses"])


def _control_flow(graph: nx.DiGraph, node: str, region: set[str]) -> list[str]:
    clusters = graph.graph["clusters"]
    found: dict[str, str] = {}
    carried: set[str] = set()  # loops the variable passes through unchanged
    for n in region:
        cluster = graph.nodes[n].get("cluster")
        passing = graph.nodes[n].get("op_type") in _PASS_THROUGH
        while cluster is not None:
            info = clusters[cluster]
            if info["kind"] in ("cond", "case"):
                found[info["gate"]] = info["kind"]
            elif info["kind"] == "while" and passing:
                carried.add(info["gate"])
            elif info["kind"] == "while":
                found[info["gate"]] = "while"
            cluster = info["parent"]
            passing = False
    if carried - found.keys():
        # Traced, every loop variable gets a gradient; eagerly, one read only by the condition gets
        # None, and so does one the iterations' ops cut (a stop_gradient in the body).
        reads = {graph.nodes[d].get("cluster") for d in nx.descendants(graph, node)
                 if graph.nodes[d].get("op_type") not in _PASS_THROUGH}
        for gate in carried - found.keys():
            found[gate] = "condition" if f"{gate}/cond" in reads else "carried"
    reasons = []
    for gate, kind in sorted(found.items()):
        source, _ = op_source(graph.nodes[gate].get("op"))
        line = f" (line {source.line})" if source is not None else ""
        reasons.append({
            "cond": f"only the branch taken runs eagerly{line}",
            "case": f"only the branch taken runs eagerly{line}",
            "while": f"a while_loop runs only the iterations taken eagerly{line}",
            "condition": f"the while condition is not differentiated eagerly{line}",
            "carried": f"traced, the while_loop{line} gives every value it carries a gradient, zeros at least; "
                       "eagerly only its iterations' ops count",
        }[kind])
    return reasons


_PASS_THROUGH = frozenset({"Placeholder", "Identity"})


def _region_lines(graph: nx.DiGraph, region: set[str]) -> set[tuple[str, int]]:
    lines = set()
    for n in region:
        op = graph.nodes[n].get("op")
        if op is not None:
            source, _ = op_source(op)
            if source is not None:
                lines.add((source.file, source.line))
    return lines


_NOT_RUN = ("the step raised when flowcheck ran it eagerly, as you call it ({}): this call is judged as traced "
            "by tf.function instead")


def as_called_sites(
    traced: Any, graph: nx.DiGraph, sites: Sequence[GradientSite], calls: Sequence[RecordedCall | None],
    exits: Sequence[Exit], failed: Sequence[str] = (),
) -> tuple[GradientSite, ...]:
    """A plain-function step's sites with the answers of its eager call (``calls``, one per site), and why they differ.

    Where a tape answers otherwise than the traced graph (an untaken branch, a ``float()``), its
    answer is the verdict. When the eager run raised (``failed``), every site keeps the traced
    graph's answers and says so.
    """
    if failed:
        note = failed[0] if failed[0].startswith("flowcheck did not run") else _NOT_RUN.format(failed[0])
        return tuple(replace(site, notes=(*site.notes, note)) for site in sites)
    index = {id(v.variable): i for i, v in enumerate(traced.variables)}
    index.update((id(v.tf_variable), i) for i, v in enumerate(traced.variables))
    judged = []
    for k, (site, call) in enumerate(zip(sites, calls)):
        answers = call.tensorflow_none if call is not None and call.results is not None else ()
        pairs = list(zip(site.sources, answers or (None,) * len(site.sources)))
        cut = _site_loop_barriers(traced, graph, k, [
            variable_node(i) for source, none in pairs
            if none and source.receives and (i := index.get(id(source.variable))) is not None
        ])
        sources = []
        for source, none in pairs:
            if none is None or source.receives == (not none):
                sources.append(source)
                continue
            verdict = Verdict.RECEIVES if not none else (
                Verdict.UNUSED if source.verdict is Verdict.UNUSED else Verdict.BLOCKED
            )
            i = index.get(id(source.variable))
            why = (eager_difference(graph, variable_node(i), not none, exits) if i is not None
                   else "the eager call answers otherwise than the traced graph")
            loop_cut = (cut.get(variable_node(i)) or _override_cut(graph, variable_node(i), exits)) if i is not None else ()
            sources.append(replace(
                source, verdict=verdict, tensorflow_none=none, eager_difference=why,
                barriers=() if verdict is Verdict.RECEIVES else source.barriers or loop_cut,
            ))
        judged.append(replace(site, sources=tuple(sources)))
    return tuple(judged)


def _site_loop_barriers(traced: Any, graph: nx.DiGraph, k: int, nodes: list[str]) -> dict[str, tuple[Barrier, ...]]:
    if not nodes or k >= len(traced.calls):
        return {}
    return loop_free_site_barriers(traced, graph, k, nodes, barrier)
