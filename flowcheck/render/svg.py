"""The SVG opened on the finding: its viewBox on the first barrier and its blame path.

Pure string work on the SVG ``dot`` writes. The node ``<g>`` elements carry the ids of
:func:`~flowcheck.render.model.svg_id`; their shapes' coordinates give each node's box. The
whole graph stays one step away: an SVG ``<view id="whole">`` (``flow.svg#whole``) and a link
to it drawn in the corner of the first view; the HTML report reads ``data-full-viewbox``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

__all__ = ["MAX_VIEW", "node_boxes", "open_on"]

MAX_VIEW: Final = (1400.0, 900.0)
"""The largest first view, in points: a bigger finding is shown around its barrier."""

_PAD: Final = 36.0
_MIN_VIEW: Final = (640.0, 420.0)
_VIEWBOX = re.compile(r'viewBox="([-\d.]+) ([-\d.]+) ([-\d.]+) ([-\d.]+)"')
_TRANSLATE = re.compile(r'<g id="graph0" class="graph" transform="scale\(([-\d.]+) ([-\d.]+)\) rotate\([-\d.]+\) translate\(([-\d.]+) ([-\d.]+)\)"')
_POINTS = re.compile(r'(?:points|d)="([^"]*)"')
_XY = re.compile(r'<(?:text|ellipse)[^>]*?\b(?:x|cx)="([-\d.]+)"[^>]*?\b(?:y|cy)="([-\d.]+)"')
_NUMBER_PAIR = re.compile(r"(-?\d+(?:\.\d+)?),(-?\d+(?:\.\d+)?)")
_SIZE = re.compile(r'<svg width="[^"]*" height="[^"]*"')

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in viewBox coordinates


def node_boxes(svg: str, ids: Sequence[str]) -> dict[str, Box]:
    """The box of each node ``<g id=...>`` in ``ids`` that the SVG has, in viewBox coordinates."""
    moved = _TRANSLATE.search(svg)
    sx, sy, tx, ty = (float(v) for v in moved.groups()) if moved else (1.0, 1.0, 0.0, 0.0)
    boxes: dict[str, Box] = {}
    for node in ids:
        start = svg.find(f'<g id="{node.replace("-", "&#45;")}" class="node')  # dot writes "-" as &#45;
        if start < 0:
            continue
        end = svg.find("\n<!-- ", start)  # dot opens every node and edge with a comment
        chunk = svg[start:end if end > 0 else len(svg)]
        xs: list[float] = []
        ys: list[float] = []
        for attr in _POINTS.findall(chunk):
            for x, y in _NUMBER_PAIR.findall(attr):
                xs.append(float(x))
                ys.append(float(y))
        for x, y in _XY.findall(chunk):
            xs.append(float(x))
            ys.append(float(y))
        if xs:
            boxes[node] = (min(xs) * sx + tx, min(ys) * sy + ty, max(xs) * sx + tx, max(ys) * sy + ty)
    return boxes


def _view(finding: Sequence[str], boxes: dict[str, Box]) -> Box:
    x0, y0 = min(b[0] for b in boxes.values()) - _PAD, min(b[1] for b in boxes.values()) - _PAD
    x1, y1 = max(b[2] for b in boxes.values()) + _PAD, max(b[3] for b in boxes.values()) + _PAD
    if x1 - x0 > MAX_VIEW[0] or y1 - y0 > MAX_VIEW[1]:
        first = boxes.get(finding[0]) or next(iter(boxes.values()))
        cx, cy = (first[0] + first[2]) / 2, (first[1] + first[3]) / 2
        w, h = min(MAX_VIEW[0], x1 - x0), min(MAX_VIEW[1], y1 - y0)
        x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    w, h = max(x1 - x0, _MIN_VIEW[0]), max(y1 - y0, _MIN_VIEW[1])
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def _text(box: Box) -> str:
    return " ".join(f"{v:.2f}" for v in (box[0], box[1], box[2] - box[0], box[3] - box[1]))


def open_on(svg: str, finding: Sequence[str]) -> str:
    """The SVG with its first view on ``finding`` (SVG ids, the barrier first) when it is bigger
    than one screen, and ``data-full-viewbox`` / ``data-focus-viewbox`` for the HTML report."""
    found = _VIEWBOX.search(svg)
    if found is None:
        return svg
    fx, fy, fw, fh = (float(v) for v in found.groups())
    full: Box = (fx, fy, fx + fw, fy + fh)
    boxes = node_boxes(svg, finding)
    if not boxes or (fw <= MAX_VIEW[0] and fh <= MAX_VIEW[1]):
        return svg.replace(found.group(0), f'{found.group(0)} data-full-viewbox="{_text(full)}"', 1)
    focus = _view(finding, boxes)
    head = (f'<svg width="{focus[2] - focus[0]:.0f}pt" height="{focus[3] - focus[1]:.0f}pt"')
    svg = _SIZE.sub(head, svg, count=1)
    svg = svg.replace(found.group(0), f'viewBox="{_text(focus)}" data-full-viewbox="{_text(full)}" '
                      f'data-focus-viewbox="{_text(focus)}"', 1)
    links = (
        f'<view id="whole" viewBox="{_text(full)}"/><view id="finding" viewBox="{_text(focus)}"/>\n'
        f'<a class="fc-svg-only" href="#whole"><text x="{focus[0] + 8:.2f}" y="{focus[1] + 18:.2f}" '
        'font-family="Helvetica,sans-serif" font-size="14" fill="#2166ac" text-decoration="underline">'
        "show the whole graph</text></a>\n"
        f'<a class="fc-svg-only" href="#finding"><text x="{full[0] + 8:.2f}" y="{full[1] + 18:.2f}" '
        'font-family="Helvetica,sans-serif" font-size="14" fill="#2166ac" text-decoration="underline">'
        "back to the finding</text></a>\n"
    )
    end = svg.rfind("</svg>")
    return svg[:end] + links + svg[end:]
