"""The differential corpus: real-world training-step patterns, each a fresh set of variables + loss.

Every builder returns a :class:`Case`; the verdicts are never written here, the tape computes them
in ``tests/test_corpus.py``. Builders create their own variables and ``tf.function`` so that the
cases are independent. Shapes are tiny: the point is the graph, not the numbers.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf


@dataclass
class Case:
    """One corpus entry: a tf.function, the variables to judge, and its example inputs."""

    fn: Any
    variables: list[Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    owner: Any = None  # keeps alive an object a bound tf.function refers to only weakly


CASES: list[Any] = []


def case(name: str, *marks: Any) -> Callable[[Callable[[], Case]], Callable[[], Case]]:
    """Register a builder under a readable pytest id."""

    def register(builder: Callable[[], Case]) -> Callable[[], Case]:
        CASES.append(pytest.param(builder, id=name, marks=marks))
        return builder

    return register


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def const(*shape: int, seed: int = 0) -> tf.Tensor:
    """A float32 constant of normal noise."""
    return tf.constant(_rng(seed).normal(size=shape), dtype=tf.float32)


def var(*shape: int, name: str, seed: int = 1, trainable: bool = True) -> tf.Variable:
    """A float32 variable of small normal noise."""
    return tf.Variable(_rng(seed).normal(size=shape, scale=0.5).astype(np.float32), name=name, trainable=trainable)


def mlp(name: str, sizes: tuple[int, ...], seed: int = 1) -> list[tf.Variable]:
    """Kernels and biases of a dense stack."""
    out = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        out.append(var(a, b, name=f"{name}_w{i}", seed=seed + 2 * i))
        out.append(var(b, name=f"{name}_b{i}", seed=seed + 2 * i + 1))
    return out


def run_mlp(params: list[tf.Variable], x: tf.Tensor, activation: Any = tf.nn.relu) -> tf.Tensor:
    """Apply a dense stack, activation between layers."""
    h = x
    n = len(params) // 2
    for i in range(n):
        h = tf.matmul(h, params[2 * i]) + params[2 * i + 1]
        if i < n - 1:
            h = activation(h)
    return h


# --- the seed ----------------------------------------------------------------------------------

SEED_PATH = Path(__file__).resolve().parents[1] / "examples" / "seed_stop_gradient.py"


def load_seed() -> Any:
    """A fresh import of examples/seed_stop_gradient.py (fresh variables each time)."""
    spec = importlib.util.spec_from_file_location("seed_stop_gradient_under_test", SEED_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module



@case("seed_stop_gradient")
def seed() -> Case:
    module = load_seed()
    return Case(module.loss_fn, [module.w1, module.w2], module.example_inputs)


# --- straight-through estimators ---------------------------------------------------------------


def _vqvae(commitment: bool) -> Case:
    enc, dec = mlp("enc", (4, 3)), mlp("dec", (3, 4), seed=5)
    codebook = var(5, 3, name="codebook", seed=9)
    unused = var(2, name="never_read", seed=3)
    x = const(6, 4)

    @tf.function
    def vqvae_loss(x: tf.Tensor) -> tf.Tensor:
        z = run_mlp(enc, x)
        distances = tf.reduce_sum((z[:, None, :] - codebook[None]) ** 2, axis=-1)
        q = tf.gather(codebook, tf.argmin(distances, axis=1))
        z_q = z + tf.stop_gradient(q - z)  # straight-through
        recon = tf.reduce_mean((run_mlp(dec, z_q) - x) ** 2)
        if not commitment:
            return recon
        codebook_loss = tf.reduce_mean((tf.stop_gradient(z) - q) ** 2)
        commit = tf.reduce_mean((z - tf.stop_gradient(q)) ** 2)
        return recon + codebook_loss + 0.25 * commit

    return Case(vqvae_loss, [*enc, *dec, codebook, unused], (x,))


@case("vqvae_straight_through_with_codebook_and_commitment")
def vqvae_full() -> Case:
    return _vqvae(commitment=True)


@case("vqvae_reconstruction_only_codebook_cut")
def vqvae_recon() -> Case:
    return _vqvae(commitment=False)


@case("gumbel_softmax_hard")
def gumbel() -> Case:
    w, head = var(4, 5, name="logits_w"), var(5, 1, name="head", seed=2)
    x = const(3, 4)

    @tf.function
    def gumbel_loss(x: tf.Tensor) -> tf.Tensor:
        logits = tf.matmul(x, w)
        u = tf.random.stateless_uniform(tf.shape(logits), seed=[1, 2], minval=1e-6, maxval=1.0)
        y_soft = tf.nn.softmax((logits - tf.math.log(-tf.math.log(u))) / 0.5)
        y_hard = tf.one_hot(tf.argmax(y_soft, axis=-1), 5)
        y = tf.stop_gradient(y_hard - y_soft) + y_soft
        return tf.reduce_sum(tf.matmul(y, head))

    return Case(gumbel_loss, [w, head], (x,))


@case("hard_one_hot_without_straight_through")
def hard_one_hot() -> Case:
    w, head = var(4, 5, name="logits_w"), var(5, 1, name="head", seed=2)
    x = const(3, 4)

    @tf.function
    def hard_loss(x: tf.Tensor) -> tf.Tensor:
        y = tf.one_hot(tf.argmax(tf.matmul(x, w), axis=-1), 5)
        return tf.reduce_sum(tf.matmul(y, head))

    return Case(hard_loss, [w, head], (x,))


# --- reinforcement learning --------------------------------------------------------------------


def _dqn(stop: bool) -> Case:
    online, target = mlp("q", (4, 6, 3)), mlp("q_target", (4, 6, 3), seed=7)
    obs, next_obs = const(5, 4), const(5, 4, seed=1)
    actions = tf.constant([0, 2, 1, 1, 0])
    rewards = const(5, seed=2)

    @tf.function
    def dqn_loss(obs: tf.Tensor, actions: tf.Tensor, rewards: tf.Tensor, next_obs: tf.Tensor) -> tf.Tensor:
        q = tf.gather(run_mlp(online, obs), actions, batch_dims=1)
        bootstrap = rewards + 0.99 * tf.reduce_max(run_mlp(target, next_obs), axis=1)
        if stop:
            bootstrap = tf.stop_gradient(bootstrap)
        return tf.reduce_mean(tf.keras.losses.huber(bootstrap[:, None], q[:, None]))

    return Case(dqn_loss, [*online, *target], (obs, actions, rewards, next_obs))


@case("dqn_target_network_stop_gradient")
def dqn_stop() -> Case:
    return _dqn(stop=True)


@case("dqn_target_network_forgotten_stop_gradient")
def dqn_no_stop() -> Case:
    return _dqn(stop=False)


@case("double_dqn_argmax_from_online_net")
def double_dqn() -> Case:
    online, target = mlp("q", (4, 3)), mlp("q_target", (4, 3), seed=7)
    obs, next_obs = const(5, 4), const(5, 4, seed=1)

    @tf.function
    def double_dqn_loss(obs: tf.Tensor, next_obs: tf.Tensor) -> tf.Tensor:
        best = tf.argmax(run_mlp(online, next_obs), axis=1)  # indices: no gradient to online here
        bootstrap = tf.gather(run_mlp(target, next_obs), best, batch_dims=1)
        q = tf.reduce_max(run_mlp(online, obs), axis=1)
        return tf.reduce_mean((q - tf.stop_gradient(bootstrap)) ** 2)

    return Case(double_dqn_loss, [*online, *target], (obs, next_obs))


@case("policy_gradient_log_prob_of_sampled_action")
def reinforce() -> Case:
    policy = mlp("pi", (4, 3))
    obs = const(6, 4)

    @tf.function
    def reinforce_loss(obs: tf.Tensor) -> tf.Tensor:
        logits = run_mlp(policy, obs)
        actions = tf.random.stateless_categorical(logits, 1, seed=[3, 4])[:, 0]
        logp = -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=actions, logits=logits)
        return -tf.reduce_mean(logp * 1.5)

    return Case(reinforce_loss, policy, (obs,))


# --- self-supervised ---------------------------------------------------------------------------


@case("simsiam_stop_gradient_on_one_branch")
def simsiam() -> Case:
    encoder, predictor = mlp("f", (4, 5, 3)), mlp("h", (3, 3), seed=11)
    x1, x2 = const(4, 4), const(4, 4, seed=1)

    @tf.function
    def simsiam_loss(x1: tf.Tensor, x2: tf.Tensor) -> tf.Tensor:
        def d(p: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
            z = tf.stop_gradient(z)
            return -tf.reduce_mean(tf.reduce_sum(tf.math.l2_normalize(p, 1) * tf.math.l2_normalize(z, 1), 1))

        z1, z2 = run_mlp(encoder, x1), run_mlp(encoder, x2)
        return d(run_mlp(predictor, z1), z2) / 2 + d(run_mlp(predictor, z2), z1) / 2

    return Case(simsiam_loss, [*encoder, *predictor], (x1, x2))


def _byol(ema_in_step: bool) -> Case:
    online, predictor = mlp("online", (4, 3)), mlp("pred", (3, 3), seed=4)
    target = mlp("target", (4, 3), seed=8)
    x1, x2 = const(4, 4), const(4, 4, seed=1)

    @tf.function
    def byol_loss(x1: tf.Tensor, x2: tf.Tensor) -> tf.Tensor:
        if ema_in_step:
            for t, o in zip(target, online):
                t.assign(0.99 * t + 0.01 * o)
        p = tf.math.l2_normalize(run_mlp(predictor, run_mlp(online, x1)), 1)
        z = tf.math.l2_normalize(tf.stop_gradient(run_mlp(target, x2)), 1)
        return tf.reduce_mean(2 - 2 * tf.reduce_sum(p * z, 1))

    return Case(byol_loss, [*online, *predictor, *target], (x1, x2))


@case("byol_target_network_stop_gradient")
def byol() -> Case:
    return _byol(ema_in_step=False)


@case("byol_ema_target_update_inside_step")
def byol_ema() -> Case:
    return _byol(ema_in_step=True)


@case("ema_target_without_stop_gradient_reads_after_assign")
def ema_no_stop() -> Case:
    online, target = var(4, 3, name="online"), var(4, 3, name="target", seed=2)
    x = const(2, 4)

    @tf.function
    def ema_loss(x: tf.Tensor) -> tf.Tensor:
        target.assign(0.9 * target + 0.1 * online)
        return tf.reduce_sum(tf.matmul(x, online) * tf.matmul(x, target))

    return Case(ema_loss, [online, target], (x,))


# --- GANs --------------------------------------------------------------------------------------


def _gan() -> tuple[list[tf.Variable], list[tf.Variable], tf.Tensor, tf.Tensor]:
    gen, disc = mlp("gen", (2, 4, 3)), mlp("disc", (3, 4, 1), seed=21)
    return gen, disc, const(5, 2), const(5, 3, seed=1)


def _bce(logits: tf.Tensor, label: float) -> tf.Tensor:
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logits), label), logits=logits))


@case("gan_discriminator_step_fake_under_stop_gradient")
def gan_d() -> Case:
    gen, disc, z, real = _gan()

    @tf.function
    def d_loss(z: tf.Tensor, real: tf.Tensor) -> tf.Tensor:
        fake = tf.stop_gradient(run_mlp(gen, z, tf.nn.leaky_relu))
        return _bce(run_mlp(disc, real, tf.nn.leaky_relu), 1.0) + _bce(run_mlp(disc, fake, tf.nn.leaky_relu), 0.0)

    return Case(d_loss, [*gen, *disc], (z, real))


@case("gan_generator_step_discriminator_still_gets_gradient")
def gan_g() -> Case:
    gen, disc, z, _ = _gan()

    @tf.function
    def g_loss(z: tf.Tensor) -> tf.Tensor:
        return _bce(run_mlp(disc, run_mlp(gen, z, tf.nn.leaky_relu), tf.nn.leaky_relu), 1.0)

    return Case(g_loss, [*gen, *disc], (z,))


@case("gan_generator_step_discriminator_weights_stopped")
def gan_g_frozen() -> Case:
    gen, disc, z, _ = _gan()

    @tf.function
    def g_loss_frozen(z: tf.Tensor) -> tf.Tensor:
        frozen = [tf.stop_gradient(p) for p in disc]
        return _bce(run_mlp(frozen, run_mlp(gen, z, tf.nn.leaky_relu), tf.nn.leaky_relu), 1.0)

    return Case(g_loss_frozen, [*gen, *disc], (z,))


@case("gan_both_losses_as_a_dict")
def gan_dict() -> Case:
    gen, disc, z, real = _gan()

    @tf.function
    def gan_losses(z: tf.Tensor, real: tf.Tensor) -> dict[str, tf.Tensor]:
        fake = run_mlp(gen, z)
        return {
            "d": _bce(run_mlp(disc, real), 1.0) + _bce(run_mlp(disc, tf.stop_gradient(fake)), 0.0),
            "g": _bce(run_mlp([tf.stop_gradient(p) for p in disc], fake), 1.0),
        }

    return Case(gan_losses, [*gen, *disc], (z, real))


# --- Keras layers and models -------------------------------------------------------------------


def keras_variables(*layers: Any) -> list[Any]:
    """Every variable of the layers, trainable or not, deduplicated."""
    seen: dict[int, Any] = {}
    for layer in layers:
        for v in layer.variables:
            seen.setdefault(id(v), v)
    return list(seen.values())


@case("keras_sequential_mse_in_tf_function")
def keras_sequential() -> Case:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(1)])
    x, y = const(3, 4), const(3, 1, seed=1)

    @tf.function
    def seq_loss(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(keras.losses.mean_squared_error(y, model(x, training=True)))

    return Case(seq_loss, keras_variables(model), (x, y))


@case("keras_functional_two_heads_one_used")
def keras_functional() -> Case:
    inputs = keras.Input((4,))
    h = keras.layers.Dense(5, activation="tanh")(inputs)
    a = keras.layers.Dense(1, name="head_a")(h)
    b = keras.layers.Dense(2, name="head_b")(h)
    model = keras.Model(inputs, [a, b])
    x = const(3, 4)

    @tf.function
    def head_a_loss(x: tf.Tensor) -> tf.Tensor:
        out_a, _ = model(x, training=True)
        return tf.reduce_sum(out_a**2)

    return Case(head_a_loss, keras_variables(model), (x,))


def _backbone_model(freeze: bool) -> tuple[Any, Any, Any]:
    backbone = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, activation="relu"), keras.layers.BatchNormalization(), keras.layers.Dense(4)],
        name="backbone",
    )
    head = keras.layers.Dense(2, name="head")
    head.build((None, 4))
    if freeze:
        backbone.trainable = False
    return backbone, head, const(4, 6)


@case("frozen_backbone_trainable_false_small")
def frozen_trainable_false() -> Case:
    backbone, head, x = _backbone_model(freeze=True)

    @tf.function
    def finetune_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(head(backbone(x, training=False)) ** 2)

    return Case(finetune_loss, keras_variables(backbone, head), (x,))


@case("frozen_backbone_stop_gradient_features_small")
def frozen_stop_gradient() -> Case:
    backbone, head, x = _backbone_model(freeze=False)

    @tf.function
    def features_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(head(tf.stop_gradient(backbone(x, training=True))) ** 2)

    return Case(features_loss, keras_variables(backbone, head), (x,))


def _mobilenet(freeze: bool, stop: bool) -> Case:
    backbone = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(32, 32, 3), alpha=0.35, pooling="avg"
    )
    if freeze:
        backbone.trainable = False
    head = keras.layers.Dense(3, name="head")
    head.build((None, backbone.output_shape[-1]))
    x = const(2, 32, 32, 3)

    @tf.function
    def mobilenet_loss(x: tf.Tensor) -> tf.Tensor:
        features = backbone(x, training=not freeze)
        if stop:
            features = tf.stop_gradient(features)
        return tf.reduce_mean(head(features) ** 2)

    return Case(mobilenet_loss, keras_variables(backbone, head), (x,))


@case("keras_applications_mobilenetv2_trainable_false", pytest.mark.slow)
def mobilenet_frozen() -> Case:
    return _mobilenet(freeze=True, stop=False)


@case("keras_applications_mobilenetv2_stop_gradient_features", pytest.mark.slow)
def mobilenet_stop() -> Case:
    return _mobilenet(freeze=False, stop=True)


@case("keras_applications_mobilenetv2_finetune_all", pytest.mark.slow)
def mobilenet_all() -> Case:
    return _mobilenet(freeze=False, stop=False)


def _batchnorm(training: bool) -> Case:
    dense, bn = keras.layers.Dense(3), keras.layers.BatchNormalization()
    dense.build((None, 4))
    bn.build((None, 3))
    x = const(5, 4)

    @tf.function
    def bn_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(bn(dense(x), training=training) ** 2)

    return Case(bn_loss, keras_variables(dense, bn), (x,))


@case("batchnorm_training_moving_stats_assigned")
def bn_training() -> Case:
    return _batchnorm(training=True)


@case("batchnorm_inference_moving_stats_read")
def bn_inference() -> Case:
    return _batchnorm(training=False)


@case("keras_embedding_sparse_gradient")
def keras_embedding() -> Case:
    emb, dense = keras.layers.Embedding(10, 3), keras.layers.Dense(1)
    emb.build((None, 4))
    dense.build((None, 3))
    ids = tf.constant([[1, 2, 3, 1], [4, 4, 0, 9]])

    @tf.function
    def embedding_loss(ids: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(dense(tf.reduce_mean(emb(ids), axis=1)))

    return Case(embedding_loss, keras_variables(emb, dense), (ids,))


@case("embedding_lookup_resource_gather_and_index_from_variable")
def raw_embedding() -> Case:
    table = var(8, 3, name="table")
    index_source = var(4, name="index_source", seed=4)
    ids = tf.constant([0, 3, 7])

    @tf.function
    def lookup_loss(ids: tf.Tensor) -> tf.Tensor:
        learned_ids = tf.cast(tf.abs(index_source) * 3, tf.int32)  # indices from a variable: no gradient
        return tf.reduce_sum(tf.nn.embedding_lookup(table, ids)) + tf.reduce_sum(tf.gather(table, learned_ids))

    return Case(lookup_loss, [table, index_source], (ids,))


@case("dropout_training")
def dropout() -> Case:
    dense, drop = keras.layers.Dense(4), keras.layers.Dropout(0.5, seed=1)
    dense.build((None, 3))
    x = const(4, 3)

    @tf.function
    def dropout_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(drop(dense(x), training=True))

    return Case(dropout_loss, keras_variables(dense), (x,))


@case("layer_normalization")
def layer_norm() -> Case:
    dense, ln = keras.layers.Dense(4), keras.layers.LayerNormalization()
    dense.build((None, 3))
    ln.build((None, 4))
    x = const(4, 3)

    @tf.function
    def ln_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(ln(dense(x)) * tf.range(4, dtype=tf.float32))

    return Case(ln_loss, keras_variables(dense, ln), (x,))


@case("multi_head_attention", pytest.mark.slow)
def mha() -> Case:
    layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=2)
    q, v = const(2, 3, 4), const(2, 5, 4, seed=1)
    layer(q, v)  # build

    @tf.function
    def attention_loss(q: tf.Tensor, v: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(layer(q, v, training=True) ** 2)

    return Case(attention_loss, keras_variables(layer), (q, v))


def _rnn(layer: Any) -> Case:
    dense = keras.layers.Dense(1)
    x = const(2, 4, 3)
    layer.build((None, 4, 3))
    dense.build((None, layer.units))

    @tf.function
    def rnn_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(dense(layer(x, training=True)))

    return Case(rnn_loss, keras_variables(layer, dense), (x,))


@case("lstm_layer_while_loop")
def lstm() -> Case:
    return _rnn(keras.layers.LSTM(3))


@case("gru_layer_while_loop")
def gru() -> Case:
    return _rnn(keras.layers.GRU(3, return_sequences=False))


@case("distillation_teacher_stop_gradient")
def distill_stop() -> Case:
    teacher, student = mlp("teacher", (4, 5, 3)), mlp("student", (4, 3), seed=9)
    x = const(4, 4)

    @tf.function
    def distill_loss(x: tf.Tensor) -> tf.Tensor:
        soft = tf.nn.softmax(tf.stop_gradient(run_mlp(teacher, x)) / 2.0)
        return tf.reduce_mean(keras.losses.kl_divergence(soft, tf.nn.softmax(run_mlp(student, x) / 2.0)))

    return Case(distill_loss, [*teacher, *student], (x,))


@case("distillation_keras_teacher_training_false")
def distill_keras() -> Case:
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5), keras.layers.BatchNormalization(), keras.layers.Dense(3)])
    teacher.trainable = False
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    x = const(4, 4)

    @tf.function
    def keras_distill_loss(x: tf.Tensor) -> tf.Tensor:
        soft = tf.nn.softmax(teacher(x, training=False))
        return tf.reduce_mean(keras.losses.categorical_crossentropy(soft, tf.nn.softmax(student(x, training=True))))

    return Case(keras_distill_loss, keras_variables(teacher, student), (x,))


# --- control flow ------------------------------------------------------------------------------


@case("cond_taken_and_untaken_branches")
def cond_branches() -> Case:
    a, b, c = var(3, name="then_w"), var(3, name="else_w", seed=2), var(3, name="pred_only", seed=3)
    x = const(3)

    @tf.function
    def cond_loss(x: tf.Tensor, flag: tf.Tensor) -> tf.Tensor:
        out = tf.cond(flag & (tf.reduce_sum(c) > -100.0), lambda: tf.reduce_sum(a * x), lambda: tf.reduce_sum(b * x))
        return out

    return Case(cond_loss, [a, b, c], (x, tf.constant(True)))


@case("cond_stop_gradient_in_one_branch")
def cond_stop() -> Case:
    a, b = var(3, name="a"), var(3, name="b", seed=2)
    x = const(3)

    @tf.function
    def cond_stop_loss(x: tf.Tensor, flag: tf.Tensor) -> tf.Tensor:
        return tf.cond(flag, lambda: tf.reduce_sum(tf.stop_gradient(a) * x), lambda: tf.reduce_sum(a * b))

    return Case(cond_stop_loss, [a, b], (x, tf.constant(True)))


@case("cond_branch_outputs_partly_unused")
def cond_outputs() -> Case:
    a, b = var(3, name="a"), var(3, name="b", seed=2)

    @tf.function
    def cond_outputs_loss(flag: tf.Tensor) -> tf.Tensor:
        first, _second = tf.cond(flag, lambda: (a * 2.0, b * 3.0), lambda: (a + 1.0, b - 1.0))
        return tf.reduce_sum(first)

    return Case(cond_outputs_loss, [a, b], (tf.constant(False),))


@case("switch_case_three_branches")
def switch_case() -> Case:
    ws = [var(2, name=f"branch{i}", seed=i) for i in range(3)]

    @tf.function
    def switch_loss(i: tf.Tensor) -> tf.Tensor:
        return tf.switch_case(i, [lambda w=w: tf.reduce_sum(w**2) for w in ws])

    return Case(switch_loss, ws, (tf.constant(1),))


@case("while_loop_recurrence")
def while_loop() -> Case:
    w, bias, limit = var(3, 3, name="w"), var(3, name="bias", seed=2), var(1, name="steps_scale", seed=3)
    x = const(1, 3)

    @tf.function
    def while_loss(x: tf.Tensor) -> tf.Tensor:
        n = tf.cast(tf.abs(limit[0]) * 0 + 3, tf.int32)  # loop count from a variable: no gradient
        _, h = tf.while_loop(lambda i, h: i < n, lambda i, h: (i + 1, tf.tanh(tf.matmul(h, w) + bias)), (0, x))
        return tf.reduce_sum(h)

    return Case(while_loss, [w, bias, limit], (x,))


@case("while_loop_stop_gradient_in_body")
def while_stop() -> Case:
    w, v = var(3, name="w"), var(3, name="v", seed=2)

    @tf.function
    def while_stop_loss(x: tf.Tensor) -> tf.Tensor:
        def body(i: tf.Tensor, h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return i + 1, tf.stop_gradient(h * w) + v

        _, h = tf.while_loop(lambda i, h: i < 3, body, (0, x))
        return tf.reduce_sum(h)

    return Case(while_stop_loss, [w, v], (const(3),))


@case("while_loop_variable_only_in_condition")
def while_cond_only() -> Case:
    w, threshold = var(3, name="w"), tf.Variable(5.0, name="threshold")

    @tf.function
    def while_cond_loss(x: tf.Tensor) -> tf.Tensor:
        _, h = tf.while_loop(lambda i, h: tf.cast(i, tf.float32) < threshold, lambda i, h: (i + 1, h * 0.5 + w), (0, x))
        return tf.reduce_sum(h)

    return Case(while_cond_loss, [w, threshold], (const(3),))


@case("autograph_for_tf_range")
def autograph_range() -> Case:
    w, u = var(2, 2, name="w"), var(2, name="unused_in_loop", seed=5)

    @tf.function
    def range_loss(x: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
        h = x
        for _ in tf.range(n):
            h = tf.nn.relu(tf.matmul(h, w))
        return tf.reduce_sum(h) + tf.reduce_sum(tf.cast(tf.argmax(u), tf.float32))

    return Case(range_loss, [w, u], (const(1, 2), tf.constant(3)))


@case("autograph_python_loop_unrolled")
def python_loop() -> Case:
    ws = [var(2, 2, name=f"layer{i}", seed=i) for i in range(3)]

    @tf.function
    def unrolled_loss(x: tf.Tensor) -> tf.Tensor:
        h = x
        for i, w in enumerate(ws):
            h = tf.matmul(h, w)
            if i == 1:
                h = tf.stop_gradient(h)
        return tf.reduce_sum(h)

    return Case(unrolled_loss, ws, (const(1, 2),))


@case("map_fn_tensor_array")
def map_fn() -> Case:
    w, scale = var(3, name="w"), var(1, name="scale", seed=3)

    @tf.function
    def map_loss(x: tf.Tensor) -> tf.Tensor:
        rows = tf.map_fn(lambda row: tf.reduce_sum(row * w) * tf.stop_gradient(scale[0]), x)
        return tf.reduce_sum(rows)

    return Case(map_loss, [w, scale], (const(4, 3),))


@case("scan_cumulative")
def scan() -> Case:
    w = var(2, name="w")

    @tf.function
    def scan_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.scan(lambda acc, row: acc * w + row, x))

    return Case(scan_loss, [w], (const(4, 2),))


# --- custom gradients --------------------------------------------------------------------------


@case("custom_gradient_returns_none_for_one_input")
def custom_none() -> Case:
    a, b = var(3, name="a"), var(3, name="b", seed=2)

    @tf.custom_gradient
    def product(u: tf.Tensor, v: tf.Tensor) -> Any:
        def grad(dy: tf.Tensor) -> tuple[Any, Any]:
            return dy * v, None

        return u * v, grad

    @tf.function
    def custom_none_loss() -> tf.Tensor:
        return tf.reduce_sum(product(a, b))

    return Case(custom_none_loss, [a, b])


@case("custom_gradient_returns_zeros")
def custom_zeros() -> Case:
    a = var(3, name="a")

    @tf.custom_gradient
    def clip_grad(u: tf.Tensor) -> Any:
        return tf.identity(u), lambda dy: tf.zeros_like(dy)

    @tf.function
    def custom_zeros_loss() -> tf.Tensor:
        return tf.reduce_sum(clip_grad(a) ** 2)

    return Case(custom_zeros_loss, [a])


@case("custom_gradient_with_variables")
def custom_variables() -> Case:
    w, other = var(3, name="w_in_custom"), var(3, name="other", seed=2)
    x = const(3)

    @tf.custom_gradient
    def scaled(u: tf.Tensor) -> Any:
        out = u * w * other

        def grad(dy: tf.Tensor, variables: Any = None) -> tuple[Any, list[Any]]:
            # Gives w a gradient; other gets none (it is listed in variables, answered with None).
            grads = [dy * u if v is w else None for v in variables]
            return dy * w, grads

        return out, grad

    @tf.function
    def custom_vars_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(scaled(x))

    return Case(custom_vars_loss, [w, other], (x,))


@case("gradient_reversal_layer")
def grad_reverse() -> Case:
    feat, dom = var(3, 3, name="features"), var(3, 1, name="domain_head", seed=2)

    @tf.custom_gradient
    def reverse(u: tf.Tensor) -> Any:
        return tf.identity(u), lambda dy: -dy

    @tf.function
    def dann_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.matmul(reverse(tf.matmul(x, feat)), dom))

    return Case(dann_loss, [feat, dom], (const(2, 3),))


@case("recompute_grad")
def recompute() -> Case:
    w, v = var(3, 3, name="w"), var(3, name="v", seed=2)

    block = tf.recompute_grad(lambda h: tf.nn.relu(tf.matmul(h, w)) + tf.stop_gradient(v))

    @tf.function
    def recompute_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(block(x))

    return Case(recompute_loss, [w, v], (const(2, 3),))


# --- non-differentiable ops --------------------------------------------------------------------


@case("integer_cast_round_trip")
def int_cast() -> Case:
    a, b = var(3, name="through_int"), var(3, name="float_path", seed=2)

    @tf.function
    def int_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.cast(tf.cast(a * 10.0, tf.int32), tf.float32) * x + b * x)

    return Case(int_loss, [a, b], (const(3),))


@case("round_floor_sign")
def round_floor_sign() -> Case:
    r, f, s, c = (var(3, name=n, seed=i) for i, n in enumerate(["rounded", "floored", "signed", "ceiled"]))

    @tf.function
    def rfs_loss() -> tf.Tensor:
        return tf.reduce_sum(tf.round(r) + tf.floor(f) + tf.sign(s) + tf.math.ceil(c))

    return Case(rfs_loss, [r, f, s, c])


@case("argmax_and_one_hot_of_argmax")
def argmax() -> Case:
    logits_w, values = var(3, 4, name="logits_w"), var(4, name="values", seed=2)

    @tf.function
    def argmax_loss(x: tf.Tensor) -> tf.Tensor:
        idx = tf.argmax(tf.matmul(x, logits_w), axis=1)
        return tf.reduce_sum(tf.one_hot(idx, 4) * values)

    return Case(argmax_loss, [logits_w, values], (const(2, 3),))


@case("shape_only_uses")
def shape_only() -> Case:
    shaped, sized, real = var(2, 3, name="shape_of"), var(4, name="size_of", seed=2), var(3, name="real", seed=3)

    @tf.function
    def shape_loss(x: tf.Tensor) -> tf.Tensor:
        n = tf.cast(tf.reduce_prod(tf.shape(shaped)), tf.float32) + tf.cast(tf.size(sized), tf.float32)
        return tf.reduce_sum(real * x) / n + tf.reduce_sum(tf.zeros_like(shaped)) + tf.reduce_sum(tf.ones_like(sized))

    return Case(shape_loss, [shaped, sized, real], (const(3),))


@case("unused_captured_and_never_read_variables")
def unused() -> Case:
    used, read_unused, stranger = var(3, name="used"), var(3, name="read_not_used", seed=2), var(3, name="stranger", seed=3)

    @tf.function
    def unused_loss(x: tf.Tensor) -> tf.Tensor:
        _ = read_unused * 2.0
        return tf.reduce_sum(used * x)

    return Case(unused_loss, [used, read_unused, stranger], (const(3),))


@case("comparisons_and_where_mask")
def where_mask() -> Case:
    values, gate, other = var(4, name="values"), var(4, name="gate", seed=2), var(4, name="other", seed=3)

    @tf.function
    def where_loss() -> tf.Tensor:
        mask = gate > 0.0  # boolean: gate gets no gradient through it
        return tf.reduce_sum(tf.where(mask, values, other * 0.0))

    return Case(where_loss, [values, gate, other])


@case("dead_relu_and_zero_mask")
def dead_relu() -> Case:
    w, masked = var(3, name="dead_relu_w"), var(3, name="masked", seed=2)

    @tf.function
    def dead_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.nn.relu(w * x - 1e6)) + tf.reduce_sum(masked * tf.zeros(3))

    return Case(dead_loss, [w, masked], (const(3),))


@case("top_k_values_vs_indices")
def top_k() -> Case:
    by_value, by_index, table = var(6, name="by_value"), var(6, name="by_index", seed=2), var(6, name="table", seed=3)

    @tf.function
    def topk_loss() -> tf.Tensor:
        values = tf.math.top_k(by_value, k=2).values
        indices = tf.math.top_k(by_index, k=2).indices
        return tf.reduce_sum(values) + tf.reduce_sum(tf.gather(table, indices))

    return Case(topk_loss, [by_value, by_index, table])


@case("sort_unique_searchsorted_histogram")
def sort_unique() -> Case:
    sorted_w, unique_w, search_w, hist_w = (
        var(5, name=n, seed=i) for i, n in enumerate(["sorted", "unique_src", "searched", "histogrammed"])
    )

    @tf.function
    def sort_loss() -> tf.Tensor:
        s = tf.reduce_sum(tf.sort(sorted_w) * tf.range(5, dtype=tf.float32))
        u = tf.reduce_sum(tf.cast(tf.unique(tf.cast(unique_w * 2, tf.int32)).idx, tf.float32))
        pos = tf.cast(tf.searchsorted(tf.sort(search_w), tf.constant([0.0, 0.5])), tf.float32)
        h = tf.cast(tf.histogram_fixed_width(hist_w, [-1.0, 1.0], nbins=3), tf.float32)
        return s + u + tf.reduce_sum(pos) + tf.reduce_sum(h)

    return Case(sort_loss, [sorted_w, unique_w, search_w, hist_w])


@case("clip_by_value_saturated_and_floordiv")
def clip_floordiv() -> Case:
    clipped, divided, modded = var(3, name="clipped"), var(3, name="floordiv", seed=2), var(3, name="floormod", seed=3)

    @tf.function
    def clip_loss() -> tf.Tensor:
        c = tf.clip_by_value(clipped + 100.0, -1.0, 1.0)  # saturated: zeros, still a gradient
        return tf.reduce_sum(c + tf.math.floordiv(divided, 0.3) + tf.math.floormod(modded, 0.3))

    return Case(clip_loss, [clipped, divided, modded])


@case("fake_quant_and_quantize_dequantize")
def fake_quant() -> Case:
    a, b = var(4, name="fake_quant"), var(4, name="qdq", seed=2)

    @tf.function
    def quant_loss() -> tf.Tensor:
        fq = tf.quantization.fake_quant_with_min_max_args(a, min=-1.0, max=1.0)
        qdq = tf.quantization.quantize_and_dequantize_v2(b, -1.0, 1.0, range_given=True)
        return tf.reduce_sum(fq**2 + qdq**2)

    return Case(quant_loss, [a, b])


@case("stop_gradient_on_part_of_a_concat")
def concat_stop() -> Case:
    a, b = var(2, name="stopped_part"), var(2, name="live_part", seed=2)

    @tf.function
    def concat_loss() -> tf.Tensor:
        both = tf.concat([tf.stop_gradient(a), b], axis=0)
        first, second = tf.split(both * 2.0, 2)
        return tf.reduce_sum(first) + tf.reduce_sum(second)

    return Case(concat_loss, [a, b])


@case("tf_nn_moments_normalization")
def moments() -> Case:
    w = var(4, 3, name="w")

    @tf.function
    def moments_loss(x: tf.Tensor) -> tf.Tensor:
        h = tf.matmul(x, w)
        mean, variance = tf.nn.moments(h, axes=[0])
        return tf.reduce_sum((h - mean) / tf.sqrt(variance + 1e-3) * tf.range(3, dtype=tf.float32))

    return Case(moments_loss, [w], (const(5, 4),))


@case("scatter_and_segment_ops")
def scatter() -> Case:
    base, updates, seg = var(5, name="base"), var(2, name="updates", seed=2), var(4, name="segmented", seed=3)

    @tf.function
    def scatter_loss() -> tf.Tensor:
        out = tf.tensor_scatter_nd_update(base, [[0], [3]], updates)
        segs = tf.math.segment_sum(seg, tf.constant([0, 0, 1, 2]))
        return tf.reduce_sum(out * tf.range(5, dtype=tf.float32)) + tf.reduce_sum(segs**2)

    return Case(scatter_loss, [base, updates, seg])


# --- state, nesting, escapes -------------------------------------------------------------------


@case("assign_inside_step_then_read")
def assign_in_step() -> Case:
    source, state, counter = var(3, name="source"), var(3, name="state", seed=2), tf.Variable(0, name="step_counter")

    @tf.function
    def assign_loss(x: tf.Tensor) -> tf.Tensor:
        counter.assign_add(1)
        state.assign(source * 2.0)
        return tf.reduce_sum(state * x) + tf.cast(counter, tf.float32) * 0.0

    return Case(assign_loss, [source, state, counter], (const(3),))


@case("assign_add_accumulator_read_after")
def assign_add() -> Case:
    w, acc = var(3, name="w"), var(3, name="accumulator", seed=2)

    @tf.function
    def accumulate_loss(x: tf.Tensor) -> tf.Tensor:
        loss = tf.reduce_sum(w * x)
        acc.assign_add(w * 0.1)
        return loss + tf.reduce_sum(acc.read_value())

    return Case(accumulate_loss, [w, acc], (const(3),))


@case("nested_tf_function_outputs_partly_unused")
def nested() -> Case:
    a, b, c = var(3, name="a"), var(3, name="b", seed=2), var(3, name="c", seed=3)

    @tf.function
    def inner(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.reduce_sum(a * x), tf.reduce_sum(b * x)

    @tf.function
    def inner_stopped(x: tf.Tensor) -> tf.Tensor:
        return tf.stop_gradient(tf.reduce_sum(c * x))

    @tf.function
    def outer(x: tf.Tensor) -> tf.Tensor:
        used, _unused = inner(x)
        return used + inner_stopped(x)

    return Case(outer, [a, b, c], (const(3),))


@case("nested_tf_function_jit_compile")
def jit() -> Case:
    w, s = var(3, 2, name="w"), var(2, name="stopped", seed=2)

    @tf.function(jit_compile=True)
    def compiled(x: tf.Tensor) -> tf.Tensor:
        return tf.nn.relu(tf.matmul(x, w)) + tf.stop_gradient(s)

    @tf.function
    def jit_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(compiled(x))

    return Case(jit_loss, [w, s], (const(2, 3),))


@case("top_level_jit_compile")
def jit_top() -> Case:
    w, idx_src = var(3, 2, name="w"), var(2, name="index_source", seed=2)

    @tf.function(jit_compile=True)
    def jit_top_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.matmul(x, w)) + tf.cast(tf.argmax(idx_src), tf.float32)

    return Case(jit_top_loss, [w, idx_src], (const(2, 3),))


@case("py_function_and_numpy_function")
def py_functions() -> Case:
    via_py, via_numpy = var(3, name="via_py_function"), var(3, name="via_numpy_function", seed=2)

    @tf.function
    def escape_loss() -> tf.Tensor:
        p = tf.py_function(lambda t: t * 2.0, [via_py], tf.float32)
        n = tf.numpy_function(lambda t: (t * 2.0).astype(np.float32), [via_numpy], tf.float32)
        return tf.reduce_sum(p) + tf.reduce_sum(n)

    return Case(escape_loss, [via_py, via_numpy])


@case("gradient_penalty_inner_tape")
def gradient_penalty() -> Case:
    critic, gen = mlp("critic", (3, 4, 1)), mlp("gen", (2, 3), seed=13)
    real, z = const(4, 3), const(4, 2, seed=1)

    @tf.function
    def wgan_gp_loss(real: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
        fake = tf.stop_gradient(run_mlp(gen, z))
        mix = 0.5 * real + 0.5 * fake
        with tf.GradientTape() as inner:
            inner.watch(mix)
            score = run_mlp(critic, mix, tf.nn.softplus)
        slopes = tf.norm(inner.gradient(score, mix), axis=1)
        penalty = tf.reduce_mean((slopes - 1.0) ** 2)
        return tf.reduce_mean(run_mlp(critic, fake, tf.nn.softplus)) - tf.reduce_mean(run_mlp(critic, real, tf.nn.softplus)) + 10.0 * penalty

    return Case(wgan_gp_loss, [*critic, *gen], (real, z))


@case("input_gradient_penalty_only")
def penalty_only() -> Case:
    w1, w2 = var(3, 4, name="w1"), var(4, 1, name="w2", seed=2)

    @tf.function
    def penalty_only_loss(x: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = tf.reduce_sum(tf.matmul(tf.matmul(x, w1), w2))  # linear in x: d/dx has no w path... through matmul grads
        return tf.reduce_sum(inner.gradient(y, x) ** 2)

    return Case(penalty_only_loss, [w1, w2], (const(2, 3),))


@case("non_scalar_loss")
def non_scalar() -> Case:
    w, b = var(3, 2, name="w"), var(2, name="b", seed=2)

    @tf.function
    def per_example_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.matmul(x, w) + tf.stop_gradient(b)

    return Case(per_example_loss, [w, b], (const(4, 3),))


@case("loss_tuple_with_integer_metric")
def loss_tuple() -> Case:
    w, v = var(3, name="w"), var(3, name="v", seed=2)

    @tf.function
    def tuple_loss(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        correct = tf.reduce_sum(tf.cast(w * x > 0, tf.int32))
        return tf.reduce_sum(w * x), tf.reduce_sum(tf.stop_gradient(v) * x), correct

    return Case(tuple_loss, [w, v], (const(3),))


@case("sparse_softmax_cross_entropy_labels_from_variable")
def labels_from_variable() -> Case:
    w, label_src = var(3, 4, name="w"), var(2, name="label_source", seed=2)

    @tf.function
    def ce_loss(x: tf.Tensor) -> tf.Tensor:
        labels = tf.cast(tf.abs(label_src) * 2, tf.int64) % 4
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=tf.matmul(x, w)))

    return Case(ce_loss, [w, label_src], (const(2, 3),))


@case("einsum_and_linalg")
def einsum_linalg() -> Case:
    a, m = var(2, 3, name="einsum_w"), tf.Variable(np.eye(3, dtype=np.float32) * 2 + 0.1, name="matrix")

    @tf.function
    def linalg_loss(x: tf.Tensor) -> tf.Tensor:
        h = tf.einsum("bi,ij->bj", x, a)
        return tf.reduce_sum(tf.matmul(h, tf.linalg.inv(m))) + tf.linalg.logdet(m @ tf.transpose(m))

    return Case(linalg_loss, [a, m], (const(2, 2),))


@case("integer_variable_and_float_counter")
def int_variable() -> Case:
    w, steps, scale = var(2, name="w"), tf.Variable(3, name="int_steps"), tf.Variable(2.0, name="float_scale")

    @tf.function
    def int_var_loss() -> tf.Tensor:
        return tf.reduce_sum(w * tf.cast(steps, tf.float32)) + tf.cast(tf.cast(scale, tf.int64), tf.float32)

    return Case(int_var_loss, [w, steps, scale])


@case("tf_module_method_with_non_trainable_variable")
def module_owner() -> Case:
    class Linear(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = var(3, 2, name="module_w")
            self.frozen = var(2, name="module_frozen", seed=3, trainable=False)

        @tf.function
        def __call__(self, x: tf.Tensor) -> tf.Tensor:
            return tf.reduce_sum(tf.matmul(x, self.w) + self.frozen)

    layer = Linear()
    return Case(layer.__call__, [layer.w, layer.frozen], (const(2, 3),), owner=layer)


# --- how variables reach the function ----------------------------------------------------------


@case("variables_passed_as_arguments")
def variable_arguments() -> Case:
    w, rounded, captured = var(3, name="arg_w"), var(3, name="arg_rounded", seed=2), var(3, name="captured", seed=3)

    @tf.function
    def args_loss(params: list[tf.Variable], x: tf.Tensor, *, extra: dict[str, tf.Variable]) -> tf.Tensor:
        return tf.reduce_sum(params[0] * x) + tf.reduce_sum(tf.round(extra["r"])) + tf.reduce_sum(captured)

    return Case(args_loss, [w, rounded, captured], ([w], const(3)), {"extra": {"r": rounded}})


@case("variables_passed_through_varargs_and_defaults")
def varargs_variables() -> Case:
    w, stopped, by_default = var(3, name="vararg_w"), var(3, name="vararg_stopped", seed=2), var(3, name="default_w", seed=3)

    @tf.function
    def varargs_loss(x: tf.Tensor, *params: tf.Variable, scale: float = 2.0, extra: Any = by_default) -> tf.Tensor:
        first, second = params
        return tf.reduce_sum(first * x * scale) + tf.reduce_sum(tf.stop_gradient(second)) + tf.reduce_sum(extra * x)

    return Case(varargs_loss, [w, stopped, by_default], (const(3), w, stopped))


@case("same_variable_passed_twice_aliased")
def aliased() -> Case:
    w, other = var(3, name="aliased"), var(3, name="other", seed=2)

    @tf.function
    def aliased_loss(u: tf.Variable, v: tf.Variable, x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.stop_gradient(u) * x) + tf.reduce_sum(v * x)

    return Case(aliased_loss, [w, other], (w, w, const(3)))


@case("keras_variables_passed_as_arguments")
def keras_variable_arguments() -> Case:
    dense = keras.layers.Dense(2)
    dense.build((None, 3))

    @tf.function
    def keras_args_loss(params: list[Any], x: tf.Tensor) -> tf.Tensor:
        kernel, bias = params
        return tf.reduce_sum(tf.matmul(x, kernel)) + tf.reduce_sum(tf.floor(bias))

    return Case(keras_args_loss, keras_variables(dense), (dense.trainable_variables, const(2, 3)))


@case("plain_python_callable")
def plain_callable() -> Case:
    w, s = var(3, name="w"), var(3, name="stopped", seed=2)

    def plain_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(w * x) + tf.reduce_sum(tf.stop_gradient(s) * x)

    return Case(plain_loss, [w, s], (const(3),))


@case("saved_model_loaded_and_finetuned")
def saved_model() -> Case:
    class Exported(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = var(2, 2, name="exported_w")
            self.frozen = var(2, name="exported_frozen", seed=2)

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32)])
        def __call__(self, x: tf.Tensor) -> tf.Tensor:
            return tf.matmul(x, self.w) + tf.stop_gradient(self.frozen)

    directory = tempfile.mkdtemp(prefix="flowcheck_corpus_")
    tf.saved_model.save(Exported(), directory)
    loaded = tf.saved_model.load(directory)
    shutil.rmtree(directory)

    @tf.function
    def finetune_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(loaded(x) ** 2)

    return Case(finetune_loss, [loaded.w, loaded.frozen], (const(3, 2),), owner=loaded)


@case("variable_dtypes_float64_float16_bfloat16_complex")
def dtypes() -> Case:
    f64 = tf.Variable([1.0, 2.0], dtype=tf.float64, name="f64")
    f16 = tf.Variable([1.0, 2.0], dtype=tf.float16, name="f16")
    bf16 = tf.Variable([1.0, 2.0], dtype=tf.bfloat16, name="bf16")
    cx = tf.Variable([1.0 + 1.0j, 2.0], dtype=tf.complex64, name="complex")
    f64_int = tf.Variable([1.5, 2.5], dtype=tf.float64, name="f64_to_int")

    @tf.function
    def dtype_loss() -> tf.Tensor:
        total = tf.reduce_sum(tf.cast(f64, tf.float32)) + tf.reduce_sum(tf.cast(f16, tf.float32))
        total += tf.reduce_sum(tf.cast(bf16, tf.float32)) + tf.reduce_sum(tf.abs(cx))
        return total + tf.cast(tf.reduce_sum(tf.cast(f64_int, tf.int64)), tf.float32)

    return Case(dtype_loss, [f64, f16, bf16, cx, f64_int])


@case("keras_mixed_precision_dense_and_batchnorm")
def mixed_precision() -> Case:
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        dense, bn = keras.layers.Dense(2), keras.layers.BatchNormalization()
        dense.build((None, 3))
        bn.build((None, 2))
    finally:
        keras.mixed_precision.set_global_policy(policy)

    @tf.function
    def mixed_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.cast(bn(dense(x), training=True), tf.float32))

    return Case(mixed_loss, keras_variables(dense, bn), (const(4, 3),))


# --- more real-world steps ---------------------------------------------------------------------


@case("full_train_step_with_optimizer_inside")
def train_step() -> Case:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.Adam(0.01)
    optimizer.build(model.trainable_variables)

    @tf.function
    def train_step_fn(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x, training=True) - y) ** 2)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    return Case(train_step_fn, keras_variables(model) + list(optimizer.variables), (const(2, 3), const(2, 2, seed=1)))


def _maml(first_order: bool) -> Case:
    w, head = var(2, 2, name="meta_w"), var(2, 1, name="head", seed=2)
    support, query = const(3, 2), const(3, 2, seed=1)

    @tf.function
    def maml_loss(support: tf.Tensor, query: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as inner:
            inner_loss = tf.reduce_sum(tf.matmul(tf.tanh(tf.matmul(support, w)), head) ** 2)
        g = inner.gradient(inner_loss, w)
        if first_order:
            g = tf.stop_gradient(g)
        fast = w - 0.1 * g
        return tf.reduce_sum(tf.matmul(tf.tanh(tf.matmul(query, fast)), tf.stop_gradient(head)) ** 2)

    return Case(maml_loss, [w, head], (support, query))


@case("maml_second_order_through_inner_gradient")
def maml2() -> Case:
    return _maml(first_order=False)


@case("maml_first_order_stopped_inner_gradient")
def maml1() -> Case:
    return _maml(first_order=True)


@case("fused_batch_norm_inference_population_stats")
def fused_bn() -> Case:
    scale, offset = tf.Variable(np.ones(3, np.float32), name="scale"), tf.Variable(np.zeros(3, np.float32), name="offset")
    mean, variance = tf.Variable(np.zeros(3, np.float32), name="pop_mean"), tf.Variable(np.ones(3, np.float32), name="pop_var")

    @tf.function
    def fused_loss(x: tf.Tensor) -> tf.Tensor:
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(x, scale, offset, mean=mean, variance=variance, is_training=False)
        return tf.reduce_sum(y * tf.range(3, dtype=tf.float32))

    return Case(fused_loss, [scale, offset, mean, variance], (const(2, 2, 2, 3),))


@case("conv_net_sparse_categorical_crossentropy", pytest.mark.slow)
def convnet() -> Case:
    model = keras.Sequential([
        keras.Input((8, 8, 2)), keras.layers.Conv2D(3, 3), keras.layers.MaxPooling2D(), keras.layers.BatchNormalization(),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2),
    ])

    @tf.function
    def conv_loss(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x, training=True), from_logits=True))

    return Case(conv_loss, keras_variables(model), (const(2, 8, 8, 2), tf.constant([0, 1])))


@case("masked_embedding_lstm_and_bidirectional_gru", pytest.mark.slow)
def masked_rnn() -> Case:
    emb, lstm, bi = keras.layers.Embedding(5, 2, mask_zero=True), keras.layers.LSTM(2, return_sequences=True), keras.layers.Bidirectional(keras.layers.GRU(2))
    emb.build((None, 3))
    lstm.build((None, 3, 2))
    bi.build((None, 3, 2))

    @tf.function
    def masked_loss(ids: tf.Tensor) -> tf.Tensor:
        mask = emb.compute_mask(ids)
        return tf.reduce_sum(bi(lstm(emb(ids), mask=mask), mask=mask))

    return Case(masked_loss, keras_variables(emb, lstm, bi), (tf.constant([[1, 2, 0], [3, 0, 0]]),))


@case("cond_inside_while_with_stop_gradient")
def cond_in_while() -> Case:
    a, b = var(2, name="a"), var(2, name="b", seed=2)

    @tf.function
    def cond_while_loss(x: tf.Tensor) -> tf.Tensor:
        def body(i: tf.Tensor, h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return i + 1, tf.cond(i > 0, lambda: tf.stop_gradient(h * a), lambda: h * b)

        return tf.reduce_sum(tf.while_loop(lambda i, h: i < 3, body, (0, x))[1])

    return Case(cond_while_loss, [a, b], (const(2),))


@case("nested_while_loops_and_output_through_int")
def nested_while() -> Case:
    a, b, c = var(2, name="inner_a"), var(2, name="inner_b", seed=2), var(2, name="through_int", seed=3)

    @tf.function
    def nested_while_loss(x: tf.Tensor) -> tf.Tensor:
        def outer_body(i: tf.Tensor, h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            inner = tf.while_loop(lambda j, g: j < 2, lambda j, g: (j + 1, tf.stop_gradient(g * a) + b), (0, h))
            return i + 1, inner[1]

        h = tf.while_loop(lambda i, h: i < 2, outer_body, (0, x))[1]
        counted = tf.while_loop(lambda i, g: i < 2, lambda i, g: (i + 1, g * c), (0, x))[1]
        return tf.reduce_sum(h) + tf.cast(tf.reduce_sum(tf.cast(counted, tf.int32)), tf.float32)

    return Case(nested_while_loss, [a, b, c], (const(2),))


@case("while_loop_maximum_iterations_from_variable")
def while_max_iterations() -> Case:
    a, n = var(2, name="a"), tf.Variable(3.0, name="iterations")

    @tf.function
    def max_iter_loss(x: tf.Tensor) -> tf.Tensor:
        body = lambda i, h: (i + 1, h * a)  # noqa: E731
        return tf.reduce_sum(tf.while_loop(lambda i, h: True, body, (0, x), maximum_iterations=tf.cast(n, tf.int32))[1])

    return Case(max_iter_loss, [a, n], (const(2),))


@case("vectorized_map_per_example")
def vectorized_map() -> Case:
    a, b = var(2, name="a"), var(2, name="b", seed=2)

    @tf.function
    def vmap_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.vectorized_map(lambda row: row * a + tf.stop_gradient(b), x))

    return Case(vmap_loss, [a, b], (const(3, 2),))


@case("tensor_array_written_outside_loops")
def tensor_array() -> Case:
    a, b = var(2, name="written"), var(2, name="written_stopped", seed=2)

    @tf.function
    def ta_loss(x: tf.Tensor) -> tf.Tensor:
        ta = tf.TensorArray(tf.float32, size=2).write(0, x * a).write(1, tf.stop_gradient(x * b))
        return tf.reduce_sum(ta.stack())

    return Case(ta_loss, [a, b], (const(2),))


@case("custom_gradient_inside_cond_branch")
def custom_in_cond() -> Case:
    a, b = var(2, name="a"), var(2, name="b", seed=2)

    @tf.custom_gradient
    def first_only(u: tf.Tensor, v: tf.Tensor) -> Any:
        return u * v, lambda dy: (dy * v, None)

    @tf.function
    def custom_cond_loss(flag: tf.Tensor) -> tf.Tensor:
        return tf.cond(flag, lambda: tf.reduce_sum(first_only(a, b)), lambda: tf.reduce_sum(a * 2.0))

    return Case(custom_cond_loss, [a, b], (tf.constant(False),))


@case("ragged_and_sparse_tensors")
def ragged_sparse() -> Case:
    a, b, c = var(2, name="ragged_values"), var(2, name="sparse_values", seed=2), var(2, 2, name="dense", seed=3)

    @tf.function
    def ragged_loss() -> tf.Tensor:
        r = tf.RaggedTensor.from_row_lengths(tf.concat([a, a], 0), [1, 3])
        s = tf.sparse.SparseTensor([[0, 0], [1, 1]], b, [2, 2])
        return tf.reduce_sum(tf.reduce_max(r, axis=1)) + tf.reduce_sum(tf.sparse.sparse_dense_matmul(s, c))

    return Case(ragged_loss, [a, b, c])


@case("argsort_gather_and_strided_index_from_variable")
def argsort() -> Case:
    keys, values, index_src = var(3, name="sort_keys"), var(3, name="values", seed=2), var(1, name="index_source", seed=3)

    @tf.function
    def argsort_loss() -> tf.Tensor:
        picked = tf.gather(values, tf.argsort(keys))
        return tf.reduce_sum(picked * tf.range(3, dtype=tf.float32)) + values[tf.cast(tf.abs(index_src[0]), tf.int32) % 3]

    return Case(argsort_loss, [keys, values, index_src])


@case("stateful_random_with_variable_parameters_and_print")
def random_print() -> Case:
    scale, bound = var(2, name="noise_scale"), tf.Variable(2.0, name="uniform_bound")

    @tf.function
    def noisy_loss(x: tf.Tensor) -> tf.Tensor:
        tf.debugging.assert_greater(bound, -100.0)
        noise = tf.random.stateless_normal(tf.shape(x), seed=[1, 2]) * scale
        return tf.reduce_sum(noise) + tf.reduce_sum(tf.random.stateless_uniform([2], seed=[3, 4], maxval=bound))

    return Case(noisy_loss, [scale, bound], (const(2),))


@case("assign_return_value_used_in_loss")
def assign_value() -> Case:
    source, target = var(2, name="source"), var(2, name="assigned", seed=2)

    @tf.function
    def assign_value_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(target.assign(source * 2.0) * x)

    return Case(assign_value_loss, [source, target], (const(2),))


@case("keras_layer_variable_read_directly_under_stop_gradient")
def layer_variable_read() -> Case:
    dense, other = keras.layers.Dense(2), keras.layers.Dense(2)
    dense.build((None, 3))
    other.build((None, 3))

    @tf.function
    def direct_read_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.matmul(x, tf.stop_gradient(other.kernel))) + tf.reduce_sum(dense(x) * other.bias)

    return Case(direct_read_loss, keras_variables(dense, other), (const(1, 3),))


# --- nested functions that an earlier gradient rewrote -----------------------------------------
# TensorFlow rewrites a differentiated function in place (cond_v2 appends the gradient's
# intermediates to each branch's outputs; a call op is pointed at a forward function with extra
# outputs). A nested tf.function keeps that rewritten graph in its cache, so flowcheck's fresh
# trace of the caller meets it when the tape has run first. The corpus helper analyzes both before
# and after the tape.


@case("nested_function_cond_with_custom_gradient_after_a_gradient")
def nested_cond_rewritten() -> Case:
    a, b, c = var(2, name="a"), var(2, name="custom_none", seed=2), var(2, name="stopped", seed=3)

    @tf.custom_gradient
    def first_only(u: tf.Tensor, v: tf.Tensor) -> Any:
        w = u * v
        return w * 2.0, lambda dy: (dy * v * 2.0, None)

    @tf.function
    def inner(x: tf.Tensor, flag: tf.Tensor) -> tf.Tensor:
        return tf.cond(flag, lambda: first_only(a * x, b), lambda: tf.stop_gradient(c * x) * a)

    @tf.function
    def outer(x: tf.Tensor, flag: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(inner(x, flag))

    return Case(outer, [a, b, c], (const(2), tf.constant(True)))


@case("doubly_nested_call_with_custom_gradient_after_a_gradient")
def nested_call_rewritten() -> Case:
    a, b = var(2, name="a"), var(2, name="custom_none", seed=2)

    @tf.custom_gradient
    def first_only(u: tf.Tensor, v: tf.Tensor) -> Any:
        w = u * v
        return w * 2.0, lambda dy: (dy * v * 2.0, None)

    @tf.function
    def innermost(x: tf.Tensor) -> tf.Tensor:
        return first_only(a * x, b)

    @tf.function
    def middle(x: tf.Tensor) -> tf.Tensor:
        return innermost(x) * 3.0

    @tf.function
    def outermost(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(middle(x))

    return Case(outermost, [a, b], (const(2),))


@case("nested_function_with_while_and_cond_after_a_gradient")
def nested_loop_rewritten() -> Case:
    a, b, c = var(2, name="loop_w"), var(2, name="int_only", seed=2), var(2, name="cond_w", seed=3)

    @tf.function
    def inner(x: tf.Tensor) -> tf.Tensor:
        h = tf.while_loop(lambda i, h: i < 2, lambda i, h: (i + 1, tf.tanh(h * a)), (0, x))[1]
        g = tf.cond(tf.reduce_sum(x) > 0, lambda: tf.round(b) * h, lambda: c * h)
        return g

    @tf.function
    def outer(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(inner(x))

    return Case(outer, [a, b, c], (const(2),))


# --- more training recipes ---------------------------------------------------------------------


@case("vae_reparameterization_and_kl")
def vae() -> Case:
    enc_mu, enc_logvar, dec = var(4, 2, name="enc_mu"), var(4, 2, name="enc_logvar", seed=2), var(2, 4, name="dec", seed=3)

    @tf.function
    def vae_loss(x: tf.Tensor) -> tf.Tensor:
        mu, logvar = tf.matmul(x, enc_mu), tf.matmul(x, enc_logvar)
        z = mu + tf.exp(0.5 * logvar) * tf.random.stateless_normal(tf.shape(mu), seed=[5, 6])
        recon = tf.reduce_mean((tf.matmul(z, dec) - x) ** 2)
        kl = -0.5 * tf.reduce_mean(1 + logvar - mu**2 - tf.exp(logvar))
        return recon + kl

    return Case(vae_loss, [enc_mu, enc_logvar, dec], (const(3, 4),))


@case("ppo_actor_critic_advantage_stopped")
def ppo() -> Case:
    actor, critic = mlp("actor", (4, 3)), mlp("critic", (4, 1), seed=5)
    obs, actions, returns, old_logp = const(5, 4), tf.constant([0, 1, 2, 1, 0]), const(5, seed=1), const(5, seed=2)

    @tf.function
    def ppo_loss(obs: tf.Tensor, actions: tf.Tensor, returns: tf.Tensor, old_logp: tf.Tensor) -> dict[str, tf.Tensor]:
        logp = -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=actions, logits=run_mlp(actor, obs))
        value = run_mlp(critic, obs)[:, 0]
        advantage = tf.stop_gradient(returns - value)
        ratio = tf.exp(logp - old_logp)
        clipped = tf.clip_by_value(ratio, 0.8, 1.2)
        return {
            "policy": -tf.reduce_mean(tf.minimum(ratio * advantage, clipped * advantage)),
            "value": tf.reduce_mean((returns - value) ** 2),
        }

    return Case(ppo_loss, [*actor, *critic], (obs, actions, returns, old_logp))


@case("spectral_norm_power_iteration_state_assigned")
def spectral_norm() -> Case:
    w, u = var(3, 4, name="kernel"), tf.Variable(np.ones((1, 4), np.float32) / 2, trainable=False, name="power_u")

    @tf.function
    def sn_loss(x: tf.Tensor) -> tf.Tensor:
        v = tf.math.l2_normalize(tf.matmul(u, tf.transpose(w)))
        u_new = tf.math.l2_normalize(tf.matmul(v, w))
        u.assign(tf.stop_gradient(u_new))
        sigma = tf.reduce_sum(tf.matmul(tf.stop_gradient(v), w) * tf.stop_gradient(u_new))
        return tf.reduce_sum(tf.matmul(x, w / sigma))

    return Case(sn_loss, [w, u], (const(2, 3),))


@case("center_loss_centers_gathered_by_label")
def center_loss() -> Case:
    w, centers = var(4, 2, name="features_w"), var(3, 2, name="centers", seed=2)
    labels = tf.constant([0, 2, 2, 1])

    @tf.function
    def center_loss_fn(x: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        features = tf.matmul(x, w)
        return tf.reduce_mean(tf.reduce_sum((features - tf.gather(centers, labels)) ** 2, axis=1))

    return Case(center_loss_fn, [w, centers], (const(4, 4), labels))


@case("fixmatch_pseudo_labels_and_confidence_mask")
def fixmatch() -> Case:
    model = mlp("clf", (4, 3))
    weak, strong = const(5, 4), const(5, 4, seed=1)

    @tf.function
    def fixmatch_loss(weak: tf.Tensor, strong: tf.Tensor) -> tf.Tensor:
        probs = tf.nn.softmax(run_mlp(model, weak))
        pseudo = tf.argmax(probs, axis=1)
        mask = tf.cast(tf.reduce_max(probs, axis=1) >= 0.4, tf.float32)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=pseudo, logits=run_mlp(model, strong))
        return tf.reduce_mean(ce * mask)

    return Case(fixmatch_loss, model, (weak, strong))


@case("keras_regularization_losses_and_lambda_stop_gradient")
def keras_regularizers() -> Case:
    inputs = keras.Input((4,))
    h = keras.layers.Dense(3, kernel_regularizer=keras.regularizers.L2(0.1), name="regularized")(inputs)
    frozen_path = keras.layers.Dense(3, name="behind_lambda")(inputs)
    h = h + keras.layers.Lambda(lambda t: tf.stop_gradient(t))(frozen_path)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(h))
    x = const(2, 4)

    @tf.function
    def regularized_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(model(x, training=True) ** 2) + tf.add_n(model.losses)

    return Case(regularized_loss, keras_variables(model), (x,))


@case("greedy_decoding_loop_feeds_back_argmax_embedding")
def greedy_decode() -> Case:
    embedding, proj, readout = var(5, 3, name="token_embedding"), var(3, 5, name="proj", seed=2), var(3, 1, name="readout", seed=3)

    @tf.function
    def decode_loss(start: tf.Tensor) -> tf.Tensor:
        def body(i: tf.Tensor, token: tf.Tensor, score: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
            h = tf.gather(embedding, token)
            token = tf.argmax(tf.matmul(h, proj), axis=1, output_type=tf.int32)  # no gradient through the choice
            return i + 1, token, score + tf.reduce_sum(tf.matmul(h, readout))

        _, _, score = tf.while_loop(lambda i, t, s: i < 3, body, (0, start, 0.0))
        return score

    return Case(decode_loss, [embedding, proj, readout], (tf.constant([0, 4]),))


@case("ctc_loss_legacy_function_bodies")
def ctc() -> Case:
    # tf.nn.ctc_loss runs its forward pass in loops whose bodies call legacy Defun functions by
    # op type, inside a custom gradient; the labels are integers.
    logits, other = var(4, 2, 5, name="ctc_logits"), var(2, name="unused_in_ctc", seed=2)

    @tf.function
    def ctc_loss(labels: tf.Tensor) -> tf.Tensor:
        return tf.reduce_mean(tf.nn.ctc_loss(
            labels=labels, logits=logits, label_length=tf.constant([2, 1]), logit_length=tf.constant([4, 4]),
            logits_time_major=True, blank_index=0,
        ))

    return Case(ctc_loss, [logits, other], (tf.constant([[1, 2], [3, 0]]),))


@case("language_model_tied_embeddings_rnn_conv_groupnorm_attention")
def tied_lm() -> Case:
    emb, rnn = keras.layers.Embedding(7, 4), keras.layers.SimpleRNN(4, unroll=True, return_sequences=True)
    conv, gn, att = keras.layers.Conv1D(4, 2, padding="causal"), keras.layers.GroupNormalization(groups=2), keras.layers.Attention()
    emb.build((None, 3))
    rnn.build((None, 3, 4))
    conv.build((None, 3, 4))
    gn.build((None, 3, 4))

    @tf.function
    def lm_loss(ids: tf.Tensor) -> tf.Tensor:
        h = emb(ids)
        h = att([gn(rnn(h) + conv(h)), h])
        logits = tf.matmul(h, emb.embeddings, transpose_b=True)  # output projection tied to the embedding
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=ids, logits=logits))

    return Case(lm_loss, keras_variables(emb, rnn, conv, gn), (tf.constant([[1, 2, 3], [4, 5, 6]]),))


@case("custom_keras_layer_with_counter_and_frozen_weight")
def custom_layer() -> Case:
    class Scaled(keras.layers.Layer):
        def build(self, shape: Any) -> None:
            self.w = self.add_weight(shape=(shape[-1], 2), name="w")
            self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")
            self.frozen = self.add_weight(shape=(2,), initializer="ones", trainable=False, name="frozen")

        def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
            if training:
                self.count.assign_add(1.0)
            return tf.matmul(x, self.w) * self.frozen

    layer = Scaled()
    layer.build((None, 3))

    @tf.function
    def custom_layer_loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(layer(x, training=True))

    return Case(custom_layer_loss, keras_variables(layer), (const(2, 3),))


@case("keras_model_subclass_tf_function_method_with_target_head")
def model_method() -> Case:
    class Net(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.hidden, self.out, self.target = keras.layers.Dense(3), keras.layers.Dense(1), keras.layers.Dense(1)

        def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
            return self.out(tf.nn.relu(self.hidden(x)))

        @tf.function
        def loss_step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            pred = self(x, training=True)
            return tf.reduce_mean((pred - tf.stop_gradient(self.target(x)) - y) ** 2)

    net = Net()
    net(const(1, 4))
    net.target(const(1, 4))
    return Case(net.loss_step, keras_variables(net), (const(2, 4), const(2, 1, seed=1)), owner=net)


@case("special_functions_betainc_zeta_no_gradient_for_parameters")
def special_functions() -> Case:
    a, b, x = var(3, name="betainc_a"), var(3, name="betainc_b", seed=2), var(3, name="betainc_x", seed=3)
    zx, zq = var(3, name="zeta_x", seed=4), var(3, name="zeta_q", seed=5)

    @tf.function
    def special_loss() -> tf.Tensor:
        beta = tf.math.betainc(tf.abs(a) + 1.0, tf.abs(b) + 1.0, tf.sigmoid(x))  # only x gets a gradient
        return tf.reduce_sum(beta) + tf.reduce_sum(tf.math.zeta(tf.abs(zx) + 2.0, tf.abs(zq) + 1.0))

    return Case(special_loss, [a, b, x, zx, zq])


@case("soft_labels_get_a_gradient_sparse_labels_do_not")
def soft_labels() -> Case:
    logits, soft, sparse_src = var(2, 3, name="logits"), var(2, 3, name="soft_labels", seed=2), var(2, name="label_source", seed=3)

    @tf.function
    def labels_loss() -> tf.Tensor:
        soft_ce = tf.nn.softmax_cross_entropy_with_logits(labels=tf.nn.softmax(soft), logits=logits)
        labels = tf.cast(tf.abs(sparse_src) * 2.0, tf.int32) % 3
        sparse_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        return tf.reduce_sum(soft_ce) + tf.reduce_sum(sparse_ce)

    return Case(labels_loss, [logits, soft, sparse_src])


@case("zeros_like_ones_like_one_hot_values_and_fill_shapes")
def likes_and_fills() -> Case:
    names = ["zeros_like_src", "ones_like_src", "fill_value", "one_hot_on_value", "broadcast", "fill_shape_src"]
    a, b, c, d, e, f = (var(3, name=n, seed=i) for i, n in enumerate(names))

    @tf.function
    def fills_loss() -> tf.Tensor:
        likes = tf.zeros_like(a) + tf.ones_like(b) * 2.0
        hot = tf.one_hot([0, 2], 3, on_value=d[0], off_value=0.0)  # OneHot: not differentiable
        shaped = tf.fill(tf.shape(f), 1.0)
        parts = [likes, tf.fill([2], c[0]), hot, tf.broadcast_to(e, [2, 3]), shaped]
        return tf.add_n([tf.reduce_sum(t) for t in parts])

    return Case(fills_loss, [a, b, c, d, e, f])


@case("values_through_strings_and_bitcast")
def strings_bitcast() -> Case:
    a, b, c = var(3, name="via_string"), var(3, name="via_bitcast", seed=2), var(3, name="plain", seed=3)

    @tf.function
    def strings_loss() -> tf.Tensor:
        parsed = tf.strings.to_number(tf.strings.as_string(a))
        same_bits = tf.bitcast(tf.bitcast(b, tf.int32), tf.float32)
        return tf.reduce_sum(parsed) + tf.reduce_sum(same_bits) + tf.reduce_sum(c)

    return Case(strings_loss, [a, b, c])


@case("detection_nms_selects_features_boxes_and_scores_cut")
def detection() -> Case:
    boxes, scores, features = var(6, 4, name="boxes"), var(6, name="scores", seed=2), var(6, 3, name="roi_features", seed=3)

    @tf.function
    def detection_loss() -> tf.Tensor:
        keep = tf.image.non_max_suppression(tf.sort(boxes, axis=-1), tf.sigmoid(scores), 3)
        return tf.reduce_sum(tf.gather(features, keep))

    return Case(detection_loss, [boxes, scores, features])


@case("sampled_softmax_and_nce_losses")
def sampled_losses() -> Case:
    w, b, x = var(10, 4, name="softmax_w"), var(10, name="softmax_b", seed=2), var(3, 4, name="inputs", seed=3)
    nce_w, nce_b = var(10, 4, name="nce_w", seed=4), var(10, name="nce_b", seed=5)
    labels = tf.constant([[1], [2], [3]], tf.int64)

    @tf.function
    def sampled_loss() -> tf.Tensor:
        s = tf.nn.sampled_softmax_loss(w, b, labels, x, num_sampled=3, num_classes=10, seed=1)
        n = tf.nn.nce_loss(nce_w, nce_b, labels, x, num_sampled=3, num_classes=10)
        return tf.reduce_sum(s) + tf.reduce_sum(n)

    return Case(sampled_loss, [w, b, x, nce_w, nce_b])


@case("ctc_loss_and_sparse_dense_matmul")
def ctc_sparse() -> Case:
    logits, dense, values = var(5, 2, 4, name="ctc_logits"), var(4, 3, name="dense_w", seed=2), var(3, name="sparse_values", seed=3)

    @tf.function
    def sequence_loss() -> tf.Tensor:
        ctc = tf.nn.ctc_loss(
            tf.constant([[1, 2], [2, 1]]), logits, label_length=tf.constant([2, 2]),
            logit_length=tf.constant([5, 5]), logits_time_major=True, blank_index=0,
        )
        sparse = tf.SparseTensor([[0, 0], [1, 2], [2, 3]], values, [3, 4])
        return tf.reduce_sum(ctc) + tf.reduce_sum(tf.sparse.sparse_dense_matmul(sparse, dense))

    return Case(sequence_loss, [logits, dense, values])


@case("keras_ops_argmax_round_sign_and_lambda_stop_gradient")
def keras_ops_barriers() -> Case:
    picked, rounded, kept = (keras.layers.Dense(3, name=n) for n in ("argmax_head", "rounded_head", "kept_head"))
    detached, out = keras.layers.Dense(3, name="detached"), keras.layers.Dense(1, name="out")
    stop = keras.layers.Lambda(keras.ops.stop_gradient)
    x = const(2, 4)

    @tf.function
    def ops_loss(x: tf.Tensor) -> tf.Tensor:
        hot = keras.ops.one_hot(keras.ops.argmax(picked(x), axis=-1), 3)
        h = kept(x)
        total = keras.ops.mean(hot * h) + keras.ops.mean(keras.ops.round(rounded(x))) + keras.ops.mean(keras.ops.sign(h))
        return total + keras.ops.mean(out(stop(detached(x)) + h))

    ops_loss(x)  # builds the layers
    return Case(ops_loss, keras_variables(picked, rounded, kept, detached, out), (x,))


@case("inner_tape_stop_recording_in_the_step")
def inner_tape_stop_recording() -> Case:
    a, b = var(3, name="inner_a"), var(3, name="inner_b", seed=2)

    @tf.function
    def input_gradient_loss() -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(a)
            with tape.stop_recording():
                y = a * b
            z = y * a
        return tf.reduce_sum(tape.gradient(z, a))

    return Case(input_gradient_loss, [a, b])


@case("assign_then_read_and_assign_sub")
def assign_then_read() -> Case:
    a, src, c = var(3, name="assigned_then_read"), var(3, name="assign_source", seed=2), var(3, name="decremented", seed=3)

    @tf.function
    def assign_loss() -> tf.Tensor:
        a.assign(src * 2.0)
        c.assign_sub(tf.ones(3))
        return tf.reduce_sum(a * 3.0) + tf.reduce_sum(c)

    return Case(assign_loss, [a, src, c])


@case("while_loop_back_prop_false_and_case")
def while_back_prop_false() -> Case:
    a, b, c = var(3, name="no_backprop_loop"), var(3, name="loop", seed=2), var(3, name="case_default", seed=3)

    @tf.function
    def loops_loss(x: tf.Tensor) -> tf.Tensor:
        _, u = tf.compat.v1.while_loop(lambda i, t: i < 2, lambda i, t: (i + 1, t * a), [0, tf.ones(3)], back_prop=False)
        _, v = tf.while_loop(lambda i, t: i < 2, lambda i, t: (i + 1, t * b), [0, tf.ones(3)])
        z = tf.case([(tf.reduce_sum(x) > 100.0, lambda: c * 2.0)], default=lambda: c * 3.0)
        return tf.reduce_sum(u + v + z)

    return Case(loops_loss, [a, b, c], (const(3),))


@case("clip_by_value_bounds_and_global_norm")
def clip_family() -> Case:
    a, lo, hi = var(3, name="clipped"), var(1, name="clip_low", seed=2), var(1, name="clip_high", seed=3)
    g1, g2 = var(3, name="global_norm_a", seed=4), var(3, name="global_norm_b", seed=5)

    @tf.function
    def clip_loss() -> tf.Tensor:
        clipped, _ = tf.clip_by_global_norm([g1 * 10.0, g2 * 10.0], 1.0)
        bounded = tf.clip_by_value(a, lo - 1.0, hi + 1.0)
        return tf.reduce_sum(bounded) + tf.reduce_sum(clipped[0]) + tf.reduce_sum(clipped[1])

    return Case(clip_loss, [a, lo, hi, g1, g2])


# Under tf.distribute on the one device this process has (two devices: tests/test_distribute.py).
def _strategy_var(strategy: Any, *shape: int, name: str, seed: int) -> tf.Variable:
    with strategy.scope():
        return var(*shape, name=name, seed=seed)


@case("mirrored_one_device_captured_dict_never_read")
def mirrored_captured() -> Case:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    params = {n: _strategy_var(strategy, 3, 1, name=f"mirrored_{n}", seed=i) for i, n in enumerate(("head", "frozen", "never"))}

    @tf.function
    def mirrored_loss(x: tf.Tensor) -> tf.Tensor:
        def replica(x: tf.Tensor) -> tf.Tensor:
            return tf.reduce_sum(tf.matmul(x, params["head"]) * tf.stop_gradient(tf.matmul(x, params["frozen"])))

        per_replica = strategy.run(replica, args=(x,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return Case(mirrored_loss, list(params.values()), (const(2, 3),))


@case("one_device_strategy_module_method_and_argument")
def one_device_module() -> Case:
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")

    class Scorer(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="scorer")
            self.w = _strategy_var(strategy, 3, 1, name="scorer_w", seed=1)
            self.rounded = _strategy_var(strategy, 1, name="scorer_rounded", seed=2)
            self.spare = _strategy_var(strategy, 1, name="scorer_spare", seed=3)

        @tf.function
        def score(self, x: tf.Tensor, scale: tf.Variable) -> tf.Tensor:
            per_replica = strategy.run(lambda x: tf.reduce_sum(tf.matmul(x, self.w) * scale + tf.round(self.rounded)), args=(x,))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    scorer = Scorer()
    scale = _strategy_var(strategy, 1, name="scorer_scale", seed=4)
    return Case(scorer.score, [scorer.w, scorer.rounded, scorer.spare, scale], (const(2, 3), scale), owner=scorer)


@case("mirrored_one_device_keras_model")
def mirrored_keras() -> Case:
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="mirrored_dense"), keras.layers.Dense(1, name="mirrored_out")])
        detached = keras.layers.Dense(1, name="mirrored_detached")
        detached.build((None, 3))

    @tf.function
    def keras_mirrored_loss(x: tf.Tensor) -> tf.Tensor:
        def replica(x: tf.Tensor) -> tf.Tensor:
            return tf.reduce_mean(model(x, training=True) + tf.stop_gradient(detached(x)))

        per_replica = strategy.run(replica, args=(x,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return Case(keras_mirrored_loss, model.variables + detached.variables, (const(2, 3),))
