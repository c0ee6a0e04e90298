"""The Keras callback: what fit will not train, and why, before the first step.

The truth is the tape's, computed in each test on the model's own training step run eagerly.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import flowcheck
from flowcheck.keras import GradientFlowCheck, GradientFlowWarning
from flowcheck.testing import GradientFlowAssertionError
from truth import line_of

HERE = os.path.basename(__file__)


class Classifier(keras.Model):
    """A frozen feature extractor, a trainable head and, after a refactor, a skip layer."""

    def __init__(self, detach_head: bool = False, use_skip: bool = True, freeze: bool = True) -> None:
        super().__init__(name="classifier")
        self.detach_head = detach_head
        self.use_skip = use_skip
        self.backbone = keras.Sequential(
            [keras.layers.Dense(8, activation="relu"), keras.layers.BatchNormalization()], name="backbone"
        )
        self.backbone.trainable = not freeze
        self.head = keras.layers.Dense(3, name="head")
        self.skip = keras.layers.Dense(3, name="skip")

    def build(self, input_shape: Any) -> None:
        self.backbone.build(input_shape)
        self.head.build((None, 8))
        self.skip.build(input_shape)

    def call(self, x: Any, training: bool = False) -> Any:
        features = self.backbone(x, training=training)
        logits = self.head(features)
        if self.detach_head:
            logits = tf.stop_gradient(logits)  # meant for the backbone's output, put one line too late
        if self.use_skip:
            logits = logits + self.skip(x)
        return logits


def data(n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, 4)).astype("float32"), rng.random((n, 3)).astype("float32")


def compiled(**options: bool) -> Classifier:
    keras.utils.set_random_seed(0)
    model = Classifier(**options)
    model.compile(optimizer="sgd", loss="mse")
    model.build((None, 4))
    return model


def tape_receives(model: keras.Model, x: Any, y: Any) -> dict[str, bool]:
    """For every weight, whether a tape watching it gives it a gradient from the training step's loss."""
    weights = model.weights
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch([w.value for w in weights])
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True), training=True)
    grads = tape.gradient(loss, [w.value for w in weights])
    return {w.path: g is not None for w, g in zip(weights, grads)}


def call_line(text: str) -> int:
    return line_of(Classifier.call, text)


def fit_quietly(model: keras.Model, *args: Any, **kwargs: Any) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(*args, verbose=0, **kwargs)
    return caught


def test_detached_head_stops_fit_before_its_first_step_and_names_the_line() -> None:
    model = compiled(detach_head=True)
    x, y = data()
    truth = tape_receives(model, x, y)
    trainable = {w.path for w in model.trainable_weights}
    cut = sorted(n for n in trainable if not truth[n])
    assert cut == sorted(w.path for w in model.head.trainable_weights)
    before = [w.numpy().copy() for w in model.weights]
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)

    with pytest.raises(GradientFlowAssertionError) as info:
        fit_quietly(model, dataset, epochs=1, callbacks=[GradientFlowCheck(on_blocked="raise")])
    message = str(info.value)
    assert message.startswith(f"{len(cut)} trainable weights of model 'classifier' will receive no gradient")
    assert sorted(line.strip() for line in message.splitlines() if line.strip() in truth) == cut
    assert f"{HERE}:{call_line('logits = tf.stop_gradient(logits)')}: StopGradient" in message
    assert int(model.optimizer.iterations.numpy()) == 0
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, model.weights))


def test_a_layer_left_out_of_call_is_explained_and_training_goes_on() -> None:
    model = compiled(use_skip=False)
    x, y = data()
    truth = tape_receives(model, x, y)
    unused = sorted(w.path for w in model.trainable_weights if not truth[w.path])
    assert unused == sorted(w.path for w in model.skip.trainable_weights)
    check = GradientFlowCheck()

    caught = fit_quietly(model, x, y, epochs=1, batch_size=8, callbacks=[check])
    ours = [w for w in caught if issubclass(w.category, GradientFlowWarning)]
    assert len(ours) == 1
    assert ours[0].filename == __file__  # attributed to the user's fit call, not to Keras
    message = str(ours[0].message)
    assert "2 trainable weights of model 'classifier' will receive no gradient" in message
    assert "  unused:\n" in message and "they do not feed the loss at all" in message
    assert sorted(r.name for r in check.problems) == unused
    assert int(model.optimizer.iterations.numpy()) == 2  # a warning does not stop fit
    # Keras's own warning, which says nothing about why, is replaced during this fit only.
    assert not any("Gradients do not exist for variables" in str(w.message) for w in caught)
    assert check._silenced is None
    model = compiled(use_skip=False)
    caught = fit_quietly(model, x, y, epochs=1, batch_size=8)
    assert any("Gradients do not exist for variables" in str(w.message) for w in caught)


