"""Corpus cases where a ``trainable=False`` variable is read differentiably.

The verdict is a watching tape's answer: BatchNormalization statistics in inference mode, a frozen
backbone, a temperature, a loss scale, a stateful RNN's carried state, an EMA, metric totals, an
optimizer's learning rate and restored SavedModel variables all receive a gradient when watched.
Each builder returns a :class:`corpus_cases.Case`; the tape computes the truth in the test.
"""

from __future__ import annotations

import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from corpus_cases import Case, case, const, keras_variables, var


@case("batchnorm_statistics_in_inference_mode")
def batchnorm_inference() -> Case:
    bn = keras.layers.BatchNormalization(name="bn_inference")
    bn.build((None, 3))
    x = const(4, 3)

    @tf.function
    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(bn(x, training=False) * x)

    return Case(loss, list(bn.weights), (x,))


@case("frozen_backbone_in_inference_mode_with_a_trained_head")
def frozen_backbone_inference() -> Case:
    keras.utils.set_random_seed(3)
    backbone = keras.Sequential(
        [keras.layers.Dense(6, activation="relu"), keras.layers.BatchNormalization()], name="frozen_backbone"
    )
    backbone.build((None, 4))
    backbone.trainable = False
    head = keras.layers.Dense(2, name="head_after_frozen")
    head.build((None, 6))
    x = const(5, 4)

    @tf.function
    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(tf.square(head(backbone(x, training=False))))

    return Case(loss, list(backbone.weights) + list(head.weights), (x,))


@case("non_trainable_temperature_and_float_loss_scale")
def temperature_and_scale() -> Case:
    w = var(3, 4, name="logits_w")
    temperature = var(name="temperature", trainable=False)
    scale = tf.Variable(128.0, name="loss_scale", trainable=False)
    steps = tf.Variable(0, name="steps_counter", trainable=False)
    x = const(2, 3)

    @tf.function
    def loss(x: tf.Tensor) -> tf.Tensor:
        logits = tf.matmul(x, w) / (tf.abs(temperature) + 1.0)
        steps.assign_add(1)
        return tf.reduce_sum(tf.nn.log_softmax(logits)) * scale + tf.cast(steps, tf.float32)

    return Case(loss, [w, temperature, scale, steps], (x,))


@case("stateful_rnn_with_carried_state")
def stateful_rnn() -> Case:
    keras.utils.set_random_seed(4)
    rnn = keras.layers.GRU(3, stateful=True, name="stateful_gru")
    x = const(2, 5, 4)
    rnn(x)  # builds the layer and its state variables for batch size 2

    @tf.function
    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.square(rnn(x)))

    return Case(loss, list(rnn.weights) + [s for s in (rnn.states or ()) if hasattr(s, "assign")], (x,))


@case("ema_weight_assigned_then_read_by_the_loss")
def ema_read() -> Case:
    w = var(3, name="online_w")
    ema = var(3, name="ema_w", seed=5, trainable=False)

    @tf.function
    def loss() -> tf.Tensor:
        ema.assign(0.99 * ema + 0.01 * w)
        return tf.reduce_sum(tf.square(w)) + tf.reduce_sum(ema * 2.0)

    return Case(loss, [w, ema])


@case("keras_metric_total_and_count_read_by_the_loss")
def metric_read() -> Case:
    metric = keras.metrics.Mean(name="running_mean")
    w = var(3, name="metric_w")
    x = const(3)

    @tf.function
    def loss(x: tf.Tensor) -> tf.Tensor:
        metric.update_state(x)
        return tf.reduce_sum(w * x) + metric.result()

    return Case(loss, [w, *metric.variables], (x,))


@case("optimizer_learning_rate_read_by_a_regularizer")
def optimizer_hyperparameter() -> Case:
    w = var(3, name="regularized_w")
    optimizer = keras.optimizers.SGD(learning_rate=0.1)
    optimizer.build([w])

    @tf.function
    def loss() -> tf.Tensor:
        return tf.reduce_sum(tf.square(w)) * tf.cast(optimizer.learning_rate, tf.float32) + tf.cast(
            optimizer.iterations, tf.float32
        )

    return Case(loss, [w, *optimizer.variables])


