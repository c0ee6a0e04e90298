"""The gradient oracle: answers asked of TensorFlow's gradient functions, shared only when safe."""

from __future__ import annotations

import types

import tensorflow as tf

import flowcheck
from flowcheck.graph import ops as _gradients


def _library_keys() -> list[tuple[object, ...]]:
    return [k for k in _gradients._SHARED if k and k[0] == "library custom gradient"]


def _codes(key: tuple[object, ...]) -> list[types.CodeType]:
    return [p for p in key if isinstance(p, types.CodeType)]


def test_tensorflows_own_custom_gradients_are_shared_between_identical_uses() -> None:
    v = tf.Variable([0.5, -1.0], name="v")

    @tf.function
    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.nn.silu(v * x)) + tf.reduce_sum(tf.nn.silu(v + x))

    x = tf.constant([1.0, 2.0])
    with tf.GradientTape() as tape:
        value = loss(x)
    truth = tape.gradient(value, v) is not None
    report = flowcheck.analyze(loss, x)
    assert report.receives_gradient(v) == truth
    silu = [k for k in _library_keys() if any("nn_impl" in c.co_filename for c in _codes(k))]
    assert len(silu) == 1  # two swish ops, one probe


def test_a_users_custom_gradient_is_never_shared() -> None:
    v = tf.Variable([0.5, -1.0], name="v")

    @tf.custom_gradient
    def clipped(x: tf.Tensor) -> tuple[tf.Tensor, object]:
        def grad(dy: tf.Tensor) -> None:
            return None

        return tf.identity(x), grad

    @tf.function
    def loss() -> tf.Tensor:
        return tf.reduce_sum(clipped(v))

    with tf.GradientTape() as tape:
        value = loss()
    truth = tape.gradient(value, v) is not None
    report = flowcheck.analyze(loss)
    assert report.receives_gradient(v) == truth
    assert not any(c.co_filename == __file__ for k in _library_keys() for c in _codes(k))


def test_an_op_that_cannot_be_asked_is_said_only_where_it_can_change_a_verdict() -> None:
    @tf.RegisterGradient("FlowcheckTestUnaskable")
    def _unaskable(op: tf.Operation, grad: tf.Tensor) -> tf.Tensor:
        if "flowcheck_gradient_probe" in tf.compat.v1.get_default_graph().name:
            raise RuntimeError("this gradient cannot be asked on placeholders")
        return grad

    w, kept = tf.Variable(2.0, name="w"), tf.Variable(0.0, name="kept")

    @tf.function
    def loss(x: tf.Tensor) -> tf.Tensor:
        with tf.compat.v1.get_default_graph().gradient_override_map({"Identity": "FlowcheckTestUnaskable"}):
            on_path = tf.identity(w * x, name="on_path")
            kept.assign(tf.identity(w + 1.0, name="off_path"))  # feeds no loss
        return on_path * 3.0

    x = tf.constant(1.5)
    with tf.GradientTape() as tape:
        value = loss(x)
    truth = tape.gradient(value, w) is not None
    report = flowcheck.analyze(loss, x)
    assert report.receives_gradient(w) == truth
    said = [n for n in report.notes if n.startswith("could not ask the gradient of")]
    assert len(said) == 1 and "on_path" in said[0] and "assumed it passes the gradient" in said[0]
