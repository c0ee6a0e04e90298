"""Stage 1: what the trace maps to the user's variables, and what it says when it cannot."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import tensorflow as tf

import flowcheck
from truth import watched_truth


def test_a_variable_passed_as_an_argument_is_analyzed_like_a_captured_one() -> None:
    w, c = tf.Variable(1.0, name="w"), tf.Variable(2.0, name="c")

    @tf.function
    def loss(v: Any) -> Any:
        return tf.stop_gradient(v) * c

    report = flowcheck.analyze(loss, w)
    truth = watched_truth(lambda: loss(w), [w, c])
    assert [report.receives_gradient(v) for v in (w, c)] == truth


def test_arguments_that_cannot_be_matched_to_the_trace_are_said_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorflow.python.eager.polymorphic_function import function_type_utils

    w, c = tf.Variable(1.0, name="w"), tf.Variable(2.0, name="c")

    @tf.function
    def loss(v: Any) -> Any:
        return v * c

    original = function_type_utils.canonicalize_function_inputs

    def changed_api(*args: Any, **kwargs: Any) -> Any:
        if sys._getframe(1).f_code.co_name == "_variable_arguments":  # noqa: SLF001 -- only flowcheck's call
            raise TypeError("this TensorFlow binds arguments differently")
        return original(*args, **kwargs)

    monkeypatch.setattr(function_type_utils, "canonicalize_function_inputs", changed_api)
    report = flowcheck.analyze(loss, w)
    assert any("1 variables passed as arguments are not analyzed" in note for note in report.notes)
    assert report.receives_gradient(c)


def test_a_keras_models_trainable_flags_are_its_trainable_variables_overridden_or_frozen() -> None:
    import keras

    class HalfFrozen(keras.layers.Layer):
        """A layer whose trainable_variables leaves out its bias, as some users' layers do."""

        def build(self, input_shape: Any) -> None:
            self.kernel = self.add_weight(shape=(input_shape[-1], 2), name="kernel")
            self.bias = self.add_weight(shape=(2,), name="bias")

        def call(self, x: Any) -> Any:
            return x @ self.kernel + self.bias

        @property
        def trainable_variables(self) -> list[Any]:
            return [self.kernel]

    frozen = keras.layers.Dense(2, name="frozen")
    frozen.trainable = False
    x = tf.ones((2, 3))
    for layer in (HalfFrozen(), keras.Sequential([keras.Input((3,)), frozen, keras.layers.Dense(1)])):
        layer(x)
        report, loss_fn = _analyzed_closure(layer, x)
        trainable = {id(v) for v in layer.trainable_variables}
        assert {id(r.variable): r.trainable for r in report.variables} == {id(v): id(v) in trainable for v in layer.variables}
        assert [r.receives for r in report.variables] == watched_truth(loss_fn, [r.variable for r in report.variables], x)


def _analyzed_closure(layer: Any, x: Any) -> tuple[Any, Any]:
    @tf.function
    def loss_fn(x: Any) -> Any:
        return tf.reduce_sum(layer(x))

    return flowcheck.analyze(loss_fn, x), loss_fn
