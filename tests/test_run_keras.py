"""``flowcheck run`` on Keras scripts as their users write them: ``fit`` with an overridden
``train_step`` (GANs, VQ-VAE), and the one line told when Keras raises before the first step.

Each script is a tiny file in ``tmp_path``; the truth (which optimizers a step applies, which
variables a tape would give a gradient, Keras's own error text) is computed by TensorFlow and
Keras in the test.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from flowcheck.cli.main import main
from truth import watched_gradients


def script(tmp_path: Path, text: str, name: str = "train.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    keras.utils.clear_session()
    code = main(["run", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def keras_error(fn: Any) -> str:
    """Keras's own message of the exception ``fn()`` raises, its terminal colours left out."""
    with pytest.raises(Exception) as info:
        fn()
    return re.sub(r"\x1b\[[0-9;]*m", "", str(info.value))


def test_keras_sizes_on_the_lines_after_its_sentence_are_told(tmp_path: Path, capsys: Any) -> None:
    body = """\
        import numpy as np
        import keras
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        model.fit(np.ones((10, 4), "float32"), np.ones((12, 1), "float32"), verbose=0)
        """
    namespace: dict[str, Any] = {}
    message = keras_error(lambda: exec(textwrap.dedent(body), namespace))  # noqa: S102
    assert len(message.strip().splitlines()) > 1  # Keras's sentence, then one line per size
    code, out, err = run(capsys, script(tmp_path, body))
    assert code == 2 and out == ""
    (line,) = err.strip().splitlines()
    assert line.endswith(": " + " ".join(message.split()))


def test_keras_layer_call_wrapper_is_unwrapped_to_the_real_message(tmp_path: Path, capsys: Any) -> None:
    body = """\
        import numpy as np
        import keras
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        model.fit(np.ones((8, 5), "float32"), np.ones((8, 1), "float32"), verbose=0)
        """
    keras.utils.clear_session()
    namespace: dict[str, Any] = {}
    message = keras_error(lambda: exec(textwrap.dedent(body), namespace))  # noqa: S102
    wrapper, real = [p for p in re.split(r"\n\s*\n", message) if p.strip()][:2]
    assert wrapper.startswith("Exception encountered when calling")
    code, _, err = run(capsys, script(tmp_path, body))
    assert code == 2
    (line,) = err.strip().splitlines()
    # The batch dimension may be told as None (Keras's symbolic build) or 8 (the first batch).
    told = " ".join(real.split()).split("received input with shape")[0]
    assert ": " + told in line and "\x1b" not in line
    assert "Exception encountered" not in line


GAN = """\
import numpy as np
import tensorflow as tf
import keras


class GAN(keras.Model):
    def __init__(self):
        super().__init__()
        self.discriminator = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)], name="discriminator")
        self.generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)], name="generator")
        self.seed_generator = keras.random.SeedGenerator(7)

    def compile(self, d_optimizer, g_optimizer):
        super().compile()  # Keras's default optimizer (RMSprop) is made here and never applied
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer

    def train_step(self, real):
        z = keras.random.normal((tf.shape(real)[0], 2), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            d_loss = tf.reduce_mean(self.discriminator(self.generator(z))) - tf.reduce_mean(self.discriminator(real))
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))
        with tf.GradientTape() as tape:
            g_loss = -tf.reduce_mean(self.discriminator(self.generator(z)))
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
        return {"d_loss": d_loss, "g_loss": g_loss}


keras.utils.set_random_seed(0)
gan = GAN()
gan.compile(keras.optimizers.Adam(0.002), keras.optimizers.SGD(0.03))
gan.fit(np.ones((16, 3), "float32"), batch_size=4, epochs=STEPS, verbose=0)
"""


FORWARD_FORWARD = """\
import numpy as np
import tensorflow as tf
import keras


class LocalDense(keras.layers.Layer):
    def __init__(self, units):
        super().__init__()
        self.dense = keras.layers.Dense(units, activation="relu")
        self.optimizer = keras.optimizers.Adam(0.03)  # each layer trains itself

    def call(self, x):
        return self.dense(x)


class LocalNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.blocks = [LocalDense(4), LocalDense(4)]

    def train_step(self, x):
        for block in self.blocks:
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(block(x)))
            grads = tape.gradient(loss, block.trainable_weights)
            block.optimizer.apply_gradients(zip(grads, block.trainable_weights))
            x = tf.stop_gradient(block(x))
        return {"loss": loss}


keras.utils.set_random_seed(0)
gan = LocalNet()
gan.build((None, 3))
gan.compile(optimizer=keras.optimizers.SGD(0.5))  # never applied by this train_step
gan.fit(np.ones((16, 3), "float32"), batch_size=4, epochs=STEPS, verbose=0)
"""


