"""The models the benchmarks measure, each as the loss function a user would hand to flowcheck.

Every builder returns a :class:`Case`: a ``tf.function`` computing the training loss of a Keras
model (``training=True``), example inputs, and the model. Inputs are seeded, so every process
builds the same case. Batches are small (2): flowcheck's cost depends on the graph, not the batch.
One case is a training step instead (``mobilenetv2_step``): a ``tf.function`` with its own tape and
optimizer, as ``benchmarks/scripts/mobilenet_step.py`` writes it, which flowcheck judges at its
gradient call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BUILDERS", "Case", "build", "hand_written_check", "hand_written_step"]

BATCH = 2
SEED = 0


@dataclass
class Case:
    """One benchmark model.

    Attributes:
        name: The name the benchmark prints.
        loss_fn: A ``tf.function`` returning the training loss (what a user passes to flowcheck).
        args: Example inputs for ``loss_fn``.
        model: The Keras model inside ``loss_fn``.
        step: ``loss_fn`` is a training step (its own tape and optimizer), not a loss.
    """

    name: str
    loss_fn: Any
    args: tuple[Any, ...]
    model: Any
    step: bool = False


def _loss_case(name: str, model: Any, x: Any, y: Any, loss: Any) -> Case:
    import tensorflow as tf

    @tf.function
    def loss_fn(x: Any, y: Any) -> Any:
        return loss(y, model(x, training=True))

    loss_fn.python_function.__name__ = f"{name}_loss"
    return Case(name, loss_fn, (x, y), model)


def _images(shape: tuple[int, int, int], classes: int) -> tuple[Any, Any]:
    import tensorflow as tf

    rng = np.random.default_rng(SEED)
    x = tf.constant(rng.random((BATCH, *shape), dtype=np.float32))
    y = tf.constant(rng.integers(0, classes, BATCH), dtype=tf.int32)
    return x, y


def _classifier(name: str, application: Callable[..., Any], shape: tuple[int, int, int]) -> Case:
    import keras

    keras.utils.set_random_seed(SEED)
    model = application(weights=None, input_shape=shape, classes=10)
    x, y = _images(shape, 10)
    return _loss_case(name, model, x, y, keras.losses.SparseCategoricalCrossentropy(from_logits=False))


def resnet50() -> Case:
    """``keras.applications.ResNet50``, 64x64x3 inputs, 10 classes."""
    import keras

    return _classifier("ResNet50", keras.applications.ResNet50, (64, 64, 3))


def mobilenet_v2() -> Case:
    """``keras.applications.MobileNetV2``, 96x96x3 inputs, 10 classes."""
    import keras

    return _classifier("MobileNetV2", keras.applications.MobileNetV2, (96, 96, 3))


def efficientnet_b0() -> Case:
    """``keras.applications.EfficientNetB0``, 64x64x3 inputs, 10 classes."""
    import keras

    return _classifier("EfficientNetB0", keras.applications.EfficientNetB0, (64, 64, 3))


def mobilenet_v2_step() -> Case:
    """The MobileNetV2 of :func:`mobilenet_v2` trained by a custom ``tf.function`` step with Adam."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10)
    optimizer = keras.optimizers.Adam(1e-3)
    loss = keras.losses.SparseCategoricalCrossentropy()
    x, y = _images((96, 96, 3), 10)

    @tf.function
    def train_step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        grads = tape.gradient(value, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return value

    return Case("MobileNetV2 train step", train_step, (x, y), model, step=True)


def transformer(blocks: int = 4, d_model: int = 128, seq: int = 32, heads: int = 4, vocab: int = 1000) -> Case:
    """A Transformer encoder from Keras layers: token + position embeddings, ``blocks`` blocks."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    tokens = keras.Input((seq,), dtype="int32", name="tokens")
    positions = keras.ops.arange(seq)
    h = keras.layers.Embedding(vocab, d_model, name="token_embedding")(tokens)
    h = h + keras.layers.Embedding(seq, d_model, name="position_embedding")(positions)
    for i in range(blocks):
        attention = keras.layers.MultiHeadAttention(heads, d_model // heads, dropout=0.1, name=f"block{i}_attention")
        a = attention(h, h)
        h = keras.layers.LayerNormalization(name=f"block{i}_norm1")(h + keras.layers.Dropout(0.1)(a))
        f = keras.layers.Dense(4 * d_model, activation="gelu", name=f"block{i}_ff1")(h)
        f = keras.layers.Dense(d_model, name=f"block{i}_ff2")(f)
        h = keras.layers.LayerNormalization(name=f"block{i}_norm2")(h + keras.layers.Dropout(0.1)(f))
    logits = keras.layers.Dense(10, name="head")(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(tokens, logits, name="transformer")
    rng = np.random.default_rng(SEED)
    x = tf.constant(rng.integers(0, vocab, (BATCH, seq)), dtype=tf.int32)
    y = tf.constant(rng.integers(0, 10, BATCH), dtype=tf.int32)
    return _loss_case("Transformer", model, x, y, keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def dense_chain(layers: int, width: int = 8) -> Case:
    """``layers`` Dense layers (tanh, so that 10,000 of them stay finite) and a squared error."""
    import keras
    import tensorflow as tf

    class Chain(keras.Model):  # type: ignore[misc]
        """Dense layers in a Python loop: a functional model this deep overflows Keras's recursion."""

        def __init__(self) -> None:
            super().__init__(name=f"chain{layers}")
            self.blocks = [keras.layers.Dense(width, activation="tanh", name=f"dense{i}") for i in range(layers)]

        def build(self, input_shape: Any) -> None:
            for block in self.blocks:
                block.build(input_shape)

        def call(self, x: Any) -> Any:
            for block in self.blocks:
                x = block(x)
            return x

    keras.utils.set_random_seed(SEED)
    model = Chain()
    model.build((None, width))
    rng = np.random.default_rng(SEED)
    x = tf.constant(rng.random((BATCH, width), dtype=np.float32))
    y = tf.constant(rng.random((BATCH, width), dtype=np.float32))
    return _loss_case(f"Dense x {layers:,}", model, x, y, keras.losses.MeanSquaredError())


BUILDERS: dict[str, Callable[[], Case]] = {
    "resnet50": resnet50,
    "mobilenetv2": mobilenet_v2,
    "mobilenetv2_step": mobilenet_v2_step,
    "efficientnetb0": efficientnet_b0,
    "transformer": transformer,
    "chain10": lambda: dense_chain(10),
    "chain100": lambda: dense_chain(100),
    "chain1000": lambda: dense_chain(1_000),
    "chain10000": lambda: dense_chain(10_000),
}


def build(key: str) -> Case:
    """Build the case named ``key`` (a key of :data:`BUILDERS`)."""
    return BUILDERS[key]()


def hand_written_check(case: Case) -> list[str]:
    """What a user writes instead of flowcheck: one eager tape over every variable, list the None ones.

    A training step's user runs the step itself (its first call traces it): the names of the
    variables its tape gives no gradient, as Keras's warning lists them.
    """
    import tensorflow as tf

    if case.step:
        return _step_none(case)
    variables = case.model.variables
    floats = [v for v in variables if tf.as_dtype(v.dtype).is_floating]  # integers never get one
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch([v.value for v in floats])
        loss = case.loss_fn(*case.args)
    grads = dict(zip((id(v) for v in floats), tape.gradient(loss, [v.value for v in floats])))
    return [v.path for v in variables if grads.get(id(v)) is None]


def _step_none(case: Case) -> list[str]:
    import re
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        case.loss_fn(*case.args)
    named = [re.findall(r"'([^']+)'", str(w.message)) for w in caught if "Gradients do not exist" in str(w.message)]
    return sorted({name for names in named for name in names})


def hand_written_step(case: Case) -> list[str]:
    """The same check followed by one optimizer step, as a user would train (a training step: one call)."""
    import keras
    import tensorflow as tf

    if case.step:
        return _step_none(case)
    variables = case.model.trainable_variables
    with tf.GradientTape() as tape:
        loss = case.loss_fn(*case.args)
    grads = tape.gradient(loss, variables)
    keras.optimizers.SGD(1e-3).apply_gradients((g, v) for g, v in zip(grads, variables) if g is not None)
    return [v.path for v, g in zip(variables, grads) if g is None]
