"""``flowcheck run`` on published TensorFlow 1 programs' shapes (TensorFlow-Examples, DQN-tensorflow, char-rnn).

Each program is kept as its authors wrote it, shrunk (random arrays for MNIST, a few steps), and runs
in fresh interpreters (``tf.disable_v2_behavior()`` switches the whole process to graph mode): under
``flowcheck run --json`` and under plain Python followed by an epilogue asking TensorFlow itself,
``tf.gradients(target, [source])`` one source at a time, which sources get ``None``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from truth import python_run, tf1_run_against_truth, tf1_tensorflow_none
from truth import flowcheck_run as _flowcheck_run

pytestmark = pytest.mark.slow  # every test starts TensorFlow in child interpreters


def _sites(document: dict[str, Any]) -> list[dict[str, Any]]:
    [step] = document["steps"]
    assert step["kind"] == "tf1 Session.run"
    return list(step["report"]["gradient_sites"])


_WEIGHT_DICTS = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
X = tf.placeholder("float", [None, 4])
Y = tf.placeholder("float", [None, 2])
weights = {
    'h1': tf.Variable(tf.random_normal([4, 3])),
    'out': tf.Variable(tf.random_normal([3, 2]))
}
biases = {
    'b1': tf.Variable(tf.random_normal([3])),
    'out': tf.Variable(tf.random_normal([2]))
}
def neural_net(x):
    layer_1 = tf.stop_gradient(tf.add(tf.matmul(x, weights['h1']), biases['b1']))  # CUT
    return tf.matmul(layer_1, weights['out']) + biases['out']
logits = neural_net(X)
loss_op = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(logits=logits, labels=Y))
train_op = tf.train.AdamOptimizer(learning_rate=0.1).minimize(loss_op)
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    sess.run(train_op, feed_dict={X: np.ones((2, 4)), Y: np.eye(2)})
"""


def test_variables_kept_in_dicts_are_named_by_their_entries(tmp_path: Path) -> None:
    """TensorFlow-Examples keeps its variables in dicts (``weights['h1']``): flowcheck names them so, not
    ``Variable_2 (made at ...)``; the verdicts are TensorFlow's."""
    script = tmp_path / "neural_network_raw.py"
    script.write_text(_WEIGHT_DICTS)
    sources = ["weights['h1']", "weights['out']", "biases['b1']", "biases['out']"]
    truth = tf1_tensorflow_none(script, "loss_op", sources)
    done = _flowcheck_run(script, "--json")
    assert done.returncode == (1 if any(truth) else 0), done.stderr[-2000:]
    [site] = _sites(json.loads(done.stdout))
    assert [s["name"] for s in site["sources"]] == sources
    assert [s["verdict"] != "receives" for s in site["sources"]] == truth


_CLASS_MODEL = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
class Model:
    def __init__(self, sess, name):
        self.sess = sess
        with tf.variable_scope(name):
            self.X = tf.placeholder(tf.float32, [None, 4])
            self.Y = tf.placeholder(tf.float32, [None, 2])
            self.W = tf.Variable(tf.random_normal([4, 2]))
            self.calib = tf.Variable(1.0)
            self.logits = tf.matmul(self.X, self.W)
            self.hard = tf.argmax(self.logits * self.calib, 1)  # CUT
        xent = tf.nn.softmax_cross_entropy_with_logits(logits=self.logits, labels=self.Y)
        self.cost = tf.reduce_mean(xent) + tf.cast(self.hard[0], tf.float32)
        self.optimizer = tf.train.AdamOptimizer(0.01).minimize(self.cost)
    def train(self, x, y):
        return self.sess.run([self.cost, self.optimizer], feed_dict={self.X: x, self.Y: y})
sess = tf.Session()
model = Model(sess, "model0")
sess.run(tf.global_variables_initializer())
for _ in range(2):
    model.train(np.ones((2, 4)), np.eye(2))
"""


def test_a_class_based_models_variables_and_loss_are_named_by_their_attributes(tmp_path: Path) -> None:
    """hunkim's DeepLearningZeroToAll keeps its model in a class: the loss and variables are ``self.cost``,
    ``self.calib`` as the code writes them (not ``model0/Variable_1`` and ``add``); verdicts are TensorFlow's."""
    script = tmp_path / "lab_11_class.py"
    script.write_text(_CLASS_MODEL)
    truth = tf1_tensorflow_none(script, "model.cost", ["model.W", "model.calib"])
    done = _flowcheck_run(script, "--json")
    assert done.returncode == (1 if any(truth) else 0), done.stderr[-2000:]
    [site] = _sites(json.loads(done.stdout))
    assert [s["name"] for s in site["sources"]] == ["self.W", "self.calib"]
    assert [s["verdict"] != "receives" for s in site["sources"]] == truth
    assert site["targets"] == ["self.cost"]


_A3C = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
def network(scope):
    with tf.variable_scope(scope):
        return tf.get_variable('w', [4, 2]), tf.get_variable('v', [2, 1])
inputs = tf.placeholder(tf.float32, [None, 4])
global_w, global_v = network('global')
local_w, local_v = network('worker_0')
loss = tf.reduce_sum(tf.square(tf.matmul(tf.matmul(inputs, local_w), local_v)))
local_vars = tf.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES, 'worker_0')
global_vars = tf.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES, 'global')
gradients = tf.gradients(loss, local_vars)
grads, grad_norms = tf.clip_by_global_norm(gradients, 40.0)
apply_grads = tf.train.AdamOptimizer(1e-3).apply_gradients(zip(grads, global_vars))
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    for _ in range(2):
        sess.run(apply_grads, {inputs: np.ones((3, 4))})
