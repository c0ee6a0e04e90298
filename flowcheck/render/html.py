"""The self-contained HTML report: the diagram inline, pan and zoom, a sortable variable table.

Pure string work: the SVG comes in as text (from :mod:`flowcheck.render.graphviz`), the page goes out
as text. The page loads nothing from the network: its style and script are inline. Clicking a row
of the table highlights that variable in the diagram, whose node has the SVG id ``var-<index>``
(see :func:`flowcheck.render.model.svg_id`); clicking a variable in the diagram selects its row.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from html import escape
from typing import Any, Final

from flowcheck._model import Verdict
from flowcheck._phrases import GRADIENT_ERROR_ADVICE, disagreement, verdict_counts
from flowcheck.errors import RenderError
from flowcheck.render.model import svg_id

__all__ = ["UNVERIFIED", "to_html"]

UNVERIFIED: Final = {
    "api": "Not verified: call <code>report.verify()</code> before saving to check the prediction with one real optimizer step.",
    "cli": "Not verified (<code>--no-verify</code>): run <code>flowcheck analyze</code> without it to check the "
           "prediction with one real optimizer step.",
    "keras": "Not verified: <code>GradientFlowCheck(verify=True)</code> also checks the prediction with one real "
             "optimizer step on the sample batch.",
    "pytest": "Not verified in this report: the test's failure message says what the gradient-flow assertion found.",
}
"""What the page says when no real step was run, by who wrote it."""

_STYLE: Final = """
.flowcheck-report{font-family:Helvetica,Arial,sans-serif;color:#1a1a1a;max-width:100%}
.flowcheck-report h1{font-size:1.4em;margin:.2em 0}
.flowcheck-report h2{font-size:1.1em;margin:1em 0 .4em}
.flowcheck-report .fc-badge{display:inline-block;padding:.15em .6em;border-radius:1em;margin-right:.4em;font-weight:bold;font-size:.9em}
.flowcheck-report .fc-receives{background:#d9f0d3;color:#1b7837}
.flowcheck-report .fc-blocked{background:#fddbc7;color:#b2182b}
.flowcheck-report .fc-unused{background:#e8e8e8;color:#4d4d4d}
.flowcheck-report .fc-ok{color:#1b7837;font-weight:bold}
.flowcheck-report .fc-bad{color:#b2182b;font-weight:bold}
.flowcheck-report .fc-errors{border-left:4px solid #b2182b;padding:.1em 1em;background:#fdf0f0}
.flowcheck-report .fc-diagram{position:relative;border:1px solid #bbb;border-radius:4px;height:70vh;min-height:320px;overflow:hidden;background:#fff;cursor:grab;touch-action:none}
.flowcheck-report .fc-diagram.fc-dragging{cursor:grabbing}
.flowcheck-report .fc-diagram svg{width:100%;height:100%;display:block}
.flowcheck-report .fc-controls{position:absolute;top:6px;right:6px;z-index:2}
.flowcheck-report .fc-controls button{font-size:14px;min-width:2em;margin-left:2px;cursor:pointer}
.flowcheck-report .fc-hint{color:#666;font-size:.85em;margin:.3em 0}
.flowcheck-report table{border-collapse:collapse;width:100%;font-size:.9em}
.flowcheck-report th,.flowcheck-report td{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
.flowcheck-report th{background:#f2f2f2;cursor:pointer;user-select:none;white-space:nowrap}
.flowcheck-report th[aria-sort=ascending]::after{content:" \\25B2"}
.flowcheck-report th[aria-sort=descending]::after{content:" \\25BC"}
.flowcheck-report tbody tr{cursor:pointer}
.flowcheck-report tbody tr:hover{background:#f7f7ff}
.flowcheck-report tbody tr.fc-selected{background:#fff2b3}
.flowcheck-report code{font-size:.95em}
.flowcheck-report .fc-hl path,.flowcheck-report .fc-hl polygon,.flowcheck-report .fc-hl ellipse{stroke:#7b2cbf !important;stroke-width:6px !important}
.flowcheck-report .fc-hl text{font-weight:bold}
"""

# Pan (drag), zoom (wheel, buttons) by rewriting the SVG viewBox; row <-> node selection.
_SCRIPT: Final = """
(function(){
var root=document.getElementById(%(root)s);if(!root)return;
var box=root.querySelector('.fc-diagram'),svg=box&&box.querySelector('svg');
var vb=null,full=null;
if(svg){
 function parse(a){var v=svg.getAttribute(a);if(!v)return null;var p=v.trim().split(/\\s+/).map(Number);
  return {x:p[0],y:p[1],w:p[2],h:p[3]};}
 var b=svg.viewBox.baseVal;full=parse('data-full-viewbox')||{x:b.x,y:b.y,w:b.width,h:b.height};
 var focus=parse('data-focus-viewbox');
 svg.removeAttribute('width');svg.removeAttribute('height');
 svg.setAttribute('preserveAspectRatio','xMidYMid meet');
 function set(v){vb=v;svg.setAttribute('viewBox',v.x+' '+v.y+' '+v.w+' '+v.h);}
 function show(t){var r=box.getBoundingClientRect(),s=Math.max(t.w/r.width,t.h/r.height,1e-9);
  var w=r.width*s,h=r.height*s;set({x:t.x-(w-t.w)/2,y:t.y-(h-t.h)/2,w:w,h:h});}
 function fit(){show(full);}
 function scale(){var r=box.getBoundingClientRect();return vb.w/r.width;}
 function zoom(f,cx,cy){var r=box.getBoundingClientRect();if(cx===undefined){cx=r.width/2;cy=r.height/2;}
  var s=scale(),px=vb.x+cx*s,py=vb.y+cy*s,w=vb.w*f,h=vb.h*f;
  set({x:px-(px-vb.x)*f,y:py-(py-vb.y)*f,w:w,h:h});}
 root.fcCenter=function(el){var r=box.getBoundingClientRect(),e=el.getBoundingClientRect(),s=scale();
  var px=vb.x+(e.left+e.width/2-r.left)*s,py=vb.y+(e.top+e.height/2-r.top)*s,w=vb.w,h=vb.h;
  if(w>1200){var f=1200/w;w*=f;h*=f;}set({x:px-w/2,y:py-h/2,w:w,h:h});};
 box.addEventListener('wheel',function(e){e.preventDefault();var r=box.getBoundingClientRect();
  zoom(e.deltaY<0?0.8:1.25,e.clientX-r.left,e.clientY-r.top);},{passive:false});
 var drag=null;
 box.addEventListener('pointerdown',function(e){if(e.target.closest('button'))return;drag={x:e.clientX,y:e.clientY,v:vb};box.classList.add('fc-dragging');});
 window.addEventListener('pointermove',function(e){if(!drag)return;var s=scale();
  set({x:drag.v.x-(e.clientX-drag.x)*s,y:drag.v.y-(e.clientY-drag.y)*s,w:drag.v.w,h:drag.v.h});});
 window.addEventListener('pointerup',function(){drag=null;box.classList.remove('fc-dragging');});
 root.querySelector('.fc-zoom-in').onclick=function(){zoom(0.8);};
 root.querySelector('.fc-zoom-out').onclick=function(){zoom(1.25);};
 root.querySelector('.fc-fit').onclick=fit;
 // A diagram bigger than the screen opens on the finding (the first barrier and its blame path).
 if(focus)show(focus);else fit();
}
function select(id,center){
 root.querySelectorAll('.fc-hl').forEach(function(n){n.classList.remove('fc-hl');});
 root.querySelectorAll('tr.fc-selected').forEach(function(n){n.classList.remove('fc-selected');});
 var node=svg&&svg.querySelector('[id="'+id+'"]');
 if(node){node.classList.add('fc-hl');if(center&&root.fcCenter)root.fcCenter(node);}
 var row=root.querySelector('tr[data-node="'+id+'"]');if(row)row.classList.add('fc-selected');
 return row;
}
root.querySelectorAll('tbody tr[data-node]').forEach(function(row){
 row.addEventListener('click',function(){select(row.getAttribute('data-node'),true);});});
if(svg)svg.querySelectorAll('g.node.variable').forEach(function(n){
 n.addEventListener('click',function(){var row=select(n.id,false);if(row)row.scrollIntoView({block:'nearest'});});});
root.querySelectorAll('table.fc-sortable th').forEach(function(th,col){
 th.addEventListener('click',function(){var table=th.closest('table'),body=table.tBodies[0];
  var dir=th.getAttribute('aria-sort')==='ascending'?'descending':'ascending';
  table.querySelectorAll('th').forEach(function(h){h.removeAttribute('aria-sort');});th.setAttribute('aria-sort',dir);
  var rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){var x=a.cells[col].getAttribute('data-sort')||a.cells[col].textContent,
   y=b.cells[col].getAttribute('data-sort')||b.cells[col].textContent;
   var c=x.localeCompare(y,undefined,{numeric:true});return dir==='ascending'?c:-c;});
  rows.forEach(function(r){body.appendChild(r);});});});
})();
"""

_DIAGRAM_HEAD: Final = (
    "<h2>Gradient flow</h2>\n"
    '<p class="fc-hint">Drag to pan, scroll to zoom, "fit" for the whole graph (a big one opens on the first '
    'barrier). Hover a node for its details; click a row of the table to find its variable.</p>\n'
    '<div class="fc-diagram"><div class="fc-controls"><button type="button" class="fc-zoom-in" title="zoom in">+</button>'
    '<button type="button" class="fc-zoom-out" title="zoom out">&#8722;</button>'
    '<button type="button" class="fc-fit" title="fit the whole diagram">fit</button></div>'
)

_VERDICT_ORDER: Final = {Verdict.BLOCKED: "0", Verdict.RECEIVES: "1", Verdict.UNUSED: "2"}


def to_html(
    svg: str,
    variables: Sequence[Any],
    *,
    title: str,
    verification: Any = None,
    notes: Sequence[str] = (),
    losses: Sequence[str] = (),
    fragment: bool = False,
    gradient_errors: Sequence[Any] = (),
    written_by: str = "api",
) -> str:
    """The HTML report.

    Args:
        svg: The diagram, as rendered by ``dot`` (its XML prolog and doctype are dropped).
        variables: The report's :class:`flowcheck.VariableResult` records.
        title: The report's heading.
        verification: A :class:`flowcheck.Verification`, or ``None`` when none was run.
        notes: The report's notes.
        losses: The names of the differentiated outputs.
        fragment: Return a ``<div>`` for embedding (Jupyter) instead of a whole page.
        gradient_errors: The report's :class:`flowcheck.Barrier` records of ops at which
            differentiating the loss raises.
        written_by: ``api``, ``cli``, ``keras`` or ``pytest``: who writes the page, so that its
            texts tell that reader what to do (:data:`UNVERIFIED`).

    Returns:
        The HTML text; it loads nothing from the network.
    """
    inline_svg = _inline(svg)
    if written_by not in UNVERIFIED:
        raise RenderError(f"written_by must be one of {', '.join(map(repr, UNVERIFIED))}, not {written_by!r}")
    table = _table(variables, verification)
    root = "fc-" + hashlib.sha1((inline_svg + table + title).encode("utf-8")).hexdigest()[:10]
    body = [
        f'<div class="flowcheck-report" id="{root}">',
        f"<style>{_STYLE}</style>",
        f"<h1>{escape(title)}</h1>",
        _summary(variables, losses),
        _gradient_errors(gradient_errors),
        _verification(verification, UNVERIFIED[written_by]),
        _DIAGRAM_HEAD,
        inline_svg,
        "</div>",
        "<h2>Variables</h2>",
        '<p class="fc-hint">Click a column heading to sort.</p>',
        table,
    ]
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
    body += [f"<script>{_SCRIPT % {'root': repr(root)}}</script>", "</div>"]
    content = "\n".join(body)
    if fragment:
        return content
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escape(title)}</title>\n</head>\n<body>\n{content}\n</body>\n</html>\n"
    )


def _summary(variables: Sequence[Any], losses: Sequence[str]) -> str:
    badges = "".join(f'<span class="fc-badge fc-{v.value}">{n} {escape(v.value)}</span>' for v, n in verdict_counts(variables).items())
    loss_text = ", ".join(f"<code>{escape(n)}</code>" for n in losses)
    return f'<p class="fc-summary">{badges} variables; loss: {loss_text or "-"}</p>'


def _inline(svg: str) -> str:
    """The ``<svg>`` element alone, fit for inlining in HTML."""
    start = svg.find("<svg")
    if start < 0:
        return svg
    text = re.sub(r'<a class="fc-svg-only".*?</a>\n?', "", svg[start:], flags=re.S)  # the page has its own "fit"
    return re.sub(r"<!--.*?-->", "", text, flags=re.S).strip()


def _gradient_errors(errors: Sequence[Any]) -> str:
    if not errors:
        return ""
    return (
        '<div class="fc-errors"><h2>Gradient errors</h2><p>TensorFlow raises <code>LookupError</code> (no gradient '
        f"defined) when it differentiates the loss: {escape(GRADIENT_ERROR_ADVICE)}.</p><ul>"
        + "".join(f"<li>{_barrier(b)}</li>" for b in errors)
        + "</ul></div>"
    )


def _barrier(b: Any) -> str:
    return (
        f"<code>{escape(b.op_type)}</code>" + ("" if b.op_name == b.op_type else f" {escape(b.op_name)}") + f" ({escape(b.detail)})"
        + (f' at <code>{escape(str(b.source))}</code>' if b.source else "")
        + (f"<br><code>{escape(b.source.code)}</code>" if b.source and b.source.code else "")
    )


def _verification(check: Any, unverified: str) -> str:
    if check is None:
        return f'<p class="fc-verification">{unverified}</p>'
    verdict = '<span class="fc-ok">agrees</span>' if check.agrees else '<span class="fc-bad">DISAGREES</span>'
    if check.error is not None:
        said = "as predicted" if check.agrees else "which the analysis did not predict"
        return (
            f'<div class="fc-verification"><h2>Verification</h2><p>One real step with {escape(str(check.optimizer))}: '
            f"the tape {verdict}: it raised <code>{escape(check.error)}</code>, {said}.</p></div>"
        )
    parts = [
        f'<div class="fc-verification"><h2>Verification</h2><p>One real step with {escape(str(check.optimizer))}: '
        f"the tape {verdict} with the prediction for {len(check.variables) - len(check.disagreements)} of "
        f"{len(check.variables)} variables; loss {check.loss:.6g}.</p>",
    ]
    if check.disagreements:
        parts.append("<p>Disagreements:</p><ul>" + "".join(
            f"<li><code>{escape(c.name)}</code>: {escape(disagreement(c.predicted, c.gradient))}</li>"
            for c in check.disagreements
        ) + "</ul>")
    if check.problems:
        parts.append("<p>Problems:</p><ul>" + "".join(f"<li>{escape(p)}</li>" for p in check.problems) + "</ul>")
    parts.append("</div>")
    return "".join(parts)


def _table(variables: Sequence[Any], check: Any) -> str:
    checks = {c.name: c for c in getattr(check, "variables", ())}
    heads = ["Variable", "Shape", "dtype", "Trainable", "Verdict", "Barriers"]
    if check is not None:
        heads += ["Tape gradient", "Changed by the step", "Agrees"]
    rows = []
    for i, r in enumerate(variables):
        shape = "(" + ", ".join("?" if d is None else str(d) for d in r.shape) + ("," if len(r.shape) == 1 else "") + ")"
        barriers = "<br>".join(_barrier(b) for b in r.barriers)
        if r.eager_difference:
            barriers += ("<br>" if barriers else "") + f"called eagerly: {escape(r.eager_difference)}"
        cells = [
            f"<td><code>{escape(r.name)}</code></td>",
            f'<td data-sort="{_size(r.shape):020d}">{escape(shape)}</td>',
            f"<td>{escape(r.dtype)}</td>",
            f"<td>{'yes' if r.trainable else 'no'}</td>",
            f'<td data-sort="{_VERDICT_ORDER[r.verdict]}"><span class="fc-badge fc-{r.verdict.value}">{escape(r.verdict.value)}</span></td>',
            f"<td>{barriers}</td>",
        ]
        if check is not None:
            c = checks.get(r.name)
            if c is None:
                cells += ["<td>-</td>"] * 3
            else:
                agrees = '<span class="fc-ok">yes</span>' if c.agrees else '<span class="fc-bad">NO</span>'
                cells += [f"<td>{escape(str(c.gradient))}</td>", f"<td>{'yes' if c.changed else 'no'}</td>", f"<td>{agrees}</td>"]
        node = svg_id(r.node) if r.node else f"missing-{i}"
        rows.append(f'<tr data-node="{escape(node)}" class="fc-row-{r.verdict.value}">' + "".join(cells) + "</tr>")
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in heads)
    return f'<table class="fc-sortable fc-variables"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _size(shape: Sequence[int | None]) -> int:
    n = 1
    for d in shape:
        n *= d or 0
    return n
