"""Corpus cases of plain callables, judged as called eagerly (the truth is the tape on that call)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from corpus_cases import Case, case, const, var


@case("eager_callable_cond_with_an_untaken_branch")
def eager_cond() -> Case:
    a, b = var(3, name="eager_taken"), var(3, name="eager_untaken", seed=2)
    x = const(3)

    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.cond(tf.reduce_sum(x) < 100.0, lambda: a * x, lambda: b * x))

    return Case(loss, [a, b], (x,))


@case("eager_callable_while_condition_and_body")
def eager_while() -> Case:
    limit, step = tf.Variable(2.5, name="eager_limit"), var(name="eager_step", seed=3)

    def loss() -> tf.Tensor:
        return tf.while_loop(lambda i, t: i < limit, lambda i, t: (i + 1.0, t + step * i), (0.0, 0.0))[1]

    return Case(loss, [limit, step])


@case("eager_callable_float_and_int_of_tensors")
def eager_float_int() -> Case:
    w, v, b = var(2, name="eager_float_w"), var(2, name="eager_int_v", seed=4), var(name="eager_bias", seed=5)
    x = const(2)

    def loss(x: tf.Tensor) -> tf.Tensor:
        scale = float(tf.reduce_sum(w * x))
        count = int(tf.reduce_sum(tf.abs(v)) * 10.0)
        return tf.reduce_sum(x) * scale + float(count) * b

    return Case(loss, [w, v, b], (x,))


@case("eager_callable_numpy_round_trip_in_a_keras_model")
def eager_numpy_keras() -> Case:
    keras.utils.set_random_seed(6)
    encoder = keras.layers.Dense(3, name="eager_encoder")
    head = keras.layers.Dense(1, name="eager_head")
    x = const(4, 2)
    head(encoder(x))

    def loss(x: tf.Tensor) -> tf.Tensor:
        features = tf.convert_to_tensor(np.tanh(encoder(x).numpy()))
        return tf.reduce_mean(tf.square(head(features)))

    return Case(loss, list(encoder.weights) + list(head.weights), (x,))


@case("eager_callable_loop_bodies_cut_by_stop_gradient_argmax_and_an_integer_cast")
def eager_loop_bodies() -> Case:
    # Traced, each loop gives every value it carries zeros at least; eagerly only its iterations' ops count.
    mapped, stopped, int_only = var(3, name="map_fn_scale"), var(3, name="map_fn_stopped", seed=2), var(3, name="scan_int_only", seed=3)
    embedding, proj, readout = var(5, 3, name="decode_embedding", seed=4), var(3, 5, name="decode_proj", seed=5), var(3, 1, name="decode_readout", seed=6)
    x = const(4, 3)

    def loss(x: tf.Tensor, start: tf.Tensor) -> tf.Tensor:
        total = tf.reduce_sum(tf.map_fn(lambda r: r * mapped + tf.stop_gradient(r * stopped), x))
        steps = tf.scan(lambda acc, r: acc + r + tf.cast(tf.cast(int_only * 3.0, tf.int32), tf.float32), x, initializer=tf.zeros(3))

        def decode(i: tf.Tensor, token: tf.Tensor, score: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            h = tf.gather(embedding, token)
            token = tf.argmax(tf.matmul(h, proj), axis=1, output_type=tf.int32)
            return i + 1, token, score + tf.reduce_sum(tf.matmul(h, readout))

        _, _, score = tf.while_loop(lambda i, t, s: i < 3, decode, (0, start, 0.0))
        return total + tf.reduce_sum(steps) + score

    return Case(loss, [mapped, stopped, int_only, embedding, proj, readout], (x, tf.constant([0, 4])))


@case("eager_callable_nested_while_conditions_and_a_loop_never_entered")
def eager_nested_conditions() -> Case:
    outer_limit, inner_limit = tf.Variable(2.5, name="outer_limit"), tf.Variable(1.5, name="inner_limit")
    step, never, after = var(name="nested_step", seed=3), var(3, name="never_iterated", seed=4), var(3, name="after_empty_loop", seed=5)
    x = const(3)

    def loss(x: tf.Tensor) -> tf.Tensor:
        def outer_body(i: tf.Tensor, t: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            _, u = tf.while_loop(lambda j, u: j < inner_limit, lambda j, u: (j + 1.0, u + step * j), (0.0, t))
            return i + 1.0, u

        total = tf.while_loop(lambda i, t: i < outer_limit, outer_body, (0.0, 0.0))[1]
        empty = tf.while_loop(lambda i, t: i < 0, lambda i, t: (i + 1, t * never), (0, x))[1]  # runs no iteration
        return total + tf.reduce_sum(empty * after)

    return Case(loss, [outer_limit, inner_limit, step, never, after], (x,))
