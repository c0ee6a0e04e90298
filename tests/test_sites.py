"""Gradient sites: training steps with their own tape, judged per call against TensorFlow's answer.

Each test writes a step the way users do, analyzes it, and checks every site against the truth
computed here by running the step's own tape (``site_helpers.tape_truth``) and against
TensorFlow's answer recorded while tracing (``SiteSource.tensorflow_none``).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from site_helpers import assert_sites_match, restore, same, snapshot, tape_truth
from truth import line_of, watched_truth

import flowcheck
from flowcheck import Verdict

HERE = __file__


def _data(n: int = 8, d: int = 4, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, d)).astype("float32"), rng.integers(0, k, size=(n,)).astype("int64")


class QuickstartModel(keras.Model):  # TensorFlow's "quickstart for experts", dense and small
    def __init__(self) -> None:
        super().__init__()
        self.d1 = keras.layers.Dense(8, activation="relu")
        self.d2 = keras.layers.Dense(3)

    def call(self, x: Any) -> Any:
        h = self.d1(x)
        h = tf.cast(tf.cast(h * 10.0, tf.int32), tf.float32) / 10.0  # buried int cast
        return self.d2(h)


def _quickstart() -> tuple[Any, Any, list[Any], Any]:
    keras.utils.set_random_seed(1)
    model = QuickstartModel()
    loss_object = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.Adam()
    train_loss = keras.metrics.Mean(name="train_loss")
    train_accuracy = keras.metrics.SparseCategoricalAccuracy(name="train_accuracy")

    @tf.function
    def train_step(images: Any, labels: Any) -> None:
        with tf.GradientTape() as tape:
            predictions = model(images, training=True)
            loss = loss_object(labels, predictions)
        gradients = tape.gradient(loss, model.trainable_variables)  # quickstart gradient
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        train_loss(loss)
        train_accuracy(labels, predictions)

    model(tf.zeros((1, 4)))
    metrics = [*train_loss.variables, *train_accuracy.variables]
    return model, optimizer, metrics, train_step


def test_quickstart_step_returning_nothing_is_judged_at_its_gradient_call() -> None:
    model, optimizer, metrics, train_step = _quickstart()
    x, y = _data()
    before_vars = [*model.variables, *optimizer.variables, *metrics]
    before = snapshot(before_vars)
    report = flowcheck.analyze(train_step, x, y)
    (site,) = report.gradient_sites
    assert site.kind == "GradientTape.gradient"
    assert site.source is not None and site.source.line == line_of(HERE, "# quickstart gradient")
    assert site.targets == ("loss",)
    assert [s.name for s in site.sources] == [v.path for v in model.trainable_variables]
    assert site.watch == "watches accessed trainable variables"
    cut = {s.name for s in site.cut}
    assert cut == {model.d1.kernel.path, model.d1.bias.path}
    barrier = site.cut[0].barriers[0]
    assert barrier.op_type == "Cast" and barrier.source.line == line_of(HERE, "# buried int cast")
    assert not optimizer.built  # the trace built Adam, and flowcheck unbuilt it
    check = report.verify()
    assert check.agrees, check
    assert "Adam" in check.optimizer
    assert {c.name: c.changed for c in check.variables}[model.d2.kernel.path]
    assert same(before_vars, before)  # weights, Adam's iteration counter and slots, metric totals
    assert report.never_trained == ()
    state = [*model.variables, *optimizer.variables, *metrics]
    assert_sites_match(report, tape_truth(lambda: train_step.python_function(x, y), state))
    head = snapshot([model.d2.kernel])
    train_step(x, y)  # the user's own step, after flowcheck: it trains as if flowcheck had not been there
    assert optimizer.built and int(optimizer.iterations.numpy()) == 1 and not same([model.d2.kernel], head)


def test_argmax_gate_cuts_the_gating_layer() -> None:
    keras.utils.set_random_seed(2)
    gate_layer, expert = keras.layers.Dense(2, name="gate"), keras.layers.Dense(2, name="expert")
    optimizer = keras.optimizers.SGD(0.1)

    @tf.function
    def step(x: Any, y: Any) -> dict[str, Any]:
        with tf.GradientTape() as tape:
            gate = tf.one_hot(tf.argmax(gate_layer(x), axis=-1), 2)  # argmax gate
            out = expert(x) * gate
            loss = tf.reduce_mean((tf.reduce_sum(out, -1) - y) ** 2)
        variables = gate_layer.trainable_variables + expert.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return {"loss": loss}

    x, y = _data()
    y = y.astype("float32")
    report = flowcheck.analyze(step, x, y)
    (site,) = report.gradient_sites
    assert [s.verdict for s in site.sources] == [Verdict.BLOCKED] * 2 + [Verdict.RECEIVES] * 2
    assert {b.op_type for s in site.cut for b in s.barriers} == {"ArgMax"}
    assert site.cut[0].barriers[0].source.line == line_of(HERE, "# argmax gate")
    assert report.verify().agrees
    state = [*gate_layer.variables, *expert.variables, *optimizer.variables]
    assert_sites_match(report, tape_truth(lambda: step.python_function(x, y), state))


def test_gan_with_two_tapes_in_one_step_has_two_sites() -> None:
    keras.utils.set_random_seed(3)
    generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, name="g")], name="generator")
    discriminator = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, name="d")], name="discriminator")
    g_opt, d_opt = keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def train_step(real: Any, noise: Any) -> None:
        with tf.GradientTape() as gen_tape, tf.GradientTape() as disc_tape:
            fake = generator(noise, training=True)
            real_out, fake_out = discriminator(real, training=True), discriminator(fake, training=True)
            gen_loss = bce(tf.ones_like(fake_out), fake_out)
            disc_loss = bce(tf.ones_like(real_out), real_out) + bce(tf.zeros_like(fake_out), fake_out)
        g_grads = gen_tape.gradient(gen_loss, generator.trainable_variables)
        d_grads = disc_tape.gradient(disc_loss, discriminator.trainable_variables)
        g_opt.apply_gradients(zip(g_grads, generator.trainable_variables))
        d_opt.apply_gradients(zip(d_grads, discriminator.trainable_variables))

    real, noise = np.ones((4, 4), "float32"), np.ones((4, 2), "float32")
    report = flowcheck.analyze(train_step, real, noise)
    assert [s.targets for s in report.gradient_sites] == [("gen_loss",), ("disc_loss",)]
    assert [s.name for s in report.gradient_sites[0].sources] == [v.path for v in generator.trainable_variables]
    assert report.never_trained == ()  # the generator's loss reaches the discriminator: its own site trains it
    assert report.verify().agrees
    state = [*generator.variables, *discriminator.variables, *g_opt.variables, *d_opt.variables]
    assert_sites_match(report, tape_truth(lambda: train_step.python_function(real, noise), state))


def test_custom_step_cut_everywhere_reports_the_site() -> None:
    keras.utils.set_random_seed(6)
    dense = keras.layers.Dense(3, name="classifier")
    optimizer = keras.optimizers.SGD(0.1)

    @tf.function
    def step(x: Any, y: Any) -> None:
        with tf.GradientTape() as tape:
            guess = tf.cast(tf.argmax(dense(x), axis=-1), tf.float32)  # cut everywhere
            loss = tf.reduce_mean((guess - tf.cast(y, tf.float32)) ** 2)
        grads = tape.gradient(loss, dense.trainable_variables)
        optimizer.apply_gradients(zip(grads, dense.trainable_variables))

    x, y = _data()
    report = flowcheck.analyze(step, x, y)
    (site,) = report.gradient_sites
    assert not site.receiving and site.agrees
    assert {b.source.line for s in site.sources for b in s.barriers} == {line_of(HERE, "# cut everywhere")}
    assert report.verify().agrees
    assert_sites_match(report, tape_truth(lambda: step.python_function(x, y), [*dense.variables, *optimizer.variables]))


class _CutTrainer:
    """A trainer whose step asks for gradients of a loss made after its tape's block, then applies them."""

    def __init__(self) -> None:
        self.model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3), keras.layers.Dense(1)])
        self.optimizer = keras.optimizers.SGD(0.1)

    def train_step(self, x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            pred = self.model(x)
        loss = tf.reduce_mean((pred - y) ** 2)
        grads = tape.gradient(loss, self.model.trainable_variables)
        self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, self.model.trainable_variables) if g is not None])
        return loss


