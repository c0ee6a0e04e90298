"""The 2018 blog post on tf.stop_gradient, in its own TensorFlow 1 form.

    hidden = tf.stop_gradient(tf.matmul(x, w1))
    output = tf.matmul(hidden, w2)
    loss   = output - y

One step of gradient descent with learning rate 1 from all-ones weights: w1 cannot move (the
stop_gradient cuts its only path to the loss) and every entry of w2 becomes the same number.

Run it with ``python examples/seed_tf1.py`` or ``flowcheck run examples/seed_tf1.py``.
"""

import numpy as np
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

x = tf.placeholder(tf.float32, shape=[3, 2])
y = tf.placeholder(tf.float32, shape=[3, 4])

w1 = tf.Variable(tf.ones([2, 3]))
w2 = tf.Variable(tf.ones([3, 4]))

hidden = tf.stop_gradient(tf.matmul(x, w1))
output = tf.matmul(hidden, w2)
loss = output - y

optimizer = tf.train.GradientDescentOptimizer(1).minimize(loss)

with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    print("*** before:")
    print(sess.run(w1))
    print(sess.run(w2))
    w1_, w2_, _ = sess.run(
        [w1, w2, optimizer],
        feed_dict={x: np.random.normal(size=(3, 2)), y: np.random.normal(size=(3, 4))},
    )
    print("*** after:")
    print(sess.run(w1))
    print(sess.run(w2))
