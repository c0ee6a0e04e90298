"""A test session calls flowcheck hundreds of times: memory must stay flat and TensorFlow's globals untouched.

The session runs in a fresh interpreter, so that its RSS is its own and no other test's graphs or
caches count. The child reports what it measured and the tests here judge it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

MODELS = 300
WARM_UP = 20
MAX_GROWTH_MB = 200.0

_CHILD = textwrap.dedent(
    '''
    import gc
    import json
    import os
    import random
    import sys
    import weakref

    import numpy as np
    import tensorflow as tf
    import keras

    import flowcheck

    MODELS, WARM_UP = int(sys.argv[1]), int(sys.argv[2])
    PAGE = os.sysconf("SC_PAGE_SIZE")


    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE / 2**20


    def tf_globals():
        graph = tf.compat.v1.get_default_graph()
        return {
            "eager": tf.executing_eagerly(),
            "run_functions_eagerly": tf.config.functions_run_eagerly(),
            "default_graph": id(graph),
            "default_graph_ops": len(graph.get_operations()),
            "random_module": hash(repr(random.getstate())),
            "numpy_random": hash(np.random.get_state()[1].tobytes()),
        }


    def seeded_draw():
        # The global seed and the eager op-seed counter decide this draw: it changes if anything
        # between tf.random.set_seed and the draw reset the seed or ran a random op eagerly.
        return tf.random.uniform([4]).numpy().tolist()


    def make(i):
        """A small model and its loss; the patterns vary so that different ops are analyzed."""
        x = tf.constant(np.full((4, 6), 0.1 * (i % 7 + 1), dtype=np.float32))
        y = tf.constant(np.arange(4) % 3, dtype=tf.int32)
        kind = i % 3
        if kind == 0:
            model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                                      keras.layers.Dropout(0.2), keras.layers.Dense(3)])
            frozen = keras.layers.Dense(3)
            frozen.build((None, 6))
            loss_obj = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

            @tf.function
            def loss_fn(x, y):
                return loss_obj(y, model(x, training=True) + tf.stop_gradient(frozen(x)))

            variables = model.trainable_variables + frozen.trainable_variables
        elif kind == 1:
            model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4),
                                      keras.layers.BatchNormalization(), keras.layers.Dense(1)])

            @tf.function
            def loss_fn(x, y):
                out = model(x, training=True)
                return tf.reduce_mean((out - tf.cast(y[:, None], tf.float32)) ** 2)

            variables = model.trainable_variables
        else:
            w = tf.Variable(tf.ones((6, 3)), name="w")
            v = tf.Variable(tf.ones((6, 3)), name="v")

            @tf.function
            def loss_fn(x, y):
                picked = tf.cast(tf.argmax(tf.matmul(x, v), axis=-1), tf.float32)
                return tf.reduce_sum(tf.matmul(x, w)) + tf.reduce_sum(picked)

            variables = [w, v]
        return loss_fn, (x, y), variables


    def truth(loss_fn, args, variables):
        with tf.GradientTape() as tape:
            loss = loss_fn(*args)
        return [g is not None for g in tape.gradient(loss, variables)]


    tf.random.set_seed(1234)
    expected_draw = seeded_draw()
    before = tf_globals()
    rss = []
    disagreements = []
    draws_changed = []
    globals_changed = []
    alive = []
    for i in range(MODELS):
        loss_fn, args, variables = make(i)
        state = tf_globals()
        tf.random.set_seed(1234)
        report = flowcheck.analyze(loss_fn, *args)
        check = report.verify()
        if seeded_draw() != expected_draw:
            draws_changed.append(i)
        if tf_globals() != state:
            globals_changed.append([i, state, tf_globals()])
        if not check.agrees:
            disagreements.append(i)
        elif i % 5 == 0:  # the tape re-traces the function: only a sample, to keep the session short
            if [report.receives_gradient(v) for v in variables] != truth(loss_fn, args, variables):
                disagreements.append(i)
        if i % 25 == 0:
            # What one analysis holds must die with the report.
            refs = [weakref.ref(report), weakref.ref(report.graph), weakref.ref(report._traced.concrete.graph)]
        del report, check, loss_fn, args, variables
        if i % 25 == 0:
            gc.collect()
            alive.append(sum(r() is not None for r in refs))
        if i + 1 == WARM_UP or i + 1 == MODELS or (i + 1) % 20 == 0:
            gc.collect()
            rss.append([i + 1, rss_mb()])
    print("RESULT " + json.dumps({
        "rss": rss, "disagreements": disagreements, "draws_changed": draws_changed,
        "globals_changed": globals_changed[:3], "before": before, "after": tf_globals(), "alive": alive,
    }))
    '''
)


@pytest.fixture(scope="module")
def session() -> dict[str, Any]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(MODELS), str(WARM_UP)],
        capture_output=True, text=True, env=env, timeout=1800, check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"child failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    return result


@pytest.mark.slow
def test_memory_stays_flat_over_300_analyses(session: dict[str, Any]) -> None:
    rss = dict((n, mb) for n, mb in session["rss"])
    growth = rss[MODELS] - rss[WARM_UP]
    assert growth <= MAX_GROWTH_MB, f"RSS grew {growth:.0f} MB from model {WARM_UP} to {MODELS}: {session['rss']}"


@pytest.mark.slow
def test_a_dropped_report_releases_its_graphs(session: dict[str, Any]) -> None:
    assert session["alive"] and not any(session["alive"]), session["alive"]


@pytest.mark.slow
def test_every_analysis_agrees_with_the_tape(session: dict[str, Any]) -> None:
    assert session["disagreements"] == []


@pytest.mark.slow
def test_tensorflow_global_state_is_untouched(session: dict[str, Any]) -> None:
    assert session["globals_changed"] == []
    # Across the whole session (the test's own model building may move Python's random state).
    assert session["before"]["eager"] is True and session["after"]["eager"] is True
    for key in ("run_functions_eagerly", "default_graph", "default_graph_ops"):
        assert session["after"][key] == session["before"][key], key
    assert session["draws_changed"] == [], "analyze + verify changed the seeded random sequence"
