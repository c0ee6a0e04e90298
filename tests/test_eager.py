"""Plain callables are judged as the user calls them: eagerly, under a tape that watches every variable.

The truth is the tape run here on the user's own call; the traced function's answer (a
``tf.function`` of the same Python) is computed too, where the test is about the difference.
"""

from __future__ import annotations

import json
import types
from typing import Any

import numpy as np
import pytest
import keras
import tensorflow as tf

import flowcheck
from flowcheck.outputs.text import to_json
from truth import line_of, watched_truth


def verdicts(report: flowcheck.Report, variables: tuple[Any, ...]) -> list[bool]:
    return [report.receives_gradient(v) for v in variables]


def test_an_untaken_cond_branch_gets_none_eagerly_and_the_report_says_why() -> None:
    taken, untaken = tf.Variable([1.0], name="taken"), tf.Variable([2.0], name="untaken")

    def loss() -> tf.Tensor:
        return tf.reduce_sum(tf.cond(tf.constant(True), lambda: taken * 2.0, lambda: untaken * 3.0))  # cond

    variables = (taken, untaken)
    report = flowcheck.analyze(loss)
    eager, traced = watched_truth(loss, variables), watched_truth(tf.function(loss), variables)
    assert eager != traced  # the case is about the difference
    assert verdicts(report, variables) == eager
    assert report.result(untaken).eager_difference == f"only the branch taken runs eagerly (line {line_of(loss, '# cond')})"
    assert report.result(taken).eager_difference is None
    # The same Python as a tf.function is judged as traced, with no eager note.
    as_function = flowcheck.analyze(tf.function(loss))
    assert verdicts(as_function, variables) == traced
    assert all(r.eager_difference is None for r in as_function.variables)
    assert report.verify().agrees


def test_a_python_if_on_a_tensor_runs_one_branch_eagerly() -> None:
    w, v = tf.Variable([1.0, 2.0], name="w_if"), tf.Variable([3.0, 4.0], name="v_if")

    def loss(x: tf.Tensor) -> tf.Tensor:
        if tf.reduce_sum(x) > 100.0:  # python if
            return tf.reduce_sum(v * x)
        return tf.reduce_sum(w * x)

    x = tf.constant([1.0, 1.0])
    report = flowcheck.analyze(loss, x)
    assert verdicts(report, (w, v)) == watched_truth(loss, (w, v), x)
    assert report.result(v).eager_difference == f"only the branch taken runs eagerly (line {line_of(loss, '# python if')})"


def test_a_variable_only_the_while_condition_reads_gets_none_eagerly() -> None:
    limit, step = tf.Variable(3.0, name="limit"), tf.Variable(0.5, name="step")

    def loss() -> tf.Tensor:
        i, total = tf.constant(0.0), tf.constant(0.0)
        while i < limit:  # loop
            i += 1.0
            total += step * i
        return total

    variables = (limit, step)
    report = flowcheck.analyze(loss)
    eager, traced = watched_truth(loss, variables), watched_truth(tf.function(loss), variables)
    assert eager != traced
    assert verdicts(report, variables) == eager
    assert report.result(limit).eager_difference == (
        f"the while condition is not differentiated eagerly (line {line_of(loss, '# loop')})"
    )
    # The cut is the comparison of the loop condition, on the user's line.
    (cut,) = report.result(limit).barriers
    assert (cut.op_type, cut.in_user_code, cut.source and cut.source.line) == ("Less", True, line_of(loss, "# loop"))
    assert report.verify().agrees


def test_a_value_a_loop_carries_and_its_body_cuts_is_not_blamed_on_the_condition() -> None:
    w, u = tf.Variable([1.0, 2.0], name="written"), tf.Variable([3.0, 4.0], name="stopped_in_body")

    def loss() -> tf.Tensor:
        rows = tf.TensorArray(tf.float32, size=3)
        for i in tf.range(3):  # loop
            rows = rows.write(i, w * tf.cast(i, tf.float32) + tf.stop_gradient(u))
        return tf.reduce_sum(rows.stack())

    variables = (w, u)
    report = flowcheck.analyze(loss)
    eager, traced = watched_truth(loss, variables), watched_truth(tf.function(loss), variables)
    assert eager != traced  # traced, the loop gives u zeros
    assert verdicts(report, variables) == eager
    assert report.result(u).eager_difference == (
        f"traced, the while_loop (line {line_of(loss, '# loop')}) gives every value it carries a gradient, "
        "zeros at least; eagerly only its iterations' ops count"
    )
    # Eagerly the body's stop_gradient is what cuts u: named, on its line (it was left unnamed).
    (cut,) = report.result(u).barriers
    assert (cut.op_type, cut.kind, cut.in_user_code) == ("StopGradient", flowcheck.BarrierKind.STOP_GRADIENT, True)
    assert cut.source is not None and cut.source.line == line_of(loss, "tf.stop_gradient(u)")


