"""Training steps under ``tf.distribute`` strategies: verdicts per user variable, checked by the tape.

Two logical CPU devices must be configured before TensorFlow runs its first op, which the rest of
the test session has long done, so the cases run in a fresh interpreter. The child computes
flowcheck's answer and the tape's (watching every variable), and the tests here compare them:
captured mirrored variables on two devices and one, ``OneDeviceStrategy``, sync-on-read and Keras
metric variables, a ``tf.Module``, arguments, Keras models, and plain callables called eagerly.
Two workers of ``MultiWorkerMirroredStrategy`` are in ``tests/test_multi_worker.py``.
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
        return [[np.array(c.numpy(), copy=True) for c in components(v)] for v in variables]


    def tape_truth(step, args, variables):
        # The truth: TensorFlow's own answer for the whole distributed step, per user variable.
        tensors = [backing(v) for v in variables]
        floats = [t for t in tensors if t.dtype.is_floating]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(floats)
            loss = step(*args)
        grads = dict(zip((id(t) for t in floats), tape.gradient(loss, floats)))
        return [grads.get(id(t)) is not None for t in tensors]


    def components(v):
        return list(getattr(backing(v), "_values", None) or [backing(v)])


    def run(name, step, args, variables, target=None, strategy=strategy):
        report = flowcheck.analyze(target or step, *args)
        results = [report.result(v) for v in variables]
        found_by = [
            sorted(
                {report.result(c).name for c in components(v)}  # each replica's component
                | {report.result(c.name.split(":")[0]).name for c in components(v)[1:]}  # its name
                | {report.result(r.name).name}
            )
            for v, r in zip(variables, results)
        ]
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
            "components": [[c.name.split(":")[0] for c in components(v)] for v in variables],
            "found_by": found_by,
            "variables": [r.name for r in results],
            "reported": [r.name for r in report.variables],
            "verdicts": [r.verdict.value for r in results],
            "predicted": [r.receives for r in results],
            "truth": truth,
            "barriers": [[b.kind.value for b in r.barriers] for r in results],
            "eager_difference": [r.eager_difference for r in results],
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


    # The shapes of the bug report: plain tf.Variables made in strategy.scope(), captured by the
    # step through a dict or an object's attribute (which flowcheck cannot search), one of them
    # never read, under two devices, one device and OneDeviceStrategy.
    class Settings:
        pass


    def captured_step(strategy):
        with strategy.scope():
            params = {
                "head": tf.Variable(tf.ones((4, 1)), name="head"),
                "frozen": tf.Variable(tf.ones((4, 1)), name="frozen"),
                "never": tf.Variable(tf.ones((2,)), name="never"),
            }
            settings = Settings()
            settings.gain = tf.Variable(2.0, name="gain")

        @tf.function
        def step(x):
            def replica(x):
                out = tf.matmul(x, params["head"]) * settings.gain + tf.stop_gradient(tf.matmul(x, params["frozen"]))
                return tf.reduce_sum(out) / strategy.num_replicas_in_sync

            per_replica = strategy.run(replica, args=(x,))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        return step, [*params.values(), settings.gain]


    def captured_cases():
        for name, other in [
            ("captured_two", strategy),
            ("captured_one", tf.distribute.MirroredStrategy(["/cpu:0"])),
            ("one_device", tf.distribute.OneDeviceStrategy("/cpu:0")),
        ]:
            step, variables = captured_step(other)
            cases.append(run(name, step, (x,), variables, strategy=other))


    captured_cases()

    # Sync-on-read variables read by the loss: a tf.Variable(synchronization=ON_READ) and a Keras
    # metric's total and count (non-trainable: only a watched tape gives them a gradient).
    with strategy.scope():
        seen = tf.Variable(
            1.0, synchronization=tf.VariableSynchronization.ON_READ, aggregation=tf.VariableAggregation.SUM, name="seen"
        )
        steps = tf.Variable(
            3.0, synchronization=tf.VariableSynchronization.ON_READ, aggregation=tf.VariableAggregation.MEAN, name="steps"
        )
        metric = keras.metrics.Mean(name="running")
        metric.update_state([1.0, 3.0])
        weight = tf.Variable(tf.ones((4, 1)), name="weight")


    @tf.function
    def sync_step(x):
        def replica(x):
            penalty = 0.1 * metric.variables[0] / (metric.variables[1] + 1.0) + 0.01 * seen
            return tf.reduce_mean(tf.matmul(x, weight)) + penalty

        per_replica = strategy.run(replica, args=(x,))
        # Read in cross-replica context, a sync-on-read variable aggregates its replicas' values.
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None) + 0.5 * steps


    cases.append(run("sync_on_read", sync_step, (x,), [seen, steps, *metric.variables, weight]))

    # A tf.Module made in the scope whose tf.function method reads two of its three variables.
    class Regressor(tf.Module):
        def __init__(self):
            super().__init__(name="regressor")
            self.w = tf.Variable(tf.ones((4, 1)), name="w")
            self.b = tf.Variable(tf.zeros((1,)), name="b")
            self.spare = tf.Variable(tf.zeros((1,)), name="spare")

        @tf.function
        def step(self, x, y):
            def replica(x, y):
                pred = tf.matmul(x, self.w) + tf.cast(tf.cast(self.b, tf.int32), tf.float32)
                return tf.reduce_mean((pred - y) ** 2) / strategy.num_replicas_in_sync

            per_replica = strategy.run(replica, args=(x, y))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)


    with strategy.scope():
        regressor = Regressor()
    cases.append(run("module", regressor.step, (x, y), [regressor.w, regressor.b, regressor.spare]))

    # Mirrored variables passed as arguments.
    with strategy.scope():
        kernel = tf.Variable(tf.ones((4, 1)), name="kernel")
        offset = tf.Variable(tf.ones((1,)), name="offset")
        ignored = tf.Variable(tf.ones((1,)), name="ignored")


    @tf.function
    def argument_step(x, kernel, offset, ignored):
        def replica(x):
            return tf.reduce_sum(tf.matmul(x, kernel) + tf.round(offset))

        per_replica = strategy.run(replica, args=(x,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)


    cases.append(run("argument", argument_step, (x, kernel, offset, ignored), [kernel, offset, ignored]))

    # A compiled Keras model made in the scope, analyzed as a model (its compiled loss).
    with strategy.scope():
        compiled = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="hidden"), keras.layers.Dense(1, name="out")], name="compiled")
        compiled.compile(optimizer="sgd", loss="mse")


    def compiled_loss(x, y):
        return compiled.compute_loss(x=x, y=y, y_pred=compiled(x, training=True), training=True)


    cases.append(run("keras_compiled", compiled_loss, (x, y), compiled.variables, target=compiled))

    # The replica function at module level, as tutorials write it: the step names only it.
    with strategy.scope():
        helper_params = {"kernel": tf.Variable(tf.ones((4, 1)), name="helper_kernel"),
                         "spare": tf.Variable(tf.ones((1,)), name="helper_spare")}


    def helper_replica(x):
        return tf.reduce_sum(tf.matmul(x, helper_params["kernel"]))


    @tf.function
    def helper_step(x):
        per_replica = strategy.run(helper_replica, args=(x,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)


    cases.append(run("helper", helper_step, (x,), list(helper_params.values())))

    # Plain callables are judged as called, eagerly: under MirroredStrategy strategy.run then runs
    # each replica on a thread of its own, which the tape around the call does not record.
    def eager_cases():
        for name, other in [("eager_two", strategy), ("eager_one_device", tf.distribute.OneDeviceStrategy("/cpu:0"))]:
            step, variables = captured_step(other)
            cases.append(run(name, step.python_function, (x,), variables, strategy=other))


    eager_cases()

    # Does this flowcheck judge by the watched tape (a non-trainable variable read differentiably)?
    probe = tf.Variable(1.0, trainable=False, name="probe")
    watched_verdict = flowcheck.analyze(tf.function(lambda: probe * 2.0)).receives_gradient(probe)
    print("RESULTS " + json.dumps({"cases": cases, "watched_verdict": watched_verdict}))
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
    results = json.loads(lines[-1][len("RESULTS "):])
    return {case["name"]: dict(case, watched_verdict=results["watched_verdict"]) for case in results["cases"]}


# Case name -> (replicas, whether its variables are distributed values).
SHAPES = {
    "seed": (2, True), "keras": (2, True), "sparse": (2, True), "captured_two": (2, True),
    "captured_one": (1, True), "one_device": (1, False), "sync_on_read": (2, True), "module": (2, True),
    "argument": (2, True), "keras_compiled": (2, True), "eager_two": (2, True), "eager_one_device": (1, False),
    "helper": (2, True),
}
# Cases whose loss reads non-trainable variables: their truth is the watched tape's, which
# flowcheck follows once its verdict is the watched one (the child probes which it is).
WATCHED_ONLY = {"sync_on_read"}


@pytest.mark.parametrize("name", SHAPES)
def test_prediction_agrees_with_the_tape_per_user_variable(cases: dict[str, dict[str, Any]], name: str) -> None:
    case = cases[name]
    replicas, distributed = SHAPES[name]
    assert case["replicas"] == replicas
    assert all(m == distributed for m in case["mirrored"]), "the variables must be what the strategy makes"
    if name in WATCHED_ONLY and not case["watched_verdict"]:
        pytest.xfail("non-trainable variables read by the loss: needs the watched-tape verdict (issue 10)")
    wrong = [
        f"{v}: predicted {'receives' if p else 'no gradient'}, tape {'gradient' if t else 'None'}"
        for v, p, t in zip(case["variables"], case["predicted"], case["truth"])
        if p != t
    ]
    assert not wrong, wrong


@pytest.mark.parametrize("name", SHAPES)
def test_one_result_per_user_variable_not_per_replica(cases: dict[str, dict[str, Any]], name: str) -> None:
    case = cases[name]
    assert sorted(case["reported"]) == sorted(case["variables"])
    assert not [n for n in case["reported"] if "replica" in n]
    # The distributed object, each of its per-replica components, and its name: one result.
    assert case["found_by"] == [[n] for n in case["variables"]]
    replicas, distributed = SHAPES[name]
    assert all(len(c) == (replicas if distributed else 1) for c in case["components"]), case["components"]


def test_variables_the_step_never_reads_are_listed_unused(cases: dict[str, dict[str, Any]]) -> None:
    unread = {
        "captured_two": "never", "captured_one": "never", "one_device": "never", "module": "spare",
        "argument": "ignored", "helper": "helper_spare",
    }
    for name, variable in unread.items():
        verdicts = dict(zip(cases[name]["variables"], cases[name]["verdicts"]))
        assert variable in cases[name]["reported"] and verdicts[variable] == "unused", (name, verdicts)
        assert cases[name]["truth"][cases[name]["variables"].index(variable)] is False


@pytest.mark.parametrize("name", SHAPES)
def test_verify_under_the_strategy_agrees_and_restores_every_replica(cases: dict[str, dict[str, Any]], name: str) -> None:
    case = cases[name]
    assert case["agrees"] and case["adam_agrees"], case
    assert case["problems"] == []
    assert case["restored"], "every replica's copy of every variable is restored bit for bit"
    moved = {v: changed for v, (gradient, changed) in case["steps"].items() if gradient == "nonzero"}
    assert all(moved.values()), f"a non-zero gradient moves its variable in one SGD step: {moved}"
    assert moved or not any(case["truth"]), "some variable receives, so some variable moves"


def test_barriers_name_the_cut_once_for_all_replicas(cases: dict[str, dict[str, Any]]) -> None:
    for name, case in cases.items():  # each replica (or component read) has its own op
        for variable, kinds, sources in zip(case["variables"], case["barriers"], case["sources"]):
            found = [(kind, where and where[0]) for kind, where in zip(kinds, sources)]
            assert len(found) == len(set(found)), (name, variable, found)
    seed = dict(zip(cases["seed"]["variables"], cases["seed"]["barriers"]))
    assert seed["w1"] and set(seed["w1"]) == {"stop_gradient"}
    keras_case = dict(zip(cases["keras"]["variables"], zip(cases["keras"]["verdicts"], cases["keras"]["barriers"])))
    assert keras_case["frozen/kernel"] == ("blocked", ["stop_gradient"])  # not once per replica
    assert keras_case["picker/kernel"][0] == "blocked" and keras_case["picker/kernel"][1]
    # Only its static shape is read, which TensorFlow folds into a constant: it feeds nothing.
    sparse = dict(zip(cases["sparse"]["variables"], zip(cases["sparse"]["verdicts"], cases["sparse"]["barriers"])))
    assert sparse["unused"] == ("unused", [])
    line = next(i for i, text in enumerate(_CHILD.splitlines(), 1) if "tf.stop_gradient(tf.matmul(x, params" in text)
    for name in ("captured_two", "captured_one", "one_device"):
        case = cases[name]
        frozen = case["variables"].index("frozen")
        assert (case["verdicts"][frozen], case["barriers"][frozen]) == ("blocked", ["stop_gradient"]), name
        assert [where[0] for where in case["sources"][frozen]] == [line]


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


def test_an_eager_call_under_mirrored_strategy_says_why_the_tape_gets_nothing(cases: dict[str, dict[str, Any]]) -> None:
    eager, traced = cases["eager_two"], cases["captured_two"]
    assert not any(eager["truth"]) and any(traced["truth"]), "TensorFlow's own answers differ so"
    differs = [d for d, p, t in zip(eager["eager_difference"], eager["predicted"], traced["predicted"]) if p != t]
    assert differs and all(d and "strategy.run runs each replica on a thread of its own" in d for d in differs)
    # OneDeviceStrategy runs the replica function on the caller's thread: the eager tape sees it.
    assert cases["eager_one_device"]["truth"] == cases["one_device"]["truth"]
    assert cases["eager_one_device"]["eager_difference"] == [None] * len(cases["eager_one_device"]["variables"])
