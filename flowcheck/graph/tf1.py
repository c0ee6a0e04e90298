"""TensorFlow 1 graph mode, stage 2: the graph of a ``tf.Graph`` (its calls judged in :mod:`flowcheck.analysis.tf1`).

The graph holds the ops that feed the recorded calls' targets (their data inputs, transitively:
what ``tf.gradients`` walks), built with :mod:`flowcheck.graph.build`'s builder and oracle, so nodes and
edges mean what its docstring says. Variables of TensorFlow 1 are ``RefVariable``s (a
``VariableV2`` op whose ``float32_ref`` output is read through ``Identity`` ``.../read``) or
resource variables (a ``VarHandleOp`` read by ``ReadVariableOp``). Each source of a call, as
TensorFlow differentiates it (the ref tensor, the handle, or a plain tensor), gets a
``variable:<i>`` node with an edge into the op that makes it; each target a ``loss:<name>`` node.
Initializers, the optimizer's update ops and the gradient ops themselves never feed a target, so
they are not in the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from flowcheck._model import BarrierKind
from flowcheck.graph.bodies import calls_function
from flowcheck.graph.build import CARRY_IF_TRAINABLE, _Builder, loss_node, variable_node
from flowcheck.graph.ops import FUNCTION_OPS, GradientOracle, InputGradient
from flowcheck.source.lines import display_path, is_library_file
from flowcheck.trace.tf1 import GraphCall, is_default_name

__all__ = ["GraphSource", "build_graph", "differentiated_tensor", "display_name", "graph_variables", "resolve_sources"]


@dataclass(frozen=True)
class GraphSource:
    """One object a gradient call differentiates with respect to, as the graph knows it.

    Attributes:
        user: The object the user passed (a variable or a tensor).
        tensor: What TensorFlow differentiates: a ``RefVariable``'s ref tensor, a resource
            variable's handle, or the tensor itself.
        variable: The ``tf.Variable`` when it is one (else None).
        name: How reports show it (see :func:`display_name`).
        node: Its node id in the graph.
    """

    user: Any = field(repr=False, compare=False)
    tensor: Any = field(repr=False, compare=False)
    variable: Any = field(repr=False, compare=False)
    name: str
    node: str

    @property
    def value(self) -> Any:
        """What has the source's dtype and shape: the variable (a handle is a scalar resource), else the tensor."""
        return self.variable if self.variable is not None else self.tensor

    @property
    def dtype(self) -> str:
        """The dtype's name (a ``float32_ref`` is ``float32``)."""
        return str(self.value.dtype.base_dtype.name)

    @property
    def shape(self) -> tuple[int | None, ...]:
        """The shape (``()`` when unknown)."""
        return _shape(self.value)

    @property
    def trainable(self) -> bool:
        """Whether training updates it: the variable's own flag (a plain tensor is not trainable)."""
        return bool(getattr(self.variable, "trainable", False))


def graph_variables(graph: Any) -> list[Any]:
    """Every variable the graph's collections hold (global, local, trainable, model, ...), once each."""
    found: dict[int, Any] = {}
    for key in graph.get_all_collection_keys():
        for item in graph.get_collection(key):
            if _is_variable(item) and id(item) not in found:
                found[id(item)] = item
    return list(found.values())


def _is_variable(value: Any) -> bool:
    import tensorflow as tf

    return isinstance(value, tf.Variable)


def differentiated_tensor(obj: Any) -> Any:
    """The tensor TensorFlow differentiates for ``obj`` (gradients_util converts ``xs`` the same way)."""
    from tensorflow.python.ops import resource_variable_ops

    if resource_variable_ops.is_resource_variable(obj):
        return obj.handle
    ref = getattr(obj, "_ref", None)
    if callable(ref) and _is_variable(obj):
        return ref()
    return obj


def _variable_of(tensor: Any, variables: Sequence[Any]) -> Any:
    for v in variables:
        if differentiated_tensor(v) is tensor:
            return v
    return None


