"""flowcheck's other doors as users meet them: ``flowcheck analyze model.py`` on model files as they are
written (options parsed at import, a tf.Module's tf.function, losses that are no tensors), and contracts
on a compiled model with a frozen backbone. Verdicts are compared with the tape's answer computed here.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from site_helpers import tape_truth
from truth import default_tape_watches, line_of, watched_truth

import flowcheck
from flowcheck.cli.main import main
from flowcheck.testing import GradientFlowAssertionError


def _write(tmp_path: Path, body: str, name: str = "model.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body).lstrip(), encoding="utf-8")
    return str(path)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["analyze", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _module(path: str) -> dict[str, Any]:
    """The file run as ``python model.py`` runs it (its own argv), for the test's own truth."""
    saved, sys.argv = sys.argv, [path]
    try:
        module: dict[str, Any] = {"__file__": path}
        exec(compile(Path(path).read_text(encoding="utf-8"), path, "exec"), module)  # noqa: S102
        return module
    finally:
        sys.argv = saved


ARGV_MODEL = """
    import argparse

    import keras
    import tensorflow as tf

    parser = argparse.ArgumentParser(description="model definition shared by train.py and eval.py")
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--frozen-stem", action="store_true")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    stem = keras.layers.Dense(args.units, name="stem")(inputs)
    stem = keras.layers.Lambda(lambda t: tf.stop_gradient(t))(stem)  # stem cut
    outputs = keras.layers.Dense(1, name="head")(keras.layers.Dense(args.units, name="mid")(stem))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "mse")
    example_inputs = (tf.ones((4, 6)), tf.ones((4, 1)))
"""


def test_a_model_file_parsing_its_options_at_import_sees_its_own_defaults(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Its parse_args() read flowcheck's own arguments (analyze model.py --json) and exited 2.
    path = _write(tmp_path, ARGV_MODEL)
    code, out, err = _run(capsys, path, "--json", "--no-verify")
    assert code == 1, err  # the stem gets no gradient: a finding, not a usage error
    (site,) = json.loads(out)["gradient_sites"]
    module = _module(path)
    model, (x, y) = module["model"], module["example_inputs"]
    truth = tape_truth(lambda: model.train_step((x, y)), model.variables)
    assert [s["tensorflow_none"] for s in site["sources"]] == truth[0]
    assert [s["verdict"] != "receives" for s in site["sources"]] == truth[0]
    assert [s["name"] for s in site["sources"]] == [w.path for w in model.trainable_weights]
    stem_cut = site["sources"][0]["barriers"][0]["source"]
    assert stem_cut["line"] == line_of(path, "# stem cut") and stem_cut["file"].endswith("model.py")


def test_a_required_option_read_at_import_is_the_files_own_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = _write(tmp_path, ARGV_MODEL.replace('"--units", type=int, default=8', '"--data", required=True'))
    code, _, err = _run(capsys, path)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-3:-1] == ["usage: model.py [-h] --data DATA [--frozen-stem]",
                            "model.py: error: the following arguments are required: --data"]  # not "flowcheck"
    assert lines[-1].startswith(f"flowcheck: error: {path} called sys.exit(2) while being imported")


