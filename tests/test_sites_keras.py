"""Gradient sites of Keras models' train_step (Keras's own and overrides) and Keras optimizers' state.

Each test writes a step the way users do, analyzes it, and checks every site against the truth
computed here by running the step's own tape (``site_helpers.tape_truth``) and against
TensorFlow's answer recorded while tracing (``SiteSource.tensorflow_none``).
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from site_helpers import assert_sites_match, same, snapshot, tape_truth
from test_run_keras import FORWARD_FORWARD, GAN as GAN_SCRIPT, _reachable_optimizers as reachable_optimizers
from truth import default_tape_watches, line_of

import flowcheck
from flowcheck import Verdict
from flowcheck.outputs.text import format_summary

HERE = __file__


class RoundingTrainer(keras.Model):
    """A subclassed model whose own train_step rounds the hidden layer (cuts the first layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = keras.layers.Dense(4, name="first")
        self.second = keras.layers.Dense(1, name="second")
        self.tracker = keras.metrics.Mean(name="loss")

    def call(self, x: Any) -> Any:
        return self.second(tf.round(self.first(x)))  # round in call

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((self(x, training=True) - y) ** 2)
        grads = tape.gradient(loss, self.trainable_variables)  # override gradient
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        self.tracker.update_state(loss)
        return {"loss": self.tracker.result()}


def test_analyze_model_runs_its_train_step_override() -> None:
    keras.utils.set_random_seed(4)
    model = RoundingTrainer()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    x, y = np.ones((4, 3), "float32"), np.ones((4, 1), "float32")
    model(x)
    report = flowcheck.analyze(model, x, y)
    (site,) = report.gradient_sites
    assert site.source is not None and site.source.line == line_of(HERE, "# override gradient")
    assert {s.name for s in site.cut} == {model.first.kernel.path, model.first.bias.path}
    assert site.cut[0].barriers[0].source.line == line_of(HERE, "# round in call")
    state = [*model.variables, *model.optimizer.variables, *model.tracker.variables]
    saved = snapshot(state)
    assert report.verify().agrees
    assert same(state, saved)
    assert_sites_match(report, tape_truth(lambda: model.train_step((x, y)), state))


def test_fit_style_model_with_round_in_its_loss_is_cut_everywhere_not_a_crash() -> None:
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])

    def rounded_mse(y_true: Any, y_pred: Any) -> Any:
        return tf.reduce_mean((tf.round(y_pred) - y_true) ** 2)  # round in loss

    model.compile(optimizer="adam", loss=rounded_mse)
    x, y = np.ones((4, 3), "float32"), np.ones((4, 1), "float32")
    report = flowcheck.analyze(model, x, y)
    (site,) = report.gradient_sites
    assert site.kind == "Keras train_step"
    assert [s.name for s in site.sources] == [v.path for v in model.trainable_weights]
    assert all(s.verdict is Verdict.BLOCKED for s in site.sources)
    assert {b.source.line for s in site.sources for b in s.barriers} == {line_of(HERE, "# round in loss")}
    assert any("No gradients provided" in n for n in report.notes)
    assert report.verify().agrees
    state = [*model.variables, *model.optimizer.variables, *model.metrics_variables]
    assert_sites_match(report, tape_truth(lambda: model.train_step((x, y)), state))


def test_mixed_precision_loss_scale_optimizer_state_is_restored() -> None:
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(7)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1, dtype="float32")])
        optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-2))
    finally:
        keras.mixed_precision.set_global_policy(policy)

    @tf.function
    def step(x: Any, y: Any) -> None:
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            loss = tf.reduce_mean((tf.cast(tf.cast(pred, tf.int32), tf.float32) - y) ** 2) + tf.reduce_mean(pred)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    x, y = np.ones((4, 3), "float32"), np.ones((4, 1), "float32")
    report = flowcheck.analyze(step, x, y)
    (site,) = report.gradient_sites
    assert site.targets == ("scaled",)
    state = [*model.variables, *optimizer.variables]
    saved = snapshot(state)
    check = report.verify()
    assert check.agrees, check
    assert same(state, saved)  # dynamic scale, its step counter, the inner Adam's slots
    assert_sites_match(report, tape_truth(lambda: step.python_function(x, y), state))