def _reachable_optimizers(model: Any) -> list[Any]:
    return [o for layer in model._flatten_layers() for o in vars(layer).values()  # noqa: SLF001
            if isinstance(o, keras.optimizers.Optimizer)]


@pytest.mark.slow  # a script run whole, about 2 s or more
@pytest.mark.parametrize("text", [GAN, FORWARD_FORWARD], ids=["gan", "forward_forward"])
def test_a_train_step_override_names_the_optimizers_it_applies(text: str, tmp_path: Path, capsys: Any) -> None:
    namespace: dict[str, Any] = {"STEPS": 1}
    keras.utils.clear_session()
    exec(text.replace("batch_size=4", "batch_size=16"), namespace)  # noqa: S102 -- one real step, here
    reachable = _reachable_optimizers(namespace["gan"])
    applied = [o for o in reachable if int(o.iterations.numpy()) == 1]
    assert 0 < len(applied) < len(reachable)  # what Keras ran: compile()'s optimizer is not among them
    code, out, _ = run(capsys, script(tmp_path, text.replace("STEPS", "2")), "--json")
    assert code == 0
    (step,) = json.loads(out)["steps"]
    verification = step["report"]["verification"]
    described = ", ".join(f"{type(o).__name__}(learning_rate={float(o.learning_rate.numpy()):g})" for o in applied)
    assert verification["agrees"] and verification["optimizer"] == f"the step's own {described}"


VQ = """\
import numpy as np
import tensorflow as tf
import keras


class Quantizer(keras.layers.Layer):
    def __init__(self):
        super().__init__()
        # a plain tf.Variable: Keras 3 does not track it, so it is not in trainable_variables
        self.codebook = tf.Variable(tf.random.uniform((2, 4), seed=1), name="codebook")

    def call(self, x):
        codes = tf.one_hot(tf.argmin(tf.matmul(x, self.codebook), axis=1), 4)
        quantized = tf.matmul(codes, self.codebook, transpose_b=True)
        self.add_loss(tf.reduce_mean((quantized - tf.stop_gradient(x)) ** 2))
        return x + tf.stop_gradient(quantized - x)


class Trainer(keras.Model):
    def __init__(self):
        super().__init__()
        self.encoder = keras.layers.Dense(2, name="encoder")
        self.vq = Quantizer()
        self.decoder = keras.layers.Dense(3, name="decoder")

    def train_step(self, x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((x - self.decoder(self.vq(self.encoder(x)))) ** 2) + sum(self.vq.losses)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return {"loss": loss}


keras.utils.set_random_seed(0)
trainer = Trainer()
trainer.compile(optimizer="adam")
trainer.fit(np.random.rand(16, 3).astype("float32"), batch_size=4, epochs=2, verbose=0)
"""


@pytest.mark.slow  # a script run whole, about 2 s or more
def test_a_codebook_kept_out_of_trainable_variables_never_trains(tmp_path: Path, capsys: Any) -> None:
    namespace: dict[str, Any] = {}
    keras.utils.clear_session()
    exec(VQ.split("trainer.compile")[0], namespace)  # noqa: S102
    trainer, x = namespace["trainer"], tf.constant(np.random.rand(4, 3).astype("float32"))
    trainer.decoder(trainer.vq(trainer.encoder(x)))  # builds the layers, as the first step does
    codebook = trainer.vq.codebook
    sources = [*trainer.trainable_variables, codebook]

    def loss() -> Any:
        return tf.reduce_mean((x - trainer.decoder(trainer.vq(trainer.encoder(x)))) ** 2) + sum(trainer.vq.losses)

    grads = watched_gradients(loss, sources)
    assert all(id(codebook) != id(v) for v in trainer.trainable_variables)
    assert grads[-1] is not None  # the codebook would learn, but no gradient call asks for it
    code, out, _ = run(capsys, script(tmp_path, VQ), "--json")
    assert code == 1
    (step,) = json.loads(out)["steps"]
    assert step["report"]["never_trained"] == [codebook.name.split(":")[0]]
    assert f"1 variable never trains: {codebook.name.split(':')[0]}" in step["failures"]
    assert any(f"held as {trainer.vq.name}.codebook" in note for note in step["report"]["notes"])  # and why
    (site,) = step["report"]["gradient_sites"]
    assert [s["verdict"] == "receives" for s in site["sources"]] == [g is not None for g in grads[:-1]]