def test_a_plain_method_whose_trace_fails_after_its_gradient_call_is_judged_at_that_call() -> None:
    """The model is reached only through ``self``; the trace raises in ``apply_gradients`` (nothing to apply),
    before TensorFlow lists the variables it read: the gradient call's sources stand in for them."""
    keras.utils.set_random_seed(12)
    trainer = _CutTrainer()
    x, y = tf.ones((4, 2)), tf.ones((4, 1))
    trainer.model(x)
    def call() -> None:  # the script's own call, eagerly: it raises once TensorFlow has answered
        with pytest.raises(ValueError, match="not enough values to unpack"):
            trainer.train_step(x, y)

    truth = tape_truth(call, trainer.model.variables)
    report = flowcheck.analyze(_CutTrainer.train_step, trainer, x, y)
    (site,) = report.gradient_sites
    assert [s.receives for s in site.sources] == [not none for none in truth[0]] and not site.receiving
    assert [s.verdict for s in site.sources] == [Verdict.UNUSED] * 4


def test_persistent_tape_with_jacobian_stop_recording_and_a_read_before_the_block() -> None:
    w_before = tf.Variable(tf.ones((2, 2)), name="w_before")
    w_inside = tf.Variable(tf.ones((2, 2)), name="w_inside")
    w_paused = tf.Variable(tf.ones((2, 2)), name="w_paused")
    frozen = tf.Variable(tf.ones((2, 2)), name="frozen", trainable=False)
    watched_frozen = tf.Variable(tf.ones((2, 2)), name="watched_frozen", trainable=False)

    @tf.function
    def step(x: Any) -> None:
        early = tf.matmul(x, w_before)  # read before the block
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(watched_frozen)
            inner = tf.matmul(early, w_inside)
            h = inner + tf.matmul(x, frozen) + tf.matmul(x, watched_frozen)
            with tape.stop_recording():
                paused = tf.matmul(x, w_paused)
            loss = tf.reduce_sum(h * h) + tf.reduce_sum(paused)
        tape.jacobian(inner, w_inside)
        sources = [w_before, w_inside, w_paused, frozen, watched_frozen]
        for v, g in zip(sources, tape.gradient(loss, sources)):
            if g is not None:
                v.assign_sub(0.01 * g)

    x = np.ones((2, 2), "float32")
    report = flowcheck.analyze(step, x)
    jac, grad = report.gradient_sites
    assert jac.kind == "GradientTape.jacobian" and [s.receives for s in jac.sources] == [True]
    assert "persistent" in grad.watch and "stop_recording" in grad.watch and "watched: watched_frozen" in grad.watch
    verdicts = {s.name: s.receives for s in grad.sources}
    assert verdicts == {"w_before": False, "w_inside": True, "w_paused": False, "frozen": False, "watched_frozen": True}
    frozen_source = next(s for s in grad.sources if s.name == "frozen")
    assert frozen_source.barriers[0].kind is flowcheck.BarrierKind.NOT_WATCHED
    state = [w_before, w_inside, w_paused, frozen, watched_frozen]
    saved = snapshot(state)
    assert report.verify().agrees
    assert same(state, saved)
    assert_sites_match(report, tape_truth(lambda: step.python_function(x), state))


def test_watch_accessed_variables_false_watches_only_what_it_is_told() -> None:
    a, b = tf.Variable(1.0, name="a"), tf.Variable(2.0, name="b")

    @tf.function
    def step() -> None:
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(a)
            loss = a * b
        for v, g in zip([a, b], tape.gradient(loss, [a, b])):
            if g is not None:
                v.assign_sub(g)

    report = flowcheck.analyze(step)
    (site,) = report.gradient_sites
    assert site.watch == "watch_accessed_variables=False; watched: a"
    assert [s.receives for s in site.sources] == [True, False]
    assert_sites_match(report, tape_truth(step.python_function, [a, b]))


def test_watched_tensors_are_named_as_the_watch_calls_write_them() -> None:
    # A PINN's derivatives (a github-style solver): the inputs are watched under the helper's own
    # names, two watch calls on one line. The site named a watched tensor by its graph name, the
    # tf.function's argument (t_r), beside a source named from the gradient call (x): "watched: t_r, x";
    # and the second of two gradient calls on one line was read as the first: its source x named "t".
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])

    def residual(t: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(t); tape.watch(x)  # noqa: E702 -- as the script writes it
            u = model(tf.concat([t, x], axis=1))
        u_t, u_x = tape.gradient(u, t), tape.gradient(u, x)
        return u_t + u * u_x

    optimizer = keras.optimizers.SGD(0.1)

    @tf.function
    def train_step(t_r: tf.Tensor, x_r: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(residual(t_r, x_r)))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    t, x = tf.ones((3, 1)), tf.zeros((3, 1))
    report = flowcheck.analyze(train_step, t, x)
    inner = [site for site in report.gradient_sites if "watched" in site.watch]
    assert [site.watch for site in inner] == ["watches accessed trainable variables; watched: t, x; persistent"] * 2
    assert [[s.name for s in site.sources] for site in inner] == [["t"], ["x"]]  # two calls on one line, each its own
    assert_sites_match(report, tape_truth(lambda: train_step.python_function(t, x), model.weights))


def _codebook_step() -> tuple[Any, Any]:
    """A VQ-VAE-like step: its codebook is a plain tf.Variable, not among trainable_variables."""
    layer = keras.layers.Dense(2, name="encoder")
    codebook = tf.Variable(tf.ones((2, 2)), name="codebook")
    optimizer = keras.optimizers.SGD(0.1)

    @tf.function
    def step(x: Any) -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.matmul(layer(x), codebook) ** 2)
        grads = tape.gradient(loss, layer.trainable_variables)
        optimizer.apply_gradients(zip(grads, layer.trainable_variables))

    return step, codebook


def test_never_trained_variable_read_by_the_loss_but_asked_by_no_site() -> None:
    step, _ = _codebook_step()
    report = flowcheck.analyze(step, np.ones((2, 3), "float32"))
    assert [r.name for r in report.never_trained] == ["codebook"]
    assert report.gradient_sites[0].agrees


