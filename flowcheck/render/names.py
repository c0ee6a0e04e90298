"""The user's names for traced scopes: Keras layer paths instead of TensorFlow's op-name scopes.

Keras 3 traces a layer ``transformer_block/keep_gate`` under the op-name scope
``functional_1_1/transformer_block_1/keep_gate_1``: each scope gets a ``_1`` suffix and the model's
own scope is not part of the variables' paths. The variables tell which op scope is which layer:
``transformer_block/keep_gate/kernel`` is read by ``functional_1_1/transformer_block_1/keep_gate_1/...``.
Scopes no variable names (an activation layer) under a known one lose the suffix the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

import networkx as nx

__all__ = ["KERAS_SUFFIX", "ScopeNames", "common_layer", "match_layer", "scope_names"]

KERAS_SUFFIX: Final = re.compile(r"_\d+$")


def match_layer(parts: list[str], layer: list[str]) -> tuple[int, int] | None:
    """Where a variable's layer path sits in an op name's parts (Keras adds ``_1`` to traced scopes)."""
    for start in range(len(parts) - len(layer)):
        if all(p == lp or (KERAS_SUFFIX.search(p) and KERAS_SUFFIX.sub("", p) == lp)
               for p, lp in zip(parts[start:], layer)):
            return start, start + len(layer)
    return None


def common_layer(names: Iterable[str]) -> str:
    """The layer path shared by all these variable names (``conv1_bn`` for ``conv1_bn/gamma``), or ""."""
    paths = {n.split(":")[0].rpartition("/")[0] for n in names}
    return paths.pop() if len(paths) == 1 else ""


@dataclass(frozen=True)
class ScopeNames:
    """Op-name scope prefixes mapped to the Keras paths they trace (``""`` for a model's own scope)."""

    known: Mapping[str, str]

    def keras(self, scope: str) -> str:
        """The user's name of an op-name scope; the scope itself where no variable says otherwise."""
        parts = scope.split("/")
        for i in range(len(parts), 0, -1):
            base = self.known.get("/".join(parts[:i]))
            if base is not None:
                rest = [KERAS_SUFFIX.sub("", p) for p in parts[i:]]
                return "/".join([base, *rest] if base else rest) or KERAS_SUFFIX.sub("", parts[-1])
        return scope


def scope_names(graph: nx.DiGraph, var_nodes: Iterable[str], consumers: Callable[[str], list[str]]) -> ScopeNames:
    """Learn the scope -> Keras path map from which ops read which variables."""
    known: dict[str, str] = {}
    for v in var_nodes:
        layer = str(graph.nodes[v].get("name", "")).split(":")[0].split("/")[:-1]
        if not layer:
            continue
        for op in consumers(v):
            if graph.nodes[op].get("cluster") is not None:
                continue
            parts = str(graph.nodes[op].get("name", op)).split("/")
            where = match_layer(parts, layer)
            if where is None:
                continue
            start, _ = where
            if start:
                known.setdefault("/".join(parts[:start]), "")
            for k in range(1, len(layer) + 1):
                known.setdefault("/".join(parts[: start + k]), "/".join(layer[:k]))
    return ScopeNames(known)
