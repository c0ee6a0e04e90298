"""Transfer learning: a new classifier head on a frozen ``keras.applications`` backbone.

Freezing the backbone (``backbone.trainable = False``) does not cut the gradient: it still flows
through the backbone (TensorFlow would compute it), but training updates only the head. flowcheck
shows the head's two weights receiving and the backbone's 260 as receiving but not trainable; the
Dropout layer's integer seed state is blocked (integers carry no gradient). The model is compiled,
so flowcheck analyzes its training step, with random images and labels made from its input shape
and its loss::

    flowcheck analyze examples/transfer_learning_frozen_backbone.py --expect-receives 'classifier/*'

``weights=None`` keeps the example offline; a real project would load ``weights="imagenet"``.
Run it as a script (``python examples/transfer_learning_frozen_backbone.py``) to fit one epoch.
"""

import keras
import numpy as np

NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)

backbone = keras.applications.MobileNetV2(input_shape=IMAGE_SHAPE, include_top=False, weights=None)
backbone.trainable = False

inputs = keras.Input(IMAGE_SHAPE)
features = backbone(inputs, training=False)  # keep BatchNormalization in inference mode
pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
pooled = keras.layers.Dropout(0.2, name="dropout")(pooled)
outputs = keras.layers.Dense(NUM_CLASSES, name="classifier")(pooled)
model = keras.Model(inputs, outputs, name="transfer")
model.compile(
    optimizer=keras.optimizers.Adam(1e-3),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=["accuracy"],
)

if __name__ == "__main__":
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (64, *IMAGE_SHAPE)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, 64)
    model.fit(images, labels, batch_size=16, epochs=1)
