"""Truth for gradient-site tests: what the user's own tape returns, computed by running the step.

``tape_truth`` runs a step's Python function eagerly, nested ``tf.function`` s too, with
``tf.GradientTape``'s ``gradient``, ``jacobian`` and ``batch_jacobian`` spied on (an independent
patch, not flowcheck's recorder), records per call whether TensorFlow gave None for each source,
and restores every variable it was given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf


def tape_truth(step: Callable[[], Any], state: Sequence[Any]) -> list[list[bool]]:
    """Per gradient call made by ``step()``: for each source, True when the tape gave None."""
    answers: list[list[bool]] = []
    busy = [False]
    originals = {name: getattr(tf.GradientTape, name) for name in ("gradient", "jacobian", "batch_jacobian")}

    def spy(name: str) -> Callable[..., Any]:
        def wrapper(self: Any, target: Any, sources: Any, *args: Any, **kwargs: Any) -> Any:
            if busy[0]:
                return originals[name](self, target, sources, *args, **kwargs)
            busy[0] = True
            try:
                result = originals[name](self, target, sources, *args, **kwargs)
            finally:
                busy[0] = False
            answers.append([r is None for r in tf.nest.flatten(result)])
            return result
        return wrapper

    saved = snapshot(state)
    for name in originals:
        setattr(tf.GradientTape, name, spy(name))
    eager = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(True)  # nested tf.functions too: every tape answers with values
    try:
        step()
    except ValueError as exc:  # Keras: every gradient None; the answers are recorded already
        if "No gradients provided" not in str(exc):
            raise
    finally:
        tf.config.run_functions_eagerly(eager)
        for name, original in originals.items():
            setattr(tf.GradientTape, name, original)
        restore(state, saved)
    return answers


def backing(v: Any) -> Any:
    inner = getattr(v, "_value", None)
    return inner if isinstance(inner, tf.Variable) else v


def snapshot(state: Sequence[Any]) -> list[np.ndarray]:
    return [np.array(backing(v).numpy(), copy=True) for v in state]


def restore(state: Sequence[Any], saved: Sequence[np.ndarray]) -> None:
    for v, value in zip(state, saved):
        backing(v).assign(value)


def same(state: Sequence[Any], saved: Sequence[np.ndarray]) -> bool:
    """Bit for bit."""
    return all(
        a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
        for a, b in zip((np.asarray(backing(v).numpy()) for v in state), saved)
    )


def assert_sites_match(report: Any, truth: list[list[bool]]) -> None:
    """Every site agrees with TensorFlow's answer at trace time and with the eager tape's."""
    assert len(report.gradient_sites) == len(truth), (report.gradient_sites, truth)
    for site, answers in zip(report.gradient_sites, truth):
        assert site.agrees, [(s.name, s.verdict, s.tensorflow_none) for s in site.sources]
        assert [s.tensorflow_none for s in site.sources] == answers
        assert [not s.receives for s in site.sources] == answers
