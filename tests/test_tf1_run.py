"""``flowcheck run`` on TensorFlow 1 scripts written the way tutorials wrote them, run unchanged.

Each script runs in fresh interpreters (``tf.disable_v2_behavior()`` switches the whole process to
graph mode): once under ``flowcheck run``, once under plain Python followed by an epilogue that asks
TensorFlow itself, ``tf.gradients(target, [source])`` one source at a time in the script's graph,
which sources get ``None``. The tests compare the two.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from truth import python_run, tf1_tensorflow_none
from truth import flowcheck_run as _flowcheck_run

pytestmark = pytest.mark.slow  # every test starts TensorFlow in child interpreters


def _line_of(script: Path, marker: str) -> int:
    [n] = [n for n, line in enumerate(script.read_text().splitlines(), start=1) if line.rstrip().endswith(marker)]
    return n


def _one_site(document: dict[str, Any]) -> dict[str, Any]:
    [step] = document["steps"]
    assert step["kind"] == "tf1 Session.run"
    [site] = step["report"]["gradient_sites"]
    return dict(site)

def _judged(script: Path, target: str, sources: list[str]) -> tuple[dict[str, Any], list[bool]]:
    """``flowcheck run --json`` on ``script`` (its document), its exit code and its one site's verdicts held to
    TensorFlow's own answer (per source: does it get None)."""
    done = _flowcheck_run(script, "--json")
    truth = tf1_tensorflow_none(script, target, sources)
    assert done.returncode == (1 if any(truth) else 0), done.stderr[-2000:]
    document: dict[str, Any] = json.loads(done.stdout)
    assert [s["verdict"] != "receives" for s in _one_site(document)["sources"]] == truth
    return document, truth


_DIRECT_GRADIENTS = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
x = tf.placeholder(tf.float32, [None, 3])
y = tf.placeholder(tf.float32, [None, 1])
W = tf.Variable(tf.zeros([3, 1]), name="W")
b = tf.Variable(tf.zeros([1]), name="b")
y_pred = tf.cast(tf.matmul(x, W) > 0.5, tf.float32) + b  # CUT
loss = tf.reduce_mean(tf.square(y_pred - y))
grad_W, grad_b = tf.gradients(xs=[W, b], ys=loss)
new_b = tf.assign_sub(b, 0.01 * grad_b)
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    for i in range(3):
        _, l = sess.run([new_b, loss], {x: np.random.rand(8, 3), y: np.random.rand(8, 1)})
        print("step", i, l)
"""


def test_tf_gradients_of_tensorflow_compat_v1_imported_after_flowcheck(tmp_path: Path) -> None:
    """``import tensorflow.compat.v1 as tf`` in the script, after flowcheck wrapped ``tf.gradients``."""
    script = tmp_path / "manual_update.py"
    script.write_text(_DIRECT_GRADIENTS)
    done = _flowcheck_run(script, "--json")
    truth = tf1_tensorflow_none(script, "loss", ["W", "b"])
    assert any(truth) and done.returncode == 1, done.stderr[-2000:]  # a source gets None: exit 1
    site = _one_site(json.loads(done.stdout))
    assert site["kind"] == "tf1 tf.gradients"
    assert site["source"]["line"] == _line_of(script, "grad_W, grad_b = tf.gradients(xs=[W, b], ys=loss)")
    assert [s["name"] for s in site["sources"]] == ["W", "b"]
    assert [s["verdict"] != "receives" for s in site["sources"]] == truth
    assert [s["tensorflow_none"] for s in site["sources"]] == truth
    cut = [b["source"]["line"] for s in site["sources"] for b in s["barriers"]]
    assert cut and set(cut) == {_line_of(script, "# CUT")}
    assert "step 0" in done.stderr  # the script's own prints stay (on stderr under --json)


_UNREPEATABLE = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
tf.set_random_seed(0)
rng = np.random.RandomState(0)
X = rng.rand(64, 4).astype(np.float32)
Y = X.sum(1, keepdims=True)
ds = tf.data.Dataset.from_tensor_slices((X, Y)).shuffle(64, seed=1).repeat().batch(8)
xb, yb = tf.data.make_one_shot_iterator(ds).get_next()
keep_prob = tf.placeholder(tf.float32)
w = tf.Variable(tf.random_normal([4, 8], seed=2), name="w")
v = tf.Variable(tf.random_normal([8, 1], seed=3), name="v")
frozen = tf.Variable(tf.ones([8, 1]), name="frozen")
h = tf.nn.dropout(tf.nn.relu(tf.matmul(xb, w)), keep_prob=keep_prob)
loss = tf.reduce_mean(tf.square(tf.matmul(h, v) + tf.stop_gradient(tf.matmul(h, frozen)) - yb))
train = tf.train.AdamOptimizer(0.01).minimize(loss)
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    for i in range(4):
        _, l = sess.run([train, loss], feed_dict={keep_prob: 0.5})
        print("loss", i, repr(l))
    print("final", sess.run(w).ravel().tolist(), sess.run(v).ravel().tolist(), sess.run(frozen).ravel().tolist())
"""


