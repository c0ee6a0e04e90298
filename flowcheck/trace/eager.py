"""A plain callable judged as the user calls it: eagerly, under a tape that watches every variable.

``flowcheck.analyze`` traces a plain callable too (the static analysis gives barriers and lines),
but the user runs it eagerly, where TensorFlow may answer otherwise: an untaken ``tf.cond`` branch
and a ``while_loop`` condition give ``None`` eagerly (zeros when traced), and ``float(t)`` or
``t.numpy()`` leave TensorFlow (AutoGraph turns ``float()`` into a cast, and ``.numpy()`` cannot be
traced at all). :func:`run_eagerly` calls the function once under a tape that watches each variable
as it is read, records where the user's code took a value out of TensorFlow, and restores every
variable it read (and the eager random-seed state) afterwards. :func:`eager_difference` says, per
variable, why the eager answer differs from the traced graph's.
"""

from __future__ import annotations

import contextlib
import random
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import networkx as nx
import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context
from tensorflow.python.framework import ops
from tensorflow.python.ops import resource_variable_ops
from tensorflow.python.util import nest

from flowcheck._model import Verdict

from flowcheck.analysis.verdicts import gradient_nodes
from flowcheck.trace.distributed import components, container, replica_threads
from flowcheck._model import VariableResult
from flowcheck.source.lines import SourceLine, is_library_file, user_frame
from flowcheck.source.op import op_source
from flowcheck.trace.target import describe_variable
from flowcheck.trace.traced import LossOutput, TracedVariable
from flowcheck.errors import LossError, TraceError


__all__ = [
    "EagerRun", "Exit", "as_called", "eager_difference", "eager_only", "own_random_seeds",
    "record_exits", "run_eagerly",
]

# The conversions by which a value leaves TensorFlow, as the user wrote them.
_EXITS = {"__float__": "float()", "__int__": "int()", "__index__": "int()", "numpy": ".numpy()",
          "item": ".item()", "__bool__": "a Python condition"}


@dataclass(frozen=True)
class Exit:
    """Where the user's code took a tensor's value out of TensorFlow during the eager call."""

    what: str
    source: SourceLine

    def __str__(self) -> str:
        if self.what == "a Python condition":
            return f"the Python condition at line {self.source.line} runs only the branch taken"
        return f"`{self.what}` at line {self.source.line} leaves TensorFlow"


@dataclass
class EagerRun:
    """The tape's answer for one eager call of the user's function.

    Attributes:
        variables: Every variable known beforehand or read during the call, known ones first.
        total: Per variable, whether the summed losses give it a gradient.
        per_loss: Per loss name, the same for that loss alone.
        read: Indices of the variables the call read.
        losses: The floating-point outputs, named as in a traced function's report.
        exits: Where the user's code took values out of TensorFlow, in call order.
    """

    variables: list[TracedVariable]
    total: list[bool]
    per_loss: dict[str, list[bool]]
    read: set[int]
    losses: list[LossOutput]
    exits: list[Exit] = field(default_factory=list)


def run_eagerly(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                known: Sequence[TracedVariable], name: str) -> EagerRun:
    """Call ``fn`` eagerly with every variable watched as it is read; restore what it changed.

    Raises:
        TraceError: the eager call raised.
        LossError: it returned no floating-point tensor.
    """
    variables = list(known)
    index = {id(c): i for i, v in enumerate(variables) for c in (v.tf_variable, *components(v.tf_variable))}
    saved = [_read(v.tf_variable) for v in variables]
    read: set[int] = set()
    exits: list[Exit] = []
    tape = tf.GradientTape(watch_accessed_variables=False, persistent=True)
    try:
        with own_random_seeds(), tape, _watch_on_read(tape, variables, index, saved, read), record_exits(exits):
            for v in variables:
                if _is_float(v.tf_variable):
                    tape.watch(v.tf_variable)
            try:
                outputs = fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 -- the user's call failed: one line, their frame
                raise TraceError(_failure(exc, name)) from exc
        losses = _loss_tensors(outputs, name, exits)
        floats = [v.tf_variable for v in variables]
        per_loss = {n: _received(tape, t, floats) for n, t in losses}
        total = [any(answers[i] for answers in per_loss.values()) for i in range(len(variables))]
    finally:
        del tape
        for v, values in zip(variables, saved):
            for component, value in zip(components(v.tf_variable), values):
                component.assign(value)
    outputs_ = [LossOutput(n, t, tuple(t.shape.as_list()) if t.shape.rank is not None else (), t.dtype.name)
                for n, t in losses]
    return EagerRun(variables, total, per_loss, read, outputs_, exits)


