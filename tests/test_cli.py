"""``flowcheck analyze``, in-process through ``main([...])``: exact exit codes and output lines.

Every bad input is a tiny module written to ``tmp_path``. Verdicts are checked against
``tf.GradientTape``, computed in the test.
"""

from __future__ import annotations

import io
import json
import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import tensorflow as tf

import flowcheck
from flowcheck import GradientState, VariableCheck, Verification
from flowcheck.cli.load import split_spec
from flowcheck.cli.main import main
from flowcheck.outputs.text import RunInfo, format_summary, to_json
from truth import line_of, watched_truth

ROOT = Path(__file__).resolve().parent.parent
SEED = "examples/seed_stop_gradient.py"

# A module most bad-input tests extend: one variable, one input.
HEADER = """\
import tensorflow as tf

w = tf.Variable(tf.ones((2, 2)), name="w")
x = tf.ones((1, 2))
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["analyze", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, body: str, name: str = "model.py", header: bool = True) -> str:
    path = tmp_path / name
    path.write_text((HEADER if header else "") + textwrap.dedent(body))
    return str(path)


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("flowcheck: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def tape_receives(fn: Any, args: tuple[Any, ...], variables: list[tf.Variable]) -> dict[str, bool]:
    """The watched tape's answer (:func:`truth.watched_truth`) by variable name."""
    return dict(zip((v.name.split(":")[0] for v in variables), watched_truth(fn, variables, *args)))


@pytest.fixture
def in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


# --- the acceptance example -----------------------------------------------------------------


def _seed_truth() -> dict[str, bool]:
    import runpy

    module = runpy.run_path(str(ROOT / SEED))
    return tape_receives(module["loss_fn"], module["example_inputs"], [module["w1"], module["w2"]])


@pytest.mark.usefixtures("in_root")
def test_seed_example_prints_w1_blocked_at_the_stop_gradient_and_w2_receiving(capsys: pytest.CaptureFixture[str]) -> None:
    truth = _seed_truth()
    assert truth == {"w1": False, "w2": True}
    code, out, err = run(capsys, SEED)
    assert code == 0
    lines = out.splitlines()
    blocked = lines.index("blocked (1): feed the loss, but every gradient path is cut")
    assert lines[blocked + 1].split() == ["w1", "float32[2,3]"]
    stop_line = line_of(ROOT / SEED, "tf.stop_gradient(")
    assert lines[blocked + 2].strip() == f"StopGradient 'StopGradient' (tf.stop_gradient) at {SEED}:{stop_line}"
    receives = lines.index("receives (1): a gradient reaches them")
    assert lines[receives + 1].split() == ["w2", "float32[3,1]"]
    assert any(line.startswith("verification: agrees  (SGD(learning_rate=1), one step") for line in lines)
    assert lines[-1] == "OK: verification agrees"
    assert err == f"flowcheck: analyzing loss_fn, the only tf.function in {SEED}\n"


@pytest.mark.usefixtures("in_root")
def test_json_report_follows_schema_version_2_and_the_tape(capsys: pytest.CaptureFixture[str]) -> None:
    truth = _seed_truth()
    code, out, err = run(capsys, SEED, "--json")
    assert code == 0 and err == ""  # quiet under --json
    data = json.loads(out)
    assert data["schema_version"] == 2
    assert data["gradient_sites"] == [] and data["never_trained"] == []  # a loss function has no site
    assert data["flowcheck_version"] == flowcheck.__version__
    assert data["target"] == {
        "name": "loss_fn", "kind": "tf.function", "file": SEED,
        "chosen_by": f"loss_fn, the only tf.function in {SEED}", "inputs": "example_inputs",
    }
    assert {v["name"]: v["verdict"] == "receives" for v in data["variables"]} == truth
    w1 = next(v for v in data["variables"] if v["name"] == "w1")
    assert w1["barriers"][0]["kind"] == "stop_gradient"
    assert w1["barriers"][0]["source"]["line"] == line_of(ROOT / SEED, "tf.stop_gradient(")
    assert data["counts"] == {"receives": 1, "blocked": 1, "unused": 0}
    assert data["verification"]["agrees"] is True
    assert {c["name"]: c["gradient"] != "none" for c in data["verification"]["variables"]} == truth
    assert data["ok"] is True


def test_json_of_a_non_finite_loss_is_still_valid_json() -> None:
    report = _seed_report()
    nan = Verification(agrees=True, optimizer="SGD", loss=float("nan"), variables=(), problems=("the loss is nan",))
    data = to_json(report, nan)
    json.dumps(data, allow_nan=False)
    assert data["verification"]["loss"] is None and data["verification"]["loss_finite"] is False
    assert data["ok"] is False


def _seed_report() -> flowcheck.Report:
    import runpy

    module = runpy.run_path(str(ROOT / SEED))
    return flowcheck.analyze(module["loss_fn"], *module["example_inputs"])


@pytest.mark.usefixtures("in_root")
def test_output_dot_is_written(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "seed.dot"
    code, out, _ = run(capsys, SEED, "-o", str(target))
    assert code == 0
    assert target.read_text().lstrip().startswith("digraph")
    assert f"wrote {target}" in out


@pytest.mark.dot
@pytest.mark.usefixtures("in_root")
def test_output_svg_and_html_are_written(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    svg, html = tmp_path / "seed.svg", tmp_path / "seed.html"
    code, out, _ = run(capsys, SEED, "-o", str(svg), "--output", str(html), "--json")
    assert code == 0
    assert "<svg" in svg.read_text()
    assert "<html" in html.read_text().lower()
    assert json.loads(out)["outputs"] == [str(svg), str(html)]


# --- expectations, verification and exit status --------------------------------------------


@pytest.mark.usefixtures("in_root")
def test_expectations_that_hold_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, SEED, "--expect-blocked", "w1", "--expect-receives", "w2", "--no-verify")
    assert code == 0
    assert "  ok    blocked w1: w1" in out.splitlines()
    assert out.splitlines()[-1] == "OK: 2 expectations hold, not verified (--no-verify)"


@pytest.mark.usefixtures("in_root")
def test_a_failing_expectation_exits_1_and_names_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, SEED, "--expect-receives", "w*", "--no-verify")
    assert code == 1
    assert "  FAIL  receives w*: w1 blocked" in out.splitlines()
    assert out.splitlines()[-1] == "FAILED: --expect-receives 'w*': w1 blocked"