CLASSIC_GAN = """\
import numpy as np
import keras

keras.utils.set_random_seed(0)
generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)], name="generator")
discriminator = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")], name="discriminator")
discriminator.compile(optimizer="adam", loss="binary_crossentropy")
discriminator.trainable = False
z = keras.Input((2,))
combined = keras.Model(z, discriminator(generator(z)), name="combined")
combined.compile(optimizer="adam", loss="binary_crossentropy")
real = np.ones((4, 3), "float32")
for epoch in range(3):
    fake = generator.predict(np.ones((4, 2), "float32"), verbose=0)
    discriminator.trainable = TOGGLE
    discriminator.train_on_batch(real, np.ones((4, 1)))  # real
    discriminator.train_on_batch(fake, np.zeros((4, 1)))  # fake
    discriminator.trainable = False
    combined.train_on_batch(np.ones((4, 2), "float32"), np.ones((4, 1)))
    print("round", epoch)
"""


def _keras_step_truth(model: Any, x: Any, y: Any) -> tuple[list[str], list[bool]]:
    """What Keras's train_step asks for: its trainable weights, and which the tape gives a gradient."""
    sources = list(model.trainable_weights)
    with tf.GradientTape() as tape:
        loss = keras.losses.binary_crossentropy(y, model(x, training=True))
    grads = tape.gradient(loss, sources)
    return [v.path for v in sources], [g is not None for g in grads]


# The same round with each train_on_batch made through one helper function of the script's.
THROUGH_A_HELPER = {
    "for epoch": "def train(model, x, y):\n    return model.train_on_batch(x, y)\n\n\nfor epoch",
    "discriminator.train_on_batch(": "train(discriminator, ", "combined.train_on_batch(": "train(combined, ",
}


@pytest.mark.slow  # a script run whole, about 2 s or more
@pytest.mark.parametrize("helper", [False, True], ids=["direct", "through_a_helper"])
def test_a_keras_step_called_again_from_another_line_is_still_the_first_round(
    helper: bool, tmp_path: Path, capsys: Any,
) -> None:
    text = CLASSIC_GAN.replace("TOGGLE", "True")
    for old, new in THROUGH_A_HELPER.items() if helper else ():
        text = text.replace(old, new)
    namespace: dict[str, Any] = {}
    keras.utils.clear_session()
    exec(text.split("for epoch")[0], namespace)  # noqa: S102 -- the models, as the first round has them
    discriminator, combined = namespace["discriminator"], namespace["combined"]
    discriminator.trainable = True
    truth = [_keras_step_truth(discriminator, tf.ones((4, 3)), tf.ones((4, 1)))]
    discriminator.trainable = False
    truth.append(_keras_step_truth(combined, tf.ones((4, 2)), tf.ones((4, 1))))
    code, out, err = run(capsys, script(tmp_path, text), "--json")
    document = json.loads(out)
    assert code == 0 and document["stopped"] and document["untrained"] == []
    assert "round 0" in err and "round 1" not in err  # ended as the discriminator's step came round again
    assert [s["name"] for s in document["steps"]] == ["discriminator.train_on_batch", "combined.train_on_batch"]
    for step, (names, receives) in zip(document["steps"], truth):
        (site,) = step["report"]["gradient_sites"]
        assert [s["name"] for s in site["sources"]] == names
        assert [s["verdict"] == "receives" for s in site["sources"]] == receives


@pytest.mark.slow  # a script run whole, about 2 s or more
def test_a_keras_step_of_a_model_with_nothing_trainable_is_a_finding(tmp_path: Path, capsys: Any) -> None:
    text = CLASSIC_GAN.replace("TOGGLE", "False")  # Keras 2's idiom: in Keras 3 the discriminator never trains
    namespace: dict[str, Any] = {}
    keras.utils.clear_session()
    exec(text.split("for epoch")[0], namespace)  # noqa: S102
    discriminator = namespace["discriminator"]
    assert discriminator.trainable_weights == []  # Keras's train_step asks for no gradient
    path = script(tmp_path, text)
    code, out, _ = run(capsys, path, "--json")
    document = json.loads(out)
    assert code == 1 and [s["name"] for s in document["steps"]] == ["combined.train_on_batch"]
    (line,) = [i for i, t in enumerate(text.splitlines(), 1) if t.endswith("# real")]
    (untrained,) = document["untrained"]
    assert untrained.startswith(f"discriminator.train_on_batch at {path}:{line} trains nothing")
    assert f"its {len(discriminator.weights)} weights are frozen" in untrained
    alone = script(tmp_path, text.replace("    combined.train_on_batch", "    # combined.train_on_batch"), "alone.py")
    code, out, err = run(capsys, alone)
    assert code == 2 and err.strip().endswith(untrained.replace(path, alone))