@contextlib.contextmanager
def own_random_seeds() -> Iterator[None]:
    """Give eager random ops run by flowcheck seeds of their own, never the user's next ones.

    Under ``tf.random.set_seed`` each eager random op takes its seed from the context's generator,
    and TensorFlow keeps one kernel, with its state, per seed: drawing the user's next seed would
    change the numbers the user's own next call gets.
    """
    ctx = context.context()
    user = getattr(ctx, "_rng", None)
    if user is None:
        yield
        return
    ctx._rng = random.Random(_OWN_SEED)  # noqa: SLF001
    try:
        yield
    finally:
        ctx._rng = user  # noqa: SLF001


_OWN_SEED = 0x5EED_F10C


def _received(tape: Any, target: Any, variables: Sequence[Any]) -> list[bool]:
    grads = tape.gradient(target, list(variables), unconnected_gradients=tf.UnconnectedGradients.NONE)
    return [g is not None for g in grads]


def _is_float(v: Any) -> bool:
    return bool(v.dtype.is_floating or v.dtype.is_complex)


def _read(v: Any) -> tuple[np.ndarray, ...]:
    # Per replica's component for a distributed variable (sync-on-read ones differ per replica).
    return tuple(np.array(c.read_value().numpy(), copy=True) for c in components(v))


@contextlib.contextmanager
def _watch_on_read(tape: Any, variables: list[TracedVariable], index: dict[int, int],
                   saved: list[tuple[np.ndarray, ...]], read: set[int]) -> Iterator[None]:
    """Watch each variable when it is first read (as a default tape does, whatever its trainable flag)."""
    original = resource_variable_ops.variable_accessed
    busy = False
    home = threading.get_ident()

    def accessed(variable: Any) -> None:
        nonlocal busy
        original(variable)
        if busy:
            return
        i = index.get(id(variable))
        if i is None:
            variable = container(variable)  # one replica's component: the variable the user made
            busy = True
            try:
                with tape.stop_recording():
                    saved.append(_read(variable))  # before the op that reads it runs
            finally:
                busy = False
            i = len(variables)
            index.update((id(c), i) for c in (variable, *components(variable)))
            variables.append(describe_variable(variable))
            # A user's tape watches on their own thread; strategy.run's replica threads read
            # variables that such a tape, watching before the call, gets no gradient for.
            if _is_float(variable) and threading.get_ident() == home:
                tape.watch(variable)
        read.add(i)

    resource_variable_ops.variable_accessed = accessed
    try:
        yield
    finally:
        resource_variable_ops.variable_accessed = original


@contextlib.contextmanager
def record_exits(exits: list[Exit]) -> Iterator[None]:
    """Record the user's lines that convert an eager tensor to a Python or NumPy value."""
    base = ops._EagerTensorBase  # noqa: SLF001 -- the Python class behind every eager tensor
    originals = {name: base.__dict__[name] for name in _EXITS if name in base.__dict__}

    def wrap(name: str, method: Any) -> Any:
        def recorded(self: Any, *a: Any, **k: Any) -> Any:
            caller, asked = _converting_caller(sys._getframe(1), name)  # noqa: SLF001
            if caller is not None and not is_library_file(caller.f_code.co_filename):
                where, _ = user_frame(traceback.extract_stack(caller, limit=1))
                if where is not None:
                    exits.append(Exit(_EXITS.get(asked, _EXITS[name]), where))
            return method(self, *a, **k)

        return recorded

    for name, method in originals.items():
        setattr(base, name, wrap(name, method))
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(base, name, method)