def test_a_gradient_override_map_applies_when_traced_only_and_the_report_says_so() -> None:
    rounded, signed = tf.Variable([1.0, 2.0], name="rounded_st"), tf.Variable([1.0, 2.0], name="signed_st")

    def loss() -> tf.Tensor:
        with tf.compat.v1.get_default_graph().gradient_override_map({"Round": "Identity", "Sign": "Identity"}):
            return tf.reduce_sum(tf.round(rounded)) + tf.reduce_sum(tf.sign(signed))  # straight through

    variables = (rounded, signed)
    report = flowcheck.analyze(loss)
    eager, traced = watched_truth(loss, variables), watched_truth(tf.function(loss), variables)
    assert eager != traced  # eagerly, Round's own gradient (None) applies
    assert verdicts(report, variables) == eager
    assert report.result(rounded).eager_difference == (
        f"gradient_override_map gives Round the gradient of Identity when traced (line {line_of(loss, '# straight through')}); "
        "eagerly Round's own gradient applies"
    )
    (cut,) = report.result(rounded).barriers  # the Round whose own gradient applies, on its line
    assert (cut.op_type, cut.kind, cut.in_user_code) == ("Round", flowcheck.BarrierKind.NONE_GRADIENT, True)
    assert cut.source is not None and cut.source.line == line_of(loss, "# straight through")


def test_a_custom_gradients_variables_come_in_another_order_eagerly_and_the_report_says_so() -> None:
    w, v = tf.Variable([1.0, 2.0], name="custom_w"), tf.Variable([3.0, 4.0], name="custom_v")

    @tf.custom_gradient
    def scaled(x: tf.Tensor) -> Any:
        def grad(g: tf.Tensor, variables: Any = None) -> Any:
            return g * w * v, [g * x * v, None]

        return x * w * v, grad

    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(scaled(x))  # custom

    x, variables = tf.constant([1.0, 2.0]), (w, v)
    report = flowcheck.analyze(loss, x)
    eager, traced = watched_truth(loss, variables, x), watched_truth(tf.function(loss), variables, x)
    assert eager != traced
    assert verdicts(report, variables) == eager
    reason = (f"the custom gradient (line {line_of(loss, '# custom')}) answers otherwise eagerly than traced "
              "(TensorFlow hands a tf.custom_gradient the variables it reads in another order eagerly)")
    assert [report.result(u).eager_difference for u in variables] == [reason, reason]
    blocked = [u for u, receives in zip(variables, eager) if not receives]
    for u in blocked:  # the custom gradient's op, at the call
        (cut,) = report.result(u).barriers
        assert (cut.op_type, cut.kind, cut.in_user_code) == ("IdentityN", flowcheck.BarrierKind.CUSTOM_GRADIENT_NONE, True)
        assert cut.source is not None and cut.source.line == line_of(loss, "# custom")
    assert report.verify().agrees


def test_float_leaves_tensorflow_eagerly_but_not_when_traced() -> None:
    w, b = tf.Variable([1.0, 2.0], name="w_float"), tf.Variable(0.5, name="b_float")

    def loss(x: tf.Tensor) -> tf.Tensor:
        scale = float(tf.reduce_sum(w * x))  # float
        return scale * tf.reduce_sum(x) + b

    x = tf.constant([1.0, 3.0])
    report = flowcheck.analyze(loss, x)
    eager, traced = watched_truth(loss, (w, b), x), watched_truth(tf.function(loss), (w, b), x)
    assert eager != traced
    assert verdicts(report, (w, b)) == eager
    assert report.result(w).eager_difference == f"`float()` at line {line_of(loss, '# float')} leaves TensorFlow"
    assert report.result(w).verdict is flowcheck.Verdict.BLOCKED
    assert report.verify().agrees


def test_a_numpy_round_trip_cannot_be_traced_and_is_judged_from_its_eager_call() -> None:
    encoder, head, unused = (tf.Variable(np.full((2, 2), 0.5, np.float32), name=n) for n in ("enc", "head", "idle"))

    def loss(x: tf.Tensor) -> tf.Tensor:
        features = tf.constant((x @ encoder).numpy())  # numpy
        return tf.reduce_sum(features @ head)

    x = tf.ones((3, 2))
    with pytest.raises(Exception):  # noqa: B017 -- whatever TensorFlow raises: it cannot be traced
        tf.function(loss).get_concrete_function(x)
    report = flowcheck.analyze(loss, x)
    truth = watched_truth(loss, (encoder, head), x)
    assert verdicts(report, (encoder, head)) == truth
    assert report.result(encoder).verdict is flowcheck.Verdict.BLOCKED
    assert report.result(encoder).eager_difference == (
        f"`.numpy()` at line {line_of(loss, '# numpy')} leaves TensorFlow; no static analysis was possible"
    )
    assert report.result(unused).verdict is flowcheck.Verdict.UNUSED
    assert any("no static analysis was possible" in note for note in report.notes)
    assert report.verify().agrees
    data = json.loads(json.dumps(to_json(report, None)))
    assert {v["name"]: v["eager_difference"] for v in data["variables"]}["enc"].startswith("`.numpy()`")
    assert "digraph" in report.to_dot()