def test_a_step_that_reads_a_dataset_and_draws_dropout_is_verified_by_the_scripts_own_run(tmp_path: Path) -> None:
    """Such a step cannot be run a second time; its own run fetches the gradients beside the script's fetches."""
    script = tmp_path / "dropout_dataset.py"
    script.write_text(_UNREPEATABLE)
    document, truth = _judged(script, "loss", ["w", "v", "frozen"])
    verification = document["steps"][0]["report"]["verification"]
    assert verification is not None and verification["agrees"], document["steps"][0]["report"]["notes"]
    assert verification["restored"] is False  # the script's own run: nothing to restore
    assert [c["gradient"] == "none" for c in verification["variables"]] == truth
    notes = document["steps"][0]["report"]["notes"]
    assert any(n.startswith("verified by the script's own run") for n in notes)
    assert not any(n.startswith("not verified") for n in notes)


def test_continue_after_a_step_verified_by_its_own_run_trains_as_python_does(tmp_path: Path) -> None:
    script = tmp_path / "dropout_dataset.py"
    script.write_text(_UNREPEATABLE)
    plain = python_run(script)
    checked = _flowcheck_run(script, "--continue")
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert checked.returncode == 1, checked.stderr[-2000:]  # frozen is cut by the stop_gradient
    printed = [line for line in plain.stdout.splitlines() if line.startswith(("loss", "final"))]
    assert printed and printed == [line for line in checked.stdout.splitlines() if line.startswith(("loss", "final"))]
    assert "verification: agrees" in checked.stdout


_NUMPY_LOSS = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
x = tf.placeholder(tf.float32, [None, 3])
w = tf.Variable(tf.ones([3, 1]), name="weights")
pred = tf.matmul(x, w)
loss_value = tf.placeholder(tf.float32, name="loss_value")
train_op = tf.train.AdamOptimizer(0.1).minimize(loss_value)
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    p = sess.run(pred, {x: np.ones((2, 3))})
    sess.run(train_op, {loss_value: np.mean((p - 1.0) ** 2)})
