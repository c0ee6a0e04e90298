"""The questions users ask ("No gradients provided for any variable", "tape.gradient returns None",
"Gradients do not exist for variables") as tiny scripts under ``flowcheck run``.

Each script is the asker's code with synthetic data: its loss is computed by ``forward`` so the test
(which loads the script without running its step, not as ``__main__``) can ask TensorFlow's own watching tape (:func:`truth.watched_truth`) for every variable's answer; the
named barrier's line is the line the accepted answer says is the cause (``# CAUSE``).
"""

from __future__ import annotations

import json
import runpy
import textwrap
from pathlib import Path
from typing import Any

import keras
import pytest

from flowcheck.cli.main import main
from truth import line_of
from truth import tf1_run_against_truth
from truth import watched_truth

# (name, script, variables in the script's namespace, forward's arguments)
QUESTIONS: list[tuple[str, str, str, str]] = [
    # "Getting around tf.argmax which is not differentiable" (StackOverflow)
    ("argmax", """
        import tensorflow as tf
        w = tf.Variable(tf.random.normal((4, 3)))
        x = tf.random.normal((5, 4)); labels = tf.constant([0, 1, 2, 0, 1], tf.int64)
        opt = tf.keras.optimizers.SGD(0.1)
        def forward(x, labels):
            pred = tf.argmax(tf.matmul(x, w), axis=-1)  # CAUSE
            return tf.reduce_mean(tf.cast(tf.not_equal(pred, labels), tf.float32))
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = forward(x, labels)
            grads = tape.gradient(loss, [w])
            opt.apply_gradients(zip(grads, [w]))
        if __name__ == "__main__":
            step()
    """, "[w]", "x, labels"),
    # "No gradients provided for any variable" after casting predictions to an integer
    ("int_cast", """
        import tensorflow as tf
        w = tf.Variable(tf.ones((3, 1))); b = tf.Variable(0.5)
        x = tf.random.normal((4, 3)); y = tf.random.normal((4, 1))
        def forward(x, y):
            pred = tf.cast(tf.matmul(x, w), tf.int32)  # CAUSE
            return tf.reduce_mean(tf.cast(pred, tf.float32) - y) + b
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = forward(x, y)
            return tape.gradient(loss, [w, b])
        if __name__ == "__main__":
            step()
    """, "[w, b]", "x, y"),
    # GAN generator that never trains: its output under tf.stop_gradient in the generator's loss
    ("gan_stop_gradient", """
        import tensorflow as tf, keras
        G = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4)])
        D = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        opt = keras.optimizers.Adam()
        z = tf.random.normal((3, 2))
        def forward(z):
            fake = tf.stop_gradient(G(z))  # CAUSE
            return -tf.reduce_mean(D(fake))
        @tf.function
        def step(z):
            with tf.GradientTape() as tape:
                loss = forward(z)
            variables = G.trainable_variables + D.trainable_variables
            return tape.gradient(loss, variables)
        if __name__ == "__main__":
            step(z)
    """, "G.trainable_variables + D.trainable_variables", "z"),
    # "tape.gradient returns None after assign": the value written carries no gradient
    ("assign", """
        import tensorflow as tf
        a = tf.Variable(2.0); b = tf.Variable(0.0)
        def forward():
            b.assign(a * 3.0)  # CAUSE
            return b * b
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = forward()
            return tape.gradient(loss, [a, b])
        if __name__ == "__main__":
            step()
    """, "[a, b]", ""),
    # discuss.tensorflow.org "Where does the tape break after all?": per-head losses stored into a
    # variable, then summed: the read is the cut, the assign the line to change.
    ("losses_stored_in_variable", """
        import tensorflow as tf, keras
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        store = tf.Variable(tf.zeros((3,)))
        x = tf.random.normal((5, 4)); y = tf.random.normal((5, 3))
        def forward(x, y):
            out = model(x)
            for i in range(3):
                store[i].assign(tf.reduce_mean(tf.square(out[:, i] - y[:, i])))  # ASSIGNED
            return tf.reduce_sum(store)  # CAUSE
        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                loss = forward(x, y)
            return tape.gradient(loss, model.trainable_variables)
        if __name__ == "__main__":
            step(x, y)
    """, "model.trainable_variables", "x, y"),
    # tf.custom_gradient whose grad_fn returns None: "weights do not update"; the cut's op is the
    # decorated function's call, the line to change its grad_fn's (the detail names it).
    ("custom_gradient_none", """
        import tensorflow as tf
        w = tf.Variable(tf.ones((3,)))
        @tf.custom_gradient
        def clip_op(x):
            def grad(dy):  # GRAD_FN
                return None
            return tf.identity(x), grad
        def forward():
            return tf.reduce_sum(clip_op(w * 2.0))  # CAUSE
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = forward()
            return tape.gradient(loss, w)
        if __name__ == "__main__":
            step()
    """, "[w]", ""),
    # Keras compile loss thresholding the prediction (tf.cast(y_pred > 0.5)): ValueError in fit
    ("keras_threshold_loss", """
        import numpy as np, tensorflow as tf, keras
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
        def problematic_loss(y_true, y_pred):
            y_pred_binary = tf.cast(y_pred > 0.5, tf.float32)  # CAUSE
            return tf.reduce_mean(tf.square(y_true - y_pred_binary))
        x = np.random.rand(8, 4).astype("float32"); y = np.random.rand(8, 1).astype("float32")
        def forward(x, y):
            return problematic_loss(y, model(x, training=True))
        if __name__ == "__main__":
            model.compile(optimizer="adam", loss=problematic_loss)
            model.fit(x, y, epochs=1, verbose=0)
    """, "model.trainable_variables", "x, y"),
]


