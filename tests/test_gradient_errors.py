"""Ops with no registered gradient: flowcheck predicts exactly when the tape raises.

TensorFlow differentiates a ``tf.function`` with respect to all its inputs of a float dtype, so an
op without a gradient (``DenseBincount``, ``TruncateMod``, ``PreventGradient``) makes the tape
raise ``LookupError: No gradient defined for operation ...`` whenever a gradient reaches it and it
is downstream of such an input -- even of a constant argument, even behind a ``tf.stop_gradient``
on its input -- and answers normally otherwise. Whether the tape raises is computed here, per case;
when it does not, the verdicts are compared as in the main corpus. Each case is judged twice: as a
``tf.function`` (as traced) and as the plain callable the user calls eagerly, where the tape watches
the variables alone, so an op reached only from an argument raises nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import tensorflow as tf

import flowcheck
from flowcheck.testing import GradientFlowAssertionError
from corpus_cases import Case, const, var
from test_corpus import assert_agrees_with_tape, tape_truth

LABELS = tf.constant([1, 2, 0])


def bincount(weights: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.math.bincount(LABELS, weights=weights, minlength=4))


def _case(body: Callable[..., tf.Tensor], *, frozen: bool = False) -> Callable[[], Case]:
    def build() -> Case:
        w, v = var(3, name="w"), var(3, name="v", seed=2)
        ice = var(3, name="frozen", seed=3, trainable=False)
        captured = const(3, seed=4)
        fn = tf.function(lambda x: body(x, w, v, ice if frozen else captured))
        return Case(fn, [w, v, ice], (const(3, seed=5),))

    return build


@tf.function
def _inner(t: tf.Tensor) -> tf.Tensor:
    return bincount(t)


CASES = [
    pytest.param(_case(lambda x, w, v, c: bincount(w)), id="weights_from_a_variable"),
    pytest.param(_case(lambda x, w, v, c: bincount(x * 2.0) + tf.reduce_sum(w)), id="weights_from_a_constant_argument"),
    pytest.param(_case(lambda x, w, v, c: bincount(c) + tf.reduce_sum(w)), id="weights_from_a_captured_constant"),
    pytest.param(_case(lambda x, w, v, c: bincount(tf.ones(3)) + tf.reduce_sum(w)), id="weights_made_inside"),
    pytest.param(_case(lambda x, w, v, c: bincount(tf.stop_gradient(w)) + tf.reduce_sum(v)), id="stop_gradient_on_the_input"),
    pytest.param(_case(lambda x, w, v, c: tf.stop_gradient(bincount(w)) + tf.reduce_sum(v)), id="stop_gradient_on_the_result"),
    pytest.param(_case(lambda x, w, v, c: tf.cast(tf.math.bincount(tf.cast(tf.abs(w), tf.int32), minlength=4)[0], tf.float32) + tf.reduce_sum(v)),
                 id="integer_input_only"),
    pytest.param(_case(lambda x, w, v, c: _inner(tf.ones(3)) + tf.reduce_sum(v)), id="nested_function_of_a_constant"),
    pytest.param(_case(lambda x, w, v, c: tf.cond(tf.reduce_sum(x) > -1e9, lambda: bincount(w), lambda: tf.reduce_sum(w))),
                 id="in_a_cond_branch"),
    pytest.param(_case(lambda x, w, v, c: tf.cond(tf.reduce_sum(x) > -1e9, lambda: bincount(tf.ones(3)), lambda: tf.reduce_sum(w))),
                 id="cond_branch_of_constants"),
    pytest.param(_case(lambda x, w, v, c: tf.while_loop(lambda i, t: i < 2, lambda i, t: (i + 1, t + bincount(w * t)), [0, 1.0])[1]),
                 id="in_a_while_body"),
    pytest.param(_case(lambda x, w, v, c: bincount(c) + tf.reduce_sum(w), frozen=True), id="weights_from_an_unwatched_variable"),
    pytest.param(_case(lambda x, w, v, c: tf.reduce_sum(tf.raw_ops.PreventGradient(input=w * 2.0)) + tf.reduce_sum(v)),
                 id="prevent_gradient"),
    pytest.param(_case(lambda x, w, v, c: tf.reduce_sum(tf.truncatemod(x, 0.7)) + tf.reduce_sum(w)), id="truncatemod_of_an_argument"),
    # Real-world ops without a gradient: resizing by area (ResizeArea), an LU decomposition (Lu).
    pytest.param(_case(lambda x, w, v, c: tf.reduce_sum(tf.image.resize(tf.reshape(tf.tile(w, [4]), [1, 2, 6, 1]), (1, 3), method="area"))
                       + tf.reduce_sum(v)), id="resize_area_of_a_variable"),
    pytest.param(_case(lambda x, w, v, c: tf.reduce_sum(tf.linalg.lu(tf.linalg.diag(w) + 2.0)[0]) + tf.reduce_sum(v)), id="lu_of_a_variable"),
    pytest.param(_case(lambda x, w, v, c: tf.reduce_sum(tf.image.draw_bounding_boxes(tf.reshape(tf.tile(w, [16]), [1, 4, 4, 3]),
                                                                                     tf.sigmoid(tf.reshape(tf.tile(v, [2]), [1, 1, 6]))[..., :4],
                                                                                     [[1.0, 0.0, 0.0]]))),
                 id="draw_bounding_boxes_of_variables"),
    pytest.param(_case(lambda x, w, v, c: tf.reduce_sum(tf.image.adjust_saturation(tf.reshape(tf.tile(w, [4]), [1, 2, 2, 3]), 2.0))
                       + tf.reduce_sum(tf.image.adjust_hue(tf.reshape(tf.tile(tf.stop_gradient(v), [4]), [1, 2, 2, 3]), 0.1))),
                 id="adjust_saturation_of_a_variable_and_hue_behind_stop_gradient"),
    pytest.param(_case(lambda x, w, v, c: tf.reduce_sum(tf.image.resize(tf.reshape(x, [1, 1, 3, 1]), (1, 2), method="area"))
                       + tf.reduce_sum(w)), id="resize_area_of_an_argument"),
    # NeRF's hierarchical sampling: LowerBound has no gradient, but its int32 indices never carry one back to it.
    pytest.param(_case(lambda x, w, v, c: _sampled(w, v, x)), id="searchsorted_of_a_variable_cdf"),
    # Gradients that exist but refuse some settings or shapes (tensorflow/python/ops/linalg_grad.py):
    # the tape raises NotImplementedError or ValueError instead of LookupError, at the same places.
    pytest.param(_case(lambda x, w, v, c: tf.reduce_sum(tf.linalg.qr(_tall(w), full_matrices=True)[0]) + tf.reduce_sum(v)),
                 id="qr_full_matrices_of_a_tall_variable"),
    pytest.param(_case(lambda x, w, v, c: tf.reduce_sum(tf.linalg.qr(_tall(w))[0]) + tf.reduce_sum(tf.linalg.qr(_tall(v), full_matrices=True)[0])),
                 id="qr_reduced_then_full_matrices_in_one_function"),
    pytest.param(_case(lambda x, w, v, c: tf.reduce_sum(tf.linalg.qr(tf.linalg.diag(w) + 2.0, full_matrices=True)[0]) + tf.reduce_sum(v)),
                 id="qr_full_matrices_of_a_square_variable"),
    pytest.param(_case(lambda x, w, v, c: tf.reduce_sum(tf.linalg.svd(_tall(x), full_matrices=True)[1]) + tf.reduce_sum(w)),
                 id="svd_full_matrices_of_an_argument"),
    pytest.param(_case(lambda x, w, v, c: tf.reduce_sum(tf.linalg.svd(_tall(w))[1]) + tf.reduce_sum(tf.linalg.svd(_tall(v), full_matrices=True)[1])),
                 id="svd_reduced_then_full_matrices_in_one_function"),
    pytest.param(_case(lambda x, w, v, c: tf.reduce_sum(tf.linalg.lstsq(tf.linalg.diag(w) + 2.0, tf.reshape(v, [3, 1]), fast=False))),
                 id="lstsq_fast_false_of_variables"),
    pytest.param(_case(lambda x, w, v, c: tf.reduce_sum(tf.linalg.lstsq(tf.linalg.diag(w) + 2.0, tf.reshape(v, [3, 1])))
                       + tf.stop_gradient(tf.reduce_sum(tf.linalg.lstsq(tf.linalg.diag(v) + 2.0, tf.reshape(w, [3, 1]), fast=False)))),
                 id="lstsq_fast_and_fast_false_under_stop_gradient"),
]


def _sampled(w: tf.Tensor, v: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """``v`` at the bins where ``sigmoid(x)`` falls in the cdf of ``softmax(w)``: w is cut at the search."""
    return tf.reduce_sum(tf.gather(v, tf.searchsorted(tf.cumsum(tf.nn.softmax(w)), tf.sigmoid(x))))


def _tall(t: tf.Tensor) -> tf.Tensor:
    """A 6 x 2 matrix of a length-3 vector: QR and SVD of full matrices have no gradient for it."""
    return tf.reshape(tf.tile(t, [4]), [6, 2]) + tf.constant([[1.0, 0.0], [0.0, 1.0]] * 3)


def _tape_error(c: Case) -> str | None:
    """The name of the error the tape raises (None when it answers)."""
    try:
        tape_truth(c.fn, c.variables, *c.args)
    except (LookupError, NotImplementedError, ValueError) as exc:
        return type(exc).__name__
    return None


def _plain(builder: Callable[[], Case]) -> Case:
    c = builder()
    return Case(c.fn.python_function, c.variables, c.args)


@pytest.mark.parametrize("eager", [False, True], ids=["traced", "plain_callable"])
@pytest.mark.parametrize("builder", CASES)
def test_gradient_errors_are_predicted_exactly_when_the_tape_raises(builder: Callable[[], Case], eager: bool) -> None:
    c = _plain(builder) if eager else builder()
    raises = _tape_error(c)
    report = flowcheck.analyze(c.fn, *c.args)
    assert bool(report.gradient_errors) == bool(raises), report.gradient_errors
    if not raises:
        assert_agrees_with_tape(c.fn, c.variables, *c.args)
        return
    assert all(b.kind is flowcheck.BarrierKind.NO_GRADIENT and b.in_user_code for b in report.gradient_errors)
    before = [v.numpy().tobytes() for v in c.variables]
    check = report.verify()
    assert check.agrees and check.error is not None and check.error.startswith(raises)
    assert [v.numpy().tobytes() for v in c.variables] == before


def test_an_op_without_a_gradient_whose_outputs_are_integers_is_cut_by_their_dtype() -> None:
    (builder,) = [p.values[0] for p in CASES if p.id == "searchsorted_of_a_variable_cdf"]
    c = builder()
    assert _tape_error(c) is None  # the tape answers: no gradient reaches LowerBound
    report = flowcheck.analyze(c.fn, *c.args)
    assert_agrees_with_tape(c.fn, c.variables, *c.args)
    cut = [r for r in report.variables if not r.receives and r.barriers]
    assert cut and all(b.op_type == "LowerBound" and b.kind is flowcheck.BarrierKind.DTYPE for r in cut for b in r.barriers)
    assert all(b.detail == "its int32 outputs carry no gradient" for r in cut for b in r.barriers)


def test_the_error_names_the_op_on_the_users_line() -> None:
    c = CASES[0].values[0]()
    report = flowcheck.analyze(c.fn, *c.args)
    (error,) = report.gradient_errors
    assert (error.op_type, error.op_name) == ("DenseBincount", "bincount/DenseBincount")
    assert error.source is not None and error.source.file == __file__
    assert error.source.code == "return tf.reduce_sum(tf.math.bincount(LABELS, weights=weights, minlength=4))"


def test_assert_gradient_flow_fails_on_a_step_that_cannot_be_differentiated() -> None:
    c = CASES[1].values[0]()
    with pytest.raises(GradientFlowAssertionError) as caught:
        flowcheck.assert_gradient_flow(c.fn, *c.args, receives="w")
    message = str(caught.value)
    assert message.splitlines()[0].endswith("raises LookupError (no gradient defined): a gradient reaches these ops and they have none")
    assert "    DenseBincount 'bincount/DenseBincount' at " in message
    assert "not the input" in message


def test_a_verification_that_raises_unpredicted_disagrees() -> None:
    # Were the analysis to miss an error, verify() would say so rather than crash.
    c = CASES[0].values[0]()
    report = flowcheck.analyze(c.fn, *c.args)
    report.gradient_errors = ()
    check = report.verify()
    assert not check.agrees
    assert check.error is not None
    assert check.problems == (f"the tape raised {check.error}, which the analysis did not predict",)


def test_a_gradient_that_refuses_is_named_with_its_error() -> None:
    """QR of full matrices of a tall matrix: the error says what TensorFlow raises, not "no gradient defined"."""
    c = next(p.values[0] for p in CASES if p.id == "qr_full_matrices_of_a_tall_variable")()
    report = flowcheck.analyze(c.fn, *c.args)
    (error,) = report.gradient_errors
    assert error.op_type == "Qr" and "raises NotImplementedError: QrGrad not implemented" in error.detail
    with pytest.raises(GradientFlowAssertionError) as caught:
        flowcheck.assert_gradient_flow(c.fn, *c.args, receives="v")
    assert str(caught.value).splitlines()[0].endswith("raises NotImplementedError: a gradient reaches these ops and they have none")


def test_qr_of_a_dynamic_shape_refuses_as_the_tape_does() -> None:
    """An ``input_signature`` with a None dimension: QR's gradient refuses dynamic shapes when traced."""
    w, v = var(2, 2, name="w"), var(2, name="v", seed=2)

    @tf.function(input_signature=[tf.TensorSpec([None, 2])])
    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.linalg.qr(tf.matmul(x, w))[1]) + tf.reduce_sum(v)

    c = Case(loss, [w, v], (const(3, 2),))
    raises = _tape_error(c)
    report = flowcheck.analyze(c.fn, *c.args)
    assert bool(report.gradient_errors) == bool(raises)
    check = report.verify()
    assert check.agrees and (check.error or "").startswith(raises or "")
