"""``flowcheck run`` on projects shaped as users shape them: a ``train.py`` beside its ``model.py``,
``losses.py`` and config, or in a package folder, run in-process through ``main([...])``.

Each project's files are written into ``tmp_path``; the truth is TensorFlow's own tape, run in the
test on the project's own modules.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import pytest
import tensorflow as tf

from flowcheck.cli.main import main
from truth import line_of, watched_truth


def project(root: Path, files: dict[str, str]) -> Path:
    """Write a project's files (``"pkg/model.py": text``) under ``root``; its ``train.py``'s path."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "train.py"


@pytest.fixture
def own_modules() -> Iterator[None]:
    """The project's sibling modules imported by a test are forgotten after it (each test has its own)."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if not name.startswith(("tensorflow", "keras", "flowcheck")):
            del sys.modules[name]


# A model module whose quantizing cast cuts the first layer, and a script that chdirs into its run folder.
QUANTIZED = """\
    import tensorflow as tf
    import keras


    def build():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="first"),
                                 keras.layers.Lambda(lambda h: tf.round(h)),  # quantize
                                 keras.layers.Dense(1, name="last")])


    def loss_of(model, x):
        return tf.reduce_mean(tf.square(model(x)))
"""
CHDIR = """\
    import os
    import tensorflow as tf
    import keras
    from model import build, loss_of

    os.makedirs("runs/exp1", exist_ok=True)
    os.chdir("runs/exp1")
    model = build()
    opt = keras.optimizers.SGD(0.1)


    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = loss_of(model, x)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])


    for _ in range(2):
        step(tf.ones((2, 3)))
"""


def test_a_script_that_chdirs_leaves_the_commands_folder_for_its_reports(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch, own_modules: None
) -> None:
    train = project(tmp_path / "proj", {"train.py": CHDIR, "model.py": QUANTIZED})
    monkeypatch.chdir(tmp_path)
    code = main(["run", "proj/train.py", "--json", "-o", "report.json"])
    out = capsys.readouterr().out
    assert os.getcwd() == str(tmp_path)  # the script's chdir does not outlive it
    assert (tmp_path / "report.json").is_file() and not (tmp_path / "proj/runs/exp1/report.json").exists()
    document = json.loads(out)
    assert document == json.loads((tmp_path / "report.json").read_text())
    sys.path.insert(0, str(train.parent))
    try:
        import model as module  # the project's own module, as the script imports it
    finally:
        sys.path.remove(str(train.parent))
    built = module.build()
    x = tf.ones((2, 3))
    truth = watched_truth(lambda: module.loss_of(built, x), built.trainable_variables)
    (step,) = document["steps"]
    (site,) = step["report"]["gradient_sites"]
    assert [not s["tensorflow_none"] for s in site["sources"]] == truth
    assert code == (0 if all(truth) else 1)
    barrier = site["sources"][0]["barriers"][0]["source"]
    assert (barrier["file"], barrier["line"]) == ("proj/model.py", line_of(train.parent / "model.py", "# quantize"))
    keras.utils.clear_session()


@pytest.mark.parametrize(("line", "told"), [
    ("import missing_helpers # broken", "ModuleNotFoundError at {at} (import missing_helpers # broken): "
     "No module named 'missing_helpers'"),
    ("def build(: # broken", "SyntaxError at {at} (def build(: # broken): invalid syntax"),
])
@pytest.mark.parametrize("command", ["run", "analyze"])
def test_a_sibling_module_that_fails_to_import_is_told_at_its_own_line(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch, own_modules: None, line: str, told: str, command: str
) -> None:
    uses = "from model import build, loss_of\n"  # analyze refuses a file that trains at import: one that does not
    project(tmp_path, {"train.py": CHDIR, "uses.py": uses, "model.py": textwrap.dedent(QUANTIZED) + line + "\n"})
    monkeypatch.chdir(tmp_path)
    code = main([command, "train.py" if command == "run" else "uses.py:build"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    (said,) = [e for e in err.splitlines() if e.startswith("flowcheck: error:")]
    at = f"model.py:{line_of(tmp_path / 'model.py', '# broken')}"
    assert told.format(at=at) in said


# A hand-made progress bar on stderr, as tqdm draws it: "\r" and no newline until the loop ends.
PROGRESS = """\
    import sys
    import tensorflow as tf

    w = tf.Variable([1.0, 2.0], name="w")


    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(w * w)
        w.assign_sub(0.1 * tape.gradient(loss, w))
        return loss


    for i in range(3):
        loss = step()
        sys.stderr.write(f"\\r{i + 1}/3 loss={float(loss):.3f}")
    sys.stderr.write("\\n")
