"""``flowcheck run`` on more TensorFlow 1 program shapes: a ``tf.py_func`` term of a loss, WGAN-GP's critic
runs before its generator's, a Newton step's second derivatives, hunkim's DQN class, TF1-era Keras
raising at a ``None`` gradient; and ``flowcheck analyze`` on a TF1 script that trains at import.

Each script runs in fresh interpreters (``tf.disable_v2_behavior()`` switches the whole process to
graph mode): under ``flowcheck run`` and under plain Python, followed by an epilogue asking TensorFlow
itself, ``tf.gradients(target, [source])`` one source at a time, which sources get ``None``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from truth import CHILD_ENV, flowcheck_run, line_of, python_run, tf1_run_against_truth, tf1_tensorflow_none

pytestmark = pytest.mark.slow  # every test starts TensorFlow in child interpreters


def _verdicts(site: dict[str, Any]) -> list[bool]:
    """Per source: does flowcheck say it gets no gradient (TensorFlow's None)?"""
    return [s["verdict"] != "receives" for s in site["sources"]]


def _printed(stdout: str, tag: str) -> list[np.float32]:
    """The float32 values the script printed after ``tag`` (as NumPy printed them: its repr)."""
    return [np.float32(line.split("np.float32(")[1].rstrip(")")) for line in stdout.splitlines() if line.startswith(tag)]


_PY_FUNC_TERM = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
np.random.seed(0)
def augment(x):
    return x + np.random.normal(0, 0.01, x.shape).astype(np.float32)
x = tf.placeholder(tf.float32, [None, 3])
w = tf.Variable(tf.ones([3, 2]), name="w")
w_aug = tf.Variable(tf.ones([3, 2]), name="w_aug")
aug = tf.py_func(augment, [tf.matmul(x, w_aug)], tf.float32)  # CUT
aug.set_shape([None, 2])
loss = tf.reduce_mean(tf.square(tf.matmul(x, w) - 1.0)) + tf.reduce_mean(aug)
train_op = tf.train.AdamOptimizer(0.01).minimize(loss)
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    for i in range(2):
        print("loss", repr(sess.run([train_op, loss], {x: np.ones((2, 3))})[1]))
"""


def test_a_py_func_term_only_the_loss_reads_is_not_run_twice(tmp_path: Path) -> None:
    """The train op does not read the ``tf.py_func`` term (its gradient is None), but the loss flowcheck
    fetches beside it does: running the step twice would draw from the script's NumPy generator once
    more. It is verified by the script's own run, and ``--continue`` prints what ``python`` prints."""
    script = tmp_path / "py_func_term.py"
    truth, document = tf1_run_against_truth(script, _PY_FUNC_TERM, "loss", ["w", "w_aug"])
    [step] = document["steps"]
    [site] = step["report"]["gradient_sites"]
    assert _verdicts(site) == truth
    [barrier] = site["sources"][1]["barriers"]
    assert barrier["source"]["line"] == line_of(script, "# CUT")
    assert any("calls Python code" in note for note in step["report"]["notes"])
    plain = python_run(script)
    continued = flowcheck_run(script, "--continue")
    assert continued.stdout.startswith(plain.stdout), (plain.stdout, continued.stdout[:2000])


_WGAN_GP = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
tf.set_random_seed(1)
np.random.seed(1)
BATCH = 4
z = tf.placeholder(tf.float32, [BATCH, 2])
real = tf.placeholder(tf.float32, [BATCH, 3])
def generator(z):
    with tf.variable_scope('generator'):
        w = tf.get_variable('w', [2, 3])
        b = tf.get_variable('b', [3], initializer=tf.zeros_initializer())
        return tf.matmul(z, w) + b
def discriminator(x, reuse=False):
    with tf.variable_scope('discriminator', reuse=reuse):
        w1 = tf.get_variable('w1', [3, 8])
        w2 = tf.get_variable('w2', [8, 1])
        return tf.matmul(tf.nn.leaky_relu(tf.matmul(x, w1)), w2)
fake = generator(z)
d_real = discriminator(real)
d_fake = discriminator(fake, reuse=True)
gen_cost = -tf.reduce_mean(d_fake)
disc_cost = tf.reduce_mean(d_fake) - tf.reduce_mean(d_real)
alpha = tf.random_uniform(shape=[BATCH, 1], minval=0., maxval=1.)
interpolates = real + alpha * (fake - real)
gradients = tf.gradients(discriminator(interpolates, reuse=True), [interpolates])[0]
slopes = tf.sqrt(tf.reduce_sum(tf.square(gradients), reduction_indices=[1]))
disc_cost += 10 * tf.reduce_mean((slopes - 1.) ** 2)
gen_params = tf.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES, scope='generator')
disc_params = tf.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES, scope='discriminator')
gen_train_op = tf.train.AdamOptimizer(1e-4, beta1=0.5, beta2=0.9).minimize(gen_cost, var_list=gen_params)
disc_train_op = tf.train.AdamOptimizer(1e-4, beta1=0.5, beta2=0.9).minimize(disc_cost, var_list=disc_params)
with tf.Session() as session:
    session.run(tf.global_variables_initializer())
    for iteration in range(2):
        if iteration > 0:
            session.run(gen_train_op, feed_dict={z: np.random.randn(BATCH, 2)})
        for i in range(5):
            _disc_cost, _ = session.run([disc_cost, disc_train_op],
                                        feed_dict={z: np.random.randn(BATCH, 2), real: np.random.randn(BATCH, 3)})
            print("disc_cost", repr(_disc_cost))
