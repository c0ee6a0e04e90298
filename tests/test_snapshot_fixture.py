"""Snapshots in users' tests: the ``gradient_flow_snapshot`` fixture through ``pytester``, and
``GradientFlowCheck(snapshot=...)`` in ``fit``."""

from __future__ import annotations

import os
import textwrap
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

# Imported here so that pytester's in-process runs find them loaded: TensorFlow cannot be
# imported twice in one process.
import flowcheck.testing  # noqa: F401
import tensorflow as tf
from flowcheck.keras import GradientFlowCheck, GradientFlowWarning
from flowcheck.snapshot.diff import read_snapshot
from flowcheck.testing import GradientFlowAssertionError

pytest_plugins = ["pytester"]

USERS_TEST = textwrap.dedent(
    '''
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")], name="encoder")
    head = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="out")], name="head")
    x = tf.ones((3, 4))


    @tf.function
    def loss_fn(x):
        features = encoder(x)
        return tf.reduce_sum(head(features))


    def test_flow(gradient_flow_snapshot):
        gradient_flow_snapshot.assert_match(loss_fn, x)
    '''
)
STORED = Path("__snapshots__", "test_model", "test_flow.flow.toml")


def verdicts(path: Path) -> dict[str, str]:
    return {name: flow.verdict.value for name, flow in read_snapshot(path).sections[0].variables}


@pytest.fixture
def no_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)


@pytest.mark.usefixtures("no_ci")
def test_a_missing_snapshot_is_written_and_reported_then_a_change_fails_with_the_diff(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_model=USERS_TEST)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*- flowcheck: gradient-flow snapshots 1 written -*", f"written {STORED}"])
    stored = pytester.path / STORED
    assert set(verdicts(stored).values()) == {"receives"}

    # Unchanged: passes and writes nothing.
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert "gradient-flow snapshots" not in result.stdout.str()

    # A refactor detaches the encoder: the test fails with one line per variable and the barrier.
    pytester.makepyfile(test_model=USERS_TEST.replace("features = encoder(x)", "features = tf.stop_gradient(encoder(x))"))
    line = next(i for i, text in enumerate(USERS_TEST.lstrip("\n").splitlines(), 1) if "features = encoder(x)" in text)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"E*GradientFlowAssertionError: gradient flow of loss_fn differs from {STORED}: 2 changes",
        f"E*  encoder/dense/bias: receives -> blocked (StopGradient at ../../test_model.py:{line})",
        f"E*  encoder/dense/kernel: receives -> blocked (StopGradient at ../../test_model.py:{line})",
        f"E*if the change is intended, run pytest --flowcheck-update-snapshots and commit {STORED}",
    ])
    assert verdicts(stored)["encoder/dense/kernel"] == "receives"  # a failing test never writes

    # --flowcheck-update-snapshots accepts it; the next plain run passes.
    result = pytester.runpytest("--flowcheck-update-snapshots")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*- flowcheck: gradient-flow snapshots 1 updated -*", f"updated {STORED}"])
    assert verdicts(stored)["encoder/dense/kernel"] == "blocked"
    pytester.runpytest().assert_outcomes(passed=1)


def test_under_ci_a_missing_snapshot_fails_instead_of_being_written(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_model=USERS_TEST)
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"E*GradientFlowAssertionError: no gradient-flow snapshot {STORED} for loss_fn, and CI is set: snapshots "
        "are not written in CI; run pytest --flowcheck-update-snapshots (or the test without CI) and commit the file",
    ])
    assert not (pytester.path / STORED).exists()
    # Once recorded (here with the update option, which CI honours), CI passes.
    pytester.runpytest("--flowcheck-update-snapshots").assert_outcomes(passed=1)
    pytester.runpytest().assert_outcomes(passed=1)


@pytest.mark.usefixtures("no_ci")
def test_each_call_in_a_test_has_its_own_snapshot(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_model=USERS_TEST + textwrap.dedent(
        '''
        class TestTwice:
            def test_it(self, gradient_flow_snapshot):
                report = gradient_flow_snapshot.assert_match(loss_fn, x)
                gradient_flow_snapshot.assert_match(report)
        '''
    ))
    pytester.runpytest().assert_outcomes(passed=2)
    folder = pytester.path / STORED.parent
    assert sorted(p.name for p in folder.iterdir()) == ["TestTwice__test_it.1.flow.toml", "TestTwice__test_it.flow.toml", STORED.name]


def test_the_update_option_is_documented(pytester: pytest.Pytester) -> None:
    pytester.runpytest("--help").stdout.fnmatch_lines(["*--flowcheck-update-snapshots*"])


# --- the Keras callback -------------------------------------------------------------------------


class Net(keras.Model):
    def __init__(self, detach: bool) -> None:
        super().__init__(name="net")
        self.detach = detach
        self.body = keras.layers.Dense(3, name="body")
        self.head = keras.layers.Dense(2, name="head")

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.body.build(input_shape)
        self.head.build((None, 3))

    def call(self, x: tf.Tensor) -> tf.Tensor:
        features = self.body(x)
        if self.detach:
            features = tf.stop_gradient(features)
        return self.head(features)


def compiled(detach: bool) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = Net(detach)
    model.compile(optimizer="sgd", loss="mse")
    model.build((None, 4))
    return model


def fit(model: keras.Model, callback: GradientFlowCheck) -> None:
    rng = np.random.default_rng(0)
    model.fit(rng.random((8, 4), dtype="float32"), rng.random((8, 2), dtype="float32"), epochs=1, verbose=0,
              callbacks=[callback])


@pytest.mark.usefixtures("no_ci")
def test_the_keras_callback_writes_then_checks_its_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "net.flow.toml"
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientFlowWarning)
        fit(compiled(detach=False), GradientFlowCheck(snapshot=path))
    assert f"flowcheck: wrote a new snapshot {path} (1 gradient site, 4 variables); commit it" in capsys.readouterr().err
    assert set(verdicts(path).values()) == {"receives"}

    callback = GradientFlowCheck(snapshot=path)
    with pytest.warns(GradientFlowWarning) as caught:
        fit(compiled(detach=True), callback)
    message = next(str(w.message) for w in caught if w.category is GradientFlowWarning)
    assert callback.snapshot_check.status == "changed"
    assert f"differs from {path}: 2 changes" in message
    line = next(i for i, text in enumerate(Path(__file__).read_text().splitlines(), 1) if "= tf.stop_gradient(features)" in text)
    shown = Path(os.path.relpath(__file__, tmp_path)).as_posix()  # files relative to the snapshot's folder
    assert f"net/body/kernel: receives -> blocked (StopGradient at {shown}:{line})" in message

    with pytest.raises(GradientFlowAssertionError, match="net/body/bias: receives -> blocked"):
        fit(compiled(detach=True), GradientFlowCheck(snapshot=path, on_blocked="raise"))
    assert verdicts(path)["net/body/kernel"] == "receives"


def test_under_ci_the_keras_callback_does_not_write_a_missing_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    path = tmp_path / "net.flow.toml"
    with pytest.raises(GradientFlowAssertionError, match=f"no gradient-flow snapshot {path} for model 'net', and CI is set"):
        fit(compiled(detach=False), GradientFlowCheck(snapshot=path, on_blocked="raise"))
    assert not path.exists()