def test_batchnorm_statistics_and_frozen_weights_are_harmless() -> None:
    x, y = data()
    model = compiled(freeze=False)
    truth = tape_receives(model, x, y)
    bn = model.backbone.layers[1]
    statistics = {bn.moving_mean.path, bn.moving_variance.path}
    assert {n for n, r in truth.items() if not r} == statistics  # assigned in training, never differentiated
    check = GradientFlowCheck(on_blocked="raise", verify=True)
    caught = fit_quietly(model, x, y, epochs=1, batch_size=8, callbacks=[check])
    assert not any(issubclass(w.category, GradientFlowWarning) for w in caught)
    assert check.problems == ()
    assert check.report is not None and check.report.verification.agrees  # the real step confirmed it
    assert {r.name for r, why in check.harmless if why.startswith("BatchNormalization moving statistic")} == statistics


def test_a_model_frozen_after_compile_is_said_to_train_nothing() -> None:
    x, y = data()
    model = compiled(freeze=False)
    model.trainable = False  # after compile: Keras 3 reads it when the step runs
    before = [w.numpy().copy() for w in model.weights]
    fit_quietly(model, x, y, epochs=1, batch_size=8)
    # The truth: fit alone leaves every weight as it was.
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, model.weights))

    model = compiled(freeze=False)
    model.trainable = False
    with pytest.raises(GradientFlowAssertionError, match="fit will train nothing: model 'classifier' has no trainable"):
        fit_quietly(model, x, y, epochs=1, batch_size=8, callbacks=[GradientFlowCheck(on_blocked="raise")])
    caught = fit_quietly(model, x, y, epochs=1, batch_size=8, callbacks=[GradientFlowCheck()])
    ours = [str(w.message) for w in caught if issubclass(w.category, GradientFlowWarning)]
    assert len(ours) == 1 and "fit will train nothing" in ours[0]
    with warnings.catch_warnings(record=True) as during_analysis:
        warnings.simplefilter("always")
        report = flowcheck.analyze(model, x, y)  # the report says it: Keras's bare warning is not repeated
    assert not report.gradient_sites and not [w for w in during_analysis if "trainable weights" in str(w.message)]


@pytest.fixture(params=["float32", "mixed_float16"])
def dtype_policy(request: pytest.FixtureRequest) -> Any:
    """Each Keras global dtype policy (mixed precision compiles a LossScaleOptimizer), put back after."""
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.usefixtures("dtype_policy")
def test_weights_unfrozen_after_the_optimizer_was_built_are_said_not_to_train() -> None:
    x, y = data()

    def fine_tuned() -> Classifier:  # trained with its backbone frozen, then unfrozen without compile()
        model = compiled(freeze=True)
        fit_quietly(model, x, y, epochs=1, batch_size=8)
        model.backbone.trainable = True
        return model

    model = fine_tuned()
    before = [w.numpy().copy() for w in model.trainable_weights]
    fit_quietly(model, x, y, epochs=1, batch_size=8)
    # The truth: the weights this second fit leaves as they were, though trainable and given a gradient.
    kept = [i for i, (b, w) in enumerate(zip(before, model.trainable_weights)) if np.array_equal(b, w.numpy())]
    truth = tape_receives(model, x, y)
    assert kept and all(truth[model.trainable_weights[i].path] for i in kept)

    model = fine_tuned()  # the same model again (its layers' names numbered anew)
    unchanged = sorted(model.trainable_weights[i].path for i in kept)
    with pytest.raises(GradientFlowAssertionError, match=f"fit will not train {len(kept)} weights of model 'classifier'") as info:
        fit_quietly(model, x, y, epochs=1, batch_size=8, callbacks=[GradientFlowCheck(on_blocked="raise")])
    listed = sorted(line.strip() for line in str(info.value).splitlines() if line.startswith("    "))
    assert listed == unchanged
    check = GradientFlowCheck()
    caught = fit_quietly(model, x, y, epochs=1, batch_size=8, callbacks=[check])
    assert sum(issubclass(w.category, GradientFlowWarning) for w in caught) == 1
    assert sorted(r.name for r in check.unknown) == unchanged and check.problems == ()


def changed_by_fit(model: keras.Model, x: Any, y: Any) -> set[int]:
    """The truth of a phase: the positions in ``model.weights`` of the weights a real fit changes.

    Positions, as a model made again for the callback has its layers' names numbered anew.
    """
    before = [w.numpy().copy() for w in model.weights]
    fit_quietly(model, x, y, epochs=1, batch_size=8)
    return {i for i, (b, w) in enumerate(zip(before, model.weights)) if not np.array_equal(b, w.numpy())}


def left_out_by_a_real_fit(model: keras.Model, x: Any, y: Any) -> list[int]:
    """The truth after an unfreeze: positions of the trainable weights the tape gives a gradient that
    a real fit still leaves unchanged."""
    receives = tape_receives(model, x, y)
    trainable = {w.path for w in model.trainable_weights}
    changed = changed_by_fit(model, x, y)
    return [i for i, w in enumerate(model.weights) if w.path in trainable and receives[w.path] and i not in changed]