"""


def test_the_report_starts_on_a_line_of_its_own_after_a_progress_bar_on_stderr(tmp_path: Path, capsys: Any) -> None:
    train = project(tmp_path, {"train.py": PROGRESS})
    code = main(["run", str(train)])
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith(f"flowcheck run {train}: ")
    assert err == "\r1/3 loss=5.000\n"  # the bar the script left unfinished, ended before the report


# A trainer holding an encoder and two heads, each a tf.Module whose weight is named "w".
MODULES = """\
    import tensorflow as tf


    class Linear(tf.Module):
        def __init__(self, n_in, n_out, name):
            super().__init__(name=name)
            self.w = tf.Variable(tf.ones((n_in, n_out)), name="w")

        def __call__(self, x):
            return x @ self.w
"""
TRAINER = """\
    import tensorflow as tf
    from nets import Linear


    class Trainer:
        def __init__(self):
            self.enc, self.cls, self.aux = Linear(2, 3, "encoder"), Linear(3, 2, "cls"), Linear(3, 2, "aux")

        def loss(self, x):
            h = self.enc(x)
            return tf.reduce_sum(self.cls(h)) + tf.reduce_sum(tf.cast(tf.argmax(self.aux(h), -1), tf.float32))

        @tf.function
        def train_step(self, x):
            with tf.GradientTape() as tape:
                loss = self.loss(x)
            variables = [self.enc.w, self.cls.w, self.aux.w]
            for v, g in zip(variables, tape.gradient(loss, variables)):
                if g is not None:
                    v.assign_sub(0.1 * g)


    def main():
        trainer = Trainer()
        for _ in range(2):
            trainer.train_step(tf.ones((1, 2)))


    if __name__ == "__main__":
        main()
