"""Stage 2: the traced graph as a ``networkx.DiGraph`` whose edges know if a gradient flows.

Nodes (``graph.nodes[n]``) -- every node has ``kind`` and ``label``:

* ``kind="op"``: one TensorFlow op. Id: the op's name, prefixed by the id of the op that holds
  the function it lives in (``"cond/then:mul"``). Attributes: ``name`` (the op's own name),
  ``op_type``, ``cluster`` (id of the innermost function cluster or ``None``), ``outputs``
  (a sequence of ``"float32[2,3]"`` strings, described when first read:
  :class:`~flowcheck.graph.outputs.Outputs`), ``op`` (the ``tf.Operation``; opaque to the analysis).
* ``kind="variable"``: one variable. Id ``"variable:<i>"`` where ``i`` indexes
  ``Traced.variables``. Attributes: ``name``, ``dtype``, ``shape``, ``trainable``, ``index``.
* ``kind="loss"``: one differentiated output. Id ``"loss:<name>"``. Attributes: ``name``,
  ``dtype``, ``shape``.

Edges (``graph.edges[u, w]``) run from producer to consumer, one per pair of nodes:

* ``grad``: True when TensorFlow's autodiff carries a gradient from ``w`` back to ``u`` along it.
* ``kind``: a :class:`~flowcheck._model.BarrierKind` when ``grad`` is False, else ``None``.
* ``detail``: a human explanation of ``kind``; ``tensor``: the tensor's name; ``dtype``.
* ``loop_carry``: present (True) on an edge from a ``While`` body's input placeholder straight to
  its gate, which carries only because a traced loop gives every loop variable a gradient (below);
  an eager loop does not, so the eager call's barriers are found without these edges.
* ``tape``: present on an edge into an op under ``gradient_override_map``: ``(grad, kind, detail)``
  as a ``GradientTape`` recording inside the function judges it (by the op's own type).

Graph attributes: ``graph.graph["clusters"]`` maps cluster id to ``{"label", "parent", "kind",
"gate", "inputs"}`` (``kind`` is ``function``, ``cond``, ``case`` or ``while``; ``gate`` is the node
of the op holding the body; ``inputs`` its input placeholders of a differentiable dtype, fed from
outside);
``graph.graph["variables"]`` and ``graph.graph["losses"]`` list the variable and loss node ids in
order; ``graph.graph["inputs"]`` lists the top function's inputs of a differentiable dtype
(arguments and captures), which TensorFlow differentiates the function with respect to;
``graph.graph["step"]`` is True for a training step (its losses are its gradient calls' targets, and
its graph also holds the backward pass, which no target depends on).

Function bodies are inlined. An op holding functions becomes a *gate* node: its inputs feed the
bodies' input placeholders and the bodies' outputs feed the gate, whose consumers are the op's
consumers. TensorFlow differentiates a called function, an ``If`` or ``Case`` with respect to all
its outputs at once (concrete_function.py, cond_v2.py), which the gate reproduces: once any output
is reached, every output is. A ``While`` gives every trainable loop variable a gradient, zeros
when its path is cut (while_v2.py ``_grad_fn`` uses ``unconnected_gradients="zero"``): each body
input placeholder of a trainable loop variable has an edge straight to the gate. A tf.data op's
per-element function (``bodies.DATASET_OPS``: a ``for x in dataset:`` traced by AutoGraph) is a body
whose state and captured inputs are fed from the op's, and whose outputs reach nothing: no gradient
passes through a dataset, and a tape inside the body is judged there.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import tensorflow as tf

from flowcheck._model import BarrierKind
from flowcheck.graph.bodies import DATASET_OPS, calls_function, function_graph, pretty, returned_outputs, while_trainable
from flowcheck.graph.outputs import Outputs
from flowcheck.graph.ops import (
    ASSIGN_DETAIL,
    ASSIGN_OPS,
    CALL_OPS,
    CASE_OPS,
    FUNCTION_OPS,
    IF_OPS,
    GradientOracle,
    InputGradient,
    dtype_barrier,
    gradient_type,
    is_trainable,
)
from flowcheck.trace.traced import Traced

__all__ = ["build_graph", "endpoints_graph", "variable_node", "loss_node"]

_READ_OPS = frozenset({"ReadVariableOp", "ResourceGather", "ResourceGatherNd"})


def variable_node(index: int) -> str:
    """The node id of variable ``index``."""
    return f"variable:{index}"


def loss_node(name: str) -> str:
    """The node id of the loss output ``name``."""
    return f"loss:{name}"


def build_graph(traced: Traced, oracle: GradientOracle | None = None) -> nx.DiGraph:
    """Build the gradient-annotated graph of a traced function (see the module docstring)."""
    builder = _Builder(oracle or GradientOracle(), appended=not traced.step)
    graph = builder.graph
    top = traced.concrete.graph
    ids = builder.addfunction_graph(top, prefix="", cluster=None)

    def node(tensor: Any) -> str:  # the id already made for its op (asking TensorFlow makes a new string)
        found = ids.get(tensor.op)
        return found[0] if found is not None else builder.node_of(tensor, "")

    graph.graph["inputs"] = [node(t) for t in top.inputs if is_trainable(t)]
    _add_endpoints(graph, traced)
    for inner_ref, i in traced.captured.items():
        placeholder = inner_ref.deref()
        # The verdict is a watched tape's answer, whatever the variable's trainable flag.
        builder.add_edge(variable_node(i), node(placeholder), placeholder, CARRY_IF_TRAINABLE(placeholder))
    for loss in traced.losses:
        builder.add_edge(node(loss.tensor), loss_node(loss.name), loss.tensor, InputGradient(True))
    return graph


def endpoints_graph(traced: Traced) -> nx.DiGraph:
    """The variable and loss nodes alone, for a function that could not be traced (no ops to read)."""
    graph = nx.DiGraph(clusters={}, variables=[], losses=[], inputs=[])
    _add_endpoints(graph, traced)
    return graph


def _add_endpoints(graph: nx.DiGraph, traced: Traced) -> None:
    nodes = graph.graph["variables"]
    for i, var in enumerate(traced.variables):
        nodes.append(variable_node(i))
        _put_node(graph, nodes[-1], {
            "kind": "variable", "label": var.name, "name": var.name, "dtype": var.dtype,
            "shape": var.shape, "trainable": var.trainable, "index": i,
        })
    for loss in traced.losses:
        node = loss_node(loss.name)
        _put_node(graph, node, {"kind": "loss", "label": loss.name, "name": loss.name, "dtype": loss.dtype, "shape": loss.shape})
        graph.graph["losses"].append(node)


def _put_node(graph: nx.DiGraph, node: str, attrs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``graph.add_node(node, **attrs)`` into networkx's dicts (see :class:`_Builder`); its successors' and predecessors' dicts."""
    found = graph._node.setdefault(node, attrs)  # noqa: SLF001 -- one probe of the big dict, not a lookup then an insert
    if found is not attrs:  # made by an edge into it (a TensorFlow 1 loop's back edge)
        found.update(attrs)
        return graph._succ[node], graph._pred[node]  # noqa: SLF001
    succ: dict[str, Any] = {}
    pred: dict[str, Any] = {}
    graph._succ[node] = succ  # noqa: SLF001
    graph._pred[node] = pred  # noqa: SLF001
    return succ, pred