def still_trained_by_fit(model: keras.Model, x: Any, y: Any, trained: set[str]) -> list[int]:
    """The truth after a refreeze: positions of the weights frozen now, among ``trained`` (by gradient,
    before), that a real fit still changes (not the moving statistics, which it assigns)."""
    frozen = {w.path for w in model.non_trainable_weights}
    changed = changed_by_fit(model, x, y)
    return [i for i, w in enumerate(model.weights) if w.path in frozen & trained and i in changed]


@pytest.mark.usefixtures("dtype_policy")
def test_weights_frozen_after_a_fit_are_said_to_be_trained_still() -> None:
    x, y = data()

    def refrozen() -> tuple[Classifier, set[str]]:  # fine-tuned whole, then the backbone frozen without compile()
        model = compiled(freeze=False)
        fit_quietly(model, x, y, epochs=1, batch_size=8)
        trained = {w.path for w in model.trainable_weights}
        model.backbone.trainable = False
        return model, trained

    model, trained = refrozen()
    indices = still_trained_by_fit(model, x, y, trained)
    assert indices
    model, _ = refrozen()
    truth = {model.weights[i].path for i in indices}
    check = GradientFlowCheck()
    caught = fit_quietly(model, x, y, epochs=1, batch_size=8, callbacks=[check])
    assert {r.name for r in check.still_trained} == truth and check.unknown == () and check.problems == ()
    assert not {r.name for r, _ in check.harmless} & truth
    message = next(str(w.message) for w in caught if issubclass(w.category, GradientFlowWarning))
    assert f"fit will still train {len(truth)} weights of model 'classifier' frozen after" in message
    assert check.report is not None and any("still trains" in note for note in check.report.notes)
    # compile() drops the kept step: the next fit trains what the flags say, and nothing is said.
    model.compile(optimizer="sgd", loss="mse")
    check = GradientFlowCheck()
    caught = fit_quietly(model, x, y, epochs=1, batch_size=8, callbacks=[check])
    assert check.still_trained == () and not any(issubclass(w.category, GradientFlowWarning) for w in caught)


class TwoOptimizers(keras.Model):
    """A GAN-like override: each part trained by an optimizer its ``compile`` keeps as an attribute."""

    def __init__(self) -> None:
        super().__init__(name="two")
        self.first = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name="first")
        self.second = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)], name="second")

    def compile(self, **kwargs: Any) -> None:
        super().compile(**kwargs)
        self.first_optimizer, self.second_optimizer = keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1)

    def call(self, x: Any) -> Any:
        return self.second(self.first(x))

    def train_step(self, data: Any) -> Any:
        x, y = data
        for part, optimizer in ((self.first, self.first_optimizer), (self.second, self.second_optimizer)):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(self(x) - y))
            weights = part.trainable_weights
            optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return {"loss": loss}


def test_a_part_frozen_after_a_fit_of_an_override_is_said_to_be_trained_still() -> None:
    x, y = data()

    def refrozen() -> tuple[TwoOptimizers, set[str]]:
        keras.utils.set_random_seed(0)
        model = TwoOptimizers()
        model.compile()
        fit_quietly(model, x, y, epochs=1, batch_size=8)
        trained = {w.path for w in model.trainable_weights}
        model.first.trainable = False  # no compile(): fit keeps the step it traced
        return model, trained

    model, trained = refrozen()
    indices = still_trained_by_fit(model, x, y, trained)
    assert indices
    model, _ = refrozen()
    check = GradientFlowCheck()
    fit_quietly(model, x, y, epochs=1, batch_size=8, callbacks=[check])
    assert sorted(r.name for r in check.still_trained) == sorted(model.weights[i].path for i in indices)


class OwnStepClassifier(Classifier):
    """The override of Keras's guide "Customizing what happens in fit()": its own tape, the same sources."""

    def train_step(self, data: Any) -> Any:
        x, y = data
        with tf.GradientTape() as tape:
            loss = self.compute_loss(y=y, y_pred=self(x, training=True))
        trainable_vars = self.trainable_variables
        self.optimizer.apply(tape.gradient(loss, trainable_vars), trainable_vars)
        return {"loss": loss}


def test_weights_an_override_asks_for_after_an_unfreeze_are_said_to_be_left_out() -> None:
    x, y = data()

    def unfrozen() -> OwnStepClassifier:  # built trainable, frozen for a first fit, unfrozen without compile()
        keras.utils.set_random_seed(0)
        model = OwnStepClassifier(freeze=False)
        model.build((None, 4))
        model.backbone.trainable = False
        model.compile(optimizer="sgd", loss="mse")
        fit_quietly(model, x, y, epochs=1, batch_size=8)
        model.backbone.trainable = True
        return model

    model = unfrozen()
    indices = left_out_by_a_real_fit(model, x, y)
    assert indices
    model = unfrozen()
    check = GradientFlowCheck()
    fit_quietly(model, x, y, epochs=1, batch_size=8, callbacks=[check])
    assert sorted(r.name for r in check.unknown) == sorted(model.weights[i].path for i in indices)


