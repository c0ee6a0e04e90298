"""Corpus cases from the differential sweep of TensorFlow's ops: kinds of op the other cases miss.

Each case gives every op its own variable, so that each verdict says what that op does to a
gradient (receives, zeros, None, or an integer result that cuts it). The verdicts are never written
here: ``tests/test_corpus.py`` asks the tape.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from corpus_cases import Case, case, const, var


def _image(name: str, seed: int, channels: int = 1) -> tf.Variable:
    return tf.Variable(np.random.default_rng(seed).uniform(size=(1, 4, 4, channels)).astype(np.float32), name=name)


@case("max_pool_with_argmax_fractional_pools_dilation_and_erosion", pytest.mark.slow)  # about 2 s
def pools() -> Case:
    pooled, table, fractional, dilated, dilation_filter, eroded = (
        _image("argmax_pooled", 0), var(16, name="indexed_by_argmax"), _image("fractional_pooled", 1),
        _image("dilated", 2), var(2, 2, 1, name="dilation_filter", seed=3), _image("eroded", 4),
    )

    @tf.function
    def pool_loss() -> tf.Tensor:
        values, argmax = tf.nn.max_pool_with_argmax(pooled, 2, 2, "VALID")
        total = tf.reduce_sum(values) + tf.reduce_sum(tf.gather(table, tf.reshape(argmax, [-1])))
        total += tf.reduce_sum(tf.nn.fractional_max_pool(fractional, [1, 1.5, 1.5, 1], seed=1)[0])
        total += tf.reduce_sum(tf.nn.dilation2d(dilated, dilation_filter, [1, 1, 1, 1], "SAME", "NHWC", [1, 1, 1, 1]))
        return total + tf.reduce_sum(tf.nn.erosion2d(eroded, tf.stop_gradient(dilation_filter), [1, 1, 1, 1], "SAME", "NHWC", [1, 1, 1, 1]))

    return Case(pool_loss, [pooled, table, fractional, dilated, dilation_filter, eroded])


@case("random_samplers_with_variable_parameters_gamma_poisson_binomial_multinomial_shuffle", pytest.mark.slow)  # about 2 s
def samplers() -> Case:
    alpha, stateless_alpha, lam, probs, logits, shuffled, cropped = (
        var(3, name=n, seed=i) for i, n in enumerate(
            ["gamma_alpha", "stateless_gamma_alpha", "poisson_rate", "binomial_probs", "multinomial_logits", "shuffled", "cropped"])
    )
    table = var(3, name="table_indexed_by_samples", seed=9)

    @tf.function
    def sampling_loss() -> tf.Tensor:
        total = tf.reduce_sum(tf.random.gamma([2], tf.abs(alpha) + 1.0, seed=1))
        total += tf.reduce_sum(tf.random.stateless_gamma([2, 3], [1, 2], alpha=tf.abs(stateless_alpha) + 1.0))
        total += tf.reduce_sum(tf.random.stateless_poisson([2, 3], [1, 2], tf.abs(lam) + 1.0, dtype=tf.float32))
        total += tf.reduce_sum(tf.random.stateless_binomial([3], [1, 2], 5.0, tf.sigmoid(probs), output_dtype=tf.float32))
        samples = tf.random.categorical(logits[None, :], 4, seed=2)[0]
        total += tf.reduce_sum(tf.gather(table, samples))
        total += tf.reduce_sum(tf.random.shuffle(shuffled, seed=3) * tf.range(3.0))
        return total + tf.reduce_sum(tf.image.random_crop(cropped, [2], seed=4))

    return Case(sampling_loss, [alpha, stateless_alpha, lam, probs, logits, shuffled, cropped, table])


@case("signal_dct_inverse_stft_mfccs_and_overlap_and_add", pytest.mark.slow)  # about 5 s
def signals() -> Case:
    cosine, wave, spectrum, framed = var(2, 8, name="dct_input"), var(1, 16, name="stft_wave", seed=2), \
        var(2, 8, name="log_mel", seed=3), var(2, 6, name="framed_signal", seed=4)

    @tf.function
    def signal_loss() -> tf.Tensor:
        total = tf.reduce_sum(tf.signal.dct(cosine) ** 2)
        total += tf.reduce_sum(tf.signal.inverse_stft(tf.signal.stft(wave, 8, 4), 8, 4))
        total += tf.reduce_sum(tf.signal.mfccs_from_log_mel_spectrograms(spectrum))
        return total + tf.reduce_sum(tf.signal.overlap_and_add(tf.signal.frame(framed, 2, 1), 1))

    return Case(signal_loss, [cosine, wave, spectrum, framed])


@case("image_hsv_yiq_and_uint8_round_trip")
def colors() -> Case:
    hsv, yiq, quantized = _image("hsv_image", 0, 3), _image("yiq_image", 1, 3), _image("uint8_image", 4, 3)

    @tf.function
    def color_loss() -> tf.Tensor:
        total = tf.reduce_sum(tf.image.hsv_to_rgb(hsv)) + tf.reduce_sum(tf.image.yiq_to_rgb(tf.image.rgb_to_yiq(yiq)) ** 2)
        as_bytes = tf.image.convert_image_dtype(quantized, tf.uint8)
        return total + tf.reduce_sum(tf.image.convert_image_dtype(as_bytes, tf.float32))

    return Case(color_loss, [hsv, yiq, quantized])


@case("special_functions_dawsn_expint_fresnel_spence_bessel_and_nextafter")
def special() -> Case:
    names = ["dawsn_x", "expint_x", "fresnel_x", "spence_x", "bessel_k0_x", "nextafter_x", "nextafter_toward"]
    x = [var(3, name=n, seed=i) for i, n in enumerate(names)]

    @tf.function
    def special_loss() -> tf.Tensor:
        total = tf.reduce_sum(tf.math.special.dawsn(x[0])) + tf.reduce_sum(tf.math.special.expint(tf.abs(x[1]) + 0.5))
        total += tf.reduce_sum(tf.math.special.fresnel_cos(x[2])) + tf.reduce_sum(tf.math.special.spence(tf.abs(x[3]) + 0.5))
        total += tf.reduce_sum(tf.math.special.bessel_k0(tf.abs(x[4]) + 0.5))
        return total + tf.reduce_sum(tf.math.nextafter(x[5], x[6]))

    return Case(special_loss, x)


@case("no_nan_division_xlogy_segment_prod_and_cumulative_logsumexp")
def safe_math() -> Case:
    names = ["multiplied_no_nan", "zero_or_nan_factor", "divided_no_nan", "divisor", "xlogy_x", "xlogy_y", "segment_prod_data", "cumulative_lse"]
    v = [var(3, name=n, seed=i) for i, n in enumerate(names)]

    @tf.function
    def safe_loss() -> tf.Tensor:
        total = tf.reduce_sum(tf.math.multiply_no_nan(v[0], v[1] * 0.0))
        total += tf.reduce_sum(tf.math.divide_no_nan(v[2], v[3]))
        total += tf.reduce_sum(tf.math.xlogy(v[4], tf.abs(v[5]) + 1.0))
        total += tf.reduce_sum(tf.math.unsorted_segment_prod(v[6], [0, 1, 0], 2))
        return total + tf.reduce_sum(tf.math.cumulative_logsumexp(v[7]))

    return Case(safe_loss, v)


@case("indices_from_variables_lower_bound_histogram_bins_hash_buckets_edit_distance")
def searches() -> Case:
    sorted_src, looked_up, binned, bin_table, hashed, hash_table, hypothesis, truth = (
        var(4, name=n, seed=i) for i, n in enumerate(
            ["bound_source", "bound_table", "binned", "bin_table", "hashed", "hash_table", "hypothesis", "truth_values"])
    )

    @tf.function
    def search_loss() -> tf.Tensor:
        positions = tf.raw_ops.LowerBound(sorted_inputs=tf.sort(sorted_src)[None], values=sorted_src[None] * 0.5)[0]
        total = tf.reduce_sum(tf.gather(looked_up, tf.minimum(positions, 3)))
        total += tf.reduce_sum(tf.gather(bin_table, tf.histogram_fixed_width_bins(binned, [-1.0, 1.0], 4)))
        buckets = tf.strings.to_hash_bucket_fast(tf.strings.as_string(hashed, precision=2), 4)
        total += tf.reduce_sum(tf.gather(hash_table, buckets))
        distance = tf.raw_ops.EditDistance(
            hypothesis_indices=[[0, 0]], hypothesis_values=hypothesis[:1], hypothesis_shape=[1, 1],
            truth_indices=[[0, 0]], truth_values=truth[:1], truth_shape=[1, 1])
        return total + tf.reduce_sum(distance)

    return Case(search_loss, [sorted_src, looked_up, binned, bin_table, hashed, hash_table, hypothesis, truth])


@case("tridiagonal_solve_and_matmul_isotonic_regression_and_tensor_list_ops")
def solvers() -> Case:
    diagonals, rhs, multiplied, isotonic, listed, stopped_list = (
        var(3, 3, name="tridiagonals"), var(3, 1, name="tridiagonal_rhs", seed=2),
        var(3, 3, name="tridiagonal_multiplied", seed=6), var(2, 3, name="isotonic", seed=3),
        var(2, 3, name="tensor_list_items", seed=4), var(2, 3, name="tensor_list_stopped", seed=5),
    )

    @tf.function
    def solver_loss(b: tf.Tensor) -> tf.Tensor:
        total = tf.reduce_sum(tf.linalg.tridiagonal_solve(diagonals + tf.constant([[0.0], [3.0], [0.0]]), rhs))
        total += tf.reduce_sum(tf.linalg.tridiagonal_matmul(multiplied, b))
        total += tf.reduce_sum(tf.nn.isotonic_regression(isotonic)[0] ** 2)
        items = tf.raw_ops.TensorListFromTensor(tensor=listed, element_shape=[3])
        items = tf.raw_ops.TensorListSetItem(input_handle=items, index=0, item=tf.stop_gradient(stopped_list[0]))
        return total + tf.reduce_sum(tf.raw_ops.TensorListStack(input_handle=items, element_dtype=tf.float32, element_shape=[3]))

    return Case(solver_loss, [diagonals, rhs, multiplied, isotonic, listed, stopped_list], (const(3, 1),))


@case("sliced_and_scattered_writes_from_variables_then_reads")
def scattered_writes() -> Case:
    target, sliced_in, scattered_in, nd_in, maxed_in = (
        var(2, 3, name=n, seed=i) for i, n in enumerate(["written_target", "sliced_in", "scattered_in", "nd_added", "scatter_maxed"])
    )

    @tf.function
    def write_then_read_loss() -> tf.Tensor:
        target[0].assign(sliced_in[0] * 2.0)
        target.scatter_update(tf.IndexedSlices(scattered_in[:1], [1]))
        target.scatter_nd_add([[0, 0]], nd_in[0, :1])
        target.scatter_max(tf.IndexedSlices(maxed_in[1:], [1]))
        return tf.reduce_sum(target * target)

    return Case(write_then_read_loss, [target, sliced_in, scattered_in, nd_in, maxed_in])
