"""``flowcheck run``, in-process through ``main([...])``: how the script is run and stopped, exit codes,
output discipline. Each script is a tiny file in ``tmp_path``; the truth is a tape in the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from flowcheck.cli.main import main
from flowcheck.source.exceptions import describe_exception
from flowcheck.source.lines import SourceLine
from truth import line_of

ROOT = Path(__file__).resolve().parent.parent

# An eager custom loop over two layers, the second cut by a NumPy round trip; STEPS rounds.
EAGER = """\
import sys
import numpy as np
import tensorflow as tf
import keras

print("script starts", sys.argv[1:])
a = keras.layers.Dense(2, name="a")
b = keras.layers.Dense(1, name="b")
x = tf.ones((3, 2))
opt = keras.optimizers.SGD(0.1)
for step in range(3):
    with tf.GradientTape() as tape:
        h = tf.constant(a(x).numpy()) if CUT else a(x)
        loss = tf.reduce_mean(b(h))
    variables = a.trainable_variables + b.trainable_variables
    grads = tape.gradient(loss, variables)
    opt.apply_gradients(zip(grads, variables))
    print("step", step, "done")
"""



def one_round(script: str) -> dict[str, Any]:
    """The globals of ``script`` run as python runs it, for one round of its loop (``range(2)`` -> ``range(1)``):
    TensorFlow's own answers at its gradient calls, to compare with flowcheck's."""
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(script).replace("range(2)", "range(1)"), namespace)
    return namespace

def script(tmp_path: Path, text: str, name: str = "train.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["run", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_eager_step_is_tensorflows_own_answer_and_the_script_stops(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, "CUT = True\n" + EAGER)
    code, out, err = run(capsys, path, "--", "--flag", "7")
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "script starts ['--flag', '7']"  # the script's own output comes first
    assert "step 0 done" in lines and "step 1 done" not in lines  # ended before its second round
    # TensorFlow's answer, computed here: a's variables get None, b's a gradient.
    a, b = keras.layers.Dense(2), keras.layers.Dense(1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(b(tf.constant(a(tf.ones((3, 2))).numpy())))
    none = [g is None for g in tape.gradient(loss, a.trainable_variables + b.trainable_variables)]
    assert none == [True, True, False, False]
    assert "    TensorFlow gave None (2)" in lines
    assert lines[lines.index("    TensorFlow gave None (2)") + 1:][:2] == ["      a/kernel", "      a/bias"]
    # No graph to name an op: the line where a value the tape records left TensorFlow instead.
    cut = line_of(path, ".numpy()")
    assert any(line.startswith(f"    note: `.numpy()` at line {cut} leaves TensorFlow inside the tape's block") for line in lines)
    assert lines[-1].startswith("FAILED: GradientTape.gradient at ")


def test_an_eager_sites_note_names_a_numpy_function_that_read_a_recorded_tensor(tmp_path: Path, capsys: Any) -> None:
    """``np.mean(t)`` reads the tensor through its buffer, not ``__array__``: the NumPy function is still named at its line."""
    text = """\
        import numpy as np
        import tensorflow as tf

        w = tf.Variable([[1.0], [0.5]], name="w")
        x, y = tf.ones((4, 2)), np.zeros((4, 1), "float32")
        for step in range(2):
            with tf.GradientTape() as tape:
                pred = tf.matmul(x, w)
                err = np.mean((pred - y) ** 2)
                loss = tf.convert_to_tensor(err)
            grads = tape.gradient(loss, [w])
        """
    truth = one_round(text)
    assert [g is None for g in truth["grads"]] == [True]  # TensorFlow's answer, as the script gets it
    assert isinstance(truth["err"], np.floating)  # NumPy ran as it does without flowcheck
    path = script(tmp_path, text)
    code, out, err = run(capsys, path)
    assert code == 1
    cut = line_of(path, "np.mean(")
    assert f"    note: `np.mean()` at line {cut} leaves TensorFlow inside the tape's block" in out
    import tensorflow.python.framework.ops as tf_ops

    assert "__array_function__" not in tf_ops._EagerTensorBase.__dict__  # NumPy's protocol left as it was


EAGER_FUNCTIONS = """\
    import tensorflow as tf

    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(8, activation="relu"),
                                 tf.keras.layers.Dense(3)])
    loss_object = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    history = []

    def loss(model, x, y, training):
        y_ = model(x, training=training)
        return loss_object(y_true=y, y_pred=tf.round(y_))  # round cut

    def grad(model, inputs, targets):
        with tf.GradientTape() as tape:
            loss_value = loss(model, inputs, targets, training=True)
        history.append(loss_value)
        return loss_value, tape.gradient(loss_value, model.trainable_variables)

    class Trainer:
        def __init__(self, model):
            self.model, self.gate = model, tf.Variable(2.0, name="gate")

        def train_step(self, x, y, *, scale=1.0):
            with tf.GradientTape() as tape:
                logits = self.model(x) * tf.stop_gradient(self.gate)  # gate cut
                value = loss_object(y, logits) * scale
            return tape.gradient(value, [self.gate, *self.model.trainable_variables])

    x, y = tf.ones((6, 4)), tf.constant([0, 1, 2, 0, 1, 2])
    for epoch in range(2):
        STEP
    print("history", len(history), [type(h).__name__ for h in history])
"""


@pytest.mark.parametrize("shape", ["walkthrough", "trainer"])
def test_an_eager_sites_cut_is_named_by_a_trace_of_the_function_holding_its_tape(
    tmp_path: Path, capsys: Any, shape: str,
) -> None:
    call = "loss_value, grads = grad(model, x, y)" if shape == "walkthrough" else "grads = Trainer(model).train_step(x, y, scale=2.0)"
    text = textwrap.dedent(EAGER_FUNCTIONS).replace("STEP", call)
    truth = one_round(text)  # TensorFlow's answers, as the script gets them
    none = [g is None for g in truth["grads"]]
    path = script(tmp_path, text)
    capsys.readouterr()  # what the truth's own run printed
    code, out, err = run(capsys, path, "--json", "--continue")
    document = json.loads(out)
    [step] = document["steps"]
    site = step["site"]
    assert [s["tensorflow_none"] for s in site["sources"]] == none and any(none)
    marker = "# round cut" if shape == "walkthrough" else "# gate cut"
    for s in site["sources"]:
        lines = [b["source"]["line"] for b in s["barriers"]]
        assert lines == ([line_of(path, marker)] if s["tensorflow_none"] else [])
    assert any("traced by tf.function" in n for n in site["notes"])
    assert not any("cannot name the op" in n for n in site["notes"])
    # Traced once the script had ended: its own list holds what its two rounds put there, nothing symbolic.
    assert "history 2 ['EagerTensor', 'EagerTensor']" in err if shape == "walkthrough" else "history 0 []" in err


def test_a_numpy_ufunc_in_a_function_holding_an_eager_tape_is_named_by_its_trace(tmp_path: Path, capsys: Any) -> None:
    """``np.square(t)`` reads the tensor's buffer in C, unheard; the trace of the function holding the tape names it."""
    text = """\
        import numpy as np
        import tensorflow as tf

        w = tf.Variable([[1.0], [0.5]], name="w")

        def train_step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(np.square(tf.matmul(x, w) - y))
            return tape.gradient(loss, [w])

        for step in range(2):
            grads = train_step(tf.ones((4, 2)), np.zeros((4, 1), "float32"))
        """
    truth = one_round(text)
    assert [g is None for g in truth["grads"]] == [True]  # TensorFlow's answer, as the script gets it
    path = script(tmp_path, text)
    code, out, err = run(capsys, path)
    assert code == 1
    [note] = [line for line in out.splitlines() if "leaves TensorFlow there" in line]
    assert f":{line_of(path, 'np.square(')} (" in note and "to a numpy array" in note
    assert "cannot name the op" not in out


