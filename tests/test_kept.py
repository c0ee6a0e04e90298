"""The oracle's answers kept between runs: used by the next process, never for the user's own code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent('''\
    import json, sys
    import tensorflow as tf
    import flowcheck
    from flowcheck.graph import ops

    probed = []
    original = ops.GradientOracle._call
    ops.GradientOracle._call = lambda self, fn, op: probed.append(op.type) or original(self, fn, op)

    w1, w2 = tf.Variable(tf.ones((2, 3)), name="w1"), tf.Variable(tf.ones((3, 1)), name="w2")

    @tf.RegisterGradient("FlowcheckTestOwnSquare")
    def _own(op, grad):
        return None  # the user's own gradient: blocks w2

    @tf.function
    def loss(x):
        hidden = tf.nn.silu(tf.cast(tf.cast(x @ w1, tf.int32), tf.float32) + x @ w1)
        with tf.compat.v1.get_default_graph().gradient_override_map({"Square": "FlowcheckTestOwnSquare"}):
            return tf.reduce_sum(tf.square(hidden @ w2))

    x = tf.ones((4, 2))
    with tf.GradientTape() as tape:
        value = loss(x)
    truth = [g is not None for g in tape.gradient(value, [w1, w2])]
    report = flowcheck.analyze(loss, x)
    print(json.dumps({"truth": truth, "verdicts": [report.receives_gradient(v) for v in (w1, w2)], "probed": probed}))
''')


def _run(tmp_path: Path, store: str) -> dict[str, object]:
    path = tmp_path / "model.py"
    path.write_text(SCRIPT, encoding="utf-8")
    env = {**os.environ, "FLOWCHECK_CACHE_DIR": store}
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_the_next_process_uses_the_kept_answers_and_the_users_gradient_is_probed_every_time(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first, second = _run(tmp_path, str(store)), _run(tmp_path, str(store))
    assert first["verdicts"] == first["truth"] and second["verdicts"] == second["truth"]
    (kept,) = store.glob("oracle-*.json")
    keys = json.loads(kept.read_text(encoding="utf-8"))["answers"]
    assert keys and not any(str(tmp_path) in key for key in keys)  # nothing of the user's code is kept
    assert "Square" in first["probed"] and second["probed"] == ["Square"]  # only the user's gradient again


@pytest.mark.slow
def test_an_unreadable_store_is_passed_over_and_off_keeps_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    first = _run(tmp_path, str(store))
    (kept,) = store.glob("oracle-*.json")
    kept.write_text("{not json", encoding="utf-8")
    again = _run(tmp_path, str(store))
    assert again["verdicts"] == again["truth"] and again["probed"] == first["probed"]
    assert json.loads(kept.read_text(encoding="utf-8"))["format"] == 1  # written anew
    off = _run(tmp_path, "off")
    assert off["verdicts"] == off["truth"]


@pytest.mark.parametrize("text", ["", "[]", '{"format": 99, "answers": {}}'])
def test_a_store_of_another_shape_is_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    from flowcheck.graph import kept

    monkeypatch.setenv("FLOWCHECK_CACHE_DIR", str(tmp_path))
    where = kept.path()
    assert where is not None and where.parent == tmp_path
    where.write_text(text, encoding="utf-8")
    assert kept.load() == {}