class Lookahead(keras.optimizers.Optimizer):
    """A Lookahead written by hand: it applies an inner Adam (its own slots and counter) and keeps slow weights."""

    def __init__(self, inner: Any) -> None:
        super().__init__(learning_rate=0.01, name="lookahead")
        self.inner = inner

    def build(self, variables: Any) -> None:
        super().build(variables)
        self.inner.build(variables)
        self.slow = [self.add_variable_from_reference(v, "slow") for v in variables]

    def apply(self, grads: Any, trainable_variables: Any = None) -> None:
        variables = trainable_variables or self._trainable_variables
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(variables)
        self.inner.apply(grads, variables)
        self.iterations.assign_add(1)
        for slow, v in zip(self.slow, variables):
            slow.assign(slow + 0.5 * (v - slow))


def test_an_optimizer_wrapping_another_has_both_states_restored() -> None:
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="d1"), keras.layers.Dense(1, name="d2")])
    inner = keras.optimizers.Adam(1e-2)
    model.compile(optimizer=Lookahead(inner), loss="mse")
    x, y = np.ones((4, 3), "float32"), np.ones((4, 1), "float32")
    model.fit(x, y, verbose=0)  # both built, their slots and counters moved
    state = [*model.variables, *model.optimizer.variables, *inner.variables]
    saved = snapshot(state)
    report = flowcheck.analyze(model, x, y)
    assert report.verify().agrees
    assert same(state, saved)  # the inner Adam's slots and iteration too
    assert_sites_match(report, tape_truth(lambda: model.train_step((x, y)), state))


def test_compiled_metrics_built_by_the_trace_are_said_and_fit_still_trains() -> None:
    keras.utils.set_random_seed(11)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = np.ones((4, 3), "float32"), np.zeros((4,), "int64")
    report = flowcheck.analyze(model, x, y)
    assert any("built the compiled metrics of" in note for note in report.notes)
    state = [*model.variables, *model.metrics_variables, *model.optimizer.variables]
    saved = snapshot(state)
    assert report.verify().agrees and same(state, saved) and not model.optimizer.built
    before = snapshot(model.trainable_variables)
    model.fit(x, y, epochs=1, verbose=0)
    assert not same(model.trainable_variables, before)


class WGAN(keras.Model):  # the Keras WGAN-GP example, small: a gradient penalty inside the critic's tape
    def __init__(self):
        super().__init__()
        self.discriminator = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)], name="disc")
        self.generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4)], name="gen")
        self.latent_dim = 2
    def compile(self, d_optimizer, g_optimizer):
        super().compile()
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
    def gradient_penalty(self, batch_size, real, fake):
        alpha = tf.random.uniform([batch_size, 1], 0.0, 1.0)
        interpolated = real + alpha * (fake - real)
        with tf.GradientTape() as gp_tape:
            gp_tape.watch(interpolated)
            pred = self.discriminator(interpolated, training=True)
        grads = gp_tape.gradient(pred, [interpolated])[0]
        norm = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1]))
        return tf.reduce_mean((norm - 1.0) ** 2)
    def train_step(self, real):
        if isinstance(real, tuple):
            real = real[0]
        batch_size = tf.shape(real)[0]
        z = tf.random.normal((batch_size, self.latent_dim))
        with tf.GradientTape() as tape:
            fake = self.generator(z, training=True)
            d_cost = tf.reduce_mean(self.discriminator(fake, training=True)) - tf.reduce_mean(self.discriminator(real, training=True))
            d_loss = d_cost + 10.0 * self.gradient_penalty(batch_size, real, fake)
        d_grad = tape.gradient(d_loss, self.discriminator.trainable_variables)
        self.d_optimizer.apply_gradients(zip(d_grad, self.discriminator.trainable_variables))
        z = tf.random.normal((batch_size, self.latent_dim))
        with tf.GradientTape() as tape:
            g_loss = -tf.reduce_mean(self.discriminator(self.generator(z, training=True), training=True))
        g_grad = tape.gradient(g_loss, self.generator.trainable_variables)
        self.g_optimizer.apply_gradients(zip(g_grad, self.generator.trainable_variables))
        return {"d_loss": d_loss, "g_loss": g_loss}


