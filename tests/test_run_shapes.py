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
from flowcheck.run.step import UNFINISHED_REPEATS
from truth import watched_truth


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
    strategy = tf.distribute.MirroredStrategy() if DISTRIBUTED else tf.distribute.get_strategy()
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
        opt = keras.optimizers.Adam(1e-3)
    ds = tf.data.Dataset.from_tensor_slices((tf.random.normal((64, 4)), tf.random.normal((64, 1)))).batch(8).repeat()
    it = iter(strategy.experimental_distribute_dataset(ds) if DISTRIBUTED else ds)

    @tf.function
    def train_loop(iterator, steps):
        def step_fn(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss
        total = tf.constant(0.0)
        for _ in tf.range(steps):
            x, y = next(iterator)
            total += strategy.reduce("SUM", strategy.run(step_fn, args=(x, y)), axis=None)
        return total / tf.cast(steps, tf.float32)

    losses = [float(train_loop(it, tf.constant(4))) for epoch in range(3)]
    np.save(OUT, np.array(losses + [float(v.numpy().sum()) for v in model.weights]))
    """


@pytest.mark.slow  # a script run whole, about 2 s or more
@pytest.mark.parametrize("distributed", [False, True], ids=["tf.data iterator", "distributed iterator"])
def test_a_training_loop_inside_a_tf_function_is_judged_at_its_site_and_continues_exactly(
    tmp_path: Path, capsys: Any, distributed: bool,
) -> None:
    alone, watched = tmp_path / "alone.npy", tmp_path / "watched.npy"
    keras.utils.clear_session()
    head = f"DISTRIBUTED = {distributed}\n"
    runpy.run_path(script(tmp_path, head + f"OUT = {str(alone)!r}\n" + textwrap.dedent(LOOP), "a.py"), run_name="__main__")
    code, document = run_json(capsys, script(tmp_path, head + f"OUT = {str(watched)!r}\n" + textwrap.dedent(LOOP), "b.py"),
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
    # The verification ran the loop once and put the iterator back, or (a distributed iterator's position
    # cannot be saved) the loop was not run: the script trained as alone.
    assert (step["report"]["verification"] is None) == distributed
    assert any(n.startswith("not verified: the step draws batches from a DistributedIterator")
               for n in step["report"]["notes"]) == distributed
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


@pytest.mark.slow  # a script run whole, about 2 s or more
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


# WGAN-GP written eagerly: the gradient penalty is a tf.function with a tape of its own, called inside
# the eager critic tape, which answers for what it returns.
GP_EAGER = """\
    import numpy as np
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)
    critic = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    c_opt = keras.optimizers.Adam(1e-3)

    @tf.function
    def gradient_penalty(real, fake):
        alpha = tf.random.uniform([tf.shape(real)[0], 1], 0.0, 1.0)
        interpolated = real + alpha * (fake - real)
        with tf.GradientTape() as gp_tape:
            gp_tape.watch(interpolated)
            pred = critic(interpolated, training=True)
        grads = gp_tape.gradient(pred, [interpolated])[0]
        return tf.reduce_mean((tf.norm(grads, axis=1) - 1.0) ** 2)

    real = tf.constant(np.random.default_rng(0).normal(size=(8, 4)), tf.float32)
    for step in range(3):
        fake = tf.random.normal((8, 4))
        with tf.GradientTape() as tape:
            c_loss = tf.reduce_mean(critic(fake)) - tf.reduce_mean(critic(real)) + 10.0 * gradient_penalty(real, fake)
        c_grads = tape.gradient(c_loss, critic.trainable_variables)
        c_opt.apply_gradients(zip(c_grads, critic.trainable_variables))
        np.save(f"{OUT}{step}.npy", np.concatenate([v.numpy().ravel() for v in critic.weights]))
    """


@pytest.mark.parametrize("keep_going", [False, True], ids=["first round", "--continue"])
def test_a_gradient_penalty_function_inside_an_eager_tape_is_judged_at_its_own_call(
    tmp_path: Path, capsys: Any, keep_going: bool,
) -> None:
    from site_helpers import tape_truth

    text = f"OUT = {str(tmp_path / 'w')!r}\n" + textwrap.dedent(GP_EAGER)
    keras.utils.clear_session()
    namespace = runpy.run_path(script(tmp_path, text, "a.py"), run_name="__main__")
    alone = np.load(tmp_path / "w2.npy")
    critic, real = namespace["critic"], namespace["real"]

    def first_round() -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(critic(real)) + namespace["gradient_penalty"].python_function(real, real + 1.0)
        tape.gradient(loss, critic.trainable_variables)

    truth = tape_truth(first_round, critic.weights)  # [the penalty's call, the critic tape's call]
    code, document = run_json(capsys, script(tmp_path, text), *(["--continue"] if keep_going else []))
    penalty, critic_step = document["steps"]
    (site,) = penalty["report"]["gradient_sites"]  # not its output judged as a loss of the critic's weights
    assert [s["tensorflow_none"] for s in site["sources"]] == [s["verdict"] != "receives" for s in site["sources"]] == truth[0]
    assert [s["tensorflow_none"] for s in critic_step["site"]["sources"]] == truth[1]
    assert penalty["report"]["verification"]["agrees"] and penalty["error"] is None
    assert code == 0
    if keep_going:  # verified under the critic's tape and restored: the script trained as alone
        np.testing.assert_array_equal(np.load(tmp_path / "w2.npy"), alone)


# A loop variable first set inside a tf.range loop: AutoGraph traces the body once more, in a scratch graph.
LOOP_SETS_LOSS = """\
    import tensorflow as tf
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="a"), keras.layers.Dense(1, name="b")])
    unused = keras.layers.Dense(1, name="unused")
    unused.build((None, 2))
    opt = keras.optimizers.SGD(0.1)

    @tf.function
    def train(x, n):
        for _ in tf.range(n):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(model(x))
            variables = model.trainable_variables + unused.trainable_variables
            grads = tape.gradient(loss, variables)
            opt.apply_gradients(zip(grads[:4], variables[:4]))
        return loss

    for _ in range(2):
        train(tf.ones((4, 3)), tf.constant(2))
    """


def test_a_gradient_call_in_autographs_scratch_trace_of_a_loop_body_is_no_site(tmp_path: Path, capsys: Any) -> None:
    namespace = runpy.run_path(script(tmp_path, LOOP_SETS_LOSS.split("    for _ in range(2)")[0], "m.py"))
    model, unused = namespace["model"], namespace["unused"]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(tf.ones((4, 3))))
    none = [g is None for g in tape.gradient(loss, model.trainable_variables + unused.trainable_variables)]
    code, document = run_json(capsys, script(tmp_path, LOOP_SETS_LOSS))
    (step,) = document["steps"]
    (site,) = step["report"]["gradient_sites"]  # one call, made in the loop body the function holds
    assert [s["verdict"] != "receives" for s in site["sources"]] == none == [s["tensorflow_none"] for s in site["sources"]]
    assert code == 1  # unused/* gets None


# Debugging a step: run_functions_eagerly(True) at the top, a .numpy() inside the tf.function.
EAGERLY = """\
    import numpy as np
    import tensorflow as tf

    tf.config.run_functions_eagerly(True)
    w = tf.Variable(tf.ones((3, 2)), name="w")
    frozen = tf.Variable(tf.ones((3, 2)), name="frozen")
    opt = tf.keras.optimizers.SGD(0.1)

    @tf.function
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(x @ w + tf.stop_gradient(x @ frozen))
        print("loss now", loss.numpy())
        grads = tape.gradient(loss, [w, frozen])
        opt.apply_gradients([(grads[0], w)])

    for step in range(3):
        train_step(tf.ones((4, 3)))
    """


def test_a_tf_function_run_eagerly_by_the_script_is_judged_as_eager_and_still_runs(tmp_path: Path, capsys: Any) -> None:
    w, frozen, x = tf.Variable(tf.ones((3, 2))), tf.Variable(tf.ones((3, 2))), tf.ones((4, 3))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(x @ w + tf.stop_gradient(x @ frozen))
    none = [g is None for g in tape.gradient(loss, [w, frozen])]
    try:
        code, document = run_json(capsys, script(tmp_path, EAGERLY))
    finally:
        tf.config.run_functions_eagerly(False)
    assert document["script_error"] is None  # not traced: its .numpy() works as without flowcheck
    (step,) = document["steps"]
    assert step["kind"] == "eager tape.gradient"
    assert [s["tensorflow_none"] for s in step["site"]["sources"]] == none == [False, True]
    assert any("run_functions_eagerly(True)" in note for note in step["site"]["notes"])
    assert code == 1


FIT_EAGERLY = """\
    import numpy as np
    import tensorflow as tf
    import keras

    class M(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(1)
            self.extra = keras.layers.Dense(1)

        def call(self, x):
            return self.d(x)

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(self(x, training=True) - y))
            print("loss", loss.numpy())
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            return {"loss": loss}

    m = M()
    m.extra.build((None, 3))
    m.compile(optimizer="sgd", run_eagerly=RUN_EAGERLY)
    m.fit(np.ones((8, 3), "float32"), np.zeros((8, 1), "float32"), batch_size=4, epochs=2, verbose=0)
    """


@pytest.mark.parametrize("how", ["compile(run_eagerly=True)", "tf.config.run_functions_eagerly(True)"])
def test_an_eager_fit_whose_train_step_cannot_be_traced_is_judged_at_its_eager_call(
    tmp_path: Path, capsys: Any, how: str,
) -> None:
    functions = how.startswith("tf.config")
    text = f"RUN_EAGERLY = {not functions}\n" + ("import tensorflow\ntensorflow.config.run_functions_eagerly(True)\n"
                                                 if functions else "") + textwrap.dedent(FIT_EAGERLY)
    d, extra = keras.layers.Dense(1), keras.layers.Dense(1)
    extra.build((None, 3))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(d(tf.ones((4, 3)))))
    none = [g is None for g in tape.gradient(loss, d.trainable_variables + extra.trainable_variables)]
    code, document = run_json(capsys, script(tmp_path, text))
    assert document["script_error"] is None
    (step,) = document["steps"]  # not "could not be analyzed": TensorFlow's own answer at the call
    assert step["kind"] == "eager tape.gradient" and step["error"] is None
    assert step["name"] == "m.fit"  # the model's step fit runs, not a tape of the script's
    assert [s["tensorflow_none"] for s in step["site"]["sources"]] == none == [False, False, True, True]
    assert [s["verdict"] for s in step["site"]["sources"]] == ["receives", "receives", "unused", "unused"]
    assert document["untrained"] == [] and code == 1


KERAS_STEP_EAGERLY = """\
    import numpy as np
    import tensorflow as tf
    import keras

    class Noisy(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], 1), initializer="ones")

        def call(self, x):
            return tf.matmul(x, self.w) * float(np.mean(x.numpy()))  # leaves TensorFlow: not traceable

    class M(keras.Model):
        def __init__(self):
            super().__init__()
            self.n, self.d = Noisy(), keras.layers.Dense(1)

        def call(self, x):
            return self.d(self.n(x))

    m = M()
    m.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    m.fit(np.ones((8, 3), "float32"), np.zeros((8, 1), "float32"), batch_size=4, epochs=2, verbose=0)
    """


def test_keras_own_train_step_run_eagerly_and_untraceable_is_headed_as_the_models_fit(tmp_path: Path, capsys: Any) -> None:
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(KERAS_STEP_EAGERLY).replace("epochs=2", "epochs=1"), namespace)  # noqa: S102 -- the script alone
    m, x = namespace["m"], tf.ones((4, 3))
    with tf.GradientTape() as tape:  # Keras's own step on a batch: TensorFlow's answer
        loss = tf.reduce_mean(tf.square(m(x)))
    none = [g is None for g in tape.gradient(loss, m.trainable_weights)]
    path = script(tmp_path, KERAS_STEP_EAGERLY)
    code, document = run_json(capsys, path)
    (step,) = document["steps"]
    assert step["name"] == "m.fit" and step["site"]["kind"] == "Keras train_step"
    assert [s["tensorflow_none"] for s in step["site"]["sources"]] == none and code == int(any(none))
    assert document["untrained"] == []  # run eagerly, fit keeps no traced step
    keras.utils.clear_session()
    main(["run", path])
    assert f"step 1: m.fit (keras train_step, run eagerly), first called at {path}:" in capsys.readouterr().out


FIT_GENERATOR = """\
    import numpy as np
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)
    X = np.random.default_rng(0).normal(size=(24, 5)).astype("float32")

    def gen():
        for row in X:
            yield row, row[:1]

    ds = tf.data.Dataset.from_generator(gen, output_signature=(tf.TensorSpec((5,), tf.float32),
                                                               tf.TensorSpec((1,), tf.float32))).shuffle(8, seed=1).batch(8)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(ds, epochs=2, verbose=0)
    np.save(OUT, np.concatenate([w.ravel() for w in model.get_weights()]))
    """


@pytest.mark.slow  # a script run whole, about 2 s or more
def test_continue_on_a_fit_over_a_generator_dataset_trains_as_alone(tmp_path: Path, capsys: Any) -> None:
    # tf.data saves a generator dataset's iterator before its first element and refuses after it.
    alone, watched = tmp_path / "alone.npy", tmp_path / "watched.npy"
    keras.utils.clear_session()
    runpy.run_path(script(tmp_path, f"OUT = {str(alone)!r}\n" + textwrap.dedent(FIT_GENERATOR), "a.py"), run_name="__main__")
    code, document = run_json(capsys, script(tmp_path, f"OUT = {str(watched)!r}\n" + textwrap.dedent(FIT_GENERATOR)),
                              "--continue")
    assert document["script_error"] is None
    (step,) = document["steps"]
    assert all(not s["tensorflow_none"] and s["verdict"] == "receives" for s in step["report"]["gradient_sites"][0]["sources"])
    assert code == 0
    np.testing.assert_array_equal(np.load(alone), np.load(watched))


TRACE_PRINT = """\
    import tensorflow as tf

    w = tf.Variable(1.0, name="w")
    opt = tf.keras.optimizers.SGD(0.1)

    @tf.function
    def train_step():
        print("Tracing train_step")  # Python side effect: runs once per trace
        with tf.GradientTape() as tape:
            loss = tf.square(w)
        opt.apply_gradients(zip(tape.gradient(loss, [w]), [w]))
        return loss

    for i in range(3):
        print("step", i, float(train_step()))
    """


def test_continue_runs_the_steps_python_as_often_as_the_script_alone(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, TRACE_PRINT)
    runpy.run_path(path, run_name="__main__")
    alone = capsys.readouterr().out.splitlines()
    code = main(["run", path, "--continue", "--json"])
    captured = capsys.readouterr()
    (step,) = json.loads(captured.out)["steps"]
    assert code == 0 and step["report"]["verification"]["agrees"]
    assert step["report"]["verification"]["restored"] is True  # run ahead of the script's call, then put back
    assert [line for line in captured.err.splitlines() if line.startswith(("Tracing", "step"))] == alone


def test_a_step_whose_trace_raises_inside_a_loop_body_is_told_by_its_own_error(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, """\
        import tensorflow as tf
        import keras

        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, name="a")])
        opt = keras.optimizers.SGD(0.1)

        @tf.function
        def train(x, n):
            loss = tf.constant(0.0)
            for _ in tf.range(n):
                with tf.GradientTape() as tape:
                    loss = tf.reduce_mean(model(x))
                opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
                tf.reshape(x, (5,))
            return loss

        train(tf.ones((4, 3)), tf.constant(2))
        """)
    with pytest.raises(ValueError) as raised:  # the script's own error, alone
        runpy.run_path(path, run_name="__main__")
    code, document = run_json(capsys, path)
    (step,) = document["steps"]
    assert step["raised"].startswith("ValueError at ") and "(tf.reshape(x, (5,)))" in step["raised"]
    assert step["raised"].split("): ", 1)[1][:40] in str(raised.value)
    assert step["failures"] == [f"train raised {step['raised']}"]  # not "reads no variable"
    assert code == 2  # the script failed in its first step: nothing analyzed


# WGAN-GP as research code writes it: the critic's step runs N_CRITIC times before the generator's
# first step, so the critic's step repeats before the round is over.
WGAN_GP = """\
    import numpy as np
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)
    N_CRITIC = 3
    generator = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)], name="generator")
    critic = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)], name="critic")
    g_opt, c_opt = keras.optimizers.Adam(1e-3, beta_1=0.5), keras.optimizers.Adam(1e-3, beta_1=0.5)
    real_data = tf.random.normal((16, 2))

    def gradient_penalty(real, fake):
        alpha = tf.random.uniform([16, 1], 0.0, 1.0)
        interpolated = real + alpha * (fake - real)
        with tf.GradientTape() as gp_tape:
            gp_tape.watch(interpolated)
            pred = critic(interpolated, training=True)
        grads = gp_tape.gradient(pred, [interpolated])[0]
        return tf.reduce_mean((tf.norm(grads, axis=1) - 1.0) ** 2)

    @tf.function
    def train_critic(real):
        with tf.GradientTape() as tape:
            fake = generator(tf.random.normal((16, 4)), training=True)  # read inside the tape, as Keras's example does
            c_loss = tf.reduce_mean(critic(fake, training=True)) - tf.reduce_mean(critic(real, training=True))
            c_loss += 10.0 * gradient_penalty(real, fake)
        c_opt.apply_gradients(zip(tape.gradient(c_loss, critic.trainable_variables), critic.trainable_variables))
        return c_loss

    @tf.function
    def train_generator():
        with tf.GradientTape() as tape:
            g_loss = -tf.reduce_mean(critic(generator(tf.random.normal((16, 4)), training=True), training=True))
        g_opt.apply_gradients(zip(tape.gradient(g_loss, generator.trainable_variables), generator.trainable_variables))
        return g_loss

    for epoch in range(2):
        for _ in range(N_CRITIC):
            train_critic(real_data)
        train_generator()
    np.save(OUT, np.array([float(tf.reduce_sum(v)) for v in generator.weights + critic.weights]))
    """


# The same with the fakes made before the critic's tape opens: the critic's step reads the generator,
# but not differentiably, and no gradient call of it asks for the generator.
_INSIDE = """        with tf.GradientTape() as tape:
            fake = generator(tf.random.normal((16, 4)), training=True)  # read inside the tape, as Keras's example does