def _converting_caller(frame: Any, name: str) -> tuple[Any, str]:
    """The frame that asked for the conversion, past a variable's own conversion methods, and what it asked.

    ``float(variable)`` reaches the tensor's ``.numpy()`` through the variable's ``__float__``: the
    user's frame is the one above, and it asked for ``float()``. Any other library frame
    (``tf.cond`` reading its predicate) is not the user's.
    """
    while frame is not None and frame.f_code.co_name in _EXIT_NAMES and is_library_file(frame.f_code.co_filename):
        name = frame.f_code.co_name if frame.f_code.co_name in _EXITS else name
        frame = frame.f_back
    return frame, name


_EXIT_NAMES = frozenset(_EXITS) | {"__array__", "_dense_var_to_tensor", "value", "read_value"}


def _loss_tensors(outputs: Any, name: str, exits: Sequence[Exit]) -> list[tuple[str, Any]]:
    leaves = ([(str(p), t) for p, t in nest.flatten_with_joined_string_paths(outputs)]
              if nest.is_nested(outputs) else [("loss", outputs)])
    tensors = [(n, t) for n, t in leaves if isinstance(t, tf.Tensor) and (t.dtype.is_floating or t.dtype.is_complex)]
    if tensors:
        return tensors
    found = ", ".join(sorted({type(t).__name__ for _, t in leaves})) or "nothing"
    left = [e for e in exits if e.what != "a Python condition"]
    why = f" (the loss left TensorFlow: {left[-1]})" if left else ""
    raise LossError(f"{name} returned {found}, not a floating-point tensor{why}; return the loss tensor")


def _failure(exc: BaseException, name: str) -> str:
    where, _ = user_frame(traceback.extract_tb(exc.__traceback__))
    at = f" at {where}" + (f" ({where.code})" if where and where.code else "") if where else ""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"calling {name} eagerly raised {type(exc).__name__}{at}: {message}"


# --- why the eager answer differs ---------------------------------------------------------------


def as_called(results: Sequence[VariableResult], graph: nx.DiGraph, run: EagerRun) -> tuple[VariableResult, ...]:
    """The static results with the eager call's answers as verdicts, and why they differ."""
    judged = []
    for i, r in enumerate(results):
        per_loss = {n: _verdict(answers[i], r.per_loss.get(n, r.verdict)) for n, answers in run.per_loss.items()}
        verdict = _verdict(run.total[i], r.verdict)
        if verdict is r.verdict and all(r.per_loss.get(n) is v for n, v in per_loss.items()):
            judged.append(r)
            continue
        reason = (replica_threads(run.variables[i].tf_variable, run.total[i])
                  or eager_difference(graph, r.node, run.total[i], run.exits)) if verdict is not r.verdict else None
        judged.append(replace(
            r, verdict=verdict, barriers=r.barriers if verdict is not Verdict.RECEIVES else (),
            per_loss=MappingProxyType(per_loss), eager_difference=reason,
        ))
    return tuple(judged)


def eager_only(run: EagerRun, failure: str) -> tuple[VariableResult, ...]:
    """Results from the eager call alone, for a callable that cannot be traced."""
    left = "; ".join(dict.fromkeys(str(e) for e in run.exits if e.what != "a Python condition"))
    why = f"{left or failure}; no static analysis was possible"
    results = []
    for i, v in enumerate(run.variables):
        unread = Verdict.BLOCKED if i in run.read else Verdict.UNUSED
        results.append(VariableResult(
            name=v.name, verdict=Verdict.RECEIVES if run.total[i] else unread, barriers=(), shape=v.shape,
            dtype=v.dtype, trainable=v.trainable,
            per_loss=MappingProxyType({n: Verdict.RECEIVES if a[i] else unread for n, a in run.per_loss.items()}),
            variable=v.variable, node=f"variable:{i}", watched_by_default=v.watched_by_default,
            eager_difference=why if unread is Verdict.BLOCKED and not run.total[i] else None,
        ))
    return tuple(results)