class _Clip(keras.Model):
    """CLIP's learnable temperature written as in Keras 2: a tf.Variable attribute, which Keras 3 does not track."""

    def __init__(self) -> None:
        super().__init__(name="clip")
        self.proj = keras.layers.Dense(4, name="proj")
        self.logit_scale = tf.Variable(2.0, name="logit_scale")
        self.shifts = [tf.Variable(0.0, name="shift")]
        self.tower = tf.Module()  # a tf.Module's variables are not tracked either
        self.tower.bias = tf.Variable(0.0, name="tower_bias")

    def call(self, x: Any) -> Any:
        z = tf.math.l2_normalize(self.proj(x), axis=-1)
        return tf.exp(self.logit_scale) * tf.matmul(z, z, transpose_b=True) + self.shifts[0] + self.tower.bias


def test_a_tf_variable_a_keras_model_holds_untracked_is_never_trained_and_told_why() -> None:
    model, optimizer = _Clip(), keras.optimizers.SGD(0.1)
    x = tf.constant(_data()[0])

    @tf.function
    def train_step(x: Any) -> None:
        with tf.GradientTape() as tape:
            logits = model(x)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.range(8), logits))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    model(x)
    state = [*model.variables, model.logit_scale, *model.shifts, model.tower.bias]
    saved = snapshot(state)
    truth = tape_truth(lambda: train_step.python_function(x), state)
    restore(state, saved)
    held = [model.logit_scale, *model.shifts, model.tower.bias]
    asked = [any(v is h for v in model.trainable_variables) for h in held]  # Keras 3 leaves them out
    reaches = watched_truth(lambda: model(x), held)
    report = flowcheck.analyze(train_step, x)
    assert same(state, saved)
    assert_sites_match(report, truth)
    expected = [h.name.split(":")[0] for h, got, a in zip(held, reaches, asked) if got and not a]
    assert [r.name for r in report.never_trained] == expected
    told = [n for n in report.notes if "Keras 3 tracks only its own variables" in n and "add_weight" in n]
    assert len(told) == 3 and "clip.logit_scale" in told[0] and "clip.shifts[0]" in told[1], report.notes
    assert "held as clip.tower (a tf.Module)" in told[2], report.notes


def test_a_loss_function_with_an_inner_tape_stays_a_loss_function() -> None:
    w = tf.Variable(tf.ones((2, 1)), name="w")

    @tf.function
    def loss_fn(x: Any) -> Any:  # a gradient penalty: the inner gradient feeds the loss
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = tf.matmul(x, w)
        penalty = tf.reduce_sum(tape.gradient(out, x) ** 2)
        return tf.reduce_sum(out) + penalty

    report = flowcheck.analyze(loss_fn, tf.ones((2, 2)))
    assert report.gradient_sites == ()
    assert report.receives_gradient(w)


@pytest.mark.parametrize("fmt", ["summary", "json"])
def test_outputs_show_sites(fmt: str) -> None:
    from flowcheck.outputs.text import SCHEMA_VERSION, format_summary, to_json

    _, _, _, train_step = _quickstart()
    x, y = _data()
    report = flowcheck.analyze(train_step, x, y)
    if fmt == "json":
        data = to_json(report, None)
        assert data["schema_version"] == SCHEMA_VERSION == 2
        (site,) = data["gradient_sites"]
        assert site["kind"] == "GradientTape.gradient" and site["agrees"]
        assert [s["verdict"] for s in site["sources"]].count("blocked") == 2
        assert data["never_trained"] == []
    else:
        text = format_summary(report, None)
        assert "GradientTape.gradient" in text and "2 of 4 sources receive" in text
        assert text.index("blocked") < text.index("receive a gradient")


def test_assert_gradient_flow_judges_a_step_at_its_sites() -> None:
    from flowcheck.testing import GradientFlowAssertionError

    model, _, _, train_step = _quickstart()
    x, y = _data()
    report = flowcheck.assert_gradient_flow(
        train_step, x, y, receives=list(model.d2.trainable_variables), blocked=list(model.d1.trainable_variables),
    )
    assert report.gradient_sites
    with pytest.raises(GradientFlowAssertionError, match=r"expected receives, found blocked") as caught:
        flowcheck.assert_gradient_flow(report, receives="all-trainable")
    assert f"test_sites.py:{line_of(HERE, '# buried int cast')}" in str(caught.value)


def test_a_variable_no_call_asks_for_counts_as_unused_in_a_contract() -> None:
    from flowcheck.testing import GradientFlowAssertionError

    step, codebook = _codebook_step()
    with pytest.raises(GradientFlowAssertionError, match="codebook"):
        flowcheck.assert_gradient_flow(step, np.ones((2, 3), "float32"), receives=codebook, verify=False)


def test_an_eager_gradient_call_gets_tensorflows_answer_and_a_numpy_loss_its_reason() -> None:
    from flowcheck.trace.eager_sites import eager_site
    from flowcheck.trace.recording import record_sites

    w, u = tf.Variable(1.0, name="w"), tf.Variable(2.0, name="u")
    with record_sites() as recorder:
        with tf.GradientTape() as tape:
            loss = w * 3.0
        truth = [g is None for g in tape.gradient(loss, [w, u])]
        with tf.GradientTape() as tape:
            numpy_loss = np.mean((w * 3.0).numpy() - 1.0)
        with pytest.raises(AttributeError, match="_id"):
            tape.gradient(numpy_loss, [w])
    fine, broken = (eager_site(c) for c in recorder.eager_calls)
    assert [s.tensorflow_none for s in fine.sources] == truth == [False, True] and fine.agrees
    assert fine.targets == ("loss",)
    assert broken.error is not None and "left TensorFlow" in broken.error and not broken.receiving


def test_verify_restores_batchnorm_statistics_and_dropout_seeds() -> None:
    keras.utils.set_random_seed(8)
    model = keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(6), keras.layers.BatchNormalization(),
        keras.layers.Dropout(0.5, seed=3), keras.layers.Dense(1),
    ])
    optimizer = keras.optimizers.RMSprop(1e-2)
    optimizer.build(model.trainable_variables)

    @tf.function
    def step(x: Any, y: Any) -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    x, y = np.ones((8, 4), "float32"), np.ones((8, 1), "float32")
    state = [*model.variables, *optimizer.variables]
    assert any("seed_generator" in v.path for v in model.variables)
    saved = snapshot(state)
    report = flowcheck.analyze(step, x, y)
    check = report.verify()
    assert check.agrees and any(c.changed for c in check.variables)
    assert same(state, saved)
    assert optimizer.built and len(optimizer.variables) == len(saved) - len(model.variables)
    assert_sites_match(report, tape_truth(lambda: step.python_function(x, y), state))


class Trainer:
    """The class-based trainer pattern: the tape lives in a nested tf.function of a method."""

    def __init__(self) -> None:
        self.dense = keras.layers.Dense(2, name="trainer_dense")
        self.optimizer = keras.optimizers.SGD(0.1)

    @tf.function
    def gradients(self, x: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.round(self.dense(x)) + self.dense.bias)  # trainer round
        return tape.gradient(loss, self.dense.trainable_variables)

    @tf.function
    def train_step(self, x: Any) -> None:
        grads = self.gradients(x)
        self.optimizer.apply_gradients(zip(grads, self.dense.trainable_variables))


