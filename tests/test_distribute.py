"""Training steps under ``tf.distribute.MirroredStrategy``: verdicts per user variable, checked by the tape.

Two logical CPU devices must be configured before TensorFlow runs its first op, which the rest of
the test session has long done, so the cases run in a fresh interpreter. The child computes
flowcheck's answer and the tape's answer, and the tests here compare them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

_CHILD = textwrap.dedent(
    '''
    import json

    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras

    import flowcheck

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x = tf.random.stateless_normal((8, 4), seed=(1, 2))
    y = tf.random.stateless_normal((8, 1), seed=(3, 4))
    labels = tf.constant([0, 1, 2, 0, 1, 2, 0, 1])


    def backing(v):
        return v.value if isinstance(v, keras.Variable) else v


    def snapshot(variables):
        return [[np.array(c.numpy(), copy=True) for c in backing(v)._values] for v in variables]


    def tape_truth(step, args, variables):
        # The truth: TensorFlow's own answer for the whole distributed step, per user variable.
        tensors = [backing(v) for v in variables]
        floats = [t for t in tensors if t.dtype.is_floating]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(floats)
            loss = step(*args)
        grads = dict(zip((id(t) for t in floats), tape.gradient(loss, floats)))
        return [grads.get(id(t)) is not None for t in tensors]


    def run(name, step, args, variables):
        report = flowcheck.analyze(step, *args)
        results = [report.result(v) for v in variables]
        before = snapshot(variables)
        check = report.verify(optimizer="sgd", learning_rate=0.1)
        adam = report.verify(optimizer="adam")
        restored = all(
            np.array_equal(a, b) for old, new in zip(before, snapshot(variables)) for a, b in zip(old, new)
        )
        truth = tape_truth(step, args, variables)
        return {
            "name": name,
            "replicas": strategy.num_replicas_in_sync,
            "mirrored": [isinstance(backing(v), tf.distribute.DistributedValues) for v in variables],
            "variables": [r.name for r in results],
            "reported": [r.name for r in report.variables],
            "verdicts": [r.verdict.value for r in results],
            "predicted": [r.receives for r in results],
            "truth": truth,
            "barriers": [[b.kind.value for b in r.barriers] for r in results],
            "sources": [[b.source and [b.source.line, b.source.code] for b in r.barriers] for r in results],
            "agrees": check.agrees,
            "adam_agrees": adam.agrees,
            "problems": list(check.problems) + list(adam.problems),
            "steps": {c.name: [c.gradient.value, c.changed] for c in check.variables},
            "restored": restored,
        }


    cases = []

    # The seed under the strategy: tf.Variables made in strategy.scope(), a per-replica loss.
    with strategy.scope():
        w1 = tf.Variable(tf.ones((4, 3)), name="w1")
        w2 = tf.Variable(tf.ones((3, 1)), name="w2")
        bias = tf.Variable(tf.zeros((1,)), name="bias")


    @tf.function
    def seed_step(x, y):
        def replica(x, y):
            hidden = tf.stop_gradient(tf.matmul(x, w1))
            out = tf.matmul(hidden, w2)
            return tf.reduce_mean((out - y) ** 2) / strategy.num_replicas_in_sync + 0.0 * tf.cast(tf.size(bias), tf.float32)

        per_replica = strategy.run(replica, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)


    cases.append(run("seed", seed_step, (x, y), [w1, w2, bias]))

    # A Keras model made in the scope: BatchNormalization (moving statistics are only assigned),
    # a frozen branch behind stop_gradient, an integer argmax path, and a plain tf.Variable.
    with strategy.scope():
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(8, name="d1"), keras.layers.BatchNormalization(name="bn"),
             keras.layers.Dense(3, name="head")],
            name="net",
        )
        frozen = keras.layers.Dense(1, name="frozen")
        frozen.build((None, 4))
        picker = keras.layers.Dense(3, name="picker")
        picker.build((None, 4))
        scale = tf.Variable(1.0, name="scale")
        loss_obj = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")


    @tf.function
    def keras_step(x, labels):
        def replica(x, labels):
            logits = model(x, training=True) * scale + tf.stop_gradient(frozen(x))
            choice = tf.cast(tf.argmax(picker(x), axis=-1), tf.float32)  # argmax: no gradient to picker
            loss = loss_obj(labels, logits) + 0.01 * tf.reduce_sum(choice)
            return loss / tf.cast(tf.shape(x)[0] * strategy.num_replicas_in_sync, tf.float32)

        per_replica = strategy.run(replica, args=(x, labels))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)


    cases.append(run("keras", keras_step, (x, labels), model.variables + frozen.variables + picker.variables + [scale]))

    # Replicas reading their own slice of a distributed dataset batch, the usual custom loop.
    with strategy.scope():
        embedding = keras.layers.Embedding(10, 4, name="embedding")
        embedding.build((None,))
        proj = tf.Variable(tf.ones((4, 1)), name="proj")
        unused = tf.Variable(tf.ones((2,)), name="unused")
    ids = tf.constant([[1, 2], [3, 4], [5, 6], [7, 8]])
    dataset = tf.data.Dataset.from_tensor_slices(ids).batch(4)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))


    @tf.function
    def sparse_step(batch):
        def replica(ids):
            out = tf.matmul(tf.reduce_sum(embedding(ids), axis=1), proj)
            return tf.reduce_sum(out) + 0.0 * tf.reduce_sum(tf.cast(tf.shape(unused), tf.float32))

        per_replica = strategy.run(replica, args=(batch,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)


    cases.append(run("sparse", sparse_step, (batch,), embedding.variables + [proj, unused]))
    print("RESULTS " + json.dumps(cases))
    '''
)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    script = tmp_path_factory.mktemp("distribute") / "steps.py"  # a file: AutoGraph converts its functions
    script.write_text(_CHILD)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return {case["name"]: case for case in json.loads(lines[-1][len("RESULTS "):])}


@pytest.mark.parametrize("name", ["seed", "keras", "sparse"])
def test_prediction_agrees_with_the_tape_per_user_variable(cases: dict[str, dict[str, Any]], name: str) -> None:
    case = cases[name]
    assert case["replicas"] == 2 and all(case["mirrored"]), "the variables must really be distributed"
    wrong = [
        f"{v}: predicted {'receives' if p else 'no gradient'}, tape {'gradient' if t else 'None'}"
        for v, p, t in zip(case["variables"], case["predicted"], case["truth"])
        if p != t
    ]
    assert not wrong, wrong


@pytest.mark.parametrize("name", ["seed", "keras", "sparse"])
def test_one_result_per_user_variable_not_per_replica(cases: dict[str, dict[str, Any]], name: str) -> None:
    case = cases[name]
    assert sorted(case["reported"]) == sorted(case["variables"])
    assert not [n for n in case["reported"] if "replica" in n]


@pytest.mark.parametrize("name", ["seed", "keras", "sparse"])
def test_verify_under_the_strategy_agrees_and_restores_every_replica(cases: dict[str, dict[str, Any]], name: str) -> None:
    case = cases[name]
    assert case["agrees"] and case["adam_agrees"], case
    assert case["problems"] == []
    assert case["restored"], "every replica's copy of every variable is restored bit for bit"
    moved = {v: changed for v, (gradient, changed) in case["steps"].items() if gradient == "nonzero"}
    assert moved and all(moved.values()), f"a non-zero gradient moves its variable in one SGD step: {moved}"


def test_barriers_name_the_cut_once_for_all_replicas(cases: dict[str, dict[str, Any]]) -> None:
    seed = dict(zip(cases["seed"]["variables"], cases["seed"]["barriers"]))
    assert seed["w1"] and set(seed["w1"]) == {"stop_gradient"}
    keras_case = dict(zip(cases["keras"]["variables"], zip(cases["keras"]["verdicts"], cases["keras"]["barriers"])))
    assert keras_case["frozen/kernel"] == ("blocked", ["stop_gradient"])  # not once per replica
    assert keras_case["picker/kernel"][0] == "blocked" and keras_case["picker/kernel"][1]
    # Only its static shape is read, which TensorFlow folds into a constant: it feeds nothing.
    sparse = dict(zip(cases["sparse"]["variables"], zip(cases["sparse"]["verdicts"], cases["sparse"]["barriers"])))
    assert sparse["unused"] == ("unused", [])


def test_barriers_made_on_replica_threads_name_the_users_line(cases: dict[str, dict[str, Any]]) -> None:
    # strategy.run traces each replica on its own thread, where TensorFlow leaves AutoGraph's
    # generated frames in the ops' tracebacks: flowcheck maps them back to the user's file.
    seed = dict(zip(cases["seed"]["variables"], cases["seed"]["sources"]))
    line = next(i for i, text in enumerate(_CHILD.splitlines(), 1) if "hidden = tf.stop_gradient(" in text)
    assert seed["w1"] == [[line, "hidden = tf.stop_gradient(tf.matmul(x, w1))"]]
    keras_case = dict(zip(cases["keras"]["variables"], cases["keras"]["sources"]))
    assert [code for _, code in keras_case["frozen/kernel"]] == [
        "logits = model(x, training=True) * scale + tf.stop_gradient(frozen(x))"
    ]
