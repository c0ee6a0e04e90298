"""The result users hold: ``flowcheck.analyze(...)`` returns a :class:`Report`.

It ties the stages together (trace -> graph -> analysis) and keeps what verification and
rendering need. Only the barriers that are reported have their tracebacks read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from types import MappingProxyType
from typing import Any

import networkx as nx

from flowcheck import _distributed
from flowcheck._analysis import BarrierKind, Verdict, blocking_barriers, gradient_errors, reach, verdicts
from flowcheck._model import Barrier, VariableResult
from flowcheck._sites import GradientSite
from flowcheck._source import op_source
from flowcheck.errors import TraceError, VariableNotFoundError

__all__ = ["Barrier", "Report", "VariableResult", "analyze"]

# What to do about ``Report.gradient_errors``, said the same way by every output.
GRADIENT_ERROR_ADVICE = (
    "a gradient reaches these ops and they have none; if a result is meant as a constant, wrap the "
    "result in tf.stop_gradient (not the input: a gradient still reaches the op)"
)


class Report:
    """Which variables of a traced function receive a gradient, and why the others do not.

    Attributes:
        target: The analyzed function's name.
        target_kind: ``"tf.function"``, ``"callable"`` (wrapped in tf.function) or ``"keras model"``.
        variables: One result per variable, in a stable order.
        losses: The names of the differentiated outputs.
        notes: Things worth knowing about how the function was read.
        gradient_errors: Ops with no registered gradient that a gradient reaches: differentiating
            the loss raises ``LookupError: No gradient defined for operation ...`` at each (the
            step fails; if the op's result is meant as a constant, wrap the result in ``tf.stop_gradient``).
        gradient_sites: For a training step (it asks for gradients itself, or a Keras model's
            ``train_step``), each gradient call judged by its own tape; ``losses`` are their targets.
        never_trained: Trainable variables a site's tape would give a gradient that no site lists.
        other_state: How many variables a step reads that ``variables`` leaves out (optimizer, metrics).
        graph: The gradient-annotated graph (see ``flowcheck._graph``).
    """

    def __init__(
        self, traced: Any, graph: nx.DiGraph, variables: tuple[VariableResult, ...], notes: tuple[str, ...],
        gradient_errors: tuple[Barrier, ...] = (), gradient_sites: tuple[Any, ...] = (),
        never_trained: tuple[VariableResult, ...] = (),
    ) -> None:
        self._traced = traced
        self.graph = graph
        self.target: str = getattr(traced.function, "__name__", None) or str(getattr(traced.function, "name", "function"))
        self.target_kind: str = traced.target_kind
        self.variables = variables
        self.losses: tuple[str, ...] = tuple(loss.name for loss in traced.losses)
        self.notes = notes
        self.gradient_errors = gradient_errors
        self.gradient_sites: tuple[GradientSite, ...] = gradient_sites
        self.never_trained = never_trained
        self.other_state = 0
        self._everything = variables  # for a step: also the state left out of ``variables``
        self.verification: Any = None

    def __repr__(self) -> str:
        counts = {v: sum(r.verdict is v for r in self.variables) for v in Verdict}
        return f"<flowcheck.Report {self.target}: " + ", ".join(f"{n} {v.value}" for v, n in counts.items()) + ">"

    def result(self, variable: Any) -> VariableResult:
        """The result for a variable given as the object (tf or Keras) or its name.

        A variable made under a ``tf.distribute`` strategy may also be given as any of its
        per-replica components or their names (``head/replica_1``).

        A variable object the traced function never reads is *unused*, even when flowcheck could
        not list it in advance.

        Raises:
            VariableNotFoundError: no variable has that name, a name is ambiguous, or the
                argument is not a variable.
        """
        if isinstance(variable, str):
            matches = [r for r in self.variables if variable in (r.name, r.name.split(":")[0], *self._replicas(r))]
            if len(matches) == 1:
                return matches[0]
            if matches:
                raise VariableNotFoundError(f"{len(matches)} variables are named {variable!r}; pass the variable itself")
            names = ", ".join(r.name for r in self.variables)
            raise VariableNotFoundError(f"no variable named {variable!r} in this report; it has: {names}")
        # The object itself, a Keras variable's backing tf.Variable, a replica's component's owner.
        for wanted in (variable, getattr(variable, "_value", None), _distributed.container(variable)):
            for r in self._everything:  # a step's state left out of variables included
                if wanted is not None and (wanted is r.variable or wanted is self._traced.variables[_index(r)].tf_variable):
                    return r
        variable = _distributed.container(variable)
        if _is_variable(variable):
            # Never read by the traced function: no gradient can reach it.
            name = str(getattr(variable, "path", None) or getattr(variable, "name", "variable")).split(":")[0]
            return VariableResult(
                name=name, verdict=Verdict.UNUSED, barriers=(), shape=tuple(variable.shape),
                dtype=str(getattr(variable.dtype, "name", variable.dtype)), trainable=bool(variable.trainable),
                per_loss=MappingProxyType(dict.fromkeys(self.losses, Verdict.UNUSED)), variable=variable,
                node="",
            )
        raise VariableNotFoundError(f"{variable!r} is not a variable or a variable's name")

    def _replicas(self, result: VariableResult) -> tuple[str, ...]:
        # A distributed variable's other replicas' names (``head/replica_1``) name it too.
        return _distributed.names(self._traced.variables[_index(result)].tf_variable)[1:]

    def receives_gradient(self, variable: Any, loss: str | None = None) -> bool:
        """Whether a gradient reaches ``variable`` from the loss (or from the output ``loss`` alone)."""
        r = self.result(variable)
        if loss is None:
            return r.receives
        if loss not in r.per_loss:
            raise VariableNotFoundError(f"no loss named {loss!r}; the losses are: {', '.join(self.losses)}")
        return r.per_loss[loss] is Verdict.RECEIVES

    def by_verdict(self, verdict: Verdict | str) -> tuple[VariableResult, ...]:
        """The results with the given verdict."""
        wanted = Verdict(verdict)
        return tuple(r for r in self.variables if r.verdict is wanted)

    def verify(self, optimizer: Any = None, learning_rate: float | None = None) -> Any:
        """Run one real optimizer step, compare with the prediction, restore every variable.

        A step with gradient sites is run itself, once, with its own optimizer (the arguments unused).

        Args:
            optimizer: ``"sgd"`` (default), ``"adam"``, a Keras optimizer class, or an instance
                (copied from its config; the instance itself is never stepped).
            learning_rate: Overrides the optimizer's learning rate.

        Returns:
            A :class:`flowcheck.Verification`; its ``agrees`` is True when the tape confirms
            every verdict. It is also kept as ``report.verification``.
        """
        from flowcheck._step_state import global_seed_generator_kept

        with global_seed_generator_kept():
            self.verification = self._verify(optimizer, learning_rate)
        return self.verification

    def _verify(self, optimizer: Any, learning_rate: float | None) -> Any:
        if self.gradient_sites:
            from flowcheck._step_verify import verify_step

            # Traced and eager answers differ only at control flow: without it the cheaper eager run serves.
            control_flow = any(c["kind"] != "function" for c in self.graph.graph["clusters"].values())
            return verify_step(self._traced, self.gradient_sites, control_flow=control_flow)
        from flowcheck._verify import run_step

        return run_step(
            self._traced, [r.receives for r in self.variables], optimizer, learning_rate,
            expect_error=bool(self.gradient_errors),
        )

    def to_dot(self, detail: str = "collapsed", focus: Any = None) -> str:
        """The gradient-flow diagram as Graphviz DOT source (needs no Graphviz).

        Args:
            detail: ``"collapsed"`` (default) draws one node per Keras layer or name scope, folds
                repeated layers, keeps within a node budget, and draws single ops only on the
                paths that explain a blocked variable; ``"ops"`` draws every op.
            focus: Variables (objects or names): draw only the ops between them and the loss.

        Raises:
            RenderError: ``detail`` is unknown.
            VariableNotFoundError: a ``focus`` entry is not a variable of this report.
        """
        from flowcheck.render import format_dot

        return format_dot(self._drawing(detail, focus))

    def _drawing(self, detail: str, focus: Any) -> Any:
        from flowcheck.render import layout, op_sources

        nodes = None if focus is None else [
            r.node for r in (self.result(v) for v in ([focus] if isinstance(focus, str) else focus)) if r.node
        ]
        counts = ", ".join(f"{sum(r.verdict is v for r in self.variables)} {v.value}" for v in Verdict)
        return layout(
            self.graph, self.variables, detail=detail, focus=nodes, verification=self.verification,
            sources=op_sources(self.graph), title=f"{self.target} ({self.target_kind}): {counts}",
        )

    def svg(self, detail: str = "collapsed", focus: Any = None, timeout: float | None = None) -> str:
        """The diagram as SVG text, drawn by Graphviz ``dot`` (arguments as for :meth:`to_dot`).

        A diagram bigger than a screen opens on the first barrier and its blame path; the whole
        graph is its ``#whole`` view (and the HTML report's "fit" button).

        Raises:
            ExecutableNotFoundError: Graphviz ``dot`` is not installed.
            RenderError: ``dot`` failed or took longer than ``timeout`` seconds (default 120).
        """
        from flowcheck._rendering import render_svg
        from flowcheck.render import format_dot
        from flowcheck.render.svg import open_on

        drawing = self._drawing(detail, focus)
        text = render_svg(format_dot(drawing)) if timeout is None else render_svg(format_dot(drawing), timeout)
        return open_on(text, drawing.focus)

    def save(
        self, path: Any, detail: str = "collapsed", focus: Any = None, *, written_by: str = "api",
        timeout: float | None = None,
    ) -> Any:
        """Write the report as ``.svg``, ``.html`` (self-contained), ``.dot`` or ``.me.json``, by the suffix.

        ``.me.json`` is Google Model Explorer's graph JSON (every op, namespaces from the Keras
        layer paths, the blame paths as an edge overlay); its node-data overlay (verdicts and
        barriers) goes beside it, in ``NAME.nodedata.json``.

        Args:
            path: Where to write.
            detail: As for :meth:`to_dot`.
            focus: As for :meth:`to_dot`.
            written_by: Who writes it, for the texts that tell the reader what to do:
                ``"api"``, ``"cli"``, ``"keras"`` (the Keras callback) or ``"pytest"`` (the plugin).
            timeout: Give up on Graphviz ``dot`` after this many seconds (default 120).

        Returns:
            The written file's ``pathlib.Path``.

        Raises:
            RenderError: the suffix is not one of those, the file cannot be written, or ``dot``
                failed or took too long.
            ExecutableNotFoundError: ``.svg`` or ``.html`` was asked and ``dot`` is not installed.
        """
        from flowcheck._rendering import save

        return save(self, path, detail=detail, focus=focus, written_by=written_by, timeout=timeout)

    def _html(self, detail: str, focus: Any, fragment: bool, written_by: str = "api", timeout: float | None = None) -> str:
        from flowcheck.render.html import to_html

        return to_html(
            self.svg(detail=detail, focus=focus, timeout=timeout), self.variables,
            title=f"flowcheck: {self.target} ({self.target_kind})", verification=self.verification, notes=self.notes,
            losses=self.losses, fragment=fragment, gradient_errors=self.gradient_errors, written_by=written_by,
        )

    def _repr_svg_(self) -> str:
        """Jupyter's picture of the report: the collapsed diagram."""
        return self.svg()

    def _repr_html_(self) -> str:
        """Jupyter's rich view: diagram with pan and zoom, table, verification."""
        return self._html("collapsed", None, fragment=True)


