"""A VQ-VAE's losses with the straight-through estimator (van den Oord et al., 2017).

Quantizing picks the nearest codebook vector with ``argmin``, which has no gradient. The
straight-through trick ``z_e + stop_gradient(z_q - z_e)`` lets the decoder see ``z_q`` while the
encoder gets the decoder's gradient as if ``z_q`` were ``z_e``; the codebook learns only from the
codebook loss. flowcheck gives one verdict per (variable, loss): every variable receives a
gradient from the total, the codebook is blocked for the reconstruction loss, and the decoder is
unused by the codebook and commitment losses::

    flowcheck analyze examples/vqvae_straight_through.py --expect-receives '*'

The ``input_signature`` is enough for flowcheck: it makes a random batch of that shape (seeded by
``--seed``). Run it as a script (``python examples/vqvae_straight_through.py``) to train a few steps.
"""

import keras
import numpy as np
import tensorflow as tf

IMAGE_DIM = 64
LATENT_DIM = 16
CODES = 32
BETA = 0.25

encoder = keras.Sequential(
    [
        keras.Input((IMAGE_DIM,)),
        keras.layers.Dense(128, activation="relu", name="hidden"),
        keras.layers.Dense(LATENT_DIM, name="latent"),
    ],
    name="encoder",
)
decoder = keras.Sequential(
    [
        keras.Input((LATENT_DIM,)),
        keras.layers.Dense(128, activation="relu", name="hidden"),
        keras.layers.Dense(IMAGE_DIM, name="image"),
    ],
    name="decoder",
)
codebook = tf.Variable(
    tf.random.stateless_uniform((CODES, LATENT_DIM), seed=(1, 2), minval=-1.0, maxval=1.0), name="codebook"
)


def quantize(z_e):
    """The nearest codebook vector to each row of ``z_e``."""
    distances = (
        tf.reduce_sum(z_e**2, axis=1, keepdims=True)
        - 2.0 * tf.matmul(z_e, codebook, transpose_b=True)
        + tf.reduce_sum(codebook**2, axis=1)
    )
    return tf.gather(codebook, tf.argmin(distances, axis=1))


@tf.function(input_signature=[tf.TensorSpec((None, IMAGE_DIM), tf.float32)])
def vqvae_losses(images):
    z_e = encoder(images)
    z_q = quantize(z_e)
    z_st = z_e + tf.stop_gradient(z_q - z_e)  # straight-through estimator
    reconstruction = decoder(z_st)
    return {
        "reconstruction": tf.reduce_mean((images - reconstruction) ** 2),
        "codebook": tf.reduce_mean((tf.stop_gradient(z_e) - z_q) ** 2),
        "commitment": BETA * tf.reduce_mean((z_e - tf.stop_gradient(z_q)) ** 2),
    }


if __name__ == "__main__":
    rng = np.random.default_rng(0)
    variables = encoder.trainable_variables + decoder.trainable_variables + [codebook]
    optimizer = keras.optimizers.Adam(1e-3)
    for step in range(5):
        images = tf.constant(rng.standard_normal((32, IMAGE_DIM)), tf.float32)
        with tf.GradientTape() as tape:
            losses = vqvae_losses(images)
            total = tf.add_n(list(losses.values()))
        optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        print(f"step {step + 1}: " + ", ".join(f"{k} {float(v):.4f}" for k, v in losses.items()))
