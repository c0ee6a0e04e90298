"""TensorFlow 1 graph mode: gradient sites of a Session.run step, judged and verified in the user's session.

``tf.disable_v2_behavior()`` switches the whole process to graph mode, which would break every
other test, so the cases run in one fresh interpreter (tests/tf1_child.py). The child computes
flowcheck's answer and the truth (TensorFlow's own ``tf.gradients`` on the same graph, one source
at a time, with the call's own ``stop_gradients``); the tests compare them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from truth import flowcheck_run as _flowcheck_run

_HERE = Path(__file__).parent
_CHILD = _HERE / "tf1_child.py"
_SEED = _HERE.parent / "examples" / "seed_tf1.py"
_CASES = ("hidden_counter", "function_and_custom_gradient", "gan_one_run", "control_flow_v1", "monitored_session", "v2_api", "input_pipeline", "dqn", "int_cast", "momentum", "adam", "compute_apply", "not_in_var_list", "direct_gradients")


def _line_of(marker: str, path: Path = _CHILD) -> int:
    """The last line ending with ``marker`` (a docstring above may quote the same code)."""
    found = [n for n, line in enumerate(path.read_text().splitlines(), start=1) if line.rstrip().endswith(marker)]
    assert found, f"no line ends with {marker!r} in {path}"
    return found[-1]


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0")
    proc = subprocess.run(
        [sys.executable, str(_CHILD), str(_SEED), *_CASES], capture_output=True, text=True, env=env,
        timeout=300, cwd=_HERE.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            data = json.loads(line)
            found[data["name"]] = data
    return found


def _site_checks(case: dict[str, Any]) -> None:
    """Every site: static verdict == TensorFlow's answer at the call == tf.gradients truth."""
    assert case["sites"]
    for site in case["sites"]:
        receives = [v == "receives" for v in site["verdicts"]]
        assert receives == site["truth"], site
        assert [not none for none in site["tensorflow_none"]] == site["truth"], site
        assert site["agrees"]
    assert case["restored"], "a variable was not restored bit for bit"
    assert case["ops_added"] == 0, "flowcheck added ops to the user's graph"
    assert case["verification"]["agrees"], case["verification"]
    assert not case["verification"]["problems"]


def test_seed_blocks_w1_at_stop_gradient(results: dict[str, Any]) -> None:
    seed = results["seed"]
    assert seed["kind"] == "tf1 Optimizer.minimize"
    assert seed["line"] == _line_of("minimize(loss)", _SEED)
    assert seed["names"] == ["w1", "w2"]  # the script's names, not Variable / Variable_1
    assert seed["verdicts"] == ["blocked", "receives"]
    assert seed["tensorflow_none"] == [True, False]
    assert seed["truth"] == [[False, True]]  # tf.gradients(loss, w1) is None, (loss, w2) is not
    assert seed["agrees"] and seed["verification_agrees"]
    [(kind, line, code)] = seed["barriers"][0]
    assert kind == "stop_gradient"
    assert line == _line_of("hidden = tf.stop_gradient(tf.matmul(x, w1))", _SEED)
    assert code == "hidden = tf.stop_gradient(tf.matmul(x, w1))"
    assert seed["restored"]


def test_seed_verification_shows_what_the_post_shows(results: dict[str, Any]) -> None:
    seed = results["seed"]
    assert seed["checks"] == [["w1", "none", False], ["w2", "nonzero", True]]
    w1, w2 = seed["flowcheck_after"]["w1"], seed["flowcheck_after"]["w2"]
    assert {v for row in w1 for v in row} == {1.0}
    entries = {v for row in w2 for v in row}
    assert len(entries) == 1 and entries != {1.0}
    # The script's own sess.run, after flowcheck restored everything, gives exactly the same.
    assert seed["session_after"] == [w1, w2]
    assert seed["after_step"][0] == "w1 unchanged: every entry 1"
    assert seed["after_step"][1].startswith("w2 changed: every entry 1 -> every entry ")


def test_dqn_target_network(results: dict[str, Any]) -> None:
    case = results["dqn"]
    _site_checks(case)
    site = case["sites"][0]
    assert site["names"] == ["online", "target_net"]
    assert site["barriers"][1] == [["stop_gradient", _line_of("# CUT dqn")]]


