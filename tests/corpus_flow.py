"""Corpus cases of how values flow in real training code: Keras preprocessing and shared layers,
``keras.ops`` control flow, custom gradients, ``tf.data`` inside a function, legacy gradient
overrides, and a tape inside the function around a nested ``tf.function`` (a gradient penalty's
second order). Each builder returns a :class:`corpus_cases.Case`; the tape computes the truth.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from corpus_cases import Case, case, const, keras_variables, var


@case("keras_discretization_hashing_integer_lookup_and_adapted_normalization")
def preprocessing() -> Case:
    keras.utils.set_random_seed(1)
    discretize, hashing = keras.layers.Discretization(bin_boundaries=[-0.5, 0.0, 0.5]), keras.layers.Hashing(num_bins=5)
    lookup = keras.layers.IntegerLookup(vocabulary=[3, 7, 9])
    norm = keras.layers.Normalization()
    norm.adapt(np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32))
    proj, hashed_emb = keras.layers.Dense(2, name="projection"), keras.layers.Embedding(5, 2, name="hashed_embedding")
    bucket_emb, lookup_emb = keras.layers.Embedding(4, 2, name="bucket_embedding"), keras.layers.Embedding(4, 2, name="lookup_embedding")
    for layer, shape in ((proj, (None, 2)), (hashed_emb, (None,)), (bucket_emb, (None,)), (lookup_emb, (None,))):
        layer.build(shape)
    source = var(4, name="lookup_source")

    @tf.function
    def preprocessing_loss(x: tf.Tensor) -> tf.Tensor:
        h = proj(norm(x))
        total = tf.reduce_sum(bucket_emb(discretize(h))) + tf.reduce_sum(hashed_emb(hashing(tf.strings.as_string(h))))
        return total + tf.reduce_sum(lookup_emb(lookup(tf.cast(tf.abs(source) * 10, tf.int64))))

    return Case(preprocessing_loss, keras_variables(proj, hashed_emb, bucket_emb, lookup_emb, norm) + [source], (const(3, 2),))


@case("keras_shared_layer_nested_model_and_frozen_layer_in_a_trained_model")
def shared_and_nested() -> Case:
    keras.utils.set_random_seed(6)
    shared = keras.layers.Dense(3, name="shared")
    inner = keras.Sequential([keras.layers.Dense(3, name="inner_a"), keras.layers.Dense(2, name="inner_b")], name="inner")
    frozen = keras.layers.Dense(2, name="frozen_in_model")
    a, b = keras.Input((4,)), keras.Input((4,))
    h = shared(a) + shared(b)
    model = keras.Model([a, b], inner(h) + frozen(h))
    frozen.trainable = False

    @tf.function
    def shared_loss(x1: tf.Tensor, x2: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(tf.square(model([x1, x2], training=True)))

    return Case(shared_loss, list(model.weights), (const(2, 4), const(2, 4, seed=1)))


@case("keras_ops_cond_fori_loop_scan_switch_top_k_digitize_searchsorted", pytest.mark.slow)
def keras_ops_flow() -> Case:
    names = ["cond_taken", "cond_untaken", "fori_w", "scan_w", "top_k_x", "digitize_x", "searchsorted_x", "switch_a", "switch_b"]
    v = [var(3, name=n, seed=i) for i, n in enumerate(names)]

    @tf.function
    def ops_loss(x: tf.Tensor) -> tf.Tensor:
        total = keras.ops.sum(keras.ops.cond(keras.ops.sum(x) > -100.0, lambda: v[0] * x, lambda: v[1] * x))
        total += keras.ops.sum(keras.ops.fori_loop(0, 3, lambda i, t: t * v[2], keras.ops.ones(3)))
        total += keras.ops.sum(keras.ops.scan(lambda carry, xi: (carry + xi * v[3][0], carry), 0.0, x)[1])
        total += keras.ops.sum(keras.ops.top_k(v[4], 2)[0])
        total += keras.ops.sum(keras.ops.cast(keras.ops.digitize(v[5], [0.0, 0.5]), "float32"))
        total += keras.ops.sum(keras.ops.cast(keras.ops.searchsorted(keras.ops.sort(v[6]), [0.0]), "float32"))
        return total + keras.ops.sum(keras.ops.switch(0, [lambda a: a * v[7], lambda a: a * v[8]], x))

    return Case(ops_loss, v, (const(3),))


@case("custom_gradient_none_and_zeros_for_inputs_and_none_for_a_variable")
def custom_gradients() -> Case:
    a, b, c = var(3, name="custom_a"), var(3, name="custom_none", seed=2), var(3, name="custom_zeros", seed=3)
    w, v = var(3, name="custom_variable_w", seed=4), var(3, name="custom_variable_v", seed=5)

    @tf.custom_gradient
    def mixed(x: tf.Tensor, y: tf.Tensor, z: tf.Tensor) -> Any:
        return x * y + z, lambda g: (g * y, None, tf.zeros_like(z))

    @tf.custom_gradient
    def scaled(x: tf.Tensor) -> Any:
        def grad(g: tf.Tensor, variables: Any = None) -> Any:
            return g * w * v, [g * x * v, None]  # the order TensorFlow lists the variables in decides

        return x * w * v, grad

    @tf.function
    def custom_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(mixed(a, b, c)) + tf.reduce_sum(scaled(x))

    return Case(custom_loss, [a, b, c, w, v], (const(3),))


@case("tf_data_pipeline_inside_the_function_and_dataset_of_a_variable")
def datasets() -> Case:
    mapped, looped, sliced = var(3, name="dataset_map_w"), var(3, name="dataset_loop_u", seed=2), var(4, 3, name="sliced_variable", seed=3)

    @tf.function
    def dataset_loss() -> tf.Tensor:
        total = tf.constant(0.0)
        for batch in tf.data.Dataset.from_tensor_slices(tf.ones((4, 3))).map(lambda r: r * mapped).batch(2):
            total += tf.reduce_sum(batch * looped)
        for row in tf.data.Dataset.from_tensor_slices(sliced):
            total += tf.reduce_sum(row)
        return total

    return Case(dataset_loss, [mapped, looped, sliced])


@case("gradient_override_map_round_and_sign_as_identity")
def override_map() -> Case:
    rounded, signed = var(3, name="override_round"), var(3, name="override_sign", seed=2)

    @tf.function
    def override_loss() -> tf.Tensor:
        with tf.compat.v1.get_default_graph().gradient_override_map({"Round": "Identity", "Sign": "Identity"}):
            return tf.reduce_sum(tf.round(rounded)) + tf.reduce_sum(tf.sign(signed))

    return Case(override_loss, [rounded, signed])


@case("py_function_body_reads_a_variable_and_init_scope_lifts_a_read")
def hidden_reads() -> Case:
    inside, argument, lifted, plain = var(3, name="read_in_py_function"), var(3, name="py_function_arg", seed=2), var(3, name="init_scope_read", seed=3), var(3, name="plain_read", seed=4)

    @tf.function
    def hidden_loss(x: tf.Tensor) -> tf.Tensor:
        out = tf.py_function(lambda t: t * inside, [argument], tf.float32)
        with tf.init_scope():
            value = tf.identity(lifted)
        return tf.reduce_sum(out) + tf.reduce_sum(value * x) + tf.reduce_sum(plain * x)

    return Case(hidden_loss, [inside, argument, lifted, plain], (const(3),))


def _second_order(use: str) -> Case:
    """A tape inside the function differentiates a nested tf.function whose custom gradient gives v None.

    (Left out: the same tape never asked for a gradient. Then TensorFlow's answer for v depends on
    whether the function was first traced under a tape watching the variables.)
    """
    w, v = var(2, name="outer_w"), var(2, name="custom_none_v", seed=2)

    @tf.custom_gradient
    def first_only(a: tf.Tensor, b: tf.Tensor) -> Any:
        return a * b, lambda dy: (dy * b, None)

    @tf.function
    def inner(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(first_only(w * x, v))

    @tf.function
    def penalized(x: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = inner(x)
        g = tape.gradient(y, x)  # its backward function reads v, so v reaches g
        return y if use == "unused" else y + tf.reduce_sum(g**2)

    return Case(penalized, [w, v], (const(2),))


@case("gradient_penalty_through_a_nested_function_with_a_custom_gradient")
def second_order_used() -> Case:
    return _second_order("used")


@case("inner_gradient_of_a_nested_function_computed_and_left_unused")
def second_order_unused() -> Case:
    return _second_order("unused")


# --- Keras layers as users call them -----------------------------------------------------------


@case("keras_bidirectional_lstm_merge_none_backward_output_unused")
def bidirectional_halves() -> Case:
    keras.utils.set_random_seed(4)
    bi = keras.layers.Bidirectional(keras.layers.LSTM(2, return_sequences=True), merge_mode=None)
    x = const(2, 3, 2)
    bi(x)

    @tf.function
    def forward_only_loss(x: tf.Tensor) -> tf.Tensor:
        forward, _ = bi(x)  # the backward layer runs, its output feeds nothing
        return tf.reduce_sum(forward)

    return Case(forward_only_loss, keras_variables(bi), (x,))


@case("keras_multi_head_attention_causal_mask_scores_only")
def attention_scores() -> Case:
    keras.utils.set_random_seed(5)
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=2, name="scores_mha")
    q, v = const(2, 3, 4), const(2, 3, 4, seed=1)
    mask = tf.constant([[[True, False, False], [True, True, False], [True, True, True]]] * 2)
    layer(q, v, attention_mask=mask)

    @tf.function
    def scores_loss(q: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
        _, scores = layer(q, v, attention_mask=mask, use_causal_mask=True, return_attention_scores=True)
        return tf.reduce_sum(scores * tf.range(3, dtype=tf.float32))  # value and output projections unused

    return Case(scores_loss, keras_variables(layer), (q, v))


@case("keras_conv1d_and_conv2d_transpose_depthwise_behind_stop_gradient")
def keras_convs() -> Case:
    keras.utils.set_random_seed(6)
    c1, ct = keras.layers.Conv1D(2, 3, name="conv1d"), keras.layers.Conv2DTranspose(2, 2, strides=2, name="conv_t")
    c2, dw = keras.layers.Conv2D(2, 3, padding="same", name="conv2d"), keras.layers.DepthwiseConv2D(2, name="depthwise")
    x1, x2 = const(2, 5, 3), const(1, 4, 4, 2)
    c1(x1)
    dw(c2(ct(x2)))

    @tf.function
    def conv_loss(x1: tf.Tensor, x2: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(c1(x1)) + tf.reduce_sum(tf.stop_gradient(dw(c2(ct(x2)))))

    return Case(conv_loss, keras_variables(c1, ct, c2, dw), (x1, x2))


@case("keras_layer_built_and_never_called")
def built_never_called() -> Case:
    keras.utils.set_random_seed(7)
    used, spare = keras.layers.Dense(2, name="called"), keras.layers.Dense(2, name="built_never_called")
    used.build((None, 3))
    spare.build((None, 3))

    @tf.function
    def called_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(used(x))

    return Case(called_loss, keras_variables(used, spare), (const(2, 3),))


@case("keras_ops_where_top_k_indices_sort_and_one_hot_of_argmax")
def keras_ops_indices() -> Case:
    keras.utils.set_random_seed(8)
    heads = [keras.layers.Dense(4, name=n) for n in ("where_head", "top_k_head", "sort_head", "argmax_head")]
    for head in heads:
        head.build((None, 2))

    @tf.function
    def indices_loss(x: tf.Tensor) -> tf.Tensor:
        ops = keras.ops
        h = heads[0](x)
        total = ops.sum(ops.where(h > 0, h, 0.0))
        _, idx = ops.top_k(heads[1](x), 2)
        total += ops.sum(ops.cast(idx, "float32"))  # the indices alone: no gradient
        total += ops.sum(ops.sort(heads[2](x), axis=-1)[:, -1])
        return total + ops.sum(ops.one_hot(ops.argmax(heads[3](x), axis=-1), 4) * 2.0)

    return Case(indices_loss, keras_variables(*heads), (const(3, 2),))


@case("keras_masking_layer_simple_rnn_while_loop")
def masked_simple_rnn() -> Case:
    keras.utils.set_random_seed(3)
    mask, rnn, out = keras.layers.Masking(0.0), keras.layers.SimpleRNN(3, name="masked_rnn"), keras.layers.Dense(1, name="masked_rnn_out")
    noise = np.random.default_rng(0).normal(size=(2, 3, 2))
    x = tf.constant(np.concatenate([noise, np.zeros((2, 2, 2))], 1), tf.float32)  # two padded steps
    out(rnn(mask(x)))

    @tf.function
    def masked_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(out(rnn(mask(x))))

    return Case(masked_loss, keras_variables(rnn, out), (x,))


@case("keras_einsum_dense_prelu_time_distributed_concat_attention_category_encoding")
def keras_misc_layers() -> Case:
    keras.utils.set_random_seed(13)
    einsum = keras.layers.EinsumDense("ab,bc->ac", output_shape=4, bias_axes="c", name="einsum_dense")
    prelu, unit = keras.layers.PReLU(name="prelu"), keras.layers.UnitNormalization()
    distributed = keras.layers.TimeDistributed(keras.layers.Dense(2, name="distributed_inner"), name="distributed")
    attention = keras.layers.Attention(use_scale=True, score_mode="concat", name="concat_attention")
    encode, project = keras.layers.CategoryEncoding(num_tokens=4, output_mode="one_hot"), keras.layers.Dense(2, name="encoded_projection")

    def misc_loss(x: tf.Tensor, seq: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        s = distributed(seq)
        total = tf.reduce_sum(unit(prelu(einsum(x)))) + tf.reduce_sum(attention([s, s], use_causal_mask=True))
        return total + tf.reduce_sum(project(encode(ids)))

    args = (const(3, 5), const(2, 4, 3), tf.constant([0, 3, 1]))
    misc_loss(*args)  # builds the layers
    return Case(tf.function(misc_loss), keras_variables(einsum, prelu, distributed, attention, project), args)


@case("recompute_grad_over_keras_layers_with_a_stop_gradient_inside")
def recompute_keras() -> Case:
    keras.utils.set_random_seed(9)
    kept, stopped = keras.layers.Dense(3, name="recomputed"), keras.layers.Dense(3, name="recomputed_stopped")
    kept.build((None, 3))
    stopped.build((None, 3))
    # recompute_grad's gradient differentiates the block again with respect to every variable it read
    block = tf.recompute_grad(lambda h: tf.nn.relu(kept(h)) + tf.stop_gradient(stopped(h)))

    @tf.function
    def recompute_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(block(x))

    return Case(recompute_loss, keras_variables(kept, stopped), (const(2, 3),))


@case("ctc_loss_over_a_dense_projection_batch_major_last_blank")
def ctc_dense() -> Case:
    keras.utils.set_random_seed(10)
    projection = keras.layers.Dense(5, name="ctc_projection")
    projection.build((None, None, 3))

    @tf.function
    def ctc_loss(x: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(tf.nn.ctc_loss(
            labels, projection(x), label_length=tf.constant([2, 1]), logit_length=tf.constant([4, 4]),
            logits_time_major=False, blank_index=-1,
        ))

    return Case(ctc_loss, keras_variables(projection), (const(2, 4, 3), tf.constant([[1, 2], [3, 0]])))


# --- higher-order and forward-mode differentiation inside the loss -----------------------------


@case("jacobian_and_batch_jacobian_penalty_of_the_inputs", pytest.mark.slow)  # about 6 s: pfor and its gradient
def jacobian_penalty() -> Case:
    w, b, u = var(3, 2, name="jacobian_w"), var(2, name="jacobian_b", seed=2), var(3, 2, name="batch_jacobian_w", seed=3)

    @tf.function
    def jacobian_loss(x: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y = tf.tanh(tf.matmul(x, w) + b)
            z = tf.tanh(tf.matmul(x, u))
        full = tape.jacobian(y, x)  # a pfor loop over y's entries
        per_example = tape.batch_jacobian(z, x, experimental_use_pfor=False)  # a while_loop
        return tf.reduce_sum(full**2) + tf.reduce_sum(per_example**2)

    return Case(jacobian_loss, [w, b, u], (const(2, 3),))


@case("forward_accumulator_jvp_and_hessian_vector_product")
def forward_mode() -> Case:
    w, tangent, stopped = var(3, name="jvp_w"), var(3, name="jvp_tangent_source", seed=2), var(3, name="jvp_stopped", seed=3)
    h, direction = var(3, name="hvp_w", seed=4), var(3, name="hvp_direction", seed=5)

    @tf.function
    def forward_loss(x: tf.Tensor) -> tf.Tensor:
        with tf.autodiff.ForwardAccumulator(primals=x, tangents=tf.ones_like(x) * tangent) as acc:
            y = tf.reduce_sum(tf.sin(x * w)) + tf.reduce_sum(tf.stop_gradient(stopped) * x)
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                f = tf.reduce_sum(tf.sin(h) * h)
            g = inner.gradient(f, h)
            along = tf.reduce_sum(g * tf.stop_gradient(direction))
        return acc.jvp(y) + y + tf.reduce_sum(outer.gradient(along, h) ** 2)

    return Case(forward_loss, [w, tangent, stopped, h, direction], (const(3),))


@case("keras_layers_wrapping_custom_gradients_clip_and_detach")
def custom_gradient_layers() -> Case:
    keras.utils.set_random_seed(15)

    class ClipGradient(keras.layers.Layer):
        def call(self, x: tf.Tensor) -> tf.Tensor:
            @tf.custom_gradient
            def clip(t: tf.Tensor) -> Any:
                return tf.identity(t), lambda dy: tf.clip_by_norm(dy, 0.1)

            return clip(x)

    class Detach(keras.layers.Layer):
        def call(self, x: tf.Tensor) -> tf.Tensor:
            @tf.custom_gradient
            def cut(t: tf.Tensor) -> Any:
                return tf.identity(t), lambda dy: None

            return cut(x)  # detached

    clipped, detached, out = keras.layers.Dense(3, name="before_clip"), keras.layers.Dense(3, name="before_detach"), keras.layers.Dense(1, name="after_both")
    clip, detach = ClipGradient(), Detach()
    x = const(2, 3)

    @tf.function
    def custom_layers_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(out(clip(clipped(x)) + detach(detached(x))))

    custom_layers_loss.python_function(x)  # builds the layers
    return Case(custom_layers_loss, keras_variables(clipped, detached, out), (x,))


@case("keras_seq2seq_teacher_forcing_encoder_states_into_decoder")
def seq2seq() -> Case:
    keras.utils.set_random_seed(21)
    encoder_in, decoder_in = keras.Input((None, 3)), keras.Input((None, 4))
    _, h, c = keras.layers.LSTM(5, return_state=True, name="encoder")(encoder_in)
    sequence, _, _ = keras.layers.LSTM(5, return_sequences=True, return_state=True, name="decoder")(decoder_in, initial_state=[h, c])
    model = keras.Model([encoder_in, decoder_in], keras.layers.Dense(4, activation="softmax", name="readout")(sequence))

    @tf.function
    def seq2seq_loss(source: tf.Tensor, shifted: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(target, model([source, shifted], training=True)))

    return Case(seq2seq_loss, list(model.weights), (const(2, 4, 3), const(2, 3, 4, seed=1), tf.constant([[0, 1, 2], [3, 2, 1]])))


@case("keras_vae_sampling_layer_with_its_own_seed_generator")
def vae_sampling() -> Case:
    keras.utils.set_random_seed(22)

    class Sampling(keras.layers.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.seed_generator = keras.random.SeedGenerator(1337)

        def call(self, inputs: Any) -> tf.Tensor:
            mean, log_var = inputs
            eps = keras.random.normal(shape=keras.ops.shape(mean), seed=self.seed_generator)
            return mean + keras.ops.exp(0.5 * log_var) * eps

    inputs = keras.Input((4,))
    h = keras.layers.Dense(6, activation="relu", name="vae_encoder")(inputs)
    mean, log_var = keras.layers.Dense(2, name="z_mean")(h), keras.layers.Dense(2, name="z_log_var")(h)
    encoder = keras.Model(inputs, [mean, log_var, Sampling()([mean, log_var])])
    decoder = keras.Sequential([keras.Input((2,)), keras.layers.Dense(6, activation="relu", name="vae_decoder"), keras.layers.Dense(4, name="vae_out")])

    @tf.function
    def vae_loss(x: tf.Tensor) -> tf.Tensor:
        m, lv, z = encoder(x)
        return tf.reduce_mean(tf.square(decoder(z) - x)) - 0.5 * tf.reduce_mean(1 + lv - tf.square(m) - tf.exp(lv))

    return Case(vae_loss, keras_variables(encoder, decoder), (const(3, 4),))  # the seed generator's state included