def test_a_nan_loss_is_a_problem_not_a_contradiction(tmp_path: Path, capsys: Any) -> None:
    body = """\
        import numpy as np
        import tensorflow as tf
        import keras

        def loss_fn(y_true, y_pred):
            return tf.reduce_mean(tf.math.log(y_pred - 10.0))

        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss=loss_fn)
        model.fit(np.ones((8, 3), "float32"), np.ones((8, 1), "float32"), epochs=2, batch_size=4, verbose=0)
        """
    namespace: dict[str, Any] = {}
    keras.utils.clear_session()
    exec(textwrap.dedent(body).split("model.compile")[0], namespace)  # noqa: S102
    model, loss_fn = namespace["model"], namespace["loss_fn"]
    grads = watched_gradients(lambda: loss_fn(tf.ones((4, 1)), model(tf.ones((4, 3)))), model.trainable_variables)
    loss = float(loss_fn(tf.ones((4, 1)), model(tf.ones((4, 3)))))
    assert np.isnan(loss) and all(g is not None for g in grads)  # every variable gets a (NaN) gradient
    code, out, _ = run(capsys, script(tmp_path, body))
    assert code == 1
    assert "  verification: agrees, but found problems  (" in out
    assert f"    TensorFlow gave a gradient to {len(grads)} of {len(grads)} variables, as predicted\n" in out
    assert "contradicts" not in out and "DISAGREES" not in out
    assert out.splitlines()[-1] == "FAILED: the loss is nan: gradients and the step are not meaningful"


def test_the_report_starts_on_its_own_line_after_a_progress_bar_cut_mid_epoch(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, """\
        import numpy as np
        import keras
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        model.fit(np.ones((16, 2), "float32"), np.ones((16, 1), "float32"), batch_size=4, epochs=2, verbose=1)
        """)
    code, out, _ = run(capsys, path)
    assert code == 0
    bar, header = out.split(f"flowcheck run {path}: ")
    assert bar.rstrip("\n") and bar.endswith("\n")  # Keras's bar ends with no newline of its own; the report adds it
    assert header.startswith("1 training step analyzed")


def test_a_graph_execution_error_is_told_by_the_kernels_message_at_the_users_line(tmp_path: Path, capsys: Any) -> None:
    body = """\
        import numpy as np
        import keras
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(np.ones((8, 4), "float32"), np.full((8,), 5), batch_size=4, verbose=0)  # labels out of range
        """
    namespace: dict[str, Any] = {}
    keras.utils.clear_session()
    text = keras_error(lambda: exec(textwrap.dedent(body), namespace))  # noqa: S102
    assert text.startswith("Graph execution error:")
    (kernel,) = [line for line in text.splitlines() if "valid range" in line]  # TensorFlow's own words
    path = script(tmp_path, body)
    code, out, _ = run(capsys, path)
    assert code == 1
    told = "sequential.fit raised InvalidArgumentError at " + f"{path}:5 (" + textwrap.dedent(body).splitlines()[4]
    assert out.splitlines()[-1] == f"FAILED: {told}): {' '.join(kernel.split())}"