def test_a_variable_an_eager_ops_fast_path_reads_is_found_by_a_callable_that_cannot_be_traced() -> None:
    # tf.reduce_sum of a rank-1 variable reads it in C: no Python hook hears of it, the tape does.
    # Attributes of another module (``import params; params.w``): flowcheck cannot list them before the call.
    params: Any = types.ModuleType("params")
    params.fast, params.numpy = tf.Variable([1.0, 2.0], name="read_in_c"), tf.Variable(2.0, name="through_numpy")
    params.fast_numpy = tf.Variable([3.0, 4.0], name="read_in_c_through_numpy")

    def loss(x: tf.Tensor) -> tf.Tensor:
        left = tf.convert_to_tensor(np.tanh((params.numpy * x).numpy()) + tf.reduce_sum(params.fast_numpy).numpy())
        return tf.reduce_sum(left) + tf.reduce_sum(params.fast)

    x = tf.constant([1.0, 2.0])
    variables = (params.fast, params.numpy, params.fast_numpy)
    before = [v.numpy().tobytes() for v in variables]
    report = flowcheck.analyze(loss, x)
    assert verdicts(report, variables) == watched_truth(loss, variables, x) == [True, False, False]
    # Read (in C) on the way to the loss, then through NumPy: blocked, as the one read in Python.
    assert report.result(params.fast_numpy).verdict is report.result(params.numpy).verdict is flowcheck.Verdict.BLOCKED
    assert report.verify().agrees
    assert [v.numpy().tobytes() for v in variables] == before


def test_a_variable_first_met_by_a_write_is_restored_to_its_value_before_the_write() -> None:
    # Attributes of another module: flowcheck meets them only during the eager call.
    params: Any = types.ModuleType("params")
    params.w, params.counter = tf.Variable([1.0, 2.0], name="numpy_w"), tf.Variable(0.0, name="written_first")

    def loss(x: tf.Tensor) -> tf.Tensor:
        params.counter.assign_add(1.0)
        left = tf.convert_to_tensor(np.tanh((params.w * x).numpy()))
        return tf.reduce_sum(left) + params.counter * 2.0

    x, variables = tf.constant([1.0, 2.0]), (params.w, params.counter)
    before = [v.numpy().tobytes() for v in variables]
    report = flowcheck.analyze(loss, x)
    assert [v.numpy().tobytes() for v in variables] == before  # analyze undid the call's assign_add
    assert report.verify().agrees
    assert [v.numpy().tobytes() for v in variables] == before
    assert verdicts(report, variables) == watched_truth(loss, variables, x)


def test_a_loss_that_left_tensorflow_is_a_loss_error_naming_the_line() -> None:
    w = tf.Variable([1.0, 2.0], name="w_np_loss")

    def loss(x: tf.Tensor) -> Any:
        return np.mean((w * x).numpy())  # left

    with pytest.raises(flowcheck.LossError, match=rf"not a floating-point tensor \(the loss left TensorFlow: `.numpy\(\)` at line {line_of(loss, '# left')}"):
        flowcheck.analyze(loss, tf.ones(2))


def test_the_eager_call_leaves_every_variable_and_the_seed_state_as_it_was() -> None:
    w = tf.Variable([1.0, 2.0], name="w_state")
    ema = tf.Variable([0.0, 0.0], name="ema_state", trainable=False)
    counter = tf.Variable(0, name="counter_state")
    tf.random.set_seed(7)

    def loss() -> tf.Tensor:
        ema.assign(0.9 * ema + 0.1 * w)
        counter.assign_add(1)
        return tf.reduce_sum(w * tf.random.normal((2,))) + tf.reduce_sum(ema)

    before = [v.numpy().copy() for v in (w, ema, counter)]
    report = flowcheck.analyze(loss)
    report.verify()
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, (w, ema, counter)))
    first = tf.random.normal((2,)).numpy()
    tf.random.set_seed(7)
    assert np.array_equal(first, tf.random.normal((2,)).numpy())  # the eager call drew no seed
    assert verdicts(report, (w, ema, counter)) == watched_truth(loss, (w, ema, counter))


def test_the_eager_call_leaves_the_kernels_of_ops_given_a_seed_as_they_were() -> None:
    # TensorFlow keeps one eager kernel, and its state, per pair of seeds: an op given a seed run
    # by flowcheck drew from the kernel the user's next call draws from.
    w = tf.Variable([1.0, 2.0, 3.0], name="w_seeded")

    def loss() -> tf.Tensor:
        return tf.reduce_sum(w * tf.random.normal((3,), seed=5)) + tf.reduce_sum(tf.nn.dropout(w, 0.5, seed=3))

    tf.random.set_seed(7)  # clears the kernels: each run below starts from the same state
    expected = [loss().numpy() for _ in range(2)]
    tf.random.set_seed(7)
    report = flowcheck.analyze(loss)
    report.verify()
    assert [loss().numpy() for _ in range(2)] == expected
    assert verdicts(report, (w,)) == watched_truth(loss, (w,))