def test_a_bound_step_whose_tape_is_in_a_nested_tf_function() -> None:
    trainer = Trainer()
    x = np.ones((2, 3), "float32")
    trainer.dense(x)
    report = flowcheck.analyze(trainer.train_step, x)
    (site,) = report.gradient_sites
    assert [s.receives for s in site.sources] == [False, True]
    assert site.cut[0].barriers[0].source.line == line_of(HERE, "# trainer round")
    assert report.verify().agrees
    state = [*trainer.dense.variables, *trainer.optimizer.variables]
    assert_sites_match(report, tape_truth(lambda: trainer.train_step.python_function(x), state))


def test_tf_gradients_inside_a_step_is_a_site_and_is_verified_in_a_graph() -> None:
    a, b = tf.Variable(1.0, name="a"), tf.Variable(2.0, name="b", trainable=False)

    @tf.function
    def step(x: Any) -> None:
        loss = a * x + tf.stop_gradient(b * x)
        grad_a, _ = tf.gradients(loss, [a, b])
        a.assign_sub(0.1 * grad_a)

    x = tf.constant(3.0)
    report = flowcheck.analyze(step, x)
    (site,) = report.gradient_sites
    assert site.kind == "tf.gradients" and site.agrees
    assert [(s.receives, s.tensorflow_none) for s in site.sources] == [(True, False), (False, True)]
    saved = snapshot([a, b])
    check = report.verify()
    assert check.agrees and [c.changed for c in check.variables] == [True, False]
    assert same([a, b], saved)


def test_tf_hessians_inside_a_step_is_one_site_not_the_gradient_calls_of_its_while_loop() -> None:
    w = tf.Variable([[0.5], [-0.5]], name="w")
    x = tf.random.stateless_normal((8, 2), seed=(1, 2))
    y = x @ tf.constant([[1.0], [2.0]])

    def hessian_of(x: Any, y: Any) -> Any:
        wv = tf.convert_to_tensor(w)
        loss = tf.reduce_mean(tf.square(x @ wv - y))
        return tf.hessians(loss, wv)  # newton hessian

    @tf.function
    def newton_step(x: Any, y: Any) -> None:
        w.assign_sub(0.1 * tf.reduce_sum(hessian_of(x, y)[0], axis=[2, 3]))

    truth = [h is None for h in tf.function(hessian_of)(x, y)]  # TensorFlow's own answer, traced as the step is
    saved = snapshot([w])
    report = flowcheck.analyze(newton_step, x, y)
    (site,) = report.gradient_sites  # not its first-order gradients call, nor those of its while loop
    assert site.kind == "tf.hessians" and site.source is not None and site.source.line == line_of(HERE, "# newton hessian")
    assert [s.tensorflow_none for s in site.sources] == truth == [False] and site.agrees
    check = report.verify()
    assert check.agrees and same([w], saved)


def test_a_mirrored_strategy_step_has_its_replica_tape_as_a_site() -> None:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        keras.utils.set_random_seed(9)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
        optimizer = keras.optimizers.SGD(0.1)

    @tf.function
    def step(x: Any, y: Any) -> Any:
        def replica(x: Any, y: Any) -> Any:
            with tf.GradientTape() as tape:
                hidden = tf.round(model.layers[0](x))  # replica round
                loss = tf.reduce_mean((model.layers[1](hidden) - y) ** 2)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        return strategy.run(replica, args=(x, y))

    x, y = np.ones((4, 3), "float32"), np.ones((4, 1), "float32")
    report = flowcheck.analyze(step, x, y)
    (site,) = report.gradient_sites
    assert [s.receives for s in site.sources] == [False, False, True, True] and site.agrees
    assert site.cut[0].barriers[0].source.line == line_of(HERE, "# replica round")
    state = [*model.variables, *optimizer.variables]
    saved = snapshot(state)
    assert report.verify().agrees
    assert same(state, saved)


def test_a_gan_alternating_two_steps_trains_everything_across_both() -> None:
    from flowcheck.analysis.steps import never_trained_across

    keras.utils.set_random_seed(10)
    generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4, name="g")], name="gen")
    discriminator = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, name="d")], name="disc")
    g_opt, d_opt = keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1)

    @tf.function
    def generator_step(noise: Any) -> None:
        with tf.GradientTape() as tape:
            g_loss = -tf.reduce_mean(discriminator(generator(noise)))
        grads = tape.gradient(g_loss, generator.trainable_variables)
        g_opt.apply_gradients(zip(grads, generator.trainable_variables))

    @tf.function
    def discriminator_step(real: Any, noise: Any) -> None:
        with tf.GradientTape() as tape:
            d_loss = tf.reduce_mean(discriminator(generator(noise))) - tf.reduce_mean(discriminator(real))
        grads = tape.gradient(d_loss, discriminator.trainable_variables)
        d_opt.apply_gradients(zip(grads, discriminator.trainable_variables))

    noise, real = np.ones((4, 2), "float32"), np.ones((4, 4), "float32")
    g_report, d_report = flowcheck.analyze(generator_step, noise), flowcheck.analyze(discriminator_step, real, noise)
    assert {r.name for r in g_report.never_trained} == {v.path for v in discriminator.trainable_variables}
    assert {r.name for r in d_report.never_trained} == {v.path for v in generator.trainable_variables}
    assert never_trained_across([g_report, d_report]) == ()
    assert_sites_match(g_report, tape_truth(lambda: generator_step.python_function(noise), [*generator.variables]))


def test_a_step_returning_its_loss_and_gradients_is_judged_at_its_site() -> None:
    w, frozen = tf.Variable(tf.ones((2, 1)), name="w"), tf.Variable(tf.ones((2, 1)), name="cut")

    @tf.function
    def compute(x: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.matmul(x, w) + tf.stop_gradient(tf.matmul(x, frozen)))
        return loss, tape.gradient(loss, [w, frozen])

    report = flowcheck.analyze(compute, tf.ones((2, 2)))
    (site,) = report.gradient_sites
    assert [s.receives for s in site.sources] == [True, False]
    assert site.cut[0].barriers[0].op_type == "StopGradient"
    assert report.verify().agrees
    assert_sites_match(report, tape_truth(lambda: compute.python_function(tf.ones((2, 2))), [w, frozen]))


def test_in_flowcheck_is_true_only_while_flowcheck_runs_the_step() -> None:
    from flowcheck.trace.sites import in_flowcheck

    seen: list[bool] = []
    w = tf.Variable(1.0, name="w")

    @tf.function
    def step() -> None:
        seen.append(in_flowcheck())  # at trace time and in the eager verification run
        with tf.GradientTape() as tape:
            loss = w * w
        w.assign_sub(0.1 * tape.gradient(loss, w))

    report = flowcheck.analyze(step)
    report.verify()
    step()
    assert seen == [True, True, False] and not in_flowcheck()