"""


def test_wgan_gp_generator_step_after_n_critic_runs_is_a_step(tmp_path: Path) -> None:
    """The critic's ``disc_train_op`` runs five times before the generator's first run: the critic's
    step reads the generator's variables, which another call lists, so its repeats let the round go on
    and the generator's step is analyzed and verified at its own first run. The penalty's source is
    named as the script names it, and the critic's loss is ``disc_cost``, not the sum of every target."""
    script = tmp_path / "wgan_gp.py"
    script.write_text(_WGAN_GP)
    disc_truth = tf1_tensorflow_none(script, "disc_cost", ["*disc_params"])
    gen_truth = tf1_tensorflow_none(script, "gen_cost", ["*gen_params"])
    done = flowcheck_run(script, "--json")
    assert done.returncode == (1 if any(disc_truth + gen_truth) else 0), done.stderr[-2000:]
    critic, gen = json.loads(done.stdout)["steps"]
    assert (critic["kind"], gen["kind"]) == ("tf1 Session.run", "tf1 Session.run")
    penalty, disc_site = critic["report"]["gradient_sites"]
    assert [s["name"] for s in penalty["sources"]] == ["interpolates"]
    assert _verdicts(disc_site) == disc_truth
    [gen_site] = gen["report"]["gradient_sites"]
    assert _verdicts(gen_site) == gen_truth
    assert gen["call"]["line"] == line_of(script, "session.run(gen_train_op")
    assert critic["report"]["verification"]["agrees"] and gen["report"]["verification"]["agrees"]
    # (Under load the critic's first loss has differed from python's at the fourth digit: a tolerance.)
    first = _printed(python_run(script).stdout, "disc_cost")[0]
    assert np.isclose(critic["report"]["verification"]["loss"], first, rtol=1e-3)


_NEWTON = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
x = tf.placeholder(tf.float32, [None, 2])
w = tf.Variable([[0.5], [-0.3]], name="w")
c = tf.Variable(0.1, name="c")
lock = tf.Variable(1.0, name="lock")
pred = tf.nn.relu(tf.matmul(x, w)) + c * tf.round(lock)
loss = tf.reduce_mean(tf.square(pred - 1.0))
g_w, g_c, g_lock = tf.gradients(loss, [w, c, lock])
h_c = tf.gradients(g_c, c)[0]
newton = [tf.assign_sub(w, 0.1 * g_w), tf.assign_sub(c, g_c / (h_c + 1e-3))]
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    for i in range(2):
        value, _ = sess.run([loss, newton], {x: [[1., 2.], [3., 1.]]})
        print("loss", repr(value))
