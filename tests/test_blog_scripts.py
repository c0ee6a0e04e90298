"""Blog-post and Kaggle-notebook training code under ``flowcheck run``, shrunk to tiny sizes.

Custom losses that cut (a hard Dice with ``tf.round``, ``K.round`` in ``tf.keras`` code run under
Keras 3), a quantizing layer with and without a straight-through trick, and a two-headed model
whose ``compile`` gives one head no loss. The truth is TensorFlow's own: a tape watching the
trainable weights Keras's train_step differentiates, around the compiled loss, run in the test.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from flowcheck.cli.main import main
from truth import line_of

HARD_DICE = """\
    import numpy as np, tensorflow as tf, keras

    def dice_loss(y_true, y_pred):
        y_pred = tf.round(y_pred)  # the cut
        inter = tf.reduce_sum(y_true * y_pred)
        return 1 - (2 * inter + 1) / (tf.reduce_sum(y_true) + tf.reduce_sum(y_pred) + 1)

    inp = keras.Input((4, 4, 1))
    out = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inp)
    model = keras.Model(inp, out)
    model.compile("adam", loss=dice_loss)
    x = np.random.rand(2, 4, 4, 1).astype("float32"); y = (x > .5).astype("float32")
    model.fit(x, y, verbose=0)
    """

TF_KERAS_JACCARD = """\
    import numpy as np
    from tensorflow import keras
    from tensorflow.keras import layers, backend as K

    def jaccard(y_true, y_pred):
        y_pred = K.round(y_pred)  # the cut
        inter = K.sum(y_true * y_pred)
        return 1 - inter / (K.sum(y_true) + K.sum(y_pred) - inter + K.epsilon())

    model = keras.models.Sequential([keras.Input((5,)), layers.Dense(4, activation="relu"), layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss=jaccard)
    x = np.random.rand(8, 5).astype("float32"); y = (np.random.rand(8, 1) > .5).astype("float32")
    model.fit(x, y, verbose=0)
    """

QUANTIZED = """\
    import numpy as np, tensorflow as tf, keras

    class Quant(keras.layers.Layer):
        def call(self, x):
            return QUANT  # the cut

    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, name="pre"), Quant(), keras.layers.Dense(1, name="post")])
    model.compile("adam", loss="mse")
    x = np.random.rand(8, 5).astype("float32"); y = np.random.rand(8, 1).astype("float32")
    model.fit(x, y, verbose=0)
    """

TWO_HEADS = """\
    import numpy as np, keras

    inp = keras.Input((5,))
    h = keras.layers.Dense(4, activation="relu")(inp)
    age = keras.layers.Dense(1, name="age")(h)
    gender = keras.layers.Dense(2, activation="softmax", name="gender")(h)
    model = keras.Model(inp, OUTPUTS)
    model.compile("adam", loss=LOSS)
    x = np.random.rand(8, 5).astype("float32")
    model.fit(x, LABELS, verbose=0)
    """

LABELS = ('{"age": np.random.rand(8, 1).astype("float32"), "gender": np.random.randint(0, 2, (8,))}',
          '[np.random.rand(8, 1).astype("float32"), np.random.randint(0, 2, (8,))]')
HEADS = {
    "dict": {"OUTPUTS": '{"age": age, "gender": gender}', "LOSS": '{"age": "mse"}', "LABELS": LABELS[0]},
    "list": {"OUTPUTS": "[age, gender]", "LOSS": '["mse", None]', "LABELS": LABELS[1]},
}


def script(tmp_path: Path, text: str, **values: str) -> Path:
    body = textwrap.dedent(text)
    for key, value in values.items():
        body = body.replace(key, value)
    path = tmp_path / "train.py"
    path.write_text(body)
    return path


def keras_truth(path: Path) -> dict[str, bool]:
    """TensorFlow's answer for the script's model: the watched tape Keras's train_step is, on its batch."""
    keras.utils.clear_session()
    namespace: dict[str, Any] = {}
    exec(path.read_text().split("model.fit(")[0], namespace)  # noqa: S102 -- the script up to its fit
    model, x = namespace["model"], namespace["x"]
    y = eval(path.read_text().split("model.fit(x, ")[1].split(", verbose")[0], namespace)  # noqa: S307
    weights = model.trainable_weights
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        for w in weights:
            tape.watch(w.value)
        y_pred = model(x, training=True)
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
    grads = tape.gradient(loss, [w.value for w in weights], unconnected_gradients=tf.UnconnectedGradients.NONE)
    return {w.path: g is not None for w, g in zip(weights, grads)}


