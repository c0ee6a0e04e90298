"""``MultiWorkerMirroredStrategy`` on two local workers: each worker's analysis agrees with its tape.

Two processes on 127.0.0.1, each given ``TF_CONFIG`` (a cluster of two workers on ports chosen
now by binding port 0), run the same script: variables made in ``strategy.scope()`` (captured
``tf.Variable``s and a Keras model), the worker's share of the loss (``strategy.run`` with the
local results summed, what a worker differentiates), and a step that reduces across workers
(``CollectiveReduceV2`` has no gradient: the tape raises). Each worker computes flowcheck's answer
and its own watched tape's, and verifies, which applies gradients through a collective
all-reduce; the test compares. Both workers are ended by the test, whatever happens.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

TIMEOUT = 180.0  # seconds for both workers together, start-up included

_WORKER = textwrap.dedent(
    '''
    import json
    import os

    import numpy as np
    import tensorflow as tf
    import keras

    import flowcheck

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    keras.utils.set_random_seed(0)  # the same initial values on both workers
    with strategy.scope():
        params = {
            "head": tf.Variable(tf.ones((4, 1)), name="head"),
            "frozen": tf.Variable(tf.ones((4, 1)), name="frozen"),
            "never": tf.Variable(tf.ones((2,)), name="never"),
        }
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(3, name="d1"), keras.layers.Dense(1, name="out")], name="net"
        )
        teacher = keras.layers.Dense(1, name="teacher")
        teacher.build((None, 4))
    x = tf.random.stateless_normal((4, 4), seed=(task, 1))  # each worker its own shard
    y = tf.random.stateless_normal((4, 1), seed=(task, 2))
    variables = [*params.values(), *model.variables, *teacher.variables]


    def make_step(across_workers):
        @tf.function
        def step(x, y):
            def replica(x, y):
                pred = model(x, training=True) + tf.matmul(x, params["head"])
                target = y + tf.stop_gradient(teacher(x) + tf.matmul(x, params["frozen"]))
                return tf.reduce_mean((pred - target) ** 2) / strategy.num_replicas_in_sync

            per_replica = strategy.run(replica, args=(x, y))
            if across_workers:
                return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
            return tf.add_n(strategy.experimental_local_results(per_replica))

        return step


    def backing(v):
        return v.value if isinstance(v, keras.Variable) else v


    def components(v):
        return list(getattr(backing(v), "_values", None) or [backing(v)])


    def snapshot():
        return [np.array(c.numpy(), copy=True) for v in variables for c in components(v)]


    def tape_truth(step):
        tensors = [backing(v) for v in variables]
        try:  # a tf.function called under a tape builds its gradient then: the call raises too
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(tensors)
                loss = step(x, y)
            return [g is not None for g in tape.gradient(loss, tensors)], None
        except LookupError as exc:
            return None, str(exc).split(".")[0]


    def run(step):
        before = snapshot()
        report = flowcheck.analyze(step, x, y)
        checks = [report.verify(optimizer="sgd", learning_rate=0.1), report.verify(optimizer="adam")]
        restored = all(np.array_equal(a, b) for a, b in zip(before, snapshot()))
        truth, error = tape_truth(step)
        results = [report.result(v) for v in variables]
        return {
            "replicas": strategy.num_replicas_in_sync,
            "mirrored": [isinstance(backing(v), tf.distribute.DistributedValues) for v in variables],
            "variables": [r.name for r in results],
            "reported": [r.name for r in report.variables],
            "found_by": [sorted({report.result(c).name for c in components(v)}) for v in variables],
            "verdicts": [r.verdict.value for r in results],
            "predicted": [r.receives for r in results],
            "truth": truth,
            "tape_error": error,
            "gradient_errors": [b.op_type for b in report.gradient_errors],
            "barriers": [[b.kind.value for b in r.barriers] for r in results],
            "agrees": [c.agrees for c in checks],
            "problems": [p for c in checks for p in c.problems],
            "moved": {c.name: c.changed for c in checks[0].variables if c.gradient.value == "nonzero"},
            "restored": restored,
        }


    print("RESULTS " + json.dumps({"task": task, "local": run(make_step(False)), "global": run(make_step(True))}), flush=True)
    '''
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_workers(script: Path) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each worker; both are ended before this returns."""
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(2)]}
    procs: list[subprocess.Popen[str]] = []
    try:
        for index in range(2):
            config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(config))
            procs.append(subprocess.Popen(
                [sys.executable, str(script)], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            ))
        deadline = time.monotonic() + TIMEOUT
        outputs = []
        for proc in procs:
            try:
                outputs.append(proc.communicate(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                pytest.fail(f"the two workers did not finish within {TIMEOUT:.0f} s (both are ended)")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return [(proc.returncode, out, err) for proc, (out, err) in zip(procs, outputs)]


# Two TensorFlow processes, a gRPC cluster and collective all-reduces: about 20 s on two cores.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    script = tmp_path_factory.mktemp("multi_worker") / "worker.py"  # a file: AutoGraph converts its functions
    script.write_text(_WORKER)
    runs = _run_workers(script)
    if any("address already in use" in err.lower() for _, _, err in runs):
        runs = _run_workers(script)  # a port was taken between choosing it and binding it: new ports
    results = []
    for code, out, err in runs:
        lines = [line for line in out.splitlines() if line.startswith("RESULTS ")]
        assert code == 0 and lines, f"worker failed ({code}):\n{out}\n{err[-4000:]}"
        results.append(json.loads(lines[-1][len("RESULTS "):]))
    return results


def test_both_workers_ran_a_two_replica_strategy(workers: list[dict[str, Any]]) -> None:
    assert sorted(w["task"] for w in workers) == [0, 1]
    for w in workers:
        for step in ("local", "global"):
            assert w[step]["replicas"] == 2 and all(w[step]["mirrored"]), "the variables must be mirrored"


def test_each_workers_analysis_agrees_with_its_tape(workers: list[dict[str, Any]]) -> None:
    for w in workers:
        local = w["local"]
        assert local["tape_error"] is None and local["gradient_errors"] == []
        wrong = [v for v, p, t in zip(local["variables"], local["predicted"], local["truth"]) if p != t]
        assert not wrong, (w["task"], wrong)
        verdicts = dict(zip(local["variables"], local["verdicts"]))
        assert verdicts["head"] == "receives" and verdicts["never"] == "unused"
        assert verdicts["frozen"] == verdicts["teacher/kernel"] == "blocked"


def test_a_reduce_across_workers_is_predicted_to_make_the_tape_raise(workers: list[dict[str, Any]]) -> None:
    for w in workers:
        step = w["global"]
        assert step["truth"] is None and "CollectiveReduceV2" in step["tape_error"]
        assert step["gradient_errors"] == ["CollectiveReduceV2"]


def test_one_row_per_user_variable_on_every_worker(workers: list[dict[str, Any]]) -> None:
    for w in workers:
        local = w["local"]
        assert sorted(local["reported"]) == sorted(local["variables"])
        assert local["found_by"] == [[n] for n in local["variables"]]


def test_verify_agrees_and_restores_every_variable_on_every_worker(workers: list[dict[str, Any]]) -> None:
    for w in workers:
        for name in ("local", "global"):
            step = w[name]
            assert step["agrees"] == [True, True] and step["problems"] == [], (w["task"], name, step)
            assert step["restored"], f"worker {w['task']}: {name} step left a variable changed"
        assert w["local"]["moved"] and all(w["local"]["moved"].values())
