"""Mixed precision with a LossScaleOptimizer in a custom step: the loss is scaled, the gradients
unscaled, and a float16 round trip through an integer cast cuts the embedding projection.

    python examples/mixed_precision.py
    flowcheck run examples/mixed_precision.py
"""

import numpy as np
import tensorflow as tf
import keras

keras.mixed_precision.set_global_policy("mixed_float16")
rng = np.random.default_rng(7)
x = tf.constant(rng.normal(size=(16, 6)), tf.float32)
y = tf.constant(rng.normal(size=(16, 1)), tf.float32)
project = keras.layers.Dense(4, name="project")
head = keras.layers.Dense(1, name="head", dtype="float32")
project.build((None, 6))
head.build((None, 4))
optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3))
variables = project.trainable_variables + head.trainable_variables


@tf.function
def train_step(x, y):
    with tf.GradientTape() as tape:
        h = project(x)
        h = tf.cast(tf.cast(h, tf.int32), h.dtype)  # "bucketize": no gradient to project
        loss = tf.reduce_mean(tf.square(head(h) - y))
        scaled = optimizer.scale_loss(loss)
    grads = tape.gradient(scaled, variables)
    optimizer.apply_gradients(zip(grads, variables))
    return loss


for step in range(3):
    print("loss", float(train_step(x, y)))
keras.mixed_precision.set_global_policy("float32")