def run_json(capsys: Any, path: Path) -> tuple[int, dict[str, Any]]:
    keras.utils.clear_session()
    code = main(["run", str(path), "--json"])
    captured = capsys.readouterr()
    assert captured.out, captured.err
    return code, json.loads(captured.out)


def first_report(document: dict[str, Any]) -> dict[str, Any]:
    step = document["steps"][0]
    assert step["kind"] == "keras train_step" and step["error"] is None
    report: dict[str, Any] = step["report"]
    return report


@pytest.mark.slow  # a fit run whole under flowcheck, about 3 s each
@pytest.mark.parametrize("text", [HARD_DICE, TF_KERAS_JACCARD], ids=["tf_round_dice", "tf_keras_k_round"])
def test_a_loss_rounding_its_prediction_is_cut_at_the_users_line(text: str, tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, text)
    truth = keras_truth(path)
    code, document = run_json(capsys, path)
    variables = first_report(document)["variables"]
    assert {v["name"]: v["verdict"] == "receives" for v in variables} == truth
    assert not any(truth.values()) and code == 1
    lines = {(b["op_type"], b["source"]["line"]) for v in variables for b in v["barriers"]}
    assert lines == {("Round", line_of(path, "# the cut"))}


@pytest.mark.slow  # a fit run whole under flowcheck, about 3 s each
@pytest.mark.parametrize("quant", ["tf.round(x * 4) / 4", "x + tf.stop_gradient(tf.round(x * 4) / 4 - x)"],
                         ids=["round", "straight_through"])
def test_a_quantizing_layer_cuts_unless_it_passes_the_gradient_straight_through(
    quant: str, tmp_path: Path, capsys: Any,
) -> None:
    path = script(tmp_path, QUANTIZED, QUANT=quant)
    truth = keras_truth(path)
    code, document = run_json(capsys, path)
    variables = first_report(document)["variables"]
    assert {v["name"]: v["verdict"] == "receives" for v in variables} == truth
    assert code == (0 if all(truth.values()) else 1)
    lines = {(b["op_type"], b["source"]["line"]) for v in variables for b in v["barriers"]}
    assert lines == (set() if all(truth.values()) else {("Round", line_of(path, "# the cut"))})


@pytest.mark.slow  # a fit run whole under flowcheck, about 3 s each
@pytest.mark.parametrize("form", sorted(HEADS))
def test_a_head_compile_gives_no_loss_is_named_in_a_note(form: str, tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, TWO_HEADS, **HEADS[form])
    truth = keras_truth(path)
    code, document = run_json(capsys, path)
    report = first_report(document)
    assert {v["name"]: v["verdict"] == "receives" for v in report["variables"]} == truth
    assert {n for n, receives in truth.items() if not receives} == {"gender/kernel", "gender/bias"} and code == 1
    said = [n for n in report["notes"] if "no loss" in n]
    assert said == ["Keras model 'functional': compile(loss=...) gives output 'gender' no loss: "
                    "weights only it reads get no gradient from fit"]


def test_a_model_compiled_with_a_loss_for_every_output_gets_no_such_note() -> None:
    from flowcheck.trace.kept_step import outputs_without_loss

    inp = keras.Input((3,))
    model = keras.Model(inp, {"a": keras.layers.Dense(1)(inp), "b": keras.layers.Dense(1)(inp)})
    model.compile("adam", loss={"a": "mse", "b": "mse"})
    assert outputs_without_loss(model) == []
    model.compile("adam", loss="mse")
    assert outputs_without_loss(model) == []
    assert np.isfinite(model.predict(np.ones((1, 3)), verbose=0)["a"]).all()


def test_analyze_of_a_model_whose_compile_leaves_a_head_out_names_it() -> None:
    import flowcheck

    keras.utils.clear_session()
    inp = keras.Input((5,))
    h = keras.layers.Dense(4, name="trunk")(inp)
    model = keras.Model(inp, [keras.layers.Dense(1, name="a")(h), keras.layers.Dense(2, name="b")(h)])
    model.compile("adam", loss=["mse", None])
    x, y = np.ones((2, 5), "float32"), [np.ones((2, 1), "float32"), np.ones((2, 2), "float32")]
    weights = model.trainable_weights
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        for w in weights:
            tape.watch(w.value)
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True), training=True)
    grads = tape.gradient(loss, [w.value for w in weights], unconnected_gradients=tf.UnconnectedGradients.NONE)
    report = flowcheck.analyze(model, x, y)
    assert {r.name: r.receives for r in report.variables} == {w.path: g is not None for w, g in zip(weights, grads)}
    assert [n for n in report.notes if "no loss" in n] == [
        "Keras model 'functional': compile(loss=...) gives output 'b' no loss: weights only it reads get no gradient from fit"]