def test_per_loss_verdicts_of_a_callable_are_eager_too() -> None:
    a, b = tf.Variable(1.0, name="a_loss"), tf.Variable(2.0, name="b_loss")

    def losses() -> dict[str, tf.Tensor]:
        return {"first": tf.cond(tf.constant(False), lambda: a * 2.0, lambda: tf.constant(0.0)), "second": b * 3.0}

    report = flowcheck.analyze(losses)
    for name in ("first", "second"):
        truth = watched_truth(lambda: losses()[name], (a, b))
        assert [report.receives_gradient(v, loss=name) for v in (a, b)] == truth


def test_a_custom_gradients_none_in_a_nested_tf_function_stays_none_as_a_users_tape_gives_it() -> None:
    # Under a persistent tape TensorFlow differentiates a nested tf.function through its
    # higher-order path, where this None becomes zeros; the user's (non-persistent) tape gives None.
    a, b, c = tf.Variable([1.0, 2.0], name="nested_a"), tf.Variable([3.0, 4.0], name="nested_b"), tf.Variable(5.0, name="nested_c")

    @tf.custom_gradient
    def first_only(u: tf.Tensor, v: tf.Tensor) -> Any:
        return u * v, lambda dy: (dy * v, None)

    @tf.function
    def inner(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(first_only(a * x, b))

    def losses(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"custom": inner(x), "plain": c * 2.0 + inner(x) * 0.0}

    x = tf.constant([1.0, -1.0])
    variables = (a, b, c)
    report = flowcheck.analyze(losses, x)
    truth = watched_truth(losses, variables, x)
    assert truth[1] is False  # flowcheck's own eager run left TensorFlow's answer as it was
    assert verdicts(report, variables) == truth
    for name in ("custom", "plain"):
        truth = watched_truth(lambda x: losses(x)[name], variables, x)
        assert [report.receives_gradient(v, loss=name) for v in variables] == truth
    assert report.verify().agrees


def test_per_loss_verdicts_of_a_callable_when_another_loss_reads_the_variable() -> None:
    a, b, c = tf.Variable([1.0, 2.0], name="a_both"), tf.Variable([3.0, 4.0], name="b_taken"), tf.Variable(5.0, name="c_second")

    def losses(x: tf.Tensor) -> dict[str, tf.Tensor]:
        branch = tf.cond(tf.reduce_sum(x) > 100.0, lambda: a * x, lambda: b * x)  # a: the untaken branch
        return {"first": tf.reduce_sum(branch), "second": c * 2.0 + tf.reduce_sum(a)}

    x = tf.constant([1.0, -1.0])
    report = flowcheck.analyze(losses, x)
    for name in ("first", "second"):
        truth = watched_truth(lambda x: losses(x)[name], (a, b, c), x)
        assert [report.receives_gradient(v, loss=name) for v in (a, b, c)] == truth
    assert verdicts(report, (a, b, c)) == watched_truth(losses, (a, b, c), x)


def test_a_plain_function_step_is_judged_at_its_gradient_call_as_called_eagerly() -> None:
    taken, untaken, floated = (tf.Variable(v, name=n) for v, n in ((1.0, "step_taken"), (2.0, "step_untaken"), (3.0, "step_floated")))
    optimizer = keras.optimizers.SGD(0.1)
    variables = [taken, untaken, floated]

    def step(x: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            y = tf.cond(tf.reduce_sum(x) > 0, lambda: taken * x, lambda: untaken * x)  # step cond
            loss = tf.reduce_sum(y) + float(floated) * tf.reduce_sum(x)  # step float
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])

    x = tf.constant([1.0])
    before = [v.numpy() for v in variables]
    report = flowcheck.analyze(step, x)
    with tf.GradientTape() as tape:  # the user's own tape, as the user calls the step
        y = tf.cond(tf.reduce_sum(x) > 0, lambda: taken * x, lambda: untaken * x)
        loss = tf.reduce_sum(y) + float(floated) * tf.reduce_sum(x)
    truth = [g is not None for g in tape.gradient(loss, variables)]
    (site,) = report.gradient_sites
    assert [s.receives for s in site.sources] == truth
    assert site.agrees
    why = {s.name: s.eager_difference for s in site.sources}
    assert why["step_untaken"] == f"only the branch taken runs eagerly (line {line_of(step, '# step cond')})"
    assert why["step_floated"] == f"`float()` at line {line_of(step, '# step float')} leaves TensorFlow"
    assert [v.numpy() for v in variables] == before and not optimizer.built
    assert report.verify().agrees
    assert [v.numpy() for v in variables] == before


