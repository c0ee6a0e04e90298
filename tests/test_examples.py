"""Every example runs through ``flowcheck analyze`` (in-process) and agrees with the tape.

The truth is computed here: ``tf.GradientTape`` around each example's own loss, per variable, and
per loss by running the step's Python function eagerly (a tape around a ``tf.function`` call that
returns several losses gives zeros, not None, for what only another loss depends on).
"""

from __future__ import annotations

import json
import re
import runpy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tensorflow as tf

from flowcheck.cli.main import main
from truth import line_of

ROOT = Path(__file__).resolve().parent.parent
# seed_tf1.py switches the whole process to TensorFlow 1 graph mode: tests/test_tf1.py runs it in a
# fresh interpreter, under `flowcheck run`.
TF1_EXAMPLES = {"seed_tf1.py"}
# Training scripts written the way users write them: run unchanged by `flowcheck run` in
# tests/test_run_examples.py (flowcheck analyze imports them, which runs their training).
RUN_EXAMPLES = {
    "quickstart_int_cast.py", "argmax_gate.py", "subclassed_train_step.py", "gan_two_tapes.py", "fit_round_loss.py",
    "eager_loop.py", "cut_everywhere.py", "class_trainer.py", "mixed_precision.py",
}
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py") if p.name not in TF1_EXAMPLES | RUN_EXAMPLES)
SLOW = {"transfer_learning_frozen_backbone.py"}


@pytest.fixture(autouse=True)
def in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def analyze(capsys: pytest.CaptureFixture[str], name: str, *flags: str) -> tuple[int, dict[str, Any]]:
    code = main(["analyze", f"examples/{name}", "--json", *flags])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, json.loads(out)


def load(name: str) -> dict[str, Any]:
    return runpy.run_path(str(ROOT / "examples" / name))


def stable(name: str) -> str:
    """A Keras name without the counter suffixes that differ between two loads in one process."""
    return re.sub(r"_\d+(?=/|$)", "", name)


def tape_truth(loss: Callable[..., Any], args: tuple[Any, ...], variables: list[Any]) -> dict[str, dict[str, bool]]:
    """``{loss name: {variable name: the tape gives a gradient}}``, plus ``"total"``, run eagerly."""
    backing = [getattr(v, "value", v) if not isinstance(v, tf.Variable) else v for v in variables]
    names = [stable(str(getattr(v, "path", None) or v.name.split(":")[0])) for v in variables]
    assert len(set(names)) == len(names)
    floats = [i for i, v in enumerate(backing) if v.dtype.is_floating]
    with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
        tape.watch([backing[i] for i in floats])  # every variable watched: the verdict's tape
        out = loss(*args)
        parts = dict(out) if isinstance(out, dict) else {"loss": out}
        total = tf.add_n([tf.reduce_sum(t) for t in parts.values()])
    truth = {}
    for loss_name, tensor in [*parts.items(), ("total", total)]:
        grads = tape.gradient(tensor, [backing[i] for i in floats], unconnected_gradients=tf.UnconnectedGradients.NONE)
        got = dict.fromkeys(names, False)
        got.update({names[i]: g is not None for i, g in zip(floats, grads)})
        truth[loss_name] = got
    return truth


