"""MobileNetV2 (96 px, weights=None) trained with a custom tf.function step, the way users write it."""

import numpy as np
import tensorflow as tf
import keras

model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, classes=10)
optimizer = keras.optimizers.Adam(1e-3)
loss_fn = keras.losses.SparseCategoricalCrossentropy()
rng = np.random.default_rng(0)
x = rng.random((8, 96, 96, 3), dtype=np.float32)
y = rng.integers(0, 10, size=(8,))


@tf.function
def train_step(x, y):
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss


for step in range(3):
    loss = float(train_step(x, y))
    print(f"step {step} done: loss {loss:.4f}", flush=True)