@pytest.mark.usefixtures("in_root")
def test_a_pattern_matching_nothing_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, SEED, "--expect-blocked", "dense/*", "--no-verify", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["expectations"] == [
        {"expect": "blocked", "pattern": "dense/*", "matched": [], "holds": False, "failures": []}
    ]
    assert data["ok"] is False


@pytest.mark.usefixtures("in_root")
def test_verification_that_disagrees_exits_1(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # A disagreement would be a flowcheck bug, so there is no honest input that makes one: the
    # step's result is replaced to check the exit status and the message.
    def disagreeing(self: flowcheck.Report, optimizer: Any = None, learning_rate: float | None = None) -> Verification:
        check = VariableCheck("w1", predicted=False, gradient=GradientState.NONZERO, changed=True, agrees=False)
        self.verification = Verification(False, "SGD(learning_rate=1)", 1.0, (check,), ())
        return self.verification

    monkeypatch.setattr(flowcheck.Report, "verify", disagreeing)
    code, out, _ = run(capsys, SEED)
    assert code == 1
    assert "    w1: predicted no gradient, the tape gave nonzero" in out.splitlines()
    assert out.splitlines()[-1] == "FAILED: verification disagrees with the prediction for w1"


def test_nan_loss_is_a_finding_with_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        @tf.function
        def loss_fn(x):
            return tf.reduce_sum(tf.matmul(x, w)) * float("nan")

        example_inputs = (x,)
    """)
    code, out, err = run(capsys, path)
    assert code == 1
    assert "  problem: the loss is nan: gradients and the step are not meaningful" in out.splitlines()
    assert out.splitlines()[-1].startswith("FAILED: the loss is nan")
    assert "error" not in err


def test_an_op_without_gradient_on_the_path_is_a_finding_with_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # tf.math.bincount's DenseBincount has no registered gradient: the tape raises on this step.
    path = write(tmp_path, """
        counts_w = tf.Variable([0.5, 1.0, 1.5], name="counts_w")

        @tf.function
        def loss_fn(x):
            counts = tf.math.bincount(tf.constant([0, 1, 1]), weights=counts_w, minlength=2)
            return tf.reduce_sum(tf.matmul(x, w)) + tf.reduce_sum(counts)

        example_inputs = (x,)
    """)
    module = _import(path)
    with pytest.raises(LookupError, match="No gradient defined"):  # the truth
        with tf.GradientTape() as tape:
            loss = module.loss_fn(*module.example_inputs)
        tape.gradient(loss, [module.w, module.counts_w])
    code, out, err = run(capsys, path)
    lines = out.splitlines()
    assert code == 1
    assert lines[lines.index(next(l for l in lines if l.startswith("gradient errors:"))) + 1] == (
        f"      DenseBincount 'bincount/DenseBincount' (DenseBincount has no registered gradient; TensorFlow raises "
        f"if it is reached) at {path}:{line_of(path, 'tf.math.bincount')}"
    )
    assert any(l.startswith("verification: agrees: the tape raised, as predicted") for l in lines)
    assert lines[-1] == "FAILED: differentiating the loss raises at DenseBincount 'bincount/DenseBincount' (no gradient defined)"
    assert "error" not in err
    code, out, _ = run(capsys, path, "--json", "--no-verify")
    data = json.loads(out)
    assert code == 1 and data["ok"] is False
    assert [(e["op_type"], e["kind"], e["source"]["line"]) for e in data["gradient_errors"]] == [
        ("DenseBincount", "no_gradient", line_of(path, "tf.math.bincount"))
    ]


def _import(path: str) -> Any:
    """The file as a fresh module of its own."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"model_{abs(hash(path))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("in_root")
def test_optimizer_from_the_module_flags_and_both(capsys: pytest.CaptureFixture[str]) -> None:
    def optimizer(*flags: str) -> str:
        code, out, _ = run(capsys, SEED, "--json", *flags)
        assert code == 0
        return str(json.loads(out)["verification"]["optimizer"])

    assert optimizer() == "SGD(learning_rate=1)"  # flowcheck_optimizer = ("sgd", 1.0)
    assert optimizer("--learning-rate", "0.5") == "SGD(learning_rate=0.5)"
    assert optimizer("--optimizer", "adam") == "Adam(learning_rate=0.001)"
    assert optimizer("--optimizer", "adam", "--learning-rate", "0.1") == "Adam(learning_rate=0.1)"


# --- usage ---------------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"flowcheck {flowcheck.__version__}\n"


def test_analyze_help_has_examples_and_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--help"]) == 0
    out = capsys.readouterr().out
    assert "flowcheck analyze examples/seed_stop_gradient.py" in out
    assert "flowcheck_optimizer" in out and "example_inputs" in out and "exit status" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "flowcheck: error: give a command: flowcheck run SCRIPT.py or flowcheck analyze PATH[:NAME]"),
        (["analyze"], "the following arguments are required: PATH[:NAME]"),
        (["analyze", SEED, "--optimizer", "rmsprop"], "argument --optimizer: invalid choice: 'rmsprop'"),
        (["analyze", SEED, "--learning-rate", "-1"], "argument --learning-rate: must be a positive number, not -1"),
        (["analyze", SEED, "--seed", "x"], "argument --seed: not an integer: 'x'"),
        (["analyze", SEED, "--seed", "-3"], "argument --seed: must be a non-negative integer, not -3"),  # was NumPy's traceback
        # The two commonest slips; argparse said only "unrecognized arguments" and "invalid choice".
        (["run", "train.py", "--epochs", "3"], "flowcheck: error: unrecognized arguments: --epochs 3 "
         "(the script's own arguments go after --: flowcheck run train.py -- --epochs 3)"),
        (["train.py"], "flowcheck: error: give a command first: flowcheck run train.py (a training script) "
         "or flowcheck analyze train.py"),
        (["analyze", ""], "flowcheck: error: the file name is empty; give a Python file"),  # was " is a directory"
        (["run", ""], "flowcheck: error: the file name is empty; give a Python file"),
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.usefixtures("in_root")
def test_an_unknown_output_format_is_refused_before_any_work(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, SEED, "-o", "seed.png")
    assert (code, out) == (2, "")
    assert error_line(err) == "flowcheck: error: cannot write 'seed.png': the report formats are .svg, .html, .dot, .me.json, .json"


def test_split_spec() -> None:
    assert split_spec("model.py") == ("model.py", None)
    assert split_spec("dir/model.py:train_step") == ("dir/model.py", "train_step")
    assert split_spec("model.py:agent.step") == ("model.py", "agent.step")
    assert split_spec("C:/x/model.py") == ("C:/x/model.py", None)  # a drive letter is no NAME
    assert split_spec("model.py:class") == ("model.py:class", None)  # nor is a keyword


# --- bad input: one line, exit 2 -------------------------------------------------------------


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, str(tmp_path / "nope.py"))
    assert code == 2
    assert error_line(err) == f"flowcheck: error: no such file: {tmp_path / 'nope.py'}"


