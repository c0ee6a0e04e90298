"""A custom training loop with a hard gate: argmax picks an expert, and the gate layer never trains.

    python examples/argmax_gate.py --steps 3
    flowcheck run examples/argmax_gate.py -- --steps 3
"""

import argparse

import numpy as np
import tensorflow as tf
import keras


def main(argv=None):
    parser = argparse.ArgumentParser(description="train a gated mixture of two experts")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args(argv)

    gate = keras.layers.Dense(2, name="gate")
    experts = [keras.layers.Dense(1, name=f"expert_{i}") for i in range(2)]
    optimizer = keras.optimizers.SGD(args.lr)
    x = tf.constant(np.random.default_rng(1).normal(size=(8, 4)), tf.float32)
    y = tf.reduce_sum(x, axis=1, keepdims=True)
    for layer in (gate, *experts):
        layer.build((None, 4))
    variables = gate.trainable_variables + [v for e in experts for v in e.trainable_variables]

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            choice = tf.argmax(gate(x), axis=1)  # hard routing: no gradient to the gate
            mask = tf.one_hot(choice, 2)
            outputs = tf.concat([e(x) for e in experts], axis=1)
            pred = tf.reduce_sum(mask * outputs, axis=1, keepdims=True)
            loss = tf.reduce_mean(tf.square(pred - y))
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return loss

    for step in range(args.steps):
        loss = train_step(x, y)
        print(f"step {step}: loss {float(loss):.4f}")


if __name__ == "__main__":
    main()