def test_batch_jacobian_of_a_tensor_source_is_a_site() -> None:
    w = tf.Variable(tf.ones((2, 2)), name="w")

    @tf.function
    def step(x: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.matmul(x, w)
        return tape.batch_jacobian(y, x)

    x = tf.ones((3, 2))
    report = flowcheck.analyze(step, x)
    (site,) = report.gradient_sites
    assert site.kind == "GradientTape.batch_jacobian" and site.agrees
    assert [s.receives for s in site.sources] == [True] and site.sources[0].trainable is False
    assert_sites_match(report, tape_truth(lambda: step.python_function(x), [w]))


STEP_FILE = '''\
import numpy as np
import tensorflow as tf
import keras

model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="hidden"), keras.layers.Dense(3, name="out")])
loss_object = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
optimizer = keras.optimizers.Adam()


@tf.function
def train_step(images, labels):
    with tf.GradientTape() as tape:
        hidden = tf.cast(tf.cast(model.layers[0](images) * 10, tf.int32), tf.float32)
        loss = loss_object(labels, model.layers[1](hidden))
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))


example_inputs = (np.ones((4, 4), "float32"), np.zeros((4,), "int64"))
'''


def test_the_cli_fails_a_step_with_a_cut_source_unless_it_is_expected(
    tmp_path: Any, capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from flowcheck.cli.main import main

    path = tmp_path / "qs.py"
    path.write_text(STEP_FILE)
    assert main(["analyze", f"{path}:train_step", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    (site,) = data["gradient_sites"]
    assert site["source"]["line"] == 15 and site["counts"] == {"receives": 2, "blocked": 2, "unused": 0}
    assert [b["source"]["line"] for s in site["sources"] for b in s["barriers"]] == [13, 13]
    assert data["verification"]["agrees"] and not data["ok"]
    code = main(["analyze", f"{path}:train_step", "--expect-blocked", "*/hidden/*"])  # a second import names it sequential_1
    assert code == 0, capsys.readouterr()
    assert capsys.readouterr().out.rstrip().endswith("OK: 1 expectation holds, verification agrees")


def test_a_teacher_read_before_the_tape_is_not_never_trained() -> None:
    keras.utils.set_random_seed(13)
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="t")], name="teacher")
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="s")], name="student")
    optimizer = keras.optimizers.SGD(0.1)

    @tf.function
    def distill(x: Any) -> None:
        soft = tf.nn.softmax(teacher(x))  # knowledge distillation: the teacher is read outside the tape
        with tf.GradientTape() as tape:
            loss = keras.losses.KLDivergence()(soft, tf.nn.softmax(student(x)))
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(grads, student.trainable_variables))

    report = flowcheck.analyze(distill, np.ones((2, 4), "float32"))
    assert report.never_trained == () and report.gradient_sites[0].agrees
    assert report.receives_gradient(teacher.layers[0].kernel)  # a watched tape around the whole step would reach it


def test_recording_leaves_tensorflow_and_keras_as_they_were_also_when_the_trace_fails() -> None:
    from keras.src.optimizers import base_optimizer, loss_scale_optimizer

    before = (
        tf.GradientTape.gradient, tf.GradientTape.jacobian, tf.GradientTape._push_tape, tf.gradients, tf.hessians,  # noqa: SLF001
        base_optimizer.BaseOptimizer.apply, loss_scale_optimizer.LossScaleOptimizer.apply,
    )
    w = tf.Variable(1.0, name="w")

    @tf.function
    def broken() -> None:
        with tf.GradientTape() as tape:
            loss = w * 2.0
        tape.gradient(loss, w)
        raise RuntimeError("the user's bug")

    with pytest.raises(flowcheck.FlowcheckError):
        flowcheck.analyze(broken).verify()
    after = (
        tf.GradientTape.gradient, tf.GradientTape.jacobian, tf.GradientTape._push_tape, tf.gradients, tf.hessians,  # noqa: SLF001
        base_optimizer.BaseOptimizer.apply, loss_scale_optimizer.LossScaleOptimizer.apply,
    )
    assert after == before


def test_a_plain_python_step_is_judged_at_its_sites_and_verified_as_called() -> None:
    keras.utils.set_random_seed(15)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD(0.1)

    def step(x: Any, y: Any) -> dict[str, Any]:  # no tf.function: the "custom training walkthrough" style
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return {"loss": loss}

    x, y = np.ones((2, 3), "float32"), np.ones((2, 1), "float32")
    report = flowcheck.analyze(step, x, y)
    assert report.target_kind == "callable" and len(report.gradient_sites[0].receiving) == 4
    assert "judged as you call it, eagerly" in report.notes[0]
    state = [*model.variables, *optimizer.variables]
    saved = snapshot(state)
    assert report.verify().agrees and same(state, saved) and not optimizer.built
    assert_sites_match(report, tape_truth(lambda: step(x, y), state))


@pytest.mark.parametrize("traced", [True, False], ids=["tf.function", "eager"])
def test_a_tf1_optimizer_minimize_in_tf2_code_is_a_site_of_its_own_kind(traced: bool) -> None:
    w1, w2 = tf.Variable(tf.ones((2, 3)), name="w1"), tf.Variable(tf.ones((3, 1)), name="w2")
    optimizer = tf.compat.v1.train.GradientDescentOptimizer(0.1)
    x = tf.ones((4, 2))

    def loss() -> Any:
        return tf.reduce_sum(tf.stop_gradient(x @ w1) @ w2)

    def train_step() -> None:
        optimizer.minimize(loss, var_list=[w1, w2])  # the site

    step = tf.function(train_step) if traced else train_step
    truth = tape_truth(step, [w1, w2])
    report = flowcheck.analyze(step)
    assert_sites_match(report, truth)
    (site,) = report.gradient_sites
    assert site.kind == "tf1 Optimizer.minimize"
    assert site.source is not None and site.source.line == line_of(train_step, "# the site")
    assert site.targets == ("loss",) and [s.name for s in site.sources] == ["w1", "w2"]


def test_a_plain_step_that_raises_eagerly_keeps_its_traced_answers_and_says_so() -> None:
    w, cut = tf.Variable(tf.ones((2, 1)), name="w"), tf.Variable(tf.ones((2, 1)), name="cut")

    def step(x: Any) -> None:  # a plain function: judged as its eager call answers, when it can run
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.matmul(x, w) + tf.stop_gradient(tf.matmul(x, cut)))
        grads = tape.gradient(loss, [w, cut])
        w.assign_sub(0.1 * grads[0])
        tf.debugging.assert_equal(tf.reduce_sum(x), 0.0, message="no zero batch")  # raises when run, not when traced

    x = tf.ones((2, 2))
    report = flowcheck.analyze(step, x)
    (site,) = report.gradient_sites
    with tf.GradientTape(watch_accessed_variables=False) as tape:  # the truth, at the site's own tape
        tape.watch([w, cut])
        loss = tf.reduce_sum(tf.matmul(x, w) + tf.stop_gradient(tf.matmul(x, cut)))
    truth = [g is not None for g in tape.gradient(loss, [w, cut])]
    assert [s.receives for s in site.sources] == truth
    assert [s.tensorflow_none for s in site.sources] == [not t for t in truth]  # TensorFlow's answer while tracing
    (note,) = [n for n in site.notes if "raised when flowcheck ran it eagerly" in n]
    assert "InvalidArgumentError" in note and "judged as traced" in note
    assert w.numpy().tolist() == [[1.0], [1.0]]  # the eager run's update was undone