def _run_json(capsys: Any, path: Path) -> dict[str, Any]:
    keras.utils.clear_session()
    main(["run", str(path), "--json"])
    captured = capsys.readouterr()
    assert captured.out, captured.err
    return json.loads(captured.out)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "text", "variables", "arguments"), QUESTIONS, ids=[q[0] for q in QUESTIONS])
def test_question(tmp_path: Path, capsys: Any, name: str, text: str, variables: str, arguments: str) -> None:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    document = _run_json(capsys, path)
    [step] = document["steps"]
    [site] = step["report"]["gradient_sites"]  # its sources in the order the step gives them
    keras.utils.clear_session()
    space = runpy.run_path(str(path))
    asked = eval(variables, space)  # noqa: S307 -- the test's own expression
    truth = watched_truth(space["forward"], asked, *eval(f"({arguments},)" if arguments else "()", space))  # noqa: S307
    assert len(site["sources"]) == len(truth)
    for entry, receives in zip(site["sources"], truth):
        assert (entry["verdict"] == "receives") == receives, (entry["name"], entry["verdict"], receives)
        if not receives:
            lines = {b["source"]["line"] for b in entry["barriers"]}
            assert lines == {line_of(path, "# CAUSE")}, entry["barriers"]
    assert not all(truth)
    if name == "losses_stored_in_variable":
        [detail] = {b["detail"] for v in site["sources"] for b in v["barriers"]}
        assert f"{path.name}:{line_of(path, '# ASSIGNED')}" in detail
    if name == "custom_gradient_none":
        [detail] = {b["detail"] for v in site["sources"] for b in v["barriers"]}
        assert "its grad_fn clip_op.grad at " in detail
        assert detail.endswith(f"{path.name}:{line_of(path, '# GRAD_FN')}")



# TensorFlow 1: "ValueError: No gradients provided for any variable" at minimize (tensorflow/tensorflow#1511:
# "there is no path between any of the tf.Variable objects ... and the loss"): an argmax, a py_func.
TF1_QUESTIONS = {
    "argmax": "pred = tf.argmax(tf.matmul(x, w) + b, 1)  # CAUSE\n"
              "loss = tf.reduce_mean(tf.cast(tf.not_equal(pred, tf.zeros_like(pred)), tf.float32))\n",
    "py_func": "err = tf.py_func(lambda p: (p ** 2).astype(np.float32), [tf.matmul(x, w) + b], tf.float32)  # CAUSE\n"
               "loss = tf.reduce_mean(err)\n",
}
TF1_SCRIPT = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
x = tf.placeholder(tf.float32, [None, 4])
w = tf.Variable(tf.zeros([4, 3])); b = tf.Variable(tf.zeros([3]))
{loss}if not __file__.endswith("_truth.py"):  # (the truth's copy asks TensorFlow, minimize would raise)
    train = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(train, {{x: np.ones((2, 4), np.float32)}})
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TF1_QUESTIONS))
def test_tf1_question(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.py"
    truth, document = tf1_run_against_truth(path, TF1_SCRIPT.format(loss=TF1_QUESTIONS[name]), "loss", ["w", "b"])
    [step] = document["steps"]
    [site] = step["report"]["gradient_sites"]
    assert [s["verdict"] != "receives" for s in site["sources"]] == truth
    assert {b["source"]["line"] for s in site["sources"] for b in s["barriers"]} == {line_of(path, "# CAUSE")}