def resolve_sources(
    calls: Sequence[GraphCall], variables: Sequence[Any], names: dict[int, str]
) -> dict[int, GraphSource]:
    """``id(object) -> GraphSource`` for every distinct source of the calls, numbered in order."""
    resolved: dict[int, GraphSource] = {}
    by_tensor: dict[int, GraphSource] = {}
    used: set[str] = set()
    for call in calls:
        for obj in call.sources:
            if id(obj) in resolved:
                continue
            tensor = differentiated_tensor(obj)
            if id(tensor) in by_tensor:  # the variable and its ref tensor: one source
                resolved[id(obj)] = by_tensor[id(tensor)]
                continue
            variable = obj if _is_variable(obj) else _variable_of(tensor, variables)
            shown = variable if variable is not None else obj
            # A tensor's name is its op's, which TensorFlow made up (``add``): the script's name for it.
            written = None if variable is not None else names.get(id(obj)) or call.names.get(id(obj))
            name = written or display_name(shown, names, call.names)
            if name in used:  # one Python name bound to two variables (in two functions): TensorFlow's names
                name = display_name(shown)
            used.add(name)
            if variable is not None and is_default_name(name):  # Variable_2: say where the script made it
                name = f"{name} (made at {_made_at(variable)})" if _made_at(variable) else name
            src = GraphSource(user=obj, tensor=tensor, variable=variable, name=name, node=variable_node(len(by_tensor)))
            resolved[id(obj)] = by_tensor[id(tensor)] = src
    return resolved


def _made_at(variable: Any) -> str:
    """The script's line that made ``variable``, and the outermost line that led there (a model function's call)."""
    try:
        frames = [f for f in variable.op.traceback if not is_library_file(f.filename) and not f.filename.startswith("<")]
    except Exception:  # noqa: BLE001 -- no traceback kept: nothing to say
        return ""
    if not frames:
        return ""
    outer, inner = frames[0], frames[-1]
    where = f"{display_path(inner.filename)}:{inner.lineno}"
    if len(frames) > 1:
        where += f", called from line {outer.lineno}" if outer.filename == inner.filename else \
            f", called from {display_path(outer.filename)}:{outer.lineno}"
    return where


def display_name(obj: Any, *tables: dict[int, str]) -> str:
    """TensorFlow's name, or the script's Python name for it when TensorFlow's is a default one."""
    raw = str(getattr(obj, "name", None) or obj)
    name = raw[:-2] if raw.endswith(":0") else raw
    if is_default_name(name):
        for table in tables:
            if id(obj) in table:
                return table[id(obj)]
    return name


def build_graph(calls: Sequence[GraphCall], sources: dict[int, GraphSource], oracle: GradientOracle) -> nx.DiGraph:
    """The gradient-annotated graph of the ops that feed the calls' targets (module docstring)."""
    builder = _Builder(oracle)
    graph = builder.graph
    targets = [t for call in calls for t in call.targets]
    distinct = {s.node: s for s in sources.values()}
    wanted = _upstream([t.op for t in targets] + [s.tensor.op for s in distinct.values()])
    present = {op.name for op in wanted}
    for op in wanted:
        node = op.name
        builder.add_op_node(op, node, None)
        if op.type in FUNCTION_OPS or calls_function(op, op.type):
            builder.add_function_op(op, node, "", None)
            continue
        infos = (
            _control_flow_inputs(op) if op.type in _CONTROL_FLOW
            else _tensor_array_inputs(op) if op.type in _TENSOR_ARRAY else oracle.inputs(op)
        )
        for tensor, info in zip(op.inputs, infos):
            if tensor.op.type in _NEXT_ITERATION and op.type in _MERGE:
                for exit_op in _loop_exits(op, present):
                    cut = _control_flow_inputs(exit_op)[0]  # a back_prop=False loop stays cut
                    builder.add_edge(tensor.op.name, exit_op.name, tensor, info if cut.carries else cut)
            else:
                builder.add_edge(tensor.op.name, node, tensor, info)
    for node, src in distinct.items():
        graph.add_node(node, kind="variable", label=src.name, name=src.name, dtype=src.dtype,
                       shape=src.shape, trainable=src.trainable, index=int(node.split(":")[1]))
        graph.graph["variables"].append(node)
        builder.add_edge(node, src.tensor.op.name, src.tensor, CARRY_IF_TRAINABLE(src.tensor))
    for tensor in targets:
        node = loss_node(tensor.name)
        if node not in graph:
            graph.add_node(node, kind="loss", label=tensor.name, name=tensor.name, dtype=tensor.dtype.name,
                           shape=_shape(tensor))
            graph.graph["losses"].append(node)
        builder.add_edge(tensor.op.name, node, tensor, CARRY_IF_TRAINABLE(tensor))
    return graph


