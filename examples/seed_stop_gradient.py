"""The 2018 blog post on tf.stop_gradient, in TensorFlow 2.

    hidden = stop_gradient(x @ w1)
    output = hidden @ w2
    loss   = output - y

One step of gradient descent with learning rate 1 from all-ones weights: w1 cannot move (the
stop_gradient cuts its only path to the loss) and every entry of w2 becomes the same number.

Run it with ``flowcheck analyze examples/seed_stop_gradient.py`` or ``python examples/seed_stop_gradient.py``.
"""

import numpy as np
import tensorflow as tf

rng = np.random.default_rng(0)
x = tf.constant(rng.random((1, 2)), dtype=tf.float32)
y = tf.constant(rng.random((1, 1)), dtype=tf.float32)

w1 = tf.Variable(tf.ones((2, 3)), name="w1")
w2 = tf.Variable(tf.ones((3, 1)), name="w2")


@tf.function
def loss_fn(x, y):
    hidden = tf.stop_gradient(tf.matmul(x, w1))
    output = tf.matmul(hidden, w2)
    return output - y


example_inputs = (x, y)
flowcheck_optimizer = ("sgd", 1.0)

if __name__ == "__main__":
    import flowcheck

    report = flowcheck.analyze(loss_fn, x, y)
    for result in report.variables:
        print(result.name, result.verdict, *(str(b) for b in result.barriers))
    check = report.verify(optimizer="sgd", learning_rate=1.0)
    print("verification agrees:", check.agrees)
    print("w1 after the step is restored:", w1.numpy().ravel())