def test_a_custom_step_through_an_lstm_is_judged_at_its_site() -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4), keras.layers.Dense(1)])
    optimizer = keras.optimizers.Adam()
    x, y = tf.random.normal((2, 5, 3)), tf.zeros((2, 1))

    @tf.function
    def train_step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            # An integer TensorArray carried through the loop: TensorFlow's variant handle data says int32.
            steps = tf.TensorArray(tf.int32, size=3).unstack(tf.range(3))
            loss = tf.reduce_mean((model(x, training=True) - y) ** 2) * tf.cast(steps.read(1), tf.float32)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    state = [*model.variables]
    truth = tape_truth(lambda: train_step(x, y), state)
    report = flowcheck.analyze(train_step, x, y)
    assert_sites_match(report, truth)
    assert report.verify().agrees


def test_a_step_whose_nested_function_has_run_before_still_has_its_site() -> None:
    enc, head = keras.layers.Dense(3, name="enc"), keras.layers.Dense(1, name="head")
    enc.build((None, 2))
    head.build((None, 3))
    optimizer = keras.optimizers.SGD(0.1)

    @tf.function
    def inner(x: Any, y: Any) -> Any:
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch([v.value for v in head.trainable_variables])  # enc forgotten
            loss = tf.reduce_mean((head(enc(x)) - y) ** 2)
        return loss, tape.gradient(loss, enc.trainable_variables + head.trainable_variables)

    @tf.function
    def train_step(x: Any, y: Any) -> Any:
        loss, grads = inner(x, y)
        pairs = zip(grads, enc.trainable_variables + head.trainable_variables)
        optimizer.apply_gradients([(g, v) for g, v in pairs if g is not None])
        return loss

    x, y = tf.random.normal((4, 2)), tf.random.normal((4, 1))
    train_step(x, y)  # inner is traced and cached: its Python code does not run again
    state = [*enc.variables, *head.variables, *optimizer.variables]
    truth = tape_truth(lambda: train_step(x, y), state)
    report = flowcheck.analyze(train_step, x, y)
    assert_sites_match(report, truth)


def test_a_forward_pass_made_before_the_tape_opens_is_cut_by_the_tape_at_its_line() -> None:
    keras.utils.set_random_seed(0)
    encoder, head = keras.layers.Dense(4, name="encoder"), keras.layers.Dense(1, name="head")
    optimizer = keras.optimizers.SGD(0.1)
    x, y = tf.random.normal((4, 3)), tf.random.normal((4, 1))

    @tf.function
    def train_step(x: Any, y: Any) -> Any:
        features = encoder(x)  # before the tape
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((head(features) - y) ** 2)
        variables = encoder.trainable_variables + head.trainable_variables
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return loss

    train_step(x, y)
    truth = tape_truth(lambda: train_step(x, y), [*encoder.variables, *head.variables, *optimizer.variables])
    report = flowcheck.analyze(train_step, x, y)
    assert_sites_match(report, truth)
    (site,) = report.gradient_sites
    cut = [s for s in site.sources if not s.receives]
    assert cut and all(s.verdict is flowcheck.Verdict.BLOCKED for s in cut)
    lines = {b.source.line for s in cut for b in s.barriers if b.source is not None}
    assert lines == {line_of(train_step, "# before the tape")}
    assert {b.kind for s in cut for b in s.barriers} == {flowcheck.BarrierKind.NOT_RECORDED}


# An FGSM adversarial step: a nested tf.function's tape watches an input tensor; the outer step's
# first call builds Adam's slots, so TensorFlow traces it twice.
FGSM_FILE = '''\
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
        loss = loss_fn(y, model(x)) + loss_fn(y, model(tf.round(x_adv)))
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables))


example_inputs = (tf.ones((4, 6)), tf.constant([0, 1, 2, 0]))
'''


def test_an_fgsm_step_with_a_tensor_source_in_a_nested_function_is_judged_at_both_sites(
    tmp_path: Any, capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from flowcheck.cli.main import main

    path = tmp_path / "fgsm.py"
    path.write_text(FGSM_FILE)
    module: dict[str, Any] = {}
    exec(compile(FGSM_FILE, str(path), "exec"), module)
    x, y = module["example_inputs"]
    state = [*module["model"].variables, *module["opt"].variables]
    truth = tape_truth(lambda: module["train_step"].python_function(x, y), state)
    report = flowcheck.analyze(module["train_step"], x, y)
    assert_sites_match(report, truth)
    assert [s.name for s in report.gradient_sites[0].sources] == ["x"]
    # The CLI's contracts are about variables: the tensor source is no crash (it was VariableNotFoundError).
    assert main(["analyze", f"{path}:train_step", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [[s["tensorflow_none"] for s in site["sources"]] for site in data["gradient_sites"]] == truth


def test_the_cli_reports_a_step_cut_everywhere_as_a_finding(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from flowcheck.cli.main import main

    path = tmp_path / "signature.py"
    path.write_text('''\
import keras
import tensorflow as tf

model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
opt = keras.optimizers.Adam()


@tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32), tf.TensorSpec((None,), tf.int64)])
def train_step(x, y):
    with tf.GradientTape() as tape:
        pred = tf.cast(tf.argmax(model(x), axis=1), tf.float32)  # cut
        loss = tf.reduce_mean(tf.square(pred - tf.cast(y, tf.float32)))
    grads = tape.gradient(loss, model.trainable_variables)
    opt.apply_gradients(zip(grads, model.trainable_variables))
''')
    module: dict[str, Any] = {}
    exec(compile(path.read_text(), str(path), "exec"), module)
    x, y = tf.ones((2, 4)), tf.zeros((2,), tf.int64)
    truth = tape_truth(lambda: module["train_step"].python_function(x, y), module["model"].variables)
    assert truth == [[True, True]]
    # Not "LossError: ... nothing would train" (exit 2): the site, its barriers, exit 1, as `flowcheck run` says.
    assert main(["analyze", str(path), "--json"]) == 1
    (site,) = json.loads(capsys.readouterr().out)["gradient_sites"]
    assert [s["tensorflow_none"] for s in site["sources"]] == truth[0]
    assert {b["source"]["line"] for s in site["sources"] for b in s["barriers"]} == {line_of(str(path), "# cut")}


def test_tf_module_variables_with_repeated_names_are_told_apart_by_their_path() -> None:
    class Linear(tf.Module):
        def __init__(self, n_in: int, n_out: int, name: str) -> None:
            super().__init__(name=name)
            self.w = tf.Variable(tf.ones((n_in, n_out)), name="w")
            self.b = tf.Variable(tf.zeros((n_out,)), name="b")

        def __call__(self, x: Any) -> Any:
            return x @ self.w + self.b

    class MLP(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="mlp")
            self.l1, self.l2 = Linear(3, 4, "l1"), Linear(4, 1, "l2")
            self.temperature = tf.Variable(2.0, name="temperature")

        def __call__(self, x: Any) -> Any:
            return self.l2(tf.nn.relu(self.l1(x))) * tf.round(self.temperature)

    model = MLP()

    @tf.function
    def step(x: Any) -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(x))
        for g, v in zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables):
            if g is not None:
                v.assign_sub(0.1 * g)

    x = tf.ones((2, 3))
    report = flowcheck.analyze(step, x)
    assert_sites_match(report, tape_truth(lambda: step.python_function(x), model.variables))
    names = [s.name for s in report.gradient_sites[0].sources]
    paths = {id(v): "/".join(["mlp", *map(str, p)]) for p, v in model._flatten(  # noqa: SLF001
        predicate=lambda v: isinstance(v, tf.Variable), with_path=True)}
    expected = [paths[id(v)] if v.name in ("w:0", "b:0") else v.name[:-2] for v in model.trainable_variables]
    assert names == expected and len(set(names)) == len(names)


@pytest.mark.parametrize("returns", [True, False], ids=["returns its loss", "returns nothing"])
def test_a_plain_step_that_cannot_be_traced_is_judged_at_its_own_gradient_call(returns: bool) -> None:
    keras.utils.set_random_seed(21)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(1, name="b")])
    optimizer = keras.optimizers.Adam(0.1)

    def step(x: Any, y: Any) -> Any:  # `.numpy()` in the middle: no graph can be traced
        with tf.GradientTape() as tape:
            h = tf.constant(model.layers[0](x).numpy())
            loss = tf.reduce_mean(tf.square(model.layers[1](h) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])
        return loss if returns else None

    x, y = np.ones((4, 3), "float32"), np.zeros((4, 1), "float32")
    state = [*model.variables, *optimizer.variables]
    saved = snapshot(state)
    report = flowcheck.analyze(step, x, y)  # not the function's output judged by flowcheck's own tape
    assert not optimizer.built and same(state, saved)  # the Adam slots the run built are the user's to build
    truth = tape_truth(lambda: step(x, y), state)
    optimizer = keras.optimizers.Adam(0.1)  # the truth's run built the other one
    assert_sites_match(report, truth)
    assert [r.name for r in report.variables] == [v.path for v in model.trainable_variables]
    check = report.verify()
    assert check.agrees and "the step's own Adam" in check.optimizer
    assert same(state, saved) and not optimizer.built


