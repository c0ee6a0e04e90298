"""The Keras callback's analysis kept between ``fit`` calls of one model while nothing it depends on changed.

A script that calls ``fit`` once per epoch in a Python loop, with the callback each time, would
otherwise trace and analyze the same training step on every call (about 4 s on a small
MobileNetV2 whose epoch takes 0.4 s). The analysis depends on the step ``fit`` runs (a new one
after each ``compile()``), the ``trainable`` flags and the sample's shapes and dtypes; not on the
weights' values, as the step is analyzed as traced. A step ``fit`` runs eagerly is judged on its
eager run, whose Python may branch on values: never kept.
"""

from __future__ import annotations

import weakref
from typing import Any

__all__ = ["cached_report", "keep_report"]

# One model's analysis at a time: a report holds its model (its variables, its traced graph), so a
# table keyed by models would keep every model a search over hyperparameters made alive.
_KEPT: list[tuple[Any, tuple[Any, ...], Any]] = []


def _key(model: Any, batch: Any) -> tuple[Any, ...] | None:
    import tensorflow as tf

    from flowcheck.trace.steps import runs_eagerly

    if runs_eagerly(model):
        return None
    leaves = tf.nest.flatten(batch)
    sample = tuple((type(v).__name__, tuple(getattr(v, "shape", ())), str(getattr(v, "dtype", ""))) for v in leaves)
    flags = tuple((id(w), bool(w.trainable)) for w in model.weights)
    trainable = tuple(id(w) for w in model.trainable_weights)
    return id(getattr(model, "train_function", None)), id(getattr(model, "optimizer", None)), flags, trainable, sample


def cached_report(model: Any, batch: Any) -> Any:
    """The report kept for ``model`` on a batch like ``batch``, when nothing it depends on changed."""
    if not _KEPT or _KEPT[0][0]() is not model:
        return None
    key = _key(model, batch)
    return _KEPT[0][2] if key is not None and _KEPT[0][1] == key else None


def keep_report(model: Any, batch: Any, report: Any) -> None:
    """Keep ``report`` for the next ``fit`` of ``model``, in place of the one kept before."""
    key = _key(model, batch)
    _KEPT.clear()
    if key is not None:
        try:
            _KEPT.append((weakref.ref(model), key, report))
        except TypeError:  # not weakly referenceable: nothing kept
            pass