def test_a_step_kept_from_train_on_batch_is_not_what_fit_runs() -> None:
    x, y = data()

    def refrozen() -> tuple[Classifier, set[str]]:  # one train_on_batch on the whole model, then frozen
        model = compiled(freeze=False)
        model.train_on_batch(x[:8], y[:8])
        trained = {w.path for w in model.trainable_weights}
        model.backbone.trainable = False
        return model, trained

    model, trained = refrozen()
    changed = changed_by_fit(model, x, y)  # fit traces a step of its own, on today's flags
    frozen = {w.path for w in model.non_trainable_weights}
    indices = [i for i, w in enumerate(model.weights) if w.path in frozen & trained and i in changed]
    model, _ = refrozen()
    check = GradientFlowCheck()
    fit_quietly(model, x, y, epochs=1, batch_size=8, callbacks=[check])
    assert sorted(r.name for r in check.still_trained) == sorted(model.weights[i].path for i in indices)


def test_weights_unfrozen_again_are_left_out_of_the_kept_step_though_the_optimizer_knows_them() -> None:
    x, y = data()

    def unfrozen_again() -> Classifier:  # all trained, backbone frozen with compile(same optimizer), unfrozen
        model = compiled(freeze=False)
        fit_quietly(model, x, y, epochs=1, batch_size=8)
        model.backbone.trainable = False
        model.compile(optimizer=model.optimizer, loss="mse")
        fit_quietly(model, x, y, epochs=1, batch_size=8)
        model.backbone.trainable = True
        return model

    model = unfrozen_again()
    indices = left_out_by_a_real_fit(model, x, y)  # given a gradient, trainable, yet unchanged by a real fit
    assert indices
    model = unfrozen_again()
    truth = {model.weights[i].path for i in indices}
    check = GradientFlowCheck()
    caught = fit_quietly(model, x, y, epochs=1, batch_size=8, callbacks=[check])
    assert {r.name for r in check.unknown} == truth and check.still_trained == ()
    message = next(str(w.message) for w in caught if issubclass(w.category, GradientFlowWarning))
    assert "made trainable after its training step was traced" in message


def test_compile_with_the_optimizer_already_built_is_said_to_raise() -> None:
    x, y = data()
    model = compiled(freeze=True)
    fit_quietly(model, x, y, epochs=1, batch_size=8)
    model.backbone.trainable = True
    model.compile(optimizer=model.optimizer, loss="mse")  # the same, built on the head alone
    check = GradientFlowCheck(on_blocked="raise")
    with pytest.raises(GradientFlowAssertionError, match="fit will raise Keras's 'Unknown variable' error"):
        fit_quietly(model, x, y, epochs=1, batch_size=8, callbacks=[check])
    with pytest.raises(ValueError, match="Unknown variable"):  # the truth: Keras's own fit
        fit_quietly(model, x, y, epochs=1, batch_size=8)


def test_a_fit_per_epoch_loop_analyzes_the_step_once_until_compile_or_a_trainable_change() -> None:
    model = compiled(detach_head=True)
    x, y = data()
    truth = tape_receives(model, x, y)
    cut = sorted(w.path for w in model.trainable_weights if not truth[w.path])
    checks = [GradientFlowCheck() for _ in range(3)]
    for epoch, check in enumerate(checks):  # a new callback per call, as such loops write it
        caught = fit_quietly(model, x, y, epochs=epoch + 1, initial_epoch=epoch, batch_size=8, callbacks=[check])
        assert sorted(r.name for r in check.problems) == cut
        assert sum(issubclass(w.category, GradientFlowWarning) for w in caught) == 1  # each fit still says it
    assert checks[1].report is checks[0].report and checks[2].report is checks[0].report
    model.skip.trainable = False  # a change the analysis depends on: analyzed again
    check = GradientFlowCheck()
    fit_quietly(model, x, y, epochs=1, batch_size=8, callbacks=[check])
    assert check.report is not checks[0].report
    model.skip.trainable = True
    model.compile(optimizer="sgd", loss="mse")  # a new step: analyzed again
    again = GradientFlowCheck()
    fit_quietly(model, x, y, epochs=1, batch_size=8, callbacks=[again])
    assert again.report is not check.report


