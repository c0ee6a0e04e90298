"""Stage 4, second step: a :class:`~flowcheck.render.model.Drawing` as Graphviz DOT text (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from flowcheck._model import Verdict
from flowcheck.render.model import VERDICT_COLORS, Cluster, Drawing, Edge, Node

__all__ = ["format_dot", "quote"]

_BLAME = "#e66101"
_BARRIER = "#b2182b"
_FLOW = "#1b7837"
_INERT = "#b8b8b8"
_CUT = "#d6604d"
_INTEGER = "#5b7fa6"
_FONT = "Helvetica"

_CLUSTER_STYLE: Final = {
    "layer": (("style", "rounded"), ("color", "#c7c7c7"), ("penwidth", "1")),
    "scope": (("style", "rounded,dashed"), ("color", "#7f7f7f"), ("penwidth", "1")),
    "function": (("style", "rounded,filled"), ("color", "#4a6fa5"), ("fillcolor", "#eef3fa"), ("penwidth", "1.5")),
    "cond": (("style", "rounded,filled"), ("color", "#8e6bb3"), ("fillcolor", "#f3eefa"), ("penwidth", "1.5")),
    "case": (("style", "rounded,filled"), ("color", "#8e6bb3"), ("fillcolor", "#f3eefa"), ("penwidth", "1.5")),
    "while": (("style", "rounded,filled"), ("color", "#b38a1e"), ("fillcolor", "#fbf5e6"), ("penwidth", "1.5")),
}
_CLUSTER_WORDS: Final = {"layer": "layer", "scope": "scope", "cond": "tf.cond branch", "case": "tf.switch_case branch", "while": "tf.while_loop"}


def quote(text: str) -> str:
    """A DOT double-quoted string (backslashes, quotes and newlines escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(pairs: Iterable[tuple[str, str]]) -> str:
    merged = dict(pairs)  # a later style (the blame color) overrides an earlier one in place
    return "[" + " ".join(f"{k}={quote(v)}" for k, v in merged.items()) + "]"


def _group_style(node: Node) -> list[tuple[str, str]]:
    total = sum(n for _, n in node.counts)
    style: list[tuple[str, str]] = [("shape", "box")]
    if total:
        stripes = ":".join(f"{VERDICT_COLORS[v][1]};{n / total:.3f}" for v, n in node.counts)
        line = VERDICT_COLORS[node.verdict or Verdict.UNUSED][0]
        style += [("style", "rounded,striped,bold"), ("fillcolor", stripes), ("color", line)]
    else:
        style += [("style", "rounded,filled"), ("fillcolor", "#ffffff"), ("color", "#4d4d4d")]
    if "repeat" in node.classes:
        style += [("peripheries", "2")]
    if "blame" in node.classes:
        style += [("penwidth", "3"), ("color", _BLAME)]
    return style


def _node_style(node: Node) -> list[tuple[str, str]]:
    if node.role == "variable":
        line, fill = VERDICT_COLORS[node.verdict or Verdict.UNUSED]
        look = "filled,bold" + ("" if node.trainable else ",dashed")
        return [("shape", "cylinder"), ("style", look), ("color", line), ("fillcolor", fill), ("penwidth", "2")]
    if node.role == "loss":
        return [("shape", "doubleoctagon"), ("style", "filled,bold"), ("color", "#08306b"), ("fillcolor", "#2166ac"), ("fontcolor", "white")]
    if node.role == "barrier":
        return [("shape", "octagon"), ("style", "filled,bold"), ("color", "#67001f"), ("fillcolor", _BARRIER), ("fontcolor", "white"), ("penwidth", "3")]
    if node.role == "group":
        return _group_style(node)
    style = [("shape", "box"), ("style", "rounded"), ("fontsize", "10"), ("height", "0.3")]
    if "nograd" in node.classes:
        style += [("color", "#9e9e9e"), ("fontcolor", "#6b6b6b")]
    if "blame" in node.classes:
        style += [("penwidth", "2.5"), ("color", _BLAME)]
    return style


_EDGE_LOOKS: Final = {
    "flow": (("color", _FLOW), ("penwidth", "1.6")),
    "barrier": (("color", _BARRIER), ("style", "dashed"), ("penwidth", "3"), ("arrowhead", "tee")),
    "cut": (("color", _CUT), ("style", "dashed"), ("arrowhead", "tee")),
    "integer": (("color", _INTEGER), ("style", "dotted"), ("arrowhead", "empty")),
    "inert": (("color", _INERT), ("style", "dashed")),
}


def _edge_style(edge: Edge) -> list[tuple[str, str]]:
    style = list(_EDGE_LOOKS[edge.role])
    if edge.blame:
        style = [(k, v) for k, v in style if k not in ("color", "penwidth")] + [("color", f"{_BLAME}:{_BARRIER}" if edge.role == "barrier" else _BLAME), ("penwidth", "3.5")]
    if edge.label:
        style += [("label", edge.label), ("fontcolor", _BARRIER), ("fontsize", "10")]
    if not edge.constraint:
        style.append(("constraint", "false"))
    return style


def _swatch(fill: str, line: str, text: str, style: str = "") -> str:
    look = f' STYLE="{style}"' if style else ""
    return (f'<TR><TD BORDER="1"{look} COLOR="{line}" BGCOLOR="{fill}" WIDTH="22" HEIGHT="14"></TD>'
            f'<TD ALIGN="LEFT">{text}</TD></TR>')


def _line(color: str, glyph: str, text: str) -> str:
    return f'<TR><TD><FONT COLOR="{color}"><B>{glyph}</B></FONT></TD><TD ALIGN="LEFT">{text}</TD></TR>'


def _legend() -> str:
    receives, blocked, unused = (VERDICT_COLORS[v] for v in (Verdict.RECEIVES, Verdict.BLOCKED, Verdict.UNUSED))
    rows = [
        '<TR><TD COLSPAN="2"><B>Legend</B></TD></TR>',
        _swatch(receives[1], receives[0], "variable: receives a gradient"),
        _swatch(blocked[1], blocked[0], "variable: BLOCKED (feeds the loss, gradient cut)"),
        _swatch(unused[1], unused[0], "variable: unused (does not feed the loss)"),
        _swatch(receives[1], receives[0], "dashed border: non-trainable variable", style="dashed"),
        _swatch("#2166ac", "#08306b", "the loss (where the gradient starts)"),
        _swatch(_BARRIER, "#67001f", "barrier op: gradient stops here (file:line); or NO GRADIENT DEFINED: TensorFlow raises"),
        _swatch("#ffffff", "#4d4d4d", "a single op", style="rounded"),
        _swatch(f"{receives[1]}:{blocked[1]}", "#4d4d4d", "a folded layer or scope; its stripes: its variables' verdicts", style="rounded"),
        _swatch("#ffffff", "#000000", "double border: repeated layers folded (first ... last x N) or coarsened"),
        _swatch("#ffffff", "#c7c7c7", "box: a layer with its variables; dashed: a name scope", style="rounded"),
        _swatch("#eef3fa", "#4a6fa5", "box: a nested tf.function (purple: a tf.cond branch, ochre: a tf.while_loop)", style="rounded"),
        _line(_FLOW, "&#8212;&#8212;&#9656;", "gradient flows back along the edge"),
        _line(_BARRIER, "- - -|", "edge cut by a barrier"),
        _line(_CUT, "- - -|", "cut, but blocks no variable"),
        _line(_INTEGER, "&#183; &#183; &#183;&#9655;", "integer or boolean tensor (never carries a gradient)"),
        _line(_INERT, "- - - &#9656;", "no gradient from the loss reaches it"),
        _line(_BLAME, "&#8212;&#8212;&#9656;", "blame path: blocked variable -&gt; barrier -&gt; loss"),
    ]
    label = '<<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="2" CELLPADDING="3" COLOR="#9e9e9e">' + "".join(rows) + "</TABLE>>"
    return f'  legend [shape=plaintext id="legend" class="legend" tooltip="legend" fontsize="9" label={label}];\n'


def _cluster_label(c: Cluster) -> str:
    word = _CLUSTER_WORDS.get(c.kind)
    if not c.label or word is None:
        return c.label
    if c.kind in ("layer", "scope"):
        return f"{word}: {c.label}"
    return f"{c.label} ({word})"


def format_dot(drawing: Drawing) -> str:
    """Write a :class:`Drawing` as DOT source."""
    out = [
        "digraph flowcheck {\n",
        f'  graph [rankdir="TB" fontname="{_FONT}" fontsize="12" nodesep="0.25" ranksep="0.35" newrank="true"'
        f' labelloc="t" label={quote(drawing.title)} tooltip={quote(drawing.title or "gradient flow")}];\n',
        f'  node [fontname="{_FONT}" fontsize="11" margin="0.08,0.04"];\n',
        f'  edge [fontname="{_FONT}" fontsize="10" arrowsize="0.7"];\n',
        _legend(),
    ]
    children: dict[str | None, list[Cluster]] = {}
    for c in drawing.clusters:
        children.setdefault(c.parent, []).append(c)
    inside: dict[str | None, list[Node]] = {}
    for n in drawing.nodes:
        inside.setdefault(n.cluster, []).append(n)

    def write(cluster: str | None, indent: str) -> None:
        for n in inside.get(cluster, ()):
            attrs = [("id", n.svg_id), ("class", " ".join(n.classes)), ("label", n.label), ("tooltip", n.tooltip)]
            out.append(f"{indent}{quote(n.name)} {_attrs(attrs + _node_style(n))};\n")
        for c in children.get(cluster, ()):
            out.append(f"{indent}subgraph {quote(c.name)} {{\n")
            look = [("label", _cluster_label(c)), ("tooltip", c.tooltip), ("class", "cluster " + c.kind), *_CLUSTER_STYLE[c.kind]]
            out.append(f"{indent}  graph {_attrs(look)};\n")
            write(c.name, indent + "  ")
            out.append(f"{indent}}}\n")

    write(None, "  ")
    for e in drawing.edges:
        attrs = [("class", " ".join((e.role,) + (("blame",) if e.blame else ()))), ("tooltip", e.tooltip)]
        out.append(f"  {quote(e.tail)} -> {quote(e.head)} {_attrs(attrs + _edge_style(e))};\n")
    out.append("}\n")
    return "".join(out)
