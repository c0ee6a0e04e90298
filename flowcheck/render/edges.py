"""The drawn edges: graph edges folded onto the drawn nodes, each with its role and blame."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from flowcheck._model import BarrierKind
from flowcheck.render.context import Context
from flowcheck.render.model import EDGE_ROLES, Edge

__all__ = ["ROLE_WORDS", "back_edges", "build_edges", "role"]

ROLE_WORDS: Final = {
    "flow": "gradient flows back along this edge",
    "barrier": "GRADIENT STOPS HERE: this cut blocks a variable",
    "cut": "no gradient passes (nothing upstream needs one from here)",
    "integer": "an integer, boolean or resource tensor: it carries no gradient, by its dtype",
    "inert": "no gradient from the loss reaches this edge",
}
_FLOAT_PREFIXES: Final = ("float", "bfloat", "half", "double", "complex")


def build_edges(ctx: Context, drawn_as: Mapping[str, str]) -> list[Edge]:
    """One drawn edge per pair of drawn nodes that graph edges connect, in graph order."""
    g = ctx.g
    folded: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for u, w in g.edges:
        du, dw = drawn_as.get(u), drawn_as.get(w)
        if du is None or dw is None or du == dw:
            continue
        folded.setdefault((du, dw), []).append((u, w))
    back = back_edges(list(folded), ctx.order, drawn_as)
    edges: list[Edge] = []
    for (du, dw), members in folded.items():
        roles = {e: role(ctx, *e) for e in members}
        strongest = min(roles.values(), key=EDGE_ROLES.index)
        blame = any(e in ctx.blame_edges for e in members)
        # Name the cut on a barrier edge, and on a single op-to-op cut; folded cuts stay quiet.
        named = strongest == "barrier" or (strongest == "cut" and members == [(du, dw)])
        kinds = sorted({BarrierKind(g.edges[e]["kind"]).label for e, r in roles.items()
                        if r in ("barrier", "cut") and g.edges[e].get("kind")})
        shown = ", ".join(f"{g.edges[e].get('tensor', '')} ({g.edges[e].get('dtype', '')})" for e in members[:4])
        if len(members) > 4:
            shown += f", ... {len(members):,} tensors"
        detail = "; ".join(sorted({str(g.edges[e]["detail"]) for e in members if g.edges[e].get("detail")}))
        tooltip = f"{ROLE_WORDS[strongest]}\n{shown}" + (f"\n{detail}" if detail else "")
        edges.append(Edge(du, dw, strongest, blame, ", ".join(kinds) if named else "", tooltip,
                          constraint=(du, dw) not in back))
    return edges


def role(ctx: Context, u: str, w: str) -> str:
    """The role of graph edge ``u -> w`` (see :class:`~flowcheck.render.model.Edge`)."""
    data = ctx.g.edges[u, w]
    if data["grad"]:
        return "flow" if w in ctx.receiving else "inert"
    if (u, w) in ctx.barrier_edges or (u, w) in ctx.error_edges:
        return "barrier"
    if not str(data.get("dtype") or "float").startswith(_FLOAT_PREFIXES):
        return "integer"
    return "cut" if w in ctx.receiving else "inert"


def back_edges(edges: list[tuple[str, str]], order: Mapping[str, int], drawn_as: Mapping[str, str]) -> set[tuple[str, str]]:
    """Edges that close a cycle between folded nodes, found by depth-first search in data-flow order.

    Without them the remaining edges form a DAG, which ``dot`` lays out quickly.
    """
    pos: dict[str, int] = {}
    for n, d in drawn_as.items():
        if n in order:
            pos[d] = min(pos.get(d, order[n]), order[n])
    succ: dict[str, list[str]] = {}
    for u, w in edges:
        succ.setdefault(u, []).append(w)
    for targets in succ.values():
        targets.sort(key=lambda n: (pos.get(n, -1), n))
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    back: set[tuple[str, str]] = set()
    for root in sorted(succ, key=lambda n: (pos.get(n, -1), n)):
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(succ.get(root, ())))]
        while stack:
            node, it = stack[-1]
            for w in it:
                seen = state.get(w)
                if seen == 1:
                    back.add((node, w))
                elif seen is None:
                    state[w] = 1
                    stack.append((w, iter(succ.get(w, ()))))
                    break
            else:
                state[node] = 2
                stack.pop()
    return back