"""


def test_a_loss_fed_through_a_placeholder_raises_while_the_graph_is_built(tmp_path: Path) -> None:
    """The StackOverflow "No gradients provided" of a loss computed with NumPy: a graph step, nothing run."""
    script = tmp_path / "numpy_loss.py"
    script.write_text(_NUMPY_LOSS)
    plain = python_run(script)
    assert plain.returncode != 0 and "No gradients provided for any variable" in plain.stderr  # TensorFlow's answer
    done = _flowcheck_run(script)
    assert done.returncode == 1, done.stderr[-2000:]
    line = _line_of(script, "minimize(loss_value)")
    assert f"step 1: tf1 Optimizer.minimize, raised while the graph was built (tf1 graph), at {script.name}" in \
        done.stdout.replace(str(tmp_path) + "/", "")
    assert f":{line}\n" in done.stdout
    assert "inputs: none: judged on the graph, nothing was run" in done.stdout
    assert "note: the target loss_value is a placeholder" in done.stdout
    document = json.loads(_flowcheck_run(script, "--json").stdout)
    [step] = document["steps"]
    assert step["kind"] == "tf1 graph"
    [site] = step["report"]["gradient_sites"]
    assert [(s["name"], s["verdict"], s["tensorflow_none"]) for s in site["sources"]] == [("weights", "unused", True)]


def test_a_train_op_built_and_never_run_is_named_in_the_exit_message(tmp_path: Path) -> None:
    script = tmp_path / "never_trains.py"
    script.write_text(
        "import numpy as np\n"
        "import tensorflow.compat.v1 as tf\n"
        "tf.disable_v2_behavior()\n"
        "x = tf.placeholder(tf.float32, [None, 3])\n"
        "w = tf.Variable(tf.ones([3, 1]))\n"
        "loss = tf.reduce_sum(tf.matmul(x, w))\n"
        "train_op = tf.train.GradientDescentOptimizer(0.1).minimize(loss)\n"
        "with tf.Session() as sess:\n"
        "    sess.run(tf.global_variables_initializer())\n"
        "    print('loss', sess.run(loss, {x: np.ones((2, 3))}))\n"
    )
    done = _flowcheck_run(script)
    assert done.returncode == 2
    assert done.stdout == python_run(script).stdout  # the script's own output, unchanged
    [message] = [line for line in done.stderr.splitlines() if line.startswith("flowcheck: error:")]
    assert message.endswith(f"ended without a training step: it built graph-mode gradients (tf1 Optimizer.minimize at "
                            f"{script}:7) but no Session.run fetched them or an op that depends on them"), message


_SUMMARY_EVERY_N = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
x = tf.placeholder(tf.float32, [None, 2])
y = tf.placeholder(tf.float32, [None, 1])
w = tf.Variable(tf.ones([2, 1]), name="weights")
b = tf.Variable(tf.zeros([1]), name="bias")
loss = tf.reduce_mean(tf.square(tf.matmul(x, w) + tf.round(b) - y))
tf.summary.scalar("loss", loss)
merged = tf.summary.merge_all()
train_op = tf.train.GradientDescentOptimizer(0.01).minimize(loss)
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    for i in range(12):
        feed = {x: np.ones((4, 2)), y: np.ones((4, 1))}
        if i % 10 == 0:
            _, _, l = sess.run([merged, train_op, loss], feed_dict=feed)
            print("step", i, "loss", l)
        else:
            sess.run(train_op, feed_dict=feed)
"""


def test_a_run_fetching_the_same_train_op_with_other_fetches_is_the_same_step(tmp_path: Path) -> None:
    """A summary fetched every tenth step beside the train op: one step, ended at its second run."""
    script = tmp_path / "summary_every_n.py"
    script.write_text(_SUMMARY_EVERY_N)
    done = _flowcheck_run(script, "--json")
    truth = tf1_tensorflow_none(script, "loss", ["w", "b"])
    assert done.returncode == 1, done.stderr[-2000:]
    document = json.loads(done.stdout)
    assert document["stopped"]
    site = _one_site(document)  # one step, not one per distinct fetch list
    assert any(truth) and [s["verdict"] != "receives" for s in site["sources"]] == truth
    assert done.stderr.count("step 0 loss") == 1 and "step 10" not in done.stderr


_PY_FUNC = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
batches = []
def next_noise(shape):
    batches.append(len(batches))  # the script's own Python state: one call per run of the step
    return np.full(shape, 0.1 * len(batches), np.float32)
x = tf.placeholder(tf.float32, [2, 3])
w = tf.Variable(tf.ones([3, 1]), name="w")
q = tf.Variable(tf.ones([3, 1]), name="q")
noise = tf.py_func(next_noise, [tf.shape(x)], tf.float32)
quantized = tf.py_func(lambda a: np.round(a), [tf.matmul(x, q)], tf.float32)
loss = tf.reduce_sum(tf.matmul(x + noise, w)) + tf.reduce_sum(quantized)
train = tf.train.MomentumOptimizer(0.1, 0.9).minimize(loss)
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    for i in range(3):
        print("loss", i, sess.run([train, loss], {x: np.ones((2, 3))})[1])
    print("final", len(batches), sess.run(w).ravel().tolist(), sess.run(q).ravel().tolist())
