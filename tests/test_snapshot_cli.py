"""``flowcheck analyze --snapshot/--check/--update`` on a model file edited the way refactors do.

Run in-process through ``main([...])``; the verdicts of the first snapshot are checked against
a watched ``tf.GradientTape`` computed in the test.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import tensorflow as tf

from flowcheck.cli.load import user_module
from flowcheck.cli.main import main
from flowcheck.snapshot.diff import read_snapshot
from truth import line_of

MODEL = '''\
import keras
import tensorflow as tf

keras.utils.set_random_seed(0)
encoder = keras.Sequential(
    [keras.Input((4,)), keras.layers.Dense(3, name="dense"), keras.layers.Dense(2, name="proj")], name="encoder"
)
head = keras.layers.Dense(1, name="head")
head.build((None, 2))
extra = keras.layers.Dense(1, name="extra")
extra.build((None, 2))
x = tf.ones((2, 4))


@tf.function
def loss_fn(x):
    features = encoder(x)
    return tf.reduce_sum(head(features))


example_inputs = (x,)
'''
CUT = ("    features = encoder(x)\n", "    features = tf.stop_gradient(encoder(x))\n")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["analyze", *argv, "--no-verify"])
    out, err = capsys.readouterr()
    return code, out, err


def model(tmp_path: Path, *edits: tuple[str, str]) -> str:
    # A docstring of its own: AutoGraph caches converted functions by code object, and code objects
    # compare equal across files when only the file differs, so two folders need two sources.
    text = MODEL.replace("def loss_fn(x):\n", f'def loss_fn(x):\n    """The model in {tmp_path.name}."""\n')
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "model.py"
    path.write_text(text)
    return str(path)


def watched_tape(path: str) -> dict[str, bool]:
    """The truth: a tape that watches every variable, whatever its trainable flag."""
    with user_module(path) as module:
        variables: list[Any] = [v for layer in (module.encoder, module.head) for v in layer.weights]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            for v in variables:
                tape.watch(v.value)
            loss = module.loss_fn(module.x)
        grads = tape.gradient(loss, [v.value for v in variables], unconnected_gradients=tf.UnconnectedGradients.NONE)
    return {v.path: g is not None for v, g in zip(variables, grads)}


@pytest.fixture
def recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """A model and the snapshot of its flow, kept in a folder of its own."""
    path = model(tmp_path)
    lock = str(tmp_path / "ci" / "flow.toml")
    code, out, err = run(capsys, path, "--snapshot", lock)
    assert code == 0, err
    assert f"flowcheck: wrote a new snapshot {lock} (1 loss, 6 variables)" in err
    assert "wrote " in out and lock in out  # the summary lists it with the other outputs
    return path, lock


def test_a_model_and_its_snapshot(recorded: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    path, lock = recorded
    stored = {name: flow.verdict.value for name, flow in read_snapshot(lock).sections[0].variables}
    truth = watched_tape(path)
    assert {n: v == "receives" for n, v in stored.items() if n in truth} == truth
    assert "extra/kernel" not in stored  # never read by the loss: not part of its flow
    text = Path(lock).read_text()
    assert '[loss."loss"]\n"encoder/dense/bias" = { verdict = "receives" }\n' in text
    code, out, _ = run(capsys, path, "--check", lock)
    assert code == 0
    assert out.splitlines() == [
        f"flowcheck: gradient flow of loss_fn matches {lock} (1 loss, {len(stored)} variables)", "",
        f"OK: {lock} records the current gradient flow",
    ]
    # Writing again gives the same bytes.
    assert run(capsys, path, "--snapshot", lock)[0] == 0
    assert Path(lock).read_text() == text


def test_a_cut_gradient_fails_the_check_naming_each_variable_and_the_barrier(
    recorded: tuple[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, lock = recorded
    model(tmp_path, CUT)
    assert not any(watched_tape(path)[f"encoder/{n}"] for n in ("dense/kernel", "dense/bias", "proj/kernel", "proj/bias"))
    code, out, _ = run(capsys, path, "--check", lock)
    line = line_of(path, "tf.stop_gradient(encoder(x))")
    assert code == 1
    assert out.splitlines() == [
        f"flowcheck: gradient flow of loss_fn differs from {lock}: 4 changes",
        *(f"  encoder/{n}: receives -> blocked (StopGradient at ../model.py:{line})"
          for n in ("dense/bias", "dense/kernel", "proj/bias", "proj/kernel")),
        "",
        f"FAILED: the gradient flow changed: if that is intended, run again with --update and commit {lock}",
    ]
    assert "stop_gradient StopGradient" not in Path(lock).read_text()  # --check never writes


def test_lines_that_only_moved_pass_and_the_footer_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = model(tmp_path, CUT)
    lock = str(tmp_path / "flow.toml")
    assert run(capsys, path, "--snapshot", lock)[0] == 0
    before = line_of(path, "tf.stop_gradient(encoder(x))")
    model(tmp_path, CUT, ("@tf.function\n", "# a comment\n\n\n@tf.function\n"))
    code, out, _ = run(capsys, path, "--check", lock)
    assert code == 0, out
    assert out.splitlines()[1] == (
        f"  (not a change: 1 barrier only moved to another line: StopGradient at model.py:{before} -> {before + 3})"
    )
    # --update records the new line and says so.
    code, out, _ = run(capsys, path, "--check", lock, "--update")
    assert (code, out.splitlines()[0]) == (0, f"flowcheck: updated {lock}: no change, new lines")
    assert f"StopGradient at model.py:{before + 3}" in Path(lock).read_text()


def test_a_new_variable_and_a_removed_one(recorded: tuple[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path, lock = recorded
    model(tmp_path, ("tf.reduce_sum(head(features))", "tf.reduce_sum(head(features)) + tf.reduce_sum(extra(features))"))
    code, out, _ = run(capsys, path, "--check", lock)
    assert code == 1
    assert out.splitlines()[1:3] == ["  extra/bias: appeared, receives", "  extra/kernel: appeared, receives"]

    model(tmp_path, ("tf.reduce_sum(head(features))", "tf.reduce_sum(features)"))
    code, out, _ = run(capsys, path, "--check", lock)
    assert code == 1
    assert out.splitlines()[:3] == [
        f"flowcheck: gradient flow of loss_fn differs from {lock}: 2 changes",
        "  head/bias: disappeared (was receives)",
        "  head/kernel: disappeared (was receives)",
    ]
    # --update accepts the change, says what changed, and the next check passes.
    code, out, _ = run(capsys, path, "--check", lock, "--update")
    assert code == 0 and out.splitlines()[:2] == [f"flowcheck: updated {lock}: 2 changes", "  head/bias: disappeared (was receives)"]
    assert run(capsys, path, "--check", lock)[0] == 0


def test_the_snapshot_is_portable_between_clones(recorded: tuple[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path, lock = recorded
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(path, clone / "model.py")
    shutil.copytree(Path(lock).parent, clone / "ci")
    model(clone, CUT)
    code, out, _ = run(capsys, str(clone / "model.py"), "--check", str(clone / "ci" / "flow.toml"))
    assert code == 1 and "(StopGradient at ../model.py:" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--check", "missing.toml"], "no snapshot missing.toml to check against: record it first with --snapshot missing.toml (or add --update)"),
        (["--update"], "--update rewrites the snapshot given by --check FILE: add --check FILE"),
        (["--check", "flow.toml", "--json"], "--check prints a diff, not JSON: drop --json (--snapshot FILE works with --json)"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flow.toml").write_text("format = 1\n")
    code, out, err = run(capsys, model(tmp_path), *argv)
    assert (code, out, err) == (2, "", f"flowcheck: error: {message}\n")


def test_a_snapshot_of_another_format_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lock = tmp_path / "flow.toml"
    lock.write_text("format = 7\n")
    code, _, err = run(capsys, model(tmp_path), "--check", str(lock))
    assert code == 2
    assert err == (f"flowcheck: error: SnapshotError: {lock}: format 7; this flowcheck reads snapshot format 1 "
                   "(rewrite the snapshot with --update)\n")


def test_a_gradient_site_section_round_trips_next_to_the_loss_sections(tmp_path: Path) -> None:
    import flowcheck
    from flowcheck.snapshot.build import site_section, snapshot_of
    from flowcheck.snapshot.model import Snapshot
    from flowcheck.snapshot.text import format_snapshot, parse_snapshot

    path = model(tmp_path, CUT)
    with user_module(path) as module:
        report = flowcheck.analyze(module.loss_fn, module.x)
    line = line_of(path, "return tf.reduce_sum")
    site = site_section(report, "tape.gradient", path, line, root=tmp_path)
    assert (site.file, site.line, site.title) == ("model.py", line, f"site tape.gradient at model.py:{line}")
    loss = snapshot_of(report, tmp_path)
    assert site.variables == loss.sections[0].variables
    both = Snapshot(loss.target, (*loss.sections, site))
    text = format_snapshot(both)
    assert f'[site."tape.gradient"."model.py:{line}"]' in text
    assert parse_snapshot(text) == both


def test_update_writes_a_missing_snapshot_and_json_keeps_stderr_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    path, lock = model(tmp_path), tmp_path / "flow.toml"
    code, out, _ = run(capsys, path, "--check", str(lock), "--update")
    assert (code, out.splitlines()[0]) == (0, f"flowcheck: wrote a new snapshot {lock} (1 loss, 6 variables)")
    first = lock.read_text()
    lock.unlink()
    code, out, err = run(capsys, path, "--snapshot", str(lock), "--json")
    assert code == 0 and err == ""
    assert json.loads(out)["outputs"] == [str(lock)]
    assert lock.read_text() == first


def test_a_refactor_that_cuts_every_gradient_is_a_change_not_an_input_error(
    recorded: tuple[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, lock = recorded
    model(tmp_path, ("tf.reduce_sum(head(features))", "tf.reduce_sum(tf.stop_gradient(head(features)))"))
    assert not any(watched_tape(path).values())
    code, out, _ = run(capsys, path, "--check", lock)
    assert code == 1
    assert out.splitlines()[0] == f"flowcheck: gradient flow of loss_fn differs from {lock}: 6 changes"
    assert all(" receives -> blocked (StopGradient at ../model.py:" in line for line in out.splitlines()[1:7])