def test_a_plain_function_step_calling_a_nested_tf_function_is_judged_as_the_user_calls_it() -> None:
    # The step's own tape differentiates the nested function as traced: the untaken branch gets zeros.
    taken, untaken = tf.Variable([1.0, 2.0], name="nested_taken"), tf.Variable([3.0, 4.0], name="nested_untaken")
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build([taken, untaken])

    @tf.function
    def model_fn(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.cond(tf.reduce_sum(x) < 100.0, lambda: taken * x, lambda: untaken * x))

    def step(x: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            loss = model_fn(x)
        grads = tape.gradient(loss, [taken, untaken])
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, [taken, untaken]) if g is not None])

    x = tf.constant([1.0, 2.0])
    report = flowcheck.analyze(step, x)
    with tf.GradientTape() as tape:  # the user's own tape, as the user calls the step
        loss = model_fn(x)
    truth = [g is not None for g in tape.gradient(loss, [taken, untaken])]
    (site,) = report.gradient_sites
    assert [s.receives for s in site.sources] == truth
    assert report.verify().agrees


def test_a_tf_function_step_with_an_untaken_branch_is_verified_as_traced() -> None:
    taken, untaken = tf.Variable(1.0, name="traced_taken"), tf.Variable(2.0, name="traced_untaken")
    optimizer = keras.optimizers.SGD(0.1)
    variables = [taken, untaken]
    answers: list[list[bool]] = []

    def body(x: tf.Tensor) -> list[Any]:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.cond(tf.reduce_sum(x) > 0, lambda: taken * x, lambda: untaken * x))
        grads = tape.gradient(loss, variables)
        answers.append([g is not None for g in grads])  # TensorFlow's answer, as traced
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return grads

    step = tf.function(body)
    x = tf.constant([1.0])
    report = flowcheck.analyze(step, x)
    tf.function(body).get_concrete_function(x)  # the truth: a trace of the same step
    (site,) = report.gradient_sites
    assert [s.receives for s in site.sources] == answers[-1] == [True, True]  # zeros for the untaken branch
    check = report.verify()
    assert check.agrees, check


def test_keras_global_seed_generator_made_by_flowcheck_is_removed() -> None:
    from keras.src.backend.common import global_state

    global_state.set_global_attribute("global_seed_generator", None)
    w = tf.Variable([1.0, 2.0], name="w_noise")

    @tf.function
    def loss() -> tf.Tensor:
        return tf.reduce_sum(w * keras.random.normal((2,)))  # seed=None: Keras's global generator

    report = flowcheck.analyze(loss)
    report.verify()
    assert global_state.get_global_attribute("global_seed_generator") is None  # the user's first call makes it
    assert report.receives_gradient(w) == watched_truth(loss, (w,))[0]


def test_tensorflow_global_generator_made_by_flowcheck_is_removed() -> None:
    from tensorflow.python.ops import stateful_random_ops

    stateful_random_ops.global_generator = None
    w = tf.Variable([1.0, 2.0], name="w_global_generator")

    def loss() -> tf.Tensor:
        return tf.reduce_sum(w * tf.random.get_global_generator().normal((2,)))

    report = flowcheck.analyze(loss)
    report.verify()
    assert stateful_random_ops.global_generator is None  # the user's first call makes it, as without flowcheck
    assert report.receives_gradient(w) == watched_truth(loss, (w,))[0]


def test_a_plain_function_steps_source_its_loop_body_cuts_names_the_cut() -> None:
    scale, stopped = tf.Variable([1.0, 2.0], name="map_scale"), tf.Variable([3.0, 4.0], name="map_stopped")
    optimizer = keras.optimizers.SGD(0.1)
    variables = [scale, stopped]

    def forward(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.map_fn(lambda r: r * scale + tf.stop_gradient(r * stopped), x))  # map body

    def step(x: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            loss = forward(x)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])

    x = tf.ones((3, 2))
    report = flowcheck.analyze(step, x)
    with tf.GradientTape() as tape:  # the user's own tape, as the user calls the step
        loss = forward(x)
    truth = [g is not None for g in tape.gradient(loss, variables)]
    (site,) = report.gradient_sites
    assert [s.receives for s in site.sources] == truth
    assert truth != watched_truth(tf.function(forward), variables, x)  # traced, the loop gives zeros
    (cut,) = site.sources[1].barriers  # it was left with none
    assert (cut.op_type, cut.in_user_code) == ("StopGradient", True)
    assert cut.source is not None and cut.source.line == line_of(forward, "# map body")
    assert report.verify().agrees


def test_a_plain_function_steps_source_a_gradient_override_alone_explains_names_the_op() -> None:
    rounded, w = tf.Variable([1.0, 2.0], name="step_rounded"), tf.Variable([1.0, 2.0], name="step_w")
    optimizer = keras.optimizers.SGD(0.1)
    variables = [rounded, w]

    def forward() -> tf.Tensor:
        with tf.compat.v1.get_default_graph().gradient_override_map({"Round": "Identity"}):
            return tf.reduce_sum(tf.round(rounded)) + tf.reduce_sum(w * 2.0)  # straight through

    def step() -> None:
        with tf.GradientTape() as tape:
            loss = forward()
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])

    report = flowcheck.analyze(step)
    truth = watched_truth(forward, variables)
    (site,) = report.gradient_sites
    assert [s.receives for s in site.sources] == truth
    assert truth != watched_truth(tf.function(forward), variables)  # traced, Identity's gradient applies
    (cut,) = site.sources[0].barriers
    assert (cut.op_type, cut.kind, cut.in_user_code) == ("Round", flowcheck.BarrierKind.NONE_GRADIENT, True)
    assert cut.source is not None and cut.source.line == line_of(forward, "# straight through")