class UnfreezeAt(keras.callbacks.Callback):  # type: ignore[misc]
    """Gradual unfreezing as users write it: the backbone made trainable at an epoch, nothing else."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if epoch == self.epoch:
            self.model.backbone.trainable = True


def test_weights_unfrozen_by_a_callback_during_fit_are_said_not_to_train() -> None:
    x, y = data()

    def frozen() -> Classifier:  # built trainable, frozen before its first fit
        keras.utils.set_random_seed(0)
        model = Classifier(freeze=False)
        model.build((None, 4))
        model.backbone.trainable = False
        model.compile(optimizer="sgd", loss="mse")
        return model

    model = frozen()
    receives = tape_receives(model, x, y)
    backbone = [w.path for w in model.backbone.weights]
    before = [w.numpy().copy() for w in model.backbone.weights]
    fit_quietly(model, x, y, epochs=3, batch_size=8, callbacks=[UnfreezeAt(1)])
    # The truth: the backbone's weights given a gradient that the whole fit leaves as they were.
    kept = [i for i, (b, w) in enumerate(zip(before, model.backbone.weights)) if np.array_equal(b, w.numpy())]
    indices = [i for i in kept if receives[backbone[i]] and model.backbone.weights[i].trainable]
    assert indices
    model = frozen()
    check = GradientFlowCheck()
    caught = fit_quietly(model, x, y, epochs=3, batch_size=8, callbacks=[check, UnfreezeAt(1)])  # after it: seen at the epoch's end
    said = [str(w.message) for w in caught if issubclass(w.category, GradientFlowWarning)]
    assert len(said) == 1 and said[0].startswith("flowcheck: trainable changed during fit (epoch 1)")
    assert sorted(r.name for r in check.unknown) == sorted(model.backbone.weights[i].path for i in indices)


def test_the_analysis_kept_between_fits_does_not_keep_earlier_models_alive() -> None:
    import gc
    import weakref

    x, y = data()
    first = compiled()
    fit_quietly(first, x, y, epochs=1, batch_size=8, callbacks=[GradientFlowCheck()])
    gone = weakref.ref(first)
    del first
    fit_quietly(compiled(), x, y, epochs=1, batch_size=8, callbacks=[GradientFlowCheck()])  # a search's next model
    gc.collect()
    assert gone() is None


def test_harmless_weights_are_summed_up_next_to_a_real_problem() -> None:
    x, y = data()
    model = compiled(freeze=True, use_skip=False)  # frozen backbone (fine) and an unused skip (not fine)
    truth = tape_receives(model, x, y)
    frozen_without_gradient = [w.path for w in model.non_trainable_weights if not truth[w.path]]
    check = GradientFlowCheck()
    caught = fit_quietly(model, x, y, epochs=1, batch_size=8, callbacks=[check])
    message = str(next(w.message for w in caught if issubclass(w.category, GradientFlowWarning)))
    assert sorted(r.name for r, _ in check.harmless) == sorted(frozen_without_gradient)
    assert not any(name in message for name in frozen_without_gradient)


def test_sample_argument_is_used_for_a_generator() -> None:
    model = compiled(detach_head=True)
    x, y = data()

    def batches() -> Any:
        while True:
            yield x[:4], y[:4]

    with pytest.raises(flowcheck.InvalidTargetError, match=r"pass GradientFlowCheck\(sample=\(x, y\)\)"):
        fit_quietly(model, batches(), epochs=1, steps_per_epoch=1, callbacks=[GradientFlowCheck()])
    check = GradientFlowCheck(sample=(x[:4], y[:4]), on_blocked="raise")
    with pytest.raises(GradientFlowAssertionError, match="classifier/head/kernel"):
        fit_quietly(model, batches(), epochs=1, steps_per_epoch=1, callbacks=[check])
    assert check.report is not None and check.report.target_kind == "keras model"


def test_a_custom_train_step_is_judged_at_its_own_gradient_call() -> None:
    class OwnStep(Classifier):
        def train_step(self, data: Any) -> Any:
            x, y = data
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((self(x, training=True) - y) ** 2)
            variables = self.head.trainable_variables  # forgets the skip layer
            self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return {"loss": loss}

    keras.utils.set_random_seed(0)
    model = OwnStep(detach_head=True)
    model.compile(optimizer="sgd", loss="mse")
    x, y = data()
    with tf.GradientTape() as tape:  # the truth: the override's own tape
        loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
    truth = [g is None for g in tape.gradient(loss, model.head.trainable_variables)]
    check = GradientFlowCheck(on_blocked="raise")
    with pytest.raises(GradientFlowAssertionError, match="classifier/head/kernel") as caught:
        fit_quietly(model, x, y, epochs=1, callbacks=[check])
    assert check.report is not None
    (site,) = check.report.gradient_sites
    assert [s.tensorflow_none for s in site.sources] == truth == [True, True] and site.agrees
    assert "never trains" in str(caught.value) and "classifier/skip/kernel" in str(caught.value)


def test_bad_options_are_refused() -> None:
    with pytest.raises(flowcheck.UsageError, match="on_blocked must be one of 'warn', 'raise', not 'ignore'"):
        GradientFlowCheck(on_blocked="ignore")
    with pytest.raises(flowcheck.UsageError, match="sample must be"):
        GradientFlowCheck(sample=np.zeros(3))
    # Refused when made: a wrong report_path stopped fit only after the analysis, inside fit.
    for options, message in [
        ({"report_path": "flow.png"}, "report_path 'flow.png' must end in one of .svg, .html, .dot, .me.json, .json"),
        ({"report_path": 5}, "report_path must be a path (str or pathlib.Path), not int"),
        ({"snapshot": 3}, "snapshot must be a path (str or pathlib.Path), not int"),
        ({"verify": "yes"}, "verify must be True or False, not 'yes'"),
    ]:
        with pytest.raises(flowcheck.UsageError) as caught:
            GradientFlowCheck(**options)
        assert str(caught.value) == message


@pytest.mark.dot
def test_report_path_saves_the_report(tmp_path: Any) -> None:
    model = compiled(use_skip=False)
    x, y = data()
    path = tmp_path / "flow.html"
    caught = fit_quietly(model, x, y, epochs=1, batch_size=8, callbacks=[GradientFlowCheck(report_path=path)])
    assert path.read_text().lstrip().lower().startswith("<!doctype html")
    message = str(next(w.message for w in caught if issubclass(w.category, GradientFlowWarning)))
    assert f"report: {path}" in message


class NoisyStep(keras.Model):
    """A subclassed model whose train_step draws noise from its own tf.random.Generator."""

    def __init__(self) -> None:
        super().__init__(name="noisy")
        self.body = keras.Sequential(
            [keras.layers.Dense(8, activation="relu"), keras.layers.BatchNormalization(), keras.layers.Dropout(0.5)],
            name="body",
        )
        self.out = keras.layers.Dense(3, name="out")
        self.noise = tf.random.Generator.from_seed(1)

    def call(self, x: Any, training: bool = False) -> Any:
        return self.out(self.body(x, training=training))

    def train_step(self, data: Any) -> Any:
        x, y = data
        with tf.GradientTape() as tape:
            pred = self(x + self.noise.normal(tf.shape(x)) * 0.01, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=pred)
        self.optimizer.apply_gradients(zip(tape.gradient(loss, self.trainable_variables), self.trainable_variables))
        for metric in self.metrics:
            metric.update_state(loss) if metric.name == "loss" else metric.update_state(y, pred)
        return {m.name: m.result() for m in self.metrics}


def _regularizing_model(kind: str) -> keras.Model:
    """A classifier with BatchNormalization, Dropout, Adam and a metric, as users train them."""
    keras.utils.set_random_seed(0)
    if kind == "mixed":
        keras.mixed_precision.set_global_policy("mixed_float16")
    model: keras.Model = NoisyStep() if kind == "train_step" else keras.Sequential([
        keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.BatchNormalization(),
        keras.layers.Dropout(0.5), keras.layers.Dense(3), keras.layers.Activation("linear", dtype="float32"),
    ])
    model.build((None, 4))

    def custom_loss(y_true: Any, y_pred: Any) -> Any:
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True))

    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=custom_loss, metrics=["accuracy"],
                  run_eagerly=kind == "run_eagerly")
    return model


def _training_data(kind: str, x: np.ndarray, y: np.ndarray) -> tuple[Any, ...]:
    if kind == "shuffled dataset":
        return (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x)).batch(8),)
    if kind == "seeded shuffle":
        return (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=3).batch(8),)
    if kind == "PyDataset":
        class Augmented(keras.utils.PyDataset):  # type: ignore[misc]
            def __len__(self) -> int:
                return len(x) // 8

            def __getitem__(self, i: int) -> Any:
                jitter = np.random.normal(size=(8, 4)).astype("float32")  # the global NumPy generator
                return x[i * 8:(i + 1) * 8] + jitter, y[i * 8:(i + 1) * 8]

        return (Augmented(),)
    return x, y


def _fit_state(model_kind: str, data_kind: str, callbacks: list[Any]) -> dict[str, Any]:
    """Everything two epochs of fit leave behind, and what the user's random generators draw next."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 3, size=(32,))
    try:
        model = _regularizing_model(model_kind)
        tf.random.get_global_generator().reset_from_seed(5)
        extra = {"batch_size": 8, "shuffle": True} if len(data := _training_data(data_kind, x, y)) == 2 else {}
        history = model.fit(*data, epochs=2, verbose=0, callbacks=callbacks, **extra).history
    finally:
        keras.mixed_precision.set_global_policy("float32")
    state = {
        "history": history, "iterations": int(model.optimizer.iterations.numpy()),
        "weights": [w.numpy() for w in model.weights],  # BatchNormalization's moving statistics among them
        "optimizer": [v.numpy() for v in model.optimizer.variables],
        "metrics": [v.numpy() for m in model.metrics for v in m.variables],
        "global generator": tf.random.get_global_generator().state.numpy(),
        "next draws": [tf.random.uniform((2,)).numpy(), keras.random.uniform((2,)).numpy(), np.random.random()],
    }
    if isinstance(model, NoisyStep):
        state["own generator"] = model.noise.state.numpy()
    return state


