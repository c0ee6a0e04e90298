"""Which drawn node each op belongs to: its Keras layer, name scope or nested function.

An op belongs to the innermost nested function (``cond`` branch, ``while`` body, called
``tf.function``) that holds it; an op of the outer graph belongs to its name scope, cut at the
depth of a Keras layer. A layer's scope is found from its variables: ``sequential/d1/kernel`` is
read by ops named ``sequential_1/d1_1/...``, so ``sequential_1`` is a *container* and every scope
directly below it (``sequential_1/d1_1``, ``sequential_1/relu_1``) is one group. Scopes holding more
than :data:`~flowcheck.render.model.MAX_GROUP_OPS` ops are split the same way when no variable
names them.

Group keys: ``fn:<cluster id>``, ``scope:<op scope>``; the budget adds ``run:``, ``coarse:`` and
``seg:`` keys for folded runs, coarsened scopes and segments (:mod:`flowcheck.render.budget`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from flowcheck.render.context import Context
from flowcheck.render.model import MAX_GROUP_OPS
from flowcheck.render.names import match_layer

__all__ = ["expanded_keys", "group_edges", "group_name", "initial_groups", "key_depth", "ordered", "parent_scope", "positions"]


def initial_groups(ctx: Context) -> dict[str, str]:
    """The group key of each drawn op: ``fn:<cluster>`` or ``scope:<name scope>``."""
    g = ctx.g
    containers = _containers(ctx, [n for n in ctx.ops if g.nodes[n].get("cluster") is None])
    groups: dict[str, str] = {}
    for op in ctx.ops:
        cluster = g.nodes[op].get("cluster")
        if cluster is not None:
            groups[op] = f"fn:{cluster}"
            continue
        parts = str(g.nodes[op].get("name", op)).split("/")
        depth = 1
        while depth < len(parts) and "/".join(parts[:depth]) in containers:
            depth += 1
        groups[op] = "scope:" + "/".join(parts[:depth])
    return groups


def _containers(ctx: Context, ops: list[str]) -> set[str]:
    """Name scopes whose direct sub-scopes are the groups (a model around its layers)."""
    g = ctx.g
    containers: set[str] = set()
    for v in ctx.var_nodes:
        layer = str(g.nodes[v].get("name", "")).split(":")[0].split("/")[:-1]
        if not layer or v not in ctx.kept:
            continue
        for s in ctx.consumers(v):
            if g.nodes[s].get("cluster") is not None:
                continue
            parts = str(g.nodes[s].get("name", s)).split("/")
            where = match_layer(parts, layer)
            if where is not None:
                containers.update("/".join(parts[:i]) for i in range(1, where[1]))
    counts: Counter[str] = Counter()
    for op in ops:
        parts = str(g.nodes[op].get("name", op)).split("/")
        counts.update("/".join(parts[:i]) for i in range(1, len(parts)))
    containers.update(scope for scope, n in counts.items() if n > MAX_GROUP_OPS)
    return containers


def expanded_keys(ctx: Context, group_of: Mapping[str, str], blocked: int | None = None) -> frozenset[str]:
    """Groups drawn op by op: every group for ``detail="ops"``, else those holding a finding (a
    barrier, an op where the tape raises, or one of the first ``blocked`` blocked variables)."""
    if ctx.detail == "ops":
        return frozenset(group_of.values())
    keys = {group_of[n] for n in ctx.barrier_nodes | ctx.error_nodes if n in group_of}
    for v in ctx.blocked[:blocked]:
        keys.update(group_of[c] for c in ctx.homes.get(v, ()) if c in group_of)
    # A nested function is drawn inside the function holding it: open its ancestors too.
    clusters = ctx.g.graph.get("clusters", {})
    for key in list(keys):
        if key.startswith("fn:"):
            parent = clusters.get(key[3:], {}).get("parent")
            while parent is not None:
                keys.add(f"fn:{parent}")
                parent = clusters.get(parent, {}).get("parent")
    return frozenset(keys)


def group_edges(ctx: Context, group_of: Mapping[str, str]) -> dict[str, set[str]]:
    """For each group, the groups its ops feed directly."""
    succ: dict[str, set[str]] = {}
    for u, w in ctx.g.edges:
        a, b = group_of.get(u), group_of.get(w)
        if a is not None and b is not None and a != b:
            succ.setdefault(a, set()).add(b)
    return succ


def parent_scope(key: str) -> str | None:
    """The op scope one level above a ``scope:``/``coarse:`` key, or None at the top."""
    kind, _, scope = key.partition(":")
    if kind not in ("scope", "coarse") or "/" not in scope:
        return None
    return scope.rsplit("/", 1)[0]


def key_depth(key: str) -> int:
    """How deep a ``scope:``/``coarse:`` key's scope is (0 for other keys)."""
    kind, _, scope = key.partition(":")
    return scope.count("/") + 1 if kind in ("scope", "coarse") else 0


def group_name(ctx: Context, key: str) -> str:
    """The user's name of a ``scope:``, ``coarse:`` or ``fn:`` group (its Keras path, else its scope)."""
    kind, _, rest = key.partition(":")
    if kind == "rest":
        return group_name(ctx, rest)
    if kind == "fn":
        return str(ctx.g.graph.get("clusters", {}).get(rest, {}).get("label", rest))
    if kind in ("scope", "coarse"):
        return ctx.names.keras(rest)
    return rest


def positions(ctx: Context, group_of: Mapping[str, str]) -> dict[str, int]:
    """Each group's position in data-flow order: its last op's (a layer's first ops, the reads of its
    variables and its constants, depend on nothing and come early whatever the layer's depth)."""
    pos: dict[str, int] = {}
    for op in ctx.ops:
        key = group_of[op]
        pos[key] = max(pos.get(key, -1), ctx.order.get(op, 0))
    return pos


def ordered(keys: Iterable[str], position: Mapping[str, int]) -> list[str]:
    """``keys`` by their :func:`positions` (then by key)."""
    return sorted(keys, key=lambda k: (position.get(k, -1), k))
