"""One training step of a GAN: the discriminator's and the generator's losses, computed together.

The discriminator learns from ``d_loss`` on real images and on *detached* fakes
(``tf.stop_gradient``), so that its loss cannot move the generator; the generator learns from
``g_loss`` through the discriminator. flowcheck reports one verdict per (variable, loss): the
generator is blocked for ``d_loss`` at the ``stop_gradient`` line and receives from ``g_loss``.

The step is built by a function that takes no argument and returns ``(step, inputs)``, the form
``flowcheck analyze`` accepts for code that builds its models inside a function::

    flowcheck analyze examples/gan_step.py --expect-receives 'generator/*' --expect-receives 'discriminator/*'

Run it as a script (``python examples/gan_step.py``) to train a few steps on random data.
"""

import keras
import numpy as np
import tensorflow as tf

LATENT_DIM = 16
IMAGE_DIM = 64
BATCH = 8


def build_generator():
    return keras.Sequential(
        [
            keras.Input((LATENT_DIM,)),
            keras.layers.Dense(128, activation="relu", name="hidden"),
            keras.layers.Dense(IMAGE_DIM, activation="tanh", name="image"),
        ],
        name="generator",
    )


def build_discriminator():
    return keras.Sequential(
        [
            keras.Input((IMAGE_DIM,)),
            keras.layers.Dense(128, name="hidden"),
            keras.layers.LeakyReLU(0.2),
            keras.layers.Dense(1, name="logit"),
        ],
        name="discriminator",
    )


def make_gan_step():
    """Build the models and the loss step; return ``(step, (real_images, noise))``."""
    generator = build_generator()
    discriminator = build_discriminator()
    bce = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def gan_losses(real_images, noise):
        fake_images = generator(noise, training=True)
        real_logits = discriminator(real_images, training=True)
        # Detach the fakes for the discriminator's loss: it must not train the generator.
        fake_logits_d = discriminator(tf.stop_gradient(fake_images), training=True)
        fake_logits_g = discriminator(fake_images, training=True)
        d_loss = bce(tf.ones_like(real_logits), real_logits) + bce(tf.zeros_like(fake_logits_d), fake_logits_d)
        g_loss = bce(tf.ones_like(fake_logits_g), fake_logits_g)
        return {"d_loss": d_loss, "g_loss": g_loss}

    rng = np.random.default_rng(0)
    real_images = tf.constant(rng.uniform(-1, 1, (BATCH, IMAGE_DIM)), tf.float32)
    noise = tf.constant(rng.standard_normal((BATCH, LATENT_DIM)), tf.float32)
    gan_losses.generator = generator
    gan_losses.discriminator = discriminator
    return gan_losses, (real_images, noise)


flowcheck_target = make_gan_step

if __name__ == "__main__":
    step, (real_images, noise) = make_gan_step()
    generator, discriminator = step.generator, step.discriminator
    d_optimizer = keras.optimizers.Adam(2e-4, beta_1=0.5)
    g_optimizer = keras.optimizers.Adam(2e-4, beta_1=0.5)
    rng = np.random.default_rng(1)
    for i in range(5):
        noise = tf.constant(rng.standard_normal((BATCH, LATENT_DIM)), tf.float32)
        with tf.GradientTape(persistent=True) as tape:
            losses = step(real_images, noise)
        d_grads = tape.gradient(losses["d_loss"], discriminator.trainable_variables)
        g_grads = tape.gradient(losses["g_loss"], generator.trainable_variables)
        d_optimizer.apply_gradients(zip(d_grads, discriminator.trainable_variables))
        g_optimizer.apply_gradients(zip(g_grads, generator.trainable_variables))
        print(f"step {i + 1}: d_loss {float(losses['d_loss']):.4f}, g_loss {float(losses['g_loss']):.4f}")
