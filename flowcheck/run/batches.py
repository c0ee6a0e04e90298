"""``fit``'s one-step function, and its first batch, taken so that the step can be analyzed on it and given back.

Keras's train function takes an iterator. flowcheck takes the first batch out to analyze the step
on it, then hands the batch back. Chained in front of the iterator, the batch makes Keras run that
first step through ``one_step_on_data`` on its own, where ``fit`` would run it inside its
``multi_step_on_iterator``: the same ops, but another instance of each kernel, so a random op that
keeps its own state (``tf.random.normal``) draws its first numbers again at the second step. Under
``--continue`` the training must be exactly the script's, so there the iterator itself is put back
where it was, from a checkpoint of its state, when tf.data can save it.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["first_batch", "keras_caller", "kept_step_text", "one_step_function", "trainable_ids", "unwrap_train_function"]


def first_batch(iterator: Any, exact: bool) -> tuple[Any, Callable[[], Any]]:
    """``iterator``'s next batch, and a function giving back an iterator that yields it again first.

    With ``exact`` the iterator is rewound (its state saved and restored), so ``fit`` runs every
    step as it would have; otherwise, or when its state cannot be saved, the batch is chained in
    front of it.
    """
    taken = _rewound(iterator) if exact else None
    if taken is not None and taken[1]:
        return taken[0], lambda: iterator
    data = next(iterator) if taken is None else taken[0]
    return data, lambda: itertools.chain([data], iterator)


def _rewound(iterator: Any) -> tuple[Any, bool] | None:
    """The next batch and whether the iterator was put back before it (None: nothing taken, tf.data
    cannot save its state)."""
    import tensorflow as tf

    try:
        checkpoint = tf.train.Checkpoint(iterator=iterator)
    except (TypeError, ValueError):
        return None
    with tempfile.TemporaryDirectory(prefix="flowcheck-iterator-") as folder:
        try:
            saved = checkpoint.write(os.path.join(folder, "iterator"))
        except (tf.errors.OpError, TypeError, ValueError, NotImplementedError):
            return None  # a py_function dataset: no saved state
        data = next(iterator)
        try:
            checkpoint.read(saved).assert_consumed()
        except tf.errors.OpError:  # a generator's: saved before its first element, refused after it
            return data, False
    return data, True


def one_step_function(function: Any) -> Any:
    """The ``tf.function`` running one step of ``fit`` (Keras's ``one_step_on_data``), if any: none when
    the model runs eagerly (``run_eagerly=True``, or ``tf.config.run_functions_eagerly(True)``)."""
    import tensorflow as tf

    if tf.config.functions_run_eagerly():
        return None
    for cell in getattr(function, "__closure__", None) or ():
        value = getattr(cell.cell_contents, "__wrapped__", None)  # inside _autoconvert_optionals
        if isinstance(value, tf.types.experimental.PolymorphicFunction) and value.__name__ == "one_step_on_data":
            return value
    return None


def keras_caller() -> str:
    """How the user's code called the step on the stack: ``"fit"`` or ``"train_on_batch"``."""
    for frame in traceback.extract_stack():
        if frame.name in ("fit", "train_on_batch") and "/keras/" in frame.filename:
            return frame.name
    return "fit"


def unwrap_train_function(model: Any, function: Any) -> None:
    """Give ``model`` back its own train function (``function``), unless it has made another since."""
    if getattr(model.train_function, "_flowcheck_wrapped", False):
        model.train_function = function


def trainable_ids(model: Any) -> tuple[int, ...]:
    """The ids of ``model``'s trainable weights, as its train function's first call sees them."""
    return tuple(id(w) for w in model.trainable_weights)


def kept_step_text(first: tuple[Any, Any, tuple[int, ...]] | None, site: Any) -> str | None:
    """A Keras train function run again (from ``site``, the user's line) after ``trainable`` changed since its first call, in one line.

    ``first``: the model, its :class:`~flowcheck.run.step.Step` and :func:`trainable_ids` at that
    call (None: it asked for no gradient).

    Keras 3 traces the step at its first call and keeps it until ``compile()`` (the script alone
    traced it then, on the flags of then: ``trainable``): a weight frozen since that the step trains
    (a second ``fit`` without ``compile()``) is still trained, and, in Keras's own ``train_step``,
    one made trainable since (a callback's gradual unfreezing) is not. None when nothing changed so.
    """
    if first is None:
        return None
    model, step, trainable = first
    now = trainable_ids(model)
    if now == trainable:
        return None
    from flowcheck._model import Verdict
    from flowcheck.trace.eager_sites import backing
    from flowcheck.trace.kept_step import overrides_train_step

    sources = [s for site in getattr(step.report, "gradient_sites", None) or () for s in site.sources]
    trained = {id(backing(s.variable)) for s in sources if s.verdict is Verdict.RECEIVES}
    # (a weight the first call built, a subclassed model's first fit, is among the step's sources: not made trainable since)
    frozen, before = set(trainable) - set(now), set(trainable) | {id(backing(s.variable)) for s in sources}
    still = [w for w in model.weights if id(w) in frozen and id(backing(w)) in trained]
    left_out = [] if overrides_train_step(model) else [
        w for w in model.trainable_weights if id(w) not in before and id(backing(w)) not in before]
    parts = [f"{what} {len(found)} weight{'s' if len(found) != 1 else ''} {since} ({', '.join(w.path for w in found)})"
             for what, found, since in (("still trains", still, "frozen since"),
                                        ("does not train", left_out, "made trainable since")) if found]
    if not parts:
        return None
    call = f"{model.name}.{keras_caller()}{f' at {site}' if site else ''}"
    return (f"{call} runs the step Keras traced at its first call, kept until model.compile() is called again: "
            f"it {' and '.join(parts)}")