"""


def test_a_newton_step_reports_its_loss_not_the_sum_with_a_gradient(tmp_path: Path) -> None:
    """``tf.gradients(g_c, c)`` differentiates a gradient: the verification's loss is ``loss``, as the
    script prints it, not ``loss + g_c``."""
    script = tmp_path / "newton.py"
    script.write_text(_NEWTON)
    truth = tf1_tensorflow_none(script, "loss", ["w", "c", "lock"])
    done = flowcheck_run(script, "--json")
    assert done.returncode == (1 if any(truth) else 0), done.stderr[-2000:]
    [step] = json.loads(done.stdout)["steps"]
    first, second = step["report"]["gradient_sites"]
    assert _verdicts(first) == truth
    assert _verdicts(second) == tf1_tensorflow_none(script, "g_c", ["c"])
    assert np.float32(step["report"]["verification"]["loss"]) == _printed(python_run(script).stdout, "loss")[0]


_DQN = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
class DQN:
    def __init__(self, session, input_size, output_size, name="main"):
        self.session = session
        self.input_size = input_size
        self.output_size = output_size
        self.net_name = name
        self._build_network()
    def _build_network(self, h_size=8, l_rate=1e-1):
        with tf.variable_scope(self.net_name):
            self._X = tf.placeholder(tf.float32, [None, self.input_size], name="input_x")
            W1 = tf.get_variable("W1", shape=[self.input_size, h_size])
            layer1 = tf.nn.tanh(tf.matmul(self._X, W1))
            W2 = tf.get_variable("W2", shape=[h_size, self.output_size])
            self._Qpred = tf.matmul(layer1, W2)
        self._Y = tf.placeholder(shape=[None, self.output_size], dtype=tf.float32)
        self._loss = tf.reduce_mean(tf.square(self._Y - self._Qpred))
        self._train = tf.train.AdamOptimizer(learning_rate=l_rate).minimize(self._loss)
    def predict(self, state):
        return self.session.run(self._Qpred, feed_dict={self._X: np.reshape(state, [1, self.input_size])})
    def update(self, x_stack, y_stack):
        return self.session.run([self._loss, self._train], feed_dict={self._X: x_stack, self._Y: y_stack})
with tf.Session() as sess:
    mainDQN = DQN(sess, 4, 2, name="main")
    targetDQN = DQN(sess, 4, 2, name="target")
    tf.global_variables_initializer().run()
    for episode in range(2):
        s = np.random.rand(3, 4)
        y = np.tile(targetDQN.predict(s[0]), (3, 1)) * 0.9 + 1.0
        print("loss", mainDQN.update(s, y)[0])
"""


def test_a_dqn_classs_own_underscored_attributes_name_its_targets(tmp_path: Path) -> None:
    """DeepLearningZeroToAll's DQN keeps its loss as ``self._loss``: the sites' target is named so, not
    ``Mean`` / ``Mean_1``; the verdicts are TensorFlow's (the target network's never-run ``minimize`` lists
    every trainable variable, the main network's among them)."""
    script = tmp_path / "dqn.py"
    script.write_text(_DQN)
    sources = ["main/W1", "main/W2", "target/W1", "target/W2"]
    variables = [f"tf.trainable_variables()[{i}]" for i in range(4)]
    main_truth = tf1_tensorflow_none(script, "mainDQN._loss", variables[:2])
    target_truth = tf1_tensorflow_none(script, "targetDQN._loss", variables)
    done = flowcheck_run(script, "--json")
    assert done.returncode == (1 if any(main_truth + target_truth) else 0), done.stderr[-2000:]
    run, graph = json.loads(done.stdout)["steps"]
    [main_site] = run["report"]["gradient_sites"]
    [target_site] = graph["report"]["gradient_sites"]
    assert main_site["targets"] == target_site["targets"] == ["self._loss"]
    assert [s["name"] for s in target_site["sources"]] == sources
    assert (_verdicts(main_site), _verdicts(target_site)) == (main_truth, target_truth)


_KERAS_GET_GRADIENTS = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
x = tf.placeholder(tf.float32, [None, 4])
w_hidden = tf.Variable(tf.ones([4, 8]), name="hidden/kernel")
w_out = tf.Variable(tf.ones([8, 1]), name="out/kernel")
hidden = tf.stop_gradient(tf.nn.relu(tf.matmul(x, w_hidden)))  # CUT
loss = tf.reduce_mean(tf.matmul(hidden, w_out))
def get_gradients(loss, params):  # tf_keras's OptimizerV2.get_gradients, as it is written (graph mode)
    grads = tf.compat.v1.gradients(loss, params)
    for grad, param in zip(grads, params):
        if grad is None:
            raise ValueError("Variable {} has `None` for gradient. Please make sure that all of your ops have a "
                             "gradient defined (i.e. are differentiable). Common ops without gradient: "
                             "K.argmax, K.round, K.eval.".format(param))
    return grads