def _verdict(receives: bool, static: Verdict) -> Verdict:
    if receives:
        return Verdict.RECEIVES
    return Verdict.UNUSED if static is Verdict.UNUSED else Verdict.BLOCKED


def eager_difference(graph: nx.DiGraph, node: str, eager_receives: bool, exits: Sequence[Exit]) -> str:
    """Why the eager call answers ``eager_receives`` for variable ``node`` when the traced graph does not."""
    if eager_receives:
        return "the eager call gives a gradient where the traced graph gives none"
    region = _region(graph, node)
    reasons = _control_flow(graph, node, region)
    left = [e for e in exits if e.what != "a Python condition"]
    if not reasons:  # no branch or loop explains it: a value that left TensorFlow on its path
        region_lines = _region_lines(graph, region)
        reasons = [str(e) for e in left if (e.source.file, e.source.line) in region_lines]
    if not reasons:
        reasons = [str(e) for e in left] or [str(e) for e in exits]
    reasons = list(dict.fromkeys(reasons))
    return "; ".join(reasons) if reasons else "the eager call gives no gradient where the traced graph does"


def _region(graph: nx.DiGraph, node: str) -> set[str]:
    """Nodes on the traced graph's gradient paths between the variable and the losses."""
    carrying = nx.subgraph_view(graph, filter_edge=lambda u, w: bool(graph.edges[u, w]["grad"]))
    reached: set[str] = nx.descendants(carrying, node) | {node}
    return reached & gradient_nodes(graph, graph.graph["losses"])


def _control_flow(graph: nx.DiGraph, node: str, region: set[str]) -> list[str]:
    clusters = graph.graph["clusters"]
    found: dict[str, str] = {}
    carried: set[str] = set()  # loops the variable passes through unchanged
    for n in region:
        cluster = graph.nodes[n].get("cluster")
        passing = graph.nodes[n].get("op_type") in _PASS_THROUGH
        while cluster is not None:
            info = clusters[cluster]
            if info["kind"] in ("cond", "case"):
                found[info["gate"]] = info["kind"]
            elif info["kind"] == "while" and passing:
                carried.add(info["gate"])
            elif info["kind"] == "while":
                found[info["gate"]] = "while"
            cluster = info["parent"]
            passing = False
    if carried - found.keys():
        # Traced, every loop variable gets a gradient; eagerly, one read only by the condition gets None.
        feeds = {graph.nodes[d].get("cluster") for d in nx.descendants(graph, node)}
        for gate in carried - found.keys():
            found[gate] = "condition" if f"{gate}/cond" in feeds else "while"
    reasons = []
    for gate, kind in sorted(found.items()):
        source, _ = op_source(graph.nodes[gate].get("op"))
        line = f" (line {source.line})" if source is not None else ""
        reasons.append({
            "cond": f"only the branch taken runs eagerly{line}",
            "case": f"only the branch taken runs eagerly{line}",
            "while": f"a while_loop runs only the iterations taken eagerly{line}",
            "condition": f"the while condition is not differentiated eagerly{line}",
        }[kind])
    return reasons


_PASS_THROUGH = frozenset({"Placeholder", "Identity"})


def _region_lines(graph: nx.DiGraph, region: set[str]) -> set[tuple[str, int]]:
    lines = set()
    for n in region:
        op = graph.nodes[n].get("op")
        if op is not None:
            source, _ = op_source(op)
            if source is not None:
                lines.add((source.file, source.line))
    return lines