def test_a_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, str(tmp_path))
    assert code == 2
    assert error_line(err) == f"flowcheck: error: {tmp_path} is a directory; give a Python file (path/to/model.py[:NAME])"


@pytest.mark.parametrize("command", ["analyze", "run"])  # run said "failed before its first training step: SyntaxError: (unicode error) ..."
@pytest.mark.parametrize(("name", "content"), [("data.csv", b"a,b\n1,2\n"), ("model.py", b"\x89PNG\r\n\x1a\n\xff\xfe\x00")])
def test_not_python(capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, content: bytes, command: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    code = main([command, str(path)])
    err = capsys.readouterr().err
    assert code == 2
    expected = (
        f"flowcheck: error: {path} is not a Python file; give a .py file (path/to/model.py[:NAME])"
        if name.endswith(".csv") else f"flowcheck: error: {path} is not a Python file: it is not UTF-8 text"
    )
    assert error_line(err) == expected


@pytest.mark.parametrize("command", ["analyze", "run"])  # run said "failed before its first training step", no code
def test_syntax_error_shows_file_and_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str) -> None:
    path = write(tmp_path, "def loss_fn(x:\n    return x\n")
    code = main([command, path])
    err = capsys.readouterr().err
    assert code == 2
    line = line_of(path, "def loss_fn(x:")
    assert error_line(err).startswith(f"flowcheck: error: {path}:{line}: SyntaxError: ")
    assert error_line(err).endswith("(def loss_fn(x:)")


def test_the_file_raising_on_import_shows_the_users_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        def load_data():
            raise FileNotFoundError("no such dataset: /data/train")

        data = load_data()
    """)
    code, _, err = run(capsys, path)
    assert code == 2
    line = line_of(path, "raise FileNotFoundError")
    assert error_line(err) == (
        f"flowcheck: error: importing {path} raised FileNotFoundError at {path}:{line} "
        f'(raise FileNotFoundError("no such dataset: /data/train")): no such dataset: /data/train'
    )


def test_the_file_calling_sys_exit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, "import sys\nsys.exit(3)\n")
    code, _, err = run(capsys, path)
    assert code == 2
    assert error_line(err) == (
        f"flowcheck: error: {path} called sys.exit(3) while being imported; put the script part under "
        '`if __name__ == "__main__":`'
    )


@pytest.mark.parametrize("command", ["analyze", "run"])
def test_a_keyboard_interrupt_is_one_line_and_exit_130(capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str) -> None:
    # Ctrl-C (here the file raising it while it loads) printed Python's whole traceback.
    path = write(tmp_path, "raise KeyboardInterrupt\n")
    code = main([command, path])
    _, err = capsys.readouterr()
    line = line_of(path, "raise KeyboardInterrupt")
    assert code == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"flowcheck: interrupted: KeyboardInterrupt at {path}:{line} (raise KeyboardInterrupt)"


@pytest.mark.parametrize(("setting", "message"), [
    ('("rmsprop", 0.1)', "unknown optimizer 'rmsprop': expected one of sgd, adam or a Keras optimizer"),
    ('("sgd", -1)', "learning_rate must be a positive number, not -1.0"),
])
def test_a_bad_module_optimizer_names_the_setting(capsys: pytest.CaptureFixture[str], tmp_path: Path, setting: str, message: str) -> None:
    # It was a "VerificationError: unknown optimizer 'rmsprop'" that did not say where it came from.
    path = write(tmp_path, f"""
        @tf.function
        def loss_fn(x):
            return tf.reduce_sum(x @ w)

        example_inputs = (x,)
        flowcheck_optimizer = {setting}
    """)
    code, _, err = run(capsys, path)
    assert code == 2
    assert error_line(err) == f"flowcheck: error: flowcheck_optimizer in {path}: {message}"
    code, _, _ = run(capsys, path, "--optimizer", "adam")  # replaced by --optimizer: not used, not checked
    assert code == 0


def test_name_not_found_lists_the_candidates(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        @tf.function
        def loss_fn(x):
            return tf.reduce_sum(x @ w)

        def helper():
            return 1
    """)
    code, _, err = run(capsys, f"{path}:los_fn")
    assert code == 2
    assert error_line(err) == f"flowcheck: error: no 'los_fn' in {path}; candidates: loss_fn, helper"


