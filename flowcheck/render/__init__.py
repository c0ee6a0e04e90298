"""Stage 4: every picture of a report, built by pure string work from the analysis.

The data flow, one module per step:

* :mod:`.context` -- the analysis results the drawing reads (verdicts, cuts, blame paths);
* :mod:`.names` -- the user's (Keras) names of traced scopes;
* :mod:`.groups` -- which ops form one drawn node (a layer, a scope, a nested function);
* :mod:`.budget` -- folding repeated layers and coarsening until the view fits the node budget;
* :mod:`.nodes`, :mod:`.edges` -- the drawn nodes and edges; :mod:`.layout` ties them into a
  :class:`~.model.Drawing` (plain frozen data, :mod:`.model`);
* :mod:`.dot` -- the Drawing as DOT text; :mod:`.svg` -- the SVG opened on the finding;
  :mod:`.html` -- the self-contained HTML report; :mod:`.explorer` -- Model Explorer's graph JSON.

The two runners sit beside the builders: :mod:`.graphviz` is the only module that starts ``dot``
(and writes a report's files), :mod:`.server` the only one that serves Model Explorer. Nothing
else here starts a process, touches disk or imports TensorFlow. The words of a report (summary,
JSON) are :mod:`flowcheck.outputs`'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import networkx as nx

from flowcheck.render.dot import format_dot
from flowcheck.render.layout import layout
from flowcheck.render.model import DETAILS, Cluster, Drawing, Edge, Node, VariableLike, svg_id
from flowcheck.render.sources import op_sources

__all__ = ["DETAILS", "Cluster", "Drawing", "Edge", "Node", "format_dot", "layout", "op_sources", "svg_id", "to_dot"]


def to_dot(
    graph: nx.DiGraph,
    results: Sequence[VariableLike],
    *,
    detail: str = "collapsed",
    focus: Iterable[str] | None = None,
    verification: Any = None,
    sources: Callable[[str], Any] | None = None,
    title: str = "",
) -> str:
    """The DOT source of the gradient-flow diagram (see :func:`layout` for the arguments)."""
    return format_dot(
        layout(graph, results, detail=detail, focus=focus, verification=verification, sources=sources, title=title)
    )
