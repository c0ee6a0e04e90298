"""TensorFlow 1 graph mode, stage 5: the user's own train op, run once in the user's session, then undone.

The fetched ops that depend on a gradient call are run once with the script's ``feed_dict``,
fetching the gradients TensorFlow built at the call too. Before, every variable of the graph's
collections that the train op can reach is read (model variables, optimizer slots, ``beta1_power``,
``global_step``; not a ``tf.metrics`` total the step never touches, which may not even be
initialized yet); afterwards each one whose value changed is written back, bit for bit, through its
own initializer fed with the saved value (``Variable.load`` does the same): no op is added to the
user's graph. A step that reads an input pipeline (a queue, a ``tf.data`` iterator) or draws
random numbers (dropout) or calls Python (``tf.py_func``) cannot be undone that way: it is verified by the script's own run of it
instead (:func:`verify_in_script_run`), which fetches the gradients beside the script's fetches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from flowcheck.analysis.tf1 import CallAnalysis
from flowcheck.errors import VerificationError, unchained
from flowcheck.graph.tf1 import differentiated_tensor, graph_variables
from flowcheck.source.op import op_source
from flowcheck.verify.loss import GradientState, Verification, VariableCheck

__all__ = ["StepRun", "fetched_ops", "unrepeatable_ops", "verify_in_script_run", "verify_session_step"]

Run = Callable[..., Any]  # BaseSession.run, unwrapped: (session, fetches, feed_dict) -> values

# Ops whose effect a second run cannot take back: they consume input or advance a generator.
_CONSUMING = ("IteratorGetNext", "QueueDequeue", "ReaderRead", "Iterator")
_RANDOM = ("Random", "Multinomial", "TruncatedNormal", "CandidateSampler")
_PYTHON = frozenset({"PyFunc", "EagerPyFunc"})  # tf.py_func / tf.numpy_function: the user's Python, effects unknown
# Stateful ops whose effect is on variables (restored) or lasts one run (stacks, tensor arrays, asserts).
_UNDONE = ("Var", "ReadVariableOp", "Assign", "ResourceApply", "ResourceSparseApply", "ResourceScatter",
           "ResourceGather", "ResourceStridedSliceAssign", "Stack", "TensorArray", "Assert", "LookupTableFind",
           "LookupTableSize", "IsVariableInitialized", "DestroyResourceOp")


_VARIABLE_OPS = frozenset({"VariableV2", "Variable", "VarHandleOp"})
_READS = frozenset({"Identity", "ReadVariableOp", "ResourceGather", "ResourceGatherNd", "VarIsInitializedOp",
                    "IsVariableInitialized", "Gather", "GatherV2"})


def unrepeatable_ops(ops: Sequence[Any], variables: Sequence[Any]) -> list[str]:
    """Why running ``ops`` once more would change what the script sees next (empty when it would not).

    ``variables`` are the ones that can be restored; a variable the step writes that is not among
    them (made with ``collections=[]`` and not a source) could not be.
    """
    closure = _closure(ops)
    restorable = {id(differentiated_tensor(v)) for v in variables}
    written = {id(op.inputs[0]) for op in closure if op.inputs and op.type not in _READS}
    found: dict[str, list[str]] = {}  # each reason once, with the ops that give it
    for op in closure:
        kind = "reads the input pipeline" if op.type.startswith(_CONSUMING) else (
            "draws random numbers" if any(r in op.type for r in _RANDOM) and not op.type.startswith("Stateless") else
            "calls Python code (tf.py_func, tf.numpy_function)" if op.type in _PYTHON else
            "runs a stateful op whose effect flowcheck can neither tell nor undo" if _stateful(op) and not op.type.startswith(_UNDONE) else ""
        )
        if op.type in _VARIABLE_OPS and id(op.outputs[0]) in written and id(op.outputs[0]) not in restorable:
            kind = "writes a variable in no collection, which flowcheck cannot restore"
        if kind and len(found.get(kind, ())) < 3:
            line, _ = op_source(op)
            found.setdefault(kind, []).append(f"{op.type} {op.name!r}{f' at {line}' if line else ''}")
    return [f"the step {kind} ({'; '.join(ops)})" for kind, ops in found.items()][:3]


def _stateful(op: Any) -> bool:
    op_def = op.op_def
    return bool(op_def is not None and op_def.is_stateful)


def _closure(ops: Sequence[Any]) -> list[Any]:
    seen: dict[int, Any] = {}
    stack = list(ops)
    while stack:
        op = stack.pop()
        if id(op) not in seen:
            seen[id(op)] = op
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
    return list(seen.values())


class StepRun:
    """What one run of the train op did: values before and after, gradients, the loss."""

    def __init__(self, before: dict[int, Any], after: dict[int, Any], grads: dict[int, Any], loss: float) -> None:
        self.before = before
        self.after = after
        self.grads = grads
        self.loss = loss


Outcome = tuple[Verification, tuple[str, ...], dict[str, tuple[Any, Any]]]


def verify_session_step(
    run: Run, session: Any, train_ops: Sequence[Any], feed_dict: Any, analyses: Sequence[CallAnalysis],
) -> Outcome:
    """Run ``train_ops`` once with ``feed_dict``, compare with the verdicts, restore every variable.

    Returns:
        The verification, one line per source variable saying what the step did to it, and each
        source variable's value before and after the step, by name.
    """
    state = _state_variables(analyses, session.graph, fetched_ops(train_ops, analyses))
    before = _read(run, session, state)
    grads, targets = _extras(analyses)
    after: dict[int, Any] | None = None
    try:
        values = run(session, [list(train_ops), list(grads.values()), list(targets.values())], feed_dict)
        after = _read(run, session, state)
    finally:
        problems = _restore(run, session, state, before, after)
    verification, lines, changes = _outcome(
        analyses, StepRun(before, after, dict(zip(grads, values[1])), _loss(values[2])), problems, True,
    )
    return verification, lines + _others_changed(session.graph, state, analyses, before, after), changes


def _others_changed(
    graph: Any, state: Sequence[Any], analyses: Sequence[CallAnalysis], before: dict[int, Any], after: dict[int, Any],
) -> tuple[str, ...]:
    """A line naming the trainable variables the step changed that are no call's source: an A3C
    worker's gradients of its own copy applied to the global network's, a target network's
    soft update. The sources' lines say ``unchanged``; this says where the step's update went."""
    from tensorflow.python.framework import ops

    trainable = {id(v) for v in graph.get_collection(ops.GraphKeys.TRAINABLE_VARIABLES)}
    sources = {id(j.source.variable) for a in analyses for j in a.sources if j.source.variable is not None}
    others = [v.op.name for v in state
              if id(v) in trainable and id(v) not in sources and not _same(before[id(v)], after[id(v)])]
    if not others:
        return ()
    return (f"the step also changed {len(others)} trainable variable{'s' if len(others) != 1 else ''} "
            f"no gradient call of it differentiates: {', '.join(others)}",)


def verify_in_script_run(
    run: Run, session: Any, script_run: Callable[[Any], Any], fetches: Any, analyses: Sequence[CallAnalysis],
    computed: Sequence[Any],
) -> tuple[Any, Outcome]:
    """The script's own ``Session.run(fetches)``, made once, fetching the gradients and targets beside.

    For a step that cannot be run twice (it reads an input pipeline or draws random numbers): the
    session runs the script's fetches and flowcheck's in one run, so the step happens exactly once,
    as without flowcheck; the variables are only read before and after, and training keeps the update.

    Args:
        run: ``Session.run`` for flowcheck's own reads.
        script_run: Runs the script's call with other fetches (its feeds and options kept).
        fetches: The script's fetches, as it passed them.
        computed: Their ops. A target whose ops beyond theirs have effects is not fetched (a ``tf.print``
            in the loss's control dependencies, a random op): its value is not shown.

    Returns:
        What ``Session.run(fetches)`` returns to the script, and the outcome as
        :func:`verify_session_step` gives it.

    Raises:
        VerificationError: the variables could not be read before the step (nothing was run then).
    """
    import tensorflow as tf

    state = _state_variables(analyses)  # only read: nothing to restore
    try:
        before = _read(run, session, state)
    except tf.errors.OpError as exc:  # a variable not initialized yet: the script's run is its own business
        raise unchained(VerificationError("reading the variables before the step raised"), exc) from None
    grads, targets = _extras(analyses)
    reach = {id(op) for op in _closure(computed)}
    targets = {key: t for key, t in targets.items() if not _adds_effects(t.op, reach)}
    values = script_run([fetches, list(grads.values()), list(targets.values())])
    after = _read(run, session, state)
    step = StepRun(before, after, dict(zip(grads, values[1])), _loss(values[2]) if targets else math.nan)
    return values[0], _outcome(analyses, step, [], False, seen=bool(targets))


def _adds_effects(op: Any, reach: set[int]) -> bool:
    """Whether running ``op`` runs a stateful op, other than a variable's read, that the ops ``reach`` names do not."""
    return any(_stateful(o) and o.type not in _VARIABLE_OPS | _READS for o in _closure([op]) if id(o) not in reach)


def _state_variables(analyses: Sequence[CallAnalysis], graph: Any = None, ops: Sequence[Any] = ()) -> list[Any]:
    """The sources' variables, and with ``ops``, every variable of ``graph`` that running them can read or write.

    A variable outside the ops' closure cannot change (and may not even be initialized yet: a
    ``tf.metrics`` total before ``local_variables_initializer``).
    """
    state: list[Any] = []
    if ops:
        reached = {id(op) for op in _closure(ops)}
        state = [v for v in graph_variables(graph) if id(differentiated_tensor(v).op) in reached]
    known = {id(v) for v in state}
    for a in analyses:  # a variable made with collections=[] is in no collection: its own source
        for j in a.sources:
            if j.source.variable is not None and id(j.source.variable) not in known:
                known.add(id(j.source.variable))
                state.append(j.source.variable)
    return state


def fetched_ops(train_ops: Sequence[Any], analyses: Sequence[CallAnalysis]) -> list[Any]:
    """The ops flowcheck's run of the step runs: the train ops, and the gradients and targets it fetches
    beside them (a target reaches ops no train op does: a ``tf.py_func`` term of the loss, cut)."""
    grads, targets = _extras(analyses)
    return [*train_ops, *(g.op for g in grads.values()), *(t.op for t in targets.values())]


def _extras(analyses: Sequence[CallAnalysis]) -> tuple[dict[int, Any], dict[int, Any]]:
    """The gradients the calls returned and the step's losses, each once (the fetches flowcheck adds).

    The losses are the optimizers' targets when an optimizer made a call (not the critic's output a
    WGAN-GP's penalty differentiates), else the targets that are no call's gradient (not ``g`` of a
    Hessian's ``tf.gradients(g, x)``).
    """
    grads = {id(g): g for a in analyses for g in (a.call.grads or ()) if g is not None}
    optimized = [a for a in analyses if a.call.optimizer]
    targets = {id(t): t for a in optimized or analyses for t in a.call.targets if id(t) not in grads}
    return grads, targets


def _loss(values: Sequence[Any]) -> float:
    return float(sum(np.sum(np.asarray(v, dtype=np.float64)) for v in values))


def _outcome(
    analyses: Sequence[CallAnalysis], step: StepRun, problems: list[str], restored: bool, seen: bool = True,
) -> Outcome:
    checks, lines = _checks(analyses, step)
    values = {
        j.source.name: (step.before[id(j.source.variable)], step.after[id(j.source.variable)])
        for a in analyses for j in a.sources if j.source.variable is not None and id(j.source.variable) in step.before
    }
    optimizers = sorted({a.call.optimizer for a in analyses if a.call.optimizer})
    name = f"the script's own {', '.join(optimizers)}" if optimizers else "the script's own train op"
    agrees = all(c.agrees for c in checks) and not problems
    verification = Verification(agrees, f"{name}, in its session", step.loss, tuple(checks), tuple(problems),
                                restored=restored, loss_seen=seen, unseen="the script's own run of the step does not compute it")
    return verification, lines, values


def _read(run: Run, session: Any, variables: Sequence[Any]) -> dict[int, Any]:
    values = run(session, list(variables), None)
    return {id(v): np.array(value, copy=True) for v, value in zip(variables, values)}


def _restore(
    run: Run, session: Any, variables: Sequence[Any], saved: dict[int, Any], now: dict[int, Any] | None,
) -> list[str]:
    current = now if now is not None else _read(run, session, variables)
    changed = [v for v in variables if not _same(saved[id(v)], current[id(v)])]
    # One run for all: each distinct set of fetches and feeds costs the session a new executor.
    feedable = [v for v in changed if getattr(v, "initializer", None) is not None and len(v.initializer.inputs) > 1]
    if feedable:
        run(session, [v.initializer for v in feedable], {v.initializer.inputs[1]: saved[id(v)] for v in feedable})
    # Read back everything (the same fetches as before: the session reuses that executor).
    still = [v for v, now in zip(variables, _read(run, session, variables).values()) if not _same(saved[id(v)], now)]
    return [f"could not restore {v.name}: it has no initializer to feed the saved value through" for v in still]


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return bool(a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes())


def _state(value: Any) -> GradientState:
    values = getattr(value, "values", value)  # IndexedSlicesValue
    array = np.asarray(values)
    if array.dtype.kind in "fc" and not np.all(np.isfinite(array)):
        return GradientState.NONFINITE
    return GradientState.ZERO if not np.any(array) else GradientState.NONZERO


def _checks(analyses: Sequence[CallAnalysis], step: StepRun) -> tuple[list[VariableCheck], tuple[str, ...]]:
    checks: list[VariableCheck] = []
    described: dict[str, str] = {}
    for a in analyses:
        for i, judged in enumerate(a.sources):
            grad = a.call.grads[i] if a.call.grads is not None else None
            gradient = GradientState.NONE if grad is None else _state(step.grads[id(grad)])
            variable = judged.source.variable
            changed = False
            if variable is not None and id(variable) in step.before:
                old, new = step.before[id(variable)], step.after[id(variable)]
                changed = not _same(old, new)
                described.setdefault(judged.source.name, _describe(judged.source.name, old, new))
            predicted = judged.verdict.value == "receives"
            checks.append(VariableCheck(judged.source.name, predicted, gradient, changed, predicted == (grad is not None)))
    return checks, tuple(described.values())


def _describe(name: str, old: Any, new: Any) -> str:
    if _same(old, new):
        return f"{name} unchanged: {_values(old)}"
    return f"{name} changed: {_values(old)} -> {_values(new)}"


def _values(array: Any) -> str:
    flat = np.asarray(array).ravel()
    if flat.size == 0:
        return "empty"
    if np.all(flat == flat[0]):
        return f"every entry {_number(flat[0])}"
    return f"entries from {_number(flat.min())} to {_number(flat.max())}"


def _number(value: Any) -> str:
    number = float(value)
    return f"{number:.6g}" if math.isfinite(number) else str(number)