def _assert_same(without: dict[str, Any], with_check: dict[str, Any]) -> None:
    assert without["history"] == with_check["history"]
    for key in without.keys() - {"history"}:
        a, b = without[key], with_check[key]
        pairs = list(zip(a, b)) if isinstance(a, list) else [(a, b)]
        assert (len(a) if isinstance(a, list) else 1) == (len(b) if isinstance(b, list) else 1), key
        assert all(np.array_equal(p, q) for p, q in pairs), key


@pytest.mark.slow
@pytest.mark.parametrize("data_kind", ["shuffled dataset", "seeded shuffle", "PyDataset"])
def test_taking_the_sample_leaves_the_order_and_augmentation_of_fit_as_they_were(data_kind: str) -> None:
    # Iterating a shuffled dataset once more for the sample took the next seeds of its shuffle (every
    # epoch of fit came in another order); a PyDataset drew its augmentation from NumPy's generator.
    without = _fit_state("sequential", data_kind, [])
    check = GradientFlowCheck()
    _assert_same(without, _fit_state("sequential", data_kind, [check]))
    assert check.report is not None and check.report.gradient_sites


@pytest.mark.slow
@pytest.mark.parametrize("model_kind", ["train_step", "run_eagerly", "mixed"])
def test_fit_with_the_callback_and_its_real_step_trains_exactly_as_without(model_kind: str) -> None:
    without = _fit_state(model_kind, "arrays", [])
    check = GradientFlowCheck(verify=True)
    _assert_same(without, _fit_state(model_kind, "arrays", [check]))
    assert check.report is not None and check.report.verification is not None
    assert check.report.verification.agrees and not check.problems