def verdicts(data: dict[str, Any], loss: str | None = None) -> dict[str, bool]:
    return {
        stable(v["name"]): (v["per_loss"][loss] if loss else v["verdict"]) == "receives" for v in data["variables"]
    }


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in EXAMPLES]
)
def test_every_example_passes_through_the_cli(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, data = analyze(capsys, name)
    assert code == 0, data
    assert data["verification"]["agrees"] is True
    assert data["verification"]["problems"] == []


def test_dqn_target_network_is_blocked_at_the_stop_gradient(capsys: pytest.CaptureFixture[str]) -> None:
    name = "dqn_target_network.py"
    m = load(name)
    # Eager Python function: the tape sees every op, as inside the traced step.
    truth = tape_truth(m["dqn_loss"].python_function, m["example_inputs"], m["online"].variables + m["target"].variables)
    code, data = analyze(capsys, name, "--expect-receives", "online/*", "--expect-blocked", "target/*")
    assert code == 0
    assert verdicts(data) == truth["total"]
    assert all(e["holds"] for e in data["expectations"])
    stop_line = line_of(ROOT / "examples" / name, "tf.stop_gradient(")
    for v in data["variables"]:
        if v["name"].startswith("target/"):
            assert [(b["op_type"], b["source"]["line"]) for b in v["barriers"]] == [("StopGradient", stop_line)]


def test_vqvae_losses_match_the_tape_per_loss(capsys: pytest.CaptureFixture[str]) -> None:
    name = "vqvae_straight_through.py"
    m = load(name)
    images = tf.random.stateless_normal((2, m["IMAGE_DIM"]), seed=(0, 1))
    variables = m["encoder"].variables + m["decoder"].variables + [m["codebook"]]
    truth = tape_truth(m["vqvae_losses"].python_function, (images,), variables)
    code, data = analyze(capsys, name, "--expect-receives", "*")
    assert code == 0
    assert data["target"]["inputs"] == "random (seed 0, batch 2), from its input_signature"
    assert verdicts(data) == truth["total"]
    for loss in ("reconstruction", "codebook", "commitment"):
        assert verdicts(data, loss) == truth[loss], loss
    assert truth["reconstruction"]["codebook"] is False  # the straight-through estimator skips it


def test_gan_step_from_a_factory_matches_the_tape_per_loss(capsys: pytest.CaptureFixture[str]) -> None:
    name = "gan_step.py"
    m = load(name)
    step, inputs = m["make_gan_step"]()
    variables = step.generator.variables + step.discriminator.variables
    truth = tape_truth(step.python_function, inputs, variables)
    code, data = analyze(capsys, name, "--expect-receives", "generator/*", "--expect-receives", "discriminator/*")
    assert code == 0
    assert data["target"]["chosen_by"] == "make_gan_step, the module's flowcheck_target (a factory returning gan_losses)"
    assert verdicts(data) == truth["total"]
    for loss in ("d_loss", "g_loss"):
        assert verdicts(data, loss) == truth[loss], loss
    assert not any(truth["d_loss"][v.path] for v in step.generator.variables)


@pytest.mark.slow
def test_transfer_learning_head_receives_and_backbone_is_frozen(capsys: pytest.CaptureFixture[str]) -> None:
    name = "transfer_learning_frozen_backbone.py"
    m = load(name)
    model = m["model"]
    x = tf.random.stateless_uniform((2, *m["IMAGE_SHAPE"]), seed=(0, 1))
    y = tf.constant([1, 7])

    def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        return model.compute_loss(x=x, y=y, y_pred=model(x, training=True), training=True)

    truth = tape_truth(step, (x, y), model.variables)
    code, data = analyze(capsys, name, "--expect-receives", "classifier/*")
    assert code == 0
    assert data["target"]["kind"] == "keras model"
    found = verdicts(data)  # fit's step: the sources of its gradient call, the frozen rest counted apart
    assert found == {name: truth["total"][name] for name in found}
    (site,) = data["gradient_sites"]
    assert [s["name"] for s in site["sources"]] == [v.path for v in model.trainable_variables]
    assert [s["tensorflow_none"] for s in site["sources"]] == [not truth["total"][v.path] for v in model.trainable_variables]
    assert len(found) + data["other_state"] >= len(model.variables)  # every weight is listed or counted
    trainable = {v["name"] for v in data["variables"] if v["trainable"]}
    assert trainable == {v.path for v in model.trainable_variables} == {"classifier/kernel", "classifier/bias"}


@pytest.mark.parametrize(
    ("name", "printed"),
    [
        ("dqn_target_network.py", "step 20: loss "),
        ("vqvae_straight_through.py", "step 5: reconstruction "),
        ("gan_step.py", "step 5: d_loss "),
        pytest.param("transfer_learning_frozen_backbone.py", "loss: ", marks=pytest.mark.slow),
    ],
)
def test_example_runs_as_a_script(capsys: pytest.CaptureFixture[str], name: str, printed: str) -> None:
    runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")
    assert printed in capsys.readouterr().out


@pytest.mark.slow
def test_multi_worker_example_runs_two_workers_that_each_agree(capsys: pytest.CaptureFixture[str]) -> None:
    # Run as a script it starts two worker processes (TF_CONFIG, free ports) and prints both.
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(ROOT / "examples" / "multi_worker_mirrored.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert exited.value.code == 0, out
    workers = out.split("--- worker ")[1:]
    assert [w.splitlines()[0] for w in workers] == ["0 (exit 0)", "1 (exit 0)"]
    for w in workers:
        assert "2 replicas in sync; verification agrees: True" in w
        rows = {line.split()[1]: line.split()[0] for line in w.splitlines() if line.startswith("  ")}
        assert rows["entropy_weight"] == "unused" and rows["discount"] == "blocked"
        assert rows["online/q/kernel"] == "receives" and rows["target/q/kernel"] == "blocked"
        assert len(rows) == 10, "one row per variable made, not one per replica"