"""
_BEFORE = """        fake = generator(tf.random.normal((16, 4)), training=True)  # before the tape
        with tf.GradientTape() as tape:
"""
WGAN_GP_FAKES_FIRST = WGAN_GP.replace(_INSIDE, _BEFORE) if _INSIDE in WGAN_GP else ""  # "": the case fails


@pytest.mark.parametrize(("text", "options"), [
    pytest.param(WGAN_GP, [], id="ended"),
    pytest.param(WGAN_GP_FAKES_FIRST, [], id="fakes made before the critic's tape", marks=pytest.mark.slow),
    pytest.param(WGAN_GP, ["--continue"], id="continued", marks=pytest.mark.slow),
])
def test_a_generator_step_after_n_critic_critic_steps_is_in_the_round(
    tmp_path: Path, capsys: Any, text: str, options: list[str],
) -> None:
    assert text, "the fakes-first script no longer derives from WGAN_GP"
    alone, watched = tmp_path / "alone.npy", tmp_path / "watched.npy"
    keras.utils.clear_session()
    namespace = runpy.run_path(script(tmp_path, f"OUT = {str(alone)!r}\n" + textwrap.dedent(text), "a.py"),
                               run_name="__main__")
    code, document = run_json(capsys, script(tmp_path, f"OUT = {str(watched)!r}\n" + textwrap.dedent(text), "b.py"),
                              *options)
    # TensorFlow's answer at each site, from the models the script built alone.
    generator, critic, real = namespace["generator"], namespace["critic"], namespace["real_data"]
    with tf.GradientTape(persistent=True) as tape:
        fake = generator(tf.random.normal((16, 4)), training=True)
        c_loss = tf.reduce_mean(critic(fake, training=True)) - tf.reduce_mean(critic(real, training=True))
        g_loss = -tf.reduce_mean(critic(fake, training=True))
    truth = {"train_critic": [g is None for g in tape.gradient(c_loss, critic.trainable_variables)],
             "train_generator": [g is None for g in tape.gradient(g_loss, generator.trainable_variables)]}
    assert [s["name"] for s in document["steps"]] == ["train_critic", "train_generator"]
    for step in document["steps"]:
        site = step["report"]["gradient_sites"][-1]  # the critic's own tape follows its penalty's
        assert [s["verdict"] != "receives" for s in site["sources"]] == truth[step["name"]]
        assert step["failures"] == []  # the generator trains in its own step: not "never trains"
    assert code == 0
    if options:  # --continue: the script trained exactly as alone
        np.testing.assert_array_equal(np.load(alone), np.load(watched))


def test_a_variable_no_step_trains_ends_the_round_after_a_bounded_number_of_repeats(
    tmp_path: Path, capsys: Any,
) -> None:
    from flowcheck.run.step import UNFINISHED_REPEATS

    path = script(tmp_path, """\
        import tensorflow as tf
        import keras

        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        temperature = tf.Variable(2.0, name="temperature")
        opt = keras.optimizers.SGD(0.1)

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(model(x) / temperature)
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

        for i in range(50):
            print("call", i)
            step(tf.ones((4, 3)))
        """)
    namespace = runpy.run_path(path, run_name="__main__")
    capsys.readouterr()
    model, temperature = namespace["model"], namespace["temperature"]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(temperature)
        loss = tf.reduce_mean(model(tf.ones((4, 3))) / temperature)
    assert tape.gradient(loss, temperature) is not None  # it could train: no gradient call asks for it
    keras.utils.clear_session()
    code = main(["run", path, "--json"])
    captured = capsys.readouterr()
    (step,) = json.loads(captured.out)["steps"]
    assert step["failures"] == ["1 variable never trains: temperature"] and code == 1
    # The first call, the repeats let through while another step might have trained it, the stopped one.
    assert captured.err.count("call ") == UNFINISHED_REPEATS + 2


# keras.io's DDPG (ddpg_pendulum.py): the critic's tape reads the target networks (no stop_gradient)
# and asks for the critic's weights only; the script moves the targets itself by set_weights.
DDPG = """\
    import numpy as np
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)
    def get_critic():
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
    critic_model, target_critic = get_critic(), get_critic()
    target_critic.set_weights(critic_model.get_weights())
    critic_optimizer = keras.optimizers.Adam(0.002)

    @tf.function
    def update(state_batch, reward_batch, next_state_batch):
        with tf.GradientTape() as tape:
            y = reward_batch + 0.99 * target_critic(next_state_batch)
            critic_loss = tf.math.reduce_mean(tf.math.square(y - critic_model(state_batch)))
        critic_grad = tape.gradient(critic_loss, critic_model.trainable_variables)
        critic_optimizer.apply_gradients(zip(critic_grad, critic_model.trainable_variables))

    def update_target(target, original, tau):
        target_weights = target.get_weights()
        original_weights = original.get_weights()
        for i in range(len(target_weights)):
            target_weights[i] = original_weights[i] * tau + target_weights[i] * (1 - tau)
        target.set_weights(target_weights)

    rng = np.random.default_rng(0)
    for step in range(3):
        update(*(tf.constant(rng.random((8, n)), tf.float32) for n in (3, 1, 3)))
        if SOFT_UPDATE:
            update_target(target_critic, critic_model, 0.005)
    print("trained", float(tf.reduce_sum(target_critic.weights[0])))