def test_a_python_max_over_tensors_is_told_as_the_choice_it_makes_with_advice_to_compare_in_tensorflow() -> None:
    big, small = tf.Variable(3.0, name="max_big"), tf.Variable(1.0, name="max_small")

    def loss(x: tf.Tensor) -> tf.Tensor:
        return max(big * tf.reduce_sum(x), small * tf.reduce_sum(x))  # max

    x = tf.constant([1.0, 2.0])
    report = flowcheck.analyze(loss, x)
    truth = watched_truth(loss, (big, small), x)
    assert verdicts(report, (big, small)) == truth == [True, False]
    assert report.result(small).eager_difference == (
        f"`max()` at line {line_of(loss, '# max')} compares tensors in Python: only what it keeps is "
        "differentiated; no static analysis was possible"
    )
    note = next(n for n in report.notes if "no static analysis was possible" in n)
    assert "Python `bool` is not allowed:" in note and "You can attempt" not in note  # TensorFlow's advice left out
    assert note.endswith("rather than in Python") and "numpy_function" not in note
    assert report.verify().agrees


def test_a_numpy_function_of_a_tensor_is_advised_as_a_numpy_round_trip() -> None:
    w, b = tf.Variable([1.0, 2.0], name="np_mean_w"), tf.Variable(0.5, name="np_mean_b")

    def loss(x: tf.Tensor) -> tf.Tensor:
        return np.mean(w * x) * tf.ones(()) + b  # NumPy reads the tensor's buffer in C

    x = tf.constant([1.0, 3.0])
    report = flowcheck.analyze(loss, x)
    assert verdicts(report, (w, b)) == watched_truth(loss, (w, b), x) == [False, True]
    note = next(n for n in report.notes if "no static analysis was possible" in n)
    assert note.endswith("wrap the NumPy part in tf.numpy_function or keep it in TensorFlow")
    assert "This error may indicate" not in note


def test_np_array_of_a_variable_is_named_as_the_numpy_call_that_left_tensorflow() -> None:
    w, b = tf.Variable([1.0, 2.0], name="np_array_w"), tf.Variable(0.5, name="np_array_b")

    def loss(x: tf.Tensor) -> tf.Tensor:
        frozen = tf.constant(np.array(w) * 2.0)  # np.array
        return tf.reduce_sum(frozen * x) + b

    x = tf.constant([1.0, 3.0])
    report = flowcheck.analyze(loss, x)
    assert verdicts(report, (w, b)) == watched_truth(loss, (w, b), x)
    assert report.result(w).eager_difference == (
        f"`np.array()` at line {line_of(loss, '# np.array')} leaves TensorFlow; no static analysis was possible"
    )


def test_a_tf_variable_made_anew_at_each_call_is_not_a_verdict_but_a_note_and_verification_agrees() -> None:
    w = tf.Variable([[1.0], [2.0]], name="kept_w")

    def loss(x: tf.Tensor) -> tf.Tensor:
        temp = tf.Variable(tf.ones((2, 1)), name="made_each_call")  # made anew
        return tf.reduce_sum(x @ temp) + tf.reduce_sum(x @ w)

    x = tf.ones((3, 2))
    report = flowcheck.analyze(loss, x)
    assert verdicts(report, (w,)) == watched_truth(loss, (w,), x)
    assert [r.name for r in report.variables] == ["kept_w"]  # the call's own temp is no variable of the user's
    line = line_of(loss, "# made anew")
    assert any(n.startswith("loss creates 'made_each_call' at ") and f"test_eager.py:{line} anew at each call" in n
               for n in report.notes)
    assert report.verify().agrees

    def only_temp(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(x) * tf.Variable(2.0, name="only_made_each_call")

    with pytest.raises(flowcheck.NoVariablesError, match="creates 'only_made_each_call' at .* anew at each call"):
        flowcheck.analyze(only_temp, x)


def test_a_keras_layer_first_built_by_a_callable_that_cannot_be_traced_is_left_working() -> None:
    # A failed tf.function trace leaves the layers it built with uninitialized weights.
    dense, head = keras.layers.Dense(2, name="built_by_flowcheck"), tf.Variable(tf.ones((2, 1)), name="np_head")

    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.constant(dense(x).numpy()) @ head)

    x = tf.ones((4, 3))
    report = flowcheck.analyze(loss, x)
    variables = (*dense.weights, head)
    assert verdicts(report, variables) == watched_truth(loss, variables, x) == [False, False, True]
    before = [tf.identity(v).numpy() for v in variables]
    assert np.isfinite(dense(x).numpy()).all()  # the user's next call works
    assert report.verify().agrees
    assert all(np.array_equal(b, tf.identity(v).numpy()) for b, v in zip(before, variables))