ALTERNATING = """\
import numpy as np
import tensorflow as tf
import keras


class AlternatingGAN(keras.Model):
    def __init__(self):
        super().__init__()
        self.d = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)], name="d")
        self.g = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)], name="g")
        self.counter = tf.Variable(0, trainable=False, dtype=tf.int64)

    def compile(self, d_opt, g_opt):
        super().compile()
        self.d_opt, self.g_opt = d_opt, g_opt

    def d_loss(self, real, z):
        return tf.reduce_mean(self.d(self.g(z))) - tf.reduce_mean(self.d(real))

    def g_loss(self, real, z):
        return -tf.reduce_mean(self.d(self.g(z)))

    def train_step(self, real):
        z = tf.ones((tf.shape(real)[0], 2))

        def update(loss_fn, model, opt):
            with tf.GradientTape() as tape:
                loss = loss_fn(real, z)
            grads = tape.gradient(loss, model.trainable_weights)
            opt.apply_gradients(zip(grads, model.trainable_weights))
            return loss

        loss = tf.cond(self.counter % 2 == 0, lambda: update(self.d_loss, self.d, self.d_opt),
                       lambda: update(self.g_loss, self.g, self.g_opt))
        self.counter.assign_add(1)
        return {"loss": loss}


keras.utils.set_random_seed(0)
gan = AlternatingGAN()
gan.compile(keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1))
gan.fit(np.ones((8, 3), "float32"), batch_size=4, epochs=2, verbose=0)
"""


@pytest.mark.slow  # a script run whole, about 2 s or more
def test_gradient_calls_inside_a_cond_branch_of_a_train_step_are_verified(tmp_path: Path, capsys: Any) -> None:
    namespace: dict[str, Any] = {}
    keras.utils.clear_session()
    exec(ALTERNATING.split("gan.compile")[0], namespace)  # noqa: S102
    gan, real, z = namespace["gan"], tf.ones((4, 3)), tf.ones((4, 2))
    gan.g_loss(real, z)  # builds both models
    truth = [  # a tape in a branch answers for its own branch: each update's loss, by its own sources
        [g is not None for g in watched_gradients(lambda: gan.d_loss(real, z), gan.d.trainable_weights)],
        [g is not None for g in watched_gradients(lambda: gan.g_loss(real, z), gan.g.trainable_weights)],
    ]
    code, out, _ = run(capsys, script(tmp_path, ALTERNATING), "--json")
    assert code == (0 if all(all(t) for t in truth) else 1)
    (step,) = json.loads(out)["steps"]
    sites = step["report"]["gradient_sites"]
    assert [[s["verdict"] == "receives" for s in site["sources"]] for site in sites] == truth
    verification = step["report"]["verification"]
    assert verification["agrees"] and verification["problems"] == [] and not verification["loss_seen"]
    assert [c["gradient"] for c in verification["variables"]] == ["unseen" if r else "none" for t in truth for r in t]


def test_a_watched_keras_variable_is_told_by_its_path(tmp_path: Path, capsys: Any) -> None:
    body = """\
        import numpy as np
        import tensorflow as tf
        import keras

        class M(keras.Model):
            def __init__(self):
                super().__init__()
                self.body, self.head = keras.layers.Dense(4, name="body"), keras.layers.Dense(1, name="head")

            def call(self, x):
                return self.head(self.body(x))

            def train_step(self, data):
                x, y = data
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    tape.watch([v.value for v in self.head.trainable_variables])  # the backing tf.Variables
                    loss = tf.reduce_mean(tf.square(self(x) - y))
                grads = tape.gradient(loss, self.trainable_variables)
                self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, self.trainable_variables) if g is not None])
                return {"loss": loss}

        m = M()
        m(np.zeros((1, 3), "float32"))
        m.compile(optimizer="sgd")
        m.fit(np.ones((8, 3), "float32"), np.ones((8, 1), "float32"), batch_size=4, epochs=2, verbose=0)
        """
    namespace: dict[str, Any] = {}
    keras.utils.clear_session()
    exec(textwrap.dedent(body).split("m.compile")[0], namespace)  # noqa: S102
    m, x = namespace["m"], tf.ones((4, 3))
    with tf.GradientTape(watch_accessed_variables=False) as tape:  # the step's own tape semantics
        tape.watch([v.value for v in m.head.trainable_variables])
        loss = tf.reduce_mean(tf.square(m(x) - 1.0))
    truth = [g is not None for g in tape.gradient(loss, m.trainable_variables)]
    code, out, _ = run(capsys, script(tmp_path, body), "--json")
    (step,) = json.loads(out)["steps"]
    (site,) = step["report"]["gradient_sites"]
    assert code == (0 if all(truth) else 1)
    assert [s["verdict"] == "receives" for s in site["sources"]] == truth
    assert "watched: " + ", ".join(v.path for v in m.head.trainable_variables) in site["watch"]


