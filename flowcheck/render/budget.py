"""Keeping the collapsed view small: fold repeated layers, then coarsen until it fits the budget.

Steps, each only on groups that hold no finding (no barrier, no blocked variable, no op of a
blame path; those keep their op detail):

1. *Fold repeats*: consecutive groups (one feeds the next) under the same parent scope, with the
   same op types and the same verdicts, become one node ``first ... last x N`` once there are
   :data:`~flowcheck.render.model.MIN_RUN` of them (a 10,000-layer Dense chain is one node).
2. While the drawing is over :data:`~flowcheck.render.model.BUDGET` nodes: draw folded groups'
   variables inside their group (its stripes count them), then coarsen the deepest scopes into
   their parents, level by level, and finally cut what is left into consecutive segments.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from flowcheck.render.context import Context
from flowcheck.render.groups import group_edges, group_name, key_depth, ordered, parent_scope
from flowcheck.render.model import BUDGET, MIN_RUN

__all__ = ["Plan", "fit_budget", "fold_repeats", "plan_size", "shows_variable"]

_STAY = ("fn:", "rest:")  # drawn inside their function's or layer's box: never cut into segments


@dataclass(frozen=True)
class Plan:
    """How ops are grouped into drawn nodes.

    Attributes:
        group_of: Op node -> group key.
        expanded: Keys of groups drawn op by op.
        protected: Keys never folded or coarsened (expanded ones and those on a blame path).
        titles: For merged keys (``run:``, ``coarse:``, ``seg:``): first name, last name, and how
            many layers they stand for.
        hide_vars: Variables of folded groups are counted in their group instead of drawn.
    """

    group_of: Mapping[str, str]
    expanded: frozenset[str]
    protected: frozenset[str]
    titles: Mapping[str, tuple[str, str, int]] = field(default_factory=dict)
    hide_vars: bool = False


def _home_key(ctx: Context, plan: Plan, v: str) -> str | None:
    home = ctx.homes.get(v) or ()
    return plan.group_of.get(home[0]) if home else None


def shows_variable(ctx: Context, plan: Plan, v: str) -> bool:
    """Whether variable ``v`` is drawn as its own node."""
    key = _home_key(ctx, plan, v)
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


def _positions(ctx: Context, group_of: Mapping[str, str]) -> dict[str, int]:
    pos: dict[str, int] = {}
    for op in ctx.ops:
        key = group_of[op]
        p = ctx.order.get(op, 0)
        if p < pos.get(key, p + 1):
            pos[key] = p
    return pos


def _signatures(ctx: Context, plan: Plan) -> dict[str, tuple[object, ...]]:
    types: dict[str, Counter[str]] = {}
    for op, key in plan.group_of.items():
        types.setdefault(key, Counter())[str(ctx.g.nodes[op].get("op_type", ""))] += 1
    verdicts: dict[str, list[str]] = {}
    for v in ctx.var_nodes:
        home = _home_key(ctx, plan, v)
        if home is not None:
            verdicts.setdefault(home, []).append(ctx.verdicts[v].value)
    return {
        k: (parent_scope(k), tuple(sorted(c.items())), tuple(sorted(verdicts.get(k, ()))))
        for k, c in types.items()
    }


def fold_repeats(ctx: Context, plan: Plan) -> Plan:
    """Fold runs of consecutive groups with the same structure and verdicts (step 1)."""
    holding = {_home_key(ctx, plan, v) for v in ctx.blocked}  # a layer with a blocked variable never folds
    candidates = {k for k in plan.group_of.values() if k.startswith("scope:") and k not in plan.protected | holding}
    if len(candidates) < MIN_RUN:
        return plan
    succ = group_edges(ctx, plan.group_of)
    sig = _signatures(ctx, plan)
    runs: list[list[str]] = []
    for key in ordered(candidates, _positions(ctx, plan.group_of)):
        last = runs[-1][-1] if runs else None
        if last is not None and sig[key] == sig[last] and key in succ.get(last, ()):
            runs[-1].append(key)
        else:
            runs.append([key])
    merged: dict[str, str] = {}
    titles = dict(plan.titles)
    for run in runs:
        if len(run) >= MIN_RUN:
            new = "run:" + run[0][6:]
            merged.update(dict.fromkeys(run, new))
            titles[new] = (group_name(ctx, run[0]), group_name(ctx, run[-1]), len(run))
    if not merged:
        return plan
    return replace(plan, group_of={op: merged.get(k, k) for op, k in plan.group_of.items()}, titles=titles)


def _layers(plan: Plan, key: str) -> int:
    return plan.titles[key][2] if key in plan.titles else 1


def _coarsen(ctx: Context, plan: Plan) -> Plan | None:
    """Merge the deepest unprotected scopes into their parent scopes; None when none is left."""
    movable = {k for k in plan.group_of.values() if k not in plan.protected and key_depth(_scope_key(k)) > 1}
    if not movable:
        return None
    depth = max(key_depth(_scope_key(k)) for k in movable)
    merged: dict[str, str] = {}
    layers: Counter[str] = Counter()
    first: dict[str, str] = {}
    for key in ordered(movable, _positions(ctx, plan.group_of)):
        scope_key = _scope_key(key)
        if key_depth(scope_key) == depth:
            parent = "coarse:" + str(parent_scope(scope_key))
            merged[key] = parent
            layers[parent] += _layers(plan, key)
            first.setdefault(parent, key)
    titles = {k: v for k, v in plan.titles.items() if k not in merged}
    for parent, n in layers.items():
        titles[parent] = (group_name(ctx, parent), group_name(ctx, parent), n)
    return replace(plan, group_of={op: merged.get(k, k) for op, k in plan.group_of.items()}, titles=titles)


def _scope_key(key: str) -> str:
    """A run's key as the scope key of its first layer (``run:a/b`` -> ``scope:a/b``)."""
    return "scope:" + key[4:] if key.startswith("run:") else key


def _segments(ctx: Context, plan: Plan, room: int) -> Plan:
    """Cut the unprotected groups, in data-flow order, into at most ``room`` consecutive segments."""
    keys = ordered({k for k in plan.group_of.values() if k not in plan.protected and not k.startswith(_STAY)},
                   _positions(ctx, plan.group_of))
    size = max(2, -(-len(keys) // max(room, 1)))
    merged: dict[str, str] = {}
    titles = {k: v for k, v in plan.titles.items() if k not in keys}
    for i in range(0, len(keys), size):
        chunk = keys[i:i + size]
        new = f"seg:{i // size}"
        merged.update(dict.fromkeys(chunk, new))
        first, last = plan.titles.get(chunk[0], (group_name(ctx, chunk[0]),) * 2)[0], \
            plan.titles.get(chunk[-1], (group_name(ctx, chunk[-1]),) * 2)[1]
        titles[new] = (first, last, sum(_layers(plan, k) for k in chunk))
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