"""


@pytest.mark.parametrize("soft_update", [True, False])
def test_a_target_network_the_script_updates_itself_is_not_never_trained(
    tmp_path: Path, capsys: Any, soft_update: bool,
) -> None:
    # TensorFlow's answer: the critic's tape would give the target network a gradient (it is read,
    # watched, not stopped), so only what the script does with it decides whether it trains.
    target, critic = (keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)]) for _ in "ab")
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(target(tf.ones((2, 3))) - critic(tf.ones((2, 3)))))
    assert all(g is not None for g in tape.gradient(loss, target.trainable_variables))
    path = script(tmp_path, f"SOFT_UPDATE = {soft_update}\n" + textwrap.dedent(DDPG))
    code, document = run_json(capsys, path)
    (step,) = document["steps"]
    assert [s["tensorflow_none"] for s in step["report"]["gradient_sites"][0]["sources"]] == [False] * 4
    moved = [n for n in step["report"]["notes"] if "changed between its calls" in n]
    if soft_update:  # moved by set_weights between the step's calls: trained, without a gradient
        assert step["report"]["never_trained"] == [] and code == 0
        assert moved and moved[0].startswith("4 variables")
    else:  # read by the step, asked for by none, and left as they are: never trained, as before
        assert len(step["report"]["never_trained"]) == 4 and code == 1 and not moved


def test_never_trained_in_a_run_is_judged_over_its_steps_not_left_to_another(tmp_path: Path, capsys: Any) -> None:
    # The run analyzed every step it met: its text says so, where a single step's analysis points
    # at the other steps flowcheck run would analyze.
    text = """\
        import tensorflow as tf

        enc, head = tf.keras.layers.Dense(4), tf.keras.layers.Dense(1)
        model = tf.keras.Sequential([enc, head])
        opt = tf.keras.optimizers.Adam(1e-2)
        x, y = tf.ones([8, 3]), tf.zeros([8, 1])

        @tf.function
        def train_step(x, y):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((model(x) - y) ** 2)
            grads = tape.gradient(loss, head.trainable_variables)
            opt.apply_gradients(zip(grads, head.trainable_variables))

        for epoch in range(2):
            train_step(x, y)
        """
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(text).replace("range(2)", "range(0)"), namespace)
    enc, model = namespace["enc"], namespace["model"]
    with tf.GradientTape() as tape:  # TensorFlow's answer: the encoder would get a gradient, were it asked for
        loss = tf.reduce_mean((model(namespace["x"]) - namespace["y"]) ** 2)
    assert all(g is not None for g in tape.gradient(loss, enc.trainable_variables))
    assert main(["run", script(tmp_path, text)]) == 1
    out = capsys.readouterr().out
    assert "  never trained (2): " in out
    assert "(no gradient call of any step the run analyzed asks for them)" in out
    assert "another training step may train them" not in out


def test_a_target_network_moved_only_after_the_round_is_never_trained_with_continue_too(
    tmp_path: Path, capsys: Any,
) -> None:
    # Repeats pass while the target looks untrained, up to UNFINISHED_REPEATS; then the round is
    # over. A copy made after it (a later phase) is not the round's: --continue, which lets it run,
    # judges as the run that stops at the round's end.
    loop = textwrap.dedent(DDPG).replace("range(3)", f"range({UNFINISHED_REPEATS + 3})")
    text = f"SOFT_UPDATE = False\n{loop}target_critic.set_weights(critic_model.get_weights())\n"
    path = script(tmp_path, text)
    (stopped, document), (continued, kept_going) = run_json(capsys, path), run_json(capsys, path, "--continue")
    assert document["steps"][0]["report"]["never_trained"] == kept_going["steps"][0]["report"]["never_trained"]
    assert len(kept_going["steps"][0]["report"]["never_trained"]) == 4 and stopped == continued == 1


# SAC / TD3 style: the target critic's value is cut by a stop_gradient, and the step moves the
# target itself by a polyak assign after the critic's update.
POLYAK = """\
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)
    critic = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
    target = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
    opt = keras.optimizers.Adam(1e-3)

    @tf.function
    def update(s, r, s2):
        backup = tf.stop_gradient(r + 0.99 * target(s2))
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(critic(s) - backup))
        grads = tape.gradient(loss, critic.trainable_variables)
        opt.apply_gradients(zip(grads, critic.trainable_variables))
        for v, vt in zip(critic.weights, target.weights):
            vt.assign(0.005 * v + 0.995 * vt)
        return loss

    for i in range(6):
        update(tf.ones((4, 3)), tf.zeros((4, 1)), tf.ones((4, 3)))
        open(LOG, "a").write("call\\n")
    """


def test_a_target_network_the_step_moves_itself_does_not_keep_the_round_open(tmp_path: Path, capsys: Any) -> None:
    # The target's trainable variables, read by the step and asked for by no gradient call, kept the
    # round open as if a later step would train them: the script ran every one of its updates (up to
    # 10) before it was ended. The step's own soft update moved them: trained, without a gradient.
    log = tmp_path / "calls.txt"
    text = f"LOG = {str(log)!r}\n" + textwrap.dedent(POLYAK)
    namespace = runpy.run_path(script(tmp_path, text.replace("range(6)", "range(0)"), "a.py"), run_name="__main__")
    critic, target = namespace["critic"], namespace["target"]
    s, r = tf.ones((4, 3)), tf.zeros((4, 1))
    truth = [not receives for receives in watched_truth(
        lambda: tf.reduce_mean(tf.square(critic(s) - tf.stop_gradient(r + 0.99 * target(s)))), critic.trainable_variables)]
    code, document = run_json(capsys, script(tmp_path, text))
    (step,) = document["steps"]
    assert [x["tensorflow_none"] for x in step["report"]["gradient_sites"][0]["sources"]] == truth
    assert document["stopped"] and log.read_text().splitlines() == ["call"]  # ended at the second call
    assert step["report"]["never_trained"] == [] and code == (1 if any(truth) else 0)


# MAML's meta step (a github-style script): each task's inner tape.gradient is made inside the outer
# tape; its target is part of the meta loss, not the step's loss.
MAML = """\
    import numpy as np
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    meta_optimizer = keras.optimizers.Adam(1e-3)

    def forward(x, weights):
        return tf.matmul(tf.nn.relu(tf.matmul(x, weights[0]) + weights[1]), weights[2]) + weights[3]

    @tf.function
    def meta_train_step(x_tr, y_tr, x_te, y_te):
        with tf.GradientTape() as outer_tape:
            task_losses = []
            for i in range(x_tr.shape[0]):
                with tf.GradientTape() as inner_tape:
                    loss = tf.reduce_mean(tf.square(y_tr[i] - model(x_tr[i])))
                grads = inner_tape.gradient(loss, model.trainable_variables)
                fast_weights = [w - 0.01 * g for w, g in zip(model.trainable_variables, grads)]
                task_losses.append(tf.reduce_mean(tf.square(y_te[i] - forward(x_te[i], fast_weights))))
            meta_loss = tf.reduce_mean(tf.stack(task_losses))
        meta_grads = outer_tape.gradient(meta_loss, model.trainable_variables)
        meta_optimizer.apply_gradients(zip(meta_grads, model.trainable_variables))
        return meta_loss

    rng = np.random.default_rng(0)
    losses = [float(meta_train_step(*(rng.normal(size=(2, 5, 1)).astype("float32") for _ in range(4))))
              for _ in range(2)]
    np.save(OUT, np.array(losses))
    """


@pytest.mark.slow
def test_the_verified_loss_of_a_maml_step_is_its_meta_loss_not_an_inner_tasks(tmp_path: Path, capsys: Any) -> None:
    # The verification named the first gradient call's target, the first task's inner loss, as the
    # step's loss; the step's loss is what its outermost tape differentiates: what the step returns.
    text = f"OUT = {str(tmp_path / 'losses')!r}\n" + textwrap.dedent(MAML)
    keras.utils.clear_session()
    runpy.run_path(script(tmp_path, text, "alone.py"), run_name="__main__")
    alone = np.load(tmp_path / "losses.npy")
    code, document = run_json(capsys, script(tmp_path, text))
    (step,) = document["steps"]
    sites = step["report"]["gradient_sites"]
    assert len(sites) == 3 and all(s["agrees"] for s in sites)
    assert [s["tensorflow_none"] for site in sites for s in site["sources"]] == [False] * 12
    assert step["report"]["verification"]["loss"] == pytest.approx(alone[0], rel=1e-5)
    assert code == 0


# A model written with tf.Module, no Keras, trained by an eager loop (TensorFlow's "Introduction to modules").
MODULE_EAGER = """\
    import tensorflow as tf

    class Dense(tf.Module):
        def __init__(self, in_features, out_features, name=None):
            super().__init__(name=name)
            self.w = tf.Variable(tf.random.normal([in_features, out_features]), name="w")
            self.b = tf.Variable(tf.zeros([out_features]), name="b")

        def __call__(self, x):
            return tf.nn.relu(tf.matmul(x, self.w) + self.b)

    class SequentialModule(tf.Module):
        def __init__(self, name=None):
            super().__init__(name=name)
            self.dense_1 = Dense(3, 3)
            self.dense_2 = Dense(3, 2)
            self.unused = tf.Variable(1.0)

        @tf.function
        def __call__(self, x):
            return self.dense_2(self.dense_1(x))

    model = SequentialModule()
    opt = tf.optimizers.SGD(0.1)
    x, y = tf.random.normal((8, 3)), tf.random.normal((8, 2))
    for epoch in range(3):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(y - model(x)))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients((g, v) for g, v in zip(grads, model.trainable_variables) if g is not None)
    """


def test_a_tf_module_models_variables_at_an_eager_call_are_named_by_their_paths(tmp_path: Path, capsys: Any) -> None:
    """``b``, ``w``, ``b``, ``w``, ``Variable`` were the names of ``model.trainable_variables`` at an
    eager call; each is now told by its path in the module the script holds."""
    namespace = runpy.run_path(script(tmp_path, MODULE_EAGER, "a.py"), run_name="__main__")
    model, x, y = namespace["model"], namespace["x"], namespace["y"]
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(y - model(x)))
    truth = [g is None for g in tape.gradient(loss, model.trainable_variables)]
    paths = {id(v): "/".join([model.name, *map(str, p)]) for p, v in model._flatten(  # noqa: SLF001
        predicate=lambda v: isinstance(v, tf.Variable), with_path=True)}
    code, document = run_json(capsys, script(tmp_path, MODULE_EAGER))
    (step,) = document["steps"]
    sources = step["site"]["sources"]
    assert [s["tensorflow_none"] for s in sources] == [s["verdict"] != "receives" for s in sources] == truth
    assert [s["name"] for s in sources] == [paths[id(v)] for v in model.trainable_variables]
    assert code == 1 and any(truth)


# A tf.Module whose __init__ never calls super().__init__() (MAML code written from the paper): it
# works, only its ``name`` raises. Its variables are all called "Variable"; the gate is cut by a round.
MODULE_NO_SUPER = """\
    import tensorflow as tf

    class MLP(tf.Module):
        def __init__(self):
            self.w1 = tf.Variable(tf.random.normal([1, 8]))
            self.w2 = tf.Variable(tf.random.normal([8, 1]))
            self.gate = tf.Variable(tf.ones([8]))

        def forward(self, x):
            return (tf.nn.relu(x @ self.w1) * tf.round(self.gate)) @ self.w2

    model = MLP()
    opt = tf.keras.optimizers.SGD(0.01)
    x, y = tf.ones((4, 1)), tf.zeros((4, 1))

    DECORATE
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model.forward(x) - y) ** 2)
        grads = tape.gradient(loss, [model.w1, model.w2, model.gate])
        opt.apply_gradients((g, v) for g, v in zip(grads, [model.w1, model.w2, model.gate]) if g is not None)

    for _ in range(2):
        step()
    """


@pytest.mark.parametrize("decorate", ["@tf.function", ""], ids=["traced", "eager"])
def test_a_tf_module_that_never_called_its_init_is_named_as_tensorflow_would_name_it(
    tmp_path: Path, capsys: Any, decorate: str,
) -> None:
    # Its variables were named by the module's ``name``, which raises AttributeError ('_name'): the
    # traced step could not be analyzed ("flowcheck failed while analyzing it").
    text = MODULE_NO_SUPER.replace("DECORATE", decorate)
    namespace = runpy.run_path(script(tmp_path, text.replace("range(2)", "range(0)"), "a.py"), run_name="__main__")
    model = namespace["model"]
    variables = [model.w1, model.w2, model.gate]
    x, y = namespace["x"], namespace["y"]
    truth = [not receives for receives in watched_truth(lambda: tf.reduce_mean((model.forward(x) - y) ** 2), variables)]
    code, document = run_json(capsys, script(tmp_path, text))
    (step,) = document["steps"]
    sources = step["report"]["gradient_sites"][0]["sources"] if decorate else step["site"]["sources"]
    assert [s["tensorflow_none"] for s in sources] == [s["verdict"] != "receives" for s in sources] == truth
    names = ["mlp/w1", "mlp/w2", "mlp/gate"] if decorate else ["model.w1", "model.w2", "model.gate"]  # as the call writes them
    assert [s["name"] for s in sources] == names  # traced: by the name tf.Module would have given it
    assert code == 1 and truth == [False, False, True]


# TensorFlow's quickstart for experts with tf.keras.losses.MSE: a per-example loss the step never reduces.
PER_EXAMPLE = """\
    import numpy as np
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    optimizer = keras.optimizers.Adam()

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.keras.losses.MSE(y, model(x, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    for i in range(2):
        np.save(OUT, train_step(tf.fill((8, 5), 0.5), tf.ones((8, 1))).numpy())
    """


def test_a_per_example_loss_is_told_as_the_sum_the_tape_differentiates(tmp_path: Path, capsys: Any) -> None:
    # The verification said "loss 11.4778" where the script's loss was 8 values of about 1.4: the
    # number was their sum, unsaid.
    out = tmp_path / "loss.npy"
    path = script(tmp_path, f"OUT = {str(out)!r}\n" + textwrap.dedent(PER_EXAMPLE))
    keras.utils.clear_session()
    code = main(["run", path])
    text = capsys.readouterr().out
    first = np.load(out)  # the script's own first call, the verification
    assert first.shape == (8,) and code == 0
    (line,) = [line for line in text.splitlines() if line.startswith("  verification: ")]
    assert f"loss {float(first.astype('float64').sum()):.6g}, the sum of its 8 values (as the tape differentiates it)" in line


# A step made by functools.partial and wrapped by tf.function (its model, optimizer and a variable as keywords).
PARTIAL = """\
    import functools
    import numpy as np
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)

    def train_step(x, y, model, optimizer, frozen_bias):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) + tf.stop_gradient(frozen_bias) - y))  # cut
        variables = model.trainable_variables + [frozen_bias]
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return loss

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    bias = tf.Variable(0.5, name="frozen_bias")
    step = tf.function(functools.partial(train_step, model=model, optimizer=keras.optimizers.SGD(0.1), frozen_bias=bias))
    rng = np.random.default_rng(0)
    for _ in range(3):
        step(tf.constant(rng.normal(size=(8, 4)), tf.float32), tf.constant(rng.normal(size=(8, 1)), tf.float32))
    np.save(OUT, np.concatenate([v.numpy().ravel() for v in model.weights + [bias]]))
    """


@pytest.mark.slow  # a script run whole, twice
def test_a_tf_function_of_a_functools_partial_is_analyzed_verified_by_its_first_call_and_continues_exactly(
    tmp_path: Path, capsys: Any,
) -> None:
    from truth import line_of

    alone, watched = tmp_path / "alone.npy", tmp_path / "watched.npy"
    keras.utils.clear_session()
    namespace = runpy.run_path(script(tmp_path, f"OUT = {str(alone)!r}\n" + textwrap.dedent(PARTIAL), "a.py"))
    model, bias = namespace["model"], namespace["bias"]
    x = tf.ones((8, 4))
    with tf.GradientTape() as tape:  # TensorFlow's answer for the step's sources
        loss = tf.reduce_mean(tf.square(model(x) + tf.stop_gradient(bias)))
    none = [g is None for g in tape.gradient(loss, model.trainable_variables + [bias])]
    path = script(tmp_path, f"OUT = {str(watched)!r}\n" + textwrap.dedent(PARTIAL), "b.py")
    code, document = run_json(capsys, path, "--continue")
    (step,) = document["steps"]
    assert step["name"] == "train_step" and step["raised"] is None and step["error"] is None
    (site,) = step["report"]["gradient_sites"]
    assert [s["verdict"] != "receives" for s in site["sources"]] == none == [s["tensorflow_none"] for s in site["sources"]]
    assert [b["source"]["line"] for b in site["sources"][-1]["barriers"]] == [line_of(path, "# cut")]
    assert step["report"]["verification"]["agrees"]  # its trace run once ahead of the script's own first call
    assert code == 1
    np.testing.assert_array_equal(np.load(alone), np.load(watched))