class AddedLoss(keras.Model):
    """A model compiled with an optimizer alone: its loss comes from add_loss, as in a VAE."""

    def __init__(self) -> None:
        super().__init__(name="added")
        self.enc = keras.layers.Dense(3, name="enc")
        self.dec = keras.layers.Dense(4, name="dec")
        self.probe = keras.layers.Dense(4, name="probe")

    def call(self, x: Any, training: bool = False) -> Any:
        rec = self.dec(self.enc(x)) + tf.stop_gradient(self.probe(x))
        self.add_loss(tf.reduce_mean((rec - x) ** 2))
        return rec


class OwnComputeLoss(Classifier):
    """A model compiled without a loss that overrides compute_loss."""

    def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None,
                     training: bool = True) -> Any:
        return tf.reduce_mean((y_pred - y) ** 2)


@pytest.mark.parametrize("kind", ["add_loss", "compute_loss"])
def test_a_model_compiled_without_a_loss_whose_loss_is_its_own_is_analyzed(kind: str) -> None:
    # "not compiled with a loss" stopped a fit that trains: add_loss and compute_loss give it a loss.
    keras.utils.set_random_seed(0)
    model: keras.Model = AddedLoss() if kind == "add_loss" else OwnComputeLoss(detach_head=True, freeze=False)
    model.build((None, 4))
    model.compile(optimizer="sgd")
    x, y = data()
    with tf.GradientTape() as tape:  # the truth: the loss fit differentiates, as Keras's train_step computes it
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True), training=True)
    cut = sorted(w.path for w, g in zip(model.trainable_weights, tape.gradient(loss, model.trainable_weights)) if g is None)
    assert cut  # each model has a weight cut off by a stop_gradient
    check = GradientFlowCheck(verify=True)
    fit_quietly(model, *((x,) if kind == "add_loss" else (x, y)), epochs=1, batch_size=8, callbacks=[check])
    assert sorted(r.name for r in check.problems) == cut
    assert check.report is not None and check.report.verification is not None and check.report.verification.agrees


def test_a_model_compiled_with_no_loss_at_all_is_one_clear_error() -> None:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name="lossless")
    model.compile(optimizer="sgd")
    x, y = data()
    with pytest.raises(flowcheck.InvalidTargetError) as caught:
        fit_quietly(model, x, y, epochs=1, callbacks=[GradientFlowCheck()])
    assert str(caught.value) == ("Keras model 'lossless' is not compiled with a loss and adds none (add_loss): call "
                                 "model.compile(optimizer=..., loss=...) first, or pass a function returning the loss")


def test_a_fit_stopped_by_an_exception_leaves_keras_warning_shown_in_later_fits() -> None:
    # Keras calls on_train_end only when fit returns: the filter hiding its warning stayed for good.
    class Stop(keras.callbacks.Callback):  # type: ignore[misc]
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            raise RuntimeError("stopped by the user")

    model = compiled(use_skip=False)
    x, y = data()
    keras_text = "Gradients do not exist for variables ['classifier/skip/kernel'] when minimizing the loss."
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientFlowWarning)
        with pytest.raises(RuntimeError, match="stopped by the user"):
            model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[GradientFlowCheck(), Stop()])
        hiding = [f for f in warnings.filters if f[0] == "ignore" and f[1] is not None and f[1].match(keras_text)]
    assert hiding == []


@pytest.mark.parametrize("kind", ["shuffle", "seeded, a batch larger than the rows sampled", "random", "zip",
                                  "ragged, sparse and string components"])