EAGER_FIT = """\
import numpy as np
import tensorflow as tf
import keras


class Branchy(keras.Model):
    def __init__(self):
        super().__init__()
        self.a = keras.layers.Dense(1, name="a")
        self.b = keras.layers.Dense(1, name="b")

    def call(self, z, training=False):
        return tf.cond(tf.reduce_sum(z) > 0, lambda: self.a(z), lambda: self.b(z))


keras.utils.set_random_seed(0)
model = Branchy()
model.compile("sgd", "mse", run_eagerly=True)
model.fit(np.ones((8, 4), "float32"), np.ones((8, 1), "float32"), batch_size=4, epochs=2, verbose=0)
"""


def test_a_fit_compiled_run_eagerly_is_judged_by_its_eager_tape(tmp_path: Path, capsys: Any) -> None:
    namespace: dict[str, Any] = {}
    keras.utils.clear_session()
    exec(EAGER_FIT.split("model.fit")[0], namespace)  # noqa: S102 -- the model, as fit's first step has it
    model, x, y = namespace["model"], tf.ones((4, 4)), tf.ones((4, 1))
    model(x)
    with tf.GradientTape() as tape:  # fit's train_step, run eagerly: the untaken branch gets None
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True))
    none = {v.path for v, g in zip(model.trainable_variables, tape.gradient(loss, model.trainable_variables)) if g is None}
    assert none == {"branchy/b/kernel", "branchy/b/bias"}
    code, out, _ = run(capsys, script(tmp_path, EAGER_FIT), "--json")
    (step,) = json.loads(out)["steps"]
    (site,) = step["report"]["gradient_sites"]
    assert code == 1 and {s["name"] for s in site["sources"] if s["verdict"] == "blocked"} == none  # was 'OK'
    assert step["report"]["verification"]["agrees"]


TRANSFER = """\
    import numpy as np
    import keras
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = np.zeros((32, 1), "float32")
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu")], name="base")
    base.trainable = False
    model = keras.Sequential([base, keras.layers.Dense(1, name="head")], name="clf")
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    base.trainable = True  # fine-tuning: a second phase
    model.compile(optimizer=keras.optimizers.Adam(1e-5), loss="mse")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    print("fine-tuned")
    """


@pytest.mark.slow
def test_a_script_ended_after_its_first_phase_says_later_phases_were_not_analyzed(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, TRANSFER)
    first_phase = textwrap.dedent(TRANSFER).split("model.fit")[0]
    namespace: dict[str, Any] = {}
    exec(first_phase, namespace)  # noqa: S102 -- the first phase's model, not trained
    model, x, y = namespace["model"], namespace["x"][:8], namespace["y"][:8]
    variables = model.trainable_weights
    truth = watched_gradients(lambda: model.compute_loss(x=x, y=y, y_pred=model(x, training=True)), variables)
    receiving = sum(g is not None for g in truth)
    code, out, _ = run(capsys, path)
    assert code == 0 and f"site 1: Keras train_step: {receiving} of {len(variables)} sources receive" in out
    assert "was ended at its next call of a step analyzed" in out and "a later phase of training) was not analyzed" in out
    assert "fine-tuned" not in out
    code, out, _ = run(capsys, path, "--continue")
    assert code == 0 and "fine-tuned" in out and "was ended" not in out


KEPT_STEP = {
    # Keras 2's idiom: freeze a layer between two fits, without compile(); Keras 3 keeps the step traced first.
    "frozen without compile()": """\
        import numpy as np
        import keras
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, name="feat"), keras.layers.Dense(1, name="head")])
        model.compile(optimizer="sgd", loss="mse")
        x, y = np.random.rand(32, 5), np.random.rand(32, 1)
        model.fit(x, y, epochs=1, verbose=0)
        model.get_layer("feat").trainable = False
        before = [w.numpy().copy() for w in model.weights]
        model.fit(x, y, epochs=1, verbose=0)  # again
        """,
    # Gradual unfreezing by a callback: the step fit traced at the first epoch goes on without the layer.
    "unfrozen by a callback": """\
        import numpy as np
        import keras
        keras.utils.set_random_seed(0)
        class Unfreeze(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                global before
                if epoch == 1:
                    self.model.get_layer("feat").trainable = True
                    before = [w.numpy().copy() for w in self.model.weights]
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, name="feat"), keras.layers.Dense(1, name="head")])
        model.get_layer("feat").trainable = False
        model.compile(optimizer="sgd", loss="mse")
        model.fit(np.random.rand(32, 5), np.random.rand(32, 1), epochs=3, verbose=0, callbacks=[Unfreeze()])  # again
        """,
}