"""


def test_variables_of_modules_named_alike_are_named_by_their_modules(
    tmp_path: Path, capsys: Any, own_modules: None
) -> None:
    train = project(tmp_path, {"train.py": TRAINER, "nets.py": MODULES})
    code = main(["run", str(train), "--json"])
    document = json.loads(capsys.readouterr().out)
    namespace: dict[str, Any] = {}
    sys.path.insert(0, str(tmp_path))
    try:
        exec(textwrap.dedent(TRAINER), namespace)
    finally:
        sys.path.remove(str(tmp_path))
    trainer = namespace["Trainer"]()
    variables = [trainer.enc.w, trainer.cls.w, trainer.aux.w]
    truth = watched_truth(lambda: trainer.loss(tf.ones((1, 2))), variables)
    (site,) = document["steps"][0]["report"]["gradient_sites"]
    assert {s["name"]: not s["tensorflow_none"] for s in site["sources"]} == dict(
        zip(["encoder/w", "cls/w", "aux/w"], truth))
    assert code == (0 if all(truth) else 1)


# A package run as `python -m proj.train`: its modules import each other relatively.
PACKAGE = {
    "proj/__init__.py": "",
    "proj/layers.py": """\
        import tensorflow as tf
        import keras


        class Gate(keras.layers.Layer):
            def build(self, shape):
                self.g = self.add_weight(shape=(shape[-1],), initializer="ones", name="g")

            def call(self, x):
                return x * tf.cast(self.g > 0.5, x.dtype)  # hard gate
    """,
    "proj/engine.py": """\
        import tensorflow as tf
        import keras
        from .layers import Gate

        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), Gate(), keras.layers.Dense(1)])
        opt = keras.optimizers.SGD(0.1)


        def loss_of(x, y):
            return tf.reduce_mean((model(x) - y) ** 2)


        @tf.function
        def train_step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_of(x, y)
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])
    """,
    "proj/train.py": """\
        import sys
        import tensorflow as tf
        from .engine import train_step

        if __name__ == "__main__":
            print("argv", sys.argv[1:], sys.argv[0].endswith("train.py"))
            for _ in range(2):
                train_step(tf.ones((2, 3)), tf.zeros((2, 1)))
    """,
}


def test_a_packages_module_runs_as_python_m_runs_it(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch, own_modules: None
) -> None:
    project(tmp_path, PACKAGE)
    monkeypatch.chdir(tmp_path)
    code = main(["run", "-m", "proj.train", "--json", "--", "--epochs", "2"])
    out, err = capsys.readouterr()
    assert "argv ['--epochs', '2'] True" in err
    document = json.loads(out)
    assert document["script"] == os.path.join("proj", "train.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    from proj import engine  # the module the run imported: its model, as the script trained it

    x, y = tf.ones((2, 3)), tf.zeros((2, 1))
    truth = watched_truth(lambda: engine.loss_of(x, y), engine.model.trainable_variables)
    (site,) = document["steps"][0]["report"]["gradient_sites"]
    assert [not s["tensorflow_none"] for s in site["sources"]] == truth
    assert code == (0 if all(truth) else 1)
    blocked = [s for s in site["sources"] if s["tensorflow_none"]]
    lines = {(b["source"]["file"], b["source"]["line"]) for s in blocked for b in s["barriers"]}
    assert lines == {(os.path.join("proj", "layers.py"), line_of(tmp_path / "proj/layers.py", "# hard gate"))}
    keras.utils.clear_session()


def test_a_packages_module_run_by_its_path_is_told_how_to_run_it(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch, own_modules: None
) -> None:
    project(tmp_path, PACKAGE)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "proj/train.py"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].endswith(
        "attempted relative import with no known parent package "
        "(it is module proj.train of a package: flowcheck run -m proj.train runs it as python -m does)")
    assert main(["run", "-m", "proj.missing"]) == 2
    assert capsys.readouterr().err.startswith("flowcheck: error: no module named 'proj.missing'")
    assert main(["run", "-m", "proj.train", "--epochs", "3"]) == 2  # "3" is not taken for a script
    assert capsys.readouterr().err.splitlines()[-1] == ("flowcheck: error: unrecognized arguments: --epochs 3 (the script's "
                                                         "own arguments go after --: flowcheck run -m proj.train -- --epochs 3)")


# Training whose finally always saves the weights and logs it, as scripts guard against Ctrl-C.
SAVES_IN_FINALLY = """\
    import tensorflow as tf

    w = tf.Variable([1.0, -1.0], name="w")
    scale = tf.Variable(3.0, name="scale")


    def loss_of():
        return tf.reduce_sum(w * w) * tf.round(scale)


    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_of()
        for v, g in zip([w, scale], tape.gradient(loss, [w, scale])):
            if g is not None:
                v.assign_sub(0.1 * g)


    try:
        for _ in range(5):
            step()
    finally:
        tf.train.Checkpoint(w=w, scale=scale).write("ckpt/final")  # keep the latest weights
        with open("train.log", "a") as log:
            log.write("saved\\n")
"""


def test_the_scripts_finally_does_not_save_the_step_the_analysis_ran(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = project(tmp_path, {"train.py": SAVES_IN_FINALLY})
    monkeypatch.chdir(tmp_path)
    tracing = sys.gettrace()
    code = main(["run", "train.py", "--json"])
    assert sys.gettrace() is tracing
    document = json.loads(capsys.readouterr().out)
    assert document["stopped"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.py"]  # no checkpoint, no log line
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(SAVES_IN_FINALLY).split("try:")[0], namespace)
    truth = watched_truth(namespace["loss_of"], [namespace["w"], namespace["scale"]])
    (site,) = document["steps"][0]["report"]["gradient_sites"]
    assert [not s["tensorflow_none"] for s in site["sources"]] == truth
    assert code == (0 if all(truth) else 1)
    assert train.is_file()


# The stop comes inside `with` blocks of the script: a strategy's scope and an eager tape asked inside its block.
INSIDE_WITH = """\
    import tensorflow as tf

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        w = tf.Variable([1.0, 2.0], name="w")
        b = tf.Variable(1.0, name="b")
        for _ in range(3):
            with tf.GradientTape() as outer:  # (a second-order step: the inner gradient is asked inside it)
                with tf.GradientTape() as tape:
                    loss = tf.reduce_sum(w * w) + tf.cast(tf.cast(b, tf.int32), tf.float32)
                grads = tape.gradient(loss, [w, b])
            w.assign_sub(0.1 * grads[0])
