"""The result users hold: ``flowcheck.analyze(...)`` (:mod:`flowcheck._api`) returns a :class:`Report`.

Queries over the analysis (``result``, ``receives_gradient``, ``by_verdict``), and the doors to
the later stages: :meth:`Report.verify` (stage 5) and the drawings (stage 4, :mod:`flowcheck.render`),
imported when asked for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import networkx as nx

from flowcheck._model import Barrier, VariableResult, Verdict
from flowcheck._phrases import counts_text
from flowcheck.analysis.barriers import barrier, one_per_replica
from flowcheck.analysis.verdicts import Analysis, analyze_graph
from flowcheck.errors import VariableNotFoundError
from flowcheck.trace import distributed as _distributed
from flowcheck.trace.sites import GradientSite

if TYPE_CHECKING:
    from flowcheck.render.model import Drawing
    from flowcheck.verify.loss import Verification

__all__ = ["Barrier", "Report", "VariableResult"]



class Report:
    """Which variables of a traced function receive a gradient, and why the others do not.

    Attributes:
        target: The analyzed function's name.
        target_kind: ``"tf.function"``, ``"callable"`` (wrapped in tf.function) or ``"keras model"``.
        variables: One result per variable, in a stable order.
        losses: The names of the differentiated outputs.
        notes: Things worth knowing about how the function was read.
        gradient_errors: Ops with no registered gradient (or one that refuses the op's settings, as
            QR of full matrices) that a gradient reaches: differentiating the loss raises
            ``LookupError: No gradient defined for operation ...`` (or the refusal's error) at each (the
            step fails; if the op's result is meant as a constant, wrap the result in ``tf.stop_gradient``).
        gradient_sites: For a training step (it asks for gradients itself, or a Keras model's
            ``train_step``), each gradient call judged by its own tape; ``losses`` are their targets.
        never_trained: Trainable variables a site's tape would give a gradient that no site lists.
        other_state: How many variables a step reads that ``variables`` leaves out (optimizer, metrics).
        graph: The gradient-annotated graph (see ``flowcheck.graph.build``).
    """

    def __init__(
        self, traced: Any, graph: nx.DiGraph, variables: tuple[VariableResult, ...], notes: tuple[str, ...],
        gradient_errors: tuple[Barrier, ...] = (), gradient_sites: tuple[Any, ...] = (),
        never_trained: tuple[VariableResult, ...] = (), analysis: Analysis | None = None,
        barriers: dict[tuple[str, str], Barrier] | None = None,
    ) -> None:
        self._traced = traced
        self.graph = graph
        self.target: str = traced.name or getattr(traced.function, "__name__", None) or str(
            getattr(traced.function, "name", "function"))
        self.target_kind: str = traced.target_kind
        self.variables = variables
        self.losses: tuple[str, ...] = tuple(loss.name for loss in traced.losses)
        self.notes = notes
        self.gradient_errors = gradient_errors
        self.gradient_sites: tuple[GradientSite, ...] = gradient_sites
        self.never_trained = never_trained
        self.other_state = 0
        self._everything = variables  # for a step: also the state left out of ``variables``
        self.verification: Verification | None = None
        self._analysis = analysis
        self._barriers = {} if barriers is None else barriers  # one Barrier per cut edge, its line read once

    @property
    def analysis(self) -> Analysis:
        """The graph's analysis (verdicts, cuts, gradient errors): computed once, read by every output."""
        if self._analysis is None:
            self._analysis = analyze_graph(self.graph)
        return self._analysis

    def barriers_for(self, results: Sequence[VariableResult], loss: str | None = None) -> dict[int, tuple[Barrier, ...]]:
        """The barriers of ``results`` (keyed by ``id`` of each user's variable), with respect to ``loss`` alone when given."""
        if loss is None or len(self.losses) == 1:
            return {id(r.variable): r.barriers for r in results}
        cuts = self.analysis.cuts_for(self.graph.graph["losses"][self.losses.index(loss)])
        return {
            id(r.variable): one_per_replica(barrier(self.graph, e, self._barriers) for e in cuts.get(r.node, ()))
            for r in results
        }

    @property
    def frozen_state(self) -> tuple[VariableResult, ...]:
        """The other state (:attr:`other_state`) that is frozen weights: a frozen Keras layer's, ``trainable=False``.

        A default tape would watch them (their ``tf.Variable`` s stay trainable), but Keras's train_step
        does not ask for them; optimizer, metric and BatchNorm-statistic state is not watched at all.
        """
        listed = {r.node for r in self.variables}
        return tuple(r for r in self._everything if r.node not in listed and not r.trainable and r.watched_by_default)

    def __repr__(self) -> str:
        return f"<flowcheck.Report {self.target}: {counts_text(self.variables)}>"

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

    def verify(self, optimizer: Any = None, learning_rate: float | None = None) -> Verification:
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
        from flowcheck.trace.state import global_seed_generator_kept

        with global_seed_generator_kept():
            self.verification = self._verify(optimizer, learning_rate)
        return self.verification

    def _verify(self, optimizer: Any, learning_rate: float | None) -> Verification:
        if self.gradient_sites:
            from flowcheck.verify.step import verify_step

            # Traced and eager answers differ only at control flow: without it the cheaper eager run serves.
            control_flow = any(c["kind"] != "function" for c in self.graph.graph["clusters"].values())
            return verify_step(self._traced, self.gradient_sites, control_flow=control_flow)
        from flowcheck.verify.loss import run_step

        return run_step(
            self._traced, [r.receives for r in self.variables], optimizer, learning_rate,
            expect_error=bool(self.gradient_errors),
        )

    def summary(self) -> str:
        """The plain-text summary ``flowcheck analyze`` prints, with the real step's check once :meth:`verify` ran."""
        from flowcheck.outputs.text import format_summary

        return format_summary(self, self.verification)

    def to_json(self) -> dict[str, Any]:
        """The JSON document ``flowcheck analyze --json`` prints (its schema: ``flowcheck.outputs.text``),
        with the real step's check once :meth:`verify` ran."""
        from flowcheck.outputs.text import to_json

        return to_json(self, self.verification)

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

    def _drawing(self, detail: str, focus: Any) -> Drawing:
        from flowcheck.render import layout, op_sources

        nodes = None if focus is None else [
            r.node for r in (self.result(v) for v in ([focus] if isinstance(focus, str) else focus)) if r.node
        ]
        return layout(
            self.graph, self.variables, detail=detail, focus=nodes, verification=self.verification,
            sources=op_sources(self.graph), title=f"{self.target} ({self.target_kind}): {counts_text(self.variables)}",
            analysis=self.analysis,
        )

    def svg(self, detail: str = "collapsed", focus: Any = None, timeout: float | None = None) -> str:
        """The diagram as SVG text, drawn by Graphviz ``dot`` (arguments as for :meth:`to_dot`).

        A diagram bigger than a screen opens on the first barrier and its blame path; the whole
        graph is its ``#whole`` view (and the HTML report's "fit" button).

        Raises:
            ExecutableNotFoundError: Graphviz ``dot`` is not installed.
            RenderError: ``dot`` failed or took longer than ``timeout`` seconds (default 120).
        """
        from flowcheck.render import format_dot
        from flowcheck.render.graphviz import render_svg
        from flowcheck.render.svg import open_on

        drawing = self._drawing(detail, focus)
        text = render_svg(format_dot(drawing)) if timeout is None else render_svg(format_dot(drawing), timeout)
        return open_on(text, drawing.focus)

    def save(
        self, path: str | os.PathLike[str], detail: str = "collapsed", focus: Any = None, *, written_by: str = "api",
        timeout: float | None = None,
    ) -> Path:
        """Write the report as ``.svg``, ``.html`` (self-contained), ``.dot``, ``.me.json`` or ``.json``, by the suffix.

        ``.json`` is :meth:`to_json`'s document, as ``flowcheck analyze -o report.json`` writes it.

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
        from flowcheck.render.graphviz import save

        if not isinstance(path, (str, os.PathLike)):
            from flowcheck.errors import UsageError

            raise UsageError(f"path must be a str or pathlib.Path, not {type(path).__name__}")
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