def test_several_candidates_and_no_name(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        @tf.function
        def generator_loss(x):
            return tf.reduce_sum(x @ w)

        @tf.function
        def critic_loss(x):
            return tf.reduce_sum(x @ w)
    """)
    code, _, err = run(capsys, path)
    assert code == 2
    assert error_line(err) == (
        f"flowcheck: error: {path} has several candidate targets: generator_loss (tf.function), "
        f"critic_loss (tf.function); pick one with {path}:NAME or set flowcheck_target"
    )


def test_no_candidate_at_all(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, "def loss_fn(x):\n    return tf.reduce_sum(x @ w)\n")
    code, _, err = run(capsys, path)
    assert code == 2
    assert error_line(err) == (
        f"flowcheck: error: no target found in {path}: name one ({path}:NAME), set flowcheck_target = ..., "
        "or define a tf.function or a Keras model at module level; its functions: loss_fn"
    )


def test_target_not_callable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, "learning_rate = 0.1\n")
    code, _, err = run(capsys, f"{path}:learning_rate")
    assert code == 2
    assert error_line(err) == (
        f"flowcheck: error: InvalidTargetError: learning_rate in {path} is a float, not callable: the target must "
        "be a tf.function, a function returning the loss, a compiled Keras model (an instance), or a zero-argument "
        "function returning one"
    )


def test_no_example_inputs_says_how_to_provide_them(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        @tf.function
        def loss_fn(x, y):
            return tf.reduce_sum(x @ w - y)
    """)
    code, _, err = run(capsys, path)
    assert code == 2
    assert error_line(err) == (
        f"flowcheck: error: loss_fn takes (x, y) but flowcheck has no example inputs for it: define "
        f"example_inputs = (x, y) (or loss_fn_inputs) in {path}, give the tf.function an input_signature, "
        "or point at a zero-argument function returning (loss_fn, (inputs...))"
    )


def test_the_wrong_number_of_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        @tf.function
        def loss_fn(x, y):
            return tf.reduce_sum(x @ w - y)

        example_inputs = (x,)
    """)
    code, _, err = run(capsys, path)
    assert code == 2
    assert error_line(err) == (
        "flowcheck: error: loss_fn(x, y) cannot take the example inputs (example_inputs): "
        "missing a required argument: 'y'"
    )


def test_inputs_of_the_wrong_shape_show_the_users_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        @tf.function
        def loss_fn(x):
            return tf.reduce_sum(tf.matmul(x, w))

        example_inputs = (tf.ones((1, 5)),)
    """)
    code, _, err = run(capsys, path)
    assert code == 2
    line = line_of(path, "tf.matmul(x, w)")
    assert error_line(err).startswith(
        f"flowcheck: error: TraceError: tracing loss_fn raised ValueError at {path}:{line} "
        "(return tf.reduce_sum(tf.matmul(x, w))): "
    )
    assert "Dimensions must be equal, but are 5 and 2" in err


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("tf.matmul(x, w)\n    return None", "LossError: loss_fn returned None; return the loss tensor"),
        ('return tf.constant("loss")', "LossError: loss_fn returned a string tensor: a loss must be floating-point to have a gradient"),
        ("return tf.cast(tf.reduce_sum(x @ w), tf.int32)",
         "LossError: loss_fn returned an int32 tensor: a loss must be floating-point to have a gradient"),
    ],
    ids=["none", "string", "integer"],
)
def test_a_result_that_is_no_loss(capsys: pytest.CaptureFixture[str], tmp_path: Path, body: str, message: str) -> None:
    path = write(tmp_path, f"@tf.function\ndef loss_fn(x):\n    {body}\n\nexample_inputs = (x,)\n")
    code, _, err = run(capsys, path)
    assert code == 2
    assert error_line(err) == f"flowcheck: error: {message}"


def test_a_result_that_is_not_differentiable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        @tf.function
        def loss_fn(x):
            return tf.reduce_sum(tf.round(x @ w))

        example_inputs = (x,)
    """)
    module: dict[str, Any] = {}
    exec(compile(Path(path).read_text(), path, "exec"), module)
    assert tape_receives(module["loss_fn"], (module["x"],), [module["w"]]) == {"w": False}
    code, _, err = run(capsys, path)
    assert code == 2
    line = line_of(path, "tf.round")
    assert error_line(err) == (
        "flowcheck: error: LossError: the loss of loss_fn is not differentiable with respect to any of its 1 "
        f"variable(s): every path is cut (Round at {path}:{line}); nothing would train"
    )


def test_the_function_raising_while_tracing_shows_where(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        @tf.function
        def loss_fn(x):
            logits = x @ w
            if logits.shape[0] != 32:
                raise ValueError(f"expected a batch of 32, got {logits.shape[0]}")
            return tf.reduce_sum(logits)

        example_inputs = (x,)
    """)
    code, _, err = run(capsys, path)
    assert code == 2
    line = line_of(path, "raise ValueError")
    assert error_line(err) == (
        f"flowcheck: error: TraceError: tracing loss_fn raised ValueError at {path}:{line} "
        f'(raise ValueError(f"expected a batch of 32, got {{logits.shape[0]}}")): expected a batch of 32, got 1'
    )