def test_wgan_gp_override_has_a_tensor_source_site_inside_the_critic_tape() -> None:
    keras.utils.set_random_seed(12)
    model = WGAN()
    model.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3))
    x = np.random.default_rng(0).random((8, 4)).astype("float32")
    report = flowcheck.analyze(model, x)
    penalty, critic, generator = report.gradient_sites
    assert penalty.targets == ("pred",) and [s.name for s in penalty.sources] == ["interpolated"]
    assert "watched: interpolated" in penalty.watch and penalty.sources[0].trainable is False
    assert critic.targets == ("d_loss",) and generator.targets == ("g_loss",)
    state = [*model.variables, *model.d_optimizer.variables, *model.g_optimizer.variables]
    saved = snapshot(state)
    assert report.verify().agrees and same(state, saved)
    assert_sites_match(report, tape_truth(lambda: model.train_step((x,)), state))


class Sampling(keras.layers.Layer):
    """The Keras VAE example's sampling layer, with its own SeedGenerator."""

    def __init__(self) -> None:
        super().__init__()
        self.seed_generator = keras.random.SeedGenerator(1337)

    def call(self, inputs: Any) -> Any:
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(shape=keras.ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + keras.ops.exp(0.5 * z_log_var) * epsilon


class VAE(keras.Model):
    """The Keras VAE example, small: its own train_step, fit on x alone."""

    def __init__(self) -> None:
        super().__init__()
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(8, activation="relu")(inputs)
        z_mean, z_log_var = keras.layers.Dense(2, name="z_mean")(hidden), keras.layers.Dense(2, name="z_log_var")(hidden)
        self.encoder = keras.Model(inputs, [z_mean, z_log_var, Sampling()([z_mean, z_log_var])], name="encoder")
        latent = keras.Input((2,))
        self.decoder = keras.Model(latent, keras.layers.Dense(4, activation="sigmoid")(latent), name="decoder")
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")

    def train_step(self, data: Any) -> dict[str, Any]:
        with tf.GradientTape() as tape:
            z_mean, z_log_var, z = self.encoder(data)
            reconstruction = keras.ops.mean(keras.losses.binary_crossentropy(data, self.decoder(z)))
            kl = keras.ops.mean(-0.5 * (1 + z_log_var - keras.ops.square(z_mean) - keras.ops.exp(z_log_var)))
            total = reconstruction + kl
        grads = tape.gradient(total, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
        self.total_loss_tracker.update_state(total)
        return {"loss": self.total_loss_tracker.result()}

def test_vae_override_fit_on_x_alone_restores_its_seed_generator() -> None:
    keras.utils.set_random_seed(14)
    vae = VAE()
    vae.compile(optimizer=keras.optimizers.Adam())
    x = np.random.default_rng(0).random((8, 4)).astype("float32")
    report = flowcheck.analyze(vae, x)
    (site,) = report.gradient_sites
    assert site.targets == ("total",) and len(site.receiving) == len(vae.trainable_weights)
    state = [*vae.variables, *vae.optimizer.variables, *vae.metrics_variables]
    assert any("seed_generator" in v.path for v in vae.variables)
    saved = snapshot(state)
    assert report.verify().agrees and same(state, saved)
    assert_sites_match(report, tape_truth(lambda: vae.train_step(x), state))


class LabelFreeLoss(keras.Model):
    """An autoencoder-style model whose compute_loss override needs no labels."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, x: Any) -> Any:
        return self.dense(x)

    def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None,
                     training: bool = True) -> Any:
        return keras.ops.mean((y_pred - x) ** 2)


def test_a_compiled_loss_given_no_labels_is_one_clear_usage_error() -> None:
    keras.utils.set_random_seed(15)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((4, 3), "float32")
    with pytest.raises(ValueError, match="None values not supported"):  # Keras's own fit(x): no word of labels
        model.fit(x, epochs=1, verbose=0)
    for inputs in ((x,), (x, None)):
        with pytest.raises(flowcheck.UsageError, match=r"no labels were given: pass them, \(model, x, y\)"):
            flowcheck.analyze(model, *inputs)
    with pytest.raises(flowcheck.TraceError, match="incompatible with the layer"):  # the model's own error stays
        flowcheck.analyze(model, np.ones((4, 5), "float32"))
    own = LabelFreeLoss()
    own.compile(optimizer="sgd", loss="mse")  # compiled loss unused: the override needs no y
    own(x)
    report = flowcheck.analyze(own, x)
    assert_sites_match(report, tape_truth(lambda: own.train_step(x), [*own.variables]))


@pytest.mark.parametrize("text", [GAN_SCRIPT, FORWARD_FORWARD], ids=["gan", "forward_forward"])
def test_verify_names_only_the_optimizers_a_train_step_override_applies(text: str) -> None:
    # compile()'s default RMSprop (the GAN) or its SGD (the forward-forward net) is never applied.
    ran: dict[str, Any] = {"STEPS": 1}
    exec(text.replace("batch_size=4", "batch_size=16"), ran)  # noqa: S102 -- one real step: what Keras applies
    applied = [type(o).__name__ for o in reachable_optimizers(ran["gan"]) if int(o.iterations.numpy()) == 1]
    fresh: dict[str, Any] = {"STEPS": 0}
    exec(text, fresh)  # noqa: S102 -- the same model, untrained
    model, x = fresh["gan"], np.ones((4, 3), "float32")
    report = flowcheck.analyze(model, x)
    state = [*model.variables, *(v for o in reachable_optimizers(model) for v in o.variables)]
    check = report.verify()
    assert check.agrees, check
    assert [part.split("(")[0] for part in check.optimizer.removeprefix("the step's own ").split(", ")] == applied
    assert_sites_match(report, tape_truth(lambda: model.train_step(x), state))


def test_a_built_in_layer_of_a_functional_model_is_not_placed_at_the_analyze_call() -> None:
    # A functional model runs its layers with no user frame: the op's innermost user frame is the
    # line calling flowcheck, which made no op (it was shown as the barrier's line).
    keras.utils.set_random_seed(16)
    x = np.random.default_rng(0).random((8, 4)).astype("float32")
    binned = keras.layers.Discretization(num_bins=4, name="binned")
    binned.adapt(x)
    inputs = keras.Input((4,))
    codes = binned(keras.layers.Dense(4, name="pre")(inputs))
    outputs = keras.layers.Dense(1, name="out")(keras.layers.Flatten()(keras.layers.Embedding(4, 2, name="emb")(codes)))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    report = flowcheck.analyze(model, x, np.ones((8, 1), "float32"))
    state = [*model.variables, *model.metrics_variables]
    assert_sites_match(report, tape_truth(lambda: model.train_step((x, np.ones((8, 1), "float32"))), state))
    (site,) = report.gradient_sites
    assert {s.name for s in site.cut} == {"pre/kernel", "pre/bias"}
    barriers = {b for s in site.cut for b in s.barriers}
    assert {b.op_type for b in barriers} == {"Bucketize"} and all(b.source is None for b in barriers)


class NearestCode(keras.Model):
    """A VQ-style model: the nearest codebook row by argmin, then an Embedding lookup of it."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = keras.layers.Dense(4, name="encoder")
        self.codebook = keras.layers.Embedding(3, 4, name="codebook")
        self.codebook.build((None,))
        self.head = keras.layers.Dense(1, name="head")

    def call(self, x: Any) -> Any:
        h = self.encoder(x)
        distances = keras.ops.sum((h[:, None, :] - self.codebook.embeddings[None]) ** 2, -1)
        code = keras.ops.argmin(distances, -1)  # nearest code
        return self.head(self.codebook(code))  # lookup


def test_an_integer_cut_names_the_line_that_made_the_integer() -> None:
    keras.utils.set_random_seed(17)
    model = NearestCode()
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.random.default_rng(0).random((4, 3)).astype("float32"), np.ones((4, 1), "float32")
    model(x)
    report = flowcheck.analyze(model, x, y)
    assert_sites_match(report, tape_truth(lambda: model.train_step((x, y)), [*model.variables, *model.metrics_variables]))
    (site,) = report.gradient_sites
    assert {s.name for s in site.cut} == {"nearest_code/encoder/kernel", "nearest_code/encoder/bias"}
    [cut] = {b for s in site.cut for b in s.barriers}
    # The cut is the lookup's integer input; the line that made the integer is the argmin's.
    assert cut.source is not None and cut.source.line == line_of(HERE, "# lookup")
    assert cut.detail.endswith(f"; made from floats by ArgMin at {cut.source.short_file}:{line_of(HERE, '# nearest code')}")


def test_a_frozen_backbones_weights_are_counted_apart_from_optimizer_state() -> None:
    keras.utils.set_random_seed(18)
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, name="b1"), keras.layers.BatchNormalization(name="bn")],
                            name="base")
    base.trainable = False
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(base(inputs, training=False)))
    model.compile(optimizer="adam", loss="mse")
    x, y = np.ones((4, 4), "float32"), np.ones((4, 1), "float32")
    report = flowcheck.analyze(model, x, y)
    state = [*model.variables, *model.metrics_variables]
    assert_sites_match(report, tape_truth(lambda: model.train_step((x, y)), state))
    # Frozen weights: a default tape watches them, Keras's train_step does not ask for them.
    watched = default_tape_watches(lambda: model(x, training=True), model.weights)
    frozen = {w.path for w, seen in zip(model.weights, watched) if seen and all(w is not t for t in model.trainable_weights)}
    assert frozen == {"base/b1/kernel", "base/b1/bias", "base/bn/gamma", "base/bn/beta"}
    assert {r.name for r in report.frozen_state} == frozen and report.other_state > len(frozen)
    summary = format_summary(report, None)
    assert (f"+ {report.other_state} other variables the step reads and no site differentiates (4 frozen weights, "
            "trainable=False; optimizer slots and counters, BatchNorm statistics, metric totals): not findings") in summary


