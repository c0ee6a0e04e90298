"""Real-world-shaped training scripts under ``flowcheck run`` (in-process through ``main([...])``).

Each script is small and written the way its source writes it (a TensorFlow tutorial, research
code); the truth is TensorFlow's own answer computed in the test, and ``--continue`` is held to the
script run alone.
"""

from __future__ import annotations

import json
import runpy
import textwrap
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from flowcheck.cli.main import main


def script(tmp_path: Path, text: str, name: str = "train.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def run_json(capsys: Any, *argv: str) -> tuple[int, dict[str, Any]]:
    keras.utils.clear_session()
    code = main(["run", *argv, "--json"])
    captured = capsys.readouterr()
    assert captured.out, captured.err
    return code, json.loads(captured.out)


# Several steps inside one tf.function (Orbit's / Model Garden's loop): the tape is in a while body,
# the batches come from a tf.data iterator the function advances.
LOOP = """\
    import numpy as np
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    opt = keras.optimizers.Adam(1e-3)
    ds = tf.data.Dataset.from_tensor_slices((tf.random.normal((64, 4)), tf.random.normal((64, 1)))).batch(8).repeat()
    it = iter(ds)

    @tf.function
    def train_loop(iterator, steps):
        total = tf.constant(0.0)
        for _ in tf.range(steps):
            x, y = next(iterator)
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            total += loss
        return total / tf.cast(steps, tf.float32)

    losses = [float(train_loop(it, tf.constant(4))) for epoch in range(3)]
    np.save(OUT, np.array(losses + [float(v.numpy().sum()) for v in model.weights]))
    """


def test_a_training_loop_inside_a_tf_function_is_judged_at_its_site_and_continues_exactly(
    tmp_path: Path, capsys: Any,
) -> None:
    alone, watched = tmp_path / "alone.npy", tmp_path / "watched.npy"
    keras.utils.clear_session()
    runpy.run_path(script(tmp_path, f"OUT = {str(alone)!r}\n" + textwrap.dedent(LOOP), "a.py"), run_name="__main__")
    code, document = run_json(capsys, script(tmp_path, f"OUT = {str(watched)!r}\n" + textwrap.dedent(LOOP), "b.py"),
                              "--continue")
    (step,) = document["steps"]
    # TensorFlow's answer: the loss reaches every weight (the IteratorGetNext before the tape is no error).
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(tf.ones((8, 4)), training=True)))
    none = [g is None for g in tape.gradient(loss, model.trainable_variables)]
    (site,) = step["report"]["gradient_sites"]
    assert [s["verdict"] != "receives" for s in site["sources"]] == none == [s["tensorflow_none"] for s in site["sources"]]
    assert step["report"]["gradient_errors"] == []
    assert code == 0, step["failures"]
    # The verification ran the loop once and put the iterator back: the script trained as alone.
    np.testing.assert_array_equal(np.load(alone), np.load(watched))


DEEPDREAM = """\
    import numpy as np
    import tensorflow as tf
    import keras

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="mixed3")(inputs)
    dream_model = keras.Model(inputs=inputs, outputs=[x, keras.layers.Conv2D(4, 3, name="mixed5")(x)])

    def calc_loss(img, model):
        layer_activations = model(tf.expand_dims(img, axis=0))
        return tf.reduce_sum([tf.math.reduce_mean(act) for act in layer_activations])

    class DeepDream(tf.Module):
        def __init__(self, model):
            self.model = model

        @tf.function(input_signature=(
            tf.TensorSpec(shape=[None, None, 3], dtype=tf.float32),
            tf.TensorSpec(shape=[], dtype=tf.int32),
            tf.TensorSpec(shape=[], dtype=tf.float32),))
        def __call__(self, img, steps, step_size):
            loss = tf.constant(0.0)
            for n in tf.range(steps):
                with tf.GradientTape() as tape:
                    tape.watch(img)
                    loss = calc_loss(img, self.model)
                gradients = tape.gradient(loss, img)
                gradients /= tf.math.reduce_std(gradients) + 1e-8
                img = img + gradients * step_size
                img = tf.clip_by_value(img, -1, 1)
            return loss, img

    deepdream = DeepDream(dream_model)
    img = tf.constant(np.random.default_rng(0).uniform(-1, 1, (12, 12, 3)), tf.float32)
    for _ in range(2):
        loss, img = deepdream(img, tf.constant(2), tf.constant(0.01))
    """


def test_deepdream_ascent_returning_its_loss_is_judged_at_its_gradient_call(tmp_path: Path, capsys: Any) -> None:
    namespace = runpy.run_path(script(tmp_path, DEEPDREAM, "dream.py"))
    img = tf.ones((12, 12, 3))
    with tf.GradientTape() as tape:  # the call's own answer: the image gets a gradient
        tape.watch(img)
        loss = namespace["calc_loss"](img, namespace["dream_model"])
    none = tape.gradient(loss, img) is None
    code, document = run_json(capsys, script(tmp_path, DEEPDREAM))
    (step,) = document["steps"]
    (site,) = step["report"]["gradient_sites"]  # not the function's outputs judged as losses
    assert [(s["name"], s["verdict"] != "receives", s["tensorflow_none"]) for s in site["sources"]] == [("img", none, none)]
    assert step["report"]["never_trained"] == []  # it asks for an image only: it trains no weight
    assert code == 0, step["failures"]
