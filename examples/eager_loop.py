"""The "custom training walkthrough" style: an eager loop, no tf.function, one frozen-by-mistake layer.

The hidden layer's output goes through .numpy() and back, which leaves TensorFlow: the tape
loses the path, and the first layer gets None.

    python examples/eager_loop.py
    flowcheck run examples/eager_loop.py
"""

import numpy as np
import tensorflow as tf
import keras

rng = np.random.default_rng(4)
features = tf.constant(rng.normal(size=(16, 4)), tf.float32)
labels = tf.constant(rng.integers(0, 3, size=(16,)))
hidden = keras.layers.Dense(8, activation="relu", name="hidden")
out = keras.layers.Dense(3, name="out")
loss_object = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
optimizer = keras.optimizers.SGD(0.1)


def loss_fn(x, y):
    h = tf.constant(hidden(x).numpy())  # leaves TensorFlow: the tape cannot follow
    return loss_object(y, out(h))


for epoch in range(3):
    with tf.GradientTape() as tape:
        loss = loss_fn(features, labels)
    variables = hidden.trainable_variables + out.trainable_variables
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(grads, variables))
    print(f"epoch {epoch}: loss {float(loss):.4f}")