"""


def test_a_step_that_calls_python_is_run_once_per_run_as_without_flowcheck(tmp_path: Path) -> None:
    """``tf.py_func`` may change the script's Python state: the step is verified by its own run, not rerun."""
    script = tmp_path / "py_func_step.py"
    script.write_text(_PY_FUNC)
    document, _ = _judged(script, "loss", ["w", "q"])
    assert document["steps"][0]["report"]["verification"]["agrees"]
    plain = python_run(script)
    checked = _flowcheck_run(script, "--continue")
    printed = [line for line in plain.stdout.splitlines() if line.startswith(("loss", "final"))]
    assert printed and printed == [line for line in checked.stdout.splitlines() if line.startswith(("loss", "final"))]


def test_monitored_training_session_with_hooks(tmp_path: Path) -> None:
    """Its hooks make the inner ``Session.run`` fetch a dict keyed by hook objects and ``"caller"``."""
    script = tmp_path / "monitored.py"
    script.write_text(
        "import numpy as np\n"
        "import tensorflow.compat.v1 as tf\n"
        "tf.disable_v2_behavior()\n"
        "x = tf.placeholder(tf.float32, [None, 3])\n"
        "y = tf.placeholder(tf.float32, [None, 1])\n"
        "w = tf.Variable(tf.zeros([3, 1]), name='w')\n"
        "b = tf.Variable(tf.zeros([1]), name='b')\n"
        "loss = tf.reduce_mean(tf.square(tf.matmul(x, w) + tf.floor(b) - y))\n"
        "global_step = tf.train.get_or_create_global_step()\n"
        "train_op = tf.train.AdamOptimizer(0.1).minimize(loss, global_step=global_step)\n"
        "hooks = [tf.train.StopAtStepHook(last_step=4), tf.train.LoggingTensorHook({'loss': loss}, every_n_iter=2)]\n"
        f"with tf.train.MonitoredTrainingSession(checkpoint_dir={str(tmp_path / 'ckpt')!r}, hooks=hooks) as sess:\n"
        "    while not sess.should_stop():\n"
        "        sess.run(train_op, {x: np.ones((4, 3)), y: np.ones((4, 1))})\n"
    )
    document, _ = _judged(script, "loss", ["w", "b"])
    assert document["steps"][0]["report"]["verification"]["agrees"]


def test_a_step_with_a_candidate_sampler_trains_as_python_does(tmp_path: Path) -> None:
    """word2vec's ``nce_loss`` samples negatives in the step: a second run would draw the script's samples."""
    script = tmp_path / "word2vec.py"
    script.write_text(
        "import numpy as np\n"
        "import tensorflow.compat.v1 as tf\n"
        "tf.disable_v2_behavior()\n"
        "tf.set_random_seed(1)\n"
        "rng = np.random.RandomState(0)\n"
        "inputs = tf.placeholder(tf.int32, shape=[16])\n"
        "labels = tf.placeholder(tf.int32, shape=[16, 1])\n"
        "embeddings = tf.Variable(tf.random_uniform([50, 8], -1.0, 1.0, seed=2))\n"
        "nce_weights = tf.Variable(tf.truncated_normal([50, 8], stddev=0.3, seed=3))\n"
        "nce_biases = tf.Variable(tf.zeros([50]))\n"
        "embed = tf.nn.embedding_lookup(embeddings, inputs)\n"
        "loss = tf.reduce_mean(tf.nn.nce_loss(weights=nce_weights, biases=nce_biases, labels=labels, inputs=embed,\n"
        "                                     num_sampled=4, num_classes=50))\n"
        "optimizer = tf.train.GradientDescentOptimizer(1.0).minimize(loss)\n"
        "with tf.Session() as session:\n"
        "    tf.global_variables_initializer().run()\n"
        "    for step in range(4):\n"
        "        feed = {inputs: rng.randint(0, 50, 16), labels: rng.randint(0, 50, (16, 1))}\n"
        "        print('loss', step, repr(session.run([optimizer, loss], feed_dict=feed)[1]))\n"
    )
    truth = tf1_tensorflow_none(script, "loss", ["embeddings", "nce_weights", "nce_biases"])
    plain = python_run(script)
    checked = _flowcheck_run(script, "--continue")
    assert checked.returncode == (1 if any(truth) else 0), checked.stderr[-2000:]
    printed = [line for line in plain.stdout.splitlines() if line.startswith("loss")]
    assert printed and printed == [line for line in checked.stdout.splitlines() if line.startswith("loss")]
    assert "verification: agrees" in checked.stdout
    assert "draws random numbers (LogUniformCandidateSampler" in checked.stdout