def test_a_variable_a_callable_creates_on_its_first_call_only_is_judged_and_kept() -> None:
    class Lazy:
        def __init__(self) -> None:
            self.w: tf.Variable | None = None
            self.scale = tf.Variable(2.0, name="lazy_scale")

        def __call__(self, x: tf.Tensor) -> tf.Tensor:
            if self.w is None:
                self.w = tf.Variable(tf.ones((2, 1)), name="lazy_once")
            return tf.reduce_sum(tf.constant((x @ self.w).numpy())) * self.scale

    model, x = Lazy(), tf.ones((3, 2))
    report = flowcheck.analyze(model, x)
    assert model.w is not None
    variables = (model.w, model.scale)
    assert verdicts(report, variables) == watched_truth(model, variables, x) == [False, True]
    assert not any("anew at each call" in n for n in report.notes)


def test_an_eager_call_that_raises_in_an_op_is_one_line_without_the_kernels_names() -> None:
    w = tf.Variable(tf.ones((3, 1)), name="w_mismatch")

    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.constant((x @ w).numpy()) @ tf.ones((5, 1)))  # mismatch

    with pytest.raises(flowcheck.TraceError) as raised:
        flowcheck.analyze(loss, tf.ones((4, 3)))
    message = str(raised.value)
    assert f":{line_of(loss, '# mismatch')} (" in message and "Matrix size-incompatible" in message
    assert "function_node" not in message and "[Op:" not in message and "\n" not in message


def test_a_step_that_cannot_be_traced_leaves_the_iterator_it_draws_from_where_it_was() -> None:
    w = tf.Variable([[1.0], [1.0]], name="w_iterator_step")
    opt = keras.optimizers.SGD(0.1)
    data = tf.data.Dataset.from_tensor_slices(np.arange(16, dtype=np.float32).reshape(8, 2)).batch(2)
    it, twin = iter(data), iter(data)

    def train_step() -> None:
        xb = next(it)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(xb @ w) + tf.reduce_sum(xb).numpy()  # cannot be traced: judged eagerly
        opt.apply_gradients(zip(tape.gradient(loss, [w]), [w]))

    next(it), next(twin)
    report = flowcheck.analyze(train_step)
    assert [s.tensorflow_none for site in report.gradient_sites for s in site.sources] == [False]
    assert np.array_equal(next(it).numpy(), next(twin).numpy())  # analyze drew no batch of the script's


def test_a_step_that_cannot_be_traced_and_draws_from_an_iterator_that_cannot_be_saved_is_not_run() -> None:
    w = tf.Variable([[1.0], [1.0]], name="w_unsaved_iterator")
    opt = keras.optimizers.SGD(0.1)
    it = iter(tf.data.Dataset.from_tensor_slices(np.ones((8, 2), np.float32)).map(lambda x: x + tf.random.uniform((2,))).batch(2))

    def train_step() -> None:
        xb = next(it)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(xb @ w) + tf.reduce_sum(xb).numpy()
        opt.apply_gradients(zip(tape.gradient(loss, [w]), [w]))

    with pytest.raises(flowcheck.TraceError, match="draws batches from an OwnedIterator whose position cannot be saved"):
        flowcheck.analyze(train_step)
    assert sum(1 for _ in it) == 4  # no batch drawn
    assert w.numpy().tolist() == [[1.0], [1.0]] and int(opt.iterations.numpy()) == 0


