"""A GAN step the way the DCGAN tutorial writes it: two tapes in one tf.function, in main().

Written right: each tape's sources all receive a gradient (the generator's through the
discriminator), so flowcheck exits 0.

    python examples/gan_two_tapes.py --steps 2
    flowcheck run examples/gan_two_tapes.py -- --steps 2
"""

import argparse

import tensorflow as tf
import keras


def make_generator():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)],
                            name="generator")


def make_discriminator():
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)],
                            name="discriminator")


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    tf.random.set_seed(0)
    generator, discriminator = make_generator(), make_discriminator()
    g_opt, d_opt = keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    real = tf.random.normal((8, 2))

    @tf.function
    def train_step(real):
        noise = tf.random.normal((8, 4))
        with tf.GradientTape() as gen_tape, tf.GradientTape() as disc_tape:
            fake = generator(noise, training=True)
            real_out = discriminator(real, training=True)
            fake_out = discriminator(fake, training=True)
            gen_loss = bce(tf.ones_like(fake_out), fake_out)
            disc_loss = bce(tf.ones_like(real_out), real_out) + bce(tf.zeros_like(fake_out), fake_out)
        gen_grads = gen_tape.gradient(gen_loss, generator.trainable_variables)
        disc_grads = disc_tape.gradient(disc_loss, discriminator.trainable_variables)
        g_opt.apply_gradients(zip(gen_grads, generator.trainable_variables))
        d_opt.apply_gradients(zip(disc_grads, discriminator.trainable_variables))
        return gen_loss, disc_loss

    for step in range(args.steps):
        g, d = train_step(real)
        print(f"step {step}: gen {float(g):.3f} disc {float(d):.3f}")


if __name__ == "__main__":
    main()