@pytest.mark.parametrize("kind", list(KEPT_STEP))
def test_a_trainable_change_the_kept_step_ignores_is_told_where_the_step_runs_again(
    kind: str, tmp_path: Path, capsys: Any
) -> None:
    text = KEPT_STEP[kind]
    namespace: dict[str, Any] = {}
    keras.utils.clear_session()
    exec(textwrap.dedent(text), namespace)  # noqa: S102 -- the script alone: which weights its later fit moved
    model = namespace["model"]
    moved = {w.path for w, b in zip(model.weights, namespace["before"]) if not np.array_equal(w.numpy(), b)}
    trainable = {w.path for w in model.trainable_weights}
    still = [w.path for w in model.weights if w.path in moved - trainable]  # in the model's order
    left_out = [w.path for w in model.weights if w.path in trainable - moved]
    assert still or left_out  # what the flags say is not what fit does
    path = script(tmp_path, text)
    code, out, _ = run(capsys, path, "--json")
    (told,) = json.loads(out)["untrained"]
    again = f"sequential.fit at {path}:{next(i for i, t in enumerate(text.splitlines(), 1) if t.endswith('# again'))} "
    assert code == 1 and told.startswith(again + "runs the step Keras traced at its first call")
    for words, names in (("still trains", still), ("does not train", left_out)):
        assert (f"{words} {len(names)} weights" in told and f"({', '.join(names)})" in told) == bool(names)


# A subclassed model is built by its first fit call: its weights did not exist before, none was made trainable since.
BUILT_BY_FIT = """\
    import numpy as np
    import keras
    keras.utils.set_random_seed(0)
    class Second(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            global before
            if epoch == 1:
                before = [w.numpy().copy() for w in self.model.weights]
    class M(keras.Model):
        def __init__(self):
            super().__init__()
            self.feat, self.head = keras.layers.Dense(8), keras.layers.Dense(1)
        def call(self, x):
            return self.head(self.feat(x))
    model = M()
    model.compile(optimizer="sgd", loss="mse", run_eagerly=EAGERLY)
    model.fit(np.random.rand(32, 5), np.random.rand(32, 1), epochs=2, verbose=0, callbacks=[Second()])
    """


@pytest.mark.slow  # a script run whole, about 3 s
@pytest.mark.parametrize("eagerly", [False, True], ids=["traced", "run_eagerly"])
def test_a_model_built_by_its_first_fit_is_not_told_it_left_out_weights_made_trainable(
    eagerly: bool, tmp_path: Path, capsys: Any
) -> None:
    text = BUILT_BY_FIT.replace("EAGERLY", str(eagerly))
    namespace: dict[str, Any] = {}
    keras.utils.clear_session()
    exec(textwrap.dedent(text), namespace)  # noqa: S102 -- the script alone: its second epoch trains every weight
    model = namespace["model"]
    assert all(not np.array_equal(w.numpy(), b) for w, b in zip(model.weights, namespace["before"]))
    code, out, _ = run(capsys, script(tmp_path, text), "--json")
    document = json.loads(out)
    assert document["untrained"] == [] and code == 0


# SimCLR's shape: the model tracks a linear-probe head its pretraining train_step never calls.
PROBE = """\
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)

    class SimCLR(keras.Model):
        def __init__(self):
            super().__init__()
            self.encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)], name="encoder")
            self.linear_probe = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)], name="linear_probe")

        def train_step(self, x):
            with tf.GradientTape() as tape:
                z1, z2 = self.encoder(x + 0.1), self.encoder(tf.round(x))
                loss = tf.reduce_mean(tf.square(z1 - z2))
            grads = tape.gradient(loss, self.encoder.trainable_weights)
            self.optimizer.apply_gradients(zip(grads, self.encoder.trainable_weights))
            return {"loss": loss}

    model = SimCLR()
    model.compile(optimizer="sgd")
    if FIT:
        log = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: open(LOG, "a").write("batch\\n"))
        model.fit(tf.ones((32, 4)), batch_size=4, epochs=2, verbose=0, callbacks=[log])
    """


