"""A step where every path is cut: the loss compares class indices, so Keras raises
"No gradients provided for any variable" at the apply line. flowcheck names the argmax instead.

    python examples/cut_everywhere.py        # ValueError: No gradients provided for any variable
    flowcheck run examples/cut_everywhere.py
"""

import numpy as np
import tensorflow as tf
import keras

rng = np.random.default_rng(5)
x = tf.constant(rng.normal(size=(16, 4)), tf.float32)
y = tf.constant(rng.integers(0, 3, size=(16,)), tf.int64)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
optimizer = keras.optimizers.Adam()


@tf.function
def train_step(x, y):
    with tf.GradientTape() as tape:
        predicted = tf.argmax(model(x, training=True), axis=1)  # indices: no gradient
        loss = tf.reduce_mean(tf.cast(tf.not_equal(predicted, y), tf.float32))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss


for step in range(3):
    print("loss", float(train_step(x, y)))
