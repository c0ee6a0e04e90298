"""Keeping the collapsed view within the node budget (after :mod:`.fold` folded the repeats).

Only groups that hold no finding (no barrier, no op where the tape raises, none of the first
blocked variables) are touched; those keep their op detail. While the drawing is over :data:`~flowcheck.render.model.BUDGET` nodes: draw folded groups'
   variables inside their group (its stripes count them), then coarsen the deepest scopes into
   their parents, level by level, and finally cut what is left into consecutive segments.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from flowcheck.render.context import Context
from flowcheck.render.groups import group_name, key_depth, ordered, parent_scope, positions
from flowcheck.render.model import BUDGET

__all__ = ["Plan", "Title", "fit_budget", "home_key", "plan_size", "shows_variable"]

_STAY = ("fn:", "rest:")  # drawn inside their function's or layer's box: never cut into segments


@dataclass(frozen=True)
class Title:
    """What a merged node stands for: its first and last layers' names, how many repeats (or
    layers) it folds, and how many layers that is in all."""

    first: str
    last: str
    count: int
    layers: int


@dataclass(frozen=True)
class Plan:
    """How ops are grouped into drawn nodes.

    Attributes:
        group_of: Op node -> group key.
        expanded: Keys of groups drawn op by op.
        protected: Keys never folded or coarsened (expanded ones and those on a blame path).
        titles: For merged keys (``run:``, ``coarse:``, ``seg:``): what they stand for.
        hide_vars: Variables of folded groups are counted in their group instead of drawn.
    """

    group_of: Mapping[str, str]
    expanded: frozenset[str]
    protected: frozenset[str]
    titles: Mapping[str, Title] = field(default_factory=dict)
    hide_vars: bool = False


def home_key(ctx: Context, plan: Plan, v: str) -> str | None:
    home = ctx.homes.get(v) or ()
    return plan.group_of.get(home[0]) if home else None


def shows_variable(ctx: Context, plan: Plan, v: str) -> bool:
    """Whether variable ``v`` is drawn as its own node."""
    key = home_key(ctx, plan, v)
    if key is None:
        return not plan.hide_vars or v in ctx.blocked
    if key in plan.expanded:
        return True
    return not plan.hide_vars and not key.startswith(("run:", "seg:", "coarse:"))


def plan_size(ctx: Context, plan: Plan) -> int:
    """How many nodes the plan draws."""
    folded = {k for k in plan.group_of.values() if k not in plan.expanded}
    ops = sum(1 for k in plan.group_of.values() if k in plan.expanded)
    shown = sum(1 for v in ctx.var_nodes if v in ctx.kept and shows_variable(ctx, plan, v))
    return len(folded) + ops + shown + len(ctx.loss_nodes)


def _layers(plan: Plan, key: str) -> int:
    return plan.titles[key].layers if key in plan.titles else 1


def _coarsen(ctx: Context, plan: Plan) -> Plan | None:
    """Merge the deepest unprotected scopes into their parent scopes; None when none is left."""
    movable = {k for k in plan.group_of.values() if k not in plan.protected and key_depth(_scope_key(k)) > 1}
    if not movable:
        return None
    depth = max(key_depth(_scope_key(k)) for k in movable)
    merged: dict[str, str] = {}
    layers: Counter[str] = Counter()
    first: dict[str, str] = {}
    for key in ordered(movable, positions(ctx, plan.group_of)):
        scope_key = _scope_key(key)
        if key_depth(scope_key) == depth:
            parent = "coarse:" + str(parent_scope(scope_key))
            merged[key] = parent
            layers[parent] += _layers(plan, key)
            first.setdefault(parent, key)
    titles = {k: v for k, v in plan.titles.items() if k not in merged}
    for parent, n in layers.items():
        titles[parent] = Title(group_name(ctx, parent), group_name(ctx, parent), n, n)
    return replace(plan, group_of={op: merged.get(k, k) for op, k in plan.group_of.items()}, titles=titles)


def _scope_key(key: str) -> str:
    """A run's key as the scope key of its first layer (``run:a/b`` -> ``scope:a/b``)."""
    return "scope:" + key[4:] if key.startswith("run:") else key


def _segments(ctx: Context, plan: Plan, room: int) -> Plan:
    """Cut the unprotected groups, in data-flow order, into at most ``room`` consecutive segments."""
    keys = ordered({k for k in plan.group_of.values() if k not in plan.protected and not k.startswith(_STAY)},
                   positions(ctx, plan.group_of))
    size = max(2, -(-len(keys) // max(room, 1)))
    merged: dict[str, str] = {}
    titles = {k: v for k, v in plan.titles.items() if k not in keys}
    for i in range(0, len(keys), size):
        chunk = keys[i:i + size]
        new = f"seg:{i // size}"
        merged.update(dict.fromkeys(chunk, new))
        first = plan.titles[chunk[0]].first if chunk[0] in plan.titles else group_name(ctx, chunk[0])
        last = plan.titles[chunk[-1]].last if chunk[-1] in plan.titles else group_name(ctx, chunk[-1])
        n = sum(_layers(plan, k) for k in chunk)
        titles[new] = Title(first, last, n, n)
    return replace(plan, group_of={op: merged.get(k, k) for op, k in plan.group_of.items()}, titles=titles)


def fit_budget(ctx: Context, plan: Plan, budget: int = BUDGET) -> Plan:
    """Coarsen ``plan`` until it draws at most ``budget`` nodes, or nothing unprotected is left (step 2)."""
    if ctx.detail == "ops" or plan_size(ctx, plan) <= budget:
        return plan
    plan = replace(plan, hide_vars=True)
    while plan_size(ctx, plan) > budget:
        coarser = _coarsen(ctx, plan)
        if coarser is None:
            break
        plan = coarser
    size = plan_size(ctx, plan)
    if size <= budget:
        return plan
    unprotected = len({k for k in plan.group_of.values() if k not in plan.protected and not k.startswith(_STAY)})
    room = budget - (size - unprotected)
    return _segments(ctx, plan, max(room, budget // 10))
