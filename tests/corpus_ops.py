"""Corpus cases of TensorFlow ops users meet in real models, each judged against the tape in the test.

Sampling and decoding, image ops, pooling, linear algebra, special functions, sparse and ragged
values, complex numbers, ``tf.experimental.numpy``, integer indices computed from variables, and
the ways a variable is read. Each builder returns a :class:`corpus_cases.Case`; the verdicts are
never written here.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow.experimental.numpy as tnp

from corpus_cases import Case, case, const, var


def _near_identity(name: str, seed: int) -> tf.Variable:
    noise = np.random.default_rng(seed).normal(size=(3, 3)).astype(np.float32) * 0.1
    return tf.Variable(np.eye(3, dtype=np.float32) * 2 + noise, name=name)


@case("segment_reductions_with_ids_computed_from_a_variable")
def segments() -> Case:
    data, ids_src = var(6, 2, name="segment_data"), var(6, name="segment_ids_source", seed=2)

    @tf.function
    def segment_loss() -> tf.Tensor:
        ids = tf.cast(tf.abs(ids_src) * 3.0, tf.int32) % 3
        return tf.reduce_sum(tf.math.unsorted_segment_mean(data, ids, 3) * 2.0) + tf.reduce_sum(
            tf.math.unsorted_segment_max(data, ids, 3)
        )

    return Case(segment_loss, [data, ids_src])


@case("image_resize_crop_and_resize_and_pooling")
def resize_and_pool() -> Case:
    names = ["nearest_image", "bilinear_image", "bicubic_image", "crop_image", "crop_boxes", "max_pooled", "avg_pooled"]
    shapes = [(1, 4, 4, 1)] * 4 + [(2, 4), (1, 4, 4, 1), (1, 4, 4, 1)]
    nearest, bilinear, bicubic, image, boxes, maxed, averaged = (
        var(*s, name=n, seed=i) for i, (n, s) in enumerate(zip(names, shapes))
    )

    @tf.function
    def image_loss() -> tf.Tensor:
        total = tf.reduce_sum(tf.image.resize(nearest, (8, 8), method="nearest") * 1.5)
        total += tf.reduce_sum(tf.image.resize(bilinear, (6, 6)) * 1.5)
        total += tf.reduce_sum(tf.image.resize(bicubic, (6, 6), method="bicubic") * 1.5)
        crops = tf.image.crop_and_resize(image, tf.sort(tf.sigmoid(boxes), axis=-1), tf.zeros(2, tf.int32), (3, 3))
        total += tf.reduce_sum(crops * crops)
        return total + tf.reduce_sum(tf.nn.max_pool2d(maxed, 2, 2, "VALID")) + tf.reduce_sum(tf.nn.avg_pool2d(averaged, 2, 2, "SAME"))

    return Case(image_loss, [nearest, bilinear, bicubic, image, boxes, maxed, averaged])


@case("sampled_action_indexes_a_table_and_logits_are_cut")
def categorical() -> Case:
    logits_w, head = var(3, 4, name="categorical_logits"), var(4, 2, name="categorical_head", seed=2)

    @tf.function
    def sampling_loss(x: tf.Tensor) -> tf.Tensor:
        logits = tf.matmul(x, logits_w)
        sample = tf.random.stateless_categorical(logits, 1, seed=[1, 2])[:, 0]
        log_prob = tf.reduce_sum(tf.nn.log_softmax(logits) * tf.one_hot(sample, 4))
        return tf.reduce_sum(tf.gather(head, sample)) + tf.stop_gradient(log_prob)

    return Case(sampling_loss, [logits_w, head], (const(2, 3),))


@case("linalg_decompositions_svd_eigh_qr_det_slogdet_cholesky", pytest.mark.slow)
def decompositions() -> Case:
    names = ["svd_m", "eigh_m", "qr_m", "det_m", "slogdet_m", "cholesky_m", "svd_vectors_m", "eigh_vectors_m"]
    m = [_near_identity(n, i) for i, n in enumerate(names)]

    @tf.function
    def linalg_loss() -> tf.Tensor:
        total = tf.reduce_sum(tf.linalg.svd(m[0], compute_uv=False)) + tf.reduce_sum(tf.linalg.eigh(m[1] + tf.transpose(m[1]))[0])
        sign, logdet = tf.linalg.slogdet(m[4])
        total += tf.reduce_sum(tf.linalg.qr(m[2])[1]) + tf.linalg.det(m[3]) + logdet + sign
        total += tf.reduce_sum(tf.linalg.cholesky(m[5] @ tf.transpose(m[5]) + tf.eye(3)))
        _, u, _ = tf.linalg.svd(m[6])
        _, vectors = tf.linalg.eigh(m[7] + tf.transpose(m[7]))
        return total + tf.reduce_sum(u[:, 0] ** 2) + tf.reduce_sum(vectors**3)

    return Case(linalg_loss, m)


@case("lgamma_digamma_igamma_polygamma_order_bessel_erfinv")
def gamma_family() -> Case:
    names = ["lgamma_x", "digamma_x", "igamma_a", "igamma_x", "polygamma_x", "bessel_x", "erfinv_x", "polygamma_order"]
    v = [var(3, name=n, seed=i) for i, n in enumerate(names)]

    @tf.function
    def special_loss() -> tf.Tensor:
        def positive(t: tf.Tensor) -> tf.Tensor:
            return tf.abs(t) + 1.0

        total = tf.math.lgamma(positive(v[0])) + tf.math.digamma(positive(v[1])) + tf.math.igamma(positive(v[2]), positive(v[3]))
        total += tf.math.polygamma(tf.round(positive(v[7])), positive(v[4]))  # the order gets no gradient
        return tf.reduce_sum(total + tf.math.bessel_i0e(v[5]) + tf.math.erfinv(tf.tanh(v[6]) * 0.5))

    return Case(special_loss, v)


@case("ctc_greedy_and_beam_search_decoders")
def ctc_decoders() -> Case:
    greedy_logits, beam_logits, scorer = var(5, 2, 4, name="greedy_logits"), var(5, 2, 4, name="beam_logits", seed=2), var(4, name="scorer", seed=3)

    @tf.function
    def decode_loss() -> tf.Tensor:
        decoded, neg_sum = tf.nn.ctc_greedy_decoder(greedy_logits, tf.constant([5, 5]))
        _, log_probs = tf.nn.ctc_beam_search_decoder(beam_logits, tf.constant([5, 5]), beam_width=3)
        labels = tf.cast(decoded[0].values, tf.float32)
        return tf.reduce_sum(neg_sum) + tf.reduce_sum(labels) + tf.reduce_sum(tf.gather(scorer, decoded[0].values)) + tf.reduce_sum(log_probs)

    return Case(decode_loss, [greedy_logits, beam_logits, scorer])


@case("complex_fft_real_imag_abs_angle")
def complex_values() -> Case:
    re, im, magnitude, angle = (var(4, name=n, seed=i) for i, n in enumerate(["fft_real", "fft_imag", "abs_real", "angle_real"]))

    @tf.function
    def spectral_loss() -> tf.Tensor:
        spectrum = tf.signal.fft(tf.complex(re, im))
        total = tf.reduce_sum(tf.math.real(spectrum) ** 2) + tf.reduce_sum(tf.math.imag(spectrum))
        total += tf.reduce_sum(tf.abs(tf.complex(magnitude, tf.zeros(4))))
        return total + tf.reduce_sum(tf.math.angle(tf.complex(angle, 1.0 + tf.zeros(4))))

    return Case(spectral_loss, [re, im, magnitude, angle])


@case("scatter_nd_and_gather_nd_with_computed_indices")
def scatter_gather_nd() -> Case:
    updates, index_src, table, base = var(2, name="scatter_updates"), var(2, name="index_source", seed=2), var(3, 3, name="gathered_table", seed=3), var(4, name="scatter_base", seed=4)

    @tf.function
    def indexed_loss() -> tf.Tensor:
        idx = tf.cast(tf.abs(index_src) * 3.0, tf.int32) % 3
        scattered = tf.scatter_nd(tf.stack([idx], 1), updates, [3])
        gathered = tf.gather_nd(table, tf.stack([idx, idx], 1))
        added = tf.tensor_scatter_nd_add(base, [[1]], [updates[0]])
        maxed = tf.tensor_scatter_nd_max(base, [[2]], [0.0])
        return tf.reduce_sum(scattered) + tf.reduce_sum(gathered) + tf.reduce_sum(added) + tf.reduce_sum(maxed)

    return Case(indexed_loss, [updates, index_src, table, base])


@case("relu6_maximum_ties_floor_ceil_rint_and_bool_cast")
def piecewise() -> Case:
    names = ["relu6_x", "max_tie_a", "max_tie_b", "floor_x", "ceil_x", "rint_x", "bool_cast_x", "min_x"]
    v = [var(3, name=n, seed=i) for i, n in enumerate(names)]

    @tf.function
    def piecewise_loss() -> tf.Tensor:
        total = tf.nn.relu6(v[0] * 100.0) + tf.maximum(v[1], v[1]) + tf.maximum(v[2] * 0.0, 0.0)
        total += tf.floor(v[3]) + tf.math.ceil(v[4]) + tf.math.rint(v[5])
        return tf.reduce_sum(total + tf.cast(tf.cast(v[6], tf.bool), tf.float32) + tf.minimum(v[7], 1e9))

    return Case(piecewise_loss, v)


@case("identity_n_check_numerics_ensure_shape_and_raw_ops")
def identities() -> Case:
    names = ["identity_n_a", "identity_n_b", "check_numerics_x", "ensure_shape_x", "raw_matmul_x", "raw_add_x"]
    v = [var(2, 2, name=n, seed=i) for i, n in enumerate(names)]

    @tf.function
    def identity_loss() -> tf.Tensor:
        a, b = tf.identity_n([v[0], v[1]])
        parts = (a, tf.debugging.check_numerics(v[2], "bad"), tf.ensure_shape(v[3], [2, 2]),
                 tf.raw_ops.MatMul(a=v[4], b=v[4]), tf.raw_ops.AddV2(x=v[5], y=1.0))
        return tf.add_n([tf.reduce_sum(t) for t in parts]) + tf.reduce_sum(tf.stop_gradient(b))

    return Case(identity_loss, v)


@case("float16_bfloat16_float64_casts_int32_size_only_and_frozen_variables")
def dtypes_and_reads() -> Case:
    half, brain, double = var(3, name="to_float16"), var(3, name="to_bfloat16", seed=2), tf.Variable(np.ones(3), name="float64_variable")
    frozen, counter, size_only = var(3, name="frozen", seed=3, trainable=False), tf.Variable([1, 2, 3], name="int32_counter"), var(4, name="size_only", seed=4)

    @tf.function
    def cast_loss(x: tf.Tensor) -> tf.Tensor:
        counter.assign_add([1, 1, 1])
        h = tf.cast(tf.reduce_sum(tf.cast(half, tf.float16) * tf.constant(2.0, tf.float16)), tf.float32)
        total = h + tf.cast(tf.reduce_sum(tf.cast(brain, tf.bfloat16)), tf.float32) + tf.cast(tf.reduce_sum(double), tf.float32)
        scale = tf.cast(tf.size(size_only), tf.float32)
        return total + tf.reduce_sum(frozen * x) * scale + tf.cast(tf.reduce_sum(counter), tf.float32)

    return Case(cast_loss, [half, brain, double, frozen, counter, size_only], (const(3),))


@case("sharded_embedding_lookup_and_sparse_combiners", pytest.mark.slow)
def sharded_embeddings() -> Case:
    shards = [var(3, 2, name=f"shard_{i}", seed=i) for i in range(3)]
    table, weights_src, safe_table = var(6, 2, name="sparse_table", seed=4), var(3, name="sparse_weights", seed=5), var(6, 2, name="safe_table", seed=6)

    @tf.function
    def embedding_loss(ids: tf.Tensor) -> tf.Tensor:
        dense = tf.nn.embedding_lookup(shards, ids)
        sparse_ids = tf.SparseTensor([[0, 0], [0, 1], [1, 0]], tf.constant([1, 3, 5], tf.int64), [2, 2])
        weights = tf.SparseTensor([[0, 0], [0, 1], [1, 0]], weights_src, [2, 2])
        mean = tf.nn.embedding_lookup_sparse(table, sparse_ids, weights, combiner="mean")
        sqrtn = tf.nn.safe_embedding_lookup_sparse(safe_table, sparse_ids, combiner="sqrtn")
        return tf.reduce_sum(dense * dense) + tf.reduce_sum(mean) + tf.reduce_sum(sqrtn)

    return Case(embedding_loss, [*shards, table, weights_src, safe_table], (tf.constant([0, 4, 8]),))


@case("variable_read_as_value_sparse_read_gather_nd_slice_and_raw_gather")
def read_forms() -> Case:
    names = ["read_value", "value_call", "sparse_read", "gather_nd_method", "slice_index", "identity_of", "converted", "raw_gather"]
    v = [var(4, name=n, seed=i) for i, n in enumerate(names)]

    @tf.function
    def reads_loss() -> tf.Tensor:
        total = tf.reduce_sum(v[0].read_value()) + tf.reduce_sum(v[1].value()) + tf.reduce_sum(v[2].sparse_read([0, 1]))
        total += tf.reduce_sum(v[3].gather_nd([[1]])) + v[4][2] + tf.reduce_sum(tf.identity(v[5]))
        gathered = tf.raw_ops.ResourceGather(resource=v[7].handle, indices=[0], dtype=tf.float32)
        return total + tf.reduce_sum(tf.convert_to_tensor(v[6])) + tf.reduce_sum(gathered)

    return Case(reads_loss, v)


@case("dropout_rate_variable_and_losses_with_soft_labels", pytest.mark.slow)
def losses_and_rates() -> Case:
    names = ["dropout_in", "sigmoid_logits", "sigmoid_labels", "poisson_targets", "poisson_log_input", "moments_x", "moments_w", "bn_mean", "bn_variance"]
    v = [var(4, name=n, seed=i) for i, n in enumerate(names)]
    rate = tf.Variable(0.3, name="dropout_rate")

    @tf.function
    def nn_loss() -> tf.Tensor:
        total = tf.reduce_sum(tf.nn.dropout(v[0], rate=rate, seed=1))
        total += tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.sigmoid(v[2]), logits=v[1]))
        total += tf.reduce_sum(tf.nn.log_poisson_loss(tf.abs(v[3]), v[4]))
        mean, variance = tf.nn.weighted_moments(v[5], [0], tf.abs(v[6]))
        normalized = tf.nn.batch_normalization(v[5], v[7], tf.abs(v[8]) + 1.0, None, None, 1e-3)
        return total + mean + variance + tf.reduce_sum(normalized)

    return Case(nn_loss, [rate, *v])


@case("cumsum_cumprod_roll_reverse_sequence_logsumexp_in_top_k_segments", pytest.mark.slow)
def misc_math() -> Case:
    names = ["cumsum_x", "cumprod_x", "prod_x", "roll_x", "reverse_sequence_x", "logsumexp_x", "polyval_c",
             "l2_normalize_x", "in_top_k_x", "approx_max_k_x", "segment_max_x", "sqrt_n_x"]
    v = [var(4, name=n, seed=i) for i, n in enumerate(names)]

    @tf.function
    def math_loss() -> tf.Tensor:
        total = tf.reduce_sum(tf.math.cumsum(v[0], exclusive=True, reverse=True)) + tf.reduce_sum(tf.math.cumprod(v[1], exclusive=True))
        total += tf.reduce_prod(v[2] * tf.constant([0.0, 1.0, 1.0, 1.0])) + tf.reduce_sum(tf.roll(v[3], 1, 0))
        total += tf.reduce_sum(tf.reverse_sequence(tf.reshape(v[4], [2, 2]), [1, 2], seq_axis=1, batch_axis=0))
        total += tf.reduce_logsumexp(v[5]) + tf.math.polyval([v[6][0], v[6][1]], 2.0) + tf.reduce_sum(tf.nn.l2_normalize(v[7]))
        total += tf.reduce_sum(tf.cast(tf.math.in_top_k(tf.constant([1]), tf.reshape(v[8], [1, 4]), 2), tf.float32))
        total += tf.reduce_sum(tf.math.approx_max_k(v[9], 2)[0])
        total += tf.reduce_sum(tf.math.segment_max(tf.concat([v[10][:2], v[10][:2]], 0), [0, 0, 1, 1]))
        return total + tf.reduce_sum(tf.math.unsorted_segment_sqrt_n(v[11], [0, 1, 0, 1], 2))

    return Case(math_loss, v)


@case("sparse_from_dense_softmax_to_dense_and_ragged_reductions", pytest.mark.slow)
def sparse_ragged() -> Case:
    names = ["from_dense", "sparse_softmax", "sparse_values", "ragged_values", "ragged_mapped"]
    v = [var(3, 3, name=names[0])] + [var(n_, name=n, seed=i + 1) for i, (n, n_) in enumerate(zip(names[1:], (3, 3, 5, 5)))]

    @tf.function
    def sparse_loss() -> tf.Tensor:
        total = tf.sparse.reduce_sum(tf.sparse.from_dense(v[0]))
        softmax = tf.sparse.softmax(tf.SparseTensor([[0, 0], [0, 1], [1, 0]], v[1], [2, 2]))
        total += tf.reduce_sum(softmax.values * tf.constant([1.0, 2.0, 3.0]))
        total += tf.reduce_sum(tf.sparse.to_dense(tf.SparseTensor([[0], [2], [3]], v[2], [4])))
        ragged = tf.RaggedTensor.from_row_lengths(v[3], [2, 3])
        total += tf.reduce_sum(tf.reduce_mean(ragged, axis=1)) + tf.reduce_sum(ragged.to_tensor())
        return total + tf.reduce_sum(tf.ragged.map_flat_values(tf.square, tf.RaggedTensor.from_row_lengths(v[4], [1, 4])))

    return Case(sparse_loss, v)


@case("experimental_numpy_take_along_axis_where_cumsum_clip", pytest.mark.slow)
def experimental_numpy() -> Case:
    a, b, order = var(3, 4, name="tnp_a"), var(3, 4, name="tnp_b", seed=2), var(3, name="tnp_order_source", seed=3)

    @tf.function
    def tnp_loss() -> tf.Tensor:
        idx = tnp.argsort(order)
        total = tnp.sum(tnp.take_along_axis(a, tnp.tile(idx[:, None], [1, 4]), axis=0))
        return total + tnp.sum(tnp.where(b > 0, b, 0.0)) + tnp.sum(tnp.cumsum(a, axis=1)) + tnp.sum(tnp.clip(b, -0.1, 0.1))

    return Case(tnp_loss, [a, b, order])


@case("conv_transpose_depthwise_separable_atrous_and_space_to_depth", pytest.mark.slow)
def conv_variants() -> Case:
    names = ["conv_transpose_w", "depthwise_w", "separable_depthwise", "separable_pointwise", "space_to_depth_in", "lrn_in", "conv3d_w", "atrous_w"]
    shapes = [(3, 3, 2, 2), (3, 3, 2, 1), (3, 3, 2, 1), (1, 1, 2, 3), (1, 4, 4, 2), (1, 4, 4, 2), (2, 2, 1, 1, 1), (3, 3, 2, 1)]
    v = [var(*s, name=n, seed=i) for i, (n, s) in enumerate(zip(names, shapes))]

    @tf.function
    def conv_loss(x: tf.Tensor) -> tf.Tensor:
        total = tf.reduce_sum(tf.nn.conv2d_transpose(x, v[0], [1, 12, 12, 2], 2))
        total += tf.reduce_sum(tf.nn.depthwise_conv2d(x, v[1], [1, 1, 1, 1], "SAME"))
        total += tf.reduce_sum(tf.nn.separable_conv2d(x, v[2], v[3], [1, 1, 1, 1], "SAME"))
        total += tf.reduce_sum(tf.nn.space_to_depth(v[4], 2)) + tf.reduce_sum(tf.nn.local_response_normalization(v[5]))
        total += tf.reduce_sum(tf.nn.conv3d(tf.reshape(x, [1, 6, 6, 2, 1])[:, :, :, :1, :], v[6], [1, 1, 1, 1, 1], "VALID"))
        return total + tf.reduce_sum(tf.nn.atrous_conv2d(x, v[7], 2, "SAME"))

    return Case(conv_loss, v, (const(1, 6, 6, 2),))


@case("image_color_ssim_sobel_patches_total_variation", pytest.mark.slow)
def image_ops() -> Case:
    names = ["hsv_image", "gray_image", "tv_image", "ssim_image", "sobel_image", "patches_image", "brightness_image"]
    v = [tf.Variable(np.random.default_rng(i).uniform(size=(1, 8, 8, 3)).astype(np.float32), name=n) for i, n in enumerate(names)]

    @tf.function
    def image_loss() -> tf.Tensor:
        total = tf.reduce_sum(tf.image.rgb_to_hsv(v[0])) + tf.reduce_sum(tf.image.rgb_to_grayscale(v[1]))
        total += tf.reduce_sum(tf.image.total_variation(v[2])) + tf.reduce_sum(tf.image.ssim(v[3], tf.ones_like(v[3]) * 0.5, 1.0, filter_size=3))
        total += tf.reduce_sum(tf.image.sobel_edges(v[4]))
        total += tf.reduce_sum(tf.image.extract_patches(v[5], [1, 2, 2, 1], [1, 2, 2, 1], [1, 1, 1, 1], "VALID"))
        return total + tf.reduce_sum(tf.image.adjust_brightness(v[6], 0.1))

    return Case(image_loss, v)


@case("linalg_solve_lstsq_expm_triangular_pinv_band_trace_norm", pytest.mark.slow)
def linalg_more() -> Case:
    names = ["solve_a", "lstsq_a", "expm_a", "triangular_a", "pinv_a", "band_a", "trace_a", "norm_inf_a"]
    m = [_near_identity(n, i) for i, n in enumerate(names)]
    b = tf.ones((3, 1))

    @tf.function
    def solve_loss() -> tf.Tensor:
        total = tf.reduce_sum(tf.linalg.solve(m[0], b)) + tf.reduce_sum(tf.linalg.lstsq(m[1], b))
        total += tf.reduce_sum(tf.linalg.expm(m[2] * 0.1)) + tf.reduce_sum(tf.linalg.triangular_solve(m[3], b))
        total += tf.reduce_sum(tf.linalg.pinv(m[4])) + tf.reduce_sum(tf.linalg.band_part(m[5], 0, -1))
        return total + tf.linalg.trace(m[6]) + tf.norm(m[7], ord=np.inf)

    return Case(solve_loss, m)


@case("fake_quant_with_min_max_variables_and_per_channel_ranges")
def fake_quant_vars() -> Case:
    a, b = var(4, name="fake_quant_input"), var(4, name="per_channel_input", seed=3)
    low, high = tf.Variable(-0.5, name="fake_quant_min"), tf.Variable(0.5, name="fake_quant_max")
    lows, highs = tf.Variable([-1.0] * 4, name="per_channel_min"), tf.Variable([1.0] * 4, name="per_channel_max")

    @tf.function
    def quant_loss() -> tf.Tensor:
        y = tf.quantization.fake_quant_with_min_max_vars(a * 3.0, low, high)  # clipped inputs: min and max get them
        z = tf.quantization.fake_quant_with_min_max_vars_per_channel(b[None], lows, highs)
        return tf.reduce_sum(y**2) + tf.reduce_sum(z)

    return Case(quant_loss, [a, low, high, b, lows, highs])


@case("dynamic_partition_stitch_boolean_mask_and_batched_gather")
def partitions() -> Case:
    parted, masked, gathered = var(4, name="partitioned"), var(4, name="boolean_masked", seed=4), var(2, 3, name="batch_gathered", seed=5)

    @tf.function
    def partition_loss() -> tf.Tensor:
        parts = tf.dynamic_partition(parted, [0, 1, 0, 1], 2)
        total = tf.reduce_sum(tf.dynamic_stitch([[0, 2], [1, 3]], parts) * 2.0)
        total += tf.reduce_sum(tf.boolean_mask(masked, masked > 0.0))  # the mask from the variable carries nothing
        return total + tf.reduce_sum(tf.gather(gathered, [[0, 2], [1, 1]], batch_dims=1))

    return Case(partition_loss, [parted, masked, gathered])


@case("linalg_sqrtm_eig_eigvals_cross_normalize_and_matrix_rank")
def linalg_spectra() -> Case:
    names = ["sqrtm_m", "eig_m", "eigvals_m", "cross_m", "normalized_m", "rank_m"]
    m = [_near_identity(n, i) for i, n in enumerate(names)]

    @tf.function
    def spectra_loss() -> tf.Tensor:
        total = tf.reduce_sum(tf.linalg.sqrtm(m[0] @ tf.transpose(m[0])))
        values, _ = tf.linalg.eig(m[1])  # complex eigenvalues of a real matrix
        total += tf.reduce_sum(tf.math.real(values)) + tf.reduce_sum(tf.abs(tf.linalg.eigvals(m[2])))
        total += tf.reduce_sum(tf.linalg.cross(m[3][0], m[3][1])) + tf.reduce_sum(tf.linalg.normalize(m[4])[0])
        return total + tf.cast(tf.linalg.matrix_rank(m[5]), tf.float32)  # an integer: no gradient

    return Case(spectra_loss, m)


@case("image_resize_lanczos_antialias_with_pad_flip_rot90_central_crop")
def image_geometry() -> Case:
    names = ["lanczos_image", "antialias_image", "padded_image", "flipped_image", "rotated_image", "cropped_image"]
    v = [var(1, 4, 4, 3, name=n, seed=i) for i, n in enumerate(names)]

    @tf.function
    def geometry_loss() -> tf.Tensor:
        total = tf.reduce_sum(tf.image.resize(v[0], (6, 6), method="lanczos3"))
        total += tf.reduce_sum(tf.image.resize(v[1], (2, 2), antialias=True)) + tf.reduce_sum(tf.image.resize_with_pad(v[2], 6, 6))
        total += tf.reduce_sum(tf.image.flip_left_right(v[3]) * tf.range(3, dtype=tf.float32))
        return total + tf.reduce_sum(tf.image.rot90(v[4]) * tf.range(3, dtype=tf.float32)) + tf.reduce_sum(tf.image.central_crop(v[5], 0.5))

    return Case(geometry_loss, v)


@case("keras_ops_take_nonzero_argsort_stft_digitize_segment_sum_qr")
def keras_ops_numpy() -> Case:
    import keras

    names = ["take_values", "take_index_source", "take_along_values", "nonzero_source", "argsort_source",
             "logsumexp_values", "stft_signal", "digitized", "segment_values", "normed", "qr_values"]
    v = [var(8, name=n, seed=i) for i, n in enumerate(names)]

    @tf.function
    def numpy_ops_loss() -> tf.Tensor:
        ops = keras.ops
        t = [tf.convert_to_tensor(x) for x in v]  # keras.ops takes tensors
        total = ops.sum(ops.take(t[0], ops.cast(ops.abs(t[1][:3]) * 3, "int32")))
        total += ops.sum(ops.take_along_axis(t[2], ops.argsort(t[2]), axis=0))
        total += ops.sum(ops.cast(ops.nonzero(ops.where(t[3] > 0, 1, 0))[0], "float32"))
        total += ops.sum(ops.cast(ops.argsort(t[4]), "float32")) + ops.logsumexp(t[5])
        total += ops.sum(ops.stft(t[6], sequence_length=4, sequence_stride=2, fft_length=4)[0])
        total += ops.sum(ops.cast(ops.digitize(t[7], [0.0]), "float32"))
        total += ops.sum(ops.segment_sum(t[8], ops.array([0, 0, 1, 1, 2, 2, 3, 3]), num_segments=4))
        return total + ops.norm(t[9]) + ops.sum(ops.qr(ops.reshape(t[10], (2, 4)))[1])

    return Case(numpy_ops_loss, v)


@case("keras_embedding_looked_up_by_an_integer_variable")
def ids_in_a_variable() -> Case:
    import keras

    embedding = keras.layers.Embedding(6, 2, name="buffered_embedding")
    embedding.build((None,))
    tokens = tf.Variable([1, 4, 2], name="token_buffer")

    @tf.function
    def buffered_loss() -> tf.Tensor:
        return tf.reduce_sum(embedding(tokens))

    return Case(buffered_loss, [*embedding.variables, tokens])


@case("while_loop_tensor_array_sparse_read_parallel_iterations_stop_gradient")
def loop_sparse_read() -> Case:
    table, w, stopped = var(5, 2, name="loop_table"), var(2, name="loop_scale", seed=2), var(2, name="loop_stopped", seed=3)

    @tf.function
    def loop_loss(ids: tf.Tensor) -> tf.Tensor:
        def body(i: tf.Tensor, rows: tf.TensorArray) -> tuple[tf.Tensor, tf.TensorArray]:
            return i + 1, rows.write(i, table.sparse_read(ids[i]) * w + tf.stop_gradient(stopped))

        rows = tf.TensorArray(tf.float32, size=3, clear_after_read=False)
        _, rows = tf.while_loop(lambda i, _: i < 3, body, (0, rows), parallel_iterations=4)
        return tf.reduce_sum(rows.gather([0, 2])) + tf.reduce_sum(rows.read(1))

    return Case(loop_loss, [table, w, stopped], (tf.constant([1, 4, 2]),))


@case("variable_scatter_nd_update_then_read")
def scatter_update_read() -> Case:
    updated, source, gathered = var(4, name="scatter_updated"), var(2, name="scatter_source", seed=2), var(4, 2, name="rows_gathered", seed=3)

    @tf.function
    def scatter_loss() -> tf.Tensor:
        updated.scatter_nd_update([[0], [2]], source * 2.0)  # an assignment: no gradient to the source
        return tf.reduce_sum(updated * 3.0) + tf.reduce_sum(tf.gather(gathered, [1, 3]))

    return Case(scatter_loss, [updated, source, gathered])


@case("grad_pass_through_round_unique_dedup_ragged_lookup_and_max_norm")
def lookups_and_pass_through() -> Case:
    through, rounded = var(3, name="pass_through_round"), var(3, name="plain_round", seed=2)
    dedup, ragged, max_norm = var(6, 2, name="dedup_table", seed=3), var(6, 2, name="ragged_table", seed=4), var(6, 3, name="max_norm_table", seed=5)
    ragged_ids = tf.ragged.constant([[1, 2], [3], [4, 5, 0]])

    @tf.function
    def lookup_loss(ids: tf.Tensor) -> tf.Tensor:
        total = tf.reduce_sum(tf.grad_pass_through(tf.round)(through * 4.0)) + tf.reduce_sum(tf.round(rounded * 4.0))
        unique_ids, positions = tf.unique(ids)  # look each id up once, then spread the rows back
        total += tf.reduce_sum(tf.gather(tf.gather(dedup, unique_ids), positions) ** 2)
        total += tf.reduce_sum(tf.reduce_mean(tf.ragged.map_flat_values(tf.nn.embedding_lookup, ragged, ragged_ids), axis=1))
        return total + tf.reduce_sum(tf.nn.embedding_lookup(max_norm, ids, max_norm=0.5))

    return Case(lookup_loss, [through, rounded, dedup, ragged, max_norm], (tf.constant([1, 3, 1, 5]),))
