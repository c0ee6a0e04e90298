"""The script's own first call of a traced step as its verification (``flowcheck run``).

The call runs the step's own trace, the concrete function its ``tf.function`` made and that the
real call would run, as a function that also returns each gradient call's targets and gradients:
the same ops and updates, so the script's first step happens once, exactly as it would, and
nothing needs restoring.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import tensorflow as tf

from flowcheck.trace.sites import GradientSite, RecordedCall
from flowcheck.trace.state import applied_optimizers
from flowcheck.verify.loss import Verification, loss_scale
from flowcheck.verify.step import match_calls, maybe_digest, verification_of

__all__ = ["FirstCall", "first_call"]


class FirstCall:
    """The verification that is the script's own first call of a traced step (``flowcheck run``).

    The call runs the step's own trace (the concrete function its ``tf.function`` made, that the
    real call would run) as a function that also returns each gradient call's targets and
    gradients: the same ops and updates, so the script's first step happens exactly as it would,
    once, and nothing is restored. Its answers are read from those extra outputs.
    """

    def __init__(self, traced: Any, sites: Sequence[GradientSite], calls: Sequence[RecordedCall]) -> None:
        from tensorflow.python.eager.polymorphic_function import atomic_function
        from tensorflow.python.framework import ops

        self.verification: Verification | None = None
        self.error: str | None = None
        self._traced, self._sites, self._calls = traced, tuple(sites), tuple(calls)
        self._extras = [t for c in calls for t in _graph_tensors(c)]
        graph = traced.concrete.graph
        outputs = list(graph.outputs)
        graph.outputs = outputs + self._extras  # read once, by the function made here
        try:
            name = f"{traced.concrete.name.decode()}_flowcheck_first_call_{ops.uid()}"
            self._function: Any = atomic_function.from_func_graph(name, graph, traced.concrete._attrs)  # noqa: SLF001
        finally:
            graph.outputs = outputs
        self._outputs = len(outputs)

    def call(self, original: Any, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The script's call ``fn(*args, **kwargs)``, made verifying the step (``original``: the unhooked call).

        Sets :attr:`verification`, or :attr:`error` when this call does not run the trace analyzed.
        """
        made = self._run(args, kwargs) if tf.executing_eagerly() else None
        if made is None:
            self.error = "not verified: the step's first call did not run the trace flowcheck analyzed"
            return original(fn, *args, **kwargs)
        result, self.verification = made
        return result

    def run_ahead(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Verification | None:
        """Run the step's own trace once now and put back every state it touched (``--continue``: the
        script's own call then makes its first step itself, and the step's Python does not run again:
        a ``print`` in it prints as often as without flowcheck). None when that trace cannot run now."""
        from flowcheck.verify.step import restoring

        with restoring(self._traced):
            made = self._run(args, kwargs, restored=True)
        return None if made is None else made[1]

    def _run(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], restored: bool = False,
    ) -> tuple[Any, Verification] | None:
        from tensorflow.python.ops import gradients_util

        concrete, function = self._traced.concrete, self._traced.function
        if function.get_concrete_function(*args, **kwargs).graph is not concrete.graph:
            return None
        args, kwargs = _canonical(function, args, kwargs)
        flat = concrete.function_type.unpack_inputs(concrete.function_type.bind(*args, **kwargs))
        inputs = [*flat, *concrete.captured_inputs]
        if gradients_util.PossibleTapeGradientTypes(inputs) != gradients_util.POSSIBLE_GRADIENT_TYPES_NONE:
            return None  # a tape around the call: only the function's own call records it
        sources = [s.variable for site in self._sites for s in site.sources]
        optimizers = applied_optimizers(self._traced)
        before, scale = [maybe_digest(v) for v in sources], loss_scale(optimizers)
        values = self._function.call_flat(*inputs)
        after = [maybe_digest(v) for v in sources]
        result = concrete._inference_function.function_type.pack_output(values[:self._outputs])  # noqa: SLF001
        rest = iter(values[self._outputs:])
        calls = [_with_values(c, rest) for c in self._calls]
        return result, verification_of(self._sites, calls, (before, after), [], optimizers, restored=restored, scale=scale)


def first_call(traced: Any, sites: Sequence[GradientSite]) -> FirstCall | None:
    """The script's first call of this step as its verification, when it can be (else None).

    It can when ``traced`` is the script's own ``tf.function`` trace (``flowcheck run``) and each
    site's call was made in that graph itself (not in a nested function or a branch), with
    tensors as targets and gradients.
    """
    concrete = traced.concrete
    if traced.target_kind != "tf.function" or not sites or not hasattr(concrete, "function_type"):
        return None
    calls = match_calls(sites, traced.calls)
    if any(c is None or c.results is None or c.graph is not concrete.graph for c in calls):
        return None
    found = [c for c in calls if c is not None]
    if any(t is None for c in found for t in _graph_tensors(c)):
        return None
    return FirstCall(traced, sites, found)


def _canonical(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments as ``Function._call`` hands them to its trace: defaults filled in, a ``functools.partial``'s
    keywords among them (``tf.function(partial(train_step, model=model))``)."""
    from tensorflow.python.eager.polymorphic_function import function_type_utils

    function_type = getattr(function, "_function_type", None)
    if function_type is None:
        return args, kwargs
    bound = function_type_utils.canonicalize_function_inputs(
        args, kwargs, function_type, getattr(function, "_default_values", None), getattr(function, "_is_pure", False),
    )
    return tuple(bound.args), dict(bound.kwargs)


def _graph_tensors(call: RecordedCall) -> list[Any]:
    """The call's targets and its gradients' component tensors, flattened (None where one is not a graph tensor)."""
    flat = tf.nest.flatten([list(call.targets), [r for r in call.results or () if r is not None]], expand_composites=True)
    return [t if isinstance(t, tf.Tensor) and t.graph is call.graph else None for t in flat]


def _with_values(call: RecordedCall, values: Iterator[Any]) -> RecordedCall:
    """A copy of ``call`` whose targets and gradients are the values the run gave (taken from ``values``)."""
    given = [r for r in call.results or () if r is not None]
    structure = [list(call.targets), given]
    targets, results = tf.nest.pack_sequence_as(
        structure, [next(values) for _ in tf.nest.flatten(structure, expand_composites=True)], expand_composites=True,
    )
    it = iter(results)
    return replace(call, targets=tuple(targets), results=tuple(None if r is None else next(it) for r in call.results or ()))
