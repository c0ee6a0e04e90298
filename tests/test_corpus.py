"""The differential corpus: flowcheck's prediction against ``tf.GradientTape`` on real-world patterns.

The truth is computed here, per case, by the tape: a variable receives a gradient exactly when
``tape.gradient(..., unconnected_gradients=NONE)`` gives it something other than None. The cases
live in ``tests/corpus_cases.py``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import flowcheck
import corpus_cases
import corpus_eager  # noqa: F401 -- registers its cases in CASES
import corpus_flow  # noqa: F401 -- registers its cases in CASES
import corpus_ops  # noqa: F401 -- registers its cases in CASES
import corpus_sweep  # noqa: F401 -- registers its cases in CASES
import corpus_watched  # noqa: F401 -- registers its cases in CASES
from corpus_cases import CASES, Case, load_seed
from truth import line_of, tf_variable, watched_gradients, watched_truth as tape_truth


def _name(v: Any) -> str:
    return str(getattr(v, "path", None) or v.name).split(":")[0]


def _snapshot(variables: Sequence[Any]) -> list[bytes]:
    return [np.asarray(tf_variable(v).numpy()).tobytes() for v in variables]


def _diff(report: flowcheck.Report, variables: Sequence[Any], truth: Sequence[bool], when: str) -> str | None:
    rows = []
    wrong = False
    for v, expected in zip(variables, truth):
        r = report.result(v)
        predicted = report.receives_gradient(v)
        mark = "  " if predicted == expected else "!!"
        wrong |= predicted != expected
        barriers = "; ".join(f"{b.op_type} {b.kind} at {b.source}" for b in r.barriers)
        rows.append(f"{mark} {_name(v):<40} tape={'grad' if expected else 'None':<5} flowcheck={r.verdict!s:<9} {barriers}")
    if not wrong:
        return None
    return f"flowcheck disagrees with the tape (analyze {when} the tape):\n" + "\n".join(rows)


def assert_agrees_with_tape(fn: Callable[..., Any], variables: Sequence[Any], *args: Any, **kwargs: Any) -> flowcheck.Report:
    """flowcheck's verdicts equal the tape's, whether analyzed before or after the tape ran.

    Also checks that ``verify()`` agrees and that analyzing and verifying leave every variable's
    value bit for bit unchanged. Returns the report analyzed after the tape.
    """
    before = _snapshot(variables)
    first = flowcheck.analyze(fn, *args, **kwargs)
    assert _snapshot(variables) == before, "analyze changed a variable's value"
    truth = tape_truth(fn, variables, *args, **kwargs)  # may assign variables (EMA, BN statistics)
    after_tape = _snapshot(variables)
    second = flowcheck.analyze(fn, *args, **kwargs)
    problems = [d for d in (_diff(first, variables, truth, "before"), _diff(second, variables, truth, "after")) if d]
    if problems:
        pytest.fail("\n\n".join(problems))
    check = second.verify()
    changed = [_name(v) for v, a, b in zip(variables, after_tape, _snapshot(variables)) if a != b]
    assert not changed, f"verify() did not restore {changed}"
    assert check.agrees, "verify() disagrees: " + ", ".join(
        f"{c.name}: predicted {c.predicted}, tape {c.gradient}" for c in check.disagreements
    )
    return second


# A restored SavedModel's functions keep no tracebacks: their barriers name the line that calls them.
_RESTORED = {"saved_model_loaded_and_finetuned": "loaded(x)", "saved_model_restored_non_trainable_variables": "loaded(x)"}
_USER_DIRS = (Path(__file__).resolve().parent, Path(corpus_cases.SEED_PATH).parent)


def assert_blocked_are_explained(report: flowcheck.Report, case_id: str) -> None:
    """Every blocked variable names what cuts it: a barrier op at a line of the user's code.

    A plain callable's eager call may cut where its graph does not (an untaken branch, a
    ``float()``): then the report's reason in words (``eager_difference``) explains it.
    """
    for r in report.variables:
        if r.verdict is not flowcheck.Verdict.BLOCKED:
            continue
        assert r.barriers or r.eager_difference, f"{r.name} is blocked with no barrier and no reason"
        for b in r.barriers:
            assert b.source is not None, f"{r.name}: {b} names no line"
            assert Path(b.source.file).resolve().parent in _USER_DIRS, f"{r.name}: {b} is not at a line of the case"
            if case_id in _RESTORED:  # the op is in the restored function: the case's line is its call
                assert _RESTORED[case_id] in b.source.code and "loaded without its source" in b.detail, str(b)


@pytest.mark.parametrize("builder", CASES)
def test_corpus_case_agrees_with_tape(builder: Callable[[], Case], request: pytest.FixtureRequest) -> None:
    c = builder()
    report = assert_agrees_with_tape(c.fn, c.variables, *c.args, **c.kwargs)
    assert_blocked_are_explained(report, request.node.callspec.id)


@pytest.mark.slow  # about 40 s over the whole corpus: the quick loop keeps tests/test_eager.py's cases
@pytest.mark.parametrize("builder", CASES)
def test_corpus_case_called_eagerly_agrees_with_tape(builder: Callable[[], Case], request: pytest.FixtureRequest) -> None:
    """The Python of each ``tf.function`` case, called as a plain callable: judged as the user calls it, eagerly."""
    fresh = builder()  # the tape's answer before flowcheck ever ran this case's functions
    python_function = getattr(fresh.fn, "python_function", None)
    if python_function is None:
        pytest.skip("a plain callable already: the test above judges it as called")
    untouched = tape_truth(python_function, fresh.variables, *fresh.args, **fresh.kwargs)
    c = builder()
    report = assert_agrees_with_tape(c.fn.python_function, c.variables, *c.args, **c.kwargs)
    assert_blocked_are_explained(report, request.node.callspec.id)
    # A tape flowcheck ran must not change what TensorFlow answers afterwards (a nested
    # tf.function keeps the gradient functions its first differentiation chose).
    assert [report.receives_gradient(v) for v in c.variables] == untouched


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40


def test_seed_barrier_is_the_stop_gradient_on_its_line() -> None:
    seed = load_seed()
    report = flowcheck.analyze(seed.loss_fn, *seed.example_inputs)
    (barrier,) = report.result(seed.w1).barriers
    assert barrier.op_type == "StopGradient"
    assert barrier.kind is flowcheck.BarrierKind.STOP_GRADIENT
    assert barrier.in_user_code
    assert barrier.source is not None
    assert barrier.source.file.endswith("seed_stop_gradient.py")
    assert barrier.source.line == line_of(seed.loss_fn, "tf.stop_gradient(")


def test_seed_post_claim_after_one_sgd_step() -> None:
    seed = load_seed()
    before = [seed.w1.numpy().copy(), seed.w2.numpy().copy()]
    check = flowcheck.analyze(seed.loss_fn, *seed.example_inputs).verify(optimizer="sgd", learning_rate=1.0)
    assert check.agrees
    np.testing.assert_array_equal(seed.w1.numpy(), before[0])  # verify restored it
    grads = watched_gradients(seed.loss_fn, [seed.w1, seed.w2], *seed.example_inputs)
    assert grads[0] is None
    # One SGD step with learning rate 1, computed from the tape: the post's claim.
    keras_sgd = __import__("keras").optimizers.SGD(learning_rate=1.0)
    keras_sgd.apply_gradients([(grads[1], seed.w2)])
    np.testing.assert_array_equal(seed.w1.numpy(), np.ones((2, 3), np.float32))
    w2 = seed.w2.numpy()
    assert np.all(w2 == w2.flat[0])
    np.testing.assert_allclose(w2, before[1] - grads[1].numpy())
    assert {c.name: c.changed for c in check.variables} == {"w1": False, "w2": True}


def test_custom_gradient_none_barrier_is_named() -> None:
    c = next(p.values[0] for p in CASES if p.id == "custom_gradient_returns_none_for_one_input")()
    report = assert_agrees_with_tape(c.fn, c.variables, *c.args)
    _, b = c.variables
    assert tape_truth(c.fn, c.variables)[1] is False
    # b reaches the custom op twice: as an argument (its grad_fn returned None) and through the
    # forward result (never differentiated): one cut, one barrier, the grad_fn's None, at the call.
    (barrier,) = report.result(b).barriers
    assert (barrier.kind, barrier.op_type, barrier.in_user_code) == (flowcheck.BarrierKind.CUSTOM_GRADIENT_NONE, "IdentityN", True)
    assert barrier.source is not None and barrier.source.line == line_of(c.fn, "product(a, b)")


@tf.custom_gradient
def _quantize_act(x: tf.Tensor) -> Any:  # a quantizer whose grad_fn returns None: a bug of a user's QAT
    return tf.round(x * 4.0) / 4.0, lambda dy: None


def test_a_custom_gradient_returning_none_is_the_cut_not_an_op_inside_its_forward() -> None:
    w = tf.Variable(tf.ones((3, 3)), name="w")
    g = tf.Variable(tf.ones((3,)), name="g")

    @tf.function
    def loss_fn(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(_quantize_act(tf.matmul(x, w) * g))  # quantized activations

    report = assert_agrees_with_tape(loss_fn, [w, g], tf.ones((2, 3)))
    assert tape_truth(loss_fn, [w, g], tf.ones((2, 3))) == [False, False]
    # The Round inside the forward function is never differentiated: the custom op is the cut, at its call.
    call_line = line_of(loss_fn, "# quantized activations")
    for v in (w, g):
        (barrier,) = report.result(v).barriers
        assert (barrier.kind, barrier.op_type) == (flowcheck.BarrierKind.CUSTOM_GRADIENT_NONE, "IdentityN")
        assert barrier.source is not None and barrier.source.line == call_line


BARRIERS = [
    # case id, variable position, op type, kind, text of the user line the barrier is on
    ("integer_cast_round_trip", 0, "Cast", flowcheck.BarrierKind.NONE_GRADIENT, "tf.cast(tf.cast(a * 10.0, tf.int32)"),
    ("argmax_and_one_hot_of_argmax", 0, "ArgMax", flowcheck.BarrierKind.NONE_GRADIENT, "idx = tf.argmax("),
    ("nested_tf_function_outputs_partly_unused", 2, "StopGradient", flowcheck.BarrierKind.STOP_GRADIENT, "tf.stop_gradient(tf.reduce_sum(c * x))"),
    ("cond_taken_and_untaken_branches", 2, "Greater", flowcheck.BarrierKind.NOT_DIFFERENTIABLE, "tf.reduce_sum(c) > -100.0"),
    ("variables_passed_as_arguments", 1, "Round", flowcheck.BarrierKind.NONE_GRADIENT, 'tf.round(extra["r"])'),
    ("py_function_and_numpy_function", 1, "PyFunc", flowcheck.BarrierKind.NOT_DIFFERENTIABLE, "tf.numpy_function("),
    ("dqn_target_network_stop_gradient", 4, "StopGradient", flowcheck.BarrierKind.STOP_GRADIENT, "bootstrap = tf.stop_gradient(bootstrap)"),
    ("grad_pass_through_round_unique_dedup_ragged_lookup_and_max_norm", 1, "Round", flowcheck.BarrierKind.NONE_GRADIENT, "tf.round(rounded * 4.0)"),
    ("keras_conv1d_and_conv2d_transpose_depthwise_behind_stop_gradient", 2, "StopGradient", flowcheck.BarrierKind.STOP_GRADIENT, "tf.stop_gradient(dw(c2(ct(x2))))"),
    # Called eagerly, each loop's body cuts what the traced loop gives zeros: the op in the body, on its line.
    ("eager_callable_loop_bodies_cut_by_stop_gradient_argmax_and_an_integer_cast", 1, "StopGradient", flowcheck.BarrierKind.STOP_GRADIENT, "tf.stop_gradient(r * stopped)"),
    ("eager_callable_loop_bodies_cut_by_stop_gradient_argmax_and_an_integer_cast", 2, "Cast", flowcheck.BarrierKind.NONE_GRADIENT, "tf.cast(tf.cast(int_only * 3.0"),
    ("eager_callable_loop_bodies_cut_by_stop_gradient_argmax_and_an_integer_cast", 4, "ArgMax", flowcheck.BarrierKind.NONE_GRADIENT, "token = tf.argmax(tf.matmul(h, proj)"),
    # A value written into a slice of a variable, or scattered into it, is not what a later read differentiates.
    ("sliced_and_scattered_writes_from_variables_then_reads", 1, "ResourceStridedSliceAssign", flowcheck.BarrierKind.ASSIGN, "target[0].assign("),
    ("sliced_and_scattered_writes_from_variables_then_reads", 3, "ResourceScatterNdAdd", flowcheck.BarrierKind.ASSIGN, "target.scatter_nd_add("),
]


@pytest.mark.parametrize(("case_id", "position", "op_type", "kind", "needle"), BARRIERS, ids=[f"{b[0]}-{b[1]}" for b in BARRIERS])
def test_barrier_names_the_op_and_the_user_line(case_id: str, position: int, op_type: str, kind: flowcheck.BarrierKind, needle: str) -> None:
    param = next(p for p in CASES if p.id == case_id)
    builder = param.values[0]
    c = builder()
    v = c.variables[position]
    assert tape_truth(c.fn, c.variables, *c.args, **c.kwargs)[position] is False
    report = flowcheck.analyze(c.fn, *c.args, **c.kwargs)
    (barrier,) = report.result(v).barriers
    assert (barrier.op_type, barrier.kind, barrier.in_user_code) == (op_type, kind, True)
    where = inspect.getsourcefile(builder)
    assert where is not None and barrier.source is not None and Path(barrier.source.file).resolve() == Path(where).resolve()
    assert barrier.source.line == line_of(where, needle)


def test_keras_layers_built_during_flowchecks_own_trace() -> None:
    # Nothing is built before analyze: the layers create their variables in flowcheck's trace.
    keras = __import__("keras")
    model = keras.Sequential([keras.layers.Dense(3, name="lazy_hidden"), keras.layers.Dense(1, name="lazy_out")])
    detached = keras.layers.Dense(1, name="lazy_detached")

    @tf.function
    def lazy_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(model(x)) + tf.reduce_mean(tf.stop_gradient(detached(x)))

    x = tf.ones((2, 4))
    report = flowcheck.analyze(lazy_loss, x)
    variables = [*model.variables, *detached.variables]
    assert len(variables) == 6
    truth = tape_truth(lazy_loss, variables, x)
    assert [report.receives_gradient(v) for v in variables] == truth
    assert report.verify().agrees