grads = get_gradients(loss, [w_hidden, w_out])
"""


def test_tf_keras_raising_at_a_none_gradient_is_a_finding(tmp_path: Path) -> None:
    """TF1-era Keras (``tf_keras`` under ``tf.disable_v2_behavior()``) raises "Variable ... has `None` for
    gradient" while ``fit`` builds its train function: the gradient call that gave the ``None`` is judged
    (exit status 1, the barrier at the script's line), not reported as a failed script."""
    script = tmp_path / "keras_get_gradients.py"
    script.write_text(_KERAS_GET_GRADIENTS)
    plain = python_run(script)
    assert plain.returncode != 0 and "has `None` for gradient" in plain.stderr  # what TensorFlow's Keras does
    truth = tf1_tensorflow_none(_without_raise(script), "loss", ["w_hidden", "w_out"])
    done = flowcheck_run(script, "--json")
    assert done.returncode == 1, done.stderr[-2000:]
    [step] = json.loads(done.stdout)["steps"]
    assert step["kind"] == "tf1 graph"
    [site] = step["report"]["gradient_sites"]
    assert _verdicts(site) == truth
    assert "has `None` for gradient" in site["error"]
    [barrier] = site["sources"][0]["barriers"]
    assert barrier["source"]["line"] == line_of(script, "# CUT")


def _without_raise(script: Path) -> Path:
    """The script up to its gradient call, which TensorFlow answers (its epilogue asks after it)."""
    cut = script.with_name(script.stem + "_graph.py")
    cut.write_text(script.read_text().split("def get_gradients")[0])
    return cut


_TOP_LEVEL_SESSION = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
x = tf.placeholder(tf.float32, [None, 3])
w = tf.Variable(tf.ones([3, 1]), name="w")
loss = tf.reduce_mean(tf.matmul(x, w))
train_step = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
sess = tf.Session()
sess.run(tf.global_variables_initializer())
init = tf.local_variables_initializer()
sess.run(init)
for i in range(3):
    _, l = sess.run([train_step, loss], feed_dict={x: np.ones((2, 3))})  # TRAINS
    print("step", i, l)
"""


def test_analyze_refuses_a_tf1_script_whose_session_trains_at_import(tmp_path: Path) -> None:
    """A TF1 script's top-level ``sess.run`` loop trains when imported: ``flowcheck analyze`` refuses it before
    importing (nothing printed, nothing trained), naming the line that trains (not the initializers' runs)
    and pointing to ``flowcheck run``; ``python`` trains it."""
    script = tmp_path / "tf1_script.py"
    script.write_text(_TOP_LEVEL_SESSION)
    assert "step 2" in python_run(script).stdout
    code = "import sys; from flowcheck.cli.main import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "analyze", str(script)], capture_output=True, text=True,
                          env=CHILD_ENV, timeout=300, cwd=tmp_path)
    assert done.returncode == 2
    assert "step" not in done.stdout
    line = line_of(script, "# TRAINS")
    assert f"importing {script} would train: line {line} (_, l = sess.run([train_step, loss]" in done.stderr
    assert f"`flowcheck run {script}`" in done.stderr


@pytest.mark.parametrize("named", [False, True])
def test_analyze_of_a_tf1_graph_module_points_to_flowcheck_run(tmp_path: Path, named: bool) -> None:
    """A module that builds a TF1 graph (no session) has no target ``flowcheck analyze`` can trace; its loss
    tensor is no function: the error says the file is TensorFlow 1 graph code and points to ``flowcheck run``."""
    script = tmp_path / "tf1_graph.py"
    script.write_text(_TOP_LEVEL_SESSION.split("with tf.Session()")[0].split("sess = tf.")[0])
    assert "Session" not in script.read_text()
    code = "import sys; from flowcheck.cli.main import main; sys.exit(main(sys.argv[1:]))"
    target = f"{script}:loss" if named else str(script)
    done = subprocess.run([sys.executable, "-c", code, "analyze", target], capture_output=True, text=True,
                          env=CHILD_ENV, timeout=300, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"is TensorFlow 1 graph code (eager execution is off): `flowcheck run {script.name}`" in done.stderr.splitlines()[-1]


_CLIP_NONE = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
x = tf.placeholder(tf.float32, [None, 2])
labels = tf.placeholder(tf.int64, [None])
W = tf.Variable(tf.zeros([2, 3]), name="W")
temperature = tf.Variable(1.0, name="temperature")
logits = tf.matmul(x, W)
pred = tf.argmax(logits / temperature, 1)  # CUT
loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
acc = tf.reduce_mean(tf.cast(tf.equal(pred, labels), tf.float32))
opt = tf.train.AdamOptimizer(1e-3)
gvs = opt.compute_gradients(loss + 0.0 * acc)
capped_gvs = [(tf.clip_by_value(grad, -1., 1.), var) for grad, var in gvs]  # RAISES
train_op = opt.apply_gradients(capped_gvs)
"""


def test_clipping_a_none_gradient_names_the_line_that_raised(tmp_path: Path) -> None:
    """The Stack Overflow ``clip_by_value`` of a ``None`` gradient ("None values not supported"): the call that
    gave the ``None`` is judged (TensorFlow's verdicts, the barrier at the script's line), and the note says
    where the script raised, not only what."""
    script = tmp_path / "clip_none.py"
    script.write_text(_CLIP_NONE)
    cut = tmp_path / "clip_none_graph.py"
    cut.write_text(_CLIP_NONE.split("capped_gvs")[0])
    truth = tf1_tensorflow_none(cut, "(loss + 0.0 * acc)", ["W", "temperature"])
    done = flowcheck_run(script, "--json")
    assert done.returncode == 1, done.stderr[-2000:]
    [step] = json.loads(done.stdout)["steps"]
    [site] = step["report"]["gradient_sites"]
    assert _verdicts(site) == truth
    assert site["sources"][1]["barriers"][0]["source"]["line"] == line_of(script, "# CUT")
    assert any(f"ValueError at {script}:{line_of(script, '# RAISES')} (capped_gvs = " in note
               for note in step["report"]["notes"]), step["report"]["notes"]


_STOP_GRADIENTS = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
x = tf.placeholder(tf.float32, [None, 2])
a = tf.Variable([[1.0], [2.0]], name="a")
b = tf.Variable(0.5, name="b")
h = tf.matmul(x, a)  # CUT
loss = tf.reduce_sum((h * b) ** 2)
grads = tf.gradients(loss, [a, b], stop_gradients=[h])
print("NONE", [g is None for g in grads])
train = [tf.assign_sub(v, 0.01 * g) for v, g in zip([a, b], grads) if g is not None]
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    for i in range(2):
        sess.run(train, {x: [[1., 1.]]})
"""


def test_stop_gradients_tensors_are_named_as_the_script_names_them(tmp_path: Path) -> None:
    """``tf.gradients(loss, [a, b], stop_gradients=[h])``: the verdicts are the script's own call's answer
    (it prints which gradients are None), and ``h`` is called ``h``, not ``MatMul:0``."""
    script = tmp_path / "stop_gradients.py"
    script.write_text(_STOP_GRADIENTS)
    [said] = [line for line in python_run(script).stdout.splitlines() if line.startswith("NONE ")]
    truth = json.loads(said.removeprefix("NONE ").replace("True", "true").replace("False", "false"))
    done = flowcheck_run(script, "--json")
    assert done.returncode == (1 if any(truth) else 0), done.stderr[-2000:]
    [step] = json.loads(done.stdout)["steps"]
    [site] = step["report"]["gradient_sites"]
    assert _verdicts(site) == truth
    assert site["watch"].endswith("; stop_gradients: h")
    [barrier] = site["sources"][0]["barriers"]
    assert barrier["detail"] == "listed in tf.gradients(stop_gradients=...): h"
    assert barrier["source"]["line"] == line_of(script, "# CUT")


_PRINTED_LOSS = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
x = tf.placeholder(tf.float32, [None, 2])
w = tf.Variable(tf.ones([2, 1]), name="w")
logits = tf.Print(tf.matmul(x, w), [tf.constant(1)], message="forward ran ")
loss = tf.reduce_mean(tf.square(logits - 1.0))
print_op = tf.print("loss is", loss)
with tf.control_dependencies([print_op]):
    loss = tf.identity(loss)  # the train op never runs print_op: its gradient does not read this op
train = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    for i in range(2):
        sess.run(train, {x: [[1., 2.]]})
"""


def test_the_scripts_own_run_fetches_no_target_that_would_run_more_than_it_does(tmp_path: Path) -> None:
    """A step verified by the script's own run (its ``tf.Print`` cannot run twice) fetched its target beside:
    the ``tf.print`` in the loss's control dependencies, which the script's train op never runs, printed. The
    loss is then left unfetched (unseen), and the script prints what ``python`` prints."""
    script = tmp_path / "printed_loss.py"
    script.write_text(_PRINTED_LOSS)
    truth = tf1_tensorflow_none(script, "loss", ["w"])
    done = flowcheck_run(script, "--json")
    assert done.returncode == (1 if any(truth) else 0), done.stderr[-2000:]
    [step] = json.loads(done.stdout)["steps"]
    [site] = step["report"]["gradient_sites"]
    assert _verdicts(site) == truth
    assert step["report"]["verification"]["agrees"] and not step["report"]["verification"]["loss_seen"]
    plain, continued = python_run(script), flowcheck_run(script, "--continue")
    said = [[line for line in run.stderr.splitlines() if line.startswith(("loss is", "forward ran"))]
            for run in (plain, continued)]
    assert said[0] == said[1], said


_HESSIAN_NEWTON = """\
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
x = tf.placeholder(tf.float32, [None, 2])
y = tf.placeholder(tf.float32, [None, 1])
w = tf.Variable(tf.zeros([2, 1]), name="w")
frozen = tf.Variable(tf.ones([1]), name="frozen")
loss = tf.reduce_mean(tf.square(tf.matmul(x, w) + tf.stop_gradient(frozen) - y))  # CUT
hess = tf.hessians(loss, SOURCES)  # HESSIANS
newton = w.assign_sub(1e-2 * tf.reshape(tf.reduce_sum(hess[0], axis=[2, 3]), [2, 1]))
X = np.random.RandomState(0).randn(8, 2).astype("float32")
with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    for i in range(2):
        sess.run(newton, {x: X, y: X @ np.array([[1.0], [2.0]], "float32")})
    print("w", sess.run(w).ravel().tolist())
"""


@pytest.mark.parametrize("sources", [["w"], ["w", "frozen"]], ids=["newton step", "a cut source"])
def test_a_newton_step_built_on_tf_hessians_alone_is_a_training_step(tmp_path: Path, sources: list[str]) -> None:
    """``tf.hessians`` is one gradient call at the user's line (not the ``gradients`` calls it makes
    itself, the first-order one and those of its while loop). TensorFlow's answer: a source whose
    gradient is None makes it raise (its while loop writes a None), as it does under flowcheck."""
    script = tmp_path / "newton.py"
    script.write_text(_HESSIAN_NEWTON.replace("SOURCES", f"[{', '.join(sources)}]"))
    probe = tmp_path / "probe.py"
    probe.write_text(_HESSIAN_NEWTON.replace("SOURCES", "[w]"))
    truth = tf1_tensorflow_none(probe, "loss", sources)
    plain = python_run(script)
    assert (plain.returncode != 0) == any(truth), plain.stderr[-2000:]
    done = flowcheck_run(script, "--json")
    assert done.returncode == (1 if any(truth) else 0), done.stderr[-2000:]
    [step] = json.loads(done.stdout)["steps"]
    [site] = step["report"]["gradient_sites"]  # one site: the hessians call
    assert site["kind"] == "tf1 tf.hessians" and site["source"]["line"] == line_of(script, "# HESSIANS")
    assert _verdicts(site) == truth
    if any(truth):  # TensorFlow raised while the graph was built: so does the site, the cut named at its line
        assert step["kind"] == "tf1 graph" and site["error"].startswith("ValueError")
        assert site["sources"][1]["barriers"][0]["source"]["line"] == line_of(script, "# CUT")
    else:
        assert step["kind"] == "tf1 Session.run" and step["report"]["verification"]["agrees"]
