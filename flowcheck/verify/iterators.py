"""The ``tf.data`` iterators a step draws from: their positions, saved to be put back after a run of the step."""

from __future__ import annotations

from typing import Any, Final

import tensorflow as tf
from tensorflow.python.ops import gen_dataset_ops

from flowcheck.trace.state import iterators_of

__all__ = ["iterator_state", "put_back", "python_effects", "saved_positions", "unrestorable"]


def iterator_state(iterator: Any) -> Any:
    """A ``tf.data`` iterator's position (``OwnedIterator._save`` without its text encoding); None when
    it cannot be saved (a distributed iterator, a dataset whose map draws with a stateful op such as
    ``tf.random.uniform``, or a dataset with state outside TensorFlow: a generator,
    whose position tf.data would leave out of the state and restore wrongly)."""
    try:
        return gen_dataset_ops.serialize_iterator(
            iterator._iterator_resource, external_state_policy=tf.data.experimental.ExternalStatePolicy.FAIL.value,  # noqa: SLF001
        )
    except (tf.errors.OpError, AttributeError):
        return None


def unrestorable(traced: Any) -> str | None:
    """Why running the step once would change what the script trains on (None: every state it
    touches can be put back): it draws batches from an iterator whose position cannot be saved, or
    iterates a dataset that draws new seeds each time (a ``shuffle``: the next epoch's order)."""
    from tensorflow.python.data.ops import dataset_ops
    from tensorflow.python.distribute import input_lib

    from flowcheck._datasets import draws_seeds

    for iterator in iterators_of(traced.function, traced.args):
        if iterator_state(iterator) is None:
            return (f"not verified: the step draws batches from a {type(iterator).__name__} whose position "
                    "cannot be saved, so a run of it would change the batches the script trains on")
    for dataset in iterators_of(traced.function, traced.args, (dataset_ops.DatasetV2, input_lib.DistributedDataset)):
        if draws_seeds(getattr(dataset, "_original_dataset", dataset)):
            return ("not verified: the step iterates a dataset whose shuffle draws new seeds at each pass, so a run "
                    "of it would change the order the script trains on")
    return None


# The ops that call back into Python (tf.numpy_function, tf.py_function) with effects of their own (stateful).
_PYTHON_OPS: Final = frozenset({"PyFunc", "EagerPyFunc"})


def python_effects(traced: Any) -> str | None:
    """Why a run of the step ahead of its call cannot be undone: it calls Python functions (an environment's
    ``step`` through ``tf.numpy_function``) whose effects are theirs; None when it calls none."""
    from tensorflow.python.ops import script_ops

    graph = getattr(getattr(traced, "concrete", None), "graph", None)
    if graph is None:
        return None
    # (the graph's own ops, then the bodies it holds, a loop's included, as its library keeps them)
    tokens = [op.get_attr("token").decode() for op in graph.get_operations() if op.type in _PYTHON_OPS]
    bodies = [getattr(f, "definition", None) for f in getattr(graph, "_functions", {}).values()]
    tokens += [n.attr["token"].s.decode() for body in bodies if body is not None for n in body.node_def if n.op in _PYTHON_OPS]
    if not tokens:
        return None
    found = [script_ops._py_funcs.get(t) for t in tokens]  # noqa: SLF001 -- tf.py_function's is an EagerFunc holding it
    names = dict.fromkeys(getattr(getattr(f, "_func", f), "__name__", "a Python function") for f in found)
    return (f"not verified: the step calls Python through tf.numpy_function or tf.py_function ({', '.join(names)}), "
            "whose effects a run of it ahead of the script's own call could not undo")


def saved_positions(fn: Any, args: Any) -> list[tuple[Any, Any]]:
    """Each iterator ``fn`` can draw from, with its position (None where it cannot be saved)."""
    return [(iterator, iterator_state(iterator)) for iterator in iterators_of(fn, args)]


def put_back(saved: list[tuple[Any, Any]]) -> None:
    """Put each iterator back where :func:`saved_positions` found it."""
    for iterator, state in saved:
        if state is not None:
            gen_dataset_ops.deserialize_iterator(iterator._iterator_resource, state)  # noqa: SLF001
