"""The Report API: lookups, verification options, restoring variables, user errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
import keras

import flowcheck
from truth import default_tape_watches, watched_truth


def _model() -> tuple[object, tf.Variable, tf.Variable, tf.Tensor]:
    a = tf.Variable([1.0, 2.0], name="a")
    b = tf.Variable([3.0, 4.0], name="b")

    @tf.function
    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(a * x) + tf.reduce_sum(tf.cast(tf.cast(b, tf.int32), tf.float32))

    return loss, a, b, tf.constant([0.5, -1.0])


def test_lookup_by_object_and_by_name() -> None:
    loss, a, b, x = _model()
    report = flowcheck.analyze(loss, x)
    assert report.result(a) is report.result("a")
    assert report.result(b).verdict is flowcheck.Verdict.BLOCKED
    assert report.by_verdict("receives") == (report.result(a),)


def test_the_summary_and_the_json_document_say_what_the_tape_says(tmp_path: Path) -> None:
    loss, a, b, x = _model()
    truth = dict(zip(("a", "b"), watched_truth(loss, [a, b], x)))
    report = flowcheck.analyze(loss, x)
    document = report.to_json()
    assert {v["name"]: v["verdict"] == "receives" for v in document["variables"]} == truth
    assert document["verification"] is None and document["target"]["file"] is None
    summary = report.summary()
    assert summary.startswith("flowcheck: loss (tf.function)") and all(f"  {name}  " in summary for name in truth)
    assert summary.endswith("not verified (report.verify())\n")

    report.verify()
    document = report.to_json()
    assert {c["name"]: c["gradient"] != "none" for c in document["verification"]["variables"]} == truth
    assert "agrees" in report.summary()
    saved = report.save(tmp_path / "flow.json")
    assert json.loads(saved.read_text()) == document
    explorer = report.save(tmp_path / "flow.me.json")  # still Model Explorer's graph, not the document
    assert "verification" not in json.loads(explorer.read_text())


def test_unknown_name_lists_the_known_ones() -> None:
    loss, _, _, x = _model()
    report = flowcheck.analyze(loss, x)
    with pytest.raises(flowcheck.VariableNotFoundError, match=r"no variable named 'c'.*a, b"):
        report.result("c")


def test_a_variable_never_read_is_unused() -> None:
    loss, _, _, x = _model()
    stranger = tf.Variable(1.0, name="stranger")
    report = flowcheck.analyze(loss, x)
    assert report.result(stranger).verdict is flowcheck.Verdict.UNUSED
    assert report.receives_gradient(stranger) is False


def test_ambiguous_name_asks_for_the_object() -> None:
    v1 = tf.Variable(1.0, name="same")
    v2 = tf.Variable(2.0, name="same")

    @tf.function
    def loss() -> tf.Tensor:
        return v1 * v2

    report = flowcheck.analyze(loss)
    with pytest.raises(flowcheck.VariableNotFoundError, match="2 variables are named 'same'"):
        report.result("same")
    assert report.receives_gradient(v1) and report.receives_gradient(v2)


def test_verify_restores_every_variable_bit_for_bit_and_never_steps_the_users_optimizer() -> None:
    loss, a, b, x = _model()
    counter = tf.Variable(0, name="counter")

    @tf.function
    def step(x: tf.Tensor) -> tf.Tensor:
        counter.assign_add(1)  # the step's own assign must be undone too
        return loss(x)

    before = [v.numpy().tobytes() for v in (a, b, counter)]
    users = keras.optimizers.Adam(learning_rate=0.5)
    report = flowcheck.analyze(step, x)
    check = report.verify(optimizer=users)
    assert check.agrees
    assert [v.numpy().tobytes() for v in (a, b, counter)] == before
    assert int(users.iterations.numpy()) == 0
    by_name = {c.name: c for c in check.variables}
    assert by_name["a"].changed and not by_name["b"].changed
    assert by_name["b"].gradient is flowcheck.GradientState.NONE


def test_unknown_optimizer_name_is_a_clear_error() -> None:
    loss, _, _, x = _model()
    report = flowcheck.analyze(loss, x)
    with pytest.raises(flowcheck.VerificationError, match="unknown optimizer 'rmsprop'.*sgd, adam"):
        report.verify(optimizer="rmsprop")
    # A learning rate Keras refuses was its own ValueError; a negative one stepped uphill.
    for rate in ("0.1", -1.0, float("nan"), True):
        with pytest.raises(flowcheck.VerificationError) as caught:
            report.verify(learning_rate=rate)  # type: ignore[arg-type]
        assert str(caught.value) == f"learning_rate must be a positive number, not {rate!r}"
    with pytest.raises(flowcheck.UsageError, match="^path must be a str or pathlib.Path, not int$"):
        report.save(5)  # type: ignore[arg-type]


def test_non_finite_loss_is_reported_not_raised() -> None:
    v = tf.Variable([1.0, -1.0], name="v")

    @tf.function
    def loss() -> tf.Tensor:
        return tf.reduce_sum(tf.math.log(v))

    check = flowcheck.analyze(loss).verify()
    assert any("nan" in p for p in check.problems)
    np.testing.assert_array_equal(v.numpy(), [1.0, -1.0])


@pytest.mark.parametrize(
    ("make", "error", "pattern"),
    [
        (lambda: 42, flowcheck.InvalidTargetError, "cannot analyze 'int'"),
        (lambda: tf.function(lambda: None), flowcheck.LossError, "returned None"),
        (lambda: tf.function(lambda: "loss"), flowcheck.LossError, "returned a string tensor"),
        (lambda: tf.function(lambda: tf.constant(3)), flowcheck.LossError, "int32 tensor"),
        (lambda: tf.function(lambda: tf.constant(3.0)), flowcheck.NoVariablesError, "nothing can be trained"),
        # The model's class, not an instance: was a LossError "Sequential returned Sequential".
        (lambda: keras.Sequential, flowcheck.InvalidTargetError, "^Sequential is a class: pass an instance"),
    ],
    ids=["not-callable", "returns-none", "returns-string", "returns-int", "no-variables", "a-class"],
)
def test_user_errors_are_flowcheck_errors(make: object, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        flowcheck.analyze(make())  # type: ignore[operator]


def test_errors_raised_while_tracing_name_the_users_line() -> None:
    v = tf.Variable(1.0)

    @tf.function
    def loss() -> tf.Tensor:
        return v * tf.ones((2, 3)) @ tf.ones((2, 3))  # shapes do not match

    with pytest.raises(flowcheck.TraceError, match=r"test_report.py:\d+"):
        flowcheck.analyze(loss)


def test_a_trace_error_shows_one_message_not_tensorflows_chain() -> None:
    # It was raised `from` TensorFlow's error: a traceback printed pages of TensorFlow's internals first.
    w = tf.Variable(1.0, name="w")

    @tf.function
    def loss(x: tf.Tensor) -> tf.Tensor:
        return w * x

    with pytest.raises(flowcheck.TraceError) as info:
        flowcheck.analyze(loss, tf.constant(1))  # an int32 input for a float32 variable
    with pytest.raises(TypeError) as tensorflows:
        loss(tf.constant(1))  # the user's own call raises the same error
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert isinstance(info.value.original, TypeError)
    assert str(tensorflows.value).splitlines()[-1].strip().removeprefix("TypeError: ") in str(info.value)


def test_uncompiled_keras_model_is_refused_with_the_fix() -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(flowcheck.InvalidTargetError, match="compile"):
        flowcheck.analyze(model, tf.zeros((2, 3)), tf.zeros((2, 2)))


def test_a_non_trainable_variable_is_judged_watched_and_the_default_tape_fact_is_beside_it() -> None:
    w = tf.Variable([1.0, 2.0], name="w")
    frozen = tf.Variable([3.0, 4.0], name="frozen", trainable=False)
    steps = tf.Variable(0, name="steps")

    @tf.function
    def loss() -> tf.Tensor:
        return tf.reduce_sum(w * frozen) + tf.cast(steps, tf.float32)

    variables = (w, frozen, steps)
    report = flowcheck.analyze(loss)
    assert [report.receives_gradient(v) for v in variables] == watched_truth(loss, variables)
    assert [report.result(v).watched_by_default for v in variables] == default_tape_watches(loss, variables)
    assert report.result(frozen).barriers == ()
    assert report.verify().agrees


def test_a_keras_model_whose_own_train_step_asks_for_no_gradient_is_refused() -> None:
    class OwnStep(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="own_step")
            self.dense = keras.layers.Dense(1)

        def call(self, x: tf.Tensor) -> tf.Tensor:
            return self.dense(x)

        def train_step(self, data: object) -> dict[str, tf.Tensor]:  # what fit really runs
            x, y = data  # type: ignore[misc]
            return {"loss": tf.reduce_mean((tf.stop_gradient(self(x)) - y) ** 2)}

    model = OwnStep()
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(flowcheck.LossError, match="train_step of Keras model 'own_step' asks for no gradient"):
        flowcheck.analyze(model, np.ones((2, 3), np.float32), np.ones((2, 1), np.float32))


def test_the_analysis_is_computed_once_and_every_output_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowcheck.analysis import verdicts as analysis

    a, b = tf.Variable(1.0, name="a"), tf.Variable(2.0, name="b")

    @tf.function
    def two_losses(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"first": a * x, "second": tf.stop_gradient(b) * x + a}

    report = flowcheck.analyze(two_losses, tf.constant(3.0))
    calls: list[str] = []
    for name in ("analyze_graph", "blocking_barriers", "reach", "gradient_nodes", "feeding_nodes", "gradient_errors", "verdicts"):
        original = getattr(analysis, name)
        monkeypatch.setattr(analysis, name, lambda *args, _f=original, _n=name, **kw: calls.append(_n) or _f(*args, **kw))
    report.to_dot()
    report.to_dot(detail="ops")
    first = report.barriers_for(report.variables, "second")
    assert report.barriers_for(report.variables, "second") == first
    # The drawings recompute nothing; the cut for "second" alone is computed once, when first asked for.
    assert calls == ["blocking_barriers", "reach"]
    assert [bool(first[id(r.variable)]) for r in report.variables] == [r.name == "b" for r in report.variables]


def _v1_step() -> tuple[Any, list[tf.Variable], list[Any], Any]:
    """A ``tf.function`` step of two ``tf.compat.v1.train`` optimizers, its variables, its optimizers, its loss."""
    w = tf.Variable([[0.5, -0.3], [0.2, 0.1]], name="w")
    gate = tf.Variable(0.7, name="gate")
    x = tf.constant([[1.0, 2.0], [0.5, -1.0]])
    momentum = tf.compat.v1.train.MomentumOptimizer(0.1, 0.9)
    adam = tf.compat.v1.train.AdamOptimizer(0.1)

    def loss_fn() -> tf.Tensor:
        return tf.reduce_sum(tf.square(tf.matmul(x, w) + tf.round(gate)))

    @tf.function
    def step() -> tf.Tensor:
        momentum.apply_gradients([(g, v) for g, v in momentum.compute_gradients(loss_fn, var_list=[w, gate]) if g is not None])
        adam.minimize(loss_fn, var_list=[w])
        return loss_fn()

    return step, [w, gate], [momentum, adam], loss_fn


def test_verify_restores_a_tf_compat_v1_optimizers_slots_and_beta_powers() -> None:
    """A ``tf.compat.v1.train`` optimizer inside a ``tf.function`` step: its apply ops take the slots'
    handles without reading them, so they are not among the trace's variables; the verification's step
    still must not leave them moved (``flowcheck run --continue`` trained differently from ``python``).
    Nor may the analysis leave it owning slots it made while traced (``get_slot_names()``, ``variables()``
    and a checkpoint said ``m``, ``v`` before the user's first step): the user's step makes them, as without flowcheck."""
    step, (w, gate), optimizers, loss_fn = _v1_step()
    report = flowcheck.analyze(step)
    assert [opt.variables() for opt in optimizers] == [[], []]
    before = [v.numpy().tobytes() for v in (w, gate)]
    check = report.verify()
    assert check.agrees
    assert [v.numpy().tobytes() for v in (w, gate)] == before
    assert [(opt.variables(), opt.get_slot_names()) for opt in optimizers] == [([], []), ([], [])]
    alone_step, alone_variables, alone_optimizers, _ = _v1_step()  # the same step, never analyzed
    for _ in range(2):
        step(), alone_step()
    assert [v.numpy().tobytes() for v in (w, gate)] == [v.numpy().tobytes() for v in alone_variables]
    assert [[v.numpy().tobytes() for v in opt.variables()] for opt in optimizers] == [
        [v.numpy().tobytes() for v in opt.variables()] for opt in alone_optimizers
    ]
    assert len(optimizers[0].variables()) + len(optimizers[1].variables()) == 1 + 4  # w's momentum; Adam's m, v, beta powers
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch([w, gate])
        loss = loss_fn()
    truth = [g is not None for g in tape.gradient(loss, [w, gate])]
    assert [report.receives_gradient(v) for v in (w, gate)] == truth


def _drawing_step() -> tuple[Any, Any, keras.Model]:
    """A plain-function step drawing its batch from an iterator whose map draws with a seeded
    ``tf.random.uniform``: tf.data cannot save that iterator's position (the op's state is outside it)."""
    dataset = tf.data.Dataset.range(100).map(
        lambda i: (tf.fill([3], tf.cast(i, tf.float32)), tf.random.uniform([], seed=4)),
    ).batch(4)
    iterator = iter(dataset)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.set_weights([np.ones((3, 1), "float32"), np.zeros(1, "float32")])

    def step() -> tf.Tensor:
        x, y = next(iterator)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x)[:, 0] - y) ** 2)
        return tape.gradient(loss, model.trainable_variables)

    return step, iterator, model


def test_an_iterator_whose_position_cannot_be_saved_is_left_where_it_was() -> None:
    """analyze ran a plain-function step eagerly to judge it as called; its iterator's position could
    not be saved (the map's random op), so it was not put back and the user's next batch was another one.
    The step is not run then (its calls judged as traced), and verify() says why in one error."""
    tf.random.set_seed(3)
    step, iterator, model = _drawing_step()
    report = flowcheck.analyze(step)
    assert any("did not run the step eagerly" in note for site in report.gradient_sites for note in site.notes)
    with pytest.raises(flowcheck.VerificationError, match="position cannot be saved"):
        report.verify()
    mine = next(iterator)[1].numpy()
    tf.random.set_seed(3)
    alone_step, alone_iterator, alone_model = _drawing_step()  # the same, never analyzed
    assert mine.tobytes() == next(alone_iterator)[1].numpy().tobytes()
    truth = [g is not None for g in alone_step()]
    assert [report.receives_gradient(v) for v in model.trainable_variables] == truth


def test_keras_name_counters_are_left_as_they_were() -> None:
    """A Nadam built by the analysis and verification (then put back unbuilt) used up Keras's counter
    of the name ``variable``: at the user's first step its variable was ``nadam/variable_4``, not
    ``nadam/variable``, and a layer made afterwards was named as if flowcheck's had been made too."""
    from keras.src.backend.common import global_state

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    optimizer = keras.optimizers.Nadam(0.01)
    x = tf.constant([[1.0, 2.0, 3.0]])

    @tf.function
    def step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.round(model.layers[0](x)) + model(x))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(gradients, model.trainable_variables) if g is not None])
        return loss

    before = dict(global_state.get_global_attribute("object_name_uids") or {})
    report = flowcheck.analyze(step)
    assert report.verify().agrees
    flowcheck.assert_gradient_flow(step, receives=f"*/{model.layers[1].name}/*", verify=True)
    assert dict(global_state.get_global_attribute("object_name_uids") or {}) == before
    truth = watched_truth(step.python_function, model.trainable_variables)
    assert [report.receives_gradient(v) for v in model.trainable_variables] == truth


def test_a_step_failing_at_run_time_says_the_kernels_message() -> None:
    # It said only "the real step failed: InvalidArgumentError: Graph execution error:".
    w = tf.Variable(1.0, name="w")

    @tf.function
    def loss(x: tf.Tensor) -> tf.Tensor:
        tf.debugging.assert_positive(x, message="x must be positive")
        return w * x

    x = tf.constant(-2.0)
    with pytest.raises(tf.errors.InvalidArgumentError) as own:
        loss(x)  # the user's own call fails the same way
    assert str(own.value).startswith("Graph execution error:")
    with pytest.raises(flowcheck.VerificationError) as info:
        flowcheck.analyze(loss, x).verify()
    assert str(info.value).startswith("the real step failed: InvalidArgumentError: assertion failed: [x must be positive")
    assert w.numpy() == 1.0  # restored