def test_a_sample_element_leaves_every_later_epoch_of_the_dataset_as_it_was(kind: str) -> None:
    from flowcheck._datasets import first_element

    def make() -> tf.data.Dataset:
        tf.random.set_seed(4)
        rows = tf.data.Dataset.from_tensor_slices((np.arange(3000.0), np.arange(3000)))
        if kind == "shuffle":
            return rows.shuffle(3000).batch(500)
        if kind == "random":
            return tf.data.Dataset.random(rerandomize_each_iteration=True).take(6).batch(3)
        if kind == "zip":
            return tf.data.Dataset.zip((rows.shuffle(100), rows.shuffle(50))).batch(1000)
        if kind.startswith("ragged"):  # components the copy cannot cut (it crashed on the ragged one)
            ragged = tf.ragged.constant([[1, 2], [3], [4, 5, 6]] * 400)  # 1200 rows: more than the copy keeps
            sparse = tf.sparse.from_dense(tf.eye(1200))
            words = tf.constant([b"a", b"b", b"c"] * 400)
            return tf.data.Dataset.from_tensor_slices((ragged, sparse, words)).shuffle(1200).batch(300).map(
                lambda r, s, w: (r.to_tensor(), tf.sparse.to_dense(s), w))
        return rows.shuffle(3000, seed=1).batch(2000, drop_remainder=True)

    def epochs(dataset: tf.data.Dataset) -> list[Any]:
        return [[tf.nest.map_structure(lambda t: t.numpy().tolist(), b) for b in dataset] for _ in range(2)]

    untouched, sampled = epochs(make()), make()
    element = first_element(sampled)
    assert tf.nest.map_structure(lambda t: t.shape, element) == tf.nest.map_structure(lambda t: t.shape, next(iter(make())))
    assert epochs(sampled) == untouched


class HostSideStep(keras.Model):
    """A train_step only fit's run_eagerly=True can run: it reads the loss on the host (``.numpy()``)."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = keras.layers.Dense(3, name="first"), keras.layers.Dense(1, name="second")
        self.last_loss = 0.0

    def call(self, x: Any) -> Any:
        return self.second(tf.round(self.first(x)))

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((self(x, training=True) - y) ** 2)
        self.last_loss = float(loss.numpy())  # host side: cannot be traced
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return {"loss": loss}


def _host_side_model() -> HostSideStep:
    keras.utils.set_random_seed(21)
    model = HostSideStep()
    model.compile(optimizer="adam", loss="mse", run_eagerly=True)
    model(np.zeros((1, 4), "float32"))  # its layers built (model.build would leave them unbuilt)
    return model


def test_a_run_eagerly_step_that_cannot_be_traced_is_judged_as_fit_runs_it() -> None:
    x, y = data()
    model = _host_side_model()
    with tf.GradientTape() as tape:  # the override's own tape, run eagerly as fit runs it
        loss = tf.reduce_mean((model(x[:8], training=True) - y[:8, :1]) ** 2)
    truth = {v.path: g is not None for v, g in zip(model.trainable_variables, tape.gradient(loss, model.trainable_variables))}
    report = flowcheck.analyze(model, x[:8], y[:8, :1])  # was a TraceError: 'SymbolicTensor' has no attribute 'numpy'
    (site,) = report.gradient_sites
    assert {s.name: s.verdict is flowcheck.Verdict.RECEIVES for s in site.sources} == truth
    assert report.verify().agrees
    without = _host_side_model()
    fit_quietly(without, x, y[:, :1], batch_size=8)
    checked = _host_side_model()
    callback = GradientFlowCheck(verify=True)
    caught = fit_quietly(checked, x, y[:, :1], batch_size=8, callbacks=[callback])  # the callback stopped fit
    layer_paths = {p.split("/", 1)[1] for p, got in truth.items() if not got}  # another instance: another model name
    assert {r.name.split("/", 1)[1] for r in callback.problems} == layer_paths
    assert not [w for w in caught if "Gradients do not exist" in str(w.message)]
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(without.variables, checked.variables))


def test_an_untraceable_eager_step_with_unbuilt_layers_keeps_the_traces_one_line_error() -> None:
    # model.build leaves the layers of a subclass without build() unbuilt: the failed trace builds
    # them with variables of its own graph, so no eager run can follow; the trace's error is told.
    keras.utils.set_random_seed(22)
    model = HostSideStep()
    model.compile(optimizer="adam", loss="mse", run_eagerly=True)
    model.build((None, 4))
    x, y = data()
    with pytest.raises(flowcheck.TraceError, match=r"^tracing host_side_step.* 'SymbolicTensor' object has no attribute 'numpy'"):
        flowcheck.analyze(model, x[:8], y[:8, :1])


def test_the_warnings_fits_trace_gives_are_given_once_not_again_by_the_analysis() -> None:
    # flowcheck traces the step before fit does: the user's code warned twice (Keras's "structure of
    # inputs" warning for a dict fed to a one-input model, here), where fit alone warns once.
    def model_warnings(callbacks: list[Any]) -> list[str]:
        inputs = keras.Input((3,), name="features")
        model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
        model.compile(optimizer="sgd", loss="mse")
        caught = fit_quietly(model, {"features": np.ones((4, 3), "float32")}, np.ones((4, 1), "float32"),
                             callbacks=callbacks)
        return [str(w.message) for w in caught if not issubclass(w.category, GradientFlowWarning)]

    alone = model_warnings([])
    assert any("structure of `inputs`" in text for text in alone)
    assert model_warnings([GradientFlowCheck()]) == alone