def test_verify_restores_an_optimizer_the_step_reaches_only_through_a_helper() -> None:
    keras.utils.set_random_seed(22)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    optimizer = keras.optimizers.Adam(0.01)

    def apply(grads: Any) -> None:  # the step names only this helper, not the optimizer
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    @tf.function
    def step(x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        apply(tape.gradient(loss, model.trainable_variables))
        return loss

    x, y = np.ones((4, 3), "float32"), np.zeros((4, 1), "float32")
    state = [*model.variables, *optimizer.variables]
    saved = snapshot(state)
    report = flowcheck.analyze(step, x, y)
    check = report.verify()
    assert check.agrees and check.optimizer == "the step's own Adam(learning_rate=0.01)"
    assert same(state, saved) and not optimizer.built and int(optimizer.iterations.numpy()) == 0
    assert_sites_match(report, tape_truth(lambda: step.python_function(x, y), state))


def _traced_none(step_body: Any) -> list[bool]:
    """TensorFlow's own answer inside a trace: per source, is the gradient None (a fresh tf.function)."""
    answers: list[bool] = []

    @tf.function
    def probe() -> None:
        answers.extend(g is None for g in step_body())

    probe.get_concrete_function()
    return answers


@tf.function
def _overridden_round_in_a_function(x: tf.Tensor) -> tf.Tensor:
    with tf.compat.v1.get_default_graph().gradient_override_map({"Round": "Identity"}):
        return tf.round(x)


@pytest.mark.parametrize("call", ["tape", "tf_gradients", "tape_around_a_nested_function", "tape_around_a_cond"])
def test_gradient_override_map_reaches_tf_gradients_in_a_step_but_not_its_tape(call: str) -> None:
    """A straight-through ``Round`` by ``gradient_override_map``: a tape in the step looks up ``Round`` itself.

    Not so in a nested function or a cond branch the tape recorded: their bodies are differentiated
    by ``tf.gradients``, which honours the override.
    """
    rounded, scale = tf.Variable([0.4, 1.6], name="rounded"), tf.Variable([1.0, 2.0], name="scale")
    optimizer = keras.optimizers.SGD(0.1)

    def overridden(x: tf.Tensor) -> tf.Tensor:
        with tf.compat.v1.get_default_graph().gradient_override_map({"Round": "Identity"}):
            return tf.round(x)  # overridden round

    def gradients() -> list[Any]:
        with tf.GradientTape() as tape:
            if call == "tape_around_a_nested_function":
                r = _overridden_round_in_a_function(rounded)
            elif call == "tape_around_a_cond":
                r = tf.cond(tf.reduce_sum(scale) > -100.0, lambda: overridden(rounded), lambda: rounded * 2.0)
            else:
                r = overridden(rounded)
            loss = tf.reduce_sum(r * scale)
        if call == "tape":
            return tape.gradient(loss, [rounded, scale])
        return tf.gradients(loss, [rounded, scale])

    @tf.function
    def step() -> None:
        grads = gradients()
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, [rounded, scale]) if g is not None])

    truth = _traced_none(gradients)
    report = flowcheck.analyze(step)
    assert_sites_match(report, [truth])
    if call == "tape":
        (barrier,) = report.gradient_sites[0].sources[0].barriers
        assert barrier.op_type == "Round" and barrier.source.line == line_of(HERE, "# overridden round")
        assert barrier.detail.startswith("a GradientTape in the function ignores gradient_override_map ('Identity')")


@pytest.mark.parametrize("passed", ["keyword", "positional"])
def test_tf_gradients_stop_gradients_cut_the_listed_tensors(passed: str) -> None:
    """``tf.gradients(..., stop_gradients=[h])`` in a step: ``h`` is a constant for that call alone."""
    kernel, scale = tf.Variable([0.4, 1.6], name="kernel"), tf.Variable([1.0, 2.0], name="scale")
    optimizer = keras.optimizers.SGD(0.1)

    def gradients() -> list[Any]:
        hidden = kernel * 2.0  # listed in stop_gradients
        loss = tf.reduce_sum(hidden * scale) + tf.reduce_sum(scale)
        if passed == "keyword":
            return tf.gradients(loss, [kernel, scale], stop_gradients=[hidden])
        return tf.gradients(loss, [kernel, scale], None, "gradients", False, None, [hidden])

    @tf.function
    def step() -> None:
        grads = gradients()
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, [kernel, scale]) if g is not None])

    truth = _traced_none(gradients)
    report = flowcheck.analyze(step)
    assert_sites_match(report, [truth])
    for source in report.gradient_sites[0].cut:
        (barrier,) = source.barriers
        assert barrier.source.line == line_of(HERE, "# listed in stop_gradients")


def test_a_variable_tensorflow_named_variable_is_called_as_the_gradient_call_writes_it() -> None:
    """Style transfer optimizes ``image = tf.Variable(content)``: TensorFlow names it ``Variable``;
    the site says ``image``, as the call writes it. A variable given a name keeps its own."""
    image = tf.Variable(tf.random.uniform((1, 8, 8, 3)))
    offset = tf.Variable(0.5)  # default-named too, and the loss never reads it
    scale = tf.Variable(2.0, name="style_weight")
    frozen = keras.layers.Conv2D(2, 3)
    frozen.build((None, 8, 8, 3))
    frozen.trainable = False
    optimizer = keras.optimizers.Adam(0.02)

    @tf.function
    def train_step() -> None:
        with tf.GradientTape() as tape:
            loss = scale * tf.reduce_mean(frozen(image) ** 2) + tf.image.total_variation(image)[0]
        grads = tape.gradient(loss, [image, offset, scale])
        optimizer.apply_gradients((g, v) for g, v in zip(grads, [image, offset, scale]) if g is not None)

    state = [image, offset, scale, *frozen.variables]
    before = snapshot(state)
    report = flowcheck.analyze(train_step)
    (site,) = report.gradient_sites
    assert [s.name for s in site.sources] == ["image", "offset", "style_weight"]
    assert same(state, before)
    assert_sites_match(report, tape_truth(train_step.python_function, state))


