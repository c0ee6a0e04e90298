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
# table keyed by models would keep every model a search over hyperparameters made alive. The model,
# its step and its optimizer are held weakly and compared by identity (an id alone may be reused by
# the step or optimizer a later compile() makes once the old one is freed).
_KEPT: list[tuple[tuple[weakref.ref[Any], ...], tuple[Any, ...], Any]] = []


def _owners(model: Any) -> tuple[Any, ...]:
    return model, getattr(model, "train_function", None), getattr(model, "optimizer", None)


def _key(model: Any, batch: Any) -> tuple[Any, ...] | None:
    import tensorflow as tf

    from flowcheck.trace.steps import runs_eagerly

    if runs_eagerly(model):
        return None
    leaves = tf.nest.flatten(batch)
    sample = tuple((type(v).__name__, tuple(getattr(v, "shape", ())), str(getattr(v, "dtype", ""))) for v in leaves)
    flags = tuple((id(w), bool(w.trainable)) for w in model.weights)
    trainable = tuple(id(w) for w in model.trainable_weights)
    return flags, trainable, sample


def cached_report(model: Any, batch: Any) -> Any:
    """The report kept for ``model`` on a batch like ``batch``, when nothing it depends on changed."""
    if not _KEPT:
        return None
    refs, key, report = _KEPT[0]
    if any(ref() is not owner for ref, owner in zip(refs, _owners(model))):
        return None
    return report if key == _key(model, batch) else None


def keep_report(model: Any, batch: Any, report: Any) -> None:
    """Keep ``report`` for the next ``fit`` of ``model``, in place of the one kept before."""
    key = _key(model, batch)
    _KEPT.clear()
    if key is None or any(owner is None for owner in _owners(model)):
        return
    try:
        refs = tuple(weakref.ref(owner) for owner in _owners(model))
    except TypeError:  # not weakly referenceable: nothing kept
        return
    _KEPT.append((refs, key, report))