def _is_variable(value: Any) -> bool:
    return all(hasattr(value, a) for a in ("shape", "dtype", "trainable", "assign"))


def _index(result: VariableResult) -> int:
    return int(result.node.split(":", 1)[1])


def analyze(fn: Any, *args: Any, **kwargs: Any) -> Report:
    """Trace ``fn(*args, **kwargs)`` and predict which variables receive a gradient from it.

    Args:
        fn: A ``tf.function``, a plain callable (wrapped in ``tf.function``) or a compiled Keras
            model (then ``args`` are ``x, y``: its training step is analyzed).
        *args: Example inputs, as for calling ``fn``.
        **kwargs: Keyword inputs, as for calling ``fn``.

    Returns:
        A :class:`Report`.

    Raises:
        FlowcheckError: a subclass saying what is wrong with ``fn`` or its result.
    """
    from flowcheck._step_state import global_seed_generator_kept

    with global_seed_generator_kept():
        return _analyze(fn, args, kwargs)


def _analyze(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Report:
    from flowcheck._gradients import GradientOracle
    from flowcheck._graph import build_graph, collector_paused
    from flowcheck._trace import is_plain_callable, trace

    try:
        traced = trace(fn, args, kwargs)
    except TraceError as exc:
        if not is_plain_callable(fn):
            raise
        from flowcheck._eager import eager_only_report

        return eager_only_report(fn, args, kwargs, exc)  # a NumPy round trip: judged from its eager call alone
    oracle = GradientOracle()
    with collector_paused():
        graph = build_graph(traced, oracle)
        traced.notes.extend(
            f"could not ask the gradient of {what}; assumed it passes the gradient" for what in oracle.uncertain
        )
        return _report(traced, graph)


def _report(traced: Any, graph: nx.DiGraph) -> Report:
    from flowcheck import _steps  # a training step's gradient sites (TensorFlow is loaded by now)

    if traced.step:
        _steps.attach_targets(graph, traced)
        graph.graph["step"] = True
    var_nodes: list[str] = graph.graph["variables"]
    loss_nodes: list[str] = graph.graph["losses"]
    reached = reach(graph, loss_nodes)  # read once by the verdicts, barriers and errors
    total = verdicts(graph, var_nodes, loss_nodes, reached=reached)
    per_loss = {
        name: verdicts(graph, var_nodes, [node]) if len(loss_nodes) > 1 else total
        for name, node in zip((loss.name for loss in traced.losses), loss_nodes)
    }
    cuts = blocking_barriers(graph, var_nodes, loss_nodes, verdict=total, reached=reached)
    barrier_cache: dict[tuple[str, str], Barrier] = {}
    results = []
    for node, var in zip(var_nodes, traced.variables):
        barriers = _one_per_replica(_barrier(graph, edge, barrier_cache) for edge in cuts.get(node, ()))
        results.append(
            VariableResult(
                name=var.name, verdict=total[node], barriers=barriers, shape=var.shape, dtype=var.dtype,
                trainable=var.trainable, per_loss=MappingProxyType({n: v[node] for n, v in per_loss.items()}),
                variable=var.variable, node=node, watched_by_default=var.watched_by_default,
            )
        )
    erring = gradient_errors(graph, loss_nodes, receiving=reached[1])
    errors = _one_per_replica(_barrier(graph, edge, barrier_cache) for edge in erring)
    notes = list(traced.notes)
    judged: tuple[VariableResult, ...] = tuple(results)
    if traced.python_function is not None:  # a plain callable: the tape's answer as the user calls it
        from flowcheck._eager import as_called, run_eagerly

        fn = traced.python_function
        run = run_eagerly(fn, traced.args, traced.kwargs, traced.variables, str(getattr(fn, "__name__", "function")))
        judged = as_called(judged, graph, run)
    if len(traced.losses) > 1 and not traced.step:
        # Users who check with a tape around the whole call see zeros and think the report is wrong.
        notes.append(
            f"{len(traced.losses)} losses ({', '.join(l.name for l in traced.losses)}): a per-loss verdict is "
            "what a tape gives when that loss alone is differentiated inside the step; a tape around "
            "one call returning all of them gives zeros, not None, to variables only another loss uses"
        )
    sites, never, listed = _steps.step_findings(traced, graph, list(judged), _barrier) if traced.step else ((), (), judged)
    if traced.step and traced.target_kind == "callable":  # a plain function: as its eager call answers
        from flowcheck._eager_sites import as_called_sites

        sites = as_called_sites(traced, graph, sites)
    report = Report(traced, graph, tuple(listed), tuple(notes), errors, gradient_sites=sites, never_trained=never)
    report.other_state, report._everything = len(judged) - len(listed), judged
    return report


def _one_per_replica(barriers: Iterable[Barrier]) -> tuple[Barrier, ...]:
    # Under a distribution strategy each replica has its own copy of an op ("replica_1/...").
    seen: set[tuple[Any, ...]] = set()
    kept = []
    for b in barriers:
        # A variable read in cross-replica context is read once per component, each its own op.
        name = "" if b.kind is BarrierKind.NOT_WATCHED else _REPLICA.sub("", b.op_name)
        key = (b.kind, b.op_type, name, b.source)
        if key not in seen:
            seen.add(key)
            kept.append(b)
    return tuple(kept)


_REPLICA = re.compile(r"^replica_\d+/")


def _barrier(graph: nx.DiGraph, edge: tuple[str, str], cache: dict[tuple[str, str], Barrier]) -> Barrier:
    found = cache.get(edge)
    if found is not None:
        return found
    u, w = edge
    data = graph.edges[u, w]
    attrs = graph.nodes[w]
    op = attrs.get("op")
    source, via_library = op_source(op) if op is not None else (None, True)
    barrier = Barrier(
        op_name=str(attrs.get("name", w)), op_type=str(attrs.get("op_type", attrs.get("kind", ""))),
        kind=BarrierKind(data["kind"]), detail=str(data.get("detail") or BarrierKind(data["kind"]).label),
        tensor=str(data.get("tensor", "")), source=source, in_user_code=source is not None and not via_library,
        node=w,
    )
    cache[edge] = barrier
    return barrier