def test_unnamed_variables_of_a_model_built_twice_say_where_they_were_made(tmp_path: Path) -> None:
    """The "my weights never change" bug: the model function called twice makes a second, untrained set."""
    script = tmp_path / "two_models.py"
    script.write_text(
        "import numpy as np\n"
        "import tensorflow.compat.v1 as tf\n"
        "tf.disable_v2_behavior()\n"
        "def model(x):\n"
        "    w = tf.Variable(tf.ones([3, 1]))\n"
        "    return tf.matmul(x, w)\n"
        "x = tf.placeholder(tf.float32, [None, 3])\n"
        "train_pred = model(x)\n"
        "eval_pred = model(x)\n"
        "loss = tf.reduce_mean(tf.square(train_pred - 1.0))\n"
        "train_op = tf.train.GradientDescentOptimizer(0.1).minimize(loss)\n"
        "with tf.Session() as sess:\n"
        "    sess.run(tf.global_variables_initializer())\n"
        "    sess.run(train_op, {x: np.ones((4, 3))})\n"
    )
    done = _flowcheck_run(script, "--json")
    truth = tf1_tensorflow_none(script, "loss", ["train_pred.op.inputs[1].op.inputs[0]", "eval_pred.op.inputs[1].op.inputs[0]"])
    assert done.returncode == 1, done.stderr[-2000:]
    site = _one_site(json.loads(done.stdout))
    assert any(truth) and [s["verdict"] != "receives" for s in site["sources"]] == truth
    made = f"made at {script}:5, called from line "
    assert [s["name"] for s in site["sources"]] == [f"Variable ({made}8)", f"Variable_1 ({made}9)"]


def test_an_uninitialized_variable_the_step_never_touches_does_not_stop_the_verification(tmp_path: Path) -> None:
    """``tf.metrics.accuracy`` makes local variables the script initializes only after training."""
    script = tmp_path / "metrics_later.py"
    script.write_text(
        "import numpy as np\n"
        "import tensorflow.compat.v1 as tf\n"
        "tf.disable_v2_behavior()\n"
        "x = tf.placeholder(tf.float32, [None, 3])\n"
        "y = tf.placeholder(tf.int64, [None])\n"
        "w = tf.Variable(tf.ones([3, 2]), name='w')\n"
        "b = tf.Variable(tf.zeros([2]), name='b')\n"
        "logits = tf.matmul(x, w) + tf.round(b)\n"
        "loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))\n"
        "acc, acc_op = tf.metrics.accuracy(labels=y, predictions=tf.argmax(logits, 1))\n"
        "train = tf.train.MomentumOptimizer(0.1, 0.9).minimize(loss)\n"
        "with tf.Session() as sess:\n"
        "    sess.run(tf.global_variables_initializer())\n"
        "    for i in range(3):\n"
        "        sess.run(train, {x: np.ones((4, 3)), y: [0, 1, 0, 1]})\n"
        "    sess.run(tf.local_variables_initializer())\n"
        "    print('accuracy', sess.run(acc_op, {x: np.ones((4, 3)), y: [0, 1, 0, 1]}))\n"
    )
    document, _ = _judged(script, "loss", ["w", "b"])
    verification = document["steps"][0]["report"]["verification"]
    assert verification is not None, document["steps"][0]["report"]["notes"]
    assert verification["agrees"] and verification["restored"]
    plain = python_run(script)
    checked = _flowcheck_run(script, "--continue")
    assert [line for line in plain.stdout.splitlines() if line.startswith("accuracy")] == \
        [line for line in checked.stdout.splitlines() if line.startswith("accuracy")]


