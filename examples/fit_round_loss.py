"""model.fit with a custom loss that rounds the predictions: no weight gets a gradient.

    python examples/fit_round_loss.py
    flowcheck run examples/fit_round_loss.py
"""

import numpy as np
import tensorflow as tf
import keras


def rounded_mse(y_true, y_pred):
    return tf.reduce_mean(tf.square(y_true - tf.round(y_pred)))  # round: gradient None


rng = np.random.default_rng(3)
x = rng.normal(size=(32, 3)).astype("float32")
y = np.round(x.sum(axis=1, keepdims=True))
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
model.compile(optimizer="adam", loss=rounded_mse)
model.fit(x, y, batch_size=8, epochs=2, verbose=0)
print("done")