def test_no_target_names_the_tf_functions_of_the_files_objects(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = _write(tmp_path, """
        import tensorflow as tf


        class Agent(tf.Module):
            def __init__(self):
                super().__init__()
                self.policy = tf.Variable(tf.ones((4, 2)), name="policy")
                self.value = tf.Variable(tf.ones((4, 1)), name="value")

            @tf.function(input_signature=[tf.TensorSpec([None, 4]), tf.TensorSpec([None])])
            def loss(self, obs, ret):
                advantage = tf.stop_gradient(ret - tf.squeeze(obs @ self.value, -1))  # baseline
                return -tf.reduce_mean(tf.reduce_max(tf.nn.log_softmax(obs @ self.policy), -1) * advantage)


        agent = Agent()
    """, name="agent.py")
    code, _, err = _run(capsys, path)
    assert code == 2
    assert err.strip().splitlines()[-1].endswith("; tf.functions of its objects: agent.loss")
    code, out, _ = _run(capsys, f"{path}:agent.loss", "--json")
    agent = _module(path)["agent"]
    obs, ret = tf.random.normal((2, 4), seed=0), tf.ones((2,))
    truth = watched_truth(agent.loss, [agent.policy, agent.value], obs, ret)
    verdicts = {v["name"]: v["verdict"] == "receives" for v in json.loads(out)["variables"]}
    assert code == 0 and [verdicts["policy"], verdicts["value"]] == truth == [True, False]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("return 3", "loss returned an int32 tensor (a constant: a Python number?): a loss must be floating-point"),
        ("return np.float32(2.0)", "loss returned numpy.float32, not a floating-point tensor; return the loss tensor"),
    ],
    ids=["python int", "numpy scalar"],
)
def test_a_loss_that_is_a_number_is_said_to_be_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, body: str, message: str
) -> None:
    path = _write(tmp_path, f"""
        import numpy as np
        import tensorflow as tf

        w = tf.Variable(tf.ones((2, 2)), name="w")


        def loss(x):
            {body}


        example_inputs = (tf.ones((1, 2)),)
    """)
    code, _, err = _run(capsys, f"{path}:loss")
    assert code == 2
    assert f"flowcheck: error: LossError: {message}" in err.strip().splitlines()[-1]


def _classifier() -> keras.Model:
    keras.utils.set_random_seed(1)
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="conv"),
                                 keras.layers.BatchNormalization(name="bn")], name="backbone")
    backbone.trainable = False  # pretrained
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(backbone(inputs, training=False)), name="classifier")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


X = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
Y = np.arange(8) % 3


def test_a_frozen_backbone_expected_blocked_in_a_keras_step_is_said_to_be_no_source() -> None:
    # It said "matches no variable" (a pattern) or "found unused: they do not feed the loss at all" (the weights).
    model = _classifier()
    report = flowcheck.assert_all_trainable_receive(model, X, Y)
    truth = tape_truth(lambda: model.train_step((X, Y)), model.variables)
    assert [not s.receives for s in report.gradient_sites[0].sources] == truth[0]
    backbone = model.get_layer("backbone")
    for spec in ("backbone/*", backbone.weights):
        with pytest.raises(GradientFlowAssertionError) as caught:
            flowcheck.assert_gradient_flow(report, blocked=spec)
        message = str(caught.value)
        assert "the step's gradient calls do not ask for" in message and "do not feed the loss" not in message
        assert "backbone/conv/kernel" in message and message.endswith("the sources are: head/kernel, head/bias")


def test_a_frozen_backbone_in_a_loss_function_receives_as_the_watching_tape_says() -> None:
    model = _classifier()

    @tf.function
    def loss_fn(x: Any, y: Any) -> Any:
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x), from_logits=True))

    frozen = model.get_layer("backbone").weights
    truth = watched_truth(loss_fn, frozen, X, Y)
    with pytest.raises(GradientFlowAssertionError) as caught:
        flowcheck.assert_gradient_flow(loss_fn, X, Y, blocked="backbone/*")
    report = caught.value.report
    assert [report.result(w).receives for w in frozen] == truth
    assert [report.result(w).watched_by_default for w in frozen] == default_tape_watches(loss_fn, frozen, X, Y)
    assert [report.result(w).trainable for w in frozen] == [w.trainable for w in frozen]
    assert "trainable=False cuts no gradient" in str(caught.value)