def test_int_cast(results: dict[str, Any]) -> None:
    case = results["int_cast"]
    _site_checks(case)
    assert case["sites"][0]["barriers"][0] == [["none_gradient", _line_of("# CUT cast")]]


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_optimizer_with_slots_and_global_step(results: dict[str, Any], name: str) -> None:
    case = results[name]
    _site_checks(case)
    site = case["sites"][0]
    assert site["watch"] == "graph mode: var_list=dense, gate"
    assert site["barriers"][1] == [["none_gradient", _line_of("# CUT round")]]
    # Slots (and Adam's beta powers) and global_step are part of the restored state.
    assert case["state_count"] == (4 if name == "momentum" else 7)
    assert case["step_after"] == 0


def test_compute_gradients_then_apply(results: dict[str, Any]) -> None:
    case = results["compute_apply"]
    _site_checks(case)
    site = case["sites"][0]
    assert site["kind"] == "tf1 compute_gradients"
    assert site["verdicts"] == ["receives", "blocked", "unused"]
    assert site["barriers"][1] == [["none_gradient", _line_of("# CUT argmax")]]


def test_variable_not_in_var_list_never_trains(results: dict[str, Any]) -> None:
    case = results["not_in_var_list"]
    _site_checks(case)
    assert case["sites"][0]["names"] == ["head"]
    assert case["never_trained"] == ["encoder"]  # frozen is trainable=False: not a finding


def test_tf_gradients_directly(results: dict[str, Any]) -> None:
    case = results["direct_gradients"]
    _site_checks(case)
    site = case["sites"][0]
    assert site["kind"] == "tf1 tf.gradients"
    assert site["names"] == ["w", "v", "x"]
    assert site["barriers"][0] == [["stop_gradient", _line_of("# CUT stop_gradients")]]


def test_control_flow_v1_loops_and_cond(results: dict[str, Any]) -> None:
    case = results["control_flow_v1"]
    _site_checks(case)
    site = case["sites"][0]
    verdicts = dict(zip(site["names"], site["verdicts"]))
    assert verdicts == {"w": "receives", "u": "receives", "skip": "blocked", "emb": "receives",
                        "scale": "receives", "never": "blocked"}
    barriers = dict(zip(site["names"], site["barriers"]))
    assert barriers["skip"] == [["stop_gradient", _line_of("# CUT loop")]]
    assert barriers["never"] == [["not_differentiable", _line_of("# CUT back_prop")]]
    assert not [n for n in case["notes"] if n.startswith("could not ask")]


def test_monitored_training_session(results: dict[str, Any]) -> None:
    case = results["monitored_session"]
    _site_checks(case)
    site = case["sites"][0]
    assert site["names"] == ["w", "bucket"]
    assert site["barriers"][1] == [["none_gradient", _line_of("# CUT mts")]]


def test_tensorflow_2_api_in_graph_mode(results: dict[str, Any]) -> None:
    case = results["v2_api"]
    _site_checks(case)
    site = case["sites"][0]
    assert site["kind"] == "tf1 tf.gradients"
    assert site["verdicts"] == ["receives", "blocked"]
    assert site["barriers"][1] == [["stop_gradient", _line_of("# CUT v2")]]
    assert case["shapes"] == [[2, 1], [2, 1]]  # the variables' shapes, not their handles'


def test_input_pipeline_step_is_not_rerun(results: dict[str, Any]) -> None:
    case = results["input_pipeline"]
    assert case["verification"] is None
    [note] = [n for n in case["notes"] if n.startswith("not verified:")]
    assert "IteratorGetNext" in note and "RandomUniform" in note
    assert case["first_batch"] == [[1.0, 1.0]] * 4  # the script's next batch is still its first
    assert case["restored"] and case["ops_added"] == 0
    assert case["sites"][0]["verdicts"] == ["receives"] and case["sites"][0]["agrees"]


def test_two_optimizers_in_one_run(results: dict[str, Any]) -> None:
    case = results["gan_one_run"]
    _site_checks(case)
    d_site, g_site = case["sites"]
    assert (d_site["names"], d_site["verdicts"]) == (["disc/w", "gen/w"], ["receives", "blocked"])
    assert d_site["barriers"][1] == [["stop_gradient", _line_of("# CUT gan")]]
    assert (g_site["names"], g_site["verdicts"]) == (["gen/w", "scale"], ["receives", "receives"])
    assert case["scale_restored"]


def test_tf_function_and_custom_gradient_in_a_graph(results: dict[str, Any]) -> None:
    case = results["function_and_custom_gradient"]
    _site_checks(case)
    site = case["sites"][0]
    assert site["verdicts"] == ["receives", "blocked", "receives"]
    assert [line for _, line in site["barriers"][1]] == [_line_of("# CUT custom")]