def test_no_variables_means_nothing_can_be_trained(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        @tf.function
        def loss_fn(x):
            return tf.reduce_sum(x * 2.0)

        example_inputs = (x,)
    """)
    code, _, err = run(capsys, path)
    assert code == 2
    assert error_line(err) == (
        "flowcheck: error: NoVariablesError: loss_fn reads no variable: nothing can be trained "
        "(create the variables outside the function and use them inside)"
    )


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, "import sys\nsys.exit(3)\n")
    code, _, err = run(capsys, path, "--debug")
    assert code == 2
    assert "Traceback (most recent call last)" in err and "SystemExit: 3" in err
    assert err.splitlines()[-1].startswith("flowcheck: error: ")


def test_a_factory_returning_the_wrong_shape_of_thing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        @tf.function
        def loss_fn(x):
            return tf.reduce_sum(x @ w)

        def build():
            return loss_fn, x
    """)
    code, _, err = run(capsys, f"{path}:build")
    assert code == 2
    assert error_line(err) == (
        "flowcheck: error: InvalidTargetError: build() returned an EagerTensor as its inputs: return target, "
        "(target, args) or (target, args, kwargs), with args a tuple and kwargs a dict (one input x: return "
        "loss_fn, (x,))"
    )


def test_a_keras_model_without_known_shapes_needs_example_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        import keras

        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(2)

            def call(self, x):
                return self.dense(x)

        net = Net()
        net.compile(loss="mse")
    """, header=False)
    code, _, err = run(capsys, path)
    assert code == 2
    assert error_line(err) == (
        f"flowcheck: error: Keras model 'net' has no known input shape (a subclassed model?): define "
        f"example_inputs = (x, y) in {path}"
    )


# --- finding the target and its inputs --------------------------------------------------------


def test_flowcheck_target_and_name_inputs_win(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        v = tf.Variable(1.0, name="v")

        @tf.function
        def first(x):
            return tf.reduce_sum(x @ w)

        @tf.function
        def second(x):
            return tf.reduce_sum(x) * v

        flowcheck_target = second
        example_inputs = (tf.ones((1, 3)),)  # would not fit first; second_inputs takes precedence
        second_inputs = (tf.ones((4, 4)),)
    """)
    code, out, err = run(capsys, path, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["target"]["chosen_by"] == "second, the module's flowcheck_target"
    assert data["target"]["inputs"] == "second_inputs"
    assert data["verification"]["loss"] == 16.0
    assert [v["name"] for v in data["variables"]] == ["v"]


def test_random_inputs_from_an_input_signature_are_seeded(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        k = tf.Variable([[1.0, -2.0], [0.5, 3.0]], name="k")

        @tf.function(input_signature=[tf.TensorSpec((None, 2), tf.float32), tf.TensorSpec((None,), tf.int32)])
        def loss_fn(x, labels):
            logits = x @ k
            return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    """)

    def loss(*flags: str) -> float:
        code, out, _ = run(capsys, path, "--json", *flags)
        assert code == 0, out
        data = json.loads(out)
        assert data["target"]["inputs"].startswith("random (seed ")
        assert data["variables"][0]["verdict"] == "receives"
        return float(data["verification"]["loss"])

    assert loss() == loss("--seed", "0")
    assert loss("--seed", "1") != loss("--seed", "0")


def test_a_keras_model_gets_random_inputs_and_labels_for_its_loss(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        import keras

        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, name="hidden"), keras.layers.Dense(3, name="out")], name="net")
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    """, header=False)
    code, out, err = run(capsys, path, "--expect-receives", "*")
    assert code == 0, out + err
    assert err == f"flowcheck: analyzing model, the only compiled Keras model in {path}\n"
    assert "  inputs: random (seed 0, batch 2), from the model's input shapes and its loss" in out.splitlines()
    assert "  ok    receives *: net/hidden/kernel, net/hidden/bias, net/out/kernel, net/out/bias" in out.splitlines()


def test_optimizer_flags_a_training_step_does_not_use_are_said_unused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        import keras

        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="out")], name="net")
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    """, header=False)
    code, out, _ = run(capsys, path, "--optimizer", "adam", "--learning-rate", "0.5", "--json")
    data = json.loads(out)
    # Verified with the step's own SGD, as fit trains: the flags were silently ignored.
    assert code == 0 and data["verification"]["optimizer"].startswith("the step's own SGD")
    assert data["notes"][-1] == ("--optimizer and --learning-rate not used: a training step is verified with its own "
                                 "optimizer, as it trains")


ZERO_ARGUMENT_STEP = """
    v = tf.Variable([1.0, 2.0], name="v")
    opt = tf.keras.optimizers.SGD(0.1)

    def train_step():  # no argument: it reads its globals, as eager loops write it
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.round(w) * 2.0) + tf.reduce_sum(v * 3.0)
        grads = tape.gradient(loss, [w, v])
        opt.apply_gradients(zip(grads, [w, v]))
