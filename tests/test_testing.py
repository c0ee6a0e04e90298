"""Gradient contracts: assert_gradient_flow and assert_all_trainable_receive.

The truth is always the tape's, computed in the test: a variable receives a gradient exactly when
``tape.gradient`` differentiating the loss *inside* the step gives something other than None.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import flowcheck
from flowcheck.testing import GradientFlowAssertionError, _verify
from truth import line_of, watched_truth

HERE = os.path.basename(__file__)
bce = keras.losses.BinaryCrossentropy(from_logits=True)


def _name(v: Any) -> str:
    return str(getattr(v, "path", None) or v.name.split(":")[0])


def tape_receives(fn: Callable[..., Any], args: Sequence[Any], variables: Sequence[Any], loss: str | None = None) -> dict[str, bool]:
    """Per variable, whether the tape gives a gradient when ``loss`` alone is differentiated inside the step.

    ``fn`` is a Python function (a tf.function's ``python_function``): called inside the traced
    step its ops are inlined, so the tape sees that one loss, not a call returning all of them.
    """
    found: dict[str, bool] = {}

    @tf.function
    def step() -> Any:
        with tf.GradientTape() as tape:
            out = fn(*args)
            target = out[loss] if loss is not None else out
        grads = tape.gradient(target, list(variables))
        found.update({_name(v): g is not None for v, g in zip(variables, grads)})
        return target

    step()
    return found


def gan() -> tuple[keras.Model, keras.Model, tf.Tensor, tf.Tensor]:
    keras.utils.set_random_seed(0)
    generator = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)], name="generator"
    )
    discriminator = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)], name="discriminator"
    )
    return generator, discriminator, tf.random.normal((6, 2)), tf.random.normal((6, 4))


# --- a GAN generator step -------------------------------------------------------------------


def test_gan_generator_step_with_stop_gradient_fails_naming_each_variable_and_the_line() -> None:
    generator, discriminator, _, z = gan()

    @tf.function
    def generator_step(z: tf.Tensor) -> tf.Tensor:
        fake = tf.stop_gradient(generator(z, training=True))  # the mistake: the generator never learns
        logits = discriminator(fake, training=True)
        return bce(tf.ones_like(logits), logits)

    truth = tape_receives(generator_step.python_function, [z], generator.trainable_variables)
    cut = sorted(n for n, receives in truth.items() if not receives)
    assert cut  # the tape itself says the generator is cut off

    with pytest.raises(GradientFlowAssertionError) as info:
        flowcheck.assert_gradient_flow(generator_step, z, receives="generator/*")
    message = str(info.value)
    assert message.startswith("gradient flow of generator_step breaks the contract")
    assert f"{len(cut)} variables differ" in message
    assert "expected receives, found blocked:" in message
    assert sorted(line.strip() for line in message.splitlines() if line.strip().startswith("generator/")) == cut
    barrier = f"{HERE}:{line_of(generator_step, 'tf.stop_gradient(generator(')}: StopGradient"
    assert barrier in message
    assert "fake = tf.stop_gradient(generator(z, training=True))" in message
    assert info.value.report.target == "generator_step"


def test_gan_generator_step_without_stop_gradient_passes() -> None:
    generator, discriminator, _, z = gan()

    @tf.function
    def generator_step(z: tf.Tensor) -> tf.Tensor:
        logits = discriminator(generator(z, training=True), training=True)
        return bce(tf.ones_like(logits), logits)

    truth = tape_receives(generator_step.python_function, [z], generator.trainable_variables)
    assert all(truth.values())
    report = flowcheck.assert_gradient_flow(generator_step, z, receives=generator.trainable_variables)
    assert report.verification is not None and report.verification.agrees  # verify=True ran a real step


# --- a frozen backbone whose head got detached -------------------------------------------------


class Classifier(keras.Model):
    """A frozen feature extractor and a trainable head."""

    def __init__(self, detach_head: bool) -> None:
        super().__init__(name="classifier")
        self.detach_head = detach_head
        self.backbone = keras.Sequential(
            [keras.layers.Dense(8, activation="relu"), keras.layers.BatchNormalization()], name="backbone"
        )
        self.backbone.trainable = False
        self.head = keras.layers.Dense(3, name="head")

    def call(self, x: Any, training: bool = False) -> Any:
        features = self.backbone(x, training=False)
        logits = self.head(features)
        if self.detach_head:
            # The mistake: meant to keep gradients out of the frozen backbone, put one line too late.
            logits = tf.stop_gradient(logits)
        return logits


def classifier(detach_head: bool) -> tuple[Classifier, np.ndarray, np.ndarray]:
    keras.utils.set_random_seed(1)
    model = Classifier(detach_head)
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).random((8, 4)).astype("float32")
    y = np.random.default_rng(1).random((8, 3)).astype("float32")
    model(x)
    return model, x, y


def model_tape_receives(model: keras.Model, x: Any, y: Any) -> dict[str, bool]:
    """The tape's answer for the model's training step, run eagerly (every op inlined)."""
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True), training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    return {_name(v): g is not None for v, g in zip(model.trainable_variables, grads)}


def test_frozen_backbone_with_detached_head_fails_on_exactly_the_head() -> None:
    model, x, y = classifier(detach_head=True)
    truth = model_tape_receives(model, x, y)
    cut = sorted(n for n, receives in truth.items() if not receives)
    assert cut == sorted(_name(v) for v in model.head.trainable_variables)

    with pytest.raises(GradientFlowAssertionError) as info:
        flowcheck.assert_all_trainable_receive(model, x, y)
    message = str(info.value)
    listed = sorted(line.strip() for line in message.splitlines() if line.strip().startswith("classifier/"))
    assert listed == cut  # the frozen backbone's weights are not trainable: not part of the contract
    assert f"{HERE}:{line_of(Classifier.call, 'logits = tf.stop_gradient(logits)')}: StopGradient" in message
    assert "logits = tf.stop_gradient(logits)" in message


def test_frozen_backbone_with_attached_head_passes() -> None:
    model, x, y = classifier(detach_head=False)
    assert all(model_tape_receives(model, x, y).values())
    report = flowcheck.assert_all_trainable_receive(model, x, y)
    assert {r.name for r in report.variables if r.trainable} == set(model_tape_receives(model, x, y))


def test_a_fully_frozen_model_does_not_pass_vacuously() -> None:
    model, x, y = classifier(detach_head=False)
    model.trainable = False
    model.compile(optimizer="adam", loss="mse")
    assert model.trainable_variables == []
    with pytest.raises(GradientFlowAssertionError, match="receives='all-trainable': .* has no trainable variable"):
        flowcheck.assert_all_trainable_receive(model, x, y, verify=False)


def test_a_backbone_unfrozen_after_a_fit_without_compile_fails_as_fit_will_not_train_it() -> None:
    keras.utils.set_random_seed(1)
    model = Classifier(detach_head=False)
    model.backbone.trainable = True  # built trainable (as a pretrained backbone is), then frozen
    _, x, y = classifier(detach_head=False)
    model(x)
    model.backbone.trainable = False
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=1, verbose=0)
    model.backbone.trainable = True  # fine-tuning, but no compile(): fit keeps its step and optimizer
    before = [w.numpy().copy() for w in model.trainable_weights]
    names = [_name(w) for w in model.trainable_weights]
    with tf.GradientTape(watch_accessed_variables=False) as tape:  # watching each weight, as the truth does
        tape.watch([w.value for w in model.trainable_weights])
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True), training=True)
    grads = tape.gradient(loss, [w.value for w in model.trainable_weights])
    truth = {n: g is not None for n, g in zip(names, grads)}
    model.fit(x, y, epochs=1, verbose=0)
    # The truth: trainable weights a tape gives a gradient that a real fit leaves as they were.
    kept = sorted(n for n, b, w in zip(names, before, model.trainable_weights) if np.array_equal(b, w.numpy()) and truth[n])
    assert kept
    with pytest.raises(GradientFlowAssertionError, match=f"fit will not train {len(kept)} weights of model 'classifier'") as info:
        flowcheck.assert_all_trainable_receive(model, x, y)
    assert sorted(line.strip() for line in str(info.value).splitlines() if line.startswith("    ")) == kept
    with pytest.raises(flowcheck.VerificationError, match=r"Unknown variable classifier/backbone/\S+: the optimizer was built"):
        flowcheck.analyze(model, x, y).verify()  # one line naming the weight, not Keras's repr of its values


# --- several losses ----------------------------------------------------------------------------


def gan_losses_fn(generator: keras.Model, discriminator: keras.Model) -> Any:
    @tf.function
    def gan_losses(real: tf.Tensor, z: tf.Tensor) -> dict[str, tf.Tensor]:
        fake = generator(z, training=True)
        real_logits = discriminator(real, training=True)
        fake_logits = discriminator(tf.stop_gradient(fake), training=True)  # D's step must not train G
        d_loss = bce(tf.ones_like(real_logits), real_logits) + bce(tf.zeros_like(fake_logits), fake_logits)
        g_logits = discriminator(fake, training=True)
        return {"d_loss": d_loss, "g_loss": bce(tf.ones_like(g_logits), g_logits)}

    return gan_losses


@pytest.mark.parametrize("loss", ["d_loss", "g_loss"])
def test_per_loss_contracts_match_the_tape_for_that_loss_alone(loss: str) -> None:
    generator, discriminator, real, z = gan()
    gan_losses = gan_losses_fn(generator, discriminator)
    variables = generator.trainable_variables + discriminator.trainable_variables
    truth = tape_receives(gan_losses.python_function, [real, z], variables, loss=loss)
    receiving = [n for n, r in truth.items() if r]
    cut = [n for n, r in truth.items() if not r]

    report = flowcheck.assert_gradient_flow(gan_losses, real, z, loss=loss, receives=receiving)  # verify=True
    # The real step assert_gradient_flow ran for this loss alone: None exactly where the tape says.
    check = _verify(report, loss)
    assert check.agrees and check.loss == pytest.approx(float(gan_losses(real, z)[loss]), rel=1e-5)
    assert {c.name for c in check.variables if c.gradient is not flowcheck.GradientState.NONE} == set(receiving)
    if cut:
        # Expecting the cut ones to receive fails on exactly them, with the per-loss explanation.
        with pytest.raises(GradientFlowAssertionError) as info:
            flowcheck.assert_gradient_flow(report, loss=loss, receives=cut, verify=False)
        message = str(info.value)
        assert message.startswith(f"gradient flow of loss {loss!r} of gan_losses breaks the contract")
        assert sorted(line.strip() for line in message.splitlines() if line.strip() in truth) == sorted(cut)
        assert "zeros, not None" in message
        assert f"{HERE}:{line_of(gan_losses, 'discriminator(tf.stop_gradient(fake)')}: StopGradient" in message


def test_a_tape_around_the_whole_call_gives_zeros_and_the_report_says_so() -> None:
    generator, discriminator, real, z = gan()
    gan_losses = gan_losses_fn(generator, discriminator)
    with tf.GradientTape() as tape:
        out = gan_losses(real, z)
    outside = tape.gradient(out["d_loss"], generator.trainable_variables)
    inside = tape_receives(gan_losses.python_function, [real, z], generator.trainable_variables, loss="d_loss")
    # TensorFlow differentiates the call for both outputs at once: zeros where d_loss alone gives None.
    assert all(g is not None and not np.any(g.numpy()) for g in outside)
    assert not any(inside.values())
    report = flowcheck.analyze(gan_losses, real, z)
    assert all(not report.receives_gradient(v, loss="d_loss") for v in generator.trainable_variables)
    assert any("zeros, not None" in note and "d_loss" in note for note in report.notes)


def test_the_total_is_checked_when_no_loss_is_named() -> None:
    generator, discriminator, real, z = gan()
    gan_losses = gan_losses_fn(generator, discriminator)
    variables = generator.trainable_variables + discriminator.trainable_variables
    per_loss = [tape_receives(gan_losses.python_function, [real, z], variables, loss=k) for k in ("d_loss", "g_loss")]
    total = [n for n in per_loss[0] if per_loss[0][n] or per_loss[1][n]]
    flowcheck.assert_gradient_flow(gan_losses, real, z, receives=total)


def test_a_loss_name_that_does_not_exist_fails() -> None:
    generator, discriminator, real, z = gan()
    with pytest.raises(GradientFlowAssertionError, match="no output named 'D_loss'; its losses are: d_loss, g_loss"):
        flowcheck.assert_gradient_flow(gan_losses_fn(generator, discriminator), real, z, loss="D_loss", receives="*")


# --- expectations --------------------------------------------------------------------------------


def dqn() -> tuple[Any, tf.Variable, tf.Variable, tf.Variable, tf.Tensor]:
    online = tf.Variable(tf.ones((3, 2)), name="online/kernel")
    target = tf.Variable(tf.fill((3, 2), 0.5), name="target/kernel")  # lags behind the online network
    stranger = tf.Variable(1.0, name="stranger")

    @tf.function
    def td_loss(s: tf.Tensor) -> tf.Tensor:
        q = tf.matmul(s, online)
        bootstrap = tf.stop_gradient(tf.reduce_max(tf.matmul(s, target), axis=1, keepdims=True))
        return tf.reduce_mean(tf.square(q - bootstrap))

    return td_loss, online, target, stranger, tf.ones((4, 3))


def test_names_objects_globs_and_the_most_specific_expectation() -> None:
    td_loss, online, target, stranger, s = dqn()
    truth = tape_receives(td_loss.python_function, [s], [online, target, stranger])
    assert truth == {"online/kernel": True, "target/kernel": False, "stranger": False}
    # "all-trainable" is overridden by the pattern, which is overridden by the exact name.
    flowcheck.assert_gradient_flow(td_loss, s, receives=["all-trainable", "online/kernel"], blocked="target/*",
                                   unused=stranger)
    flowcheck.assert_gradient_flow(td_loss, s, receives=online, blocked=[target], verify=False)


def test_a_pattern_or_name_matching_nothing_fails_loudly_with_a_hint() -> None:
    td_loss, online, *_, s = dqn()
    with pytest.raises(GradientFlowAssertionError) as info:
        flowcheck.assert_gradient_flow(td_loss, s, receives=[online, "onlin/*", "kernel"], verify=False)
    message = str(info.value)
    assert "receives='onlin/*' matches no variable; the variables are: online/kernel, target/kernel" in message
    assert "receives='kernel' matches no variable (did you mean '*/kernel'?)" in message


def test_contradicting_expectations_are_a_usage_error() -> None:
    td_loss, online, *_, s = dqn()
    with pytest.raises(flowcheck.UsageError, match="online/kernel is expected both to be receives .* and blocked"):
        flowcheck.assert_gradient_flow(td_loss, s, receives="online/kernel", blocked=online)
    with pytest.raises(flowcheck.UsageError, match="at least one of receives="):
        flowcheck.assert_gradient_flow(td_loss, s)
    with pytest.raises(flowcheck.UsageError, match="takes variables, names or glob patterns, not int"):
        flowcheck.assert_gradient_flow(td_loss, s, receives=[1])


def test_an_analysis_error_in_a_test_shows_no_flowcheck_frames() -> None:
    # pytest printed the source of flowcheck's tracing function under a user's TraceError.
    import traceback

    td_loss, *_ = dqn()
    with pytest.raises(flowcheck.TraceError) as info:
        flowcheck.assert_gradient_flow(td_loss, tf.constant([[1]]), receives="*")  # int32 states
    files = {os.path.basename(f.filename) for f in traceback.extract_tb(info.value.__traceback__) if "flowcheck" in f.filename}
    assert files == {"testing.py"}  # only assert_gradient_flow's frames, which pytest hides (__tracebackhide__)


def test_a_misspelt_contract_keyword_is_named() -> None:
    # recieves= went to the target's **kwargs, and the error said only that receives= was missing.
    td_loss, _, *_, s = dqn()
    with pytest.raises(flowcheck.UsageError) as info:
        flowcheck.assert_gradient_flow(td_loss, s, recieves="online/*")
    assert str(info.value) == (
        "assert_gradient_flow needs at least one of receives=, blocked= or unused=; "
        "got recieves= (an input of fn): did you mean receives=?"
    )


def test_expected_blocked_but_receives_says_so() -> None:
    td_loss, online, target, _, s = dqn()
    with pytest.raises(GradientFlowAssertionError) as info:
        flowcheck.assert_gradient_flow(td_loss, s, blocked="*/kernel", verify=False)
    message = str(info.value)
    assert "1 variable differs" in message
    assert "expected blocked, found receives:\n    online/kernel\n    a gradient reaches them from the loss" in message


def test_a_real_step_that_disagrees_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowcheck.verify.loss import run_step

    td_loss, online, target, _, s = dqn()

    def misprediction(self: flowcheck.Report, optimizer: Any = None, learning_rate: Any = None) -> Any:
        # A real step checked against the opposite of every prediction: what a flowcheck bug would look like.
        self.verification = run_step(self._traced, [not r.receives for r in self.variables])
        return self.verification

    monkeypatch.setattr(flowcheck.Report, "verify", misprediction)
    with pytest.raises(GradientFlowAssertionError) as info:
        flowcheck.assert_gradient_flow(td_loss, s, receives=online)
    message = str(info.value)
    assert "disagrees with flowcheck's prediction" in message
    assert "online/kernel: predicted no gradient, the tape gave nonzero" in message
    assert "target/kernel: predicted a gradient, the tape gave none" in message


def test_a_real_step_that_cannot_run_raises() -> None:
    v = tf.Variable([1.0, 2.0], name="v")

    @tf.function
    def loss() -> tf.Tensor:
        return tf.reduce_sum(tf.debugging.check_numerics(tf.math.log(v - 10.0), "log of a negative number"))

    flowcheck.assert_gradient_flow(loss, receives=v, verify=False)
    with pytest.raises(flowcheck.VerificationError, match="the real step failed"):
        flowcheck.assert_gradient_flow(loss, receives=v)
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])


# --- users' own suites: a frozen backbone, a straight-through estimator, usage errors -------


def test_a_frozen_backbone_expected_blocked_is_told_that_trainable_false_cuts_no_gradient() -> None:
    model, x, _ = classifier(detach_head=False)
    frozen = model.backbone.weights  # kernels, BatchNormalization's gamma/beta and moving statistics

    @tf.function
    def transfer_loss(x: Any) -> Any:
        return tf.reduce_mean(model(x) ** 2)

    truth = dict(zip((_name(v) for v in frozen), watched_truth(transfer_loss.python_function, frozen, x)))
    assert all(truth.values())  # the tape watching them gives each a gradient
    with pytest.raises(GradientFlowAssertionError) as info:
        flowcheck.assert_gradient_flow(transfer_loss, x, blocked="classifier/backbone/*", verify=False)
    message = str(info.value)
    assert f"{len(frozen)} variables differ" in message and "expected blocked, found receives:" in message
    assert sorted(line.strip() for line in message.splitlines() if "/backbone/" in line) == sorted(truth)
    assert ("(all of them not trainable: the optimizer leaves them alone, but trainable=False cuts no gradient, "
            "the tape still gives them one)") in message


def test_a_straight_through_estimator_trains_and_a_bare_round_does_not() -> None:
    w = tf.Variable(tf.random.normal((3, 2), seed=1), name="codebook")
    x = tf.random.normal((4, 3), seed=2)

    def straight_through(x: Any) -> Any:  # a plain function: judged as called, eagerly
        z = x @ w
        return tf.reduce_sum((z + tf.stop_gradient(tf.round(z) - z)) ** 2)

    def rounded(x: Any) -> Any:
        return tf.reduce_sum(tf.round(x @ w) ** 2)

    assert tape_receives(straight_through, [x], [w]) == {"codebook": True}
    flowcheck.assert_gradient_flow(straight_through, x, receives=w)
    assert tape_receives(rounded, [x], [w]) == {"codebook": False}
    with pytest.raises(GradientFlowAssertionError) as info:
        flowcheck.assert_gradient_flow(rounded, x, receives=w)
    assert f"{HERE}:{line_of(rounded, 'tf.round(')}: Round 'Round'" in str(info.value)


def test_arguments_of_the_wrong_kind_are_one_usage_error() -> None:
    td_loss, online, *_, s = dqn()
    model, x, y = classifier(detach_head=False)
    for kwargs, message in [
        ({"receives": model.head}, "receives= takes variables, names or glob patterns, not Dense 'head': for all its "
                                   "weights pass receives=head.weights or its name's pattern"),
        ({"blocked": {"online/kernel": online}}, "blocked= takes a variable, a name, a glob pattern or an iterable of "
                                                 "those, not dict"),
        ({"receives": "*", "verify": "no"}, "verify must be True or False, not 'no'"),  # "no" verified
    ]:
        with pytest.raises(flowcheck.UsageError) as info:
            flowcheck.assert_gradient_flow(td_loss, s, **kwargs)
        assert str(info.value) == message
    # Inputs that do not fit: said before tracing (it was a TraceError chained to two TypeErrors).
    with pytest.raises(flowcheck.UsageError) as missing:
        flowcheck.assert_gradient_flow(td_loss, receives="*")
    assert str(missing.value) == "td_loss(s) cannot take the 0 positional inputs: missing a required argument: 's'"
    assert missing.value.__cause__ is None and missing.value.__suppress_context__  # one message, no chain
    with pytest.raises(flowcheck.UsageError, match=r"^the Keras model 'classifier' is analyzed on a batch: pass its inputs, \(model, x, y\)$"):
        flowcheck.assert_gradient_flow(model, receives="all-trainable")


@pytest.mark.slow
def test_a_per_loss_contract_on_a_training_step_verifies_the_step_as_it_trains() -> None:
    generator, discriminator, real, z = gan()
    g_opt, d_opt = keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1)

    @tf.function
    def gan_step(real: Any, z: Any) -> Any:
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = generator(z, training=True)
            d_real, d_fake = discriminator(real, training=True), discriminator(tf.stop_gradient(fake), training=True)
            d_loss = bce(tf.ones_like(d_real), d_real) + bce(tf.zeros_like(d_fake), d_fake)
            g_logits = discriminator(fake, training=True)
            g_loss = bce(tf.ones_like(g_logits), g_logits)
        d_opt.apply_gradients(zip(d_tape.gradient(d_loss, discriminator.trainable_variables),
                                  discriminator.trainable_variables))
        g_opt.apply_gradients(zip(g_tape.gradient(g_loss, generator.trainable_variables), generator.trainable_variables))
        return {"d_loss": d_loss, "g_loss": g_loss}

    truth = tape_receives(lambda r, n: _d_loss(generator, discriminator, r, n), [real, z],
                          generator.weights + discriminator.weights)
    before = [w.numpy() for w in generator.weights + discriminator.weights]
    # The step's own run, not a copy returning d_loss alone (which ran the step's updates in a new trace).
    report = flowcheck.assert_gradient_flow(gan_step, real, z, loss="d_loss", receives="discriminator/*",
                                            blocked="generator/*")
    assert {r.name: r.per_loss["d_loss"] is flowcheck.Verdict.RECEIVES for r in report.variables} == truth
    assert report.verification is not None and report.verification.agrees
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, generator.weights + discriminator.weights))
    assert int(d_opt.iterations.numpy()) == int(g_opt.iterations.numpy()) == 0


def _d_loss(generator: keras.Model, discriminator: keras.Model, real: Any, z: Any) -> Any:
    fake = generator(z, training=True)
    d_real, d_fake = discriminator(real, training=True), discriminator(tf.stop_gradient(fake), training=True)
    return bce(tf.ones_like(d_real), d_real) + bce(tf.zeros_like(d_fake), d_fake)


def test_a_decorated_loss_is_bound_by_its_wrappers_own_parameters() -> None:
    import functools

    w = tf.Variable(2.0, name="scaled")

    def with_scale(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)  # names loss(scale, x); the wrapper takes x alone
        def wrapper(*args: Any) -> Any:
            return fn(3.0, *args)

        return wrapper

    @with_scale
    def loss(scale: float, x: Any) -> Any:
        return scale * w * x

    x = tf.constant(1.0)
    assert tape_receives(loss, [x], [w]) == {"scaled": True}
    flowcheck.assert_gradient_flow(loss, x, receives=w)  # was UsageError: 'missing a required argument: x'


def test_an_empty_expectation_fails_instead_of_checking_nothing() -> None:
    td_loss, *_, s = dqn()
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    assert unbuilt.trainable_weights == []
    with pytest.raises(GradientFlowAssertionError) as info:  # it passed, asserting nothing
        flowcheck.assert_gradient_flow(td_loss, s, receives=unbuilt.trainable_weights, verify=False)
    assert "receives= is empty: it names no variable (the weights of a model not built yet?)" in str(info.value)
