"""A class-based trainer built in main(), its step a bound tf.function (the "trainer pattern").

The teacher is meant to be frozen but the student's loss only sees the teacher's logits through
tf.stop_gradient, as intended; the student's projection is created and never used.

    python examples/class_trainer.py --epochs 1
    flowcheck run examples/class_trainer.py -- --epochs 1
"""

import argparse

import numpy as np
import tensorflow as tf
import keras


class Trainer:
    def __init__(self, student, teacher, lr):
        self.student = student
        self.teacher = teacher
        self.projection = keras.layers.Dense(3, name="projection")  # built, never used
        self.projection.build((None, 3))
        self.optimizer = keras.optimizers.SGD(lr)

    @tf.function
    def train_step(self, x):
        with tf.GradientTape() as tape:
            target = tf.stop_gradient(self.teacher(x))
            loss = tf.reduce_mean(tf.square(self.student(x) - target))
        variables = self.student.trainable_variables + self.projection.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, variables) if g is not None])
        return loss

    def fit(self, dataset, epochs):
        for epoch in range(epochs):
            for x in dataset:
                loss = self.train_step(x)
            print(f"epoch {epoch}: loss {float(loss):.4f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="distil a teacher into a student")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args(argv)
    data = np.random.default_rng(6).normal(size=(32, 5)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(8)
    teacher = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)], name="teacher")
    student = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)], name="student")
    Trainer(student, teacher, args.lr).fit(dataset, args.epochs)


if __name__ == "__main__":
    main()