"""


def test_a_step_taking_no_argument_is_analyzed_as_a_step_not_called_as_a_factory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    namespace: dict[str, Any] = {}
    exec(HEADER + textwrap.dedent(ZERO_ARGUMENT_STEP).replace("    opt.apply_gradients", "    return grads  #"), namespace)
    truth = [g is None for g in namespace["train_step"]()]  # TensorFlow's own answer at the step's call
    path = write(tmp_path, ZERO_ARGUMENT_STEP)
    code, out, _ = run(capsys, f"{path}:train_step", "--json")
    data = json.loads(out)
    assert data["target"]["inputs"] == "no inputs (it takes none)" and "factory" not in data["target"]["chosen_by"]
    (site,) = data["gradient_sites"]
    assert [s["tensorflow_none"] for s in site["sources"]] == truth == [True, False]
    assert code == 1 and data["verification"]["agrees"] is True


def test_a_factory_returns_the_target_and_its_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        def build():
            v = tf.Variable(2.0, name="v")
            u = tf.Variable(3.0, name="u")

            def loss(x, scale=1.0):
                return tf.reduce_sum(x) * v * scale + tf.stop_gradient(u)

            return loss, (tf.ones((2,)),), {"scale": 0.5}
    """)
    code, out, _ = run(capsys, f"{path}:build", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["target"]["chosen_by"] == "build, named on the command line (a factory returning loss)"
    assert data["target"]["inputs"] == "returned by build()"
    assert data["target"]["kind"] == "callable"
    assert {v["name"]: v["verdict"] for v in data["variables"]} == {"v": "receives", "u": "blocked"}
    assert data["verification"]["loss"] == 5.0  # 2 * 2 * 0.5 + 3


# A model builder as users write it: every parameter has a default; a quantizing round cuts the first layer.
BUILDER = """\
    import keras


    def build_model(units=4, quantize=True):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((3,))
        h = keras.layers.Dense(units, name="first")(inputs)
        if quantize:
            h = keras.ops.round(h)
        outputs = keras.layers.Dense(1, name="last")(h)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer="sgd", loss="mse")
        return model
"""


def test_a_builder_whose_parameters_all_have_defaults_is_a_factory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, BUILDER, header=False)
    code, out, err = run(capsys, f"{path}:build_model", "--json")
    data = json.loads(out)
    assert data["target"]["chosen_by"].startswith("build_model, named on the command line (a factory returning functional")
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(BUILDER), namespace)
    model = namespace["build_model"]()
    x = tf.random.normal((2, 3))
    truth = watched_truth(lambda: tf.reduce_mean(tf.square(model(x, training=True))), model.trainable_variables)
    (site,) = data["gradient_sites"]
    assert [not s["tensorflow_none"] for s in site["sources"]] == truth
    assert code == (0 if all(truth) else 1), err


def test_a_zero_argument_loss_function_is_analyzed_itself(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        def l2_penalty():
            return 0.01 * tf.reduce_sum(w ** 2)
    """)
    code, out, _ = run(capsys, f"{path}:l2_penalty", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["target"]["inputs"] == "no inputs (it takes none)"
    assert data["variables"][0]["verdict"] == "receives"


def test_a_callable_object_is_named_as_its_user_wrote_it_and_judged_as_called(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, """
        class QuantizedLoss:
            def __init__(self):
                self.w = tf.Variable(tf.ones((2, 2)), name="qw")
                self.b = tf.Variable(tf.zeros((2,)), name="qb")

            def __call__(self, x):
                return tf.reduce_sum(tf.round(x @ self.w) + self.b)

        loss_obj = QuantizedLoss()
        loss_obj_inputs = (x,)
    """)
    code, out, _ = run(capsys, "model.py:loss_obj", "-o", "report.json")
    import runpy

    user = runpy.run_path(str(tmp_path / "model.py"))  # the same code, for the tape's answer
    document = json.loads((tmp_path / "report.json").read_text())
    loss_obj = user["loss_obj"]
    truth = tape_receives(loss_obj, user["loss_obj_inputs"], [loss_obj.w, loss_obj.b])
    assert code == 0 and {v["name"]: v["verdict"] == "receives" for v in document["variables"]} == truth
    assert {c["name"]: c["gradient"] != "none" for c in document["verification"]["variables"]} == truth
    # The report named it 'function' (tf.function's name for an object) and called it a plain function.
    assert document["target"]["name"] == "QuantizedLoss" and document["target"]["kind"] == "callable"
    assert out.splitlines()[0] == "flowcheck: QuantizedLoss (callable) in model.py"
    assert document["notes"][0].startswith("QuantizedLoss is a callable object (its class defines __call__): judged as you call it")
    assert out.splitlines()[-1] == "wrote report.json"  # the JSON file is said, as the drawings are


def test_a_class_named_as_the_target_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        import keras

        class Net(keras.Model):
            def call(self, x):
                return x

        example_inputs = (x,)
    """)
    code, _, err = run(capsys, f"{path}:Net")
    assert code == 2
    assert error_line(err) == (  # it was called with the inputs: "Net() cannot take the example inputs"
        f"flowcheck: error: InvalidTargetError: Net in {path} is a class: the target must be a tf.function, a "
        "function returning the loss, a compiled Keras model (an instance), or a zero-argument function returning one"
    )


def test_an_uncompiled_model_beside_a_loss_function_points_at_the_function(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, """
        import keras

        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])

        def loss_fn(x):
            return tf.reduce_mean(model(x) ** 2)

        example_inputs = (x,)
    """)
    code, _, err = run(capsys, path)
    assert code == 2
    assert error_line(err) == (
        f"flowcheck: error: the Keras model in {path} (model) is not compiled, so there is no training step to "
        f"analyze: name the function returning the loss ({path}:NAME; its functions: loss_fn) or compile the model"
    )