def test_a_variable_flowcheck_cannot_restore_is_never_stepped(results: dict[str, Any]) -> None:
    case = results["hidden_counter"]
    assert case["verification"] is None and case["count_after"] == 0.0
    [note] = [n for n in case["notes"] if n.startswith("not verified:")]
    assert "writes a variable in no collection" in note and "'count'" in note


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    document = tmp_path_factory.mktemp("seed") / "seed_tf1.json"
    done = _flowcheck_run("examples/seed_tf1.py", "-o", str(document))
    return done, json.loads(document.read_text()) if document.exists() else {}


@pytest.mark.slow
def test_flowcheck_run_on_the_seed(seed_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    done, document = seed_run
    assert done.returncode == 1, done.stderr[-2000:]  # w1 gets None at a gradient site: a finding
    out = done.stdout
    line = _line_of("hidden = tf.stop_gradient(tf.matmul(x, w1))", _SEED)
    minimize = _line_of("minimize(loss)", _SEED)
    assert "step 1: Session.run (tf1 Session.run)" in out
    assert f"tf1 Optimizer.minimize at examples/seed_tf1.py:{minimize}" in out
    blocked = out.index("w1", out.index("blocked"))
    assert out.index(f"StopGradient 'StopGradient' (tf.stop_gradient) at examples/seed_tf1.py:{line}") > blocked
    assert "1 source receives a gradient: w2" in out
    assert "verification: agrees" in out
    assert "w1 unchanged: every entry 1" in out
    # The script's own output comes first and its w2 (every entry the same) is flowcheck's too.
    printed = out[out.index("*** after:"):out.index("flowcheck run")].split()
    # NumPy prints the float32's shortest form: read it back as that float32 (as text it can round
    # the other way at the sixth digit, as in -0.7342545).
    value = float(np.float32(printed[-1].rstrip("]")))
    assert f"w2 changed: every entry 1 -> every entry {value:.6g}" in out
    [step] = document["steps"]
    [site] = step["report"]["gradient_sites"]
    assert [(s["name"], s["verdict"], s["tensorflow_none"]) for s in site["sources"]] == [
        ("w1", "blocked", True), ("w2", "receives", False)
    ]
    assert [b["source"]["line"] for b in site["sources"][0]["barriers"]] == [line]


@pytest.mark.slow
def test_flowcheck_run_on_a_minimize_cut_everywhere(tmp_path: Path) -> None:
    script = tmp_path / "cut_everywhere.py"
    script.write_text(
        "import numpy as np\n"
        "import tensorflow.compat.v1 as tf\n"
        "tf.disable_v2_behavior()\n"
        "x = tf.placeholder(tf.float32, [3, 2])\n"
        "w = tf.Variable(tf.ones([2, 1]))\n"
        "loss = tf.reduce_sum(tf.round(tf.matmul(x, w)))\n"
        "train = tf.train.GradientDescentOptimizer(0.1).minimize(loss)\n"
        "with tf.Session() as sess:\n"
        "    sess.run(tf.global_variables_initializer())\n"
        "    sess.run(train, {x: np.ones((3, 2))})\n"
    )
    done = _flowcheck_run(str(script), "--json")
    assert done.returncode == 1, done.stderr[-2000:]
    document = json.loads(done.stdout)
    [step] = document["steps"]
    assert step["kind"] == "tf1 graph"
    [variable] = step["report"]["variables"]
    assert (variable["name"], variable["verdict"]) == ("w", "blocked")
    [barrier] = variable["barriers"]
    assert (barrier["op_type"], barrier["source"]["line"]) == ("Round", 6)
    assert any("No gradients provided for any variable" in f for f in step["failures"])
    [site] = step["report"]["gradient_sites"]
    assert site["kind"] == "tf1 Optimizer.minimize" and site["agrees"]
    assert [s["tensorflow_none"] for s in site["sources"]] == [True]


@pytest.mark.slow
def test_flowcheck_run_on_a_graph_whose_builder_chokes_on_a_none_gradient(tmp_path: Path) -> None:
    script = tmp_path / "clip_none.py"
    script.write_text(
        "import tensorflow.compat.v1 as tf\n"
        "tf.disable_v2_behavior()\n"
        "x = tf.placeholder(tf.float32, [3, 2])\n"
        "w, b = tf.Variable(tf.ones([2, 1])), tf.Variable(tf.zeros([1]))\n"
        "loss = tf.reduce_sum(tf.matmul(x, w) + tf.stop_gradient(b))\n"
        "opt = tf.train.GradientDescentOptimizer(0.1)\n"
        "gvs = opt.compute_gradients(loss)\n"
        "train = opt.apply_gradients([(tf.clip_by_norm(g, 1.0), v) for g, v in gvs])  # raises at b's None\n"
    )
    done = _flowcheck_run(str(script), "--json")
    assert done.returncode == 1, done.stderr[-2000:]
    [step] = json.loads(done.stdout)["steps"]
    [site] = step["report"]["gradient_sites"]
    assert site["kind"] == "tf1 compute_gradients" and site["agrees"]
    assert [s["verdict"] != "receives" for s in site["sources"]] == [s["tensorflow_none"] for s in site["sources"]]
    assert any(s["tensorflow_none"] for s in site["sources"])
    assert any("None values not supported" in note for note in step["report"]["notes"])


@pytest.mark.slow
def test_flowcheck_run_continue_trains_as_python_does(tmp_path: Path) -> None:
    script = tmp_path / "train_tf1.py"
    script.write_text(
        "import numpy as np\n"
        "import tensorflow.compat.v1 as tf\n"
        "tf.disable_v2_behavior()\n"
        "x = tf.placeholder(tf.float32, [4, 2])\n"
        "y = tf.placeholder(tf.float32, [4, 1])\n"
        "w = tf.Variable(tf.ones([2, 1]))\n"
        "loss = tf.reduce_mean(tf.square(tf.matmul(x, w) - y))\n"
        "step = tf.train.get_or_create_global_step()\n"
        "train = tf.train.AdamOptimizer(0.1).minimize(loss, global_step=step)\n"
        "rng = np.random.default_rng(0)\n"
        "with tf.Session() as sess:\n"
        "    sess.run(tf.global_variables_initializer())\n"
        "    for _ in range(3):\n"
        "        sess.run(train, {x: rng.normal(size=(4, 2)), y: rng.normal(size=(4, 1))})\n"
        "    print('final', sess.run(step), sess.run(w).ravel().tolist())\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    plain = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    checked = _flowcheck_run(str(script), "--continue")
    assert checked.returncode == 0, checked.stdout + checked.stderr[-2000:]
    final = [line for line in plain.stdout.splitlines() if line.startswith("final")]
    assert final and final == [line for line in checked.stdout.splitlines() if line.startswith("final")]
    assert "verification: agrees" in checked.stdout


def test_recording_is_undone_and_leaves_tf_function_gradients_alone() -> None:
    import tensorflow as tf
    from tensorflow.python.ops import gradients as gradients_module

    from flowcheck.run.tf1 import graph_mode_recording
    from flowcheck.trace.tf1 import recorded_calls

    before = (tf.gradients, tf.compat.v1.gradients, gradients_module.gradients, tf.compat.v1.hessians)
    w = tf.Variable(2.0)

    @tf.function
    def step() -> Any:
        return tf.compat.v1.gradients(w * w, [w])[0]

    with graph_mode_recording():
        assert tf.compat.v1.gradients is not before[1] and tf.compat.v1.hessians is not before[3]
        assert float(step()) == 4.0
        graph = step.get_concrete_function().graph
    assert (tf.gradients, tf.compat.v1.gradients, gradients_module.gradients, tf.compat.v1.hessians) == before
    assert recorded_calls(graph) == []  # inside a tf.function: the sites recorder's business


def test_a_reason_a_step_cannot_run_twice_is_told_once_with_the_ops_that_give_it() -> None:
    """Three ops drawing random numbers (two dropouts, a noise term) are one reason, not three repeats;
    the truth that the step cannot run again unchanged is TensorFlow's: two runs differ."""
    import tensorflow as tf

    from flowcheck.verify.tf1 import unrepeatable_ops

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 8])
        w = tf.compat.v1.Variable(tf.ones([8, 8]), name="w")
        h = tf.nn.dropout(tf.nn.dropout(tf.matmul(x, w), rate=0.5), rate=0.5)
        out = tf.reduce_sum(h) + tf.random.normal([])
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(w.initializer)
            feed = {x: np.ones((4, 8), np.float32)}
            assert session.run(out, feed) != session.run(out, feed)  # TensorFlow: a second run sees other draws
        reasons = unrepeatable_ops([out.op], [w])
    [reason] = reasons
    assert reason.startswith("the step draws random numbers (") and reason.count("draws random numbers") == 1
    assert reason.count("RandomUniform '") == 2 and reason.count("RandomStandardNormal '") == 1
