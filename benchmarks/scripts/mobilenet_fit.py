"""MobileNetV2 (96 px, weights=None) trained with model.fit."""

import numpy as np
import keras

model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, classes=10)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
x = rng.random((24, 96, 96, 3), dtype=np.float32)
y = rng.integers(0, 10, size=(24,))


class FirstStep(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        print(f"step {batch} done", flush=True)


model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[FirstStep()])