@case("saved_model_restored_non_trainable_variables")
def saved_model_non_trainable() -> Case:
    class Scaled(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(np.ones((3, 2), np.float32), name="restored_w")
            self.scale = tf.Variable(np.float32(0.5), name="restored_scale", trainable=False)
            self.mean = tf.Variable(np.zeros(2, np.float32), name="restored_mean", trainable=False)

        @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float32)])
        def __call__(self, x: tf.Tensor) -> tf.Tensor:
            return (tf.matmul(x, self.w) - tf.stop_gradient(self.mean)) * self.scale

    directory = tempfile.mkdtemp(prefix="flowcheck_corpus_watched_")
    tf.saved_model.save(Scaled(), directory)
    loaded = tf.saved_model.load(directory)
    shutil.rmtree(directory)
    x = const(4, 3)

    @tf.function
    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.square(loaded(x)))

    return Case(loss, [loaded.w, loaded.scale, loaded.mean], (x,), owner=loaded)


@case("frozen_backbone_with_batchnorm_called_with_training_true")
def frozen_batchnorm_training() -> Case:
    # Keras 3 runs a frozen BatchNormalization in inference mode whatever `training` says: its
    # moving statistics are read (and receive when watched), not assigned.
    keras.utils.set_random_seed(3)
    backbone = keras.Sequential([keras.layers.Dense(6, activation="relu"), keras.layers.BatchNormalization()], name="frozen_bn_backbone")
    backbone.build((None, 4))
    backbone.trainable = False
    head = keras.layers.Dense(2, name="head_after_frozen_bn")
    head.build((None, 6))

    @tf.function
    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(tf.square(head(backbone(x, training=True))))

    return Case(loss, list(backbone.weights) + list(head.weights), (const(5, 4),))


@case("custom_layer_add_loss_with_non_trainable_temperature_before_stop_gradient")
def activity_loss() -> Case:
    keras.utils.set_random_seed(4)

    class Sparse(keras.layers.Layer):
        def build(self, shape: tuple[int, ...]) -> None:
            self.w = self.add_weight(shape=(shape[-1], 3), name="w")
            self.temperature = self.add_weight(shape=(), initializer="ones", trainable=False, name="temperature")

        def call(self, x: tf.Tensor) -> tf.Tensor:
            h = tf.matmul(x, self.w)
            self.add_loss(tf.reduce_sum(tf.abs(h)) * 0.01 / self.temperature)  # w trains through this alone
            return tf.stop_gradient(h)

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="after_stopped")(Sparse(name="sparse")(inputs)))

    @tf.function
    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(model(x, training=True) ** 2) + tf.add_n(model.losses)

    return Case(loss, list(model.weights), (const(2, 3),))


@case("augmentation_noise_and_dropout_layers_seed_generator_states")
def augmentation_seeds() -> Case:
    # Each seeded layer advances its SeedGenerator's state variable: analyze and verify put it back.
    keras.utils.set_random_seed(12)
    augment = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=1), keras.layers.RandomRotation(0.1, seed=2),
                                keras.layers.RandomZoom(0.1, seed=3), keras.layers.RandomContrast(0.2, seed=4)], name="augment")
    conv, pool, out = keras.layers.Conv2D(2, 3, name="augmented_conv"), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1, name="augmented_out")
    noisy = [keras.layers.GaussianNoise(0.1, seed=5), keras.layers.GaussianDropout(0.2, seed=6), keras.layers.SpatialDropout2D(0.3, seed=7)]
    x = const(2, 6, 6, 3)

    @tf.function
    def loss(x: tf.Tensor) -> tf.Tensor:
        h = conv(augment(x, training=True))
        for layer in noisy:
            h = layer(h, training=True)
        return tf.reduce_mean(out(pool(h)))

    loss.python_function(x)  # builds the layers
    return Case(loss, keras_variables(conv, out, augment, *noisy), (x,))  # the seed generators' states included


@case("tf_random_generator_state_and_dropout_seed_state")
def generator_states() -> Case:
    keras.utils.set_random_seed(2)
    generator = tf.random.Generator.from_seed(7)
    dense, drop = keras.layers.Dense(4, name="before_dropout"), keras.layers.Dropout(0.5, seed=3)
    dense.build((None, 3))
    w = var(4, name="noise_scaled")

    @tf.function
    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(drop(dense(x), training=True)) + tf.reduce_sum(w * generator.normal([4]))

    return Case(loss, [*dense.weights, w, drop.seed_generator.state, generator.state], (const(4, 3),))