def test_an_eager_sites_note_names_no_conversion_that_cut_nothing(tmp_path: Path, capsys: Any) -> None:
    """The loss printed in the tape's block, a variable never read and an argmax cut: no line is
    blamed; the note says the op cannot be named without a graph."""
    text = """\
        import tensorflow as tf

        w = tf.Variable([[1.0, 0.5], [2.0, 0.1]], name="w")
        v = tf.Variable(1.0, name="v")
        unused = tf.Variable(3.0, name="unused")
        x = tf.ones((4, 2))
        for step in range(2):
            with tf.GradientTape() as tape:
                chosen = tf.cast(tf.argmax(tf.matmul(x, w), axis=1), tf.float32)
                loss = tf.reduce_mean(chosen) + v * v
                print("loss", float(loss), loss.numpy())
            grads = tape.gradient(loss, [w, v, unused])
        """
    truth = one_round(text)
    none = [g is None for g in truth["grads"]]
    assert none == [True, False, True]  # TensorFlow's answer, as the script gets it
    code, out, err = run(capsys, script(tmp_path, text))
    assert code == 1
    assert "    TensorFlow gave None (2)" in out.splitlines()
    assert "leaves TensorFlow" not in out
    assert "cannot name the op that cuts a source" in out


def test_json_keeps_stdout_for_the_document(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, "CUT = False\n" + EAGER)
    out_file = tmp_path / "report.json"
    code, out, err = run(capsys, path, "--json", "-o", str(out_file))
    assert code == 0
    document = json.loads(out)
    assert document == json.loads(out_file.read_text())
    assert "script starts []" in err and "step 0 done" in err
    (step,) = document["steps"]
    assert step["kind"] == "eager tape.gradient"
    assert [s["tensorflow_none"] for s in step["site"]["sources"]] == [False] * 4
    assert document["ok"] is True and document["stopped"] is True


# Seeded training of N steps that saves every weight (model and optimizer) to OUT at the end.
CUSTOM_STEP = """\
    @tf.function
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True)))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for _ in range(4):
        train_step(x)
    """
FIT = """\
    model.compile(optimizer=opt, loss="mse")
    model.fit(x, tf.zeros((8, 1)), batch_size=2, epochs=2, shuffle=True, verbose=0)
    """


# A layer drawing from a TensorFlow random op whose kernel keeps its own state (no SeedGenerator).
NOISE = """\
    class Noise(keras.layers.Layer):
        def call(self, x):
            return x + tf.random.normal(tf.shape(x))

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), Noise(), keras.layers.Dense(1)])
    """


@pytest.mark.parametrize(("training", "noise"), [(CUSTOM_STEP, False), (FIT, False), (CUSTOM_STEP, True), (FIT, True)],
                         ids=["custom step", "fit", "custom step, tf.random.normal", "fit, tf.random.normal"])
