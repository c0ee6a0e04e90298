"""TensorFlow's "quickstart for experts" loop, written as the tutorial writes it, with a bug.

The train step returns nothing and lets its optimizer apply the gradients; a buried int cast in
the model's call (a "quantize the features" idea gone wrong) cuts the first layer.

    python examples/quickstart_int_cast.py
    flowcheck run examples/quickstart_int_cast.py
"""

import numpy as np
import tensorflow as tf
import keras


class MyModel(keras.Model):
    def __init__(self):
        super().__init__()
        self.d1 = keras.layers.Dense(16, activation="relu")
        self.d2 = keras.layers.Dense(10)

    def call(self, x):
        h = self.d1(x)
        h = tf.cast(tf.cast(h * 4.0, tf.int32), tf.float32) / 4.0  # "quantize": cuts d1
        return self.d2(h)


rng = np.random.default_rng(0)
x_train = rng.normal(size=(64, 8)).astype("float32")
y_train = rng.integers(0, 10, size=(64,))
train_ds = tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(16)

model = MyModel()
loss_object = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
optimizer = keras.optimizers.Adam()
train_loss = keras.metrics.Mean(name="train_loss")


@tf.function
def train_step(images, labels):
    with tf.GradientTape() as tape:
        predictions = model(images, training=True)
        loss = loss_object(labels, predictions)
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    train_loss(loss)


EPOCHS = 2
for epoch in range(EPOCHS):
    train_loss.reset_state()
    for images, labels in train_ds:
        train_step(images, labels)
    print(f"Epoch {epoch + 1}, Loss: {float(train_loss.result()):.4f}")