class Branching(keras.Model):
    """A model whose call takes one of two heads by a tf.cond."""

    def __init__(self) -> None:
        super().__init__()
        self.left, self.right = keras.layers.Dense(1, name="left"), keras.layers.Dense(1, name="right")

    def call(self, x: Any) -> Any:
        return tf.cond(tf.reduce_sum(x) > 0, lambda: self.left(x), lambda: self.right(x))


@pytest.mark.parametrize("mode", ["traced", "run_eagerly", "run_functions_eagerly"])
def test_a_model_fit_runs_eagerly_is_judged_as_fits_eager_tape(mode: str) -> None:
    keras.utils.set_random_seed(19)
    model = Branching()
    model.compile(optimizer="sgd", loss="mse", run_eagerly=mode == "run_eagerly")
    x, y = np.ones((4, 3), "float32"), np.ones((4, 1), "float32")
    model(x)
    state = [*model.variables, *model.metrics_variables]
    tf.config.run_functions_eagerly(mode == "run_functions_eagerly")
    try:
        # fit runs train_step traced (the untaken branch gets zeros) or, in both eager modes, eagerly (None).
        report = flowcheck.analyze(model, x, y)
        (site,) = report.gradient_sites
        if mode != "traced":
            assert_sites_match(report, tape_truth(lambda: model.train_step((x, y)), state))
            assert {s.name for s in site.cut} == {model.right.kernel.path, model.right.bias.path}
        else:
            assert not site.cut  # traced: zeros for the untaken branch
        with warnings.catch_warnings(record=True) as caught:  # what fit itself says
            warnings.simplefilter("always")
            model.fit(x, y, epochs=1, verbose=0)
        said = [str(w.message) for w in caught if "Gradients do not exist" in str(w.message)]
        assert bool(said) == bool(site.cut)
        assert report.verify().agrees
    finally:
        tf.config.run_functions_eagerly(False)