"""


def test_a3c_gradients_of_a_workers_copy_applied_to_the_global_network(tmp_path: Path) -> None:
    """An A3C worker differentiates its own copy and applies the gradients to the global network's
    variables: the sources stay unchanged, and the notes say which variables the step changed instead."""
    truth, document = tf1_run_against_truth(tmp_path / "a3c.py", _A3C, "loss", ["local_w", "local_v"])
    [step] = document["steps"]
    [site] = _sites(document)
    assert [s["verdict"] != "receives" for s in site["sources"]] == truth
    assert step["report"]["verification"]["agrees"]
    notes = step["report"]["notes"]
    assert "the step also changed 2 trainable variables no gradient call of it differentiates: global/w, global/v" in notes
    assert "worker_0/w unchanged" in " ".join(notes)


_STRAIGHT_THROUGH = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
G = tf.get_default_graph()
@tf.RegisterGradient("STE_Round_real")
def _ste(op, grad):
    return grad
@tf.RegisterGradient("Blocked_real")
def _blocked(op, grad):
    return [None]
x = tf.placeholder(tf.float32, [None, 3])
w_ste = tf.Variable(tf.ones([3, 1]))
w_round = tf.Variable(tf.ones([3, 1]))
w_blocked = tf.Variable(tf.ones([3, 1]))
with G.gradient_override_map({"Round": "STE_Round_real"}):
    q = tf.round(w_ste * 3) / 3
with G.gradient_override_map({"Identity": "Blocked_real"}):
    b = tf.identity(w_blocked)  # BLOCKED
loss = tf.reduce_sum(tf.matmul(x, q) + tf.matmul(x, tf.round(w_round)) + tf.matmul(x, b))
train_op = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    sess.run(train_op, {x: np.ones((2, 3))})
"""


def test_gradient_override_map_straight_through_estimators(tmp_path: Path) -> None:
    """DoReFa-Net's quantizers: ``gradient_override_map`` gives Round an identity gradient (the source
    receives), plain Round gives None, and an override returning None is named as the override it is."""
    script = tmp_path / "dorefa.py"
    script.write_text(_STRAIGHT_THROUGH)
    truth = tf1_tensorflow_none(script, "loss", ["w_ste", "w_round", "w_blocked"])
    done = _flowcheck_run(script, "--json")
    assert done.returncode == (1 if any(truth) else 0), done.stderr[-2000:]
    [site] = _sites(json.loads(done.stdout))
    assert [s["verdict"] != "receives" for s in site["sources"]] == truth
    [barrier] = site["sources"][2]["barriers"]
    assert barrier["detail"] == "the gradient 'Blocked_real' that gradient_override_map sets for Identity returns None here"
    lines = _STRAIGHT_THROUGH.splitlines()
    assert barrier["source"]["line"] == 1 + next(i for i, line in enumerate(lines) if line.endswith("# BLOCKED"))


_CALLABLES = """\
import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf import config_pb2
tf.disable_v2_behavior()
x = tf.placeholder(tf.float32, [None, 3], name="x")
w = tf.Variable(tf.ones([3, 1]), name="w")
gate = tf.Variable(tf.ones([3, 1]), name="gate")
dataset_x = tf.constant(np.ones((2, 3), np.float32))
loss = tf.reduce_sum(tf.matmul(x, w) * tf.round(tf.reduce_sum(gate)))
train_op = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
other = tf.reduce_sum(tf.matmul(dataset_x, w * 2.0))
other_op = tf.train.GradientDescentOptimizer(0.1).minimize(other, var_list=[w])
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    options = config_pb2.CallableOptions()
    options.feed.append(x.name)
    options.fetch.append(loss.name)
    options.target.append(train_op.name)
    step = sess._make_callable_from_options(options)  # what tf.keras's graph-mode fit trains through
    fast = sess.make_callable([other, other_op])  # no feed_list: Session.run is not called
    for _ in range(2):
        print("loss", step(np.ones((2, 3), np.float32)))
        print("other", fast()[0])
    print(sess.run(w).ravel())
"""


def test_session_callables_are_steps(tmp_path: Path) -> None:
    """``tf.keras`` in graph mode trains through ``Session._make_callable_from_options``, and
    ``Session.make_callable(fetches)`` without feeds bypasses ``Session.run``: both are steps, judged as
    TensorFlow answers, and ``--continue`` prints what ``python`` prints."""
    script = tmp_path / "callables.py"
    script.write_text(_CALLABLES)
    truth = tf1_tensorflow_none(script, "loss", ["w", "gate"])
    done = _flowcheck_run(script, "--json")
    assert done.returncode == (1 if any(truth) else 0), done.stderr[-2000:]
    steps = json.loads(done.stdout)["steps"]
    assert len(steps) == 2
    [site] = steps[0]["report"]["gradient_sites"]
    assert [s["verdict"] != "receives" for s in site["sources"]] == truth
    assert all(step["report"]["verification"]["agrees"] for step in steps)
    plain = python_run(script)
    continued = _flowcheck_run(script, "--continue")
    assert continued.stdout.startswith(plain.stdout), (plain.stdout, continued.stdout[:2000])
