"""Stage 4, first step: decide what the diagram shows, as a :class:`~flowcheck.render.model.Drawing`.

Pure and deterministic (the same graph gives the same drawing): the analysis (:mod:`.context`),
the groups (:mod:`.groups`), folding and the node budget (:mod:`.budget`), then nodes
(:mod:`.nodes`) and edges (:mod:`.edges`). Nothing here imports TensorFlow: the input is the
``networkx.DiGraph`` documented in ``flowcheck.graph.build`` and the report's
:class:`~flowcheck.VariableResult` records.

Keeping ``dot`` fast. Each variable is drawn in its own layer's box, never in a shared hub, an
edge that would close a cycle between groups is drawn with ``constraint=false``, and the
collapsed view never draws more than :data:`~flowcheck.render.model.BUDGET` nodes unless the
findings themselves need more.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import networkx as nx

from flowcheck.analysis.verdicts import Analysis
from flowcheck.errors import RenderError
from flowcheck.render.budget import Plan, fit_budget
from flowcheck.render.context import Context, build_context
from flowcheck.render.edges import build_edges
from flowcheck.render.fold import fold_repeats
from flowcheck.render.groups import expanded_keys, initial_groups
from flowcheck.render.model import BUDGET, DETAILS, Drawing, VariableLike
from flowcheck.render.nodes import build_nodes

__all__ = ["layout", "plan"]


def layout(
    graph: nx.DiGraph,
    results: Sequence[VariableLike],
    *,
    detail: str = "collapsed",
    focus: Iterable[str] | None = None,
    verification: Any = None,
    sources: Callable[[str], Any] | None = None,
    title: str = "",
    analysis: Analysis | None = None,
) -> Drawing:
    """Decide what the diagram shows.

    Args:
        graph: The gradient-annotated graph (``flowcheck.graph.build``).
        results: One result per variable node (``flowcheck.VariableResult`` or alike).
        detail: ``"collapsed"`` folds each layer or scope into one node (and repeated layers into
            one), except those holding a barrier or a blocked variable, within a node budget;
            ``"ops"`` draws every op.
        focus: Variable node ids: draw only these and the ops between them and the loss.
        verification: A ``flowcheck.Verification`` whose observations go into the tooltips.
        sources: Maps an op node id to its source line (anything with ``str()``), or ``None``;
            called only for op nodes that are drawn.
        title: The diagram's caption.
        analysis: The graph's :class:`~flowcheck.analysis.verdicts.Analysis` (a report's), else computed here.

    Raises:
        RenderError: ``detail`` is not one of :data:`DETAILS`, or ``focus`` names a node that is
            not a variable of the graph.
    """
    if detail not in DETAILS:
        raise RenderError(f"detail must be one of {', '.join(map(repr, DETAILS))}, not {detail!r}")
    ctx = build_context(graph, results, detail, focus, verification, sources, analysis)
    chosen = plan(ctx)
    built = build_nodes(ctx, chosen)
    edges = build_edges(ctx, built.drawn_as)
    ids = {n.name: n.svg_id for n in built.nodes}
    roles = {n.svg_id: n.role for n in built.nodes}
    seen = dict.fromkeys(ids[built.drawn_as[n]] for n in ctx.finding if built.drawn_as.get(n) in ids)
    finding = tuple(sorted(seen, key=lambda i: roles[i] != "barrier"))  # the barrier first
    return Drawing(title, tuple(built.nodes), tuple(edges), tuple(built.clusters.values()), finding)


def plan(ctx: Context) -> Plan:
    """Group the ops, fold repeats and fit the budget (collapsed view), or draw every op."""
    group_of = initial_groups(ctx)
    # Within the budget, the first blocked variables keep their layers' op detail; the others are
    # counted in their layers (a frozen backbone has hundreds, all cut by the same barrier).
    expanded = expanded_keys(ctx, group_of, None if ctx.detail == "ops" else BUDGET // 8)
    if ctx.detail != "ops":
        group_of = _keep_detail_on_findings(ctx, group_of, expanded)
    chosen = Plan(group_of=group_of, expanded=expanded, protected=expanded)
    if ctx.detail != "ops":
        chosen = fit_budget(ctx, fold_repeats(ctx, chosen))
    # A group of one op is drawn as that op.
    sizes = Counter(chosen.group_of.values())
    return replace(chosen, expanded=chosen.expanded | {k for k, n in sizes.items() if n == 1})


def _keep_detail_on_findings(ctx: Context, group_of: dict[str, str], expanded: frozenset[str]) -> dict[str, str]:
    """In a group drawn op by op, the ops off every blame path fold into one ``rest:`` node."""
    keep = ctx.blame_nodes | ctx.barrier_nodes | ctx.error_nodes
    return {op: (f"rest:{key}" if key in expanded and op not in keep else key) for op, key in group_of.items()}