# A ``tf.while_loop`` of TensorFlow 1 (control flow v1) is a cycle: Enter -> Merge -> Switch ->
# body -> NextIteration -> back to Merge. The graph must stay acyclic for the barrier search, and
# what matters is what a body value can reach: the loop's outputs, through later iterations. So
# the back edge into the Merge is replaced by edges from the NextIteration to every Exit of its loop.
_NEXT_ITERATION = frozenset({"NextIteration", "RefNextIteration"})
_MERGE = frozenset({"Merge", "RefMerge"})


_CONTROL_FLOW = frozenset(
    {"Enter", "RefEnter", "Exit", "RefExit", "Switch", "RefSwitch", "LoopCond"} | _NEXT_ITERATION | _MERGE
)


def _control_flow_inputs(op: Any) -> tuple[InputGradient, ...]:
    """Control flow v1 passes a gradient to every data input (control_flow_grad.py), except out of a
    ``while_loop(back_prop=False)``; the predicate is a bool, which carries nothing.

    (Its gradient functions need the op's control flow context, which a probe in a scratch graph lacks.)
    """
    if op.type in ("Exit", "RefExit"):
        context = op._get_control_flow_context()  # noqa: SLF001
        if context is not None and getattr(context, "back_prop", True) is False:
            detail = "tf.while_loop(back_prop=False) passes no gradient back"
            return (InputGradient(False, BarrierKind.NOT_DIFFERENTIABLE, detail),) * len(op.inputs)
    return tuple(CARRY_IF_TRAINABLE(t) for t in op.inputs)


# TensorArray ops of TensorFlow 1 (dynamic_rnn's loops): their gradients (tensor_array_grad.py)
# flow to the written value and the flow tensor only; they also need a gradient graph to probe in.
_TENSOR_ARRAY = frozenset({
    "TensorArrayV3", "TensorArrayReadV3", "TensorArrayWriteV3", "TensorArrayGatherV3", "TensorArrayScatterV3",
    "TensorArrayConcatV3", "TensorArraySplitV3", "TensorArraySizeV3",
})


def _tensor_array_inputs(op: Any) -> tuple[InputGradient, ...]:
    names = [arg.name for arg in op.op_def.input_arg]
    carries = ("value", "flow_in") if op.type != "TensorArraySizeV3" else ()
    return tuple(
        CARRY_IF_TRAINABLE(t) if name in carries
        else InputGradient(False, BarrierKind.NONE_GRADIENT, f"the gradient of {op.type} returns None for its {name}")
        for name, t in zip(names, op.inputs)
    )


def _loop_exits(merge: Any, present: set[str]) -> list[Any]:
    context = merge._get_control_flow_context()  # noqa: SLF001 -- the op's WhileContext
    exits = getattr(context, "loop_exits", None) or []
    return [t.op for t in exits if t.op.name in present]


def _upstream(ops: Sequence[Any]) -> list[Any]:
    """The ops the given ones depend on through data inputs (themselves included), in graph order."""
    seen: dict[int, Any] = {}
    stack = list(ops)
    while stack:
        op = stack.pop()
        if id(op) in seen:
            continue
        seen[id(op)] = op
        stack.extend(t.op for t in op.inputs)
    return sorted(seen.values(), key=lambda op: op._id)  # noqa: SLF001 -- creation order


def _shape(tensor: Any) -> tuple[int | None, ...]:
    shape = tensor.shape
    return tuple(shape.as_list()) if shape.rank is not None else ()