"""


def test_the_stop_inside_with_blocks_leaves_their_scopes_and_tapes(tmp_path: Path, capsys: Any) -> None:
    from tensorflow.python.eager import record

    train = project(tmp_path, {"train.py": INSIDE_WITH})
    code = main(["run", str(train), "--json"])
    document = json.loads(capsys.readouterr().out)
    assert document["stopped"] is True
    assert not tf.distribute.has_strategy() and not record.could_possibly_record()  # every __exit__ ran
    w, b = tf.Variable([1.0, 2.0]), tf.Variable(1.0)
    truth = watched_truth(lambda: tf.reduce_sum(w * w) + tf.cast(tf.cast(b, tf.int32), tf.float32), [w, b])
    assert [not s["tensorflow_none"] for s in document["steps"][0]["site"]["sources"]] == truth
    assert code == (0 if all(truth) else 1)


# Saliency maps of the validation batches (a gradient for the inputs only), then the training loop.
SALIENCY_FIRST = """\
    import tensorflow as tf
    from model import build, loss_of

    model = build()


    def saliency(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            top = tf.reduce_max(model(x), axis=-1)
        return tape.gradient(top, x)


    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = loss_of(model, x)
        for v, g in zip(model.trainable_variables, tape.gradient(loss, model.trainable_variables)):
            if g is not None:
                v.assign_sub(0.1 * g)


    for i in range(4):
        saliency(tf.fill((2, 3), float(i)))
    for _ in range(2):
        step(tf.ones((2, 3)))
"""


def test_a_saliency_loop_before_training_does_not_end_the_round_before_the_training_step(
    tmp_path: Path, capsys: Any, own_modules: None
) -> None:
    train = project(tmp_path, {"train.py": SALIENCY_FIRST, "model.py": QUANTIZED})
    code = main(["run", str(train), "--json"])
    document = json.loads(capsys.readouterr().out)
    assert [s["kind"] for s in document["steps"]] == ["eager tape.gradient", "tf.function"]
    sys.path.insert(0, str(tmp_path))
    try:
        import model as module
    finally:
        sys.path.remove(str(tmp_path))
    built = module.build()
    truth = watched_truth(lambda: module.loss_of(built, tf.ones((2, 3))), built.trainable_variables)
    (site,) = document["steps"][1]["report"]["gradient_sites"]
    assert [not s["tensorflow_none"] for s in site["sources"]] == truth
    assert code == (0 if all(truth) else 1)
    keras.utils.clear_session()


def test_analyze_a_packages_module_that_imports_its_siblings_relatively(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch, own_modules: None
) -> None:
    files = dict(PACKAGE)
    files["proj/engine.py"] = textwrap.dedent(PACKAGE["proj/engine.py"]) + "example_inputs = (tf.ones((2, 3)), tf.zeros((2, 1)))\n"
    project(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    code = main(["analyze", "proj/engine.py:train_step", "--json"])
    document = json.loads(capsys.readouterr().out)
    assert "proj" not in sys.modules  # the package is forgotten with the file
    monkeypatch.syspath_prepend(str(tmp_path))
    from proj import engine

    truth = watched_truth(lambda: engine.loss_of(*engine.example_inputs), engine.model.trainable_variables)
    (site,) = document["gradient_sites"]
    assert [not s["tensorflow_none"] for s in site["sources"]] == truth
    assert code == (0 if all(truth) else 1)
    keras.utils.clear_session()


# A script quieting TensorFlow's C++ log at its top, before its import, then an op that logs a warning.
QUIET_LOG = """\
    import os
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tensorflow as tf

    try:
        tf.gather(tf.ones(3), 7)  # logs a C++ warning before it raises
    except tf.errors.InvalidArgumentError:
        print("caught")
    w = tf.Variable(1.0, name="w")
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.round(w) * 2.0
        tape.gradient(loss, w)
"""


@pytest.mark.slow
def test_tensorflows_import_time_settings_of_the_scripts_top_are_honoured(tmp_path: Path) -> None:
    import subprocess

    train = project(tmp_path, {"train.py": QUIET_LOG})
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    alone = subprocess.run([sys.executable, str(train)], capture_output=True, text=True, env=env, timeout=300)
    code = "import sys; from flowcheck.cli.main import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run([sys.executable, "-c", code, "run", str(train), "--json"], capture_output=True, text=True,
                         env=env, timeout=300, cwd=tmp_path)
    assert "caught" in alone.stdout and "caught" in run.stderr  # (--json: the script's output on stderr)
    assert "is not in [0, 3)" not in alone.stderr and "is not in [0, 3)" not in run.stderr  # its log stays quiet
    w = tf.Variable(1.0)
    truth = watched_truth(lambda: tf.round(w) * 2.0, [w])
    (step,) = json.loads(run.stdout)["steps"]
    assert [not s["tensorflow_none"] for s in step["site"]["sources"]] == truth
    assert run.returncode == (0 if all(truth) else 1)


# Transfer learning in two phases of one batch each (a smoke-test config): the head alone, then everything
# after compile() with a lower learning rate; the base's quantizing round cuts its first layer.
TWO_PHASES = """\
    import numpy as np
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="b1"),
                             keras.layers.Lambda(lambda h: tf.round(h)), keras.layers.Dense(3, name="b2")], name="base")
    model = keras.Sequential([base, keras.layers.Dense(1, name="head")], name="model")
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 1), "float32")


    def phase(trainable, lr):
        base.trainable = trainable
        model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
        return model


    if __name__ == "__main__":
        phase(False, 0.1).fit(x, y, batch_size=8, epochs=1, verbose=0)
        phase(True, 0.01).fit(x, y, batch_size=8, epochs=1, verbose=0)