def test_a_head_the_train_step_never_reads_does_not_keep_the_round_open(tmp_path: Path, capsys: Any) -> None:
    # The probe's variables, trainable and asked for by no gradient call, kept the round "unfinished"
    # (a later step might train them): the script trained on for 10 more batches before it was ended.
    log = tmp_path / "batches.txt"
    namespace: dict[str, Any] = {"FIT": False}
    exec(textwrap.dedent(PROBE), namespace)  # noqa: S102
    model, x = namespace["model"], tf.ones((4, 4))
    truth = [g is None for g in watched_gradients(
        lambda: tf.reduce_mean(tf.square(model.encoder(x + 0.1) - model.encoder(tf.round(x)))),
        model.encoder.trainable_weights)]
    code, out, _ = run(capsys, script(tmp_path, f"FIT, LOG = True, {str(log)!r}\n" + textwrap.dedent(PROBE)), "--json")
    document = json.loads(out)
    (step,) = document["steps"]
    assert [s["tensorflow_none"] for s in step["report"]["gradient_sites"][0]["sources"]] == truth
    assert document["stopped"] and code == (1 if any(truth) else 0)
    assert log.read_text().splitlines() == ["batch"]  # ended as the second batch was about to run


MIXED = """\
    import numpy as np
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(0)

    class First(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0 and not hasattr(self, "seen"):
                self.seen = True
                print("first batch loss", repr(float(logs["loss"])))

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1, dtype="float32")])
    model.compile(optimizer="adam", loss="mse")
    X = np.random.default_rng(1).normal(size=(16, 6)).astype("float32")
    model.fit(X, X[:, :1], batch_size=8, epochs=2, verbose=0, callbacks=[First()])
    """


@pytest.mark.slow  # a script run whole, and again alone
def test_a_mixed_precision_fit_is_verified_with_the_loss_keras_reports_not_the_scaled_one(
    tmp_path: Path, capsys: Any
) -> None:
    """Keras's own train_step differentiates ``scale_loss(loss)`` (x 32768): the verification tells the
    loss Keras itself logs for the first batch (the script's callback prints it)."""
    try:
        code, out, _ = run(capsys, script(tmp_path, MIXED), "--json")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    document = json.loads(out)
    [step] = document["steps"]
    verification = step["report"]["verification"]
    assert verification["agrees"] and code == 0
    assert "loss unscaled" in verification["optimizer"]
    namespace: dict[str, Any] = {}
    keras.utils.clear_session()
    try:
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            exec(textwrap.dedent(MIXED), namespace)  # noqa: S102 -- the script alone: the loss Keras logs
    finally:
        keras.mixed_precision.set_global_policy("float32")
    keras_loss = float(printed.getvalue().split("first batch loss")[1])
    assert np.isclose(verification["loss"], keras_loss, rtol=1e-5)


# A subclassed model whose weights are made by its first fit call (its compute_loss builds a projection):
# those are no weights "made trainable since" when fit runs its kept step again.
LAZY = """\
    import numpy as np
    import keras
    from keras import ops
    keras.utils.set_random_seed(0)

    class Embedder(keras.Model):
        def __init__(self):
            super().__init__()
            self.body, self.head, self.proj = keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3), keras.layers.Dense(4)

        def call(self, x, training=False):
            return self.head(self.body(x))

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
            return loss + 0.1 * ops.mean(ops.square(self.proj(ops.stop_gradient(self.body(x)))))

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            global before
            if epoch == 1:
                before = [w.numpy().copy() for w in self.model.weights]

    model = Embedder()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    model.fit(rng.random((24, 5)).astype("float32"), rng.integers(0, 3, 24), batch_size=8, epochs=2, verbose=0,
              callbacks=[Snapshot()])
    """


@pytest.mark.slow  # the script run alone, then under flowcheck run: about 3 s
def test_weights_a_subclassed_model_makes_at_its_first_fit_call_are_not_told_made_trainable_since(
    tmp_path: Path, capsys: Any,
) -> None:
    namespace: dict[str, Any] = {}
    keras.utils.clear_session()
    exec(textwrap.dedent(LAZY), namespace)  # noqa: S102 -- the script alone: its second epoch trains every weight
    model = namespace["model"]
    moved = [w.path for w, b in zip(model.weights, namespace["before"]) if not np.array_equal(w.numpy(), b)]
    assert moved == [w.path for w in model.trainable_weights] and len(moved) == 6
    code, out, _ = run(capsys, script(tmp_path, LAZY), "--json")
    document = json.loads(out)
    (site,) = document["steps"][0]["report"]["gradient_sites"]
    assert [s["verdict"] for s in site["sources"]] == ["receives"] * len(moved)
    assert document["untrained"] == [] and code == 0
