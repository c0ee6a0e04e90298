"""The drawing as plain frozen data: what :func:`flowcheck.render.layout.layout` decides to draw.

Everything downstream (DOT text, SVG view, Model Explorer JSON) reads these records; tests assert
on them without Graphviz.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from flowcheck._model import Verdict

__all__ = [
    "BUDGET",
    "DETAILS",
    "EDGE_ROLES",
    "MAX_GROUP_OPS",
    "MIN_RUN",
    "VERDICT_COLORS",
    "Cluster",
    "Drawing",
    "Edge",
    "Node",
    "VariableLike",
    "slug",
    "svg_id",
]

DETAILS: Final = ("collapsed", "ops")
"""The accepted values of ``detail``."""

BUDGET: Final = 300
"""The most nodes the collapsed view draws (``dot`` lays that out in well under 2 s)."""

MAX_GROUP_OPS: Final = 300
"""A name scope with more ops than this is split into its sub-scopes even if no variable says so."""

MIN_RUN: Final = 3
"""Consecutive layers with the same structure and verdicts fold into one node from this many on."""

EDGE_ROLES: Final = ("flow", "barrier", "cut", "integer", "inert")
"""Edge roles, strongest first: a folded edge takes the strongest role of the edges it stands for."""

VERDICT_COLORS: Final = {
    Verdict.RECEIVES: ("#1b7837", "#d9f0d3"),
    Verdict.BLOCKED: ("#b2182b", "#fddbc7"),
    Verdict.UNUSED: ("#6b6b6b", "#e8e8e8"),
}
"""Border and fill color of a variable, by verdict."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class VariableLike(Protocol):
    """What the renderer reads from a :class:`flowcheck.VariableResult`."""

    @property
    def name(self) -> str: ...
    @property
    def verdict(self) -> Verdict: ...
    @property
    def barriers(self) -> Sequence[Any]: ...
    @property
    def shape(self) -> tuple[int | None, ...]: ...
    @property
    def dtype(self) -> str: ...
    @property
    def trainable(self) -> bool: ...
    @property
    def node(self) -> str: ...


@dataclass(frozen=True)
class Node:
    """One drawn node.

    Attributes:
        name: Its DOT name.
        role: ``variable``, ``loss``, ``barrier``, ``op`` or ``group``.
        label: The text drawn in it.
        tooltip: The text shown on hover.
        classes: SVG classes (``variable blocked``, ``group``, ``repeat``, ``blame``, ...).
        svg_id: The SVG element id (``var-3``, ``loss-0``, ``group-12``, ``op-40``).
        cluster: The DOT name of the cluster drawn around it, or ``None``.
        members: The graph nodes it stands for.
        verdict: A variable's verdict; for a group, the worst verdict of its variables.
        trainable: False for a non-trainable variable.
        counts: For a group: how many of its variables have each verdict.
        namespace: The Keras layer path (or scope) it belongs to, ``/``-separated.
    """

    name: str
    role: str
    label: str
    tooltip: str
    classes: tuple[str, ...]
    svg_id: str
    cluster: str | None
    members: tuple[str, ...]
    verdict: Verdict | None = None
    trainable: bool = True
    counts: tuple[tuple[Verdict, int], ...] = ()
    namespace: str = ""


@dataclass(frozen=True)
class Edge:
    """One drawn edge, standing for one or more edges of the graph.

    Attributes:
        tail: The DOT name of the producer.
        head: The DOT name of the consumer.
        role: ``flow`` (gradient from the loss runs back along it), ``barrier`` (it is cut and
            that blocks a variable), ``cut`` (cut, blocking nothing), ``integer`` (an integer,
            boolean or resource tensor: no gradient is ever meant to pass) or ``inert`` (no
            gradient from the loss reaches it).
        blame: On a blocked variable's path variable -> barrier -> loss.
        label: Text drawn on it (the barrier's kind).
        tooltip: Text shown on hover.
        constraint: False for an edge that would close a cycle between groups.
    """

    tail: str
    head: str
    role: str
    blame: bool
    label: str
    tooltip: str
    constraint: bool = True


@dataclass(frozen=True)
class Cluster:
    """A labelled box around nodes: a Keras layer, a name scope or a nested function.

    Attributes:
        name: Its DOT name (starts with ``cluster_``).
        label: The text at its top.
        kind: ``layer`` (a folded layer and its variables), ``scope``, ``function``, ``cond``,
            ``case`` or ``while``.
        parent: The DOT name of the cluster around it, or ``None``.
        tooltip: Text shown on hover.
    """

    name: str
    label: str
    kind: str
    parent: str | None
    tooltip: str


@dataclass(frozen=True)
class Drawing:
    """Everything :func:`flowcheck.render.dot.format_dot` writes, in drawing order.

    Attributes:
        title: The caption.
        nodes: The drawn nodes.
        edges: The drawn edges.
        clusters: The boxes around nodes.
        focus: SVG ids of the finding the views open on: the first barrier (or op where the
            tape raises) and its blame path; empty when nothing is blocked.
    """

    title: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    clusters: tuple[Cluster, ...]
    focus: tuple[str, ...] = ()


def svg_id(node: str) -> str:
    """The SVG element id of a variable or loss node id (``variable:3`` -> ``var-3``)."""
    kind, _, rest = node.partition(":")
    if kind == "variable":
        return f"var-{rest}"
    if kind == "loss":
        return f"loss-{slug(rest)}"
    return f"op-{slug(node)}"


def slug(text: str) -> str:
    """``text`` with every character unsafe in an id replaced by ``_``."""
    return _UNSAFE.sub("_", text)
