"""The function bodies an op holds, as :mod:`flowcheck.graph.build` follows them: found in the graphs'
libraries, with the outputs the user's program returns and the loop variables a ``While`` differentiates."""

from __future__ import annotations

from typing import Any, Final

import tensorflow as tf
from tensorflow.python.framework import op_def_registry
from tensorflow.python.util import nest

from flowcheck.errors import TraceError
from flowcheck.graph.ops import is_trainable

__all__ = ["DATASET_OPS", "calls_function", "function_graph", "pretty", "returned_outputs", "while_trainable"]

# tf.data ops whose function a traced ``for x in dataset:`` (AutoGraph: a ScanDataset and a
# ReduceDataset), ``dataset.map`` or ``filter`` runs per element, with attribute -> leading inputs
# of the function that are the op's state (the rest: the element, then the captured ``other_arguments``).
# No gradient passes through a dataset; a tape opened inside the function differentiates its body.
DATASET_OPS: Final[dict[str, tuple[str, str | None]]] = {
    "ScanDataset": ("f", "Tstate"), "ReduceDataset": ("f", "Tstate"), "MapDataset": ("f", None),
    "ParallelMapDataset": ("f", None), "ParallelMapDatasetV2": ("f", None), "FilterDataset": ("predicate", None),
    "TakeWhileDataset": ("predicate", None), "FlatMapDataset": ("f", None),
}


def returned_outputs(body: Any) -> list[Any]:
    """The outputs a function or branch body returns in the user's program.

    Differentiating a function rewrites it in place for the gradient's sake: ``cond_v2._IfGrad``
    appends the intermediates the gradient needs to each branch's ``outputs``, and
    ``concrete_function._rewrite_forward_and_call_backward`` points a call op at a forward function
    whose outputs end with them. Neither changes ``structured_outputs``, whose tensors are the leading
    ``outputs``; the appended ones are never differentiated. A nested ``tf.function`` keeps its
    rewritten graph in its cache, so a fresh trace of the caller meets it after a first gradient.
    (A ``While`` is exempt: its appended accumulators lead only to loop variables, each of which
    already reaches the gate.)
    """
    structured = getattr(body, "structured_outputs", None)
    if structured is None:
        return list(body.outputs)
    # A restored SavedModel function lists TensorSpecs where a traced one has tensors.
    leaves = nest.flatten(structured, expand_composites=True)
    count = sum(isinstance(leaf, (tf.Tensor, tf.TypeSpec)) for leaf in leaves)
    return list(body.outputs[:count]) if 0 < count <= len(body.outputs) else list(body.outputs)


def while_trainable(body_output: Any) -> bool:
    # Mirrors while_v2._is_trainable: an accumulator of non-trainable elements is not trainable.
    if not is_trainable(body_output):
        return False
    if body_output.op.type == "TensorListPopBack" and body_output.value_index == 0:
        return bool(is_trainable(tf.dtypes.as_dtype(body_output.op.get_attr("element_dtype"))))
    return True


def calls_function(op: Any, op_type: str) -> bool:
    """Whether ``op``'s type (``op_type``, read already) is the name of a function in its graph's library (a direct call)."""
    if op_type in op_def_registry._cache:  # noqa: SLF001 -- an op type seen before is no function's name
        return False
    graph = op.graph
    while graph is not None:
        if graph._is_function(op_type):  # noqa: SLF001 -- the graph's function registry
            return True
        graph = getattr(graph, "outer_graph", None)
    return False


def function_graph(op: Any, name: str) -> Any:
    """The FuncGraph of function ``name`` called by ``op``, looked up through the outer graphs."""
    graph = op.graph
    while graph is not None:
        fn = graph._get_function(name)  # noqa: SLF001 -- the graph's function registry
        if fn is not None:
            body = getattr(fn, "graph", None)
            if body is not None:
                return body
            from tensorflow.python.framework import function_def_to_graph

            # A function known only as a FunctionDef (legacy Defun, restored SavedModel): build it
            # where its library is visible, and copy the functions it calls into the new graph so
            # that they can be looked up from it in turn.
            with graph.as_default():
                return function_def_to_graph.function_def_to_graph(fn.cached_definition, include_library_functions=True)
        graph = getattr(graph, "outer_graph", None)
    raise TraceError(f"function {name!r} called by {op.name} is not in the graph's library: flowcheck cannot follow the call")


def pretty(function_name: str) -> str:
    # Traced functions are named like "__inference_inner_119"; show "inner".
    name = function_name
    for head in ("__inference_", "__forward_", "__backward_"):
        if name.startswith(head):
            name = name[len(head):]
    base, _, tail = name.rpartition("_")
    return base if tail.isdigit() and base else name
