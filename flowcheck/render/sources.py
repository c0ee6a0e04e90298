"""The user's line of a drawn op, read from its traceback only when the op is drawn."""

from __future__ import annotations

from collections.abc import Callable

import networkx as nx

from flowcheck.source.lines import SourceLine
from flowcheck.source.op import op_source

__all__ = ["op_sources"]


def op_sources(graph: nx.DiGraph) -> Callable[[str], SourceLine | None]:
    """A lookup of the user's line that made an op node, reading tracebacks only when asked.

    Ops TensorFlow makes while tracing (argument placeholders, the output ``Identity``) point at
    the line that started the trace; that line says nothing about the op and is left out.
    """
    call_site: list[SourceLine | None] = []

    def line_of(node: str) -> SourceLine | None:
        op = graph.nodes[node].get("op") if node in graph else None
        return None if op is None else op_source(op)[0]

    def lookup(node: str) -> SourceLine | None:
        if not call_site:
            first = next(
                (n for n, d in graph.nodes(data=True) if d.get("op_type") == "Placeholder" and d.get("cluster") is None
                 and not any(graph.nodes[p].get("kind") == "variable" for p in graph.pred[n])),
                None,
            )
            call_site.append(line_of(first) if first is not None else None)
        line = line_of(node)
        return None if line is None or line == call_site[0] else line

    return lookup