def test_expect_blocked_on_a_frozen_backbone_of_a_keras_step_says_it_is_no_source(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # It said "matched no variable", though the file's backbone has six weights.
    path = _write(tmp_path, """
        import keras
        import numpy as np

        keras.utils.set_random_seed(1)
        backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu", name="conv"),
                                     keras.layers.BatchNormalization(name="bn")], name="backbone")
        backbone.trainable = False  # pretrained
        inputs = keras.Input((6,))
        model = keras.Model(inputs, keras.layers.Dense(3, name="head")(backbone(inputs, training=False)))
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        example_inputs = (np.ones((8, 6), "float32"), np.arange(8) % 3)
    """)
    code, out, _ = _run(capsys, path, "--expect-blocked", "backbone/*", "--expect-receives", "head/*", "--no-verify")
    module = _module(path)
    model, (x, y) = module["model"], module["example_inputs"]
    (truth,) = tape_truth(lambda: model.train_step((x, y)), model.variables)
    assert truth == [False, False] and [w.path for w in model.trainable_weights] == ["head/kernel", "head/bias"]
    assert code == 1
    assert "ok    receives head/*: head/kernel, head/bias" in out
    assert ("FAILED: --expect-blocked 'backbone/*' matched only variables the step's gradient calls do not ask for "
            "(backbone/conv/kernel, backbone/conv/bias,") in out


def test_a_keras_model_given_its_dataset_is_told_to_pass_a_batch() -> None:
    # It raised TraceError with Keras's "Only input tensors may be passed as positional arguments".
    model = _classifier()
    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(4)
    with pytest.raises(flowcheck.UsageError, match=r"analyzed on a batch, as its train_step takes one, not on a "
                       r"tf\.data\.Dataset: pass one of its batches, \(model, \*next\(iter\(dataset\)\)\)"):
        flowcheck.analyze(model, dataset)
    x, y = next(iter(dataset))
    report = flowcheck.analyze(model, x, y)
    (truth,) = tape_truth(lambda: model.train_step((x, y)), model.variables)
    assert [not s.receives for s in report.gradient_sites[0].sources] == truth


class _Scorer(tf.Module):
    def __init__(self) -> None:
        super().__init__(name="scorer")
        self.w = tf.Variable(tf.ones((3, 1)), name="w")
        self.k = tf.Variable(2.0, name="k")

    @tf.function(input_signature=[tf.TensorSpec([None, 3])])
    def serve(self, x: Any) -> Any:
        return {"output": tf.reduce_sum(x @ self.w) + tf.stop_gradient(self.k)}


def test_a_saved_models_signature_is_told_how_to_pass_it_and_its_wrapper_is_judged_by_the_tape(tmp_path: Path) -> None:
    module = _Scorer()
    tf.saved_model.save(module, str(tmp_path / "scorer"), signatures={"serving_default": module.serve})
    loaded = tf.saved_model.load(str(tmp_path / "scorer"))
    signature = loaded.signatures["serving_default"]
    x = tf.ones((2, 3))
    with pytest.raises(flowcheck.InvalidTargetError, match=r"a SavedModel's signature has none: pass a function "
                       r"calling it, lambda x: signature\(x=x\)\['output'\]"):
        flowcheck.analyze(signature, x)
    report = flowcheck.analyze(lambda x: signature(x=x)["output"], x)
    variables = [loaded.w, loaded.k]
    assert [report.result(v).receives for v in variables] == watched_truth(
        lambda x: signature(x=x)["output"], variables, x) == [True, False]
    saved = [v.numpy() for v in variables]
    assert report.verify().agrees and all(np.array_equal(v.numpy(), s) for v, s in zip(variables, saved))


def test_a_keras_model_with_a_loss_dict_is_judged_on_its_compiled_total() -> None:
    keras.utils.set_random_seed(2)
    inputs = keras.Input((6,))
    shared = keras.layers.Dense(5, name="shared")(inputs)
    outputs = {"out1": keras.layers.Dense(1, name="out1")(shared),
               "out2": keras.layers.Dense(3, name="out2")(keras.layers.Dense(4, name="only2")(shared))}
    model = keras.Model(inputs, outputs)
    model.compile("sgd", loss={"out1": "mse", "out2": "sparse_categorical_crossentropy"},
                  loss_weights={"out1": 1.0, "out2": 0.0})  # out2 switched off: zeros, not None
    y = {"out1": np.ones((8, 1), "float32"), "out2": Y}
    report = flowcheck.assert_gradient_flow(model, X, y, receives="only2/*")
    (truth,) = tape_truth(lambda: model.train_step((X, y)), model.variables)
    assert [not s.receives for s in report.gradient_sites[0].sources] == truth
    with pytest.raises(GradientFlowAssertionError, match=r"has no output named 'out2'; its losses are: loss \(a training "
                       r"step's: what its gradient calls differentiate, a Keras model's compiled total\)"):
        flowcheck.assert_gradient_flow(report, loss="out2", receives="only2/*")