def test_a_tf_module_variable_tensorflow_named_variable_is_told_by_its_path() -> None:
    """``self.unused = tf.Variable(1.0)`` in a ``tf.Module``: TensorFlow names it ``Variable``; the
    site names it by the attributes that lead to it, ``net/unused``, as it does repeated names."""

    class Net(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="net")
            self.w = tf.Variable(tf.ones((3, 2)), name="w")
            self.unused = tf.Variable(1.0)
            self.step = tf.Variable(0, trainable=False, name="step")

        @tf.function
        def __call__(self, x: Any) -> Any:
            return tf.nn.relu(x @ self.w)

    model = Net()
    opt = keras.optimizers.SGD(0.1)

    @tf.function
    def train_step(x: Any) -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(x))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients((g, v) for g, v in zip(grads, model.trainable_variables) if g is not None)
        model.step.assign_add(1)

    x = tf.ones((2, 3))
    report = flowcheck.analyze(train_step, x)
    assert_sites_match(report, tape_truth(lambda: train_step.python_function(x), model.variables))
    paths = {id(v): "/".join(["net", *map(str, p)]) for p, v in model._flatten(  # noqa: SLF001
        predicate=lambda v: isinstance(v, tf.Variable), with_path=True)}
    expected = [paths[id(v)] if v.name == "Variable:0" else v.name[:-2] for v in model.trainable_variables]
    assert [s.name for s in report.gradient_sites[0].sources] == expected
    assert "net/unused" in expected


def test_a_tensor_source_the_tape_never_watched_gets_none_as_tensorflow_says() -> None:
    """PGD without ``tape.watch(x)``: the tape records nothing that makes ``x`` (an argument, a
    tensor made from one, a tensor made before the block or by ``tf.stop_gradient``), so TensorFlow
    gives None for it though it feeds the loss; flowcheck said it received one."""
    w = tf.Variable(2.0)
    frozen = keras.layers.Dense(3)
    frozen.build((None, 4))
    frozen.trainable = False

    @tf.function
    def step(x: Any) -> None:
        with tf.GradientTape() as tape:  # no tape.watch(x)
            loss = tf.reduce_sum(frozen(x)) * w
        tape.gradient(loss, x)
        with tf.GradientTape() as tape:
            h = x * 3.0
            loss = tf.reduce_sum(w * h)
        tape.gradient(loss, h)
        made_before = x * 2.0
        with tf.GradientTape() as tape:
            stopped = tf.stop_gradient(w * 2.0)
            rounded = tf.round(w)  # recorded: its gradient is None, but it is on the tape
            loss = tf.reduce_sum(w * made_before) * stopped * rounded
        grads = tape.gradient(loss, [made_before, stopped, rounded, w])
        with tf.GradientTape() as tape:
            tape.watch(x)
            h = x * 3.0
            loss = tf.reduce_sum(w * h)
        tape.gradient(loss, [x, h])
        with tf.GradientTape() as tape:
            tape.watch(made_before)  # watched, though made before the block: what it makes is on the tape
            h = made_before * 3.0
            loss = tf.reduce_sum(w * h)
        tape.gradient(loss, h)
        w.assign_sub(0.1 * grads[3])

    x = tf.ones((2, 4))
    state = [w, *frozen.variables]
    report = flowcheck.analyze(step, x)
    truth = tape_truth(lambda: step.python_function(x), state)
    # What the test is about, before comparing.
    assert truth[:3] == [[True], [True], [True, True, False, False]] and not any(truth[3] + truth[4])
    assert_sites_match(report, truth)
    assert "x: the tape was not asked to watch it" in report.gradient_sites[0].notes[0]


def test_a_training_loop_over_a_dataset_inside_a_tf_function_is_judged_at_its_site() -> None:
    # TensorFlow's guide to tf.function trains a whole epoch in one: AutoGraph makes the loop a
    # ScanDataset whose per-element function holds the tape and the optimizer's update.
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    gate = tf.Variable(0.7, name="gate")
    optimizer = keras.optimizers.Adam(1e-3)
    x, y = _data(16)
    dataset = tf.data.Dataset.from_tensor_slices((x, y.astype("float32")[:, None])).batch(8)

    @tf.function
    def train(model: Any, dataset: Any, optimizer: Any) -> Any:
        total = tf.constant(0.0)
        for xb, yb in dataset:
            with tf.GradientTape() as tape:
                prediction = model(xb, training=True) * tf.round(gate)  # round cut
                loss = tf.reduce_mean((prediction - yb) ** 2)
            variables = [*model.trainable_variables, gate]
            gradients = tape.gradient(loss, variables)
            optimizer.apply_gradients([(g, v) for g, v in zip(gradients, variables) if g is not None])
            total += loss
        return total

    state = [*model.variables, gate, *optimizer.variables]
    truth = tape_truth(lambda: train(model, dataset, optimizer), state)
    assert len(truth) == 2 and truth[0] == truth[1]  # one call per batch, eagerly
    saved = snapshot(state)
    report = flowcheck.analyze(train, model, dataset, optimizer)
    assert_sites_match(report, truth[:1])
    [site] = report.gradient_sites
    [cut] = [s for s in site.sources if not s.receives]
    assert [b.source.line for b in cut.barriers if b.source] == [line_of(HERE, "# round cut")]
    assert report.verify().agrees
    assert same(state, saved) and int(optimizer.iterations) == 0


def test_a_dataset_loop_inside_the_tape_cuts_what_flows_through_it_as_traced() -> None:
    # Traced, the loop is a ScanDataset and a ReduceDataset, which no gradient passes; eagerly it is
    # Python's loop, which records every step: a tf.function is judged as traced.
    w, v = tf.Variable(2.0, name="ds_w"), tf.Variable(3.0, name="ds_v")
    dataset = tf.data.Dataset.range(3).map(lambda i: tf.cast(i, tf.float32))
    optimizer = keras.optimizers.SGD(0.1)

    def body() -> Any:
        with tf.GradientTape() as tape:
            total = v * 1.0
            for x in dataset:
                total += x * w  # loop
        return tape.gradient(total, [w, v])

    @tf.function
    def step() -> None:
        grads = body()
        optimizer.apply_gradients([(tf.zeros_like(b) if a is None else a, b) for a, b in zip(grads, [w, v])])

    truth = [[g is None for g in tf.function(body)()]]
    report = flowcheck.analyze(step)
    assert_sites_match(report, truth)
    [site] = report.gradient_sites
    for source in site.sources:  # each cut named once, at the loop's line
        assert [b.source.line for b in source.barriers if b.source] == [line_of(HERE, "for x in dataset:")]
