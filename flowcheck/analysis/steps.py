"""A training step's findings: its gradient sites judged, its never-trained variables, what its report lists.

Each gradient call the trace recorded (:class:`~flowcheck.trace.sites.RecordedCall`) is judged on
the ops its own tape recorded (:mod:`flowcheck.analysis.sites`); a trainable variable some tape
would give a gradient but no call asks for never trains. Optimizer slots, metric totals and
BatchNorm statistics are counted, not listed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import networkx as nx

from flowcheck._model import Verdict
from flowcheck.analysis.sites import judge_call, site_graph, tensor_node
from flowcheck.analysis.verdicts import loop_free_cuts, verdicts
from flowcheck.errors import VariableNotFoundError
from flowcheck.source.names import shown_name, source_name, target_names, tensor_labels, unique
from flowcheck.trace.sites import GradientSite, RecordedCall, watch_text

__all__ = [
    "attach_targets", "build_sites", "judged_at_sites", "listed_ids", "loop_free_site_barriers", "never_trained",
    "never_trained_across", "step_findings", "step_variables",
]


class _Index:
    """Maps the objects a call names (tf or Keras variables) to ``Traced.variables``."""

    def __init__(self, variables: Sequence[Any]) -> None:
        self.variables = variables
        self.by_id: dict[int, int] = {}
        for i, var in enumerate(variables):
            for obj in (var.variable, var.tf_variable, getattr(var.variable, "_value", None)):
                if obj is not None:
                    self.by_id.setdefault(id(obj), i)
            for handle in var.handles:
                self.by_id.setdefault(id(handle), i)

    def __call__(self, obj: Any) -> int | None:
        found = self.by_id.get(id(obj))
        if found is None and getattr(obj, "_value", None) is not None:
            found = self.by_id.get(id(obj._value))  # noqa: SLF001 -- a Keras variable's backing
        return found

    def watched(self, call: RecordedCall, i: int) -> bool:
        tape = call.tape
        if tape is None:
            return True
        if any(self(w) == i for w in tape.watched):
            return True
        return tape.watch_accessed_variables and bool(self.variables[i].tf_variable.trainable)


def build_sites(traced: Any, graph: nx.DiGraph, barrier_of: Any) -> tuple[tuple[GradientSite, ...], set[int]]:
    """The report's gradient sites, one per call in the final trace, in the order made, and the
    variables (indices) a gradient would reach at some site if they were asked for."""
    index = _Index(traced.variables)
    sites = []
    reached: set[int] = set()
    var_nodes: list[str] = graph.graph["variables"]
    for call in traced.calls:
        sub = site_graph(graph, call, traced.variables, functools.partial(index.watched, call), index)
        if sub.targets:
            found = verdicts(sub.graph, var_nodes, sub.targets, reached=sub.reached())
            reached.update(i for i, node in enumerate(var_nodes) if found[node] is Verdict.RECEIVES)
        written = tensor_labels(call.caller or call.source, len(call.sources), call.nth)
        raw = [
            shown_name(traced.variables[i].name, label) if (i := index(obj)) is not None else label or source_name(obj)
            for obj, label in zip(call.sources, written)
        ]
        names = unique(raw)
        trainable = [
            bool(traced.variables[i].trainable) if (i := index(obj)) is not None else bool(getattr(obj, "trainable", False))
            for obj in call.sources
        ]
        watched = call.tape.watched if call.tape else ()  # a watched tf.Variable is told by its Keras path
        labels = {id(w): traced.variables[i].name for w in watched if (i := index(w)) is not None}
        labels.update({id(obj): n for obj, n in zip(call.sources, names)})
        sites.append(judge_call(
            call, sub, names, trainable, barrier_of, watch_text(call, labels), target_names(call.caller or call.source, call.targets, call.nth),
        ))
    return tuple(sites), reached


def loop_free_site_barriers(
    traced: Any, graph: nx.DiGraph, k: int, nodes: Sequence[str], barrier_of: Any,
) -> dict[str, tuple[Any, ...]]:
    """For the sources (variable ``nodes``) of site ``k``: the barriers of their cut without a ``While``'s carrying.

    A plain-function step's eager tape gives None where the traced loop gives zeros
    (:func:`flowcheck.analysis.verdicts.loop_free_cuts`): this names what cuts its iterations.
    """
    call = traced.calls[k]
    index = _Index(traced.variables)
    sub = site_graph(graph, call, traced.variables, functools.partial(index.watched, call), index)
    cache: dict[tuple[str, str], Any] = {}
    return {
        node: tuple(barrier_of(sub.graph, edge, cache) for edge in cut)
        for node, cut in loop_free_cuts(sub.graph, nodes, sub.targets).items()
    }


def never_trained(traced: Any, results: Sequence[Any], reached: set[int]) -> tuple[Any, ...]:
    """Trainable variables that some site's tape would give a gradient (``reached``) but no site lists.

    Judged by each tape: a variable read inside its block and watched by it (a plain
    ``tf.Variable`` codebook), not one read before the block (a distillation's teacher). A step
    whose calls ask for tensors only (DeepDream's ascent on an image, an adversarial input, a
    saliency map) trains no variable at all: none of its model's is "never trained".
    """
    index = _Index(traced.variables)
    listed = {i for call in traced.calls for obj in call.sources if (i := index(obj)) is not None}
    if not listed:
        return ()
    return tuple(r for i, r in enumerate(results) if r.trainable and i not in listed and i in reached)


def step_variables(traced: Any, results: Sequence[Any]) -> list[Any]:
    """The variables a step's report lists: every site's sources and the trainable ones its targets
    reach; the rest (optimizer slots and counters, metric totals, seeds, BatchNorm statistics) is
    counted, not listed."""
    index = _Index(traced.variables)
    listed = {i for call in traced.calls for obj in call.sources if (i := index(obj)) is not None}
    kept = [r for i, r in enumerate(results) if i in listed or (r.trainable and r.verdict is not Verdict.UNUSED)]
    return kept


def judged_at_sites(report: Any) -> Any:
    """A shallow copy of a step's report whose variables carry their verdicts at the gradient sites.

    A source gets the verdict of the sites that list it (RECEIVES when any gives it a gradient,
    else the first site's verdict and barriers); a variable no site lists gets UNUSED: no gradient
    call asks for it. Contracts (``assert_gradient_flow``) are checked against this view.
    """
    import copy
    import dataclasses

    found: dict[int, tuple[Verdict, tuple[Any, ...]]] = {}
    for site in report.gradient_sites:
        for s in site.sources:
            try:
                key = id(report.result(s.variable).variable)
            except VariableNotFoundError:
                continue  # a tensor source (an FGSM input under tape.watch): contracts are about variables
            if key not in found or (s.receives and found[key][0] is not Verdict.RECEIVES):
                found[key] = (s.verdict, s.barriers)
    view = copy.copy(report)

    def judged(r: Any) -> Any:
        verdict, barriers = found.get(id(r.variable), (Verdict.UNUSED, ()))
        return dataclasses.replace(r, verdict=verdict, barriers=barriers)

    view.variables = tuple(judged(r) for r in report.variables)
    view._everything = tuple(judged(r) for r in report._everything)  # noqa: SLF001
    return view


def attach_targets(graph: nx.DiGraph, traced: Any) -> None:
    """Connect each loss node to its target's op when the target lives in a nested function.

    ``build_graph`` links a loss to the top graph's op of that name; a gradient call made inside
    a nested ``tf.function`` has its target there, under the prefixed id of the inlined body.
    """
    for loss, node in zip(traced.losses, graph.graph["losses"]):
        for pred in list(graph.pred[node]):
            if "kind" in graph.nodes[pred]:
                continue  # a real op of the top graph
            real = tensor_node(graph, loss.tensor)
            data = dict(graph.edges[pred, node])
            graph.remove_node(pred)
            if real is not None:
                graph.add_edge(real, node, **data)


def step_findings(
    traced: Any, graph: nx.DiGraph, results: list[Any], barrier_of: Any
) -> tuple[tuple[GradientSite, ...], tuple[Any, ...], list[Any]]:
    """A step's sites, its never-trained variables and the variables its report lists."""
    sites, reached = build_sites(traced, graph, barrier_of)
    return sites, never_trained(traced, results, reached), step_variables(traced, results)


def never_trained_across(reports: Sequence[Any]) -> tuple[Any, ...]:
    """The never-trained variables of several steps' reports (a GAN's two steps, a script's steps).

    A variable one step never asks for (the discriminator, in the generator's step) is trained when
    another step's site lists it: only those no site of any report lists remain, each once.
    """
    listed = listed_ids(reports)
    found: dict[int, Any] = {}
    for report in reports:
        for r in report.never_trained:
            if id(r.variable) not in listed and id(getattr(r.variable, "_value", None)) not in listed:
                found.setdefault(id(r.variable), r)
    return tuple(found.values())


def listed_ids(reports: Sequence[Any]) -> set[int]:
    """The ids of the sources some site of ``reports`` lists: a Keras variable's and its ``tf.Variable``'s."""
    return {
        id(v) for report in reports for site in report.gradient_sites for s in site.sources
        for v in (s.variable, getattr(s.variable, "_value", None))
    }
