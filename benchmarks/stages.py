"""Where the time of one ``flowcheck.analyze`` call goes: TensorFlow's tracing against flowcheck's own work.

:class:`StageClock` clocks every ``get_concrete_function`` call inside ``flowcheck.analyze`` (the
trace: TensorFlow running the user's code into a graph) and counts the rest as flowcheck's own
work, as the issue measures it, split into the stages it runs: the bookkeeping of stage 1 around
the trace (``flowcheck.trace.target.trace`` minus the trace itself: mapping variables, recording gradient
calls), the graph build (``flowcheck.graph.build.build_graph``, the gradient oracle included), the
analysis (``flowcheck._api.build_report``: verdicts, barriers, lines) and the rest of ``analyze``
(among it the collection Python's garbage collector makes of what the paused stages allocated).
The op callback flowcheck keeps while tracing (``flowcheck.source.positions``) runs inside
``get_concrete_function`` and so counts as trace. Process CPU time and wall-clock time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["StageClock"]

STAGES = ("trace", "trace_rest", "graph", "analysis", "other", "own")


class StageClock:
    """Within ``with clock:``, the stages of every ``flowcheck.analyze`` call are clocked.

    ``clock.analyze(case)`` runs one analysis and returns ``(report, {"cpu": {...}, "wall": {...}})``
    with, per clock, the seconds of each of :data:`STAGES`: ``trace`` (``get_concrete_function``),
    ``trace_rest``, ``graph``, ``analysis``, ``other`` and ``own`` (all but ``trace``).
    """

    def __init__(self) -> None:
        self._spent: dict[str, list[float]] = {}
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> StageClock:
        import flowcheck.graph.build
        import flowcheck._api
        import flowcheck.trace.target
        from tensorflow.python.eager.polymorphic_function import polymorphic_function

        self._wrap(flowcheck.trace.target, "trace", "stage1")
        self._wrap(flowcheck.graph.build, "build_graph", "graph")
        self._wrap(flowcheck._api, "build_report", "analysis")
        self._wrap(polymorphic_function.Function, "get_concrete_function", "trace")
        return self

    def __exit__(self, *exc: object) -> None:
        while self._undo:
            self._undo.pop()()

    def _wrap(self, owner: Any, name: str, stage: str) -> None:
        original = getattr(owner, name)
        depth = [0]  # a nested call (a tf.function traced inside the trace) is inside the outer one

        def clocked(*args: Any, **kwargs: Any) -> Any:
            depth[0] += 1
            cpu, wall = time.process_time(), time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent = self._spent.setdefault(stage, [0.0, 0.0])
                    spent[0] += time.process_time() - cpu
                    spent[1] += time.perf_counter() - wall

        setattr(owner, name, clocked)
        self._undo.append(lambda: setattr(owner, name, original))

    def analyze(self, case: Any) -> tuple[Any, dict[str, dict[str, float]]]:
        """``flowcheck.analyze(case.loss_fn, *case.args)``, clocked (inside ``with self``)."""
        import flowcheck

        self._spent.clear()
        cpu, wall = time.process_time(), time.perf_counter()
        report = flowcheck.analyze(case.loss_fn, *case.args)
        total = (time.process_time() - cpu, time.perf_counter() - wall)
        figures: dict[str, dict[str, float]] = {}
        for i, clock in enumerate(("cpu", "wall")):
            spent = {stage: self._spent.get(stage, [0.0, 0.0])[i] for stage in ("stage1", "trace", "graph", "analysis")}
            figures[clock] = {
                "trace": spent["trace"],
                "trace_rest": spent["stage1"] - spent["trace"],
                "graph": spent["graph"],
                "analysis": spent["analysis"],
                "other": total[i] - spent["stage1"] - spent["graph"] - spent["analysis"],
                "own": total[i] - spent["trace"],
            }
        return report, figures
