"""A subclassed keras.Model that overrides train_step (as Keras's own examples do), trained with fit.

Its train_step differentiates only the head's loss with a tape that opens after the encoder ran:
the encoder is read before the tape records, so it never trains.

    python examples/subclassed_train_step.py
    flowcheck run examples/subclassed_train_step.py
"""

import numpy as np
import tensorflow as tf
import keras


class TwoPart(keras.Model):
    def __init__(self):
        super().__init__()
        self.encoder = keras.layers.Dense(8, activation="relu", name="encoder")
        self.head = keras.layers.Dense(1, name="head")
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, x):
        return self.head(self.encoder(x))

    def train_step(self, data):
        x, y = data
        features = self.encoder(x)  # outside the tape: the encoder is not recorded
        with tf.GradientTape() as tape:
            pred = self.head(features)
            loss = tf.reduce_mean(tf.square(pred - y))
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}


rng = np.random.default_rng(2)
x = rng.normal(size=(32, 4)).astype("float32")
y = x.sum(axis=1, keepdims=True)
model = TwoPart()
model.compile(optimizer=keras.optimizers.Adam(1e-2))
model.fit(x, y, batch_size=8, epochs=2, verbose=0)
print("trained; final loss", float(np.mean((model.predict(x, verbose=0) - y) ** 2)))
