"""Folding repeated structure: consecutive layers, or blocks of layers, with the same structure
and verdicts become one node ``first ... last x N``.

A group's *signature* is its parent scope, its op types with their counts, and the verdicts of
its variables. Walking the groups in data-flow order, a run of one signature repeated (each layer
feeding the next; :data:`~flowcheck.render.model.MIN_RUN` of them at least) folds into one node:
a 10,000-layer Dense chain is one node. So does a block of up to :data:`MAX_PERIOD` layers
repeated at least twice, each block feeding the next (ResNet's identity blocks of a stage, a
Transformer's encoder blocks). Layers holding a barrier, a blocked variable or an op where the
tape raises never fold.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Final

from flowcheck.render.budget import Plan, Title, home_key
from flowcheck.render.context import Context
from flowcheck.render.groups import group_edges, group_name, ordered, parent_scope, positions
from flowcheck.render.model import MIN_RUN

__all__ = ["MAX_PERIOD", "fold_repeats"]

MAX_PERIOD: Final = 16
"""The most layers a repeated block may have."""


def _signatures(ctx: Context, plan: Plan, keys: set[str]) -> dict[str, object]:
    types: dict[str, Counter[str]] = {}
    for op, key in plan.group_of.items():
        if key in keys:
            types.setdefault(key, Counter())[str(ctx.g.nodes[op].get("op_type", ""))] += 1
    verdicts: dict[str, list[str]] = {}
    for v in ctx.var_nodes:
        home = home_key(ctx, plan, v)
        if home in keys:
            verdicts.setdefault(home, []).append(ctx.verdicts[v].value)
    return {k: (parent_scope(k), tuple(sorted(c.items())), tuple(sorted(verdicts.get(k, ())))) for k, c in types.items()}


def _feeds(succ: Mapping[str, set[str]], a: Sequence[str], b: Sequence[str]) -> bool:
    targets = set(b)
    return any(succ.get(k, set()) & targets for k in a)


def _repeats(keys: Sequence[str], i: int, p: int, sig: Mapping[str, object], succ: Mapping[str, set[str]]) -> int:
    """How many times the block ``keys[i:i+p]`` repeats from ``i`` on, each copy feeding the next."""
    k = 1
    while i + (k + 1) * p <= len(keys):
        prev, nxt = keys[i + (k - 1) * p: i + k * p], keys[i + k * p: i + (k + 1) * p]
        if any(sig.get(a, a) != sig.get(b, b) for a, b in zip(prev, nxt)) or not _feeds(succ, prev, nxt):
            break
        k += 1
    return k


def _runs(keys: Sequence[str], sig: Mapping[str, object], succ: Mapping[str, set[str]]) -> list[tuple[int, int, int]]:
    """Greedy, in data-flow order: ``(start, period, repeats)`` of each run that folds."""
    runs: list[tuple[int, int, int]] = []
    i = 0
    while i < len(keys):
        best: tuple[int, int] | None = None  # layers covered, period
        if keys[i] in sig:
            for p in range(1, MAX_PERIOD + 1):
                k = _repeats(keys, i, p, sig, succ)
                if k >= (MIN_RUN if p == 1 else 2) and (best is None or k * p > best[0]):
                    best = (k * p, p)
        if best is None:
            i += 1
            continue
        runs.append((i, best[1], best[0] // best[1]))
        i += best[0]
    return runs


def fold_repeats(ctx: Context, plan: Plan) -> Plan:
    """Fold runs of consecutive layers (or blocks of layers) with the same structure and verdicts."""
    holding = {home_key(ctx, plan, v) for v in ctx.blocked}  # a layer with a blocked variable never folds
    candidates = {k for k in plan.group_of.values() if k.startswith("scope:") and k not in plan.protected | holding}
    if len(candidates) < 2:
        return plan
    succ = group_edges(ctx, plan.group_of)
    keys = ordered(set(plan.group_of.values()), positions(ctx, plan.group_of))
    sig = _signatures(ctx, plan, candidates)
    merged: dict[str, str] = {}
    titles = dict(plan.titles)
    for start, period, count in _runs(keys, sig, succ):
        run = keys[start: start + period * count]
        new = "run:" + run[0][6:]
        merged.update(dict.fromkeys(run, new))
        titles[new] = Title(group_name(ctx, run[0]), group_name(ctx, run[-1]), count, len(run))
    if not merged:
        return plan
    return replace(plan, group_of={op: merged.get(k, k) for op, k in plan.group_of.items()}, titles=titles)