def CARRY_IF_TRAINABLE(tensor: Any) -> InputGradient:  # noqa: N802 -- reads as a constant rule
    """A plain data edge: it carries a gradient exactly when its dtype can."""
    return InputGradient(True) if is_trainable(tensor) else dtype_barrier(tensor)


class _Builder:
    def __init__(self, oracle: GradientOracle, appended: bool = True) -> None:
        self.oracle = oracle
        self.appended = appended  # link consumed appended outputs (see _link_appended)
        self.graph = nx.DiGraph(clusters={}, variables=[], losses=[], inputs=[])
        # networkx's own dicts, written directly (as DiGraph.add_node and add_edge write them, in
        # the same order): its methods cost more per call than the rest of an op's work. Nothing
        # reads the graph while it is built, so networkx's cache of results has nothing to clear.
        self._succ = self.graph._succ  # noqa: SLF001
        self._pred = self.graph._pred  # noqa: SLF001

    @staticmethod
    def node_of(tensor: Any, prefix: str) -> str:
        return prefix + str(tensor.op.name)

    def add_edge(
        self, u: str, w: str, tensor: Any, info: InputGradient,
        out: dict[str, Any] | None = None, into: dict[str, Any] | None = None,
    ) -> None:
        """Add or update the edge ``u -> w``; ``out`` and ``into`` are ``u``'s successors' and ``w``'s
        predecessors' dicts when the caller holds them (each lookup costs a cache miss on a large graph)."""
        if out is None:
            out = self._succ.get(u)
        if into is None:
            into = self._pred.get(w)
        if out is None or into is None:  # a node not seen yet (so no edge either): networkx adds it
            self.graph.add_edge(
                u, w, grad=info.carries, kind=info.kind, detail=info.detail, tensor=tensor.name, dtype=tensor.dtype.name,
            )
            return
        data = out.get(w)
        if data is not None:
            if data["grad"] or not info.carries:
                return  # a carrying edge stays carrying; the first barrier found is kept
            data.update(grad=True, kind=info.kind, detail=info.detail, tensor=tensor.name, dtype=tensor.dtype.name)
            return
        out[w] = into[u] = {
            "grad": info.carries, "kind": info.kind, "detail": info.detail,
            "tensor": tensor.name, "dtype": tensor.dtype.name,
        }

    def add_op_node(
        self, op: Any, node: str, cluster: str | None, op_type: str | None = None, name: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Add ``op``'s node; return its successors' and predecessors' dicts."""
        op_type = op_type or op.type
        attrs = {
            "kind": "op", "label": op_type, "name": name or op.name, "op_type": op_type, "cluster": cluster,
            "outputs": Outputs(op), "op": op,
        }
        return _put_node(self.graph, node, attrs)

    def addfunction_graph(self, fgraph: Any, prefix: str, cluster: str | None) -> dict[Any, tuple[str, dict[str, Any]]]:
        """Add the ops of ``fgraph`` (and the bodies they hold); return each op's node id and successors' dict."""
        assigns: dict[Any, list[str]] = {}  # handle tensor -> the writes seen (each value written is cut)
        # Op -> its node id and its successors' dict: an input's producer is found by identity, and
        # its id is the very string that keys networkx's dicts (asking TensorFlow for the name makes
        # a new string to hash and compare); an edge then costs no lookup in the graph's big dicts.
        ids: dict[Any, tuple[str, dict[str, Any]]] = {}
        answers = self.oracle.answers
        for op in fgraph.get_operations():
            name = op.name
            node = prefix + name
            op_type = op.type
            out, into = self.add_op_node(op, node, cluster, op_type, name)
            ids[op] = (node, out)
            inputs = op.inputs
            if op_type in FUNCTION_OPS or calls_function(op, op_type):
                self.add_function_op(op, node, prefix, cluster)
            elif inputs:
                grad_type = gradient_type(op, op_type)
                for tensor, info in zip(inputs, answers(op, op_type, inputs, grad_type)):
                    found = ids.get(tensor.op)
                    if found is None:  # made outside this function
                        self.add_edge(prefix + tensor.op.name, node, tensor, info)
                    else:
                        self.add_edge(found[0], node, tensor, info, found[1], into)
                if grad_type != op_type:  # an override, or a custom gradient
                    self.add_tape_answers(op, node, op_type, [ids[t.op][0] if t.op in ids else prefix + t.op.name for t in inputs])
            if op_type in DATASET_OPS:
                self.add_dataset_function(op, node, prefix, cluster, *DATASET_OPS[op_type])
            if op_type in _READ_OPS and inputs[0].ref() in assigns:
                for write in assigns[inputs[0].ref()]:
                    self.add_edge(write, node, inputs[0], InputGradient(False, BarrierKind.ASSIGN, ASSIGN_DETAIL))
            if op_type in ASSIGN_OPS:
                assigns.setdefault(inputs[0].ref(), []).append(node)
        return ids

    def add_tape_answers(self, op: Any, node: str, op_type: str, producers: list[str]) -> None:
        """Mark the edges into ``op`` that a tape inside the function judges otherwise (``tape``)."""
        found = self.oracle.tape_answers(op, op_type, op.inputs)
        if found is None:
            return
        for u, info in zip(producers, found):
            data = self._succ[u][node]
            before = data.get("tape")
            if before is None or (info.carries and not before[0]):
                data["tape"] = (info.carries, info.kind, info.detail)

    def add_function_op(self, op: Any, node: str, prefix: str, cluster: str | None) -> None:
        if op.type not in FUNCTION_OPS or op.type in CALL_OPS:
            # A direct call has the function's name as its op type (legacy Defun bodies, such as
            # the loops of tf.nn.ctc_loss); gradients_util differentiates it like a call op.
            fname = op.get_attr("f").name if op.type in CALL_OPS else op.type
            body = function_graph(op, fname)
            label = f"{pretty(fname)} (tf.function)" if op.type in CALL_OPS else f"{fname} (function)"
            self.add_body(op, node, prefix, cluster, body, op.inputs, "f", label, "function")
        elif op.type in IF_OPS or op.type in CASE_OPS:
            self.add_edge(
                self.node_of(op.inputs[0], prefix), node, op.inputs[0],
                InputGradient(False, BarrierKind.PREDICATE, f"the {'condition' if op.type in IF_OPS else 'branch index'} of {op.name} has no gradient"),
            )
            if op.type in IF_OPS:
                branches = [("then", op.get_attr("then_branch").name), ("else", op.get_attr("else_branch").name)]
            else:
                branches = [(f"branch{i}", f.name) for i, f in enumerate(op.get_attr("branches"))]
            kind = "cond" if op.type in IF_OPS else "case"
            for tag, fname in branches:
                body = function_graph(op, fname)
                self.add_body(op, node, prefix, cluster, body, op.inputs[1:], tag, f"{op.name}: {tag}", kind)
        else:
            self.add_while(op, node, prefix, cluster)

    def add_body(
        self, op: Any, node: str, prefix: str, cluster: str | None, body: Any,
        inputs: Any, tag: str, label: str, kind: str, outputs_to_gate: bool = True, placeholders: Any = None,
    ) -> str:
        """Add ``body`` as a cluster held by ``node``, ``inputs`` feeding its ``placeholders`` (all its inputs unless given)."""
        placeholders = body.inputs if placeholders is None else placeholders
        inner_prefix = f"{node}/{tag}:"
        inner_cluster = f"{node}/{tag}"
        self.graph.graph["clusters"][inner_cluster] = {
            "label": label, "parent": cluster, "kind": kind, "gate": node,
            "inputs": [inner_prefix + t.op.name for t in placeholders if is_trainable(t)],
        }
        self.addfunction_graph(body, inner_prefix, inner_cluster)
        for outer, placeholder in zip(inputs, placeholders):
            self.add_edge(self.node_of(outer, prefix), inner_prefix + placeholder.op.name, outer, CARRY_IF_TRAINABLE(outer))
        if outputs_to_gate:
            outputs = body.outputs if kind == "while" else returned_outputs(body)
            for out in outputs:
                self.add_edge(inner_prefix + out.op.name, node, out, CARRY_IF_TRAINABLE(out))
            if kind != "while" and self.appended:
                self._link_appended(op, node, inner_prefix, body, len(outputs))
        return inner_prefix

    def _link_appended(self, op: Any, node: str, inner_prefix: str, body: Any, returned: int) -> None:
        """Link the appended outputs (intermediates of a gradient of the op) that the caller's graph consumes.

        A tape inside the function that differentiated the op pointed it at a forward function
        whose outputs end with the intermediates its backward function reads (a custom gradient's
        captured inputs, say). Differentiating the whole function again (a gradient penalty's second
        order) differentiates the op with respect to those outputs too, zeros when they reach
        nothing: what they come from gets a gradient. Unconsumed (a nested function's forward
        graph met again after an earlier gradient), they are never differentiated; nor in a training
        step, whose tapes differentiate the op before it is rewritten.
        """
        for i in range(returned, min(len(body.outputs), len(op.outputs))):
            if op.outputs[i].consumers():
                out = body.outputs[i]
                self.add_edge(inner_prefix + out.op.name, node, out, CARRY_IF_TRAINABLE(out))

    def add_dataset_function(self, op: Any, node: str, prefix: str, cluster: str | None, attr: str, state: str | None) -> None:
        """The function a tf.data op runs per element, as a body of its own: a tape inside it (a
        training loop over a dataset in a ``tf.function``) is judged there. Its outputs reach nothing
        outside: the dataset op's own edges (no gradient) stay as the oracle answered them."""
        body = function_graph(op, op.get_attr(attr).name)
        held = len(op.get_attr(state)) if state else 0
        captured = len(op.get_attr("Targuments"))
        pairs = list(zip(op.inputs[1:1 + held], body.inputs[:held]))
        if captured:
            # The op's other_arguments follow its state (ParallelMapDatasetV2 has inputs after them);
            # the function takes them last, after the element's components.
            pairs += zip(op.inputs[1 + held:1 + held + captured], body.inputs[len(body.inputs) - captured:])
        self.add_body(op, node, prefix, cluster, body, [o for o, _ in pairs], attr, f"{op.name}: {attr} (per element)",
                      "function", outputs_to_gate=False, placeholders=[i for _, i in pairs])

    def add_while(self, op: Any, node: str, prefix: str, cluster: str | None) -> None:
        body = function_graph(op, op.get_attr("body").name)
        cond = function_graph(op, op.get_attr("cond").name)
        try:
            original = int(op.get_attr("_num_original_outputs"))
        except (ValueError, TypeError):
            original = len(op.outputs)
        self.add_body(op, node, prefix, cluster, cond, op.inputs, "cond", f"{op.name}: condition", "while", False)
        cond_prefix = f"{node}/cond:"
        for out in cond.outputs:
            self.add_edge(
                cond_prefix + out.op.name, node, out,
                InputGradient(False, BarrierKind.PREDICATE, f"the loop condition of {op.name} has no gradient"),
            )
        inner_prefix = self.add_body(op, node, prefix, cluster, body, op.inputs, "body", f"{op.name}: body", "while")
        for i, (placeholder, out) in enumerate(zip(body.inputs, body.outputs)):
            if i < original and while_trainable(out):
                inner = inner_prefix + placeholder.op.name
                found = self._succ.get(inner, {}).get(node)
                self.add_edge(inner, node, placeholder, InputGradient(True))
                # It carries only because the traced loop gives zeros, or passes on a variable's
                # handle: eagerly a gradient reaches a variable only through its reads.
                if found is None or not found["grad"] or placeholder.dtype == tf.resource:
                    self._succ[inner][node]["loop_carry"] = True