"""


def test_a_second_fit_after_compile_reached_in_the_first_round_is_a_step_of_its_own(
    tmp_path: Path, capsys: Any
) -> None:
    train = project(tmp_path, {"train.py": TWO_PHASES})
    keras.utils.clear_session()
    code = main(["run", str(train), "--json"])
    document = json.loads(capsys.readouterr().out)
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(TWO_PHASES), namespace)
    truths = []
    for trainable in (False, True):  # TensorFlow's answer for what each phase's train_step asks
        model = namespace["phase"](trainable, 0.1)
        x, y = tf.constant(namespace["x"]), tf.constant(namespace["y"])
        truths.append(watched_truth(lambda: tf.reduce_mean(tf.square(model(x, training=True) - y)),
                                    model.trainable_variables))
    assert [[not s["tensorflow_none"] for s in step["report"]["gradient_sites"][0]["sources"]]
            for step in document["steps"]] == truths
    assert code == (0 if all(map(all, truths)) else 1)
    keras.utils.clear_session()


def test_analyze_refuses_a_file_that_trains_when_imported(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch, own_modules: None
) -> None:
    project(tmp_path, {"train.py": SAVES_IN_FINALLY})
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", "train.py:step"]) == 2
    said = capsys.readouterr().err.strip()
    at = line_of(tmp_path / "train.py", "        step()")
    assert said == (f"flowcheck: error: importing train.py would train: line {at} (step()) runs at import; `flowcheck run "
                    "train.py` runs it as python does and analyzes its training steps (or put its training under "
                    "`if __name__ == \"__main__\":`)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.py"]  # not imported: no checkpoint, no log
    # Without the training at its top, the same file is analyzed, and agrees with the tape.
    project(tmp_path, {"train.py": SAVES_IN_FINALLY.split("    try:")[0]})
    code = main(["analyze", "train.py:step", "--json"])
    document = json.loads(capsys.readouterr().out)
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(SAVES_IN_FINALLY).split("try:")[0], namespace)
    truth = watched_truth(namespace["loss_of"], [namespace["w"], namespace["scale"]])
    (site,) = document["gradient_sites"]
    assert [not s["tensorflow_none"] for s in site["sources"]] == truth
    assert code == (0 if all(truth) else 1)


# The run's results written by a @contextmanager's finally around the training loop.
CONTEXT_MANAGER = """\
    import contextlib
    import tensorflow as tf

    w = tf.Variable(1.0, name="w")


    @contextlib.contextmanager
    def experiment(path):
        try:
            yield
        finally:
            with open(path, "a") as f:  # the results of the run, always written
                f.write("results\\n")


    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = w * w
        w.assign_sub(0.1 * tape.gradient(loss, w))


    with experiment("results.txt"):
        for _ in range(3):
            step()
"""


def test_a_context_managers_finally_around_the_loop_does_not_write_either(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    project(tmp_path, {"train.py": CONTEXT_MANAGER})
    monkeypatch.chdir(tmp_path)
    code = main(["run", "train.py", "--json"])
    document = json.loads(capsys.readouterr().out)
    assert document["stopped"] is True and sorted(p.name for p in tmp_path.iterdir()) == ["train.py"]
    w = tf.Variable(1.0)
    truth = watched_truth(lambda: w * w, [w])
    (site,) = document["steps"][0]["report"]["gradient_sites"]
    assert [not s["tensorflow_none"] for s in site["sources"]] == truth
    assert code == (0 if all(truth) else 1)