def test_a_variable_read_only_inside_a_py_function_is_judged_from_the_eager_call() -> None:
    # The traced graph reads no variable (the py_function's Python is not traced): that was a NoVariablesError
    # telling the user to create the variables outside the function, which they had.
    scale = tf.Variable(2.0, name="read_in_py_function")

    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.py_function(lambda t: t * scale, [x], tf.float32))

    x = tf.constant([1.0, 2.0])
    report = flowcheck.analyze(loss, x)
    assert verdicts(report, (scale,)) == watched_truth(loss, (scale,), x) == [False]
    assert "tf.py_function" in (report.result(scale).eager_difference or "")
    assert report.verify().agrees

    def no_variable(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(x * 2.0)

    with pytest.raises(flowcheck.NoVariablesError, match="create the variables outside the function"):
        flowcheck.analyze(no_variable, x)


def test_a_functools_partial_is_traced_with_autograph_and_its_barrier_named() -> None:
    import functools

    w, v = tf.Variable([1.0, 2.0], name="w_partial"), tf.Variable([3.0, 4.0], name="v_partial")

    def loss(x: tf.Tensor, scale: float) -> tf.Tensor:
        if tf.reduce_sum(x) > 0.0:  # AutoGraph turns it into a tf.cond
            return tf.reduce_sum(tf.stop_gradient(w * x) + v * x) * scale  # stop
        return tf.reduce_sum(v)

    fn, x = functools.partial(loss, scale=2.0), tf.constant([1.0, 1.0])
    report = flowcheck.analyze(fn, x)
    assert verdicts(report, (w, v)) == watched_truth(fn, (w, v), x) == [False, True]
    assert not any("no static analysis" in n for n in report.notes)
    (cut,) = report.result(w).barriers
    assert cut.op_type == "StopGradient" and cut.source is not None and cut.source.line == line_of(loss, "# stop")


class _TwoDense(keras.Model):
    def __init__(self) -> None:
        super().__init__(name="two_dense")
        self.first, self.second = keras.layers.Dense(2, name="first"), keras.layers.Dense(1, name="second")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self.second(self.first(x))


class _Trainer:
    """A user's trainer holding the model: a callable reaches the model only through it."""

    def __init__(self, net: Any) -> None:
        self.net = net

    def loss(self, x: tf.Tensor, scale: float) -> tf.Tensor:
        return tf.reduce_sum(self.net(x)) * scale


def test_a_models_variables_reached_through_a_partial_or_a_trainer_object_keep_their_keras_paths() -> None:
    # Found only by the trace, they were named by their tf.Variable names: 'net/kernel' for both layers' kernels.
    import functools

    keras.utils.set_random_seed(3)
    net, x = _TwoDense(), tf.ones((2, 3))
    net(x)  # built in the model's scope: both kernels' tf.Variables are named 'two_dense/kernel'
    trainer = _Trainer(net)
    paths = [v.path for v in net.weights]
    for fn in (functools.partial(trainer.loss, scale=2.0), lambda x: trainer.loss(x, 2.0)):
        report = flowcheck.analyze(fn, x)
        assert [report.result(v).name for v in net.weights] == paths
        assert verdicts(report, tuple(net.weights)) == watched_truth(fn, net.weights, x)


def test_a_functools_partial_step_leaves_its_iterator_and_optimizer_as_they_were() -> None:
    # The state a partial's function reaches (a global iterator, an optimizer) went unseen: analyze drew a
    # batch and counted an optimizer step of the user's.
    import functools

    w = tf.Variable([[1.0], [1.0]], name="w_partial_step")
    opt = keras.optimizers.SGD(0.1)
    data = tf.data.Dataset.from_tensor_slices(np.arange(16, dtype=np.float32).reshape(8, 2)).batch(2)
    it, twin = iter(data), iter(data)

    def train_step(scale: float) -> None:
        xb = next(it)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(xb @ w) * scale
        opt.apply_gradients(zip(tape.gradient(loss, [w]), [w]))

    step = functools.partial(train_step, scale=2.0)
    step(), next(twin)
    before = (w.numpy().tobytes(), int(opt.iterations.numpy()))
    report = flowcheck.analyze(step)
    assert [s.tensorflow_none for site in report.gradient_sites for s in site.sources] == [False]
    assert report.verify().agrees
    assert (w.numpy().tobytes(), int(opt.iterations.numpy())) == before
    assert np.array_equal(next(it).numpy(), next(twin).numpy())


def test_a_lambda_with_lambdas_inside_is_traced_without_an_autograph_warning(capfd: Any) -> None:
    w, u = tf.Variable([1.0, 2.0], name="w_lambda"), tf.Variable([3.0, 4.0], name="u_lambda")
    fn = lambda x: tf.reduce_sum(tf.cond(tf.reduce_sum(x) > 5.0, lambda: w * x, lambda: u * x))  # noqa: E731
    x = tf.constant([1.0, -1.0])
    report = flowcheck.analyze(fn, x)
    assert verdicts(report, (w, u)) == watched_truth(fn, (w, u), x)
    assert "could not transform" not in capfd.readouterr().err


def test_a_step_that_cannot_be_traced_says_where_its_values_left_tensorflow_at_its_site() -> None:
    first, second = keras.layers.Dense(2, name="np_first"), keras.layers.Dense(1, name="np_second")
    x = tf.ones((4, 3))
    second(first(x))
    opt = keras.optimizers.SGD(0.1)

    def train_step(x: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            h = tf.constant(first(x).numpy())  # left
            loss = tf.reduce_mean(second(h) ** 2)
        grads = tape.gradient(loss, first.trainable_variables + second.trainable_variables)
        opt.apply_gradients([(g, v) for g, v in zip(grads, first.trainable_variables + second.trainable_variables)
                             if g is not None])

    report = flowcheck.analyze(train_step, x)
    (site,) = report.gradient_sites
    with tf.GradientTape() as tape:  # TensorFlow's own answer, as the step asks it
        loss = tf.reduce_mean(second(tf.constant(first(x).numpy())) ** 2)
    truth = [g is None for g in tape.gradient(loss, first.trainable_variables + second.trainable_variables)]
    assert [s.tensorflow_none for s in site.sources] == truth == [True, True, False, False]
    assert f"while the step ran: `.numpy()` at line {line_of(train_step, '# left')} leaves TensorFlow" in site.notes
