"""The line that created an unused variable a user's layer or module holds (``flowcheck.source.created``).

The truth that the variable is unused is TensorFlow's (a watching tape gives it None); the line is
the one the test marks in its own source.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import keras
import pytest
import tensorflow as tf

import flowcheck
from flowcheck.cli.main import main
from truth import line_of, watched_truth


class Scaled(keras.layers.Layer):
    def build(self, input_shape: Any) -> None:
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")
        self.spare = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="spare")  # spare made
        self.add_weight(shape=(2,), initializer="zeros", name="kept_by_name")  # made by name

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x * self.w


class Head(tf.Module):
    def __init__(self) -> None:
        super().__init__(name="head")
        self.k = tf.Variable(tf.ones((3, 1)), name="k")
        self.stale = tf.Variable(tf.ones((3, 1)), name="stale")  # stale made

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return x @ self.k


def test_an_unused_weight_is_told_with_the_line_of_the_build_that_made_it() -> None:
    model = keras.Sequential([keras.Input((3,)), Scaled(), keras.layers.Dense(1)])
    head = Head()
    x = tf.ones((4, 3))

    @tf.function
    def loss_fn(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(model(x)) + tf.reduce_sum(head(x))

    variables = [*model.variables, *head.variables]
    report = flowcheck.analyze(loss_fn, x)
    truth = dict(zip((id(v) for v in variables), watched_truth(loss_fn, variables, x)))
    made = {"spare": "# spare", "kept_by_name": "# made by", "stale": "# stale"}  # + " made" / " name": the markers
    found = 0
    for r in report.variables:
        assert r.receives == truth[id(r.variable)]
        short = r.name.rsplit("/", 1)[-1].split(":")[0]
        if r.verdict is flowcheck.Verdict.UNUSED:
            assert r.created is not None and r.created.line == line_of(__file__, made[short] + (" name" if short == "kept_by_name" else " made")), r.name
            found += 1
        else:
            assert r.created is None
    assert found == 3
    assert report.summary().count("created at ") == 3


FIT = """\
    import numpy as np
    import keras

    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones")
            self.spare = self.add_weight(shape=(input_shape[-1],), initializer="ones")  # MARK

        def call(self, x):
            return x * self.w

    model = keras.Sequential([keras.Input((3,)), Scale(), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.ones((8, 3), "float32"), np.zeros((8, 1), "float32"), batch_size=4, epochs=2, verbose=0)
    """


def test_flowcheck_run_tells_the_line_of_an_unused_weight_of_a_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layer = keras.layers.Dense(1)  # TensorFlow's answer for the same shape: a weight the call never reads gets None
    spare = tf.Variable(tf.ones((3,)))
    with tf.GradientTape() as tape:
        tape.watch(spare)
        loss = tf.reduce_mean(tf.square(layer(tf.ones((4, 3)))))
    assert tape.gradient(loss, spare) is None
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(FIT))
    keras.utils.clear_session()
    main(["run", str(path), "--json"])
    [step] = json.loads(capsys.readouterr().out)["steps"]
    [site] = step["report"]["gradient_sites"]
    [unused] = [s for s in site["sources"] if s["verdict"] == "unused"]
    assert unused["tensorflow_none"] is True
    assert unused["created"]["line"] == line_of(path, "# MARK")
    assert unused["created"]["function"] == "Scale.build"
    assert all(s["created"] is None for s in site["sources"] if s["verdict"] != "unused")