@pytest.mark.slow
def test_continue_trains_exactly_as_without_flowcheck(tmp_path: Path, capsys: Any, training: str, noise: bool) -> None:
    text = textwrap.dedent("""\
        import numpy as np
        import tensorflow as tf
        import keras

        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dropout(0.5),
                                  keras.layers.Dense(1)])
        opt = keras.optimizers.Adam(0.01)
        x = tf.constant(np.random.default_rng(0).normal(size=(8, 3)), tf.float32)
        """) + (textwrap.dedent(NOISE) if noise else "") + textwrap.dedent(training) + (
        "np.save(OUT, np.concatenate([v.numpy().ravel() for v in model.weights + opt.variables]))\n"
    )
    plain = tmp_path / "plain.npy"
    subprocess.run([sys.executable, script(tmp_path, f"OUT = {str(plain)!r}\n" + text, "a.py")],
                   check=True, capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    watched = tmp_path / "watched.npy"
    code, out, err = run(capsys, script(tmp_path, f"OUT = {str(watched)!r}\n" + text, "b.py"), "--continue")
    assert code == 0
    assert out.splitlines()[0].endswith("1 training step analyzed at its first call")
    np.testing.assert_array_equal(np.load(plain), np.load(watched))


# A seeded custom step that saves, after each step, how often Python ran its body, its loss and every weight.
FIRST_CALL = """\
    import numpy as np
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dropout(0.5),
                              keras.layers.Dense(1)])
    opt = keras.optimizers.Adam(0.01)
    x = tf.constant(np.random.default_rng(0).normal(size=(8, 3)), tf.float32)
    runs = []

    @tf.function
    def train_step(x):
        runs.append(1)  # a trace (two at the first call: Adam makes its slots) or an eager run
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True)))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for step in range(3):
        loss = train_step(x)
        np.save(f"{OUT}{step}.npy", np.concatenate([[len(runs), float(loss)]] + [
            v.numpy().ravel() for v in model.weights + opt.variables]))
    """


@pytest.mark.slow
def test_the_scripts_first_call_is_the_verification(tmp_path: Path, capsys: Any) -> None:
    plain, watched = tmp_path / "plain", tmp_path / "watched"
    text = textwrap.dedent(FIRST_CALL)
    subprocess.run([sys.executable, script(tmp_path, f"OUT = {str(plain)!r}\n" + text, "a.py")],
                   check=True, capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    code, out, err = run(capsys, script(tmp_path, f"OUT = {str(watched)!r}\n" + text, "b.py"), "--json")
    assert code == 0
    verification = json.loads(out)["steps"][0]["report"]["verification"]
    assert verification["agrees"] and verification["restored"] is False
    first = np.load(f"{plain}0.npy")
    assert verification["loss"] == first[1]  # the loss of the script's own first step
    assert all(v["changed"] and v["gradient"] == "nonzero" for v in verification["variables"])
    # Its first step happened once, as without flowcheck: the same traces, no extra run, the same weights.
    np.testing.assert_array_equal(np.load(f"{watched}0.npy"), first)
    assert not Path(f"{watched}1.npy").exists()  # ended at its second call


# Unseeded randomness inside the step: Keras's global SeedGenerator (made at the step's first call,
# its seed drawn from Python's random), and layers' own generators.
NOISY_TRAIN_STEP = """\
    class Noisy(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x)

        def train_step(self, data):
            x, y = data
            x = x + keras.random.normal(tf.shape(x), seed=None)  # Keras's global SeedGenerator
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(self(x, training=True) - y))
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"loss": loss}

    model = Noisy()
    model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=EAGERLY)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    """
NOISY_FIT = """\
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dropout(0.5),
                              keras.layers.GaussianNoise(0.3), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    """
NOISY_CUSTOM_STEP = """\
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dropout(0.5),
                              keras.layers.Dense(1)])
    opt = keras.optimizers.Adam(0.01)

    @tf.function
    def train_step(x, y):
        x = x + keras.random.normal(tf.shape(x))  # Keras's global SeedGenerator, made in this trace
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for _ in range(4):
        train_step(x, y)
    """
NOISY_END = """\
from keras.src.backend.common import global_state
seeds = global_state.get_global_attribute("global_seed_generator")
state = [seeds.state.numpy().ravel()] if seeds is not None else []
np.save(OUT, np.concatenate([v.numpy().ravel().astype("float64") for v in model.weights] + state))
"""


@pytest.mark.parametrize(("training", "eagerly"), [
    (NOISY_TRAIN_STEP, False), (NOISY_TRAIN_STEP, True), (NOISY_FIT, False), (NOISY_CUSTOM_STEP, False),
], ids=["train_step keras.random", "train_step keras.random, run_eagerly", "fit Dropout GaussianNoise",
        "custom step keras.random Dropout"])
@pytest.mark.slow
def test_unseeded_random_ops_verify_and_continue_exactly(tmp_path: Path, capsys: Any, training: str, eagerly: bool) -> None:
    text = textwrap.dedent(f"""\
        import numpy as np
        import tensorflow as tf
        import keras

        keras.utils.set_random_seed(1)
        EAGERLY = {eagerly}
        x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
        y = np.zeros((8, 1), "float32")
        """) + textwrap.dedent(training) + NOISY_END
    plain = tmp_path / "plain.npy"
    subprocess.run([sys.executable, script(tmp_path, f"OUT = {str(plain)!r}\n" + text, "a.py")],
                   check=True, capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    watched = tmp_path / "watched.npy"
    path = script(tmp_path, f"OUT = {str(watched)!r}\n" + text, "b.py")
    code, out, err = run(capsys, path, "--continue", "--json")
    (step,) = json.loads(out)["steps"]
    assert code == 0, step
    assert step["error"] is None and step["report"]["verification"]["agrees"]
    np.testing.assert_array_equal(np.load(plain), np.load(watched))  # weights and the global seed state
    code, out, err = run(capsys, path, "--json")  # verified by the script's own first call
    (step,) = json.loads(out)["steps"]
    assert code == 0, step
    assert step["error"] is None and step["report"]["verification"]["agrees"]


def test_script_without_a_training_step(tmp_path: Path, capsys: Any) -> None:
    code, out, err = run(capsys, script(tmp_path, "print('hello')\n"))
    assert code == 2
    assert out == "hello\n"
    assert err.strip().endswith("ended without a training step (no fit, train_on_batch, tf.function asking "
                                "for a gradient, Session.run of a gradient or train op, or tape.gradient was called)")


def test_script_error_is_one_line_at_its_line(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, "import tensorflow as tf\n\nx = tf.ones((2, 3))\ny = tf.matmul(x, x)\n")
    code, out, err = run(capsys, path)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"flowcheck: error: {path} failed before its first training step: InvalidArgumentError at ")
    assert f"{SourceLine(path, 4, '')} (y = tf.matmul(x, x)): Matrix size-incompatible: In[0]: [2,3]" in line


@pytest.mark.parametrize("typo", [
    "loss = keras.losses.mean_squared_error",  # keras.io's name, missing from tf.keras's Keras 3 shim
    "print(learning_rat)",
])
def test_a_scripts_typo_keeps_pythons_did_you_mean(tmp_path: Path, capsys: Any, typo: str) -> None:
    # Python's traceback says "Did you mean: 'MeanSquaredError'?" after the message (it is not part of
    # it); the one line flowcheck tells left it out.
    path = script(tmp_path, f"from tensorflow import keras\nlearning_rate = 0.1\n{typo}\n")
    alone = subprocess.run([sys.executable, path], capture_output=True, text=True, check=False)
    told_alone = alone.stderr.strip().splitlines()[-1]
    assert ". Did you mean: '" in told_alone
    code, out, err = run(capsys, path)
    (line,) = err.strip().splitlines()
    assert code == 2 and line.endswith(told_alone.split(": ", 1)[1])


def test_in_user_code_wrapper_is_unwrapped(tmp_path: Path) -> None:
    path = script(tmp_path, """\
        import tensorflow as tf

        @tf.function
        def f(x):
            return tf.reshape(x, (5,))
        """)
    namespace: dict[str, Any] = {}
    exec(compile(Path(path).read_text(), path, "exec"), namespace)  # noqa: S102
    with pytest.raises(Exception) as info:
        namespace["f"](tf.ones((2, 2)))
    assert str(info.value).startswith("in user code:")
    line = describe_exception(info.value, path)
    assert line.startswith(f"ValueError at {SourceLine(path, 5, '')} (return tf.reshape(x, (5,))): ")
    assert "in user code" not in line and "File " not in line


def test_argparse_errors_are_the_scripts_own(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, """\
        import argparse
        parser = argparse.ArgumentParser()
        parser.add_argument("--steps", type=int, required=True)
        parser.parse_args()
        """, "mytrain.py")
    code, out, err = run(capsys, path, "--", "--steps", "many")
    assert code == 2
    assert err.splitlines()[-1] == "mytrain.py: error: argument --steps: invalid int value: 'many'"
    assert "flowcheck" not in err


def test_usage_errors(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, "print('never')\n")
    assert run(capsys, path, "--steps", "3")[0] == 2  # the script's arguments go after --
    # A script's own --seed or --opt (a prefix of --optimizer) is not silently taken as flowcheck's.
    code, out, err = run(capsys, path, "--seed", "3", "--opt", "adam")
    assert code == 2 and out == "" and err.splitlines()[-1] == (
        f"flowcheck: error: unrecognized arguments: --seed 3 --opt adam (the script's own arguments go after --: "
        f"flowcheck run {path} -- --seed 3 --opt adam)")
    code, out, err = run(capsys, path, "-o", "x.png")
    assert code == 2 and "the report formats are .svg, .html, .dot, .me.json, .json" in err
    code, out, err = run(capsys, str(tmp_path / "missing.py"))
    assert code == 2 and err.strip() == f"flowcheck: error: no such file: {tmp_path / 'missing.py'}"


@pytest.mark.slow
def test_tensorflow_start_up_notices_are_filtered_but_not_the_scripts_stderr(tmp_path: Path) -> None:
    path = script(tmp_path, "import sys\nprint('my own warning', file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    flowcheck = [sys.executable, "-m", "flowcheck.cli", "run", path]
    quiet = subprocess.run(flowcheck, capture_output=True, text=True, env=env, cwd=ROOT)
    assert quiet.returncode == 2
    assert "my own warning" in quiet.stderr
    assert "absl::InitializeLog" not in quiet.stderr and "oneDNN" not in quiet.stderr
    verbose = subprocess.run([*flowcheck, "--verbose"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert "oneDNN custom operations are on" in verbose.stderr


def test_analyze_writes_json_and_keeps_stdout_for_it(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, """\
        import tensorflow as tf

        print("imported, with a progress bar")
        w = tf.Variable(tf.ones((2, 1)), name="w")
        example_inputs = (tf.ones((3, 2)),)

        @tf.function
        def loss_fn(x):
            return tf.reduce_sum(tf.matmul(x, w))
        """)
    out_file = tmp_path / "report.json"
    code = main(["analyze", path, "--json", "-o", str(out_file)])
    captured = capsys.readouterr()
    assert code == 0
    assert json.loads(captured.out) == json.loads(out_file.read_text())
    assert "imported, with a progress bar" in captured.err


def test_expect_patterns_match_the_owning_model(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, """\
        import tensorflow as tf
        import keras

        disc = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)], name="discriminator")
        gen = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)], name="generator")
        opt = keras.optimizers.SGD(0.1)

        @tf.function
        def d_step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(disc(tf.stop_gradient(gen(x))))
            grads = tape.gradient(loss, disc.trainable_variables)
            opt.apply_gradients(zip(grads, disc.trainable_variables))

        for _ in range(3):
            d_step(tf.ones((4, 2)))
        """)
    code, out, err = run(capsys, path, "--expect-receives", "discriminator/*", "--expect-blocked", "generator/*")
    lines = out.splitlines()
    assert code == 1  # generator/* matches no source of the step
    receives = next(line for line in lines if "receives discriminator/*" in line)
    assert receives.startswith("  ok  ")
    assert "  FAIL  blocked generator/*: matched no variable" in lines


# A DINO step whose tape is also given the teacher, cut on purpose by the stop_gradient of its targets.
DINO = """\
import tensorflow as tf
import keras

student = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)], name="student")
teacher = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)], name="teacher")
opt = keras.optimizers.SGD(0.1)

DECORATE
def train_step(x):
    with tf.GradientTape() as tape:
        targets = tf.stop_gradient(tf.nn.softmax(teacher(x) / 0.04))
        loss = -tf.reduce_mean(tf.reduce_sum(targets * tf.nn.log_softmax(student(x) / 0.1), -1))
    params = student.trainable_variables + teacher.trainable_variables
    grads = tape.gradient(loss, params)
    opt.apply_gradients((g, v) for g, v in zip(grads, params) if g is not None)
    return grads

for _ in range(2):
    GRADS = train_step(tf.ones((2, 3)))
"""


@pytest.mark.parametrize("decorate", ["@tf.function", ""], ids=["traced", "eager"])
def test_sources_expect_blocked_names_are_no_finding_of_the_step(tmp_path: Path, capsys: Any, decorate: str) -> None:
    text = DINO.replace("DECORATE", decorate)
    truth = [g is not None for g in one_round(text)["GRADS"]]  # TensorFlow's own answer at the call
    assert truth == [True, True, False, False]  # the scenario: the student receives, the teacher is cut
    path = script(tmp_path, text)
    code, out, _ = run(capsys, path, "--expect-receives", "student/*", "--expect-blocked", "teacher/*")
    assert code == 0, out  # as under analyze: a source cut that --expect-blocked names is on purpose
    assert out.rstrip().splitlines()[-1] == "OK: 2 expectations hold; every source not expected blocked receives a gradient"
    code, document = run_json(capsys, path, "--expect-blocked", "teacher/*")
    step = document["steps"][0]
    assert code == 0 and document["ok"] and step["failures"] == [] and (step["report"] is None or step["report"]["ok"])
    code, out, _ = run(capsys, path, "--expect-blocked", "teacher/*/kernel")  # a pattern naming only some of them
    verdict = out.rstrip().splitlines()[-1]
    assert code == 1 and "--expect-blocked" not in verdict and "kernel" not in verdict.partition(":")[2]
    assert ("1 of 4 sources get no gradient" if decorate else "TensorFlow gives no gradient to teacher/") in verdict


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["run", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_every_distinct_step_of_the_first_round_is_analyzed(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, """\
        import tensorflow as tf
        import keras

        disc = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)], name="discriminator")
        gen = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)], name="generator")
        d_opt, g_opt = keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1)

        @tf.function
        def d_step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(disc(gen(x)))
            grads = tape.gradient(loss, disc.trainable_variables)
            d_opt.apply_gradients(zip(grads, disc.trainable_variables))

        @tf.function
        def g_step(x):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(disc(gen(x)))
            grads = tape.gradient(loss, gen.trainable_variables)
            g_opt.apply_gradients(zip(grads, gen.trainable_variables))

        for i in range(3):
            d_step(tf.ones((4, 2)))
            g_step(tf.ones((4, 2)))
            print("round", i)
        """)
    code, out, err = run(capsys, path, "--json")
    document = json.loads(out)
    assert code == 0 and document["stopped"]
    assert [s["name"] for s in document["steps"]] == ["d_step", "g_step"]
    assert "round 0" in err and "round 1" not in err  # ended as d_step was about to run again
    # TensorFlow's answer, computed here: each tape gives every source of its own model a gradient.
    for step, model in zip(document["steps"], ("discriminator", "generator")):
        (site,) = step["report"]["gradient_sites"]
        assert all(s["verdict"] == "receives" and s["tensorflow_none"] is False for s in site["sources"])
        assert len(site["sources"]) == 2


def test_train_on_batch_is_a_step(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, """\
        import numpy as np
        import keras

        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        for i in range(3):
            model.train_on_batch(np.ones((4, 3), "float32"), np.zeros((4, 1), "float32"))
            print("batch", i)
        """)
    code, out, err = run(capsys, path)
    lines = out.splitlines()
    assert code == 0
    assert "batch 0" in lines and "batch 1" not in lines
    assert any(line.startswith("step 1: sequential") and "train_on_batch" in line for line in lines)
    assert lines[-1] == "OK: every source of every gradient call receives a gradient"


@pytest.mark.dot
def test_diagrams_are_written_per_step(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, """\
        import tensorflow as tf

        w = tf.Variable(tf.ones((2, 1)), name="w")
        v = tf.Variable(tf.ones((2, 1)), name="v")
        opt, opt_v = tf.keras.optimizers.SGD(0.1), tf.keras.optimizers.SGD(0.1)

        @tf.function
        def step_w(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.matmul(x, w))
            opt.apply_gradients(zip(tape.gradient(loss, [w]), [w]))

        @tf.function
        def step_v(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.matmul(x, v))
            opt_v.apply_gradients(zip(tape.gradient(loss, [v]), [v]))

        for _ in range(2):
            step_w(tf.ones((1, 2)))
            step_v(tf.ones((1, 2)))
        """)
    code, out, err = run(capsys, path, "-o", str(tmp_path / "flow.svg"))
    assert code == 0
    written = [str(tmp_path / "flow.step_w.svg"), str(tmp_path / "flow.step_v.svg")]
    assert out.splitlines()[-2:] == [f"wrote {p}" for p in written]  # after the summary, one line each
    assert out.index("step 2:") < out.index("wrote ")
    assert all(Path(p).read_text().lstrip().startswith("<?xml") for p in written)


def test_an_eager_loss_that_left_tensorflow_is_a_finding(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, """\
        import numpy as np
        import tensorflow as tf

        w = tf.Variable(tf.ones((2, 1)), name="w")
        for _ in range(2):
            with tf.GradientTape() as tape:
                loss = np.mean(tf.matmul(tf.ones((3, 2)), w).numpy())
            grads = tape.gradient(loss, [w])
        """)
    # TensorFlow's answer, computed here: the tape raises instead of returning None.
    w = tf.Variable(tf.ones((2, 1)))
    with tf.GradientTape() as tape:
        loss = np.mean(tf.matmul(tf.ones((3, 2)), w).numpy())
    with pytest.raises(AttributeError, match="_id"):
        tape.gradient(loss, [w])
    code, out, err = run(capsys, path, "--json")
    assert code == 1
    (step,) = json.loads(out)["steps"]
    assert step["site"]["error"].startswith("the target is a float")
    assert [s["name"] for s in step["site"]["sources"]] == ["w"]
    assert "failed" not in err


def test_analyze_points_a_training_script_to_run(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, """\
        import argparse

        def main():
            parser = argparse.ArgumentParser()
            parser.parse_args()

        if __name__ == "__main__":
            main()
        """)
    assert main(["analyze", path]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"flowcheck: error: no target found in {path}")
    assert line.endswith(f"{path} looks like a training script: `flowcheck run {path}` runs it as python does "
                         "and analyzes its training steps")


def test_snapshot_pins_the_flow_of_every_step(tmp_path: Path, capsys: Any) -> None:
    """``flowcheck run --snapshot`` records each gradient site; ``--check`` fails the edit that cuts one more."""
    # One line lower than the example: AutoGraph caches its conversions by code object, and code
    # objects of the same source compare equal whatever their file, so a verbatim copy run in a
    # worker that already ran the example (tests/test_run_examples.py) would get the example's lines.
    source = "# examples/argmax_gate.py\n" + (ROOT / "examples" / "argmax_gate.py").read_text()
    train = tmp_path / "train.py"
    train.write_text(source)
    lock = tmp_path / "flow.toml"
    code, _, _ = run(capsys, str(train), "--snapshot", str(lock), "--no-verify")
    assert code == 1 and lock.exists()  # the gate's cut is a finding of the run itself
    assert 'verdict = "blocked"' in lock.read_text() and "ArgMax" in lock.read_text()
    code, out, _ = run(capsys, str(train), "--check", str(lock), "--no-verify")
    assert code == 0, out  # the cut the snapshot records is no change
    marker = "outputs = tf.concat([e(x) for e in experts], axis=1)"
    assert marker in source
    train.write_text(source.replace(marker, "outputs = tf.stop_gradient(tf.concat([e(x) for e in experts], axis=1))"))
    code, out, _ = run(capsys, str(train), "--check", str(lock), "--no-verify")
    line = next(i for i, text in enumerate(train.read_text().splitlines(), 1) if "tf.stop_gradient(tf.concat" in text)
    assert code == 1
    assert f"expert_0/kernel: receives -> blocked (StopGradient at {train.name}:{line})" in out


# The smallest training step: one variable, its own tape and optimizer (indented as the scripts are).
MINIMAL_STEP = """
        w = tf.Variable(1.0)
        opt = tf.keras.optimizers.SGD(0.1)

        @tf.function
        def train_step():
            with tf.GradientTape() as tape:
                loss = tf.square(w)
            opt.apply_gradients(zip(tape.gradient(loss, [w]), [w]))
            return loss
"""


@pytest.mark.slow
def test_the_command_leaves_right_after_the_report_with_the_scripts_files_written(tmp_path: Path) -> None:
    log, ended = tmp_path / "log.txt", tmp_path / "atexit.txt"
    path = script(tmp_path, f"""\
        import atexit
        import tensorflow as tf

        log = open({str(log)!r}, "w")  # never closed, as scripts do
        atexit.register(lambda: open({str(ended)!r}, "w").write("ran"))
        """ + MINIMAL_STEP + f"""
        for i in range(3):
            log.write(f"step {{i}}\\n")
            train_step()
        """)
    done = subprocess.run([sys.executable, "-m", "flowcheck", "run", path], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: every source of every gradient call receives a gradient" in done.stdout
    assert log.read_text() == "step 0\nstep 1\n"  # flushed: the script ended at its second step
    assert ended.read_text() == "ran"


@pytest.mark.slow
def test_mixed_precision_fit_whose_first_scaled_gradients_overflow_still_agrees(tmp_path: Path) -> None:
    path = script(tmp_path, """\
        import numpy as np
        import keras

        keras.utils.set_random_seed(0)
        keras.mixed_precision.set_global_policy("mixed_float16")
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(16, activation="relu", name="h")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(1, dtype="float32", name="out")(hidden))
        model.compile(optimizer="adam", loss="mse")
        x = (np.random.default_rng(0).random((8, 4)) * 50).astype("float32")
        model.fit(x, x[:, :1] * 50, epochs=2, batch_size=4, verbose=0)  # float16 overflows at loss scale 2**15
        """)
    done = subprocess.run([sys.executable, "-m", "flowcheck", "run", path, "--json"], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (step,) = json.loads(done.stdout)["steps"]
    verification = step["report"]["verification"]
    assert "nonfinite" in {v["gradient"] for v in verification["variables"]}  # the overflow did happen
    assert verification["agrees"] and verification["problems"] == []
    assert "LossScaleOptimizer" in verification["optimizer"] and "scaled" in verification["optimizer"]


@pytest.mark.parametrize("code", ["'no GPU found, aborting'", "3", "0"])
def test_a_script_exiting_before_its_first_step_is_told_in_one_line(tmp_path: Path, capsys: Any, code: str) -> None:
    path = script(tmp_path, f"import sys\nprint('starting')\nsys.exit({code})\n")
    status, out, err = run(capsys, path)
    assert status == 2 and out == "starting\n"
    *before, line = err.strip().splitlines()
    if code == "0":
        assert line.startswith(f"flowcheck: error: {path} ended without a training step")
    else:
        assert line == f"flowcheck: error: {path} exited (sys.exit({eval(code)!r})) before its first training step"  # noqa: S307
        assert before == (["no GPU found, aborting"] if code.startswith("'") else [])


def test_a_script_that_swallows_the_stop_in_a_bare_except_still_ends(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, """\
        import tensorflow as tf
        """ + MINIMAL_STEP + """

        step = retries = 0
        while step < 3:
            try:
                train_step()
                step += 1
                print("step", step)
            except:  # noqa: E722 -- retries a failed batch, as such loops do
                retries += 1
        print("done after", retries, "retries")
        """)
    tracing = sys.gettrace()
    code, out, err = run(capsys, path)
    assert sys.gettrace() is tracing  # the stop's line tracer is gone with the script
    assert code == 0, err
    assert "step 1" in out.splitlines() and "step 2" not in out and "done after" not in out
    assert "OK: every source of every gradient call receives a gradient" in out


def test_a_nested_tf_functions_tape_is_a_site_when_the_step_is_traced_twice(tmp_path: Path, capsys: Any) -> None:
    from site_helpers import tape_truth

    # FGSM: the adversarial input comes from a nested tf.function's tape; Adam builds its slots on the
    # first call, so TensorFlow traces train_step twice and the second trace is the one that runs.
    path = script(tmp_path, """\
        import keras
        import numpy as np
        import tensorflow as tf

        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        opt = keras.optimizers.Adam()

        @tf.function
        def adversarial(x, y):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = loss_fn(y, model(x))
            return x + 0.1 * tf.sign(tape.gradient(loss, x))

        @tf.function
        def train_step(x, y):
            x_adv = adversarial(x, y)
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x)) + loss_fn(y, model(x_adv))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))

        x, y = tf.ones((4, 6)), tf.constant([0, 1, 2, 0])
        if __name__ == "__main__":
            for _ in range(3):
                train_step(x, y)
        """)
    module: dict[str, Any] = {}
    exec(compile(Path(path).read_text(), path, "exec"), module)
    state = [*module["model"].variables, *module["opt"].variables]
    truth = tape_truth(lambda: module["train_step"].python_function(module["x"], module["y"]), state)
    assert len(truth) == 2
    code, out, _ = run(capsys, path, "--json")
    assert code == 0
    (step,) = json.loads(out)["steps"]
    sites = step["report"]["gradient_sites"]
    assert [[s["tensorflow_none"] for s in site["sources"]] for site in sites] == truth
    assert [[s["verdict"] == "receives" for s in site["sources"]] for site in sites] == [[not n for n in t] for t in truth]
    assert step["report"]["verification"]["agrees"]


ZERO_STEP = """\
    import numpy as np
    import tensorflow as tf

    w = tf.Variable(tf.ones((3, 2)), name="w")
    frozen = tf.Variable(tf.ones((3, 2)), name="frozen")
    x = tf.ones((4, 3))

    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(x @ w + tf.stop_gradient(x @ frozen))
        grads = tape.gradient(loss, [w, frozen], unconnected_gradients=tf.UnconnectedGradients.ZERO)
        assert grads[1] is not None and not np.any(grads[1].numpy()), "ZERO gives zeros"
        w.assign_sub(0.1 * grads[0])
        frozen.assign_sub(0.1 * grads[1])
    """


@pytest.mark.parametrize("traced", [False, True], ids=["eager", "tf.function"])
def test_unconnected_gradients_zero_is_judged_by_tensorflows_none_and_verified_by_its_zeros(
    tmp_path: Path, capsys: Any, traced: bool,
) -> None:
    text = textwrap.dedent(ZERO_STEP)
    if traced:
        text = text.replace("def step():", "@tf.function\ndef step():").replace(
            "assert grads[1] is not None and not np.any(grads[1].numpy())", "tf.debugging.assert_equal(grads[1], 0.0)")
    path = script(tmp_path, text + "for _ in range(2):\n    step()\n")
    # TensorFlow's answer with NONE, the definition of receiving: frozen gets None.
    w, frozen, x = tf.Variable(tf.ones((3, 2))), tf.Variable(tf.ones((3, 2))), tf.ones((4, 3))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(x @ w + tf.stop_gradient(x @ frozen))
    none = [g is None for g in tape.gradient(loss, [w, frozen])]
    assert none == [False, True]
    code, out, err = run(capsys, path, "--json")
    assert code == 1, err
    (step,) = json.loads(out)["steps"]
    site = step["report"]["gradient_sites"][0] if traced else step["site"]
    assert [s["verdict"] != "receives" for s in site["sources"]] == none
    if traced:  # the graph's verdict, verified: the zeros ZERO gives a blocked source agree with it
        assert step["report"]["verification"]["agrees"] and not step["failures"][1:]
    else:  # TensorFlow's own answer, asked with NONE; the script still got its zeros (its assert held)
        assert [s["tensorflow_none"] for s in site["sources"]] == none
    code, out, _ = run(capsys, path)
    assert "no path reaches (unconnected_gradients=ZERO)" in out if traced else "1 source receives a gradient" in out


def test_a_keras_layer_error_before_the_first_step_shows_the_layers_message(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, """\
        import numpy as np
        import tensorflow as tf

        model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1, name="head")])

        @tf.function
        def train_step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(model(x))
            return tape.gradient(loss, model.trainable_variables)

        train_step(np.zeros((8, 4), "float32"))
        """)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, name="head")])
    with pytest.raises(ValueError) as raised:
        model(np.zeros((8, 4), "float32"))
    # Keras's own text: a wrapper line, then the layer's message in bold.
    lines = [line.strip() for line in str(raised.value).replace("\x1b[1m", "").replace("\x1b[0m", "").splitlines()]
    assert lines[0].startswith("Exception encountered when calling")
    message = next(line for line in lines[1:] if line)
    code, out, err = run(capsys, path)
    assert code == 2
    assert err.strip().splitlines()[-1].endswith(f"(loss = tf.reduce_mean(model(x))): {message}")
    assert describe_exception(raised.value, None).endswith(f": {message}")


def test_an_eager_variable_rebound_to_a_tensor_is_caught_at_the_sites_next_call(tmp_path: Path, capsys: Any) -> None:
    # The classic "gradient is None after the first iteration": `W = W - lr * dW` makes W a tensor.
    path = script(tmp_path, """\
        import tensorflow as tf

        W = tf.Variable(tf.ones((3, 1)), name="W")
        b = tf.Variable(tf.zeros((1,)), name="b")
        x, y = tf.ones((4, 3)), tf.zeros((4, 1))
        for epoch in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(x @ W + b - y))
            dW, db = tape.gradient(loss, [W, b])
            W = W - 0.1 * dW
            b.assign_sub(0.1 * db)
        """)
    # TensorFlow's answers, computed here: the first round gives both a gradient, the second None to W.
    W, b, x = tf.Variable(tf.ones((3, 1))), tf.Variable(tf.zeros((1,))), tf.ones((4, 3))
    answers = []
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(x @ W + b))
        dW, db = tape.gradient(loss, [W, b])
        answers.append([dW is None, db is None])
        W = W - 0.1 * dW if dW is not None else W
    assert answers == [[False, False], [True, False]]
    code, out, _ = run(capsys, path, "--json")
    assert code == 1
    (step,) = json.loads(out)["steps"]
    assert [s["tensorflow_none"] for s in step["site"]["sources"]] == answers[0]
    assert step["next_call"].startswith("at its next call TensorFlow gives no gradient to W: W is no longer a variable")
    assert step["failures"] == [f"GradientTape.gradient at {step['site']['source']['file']}:9: {step['next_call']}"]


EAGER_HELPER_TWICE = """\
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)
    G = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)], name="G")
    D = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)], name="D")
    answers = []

    def train_d(images, labels):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(D(images) - labels))
        answers.append([g is None for g in tape.gradient(loss, D.trainable_variables)])

    def train_g(noise):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(D(tf.round(G(noise))))  # the generator is cut
        answers.append([g is None for g in tape.gradient(loss, G.trainable_variables)])

    for step in range(2):
        noise = tf.ones((2, 4))
        train_d(tf.ones((2, 8)), tf.ones((2, 1)))
        train_d(G(noise), tf.zeros((2, 1)))
        train_g(noise)
    """


def test_an_eager_step_called_again_from_another_line_is_still_the_first_round(tmp_path: Path, capsys: Any) -> None:
    # The discriminator's plain-function step on real, then on fake data: its second call was taken
    # for the next round, so the script stopped before the generator's step (cut) and said OK, exit 0.
    namespace = one_round(EAGER_HELPER_TWICE)  # TensorFlow's own answers
    answers = namespace["answers"]
    code, out, _ = run(capsys, script(tmp_path, EAGER_HELPER_TWICE), "--json")
    steps = json.loads(out)["steps"]
    assert [step["name"] for step in steps] == ["train_d", "train_g"]
    assert [[s["tensorflow_none"] for s in step["site"]["sources"]] for step in steps] == [answers[0], answers[2]]
    assert [[s["verdict"] != "receives" for s in step["site"]["sources"]] for step in steps] == [answers[0], answers[2]]
    assert answers[2] == [True, True] and code == 1


EAGER_MULTI_TASK = """\
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)
    shared = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu")], name="shared")
    heads = [keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)], name=f"head{i}") for i in range(3)]
    x, y = tf.ones((4, 6)), tf.zeros((4, 1))
    answers = []
    for epoch in range(2):
        with tf.GradientTape(persistent=True) as tape:
            h = shared(x)
            losses = [tf.reduce_mean(tf.square(head(h) - y)) for head in heads[:2]]
            losses.append(tf.reduce_mean(tf.square(tf.round(heads[2](h)) - y)))  # the third head is cut
        for head, loss in zip(heads, losses):
            grads = tape.gradient(loss, head.trainable_variables)
            answers.append([g is None for g in grads])
        del tape
    """


def test_a_persistent_eager_tape_asked_in_a_loop_is_one_site_per_call_of_the_round(tmp_path: Path, capsys: Any) -> None:
    # One persistent tape, one gradient call per task head from one line: the second call was taken
    # for the next round, so the script stopped there and the cut third head was never seen (exit 0).
    namespace = one_round(EAGER_MULTI_TASK)  # TensorFlow's own answers
    answers = namespace["answers"]
    assert any(any(a) for a in answers)  # the case is about a cut call after the first
    code, out, _ = run(capsys, script(tmp_path, EAGER_MULTI_TASK), "--json")
    steps = json.loads(out)["steps"]
    assert [[s["tensorflow_none"] for s in step["site"]["sources"]] for step in steps] == answers
    assert [[s["verdict"] != "receives" for s in step["site"]["sources"]] for step in steps] == answers
    assert code == 1


EAGER_PINN = """\
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD(0.01)
    t, x = tf.ones((3, 1)), tf.zeros((3, 1))
    for epoch in range(2):
        with tf.GradientTape() as outer:
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(t); tape.watch(x)
                u = net(tf.concat([t, x], axis=1))
            u_t, u_x = tape.gradient(u, t), tape.gradient(u, x)
            loss = tf.reduce_mean(tf.square(u_t + u * u_x))
        grads = outer.gradient(loss, net.trainable_variables)
        optimizer.apply_gradients(zip(grads, net.trainable_variables))
    """


def test_two_eager_gradient_calls_on_one_line_are_two_sites_and_the_round_goes_on(tmp_path: Path, capsys: Any) -> None:
    # An eager PINN: the second call on the line was taken for the first one's next round, so the
    # script stopped there and the training call below it was never analyzed.
    namespace = one_round(EAGER_PINN)  # TensorFlow's own answers
    answers = [[namespace["u_t"] is None], [namespace["u_x"] is None], [g is None for g in namespace["grads"]]]
    code, out, _ = run(capsys, script(tmp_path, EAGER_PINN), "--json")
    steps = json.loads(out)["steps"]
    assert [[s["name"] for s in step["site"]["sources"]] for step in steps[:2]] == [["t"], ["x"]]
    assert [[s["tensorflow_none"] for s in step["site"]["sources"]] for step in steps] == answers
    assert [[s["verdict"] != "receives" for s in step["site"]["sources"]] for step in steps] == answers
    assert code == 0


# Eager MAML: each task's inner tape asks from one line inside the meta tape's block; the meta
# tape then asks for the weights and a head the tasks never read (None).
EAGER_MAML = """\
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)
    w = tf.Variable(tf.ones((2, 1)), name="w")
    head = tf.Variable(tf.ones((1, 1)), name="head")  # never read: TensorFlow gives it None
    opt = keras.optimizers.SGD(0.01)
    tasks = [(tf.ones((3, 2)), tf.zeros((3, 1))), (tf.fill((3, 2), 2.0), tf.ones((3, 1)))]
    answers = []
    for it in range(2):
        with tf.GradientTape() as meta_tape:
            meta_loss = 0.0
            for x, y in tasks:
                with tf.GradientTape() as inner:
                    loss = tf.reduce_mean(tf.square(x @ w - y))
                (g,) = inner.gradient(loss, [w])
                answers.append([g is None])
                fast = w - 0.1 * g
                meta_loss += tf.reduce_mean(tf.square(x @ fast - y))
        grads = meta_tape.gradient(meta_loss, [w, head])
        answers.append([g is None for g in grads])
        opt.apply_gradients((g, v) for g, v in zip(grads, [w, head]) if g is not None)
    """


def test_an_eager_inner_tape_asked_again_inside_the_same_outer_tape_is_the_same_round(
    tmp_path: Path, capsys: Any,
) -> None:
    # The second task's inner call was taken for the first one's next round: the script ended there,
    # before the meta tape's call (the one that trains) was ever analyzed, and said OK (exit 0).
    answers = one_round(EAGER_MAML)["answers"]  # TensorFlow's own: two inner calls, then the meta call
    code, out, _ = run(capsys, script(tmp_path, EAGER_MAML), "--json")
    steps = json.loads(out)["steps"]
    assert [[s["tensorflow_none"] for s in step["site"]["sources"]] for step in steps] == [answers[0], answers[2]]
    assert [[s["verdict"] != "receives" for s in step["site"]["sources"]] for step in steps] == [answers[0], answers[2]]
    assert any(answers[2]) and code == 1


# MAML as often asked about: the fast weights assigned into a clone model inside the meta tape's block.
EAGER_MAML_CLONE = """\
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    clone = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    x, y = tf.ones((3, 2)), tf.zeros((3, 1))
    for it in range(2):
        with tf.GradientTape() as meta_tape:
            with tf.GradientTape() as inner:
                loss = tf.reduce_mean(tf.square(model(x) - y))
            grads = inner.gradient(loss, model.trainable_variables)
            for c, v, g in zip(clone.trainable_variables, model.trainable_variables, grads):
                c.assign(v - 0.1 * g)  # fast weights
            meta_loss = tf.reduce_mean(tf.square(clone(x) - y))
        meta_grads = meta_tape.gradient(meta_loss, model.trainable_variables)
        answer = [g is None for g in meta_grads]
    """


def test_an_eager_tape_names_the_assign_that_took_its_value_into_another_variable(
    tmp_path: Path, capsys: Any,
) -> None:
    # The meta gradient is None for every weight and the eager site said only that it had no graph
    # to explain it; it now names the user's assign inside the tape's block.
    answer = one_round(EAGER_MAML_CLONE)["answer"]
    path = script(tmp_path, EAGER_MAML_CLONE)
    code, out, _ = run(capsys, path, "--json")
    meta = json.loads(out)["steps"][1]["site"]
    assert [s["tensorflow_none"] for s in meta["sources"]] == [s["verdict"] != "receives" for s in meta["sources"]] == answer
    assert all(answer) and code == 1
    line = line_of(path, "# fast weights")
    assert f"`.assign()` at line {line} puts a value the tape records into a variable inside the tape's block" \
        in " ".join(meta["notes"])
    keras.utils.clear_session()
    code, out, _ = run(capsys, path)  # the same note in the terminal's words
    assert f"    note: `.assign()` at line {line} puts a value the tape records" in out


# A loss's running mean assigned inside the tape's block, while a tf.round is what cuts the first layer.
EAGER_EMA_ROUND = """\
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)
    a, b = keras.layers.Dense(3), keras.layers.Dense(1)
    ema, seen = tf.Variable(0.0, trainable=False), tf.Variable(0.0, trainable=False)
    x = tf.ones((4, 2))
    for step in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(b(tf.round(a(x))))
            ema.assign(value=0.9 * ema + 0.1 * loss)  # (by keyword: assign_add's is called delta)
            seen.assign_add(delta=1.0)
        answer = [g is None for g in tape.gradient(loss, a.trainable_variables + b.trainable_variables)]
    """


def test_an_eager_tape_does_not_blame_an_assign_to_a_variable_it_never_read(tmp_path: Path, capsys: Any) -> None:
    answer = one_round(EAGER_EMA_ROUND)["answer"]
    code, out, _ = run(capsys, script(tmp_path, EAGER_EMA_ROUND), "--json")
    (step,) = json.loads(out)["steps"]
    assert [s["tensorflow_none"] for s in step["site"]["sources"]] == answer and any(answer) and code == 1
    assert not any(".assign()" in note for note in step["site"]["notes"])  # the round cut it, not the running mean
    assert json.loads(out)["script_error"] is None


ONE_TAPE_GAN = """\
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)
    gen = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)], name="gen")
    disc = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)], name="disc")

    @tf.function
    def train_step(real):
        with tf.GradientTape() as tape:  # one non-persistent tape for both losses
            fake_out = disc(gen(tf.ones((2, 4))))
            gen_loss = -tf.reduce_mean(fake_out)
            disc_loss = tf.reduce_mean(fake_out) - tf.reduce_mean(disc(real))
        g_grads = tape.gradient(gen_loss, gen.trainable_variables)
        d_grads = tape.gradient(disc_loss, disc.trainable_variables)
        return g_grads, d_grads

    for _ in range(2):
        train_step(tf.ones((2, 8)))
    """


def test_a_gradient_call_that_raises_is_not_counted_as_giving_gradients(tmp_path: Path, capsys: Any) -> None:
    # A GAN step asking one non-persistent tape twice: TensorFlow raises at the second call, which
    # gives no gradient at all; the site's heading said "2 of 2 sources receive" beside its error.
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(ONE_TAPE_GAN).split("for _ in")[0], namespace)
    with pytest.raises(RuntimeError, match="non-persistent GradientTape"):
        namespace["train_step"](tf.ones((2, 8)))  # TensorFlow's own answer at the second call
    code, out, _ = run(capsys, script(tmp_path, ONE_TAPE_GAN))
    second = out[out.index("site 2: "):]
    assert second.splitlines()[0].endswith(": 2 of 2 sources would receive, but the call raises")
    assert "raised: RuntimeError: A non-persistent GradientTape" in second
    assert "2 sources would receive a gradient had the call not raised: disc/" in second
    assert "sources receive" not in second.split("notes")[0]
    assert code == 1


FINE_TUNE_HEAD = """\
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)
    backbone = keras.layers.Dense(4, name="backbone")
    head = keras.layers.Dense(1, name="head")
    scale = tf.Variable(2.0, name="scale")
    backbone.build((None, 3))
    head.build((None, 4))
    x = tf.ones((2, 3))
    for epoch in range(2):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([v.value for v in head.trainable_variables])  # a Keras 3 variable is watched by its value
            tape.watch(scale)
            loss = tf.reduce_sum(head(backbone(x))) * scale
        grads = tape.gradient(loss, [scale] + backbone.trainable_variables + head.trainable_variables)
    """


def test_an_eager_tape_watching_only_some_variables_says_which_and_why_the_rest_get_none(
    tmp_path: Path, capsys: Any,
) -> None:
    # An eager tape is recorded from its gradient call on: its tape.watch calls went unseen, so the
    # site said "watch_accessed_variables=False" and nothing of what it watched nor why the others got None.
    namespace = one_round(FINE_TUNE_HEAD)  # TensorFlow's own answer
    answers = [g is None for g in namespace["grads"]]
    code, out, _ = run(capsys, script(tmp_path, FINE_TUNE_HEAD), "--json")
    (step,) = json.loads(out)["steps"]
    site = step["site"]
    assert [s["tensorflow_none"] for s in site["sources"]] == [s["verdict"] != "receives" for s in site["sources"]] == answers
    unwatched = [s["name"] for s in site["sources"] if s["tensorflow_none"]]
    flags, watched = site["watch"].split("; watched: ")
    assert flags == "watch_accessed_variables=False"  # the tape knows what it watches, not in which order
    assert sorted(watched.split(", ")) == sorted(s["name"] for s in site["sources"] if not s["tensorflow_none"])
    assert any(n.startswith(f"not watched: {', '.join(unwatched)}: ") for n in site["notes"])
    assert code == 1


HESSIAN_VECTOR = """\
    import tensorflow as tf

    w = tf.Variable([1.0, 2.0], name="w")
    probe = tf.Variable([0.5, 0.5], name="probe", trainable=False)
    scale = tf.Variable(3.0, name="scale", trainable=False)
    x = tf.constant([1.0, 3.0])
    for step in range(2):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = tf.reduce_sum((w * x) ** 2) * scale
            g = inner.gradient(loss, w)
            gv = tf.reduce_sum(g * probe)
        hvp = outer.gradient(gv, [w, scale, probe])
        w.assign_sub(0.01 * hvp[0])
    """


def test_an_eager_default_tape_says_its_non_trainable_sources_get_none_as_they_are_not_watched(
    tmp_path: Path, capsys: Any,
) -> None:
    # A Hessian-vector product asked of frozen variables: TensorFlow gives None, and the site said only
    # that an eager tape keeps no graph to explain it.
    namespace = one_round(HESSIAN_VECTOR)  # TensorFlow's own answer
    answers = [g is None for g in namespace["hvp"]]
    code, out, _ = run(capsys, script(tmp_path, HESSIAN_VECTOR), "--json")
    outer = json.loads(out)["steps"][-1]["site"]
    assert [s["tensorflow_none"] for s in outer["sources"]] == answers == [False, True, True]
    assert any(n.startswith("not watched: scale, probe: trainable=False") for n in outer["notes"])
    assert code == 1


def test_an_eager_jacobian_is_a_site_not_tensorflows_own_pfor_function(tmp_path: Path, capsys: Any) -> None:
    # Eagerly, tape.jacobian runs a tf.function of TensorFlow's (pfor's `f`) that asks for gradients.
    path = script(tmp_path, """\
        import tensorflow as tf

        w = tf.Variable(tf.ones((3, 2)), name="w")
        v = tf.Variable(tf.ones((3, 2)), name="v")
        x = tf.ones((4, 3))
        for step in range(2):
            with tf.GradientTape() as tape:
                out = x @ w + tf.round(x @ v)
            j = tape.jacobian(out, [w, v])
            w.assign_sub(0.01 * tf.reduce_sum(j[0], axis=[0, 1]))
        """)
    w, v, x = tf.Variable(tf.ones((3, 2))), tf.Variable(tf.ones((3, 2))), tf.ones((4, 3))
    with tf.GradientTape() as tape:
        out = x @ w + tf.round(x @ v)
    none = [j is None for j in tape.jacobian(out, [w, v])]
    assert none == [False, True]
    code, out_, _ = run(capsys, path, "--json")
    assert code == 1
    (step,) = json.loads(out_)["steps"]  # one step: the script's jacobian, no "pfor.<locals>.f"
    assert step["name"] == "tape.jacobian" and step["site"]["kind"] == "GradientTape.jacobian"
    assert [s["tensorflow_none"] for s in step["site"]["sources"]] == none


# The custom training walkthrough's shape: the eager tape in a helper `grad`, called from the loop.
WALKTHROUGH = """\
import tensorflow as tf
import keras

model = keras.Sequential([keras.layers.Dense(3, activation="relu"), keras.layers.Dense(2)])
x = tf.ones((4, 3))
def grad(model, inputs):
    with tf.GradientTape() as tape:
        loss_value = tf.reduce_mean(tf.round(model(inputs)) + model(inputs))
    return loss_value, tape.gradient(loss_value, model.trainable_variables)
for epoch in range(2):
    loss_value, grads = grad(model, x)
"""


def test_eager_step_in_a_helper_is_first_called_where_the_helper_is_called(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, WALKTHROUGH)
    code, out, err = run(capsys, path, "--json")
    (step,) = json.loads(out)["steps"]
    assert step["name"] == "grad"
    assert (step["call"]["line"], step["call"]["code"]) == (11, "loss_value, grads = grad(model, x)")
    site = step["site"]
    assert site["source"]["line"] == 9  # the site itself stays at the tape's line
    model = keras.Sequential([keras.layers.Dense(3, activation="relu"), keras.layers.Dense(2)])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.round(model(tf.ones((4, 3)))) + model(tf.ones((4, 3))))
    truth = [g is None for g in tape.gradient(loss, model.trainable_variables)]
    assert [s["tensorflow_none"] for s in site["sources"]] == truth
    assert code == (1 if any(truth) else 0)


def test_ctrl_c_after_the_first_round_keeps_the_report(tmp_path: Path, capsys: Any) -> None:
    # Ctrl-C while a --continue run trained on lost every analyzed step to one "interrupted" line.
    text = "CUT = False\n" + EAGER + "    if step == 1:\n        raise KeyboardInterrupt\n"
    path = script(tmp_path, text)
    code, out, err = run(capsys, path, "--continue")
    a, b = keras.layers.Dense(2), keras.layers.Dense(1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(b(a(tf.ones((3, 2)))))
    none = [g is None for g in tape.gradient(loss, a.trainable_variables + b.trainable_variables)]
    lines = out.splitlines()
    assert code == 1 and "Traceback" not in err
    assert ("    TensorFlow gave None" in "\n".join(lines)) == any(none)
    line = line_of(path, "raise KeyboardInterrupt")
    assert f"the script then failed: KeyboardInterrupt at {path}:{line} (raise KeyboardInterrupt)" in lines
    assert lines[-1] == "FAILED: the script failed after its first step"


@pytest.mark.parametrize("code", ["0", "1", "'diverged'"])
def test_a_script_exiting_with_failure_after_its_first_round_fails_the_run(tmp_path: Path, capsys: Any, code: str) -> None:
    # sys.exit(1) after an analyzed step (sys.exit(main()) of a run that failed) was told "OK", exit 0.
    text = "CUT = False\n" + EAGER + f"    import sys\n    sys.exit({code})\n"
    path = script(tmp_path, text)
    status, out, err = run(capsys, path, "--continue")
    failed = eval(code) not in (None, 0)  # noqa: S307 -- Python's own rule for a failing exit
    assert "Traceback" not in err and status == (1 if failed else 0)
    line = line_of(path, "sys.exit(")
    then = f"the script then failed: SystemExit at {path}:{line} (sys.exit({code})): {eval(code)}"  # noqa: S307
    assert (then in out.splitlines()) == failed


INTEGER_SOURCE = """\
    import tensorflow as tf

    w = tf.Variable([1.0, 2.0], name="w")
    seen = tf.Variable(0, name="seen")
    x = tf.constant([1.0, 3.0])
    for step in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(w * x) * tf.cast(seen + 1, tf.float32)
        grads = tape.gradient(loss, [w, seen])
        seen.assign_add(1)
    """


def test_an_eager_tapes_integer_source_is_said_to_carry_no_gradient(tmp_path: Path, capsys: Any) -> None:
    namespace = one_round(INTEGER_SOURCE)  # TensorFlow's own answer
    code, out, _ = run(capsys, script(tmp_path, INTEGER_SOURCE), "--json")
    site = json.loads(out)["steps"][0]["site"]
    assert [s["tensorflow_none"] for s in site["sources"]] == [g is None for g in namespace["grads"]] == [False, True]
    assert any(n.startswith("seen (int32): a variable of a non-float dtype") for n in site["notes"])
    assert code == 1


EAGER_CLIP = """\
import tensorflow as tf
import keras


class Clip(keras.Model):
    def __init__(self):
        super().__init__(name="clip")
        self.proj = keras.layers.Dense(4)
        self.logit_scale = tf.Variable(2.0, name="logit_scale")  # Keras 2 style: Keras 3 does not track it

    def call(self, x):
        z = tf.math.l2_normalize(self.proj(x), axis=-1)
        return tf.exp(self.logit_scale) * tf.matmul(z, z, transpose_b=True)


model, opt = Clip(), keras.optimizers.SGD(0.1)
x = tf.random.stateless_normal((6, 3), seed=(1, 2))
for step in range(2):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.range(6), model(x)))
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables))
"""


def test_an_eager_tape_tells_why_a_watched_variable_a_keras_model_holds_is_not_asked_for(
    tmp_path: Path, capsys: Any
) -> None:
    ns = one_round(EAGER_CLIP)
    model, x = ns["model"], ns["x"]
    asked = any(v is model.logit_scale for v in model.trainable_variables)
    with tf.GradientTape() as tape:  # the script's own tape: it watches logit_scale, as every read trainable variable
        loss = tf.reduce_mean(model(x))
    watched = any(v is model.logit_scale for v in tape.watched_variables())
    reaches = tape.gradient(loss, model.logit_scale) is not None
    code, out, _ = run(capsys, script(tmp_path, EAGER_CLIP))
    told = "note: not asked for: logit_scale is a tf.Variable held as clip.logit_scale" in out
    assert told == (watched and reaches and not asked), out
    assert told and code == 0  # every source it asks for receives: a note, not a finding