def test_a_session_error_is_told_by_its_message_not_by_graph_execution_error(tmp_path: Path) -> None:
    """``Session.run`` errors start "Graph execution error:" and the op's stack; the message comes after.

    The line is the failing op's, as for any kernel error of a step (tests/test_run_keras.py)."""
    script = tmp_path / "missing_feed.py"
    script.write_text(
        "import numpy as np\n"
        "import tensorflow.compat.v1 as tf\n"
        "tf.disable_v2_behavior()\n"
        "x = tf.placeholder(tf.float32, [None, 3])\n"
        "y = tf.placeholder(tf.float32, [None, 1])\n"
        "w = tf.Variable(tf.ones([3, 1]), name='w')\n"
        "loss = tf.reduce_mean(tf.square(tf.matmul(x, w) - y))\n"
        "train = tf.train.GradientDescentOptimizer(0.1).minimize(loss)\n"
        "with tf.Session() as sess:\n"
        "    sess.run(tf.global_variables_initializer())\n"
        "    sess.run(train, {x: np.ones((2, 3))})  # y not fed\n"
    )
    plain = python_run(script)
    [real] = [line for line in plain.stderr.splitlines() if line.startswith("You must feed a value")]
    done = _flowcheck_run(script)
    assert f"not verified: running the step raised InvalidArgumentError: {real}" in done.stdout
    # The failing op's own line (where the unfed placeholder was made), as a tf.function step's kernel error is told.
    assert f"the script then failed: InvalidArgumentError at {script}:5 (y = tf.placeholder(" in done.stdout
    assert done.stdout.rstrip().splitlines()[-3].endswith(f": {real}")


_N_CRITIC = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
z = tf.placeholder(tf.float32, [None, 2])
real = tf.placeholder(tf.float32, [None, 2])
with tf.variable_scope("generator"):
    G = tf.matmul(z, tf.get_variable("w", [2, 2]))
with tf.variable_scope("discriminator"):
    dw = tf.get_variable("w", [2, 1])
    d_real = tf.matmul(real, dw)
    d_fake = tf.matmul(tf.stop_gradient(G), dw)  # CUT
d_loss = tf.reduce_mean(d_fake) - tf.reduce_mean(d_real)
g_loss = -tf.reduce_mean(d_fake)
d_vars = tf.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES, scope="discriminator")
g_vars = tf.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES, scope="generator")
d_train = tf.train.RMSPropOptimizer(5e-5).minimize(d_loss, var_list=d_vars)
g_gv = tf.train.RMSPropOptimizer(5e-5).compute_gradients(g_loss, var_list=g_vars)
g_train = tf.no_op() if all(g is None for g, _ in g_gv) else tf.group(*[g for g, _ in g_gv if g is not None])
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    for it in range(2):
        for _ in range(5):  # n_critic
            sess.run(d_train, {z: np.ones((4, 2)), real: np.ones((4, 2))})
        sess.run(g_train, {z: np.ones((4, 2))})
"""


def test_a_gradient_call_no_step_of_the_first_round_ran_is_judged_on_the_graph(tmp_path: Path) -> None:
    """WGAN's critic runs five times before the generator, whose guarded call is a ``tf.no_op()``: no run
    computes the generator's gradients, and its call still counts."""
    script = tmp_path / "wgan.py"
    script.write_text(_N_CRITIC)
    done = _flowcheck_run(script, "--json")
    truth = tf1_tensorflow_none(script, "g_loss", ["g_vars[0]"])
    assert any(truth) and done.returncode == 1, done.stderr[-2000:]
    document = json.loads(done.stdout)
    first, second = document["steps"]
    assert (first["kind"], second["kind"]) == ("tf1 Session.run", "tf1 graph")
    [site] = second["report"]["gradient_sites"]
    assert site["source"]["line"] == _line_of(script, "compute_gradients(g_loss, var_list=g_vars)")
    assert [s["verdict"] != "receives" for s in site["sources"]] == truth
    assert [s["tensorflow_none"] for s in site["sources"]] == truth
    assert {b["source"]["line"] for s in site["sources"] for b in s["barriers"]} == {_line_of(script, "# CUT")}