def test_the_users_module_leaves_no_trace_between_analyses(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Two projects, each with model.py importing its own helpers.py: the second must see its own.
    paths = []
    for project, name in (("one", "alpha"), ("two", "beta")):
        directory = tmp_path / project
        directory.mkdir()
        (directory / "helpers.py").write_text(f"import tensorflow as tf\nv = tf.Variable(1.0, name={name!r})\n")
        paths.append(write(directory, """
            from helpers import v

            @tf.function
            def loss_fn(x):
                return tf.reduce_sum(x @ w) * v

            example_inputs = (x,)
        """))
    path_before, modules_before = list(sys.path), set(sys.modules)
    names = []
    for path in paths:
        code, out, _ = run(capsys, path, "--json", "--no-verify")
        assert code == 0
        names.append([v["name"] for v in json.loads(out)["variables"]])
    assert names == [["w", "alpha"], ["w", "beta"]]
    assert sys.path == path_before
    leftovers = {
        m for m in set(sys.modules) - modules_before
        if str(getattr(sys.modules[m], "__file__", "") or "").startswith(str(tmp_path))
    }
    assert leftovers == set()


def test_progress_stays_off_stderr_when_it_is_not_a_terminal(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        @tf.function
        def loss_fn(x):
            return tf.reduce_sum(x @ w)

        example_inputs = (x,)
    """)
    code, _, err = run(capsys, f"{path}:loss_fn")
    assert (code, err) == (0, "")  # NAME given: nothing to announce, and no spinner off a terminal


def test_a_factory_raising_shows_the_users_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        def build():
            return undefined_model, (x,)
    """)
    code, _, err = run(capsys, f"{path}:build")
    assert code == 2
    line = line_of(path, "return undefined_model")
    assert error_line(err) == (
        f"flowcheck: error: calling build() raised NameError at {path}:{line} (return undefined_model, (x,)): "
        "name 'undefined_model' is not defined"
    )


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.usefixtures("in_root")
def test_color_and_progress_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    out, err = _Terminal(), _Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    assert main(["analyze", SEED]) == 0
    colored = out.getvalue()
    assert "\x1b[" in colored
    plain = re.sub(r"\x1b\[[0-9;]*m", "", colored)
    report = _seed_report()
    report.verify(optimizer="sgd", learning_rate=1.0)
    expected = format_summary(report, report.verification, RunInfo(
        file=SEED, chosen_by=f"loss_fn, the only tf.function in {SEED}", inputs="example_inputs"))
    # The same layout, colored; only the trailing padding of aligned columns may differ.
    assert [line.rstrip() for line in plain.splitlines()] == expected.splitlines()
    assert "flowcheck: analyzing loss_fn" in err.getvalue()


KERAS_MODEL = """\
import keras
import numpy as np

model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="out")], name="net")
model.compile(loss="mse")
"""


def test_a_keras_model_with_example_inputs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, KERAS_MODEL + 'example_inputs = (np.ones((2, 5), "float32"), np.zeros((2, 3), "float32"))\n',
                 header=False)
    code, out, _ = run(capsys, path, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["target"]["inputs"] == "example_inputs"
    assert {v["name"]: v["verdict"] for v in data["variables"]} == {"net/out/kernel": "receives", "net/out/bias": "receives"}


def test_keras_inputs_of_the_wrong_shape(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, KERAS_MODEL + 'example_inputs = (np.ones((2, 7), "float32"), np.zeros((2, 3), "float32"))\n',
                 header=False)
    code, _, err = run(capsys, path)
    assert code == 2
    assert error_line(err) == (
        "flowcheck: error: TraceError: tracing net raised ValueError: Input 0 with name 'None' of layer 'out' is "
        "incompatible with the layer: expected axis -1 of input shape to have value 5, but received input with "
        "shape (2, 7) (Sequential.call())"
    )


def test_a_keras_model_needs_x_and_y(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, KERAS_MODEL + 'example_inputs = np.ones((2, 5), "float32")\n', header=False)
    code, _, err = run(capsys, path)
    assert code == 2
    assert error_line(err) == (
        "flowcheck: error: model is a Keras model: its example inputs (example_inputs) must be (x, y) "
        "(or (x, y, sample_weight)), got 1 positional value(s)"
    )


def test_a_factory_calling_sys_exit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, """
        import sys

        def build():
            sys.exit("no GPU")
    """)
    code, _, err = run(capsys, f"{path}:build")
    assert code == 2
    line = line_of(path, 'sys.exit("no GPU")')
    assert error_line(err) == (
        f'flowcheck: error: calling build() raised SystemExit at {path}:{line} (sys.exit("no GPU")): no GPU'
    )


def test_the_spinner_waits_before_showing() -> None:
    from flowcheck.cli.main import _Progress

    err = _Terminal()
    with _Progress(True, err, delay=60.0) as progress:
        progress.step("tracing")
        progress.say("flowcheck: analyzing loss_fn")
    assert err.getvalue() == "flowcheck: analyzing loss_fn\n"  # finished before the delay: no spinner
    err = _Terminal()
    with _Progress(True, err, delay=0.0) as progress:
        progress.step("tracing")
        time.sleep(0.3)
    assert "tracing ..." in err.getvalue()
    quiet = _Terminal()
    with _Progress(False, quiet, delay=0.0) as progress:
        progress.step("tracing")
        time.sleep(0.1)
    assert quiet.getvalue() == ""


# --- drawing after the summary, --focus, --detail, --explore ----------------------------------


