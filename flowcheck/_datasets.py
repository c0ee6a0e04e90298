"""A sample element of a user's ``tf.data.Dataset``, taken without changing what the user's own iterators see.

Each iterator of a ``shuffle`` (``reshuffle_each_iteration``, the default, seeded or not) or of a
``Dataset.random`` (``rerandomize_each_iteration``) takes the next seeds of a generator the dataset
holds: one more iterator, for a sample, would give every epoch of ``fit`` another order. Such a
dataset is sampled from a copy of its graph whose generators are new ones, starting where the
dataset's own started; its in-memory data (``from_tensor_slices``) is cut to its first rows in the
copy, which a sample needs, and which keeps the copy cheap (a CIFAR-sized array took 25 s whole).
"""

from __future__ import annotations

from typing import Any, Final

import tensorflow as tf

__all__ = ["draws_seeds", "first_element"]

# Rows of in-memory data kept in the copy: more than any batch but the largest.
_SAMPLE_ROWS: Final = 1024


def first_element(dataset: Any) -> Any:
    """The first element of ``dataset``; its seed generators left as they were."""
    if not draws_seeds(dataset):
        return next(iter(dataset))
    for rows in (_SAMPLE_ROWS, None):
        try:
            copy = _unshared(dataset, rows)
            if copy is None:  # tf.data cannot serialize it: nothing else can sample it
                break
            return next(iter(copy))
        except StopIteration:  # a batch larger than the rows kept, its remainder dropped
            continue
        except tf.errors.OpError:  # the copy cannot be rebuilt: sampling the dataset itself beats failing fit
            break
    return next(iter(dataset))


def draws_seeds(dataset: Any) -> bool:
    """Whether an iterator of ``dataset`` takes seeds from a generator it holds (unknown: True)."""
    inputs = getattr(dataset, "_inputs", None)
    if inputs is None:
        return True
    if getattr(dataset, "_reshuffle_each_iteration", False) or getattr(dataset, "_rerandomize", False):
        return True
    return any(draws_seeds(d) for d in inputs())


def _unshared(dataset: Any, rows: int | None) -> Any:
    """A copy of ``dataset`` with seed generators of its own and its in-memory data cut to ``rows``
    (None: all); None when tf.data cannot serialize it."""
    from tensorflow.core.framework import graph_pb2
    from tensorflow.python.data.ops import dataset_ops
    from tensorflow.python.framework import op_def_registry
    from tensorflow.python.ops import gen_dataset_ops, gen_experimental_dataset_ops

    try:
        serialized = gen_dataset_ops.dataset_to_graph_v2(
            dataset._variant_tensor,  # noqa: SLF001 -- the only way to a dataset's graph
            external_state_policy=tf.data.experimental.ExternalStatePolicy.IGNORE.value,
        )
    except tf.errors.OpError:
        return None
    graph = graph_pb2.GraphDef.FromString(serialized.numpy())
    nodes = {node.name: node for node in graph.node}
    nodes.update({f"{name}:0": node for name, node in list(nodes.items())})  # inputs name an output, or not
    for node in graph.node:
        op_def = op_def_registry.get(node.op)
        for arg, name in zip(op_def.input_arg if op_def is not None else (), node.input):  # single inputs first
            if arg.name == "seed_generator" and name in nodes and nodes[name].op == "Const":  # the dataset's own generator
                nodes[name].op = "DummySeedGenerator"  # the kernel makes a generator for a handle it cannot find
                nodes[name].ClearField("attr")
        if node.op == "TensorSliceDataset" and rows is not None:  # its one list input: every component
            _cut([nodes.get(name) for name in node.input], rows)
    variant = gen_experimental_dataset_ops.dataset_from_graph(graph.SerializeToString())
    return dataset_ops._VariantDataset(variant, dataset.element_spec)  # noqa: SLF001


def _plain(const: Any) -> bool:
    """Whether a constant holds numbers NumPy reads from its bytes (not strings, not a variant: a ragged
    or sparse component's)."""
    dtype = tf.as_dtype(const.attr["value"].tensor.dtype)
    return bool(dtype.is_floating or dtype.is_integer or dtype.is_bool or dtype.is_complex)


def _cut(components: list[Any], rows: int) -> None:
    """Keep the first ``rows`` rows of every component of a ``TensorSliceDataset``, or of none (their
    rows must stay equal): of none when one is not a constant NumPy can read."""
    if not all(c is not None and c.op == "Const" and _plain(c) for c in components):
        return
    try:
        values = [tf.make_ndarray(c.attr["value"].tensor) for c in components]
    except (ValueError, TypeError, KeyError):  # a dtype NumPy cannot hold: keep them whole
        return
    for const, value in zip(components, values):
        if value.ndim and value.shape[0] > rows:
            const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value[:rows]))
