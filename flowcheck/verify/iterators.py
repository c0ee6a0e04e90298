"""The ``tf.data`` iterators a step draws from: their positions, saved to be put back after a run of the step."""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from tensorflow.python.ops import gen_dataset_ops

from flowcheck.trace.state import iterators_of

__all__ = ["iterator_state", "put_back", "saved_positions", "unrestorable"]


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
    touches can be put back): it draws batches from an iterator whose position cannot be saved."""
    for iterator in iterators_of(traced.function, traced.args):
        if iterator_state(iterator) is None:
            return (f"not verified: the step draws batches from a {type(iterator).__name__} whose position "
                    "cannot be saved, so a run of it would change the batches the script trains on")
    return None


def saved_positions(fn: Any, args: Any) -> list[tuple[Any, Any]]:
    """Each iterator ``fn`` can draw from, with its position (None where it cannot be saved)."""
    return [(iterator, iterator_state(iterator)) for iterator in iterators_of(fn, args)]


def put_back(saved: list[tuple[Any, Any]]) -> None:
    """Put each iterator back where :func:`saved_positions` found it."""
    for iterator, state in saved:
        if state is not None:
            gen_dataset_ops.deserialize_iterator(iterator._iterator_resource, state)  # noqa: SLF001