@pytest.mark.usefixtures("in_root")
def test_a_drawing_that_fails_comes_after_the_summary_and_keeps_the_exit_status(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flowcheck.errors import RenderError

    def too_slow(*args: object, **kwargs: object) -> str:
        raise RenderError("Graphviz dot did not finish within 60 s; draw less with focus=[...] (--focus)")

    monkeypatch.setattr("flowcheck.render.graphviz.render_svg", too_slow)
    svg, dot = tmp_path / "seed.svg", tmp_path / "seed.dot"
    code, out, _ = run(capsys, SEED, "--no-verify", "-o", str(svg), "-o", str(dot))
    lines = out.splitlines()
    assert code == 0 and not svg.exists() and dot.exists()
    summary_end = lines.index("OK: not verified (--no-verify)")
    assert lines[summary_end + 1:] == [
        f"not drawn: {svg}: RenderError: Graphviz dot did not finish within 60 s; draw less with focus=[...] (--focus)",
        f"wrote {dot}",
    ]


@pytest.mark.usefixtures("in_root")
def test_json_comes_first_and_drawing_lines_go_to_stderr(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "seed.dot"
    code, out, err = run(capsys, SEED, "--no-verify", "--json", "-o", str(target))
    assert code == 0 and json.loads(out)["outputs"] == [str(target)]
    assert f"wrote {target}" in err.splitlines()


@pytest.mark.usefixtures("in_root")
def test_focus_and_detail_shape_the_drawing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    focused, ops = tmp_path / "w2.dot", tmp_path / "ops.dot"
    code, _, _ = run(capsys, SEED, "--no-verify", "--focus", "w2*", "-o", str(focused))
    assert code == 0
    text = focused.read_text()
    assert 'id="var-1"' in text and 'id="var-0"' not in text
    code, _, _ = run(capsys, SEED, "--no-verify", "--detail", "ops", "-o", str(ops))
    assert code == 0 and '"NoOp"' in ops.read_text()
    code, out, _ = run(capsys, SEED, "--no-verify", "--focus", "nothing*", "-o", str(focused))
    assert code == 0 and out.splitlines()[-1].startswith(f"not drawn: {focused}: VariableNotFoundError: --focus 'nothing*' matches no variable")


@pytest.mark.usefixtures("in_root")
def test_a_json_report_goes_into_a_new_folder_as_a_drawing_does(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target, drawing = tmp_path / "new" / "seed.json", tmp_path / "other" / "seed.dot"
    code, out, _ = run(capsys, SEED, "--no-verify", "-o", str(target), "-o", str(drawing))
    assert code == 0 and target.exists() and drawing.exists()
    code, printed, _ = run(capsys, SEED, "--no-verify", "--json")
    assert json.loads(target.read_text())["variables"] == json.loads(printed)["variables"]


@pytest.mark.usefixtures("in_root")
def test_model_explorer_json_is_written_with_its_node_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "seed.me.json"
    code, out, _ = run(capsys, SEED, "--no-verify", "-o", str(target))
    assert code == 0 and f"wrote {target}" in out
    graphs = json.loads(target.read_text())["graphs"]
    assert any(n["label"] == "StopGradient" for n in graphs[0]["nodes"])
    data = json.loads((tmp_path / "seed.nodedata.json").read_text())
    assert data[graphs[0]["id"]]["results"]["op:StopGradient"]["value"] == 3


@pytest.mark.usefixtures("in_root")
def test_explore_without_the_extra_says_how_to_install_it_before_any_work(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_model_explorer(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "model_explorer" or name.startswith("model_explorer."):
            raise ImportError("No module named 'model_explorer'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_model_explorer)
    code, out, err = run(capsys, SEED, "--explore")
    assert (code, out) == (2, "")
    assert error_line(err) == (
        "flowcheck: error: ExplorerNotInstalledError: Model Explorer is not installed; "
        "install it with: pip install 'flowcheck[explore]'"
    )


def test_a_keras_model_frozen_whole_trains_nothing_and_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    body = """
        import keras

        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, name="out")], name="net")
        model.compile(optimizer="sgd", loss="mse")
        model.trainable = False  # meant for the backbone alone
    """
    path = write(tmp_path, body, header=False)
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(body), namespace)  # noqa: S102 -- what Keras's train_step asks for, here
    model = namespace["model"]
    before = [w.numpy() for w in model.weights]
    with pytest.warns(UserWarning, match="does not have any trainable weights"):
        model.fit(tf.ones((4, 5)), tf.ones((4, 3)), verbose=0)
    assert model.trainable_weights == [] and all((w.numpy() == b).all() for w, b in zip(model.weights, before))
    code, out, _ = run(capsys, path, "--json")
    data = json.loads(out)
    assert code == 1 and not data["ok"], out  # was "OK: verification agrees", exit 0
    code, out, _ = run(capsys, path)
    assert code == 1 and out.splitlines()[-1] == (
        "FAILED: fit trains nothing: the Keras model has no trainable weights (trainable=False when the step runs), "
        "so Keras's train_step asks for no gradient")


# A trainer made at module level, its step a method; a round cuts one of its two variables.
TRAINER = """\
    import tensorflow as tf


    class Trainer:
        def __init__(self):
            self.w, self.v = tf.Variable(1.0, name="w"), tf.Variable(2.0, name="v")

        @tf.function(input_signature=[tf.TensorSpec((None, 2))])
        def loss(self, x):
            return tf.reduce_sum(x) * self.w + tf.round(self.v)


    trainer = Trainer()
"""


def test_a_method_named_on_its_class_points_at_the_files_instance(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path, TRAINER, header=False)
    code, _, err = run(capsys, f"{path}:Trainer.loss")
    assert code == 2
    assert error_line(err).endswith(f"Trainer.loss is a method of class Trainer: name it on the instance, {path}:trainer.loss")
    code, out, _ = run(capsys, f"{path}:trainer.loss", "--json")  # as the hint says: analyzed
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(TRAINER), namespace)
    trainer = namespace["trainer"]
    truth = watched_truth(lambda: trainer.loss(tf.ones((2, 2))), [trainer.w, trainer.v])
    data = json.loads(out)
    assert [v["verdict"] == "receives" for v in data["variables"]] == truth
    assert code == 0 and data["verification"]["agrees"] is True  # a loss function: exit 1 only when the step disagrees


# A training script whose main() trains and saves: what `python train.py` runs.
MAIN_TRAINS = """\
    import tensorflow as tf

    w = tf.Variable(1.0, name="w")


    def main():
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = w * w
            w.assign_sub(0.1 * tape.gradient(loss, w))
        tf.train.Checkpoint(w=w).write("final")


    if __name__ == "__main__":
        main()
"""


def test_the_scripts_main_is_not_called_as_a_factory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, MAIN_TRAINS, name="train.py", header=False)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "train.py:main")
    assert code == 2 and out == ""
    path = "train.py"
    assert error_line(err) == (
        f"flowcheck: error: main is what {path} runs under `if __name__ == \"__main__\":`, its whole training: "
        f"`flowcheck run {path}` runs the script as python does and analyzes its training steps (or name a step: {path}:STEP)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.py"]  # it did not train nor write its checkpoint
