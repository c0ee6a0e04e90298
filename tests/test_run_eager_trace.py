"""``flowcheck run``: an eager site's cuts named by a trace of the script's function holding its tape
(``flowcheck.run.eager_trace``). The truth is TensorFlow's answer at the script's own call, computed
here by running the script's first round; a barrier the trace names must never contradict it, nor
may the trace touch what the script leaves behind.
"""

from __future__ import annotations

import gc
import json
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from flowcheck.cli.main import main
from truth import line_of, tf_variable

HEAD = """\
    import tensorflow as tf

    enc = tf.keras.layers.Dense(3, name="enc")
    head = tf.keras.layers.Dense(1, name="head")
    aux = tf.Variable(1.0, name="aux")
    x = tf.ones((4, 2))
"""


def one_round(text: str) -> dict[str, Any]:
    """The script's globals after its first round (``range(2)`` -> ``range(1)``), as Python runs it."""
    namespace: dict[str, Any] = {}
    exec(textwrap.dedent(text).replace("range(2)", "range(1)"), namespace)
    return namespace


def sites(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> tuple[str, list[dict[str, Any]], str]:
    """The script's path, the eager sites ``flowcheck run --json --continue`` reports, and its stderr."""
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(text))
    capsys.readouterr()  # what the truth's own run printed
    main(["run", str(path), "--json", "--continue"])
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    return str(path), [step["site"] for step in document["steps"]], captured.err


def barrier_lines(site: dict[str, Any]) -> list[list[int]]:
    return [[b["source"]["line"] for b in s["barriers"]] for s in site["sources"]]


def test_a_stop_gradient_in_the_branch_a_python_if_did_not_take_eagerly_is_not_named(tmp_path: Path, capsys: Any) -> None:
    """Eagerly ``aux`` gets None because the branch that reads it is not taken; the trace holds both
    branches and cuts ``aux`` in the untaken one: that op is not why TensorFlow gave None."""
    text = HEAD + """\
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(head(enc(x)))
            if loss < 100.0:
                loss = loss + 0.0
            else:
                loss = loss + tf.stop_gradient(aux)  # untaken
        return tape.gradient(loss, [aux, *enc.trainable_variables])

    for step in range(2):
        grads = train_step(x)
    """
    truth = one_round(text)
    assert [g is None for g in truth["grads"]] == [True, False, False]
    path, [site], err = sites(tmp_path, capsys, text)
    assert [s["tensorflow_none"] for s in site["sources"]] == [True, False, False]
    assert barrier_lines(site) == [[], [], []]
    assert f"train.py:{line_of(path, '# untaken')}" not in json.dumps(site)


def test_two_tapes_asked_on_one_line_each_get_the_cut_of_their_own_call(tmp_path: Path, capsys: Any) -> None:
    """A GAN's ``g = gt.gradient(...); d = dt.gradient(...)`` on one line: two sites, each its own cut."""
    text = HEAD + """\
    def train_step(x):
        with tf.GradientTape() as gt, tf.GradientTape() as dt:
            fake = enc(x)
            g_loss = tf.reduce_mean(head(tf.stop_gradient(fake)))  # g cut
            d_loss = tf.reduce_mean(head(fake)) + tf.reduce_mean(tf.round(aux))  # d cut
        gg = gt.gradient(g_loss, enc.trainable_variables); dg = dt.gradient(d_loss, [aux])
        return gg, dg

    for step in range(2):
        gg, dg = train_step(x)
    """
    truth = one_round(text)
    assert [g is None for g in truth["gg"]] == [True, True] and [g is None for g in truth["dg"]] == [True]
    path, found, err = sites(tmp_path, capsys, text)
    assert [[s["tensorflow_none"] for s in site["sources"]] for site in found] == [[True, True], [True]]
    assert [barrier_lines(site) for site in found] == [
        [[line_of(path, "# g cut")]] * 2, [[line_of(path, "# d cut")]]]


def test_the_trace_of_a_function_leaves_the_scripts_files_and_output_alone(tmp_path: Path, capsys: Any) -> None:
    """The trace runs the function's Python once more after the script has ended: no line printed,
    no file written, no summary recorded by it."""
    text = HEAD + f"""\
    import numpy as np
    log = {str(tmp_path / "log.txt")!r}
    handle = open({str(tmp_path / "handle.txt")!r}, "w")

    def train_step(x, step):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.round(head(enc(x))))  # cut
        print("step", step, "loss", loss)
        with open(log, "a") as f:
            f.write(f"step {{step}}\\n")
        np.save({str(tmp_path)!r} + f"/loss_{{step}}.npy", np.zeros(1))
        handle.write(f"step {{step}} {{float(loss)}}\\n")
        handle.flush()
        return tape.gradient(loss, enc.trainable_variables)

    for step in range(2):
        grads = train_step(x, step)
    """
    truth = one_round(text)
    assert [g is None for g in truth["grads"]] == [True, True]
    truth["handle"].close()
    (tmp_path / "log.txt").unlink()
    (tmp_path / "loss_0.npy").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # the handle the script leaves open
        path, [site], err = sites(tmp_path, capsys, text)
        gc.collect()
    assert barrier_lines(site) == [[line_of(path, "# cut")]] * 2  # traced
    assert (tmp_path / "log.txt").read_text() == "step 0\nstep 1\n"  # the script's own two rounds
    handled = [line.split(" ")[:2] for line in (tmp_path / "handle.txt").read_text().splitlines()]
    assert handled == [["step", "0"], ["step", "1"]]  # the script's own lines, through the handle it left open
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == ["loss_0.npy", "loss_1.npy"]
    printed = [line.split(" loss ")[0] for line in err.splitlines() if line.startswith("step")]
    assert printed == ["step 0", "step 1"] and 'Tensor("' not in err  # its two rounds, nothing symbolic


def test_closures_of_one_def_are_told_apart_by_their_cells(tmp_path: Path, capsys: Any) -> None:
    """Two steps made by one factory: the trace is of the closure that made the call, with its own cells."""
    text = HEAD + """\
    def make_train_step(cut):
        def train_step(x):
            with tf.GradientTape() as tape:
                h = enc(x)
                h = cut(h)
                loss = tf.reduce_mean(head(h))
            return tape.gradient(loss, enc.trainable_variables)
        return train_step

    plain = make_train_step(tf.identity)
    rounded = make_train_step(tf.round)
    stopped = make_train_step(tf.stop_gradient)
    for step in range(2):
        grads = stopped(x)
    """
    truth = one_round(text)
    assert [g is None for g in truth["grads"]] == [True, True]
    path, [site], err = sites(tmp_path, capsys, text)
    [[first], [second]] = [[b["op_type"] for b in s["barriers"]] for s in site["sources"]]
    assert first == second == "StopGradient"


def test_a_function_that_rebinds_its_parameter_is_not_traced_with_the_rebound_value(tmp_path: Path, capsys: Any) -> None:
    """``stage += 1`` before the tape: the frame no longer holds the argument of the call, and a trace
    with the rebound value takes another path (a stop_gradient where the call's own cut was a round)."""
    text = HEAD + """\
    def train_step(x, stage):
        stage += 1
        with tf.GradientTape() as tape:
            h = enc(x)
            h = tf.round(h) if stage == 2 else tf.stop_gradient(h)  # cut
            loss = tf.reduce_mean(head(h))
        return tape.gradient(loss, enc.trainable_variables)

    for step in range(2):
        grads = train_step(x, 1)
    """
    truth = one_round(text)
    assert [g is None for g in truth["grads"]] == [True, True]
    path, [site], err = sites(tmp_path, capsys, text)
    assert not any(b["op_type"] == "StopGradient" for s in site["sources"] for b in s["barriers"])


def test_two_steps_called_on_one_line_are_one_round(tmp_path: Path, capsys: Any) -> None:
    """``ga = plain(x); gb = stopped(x)``: two closures of one def, one line, one round. The second
    call is not the first's next call, so TensorFlow's None for it is no finding about the first."""
    text = HEAD + """\
    def make_train_step(cut):
        def train_step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(head(cut(enc(x))))
            return tape.gradient(loss, enc.trainable_variables)
        return train_step

    plain, stopped = make_train_step(tf.identity), make_train_step(tf.stop_gradient)
    for step in range(2):
        ga = plain(x); gb = stopped(x)
    """
    truth = one_round(text)
    assert [g is None for g in truth["ga"]] == [False, False] and [g is None for g in truth["gb"]] == [True, True]
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(text))
    capsys.readouterr()
    main(["run", str(path), "--json", "--continue"])
    document = json.loads(capsys.readouterr().out)
    assert [step["next_call"] for step in document["steps"]] == [None]
    assert [s["tensorflow_none"] for s in document["steps"][0]["site"]["sources"]] == [False, False]


def test_a_sys_exit_the_trace_runs_in_a_branch_the_call_did_not_take_leaves_the_report_whole(
    tmp_path: Path, capsys: Any,
) -> None:
    """``if tf.math.is_nan(loss): sys.exit(3)``: eagerly never taken; the trace runs both branches'
    Python, so it meets the ``sys.exit``. The script ran to its end; the report is still told."""
    text = HEAD + """\
    import sys

    def train_step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.round(head(enc(x))))
        if tf.math.is_nan(loss):
            print("NaN loss, stopping")
            sys.exit(3)
        return tape.gradient(loss, enc.trainable_variables)

    for step in range(2):
        grads = train_step(x)
    print("done")
    """
    truth = one_round(text)
    assert [g is None for g in truth["grads"]] == [True, True]
    path, [site], err = sites(tmp_path, capsys, text)
    assert [s["tensorflow_none"] for s in site["sources"]] == [True, True]
    assert "done" in err.splitlines() and "NaN loss, stopping" not in err


def test_a_branch_on_state_the_script_changed_since_names_no_op_its_call_did_not_run(tmp_path: Path, capsys: Any) -> None:
    """A curriculum trainer: its first call cuts at a round (epoch 0), later ones at a stop_gradient.
    Traced once the script has ended, its ``epoch`` takes the later path; the stop_gradient's line
    never ran in the first call's tape block, so it is not named."""
    text = HEAD + """\
    class Trainer:
        def __init__(self):
            self.epoch = 0

        def train_step(self, x):
            with tf.GradientTape() as tape:
                h = enc(x)
                if self.epoch == 0:
                    h = tf.round(h)  # first epoch
                else:
                    h = tf.stop_gradient(h)  # later epochs
                loss = tf.reduce_mean(head(h))
            self.epoch += 1
            return tape.gradient(loss, enc.trainable_variables)

    trainer = Trainer()
    for step in range(2):
        grads = trainer.train_step(x)
    """
    truth = one_round(text)
    assert [g is None for g in truth["grads"]] == [True, True]
    before = sys.gettrace()
    if before is not None:
        pytest.skip("a tracer (coverage, a debugger) is set: the tape's block is not heard")
    path, [site], err = sites(tmp_path, capsys, text)
    assert sys.gettrace() is before  # Python's tracer as it was
    assert [s["tensorflow_none"] for s in site["sources"]] == [True, True]
    assert f"train.py:{line_of(path, '# later epochs')}" not in json.dumps(site)
    assert all(lines in ([], [line_of(path, "# first epoch")]) for lines in barrier_lines(site))


def test_a_script_stopped_inside_a_tape_block_leaves_no_tracer(tmp_path: Path, capsys: Any) -> None:
    """``tape.gradient`` inside the ``with`` block: the script is stopped at its second round while the
    block's lines are heard; once it has ended, Python's tracer is as it was."""
    text = HEAD + """\
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(head(tf.round(enc(x))))  # cut
            grads = tape.gradient(loss, enc.trainable_variables)
        return grads

    for step in range(2):
        grads = train_step(x)
    """
    truth = one_round(text)
    assert [g is None for g in truth["grads"]] == [True, True]
    if sys.gettrace() is not None:
        pytest.skip("a tracer (coverage, a debugger) is set: the tape's block is not heard")
    path = tmp_path / "train.py"
    path.write_text(textwrap.dedent(text))
    capsys.readouterr()
    main(["run", str(path), "--json"])  # stopped at its second round
    assert sys.gettrace() is None
    [step] = json.loads(capsys.readouterr().out)["steps"]
    assert barrier_lines(step["site"]) == [[line_of(str(path), "# cut")]] * 2


UNREAD = HEAD + """\
    spare = tf.Variable(2.0, name="spare")

    def loss_of(x):
        return tf.reduce_mean(head(enc(x))) + 0.0 * CUT

    def train_step(x):
        with tf.GradientTape() as tape:
            loss = loss_of(x)
        return tape.gradient(loss, [spare, aux, *enc.trainable_variables])

    for step in range(2):
        grads = train_step(x)
    """


@pytest.mark.parametrize("cut", ["0.0", "tf.stop_gradient(aux)  # cut"], ids=["only unused", "unused and cut"])
def test_a_variable_the_tapes_block_never_read_is_unused_not_cut_by_an_unnamed_op(
    tmp_path: Path, capsys: Any, cut: str,
) -> None:
    """TensorFlow gives None to a variable the block never read: nothing cuts it, and flowcheck says it is
    unused rather than that it cannot name the op that cuts it; a source the block read (under a
    ``stop_gradient``, which pauses the tape) is still cut, at its line."""
    from tensorflow.python.eager import record

    text = UNREAD.replace("CUT", cut)
    truth = one_round(text)
    none = [g is None for g in truth["grads"]]
    sources = [truth["spare"], truth["aux"], *truth["enc"].trainable_variables]
    with record.VariableWatcher() as watcher:  # TensorFlow's own record of the variables the block reads
        truth["loss_of"](truth["x"])
    read = {id(v) for v in watcher.watched_variables()}
    unused = [id(tf_variable(v)) not in read for v in sources]
    assert none == [True, True, False, False] and unused == [True, "stop_gradient" not in cut, False, False]
    path, [site], _ = sites(tmp_path, capsys, text)
    assert [s["tensorflow_none"] for s in site["sources"]] == none
    assert [s["verdict"] for s in site["sources"]] == [
        "unused" if n and u else "blocked" if n else "receives" for n, u in zip(none, unused)]
    assert not any("cannot name the op" in note for note in site["notes"])
    assert any(note.startswith("unused: ") for note in site["notes"])
    assert barrier_lines(site) == [[], [] if unused[1] else [line_of(path, "# cut")], [], []]


def test_a_source_the_traced_function_never_reads_is_told_unused_not_left_unexplained(tmp_path: Path, capsys: Any) -> None:
    """The walkthrough's ``grad()`` asked for a variable its loss never reads (a peephole weight left over)
    beside one it cuts: the trace names the cut, and tells the other unused instead of advising a tf.function."""
    text = HEAD + """\
    peep = tf.Variable(tf.zeros([3]), name="peep")

    def grad(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(head(enc(x))) + tf.reduce_mean(tf.stop_gradient(aux))  # cut
        return tape.gradient(loss, [aux, peep, *enc.trainable_variables])

    for step in range(2):
        grads = grad(x)
    """
    truth = [g is None for g in one_round(text)["grads"]]
    path, [site], _ = sites(tmp_path, capsys, text)
    assert [s["tensorflow_none"] for s in site["sources"]] == truth == [s["verdict"] != "receives" for s in site["sources"]]
    assert [s["verdict"] for s in site["sources"]][:2] == ["blocked", "unused"]  # aux cut; peep not read
    assert barrier_lines(site) == [[line_of(path, "# cut")], [], [], []]
    assert not any("put the step" in note for note in site["notes"])


def test_a_loss_made_after_the_tapes_block_of_an_eager_method_is_told_so_by_its_trace(tmp_path: Path, capsys: Any) -> None:
    """A Trainer's eager ``train_step`` computes its loss after the tape's block: TensorFlow gives None to every
    weight, and applying nothing raises. The trace of the method (which raises there too, before TensorFlow lists
    the variables it read: its model is reached through ``self`` only) tells why."""
    text = HEAD + """\
    class Trainer:
        def __init__(self):
            self.model = tf.keras.Sequential([tf.keras.Input((2,)), tf.keras.layers.Dense(3, name="body")])
            self.optimizer = tf.keras.optimizers.SGD(0.1)

        def train_step(self, x):
            with tf.GradientTape() as tape:
                pred = self.model(x)
            loss = tf.reduce_mean(pred)
            grads = tape.gradient(loss, self.model.trainable_variables)
            self.optimizer.apply_gradients([(g, v) for g, v in zip(grads, self.model.trainable_variables) if g is not None])
            return grads

    trainer = Trainer()
    for step in range(2):
        grads = trainer.train_step(x)
    """
    namespace: dict[str, Any] = {}
    with pytest.raises(ValueError):  # the script alone: nothing to apply
        exec(textwrap.dedent(text), namespace)
    model = namespace["trainer"].model
    with namespace["tf"].GradientTape() as tape:  # TensorFlow's answer at its gradient call
        pred = model(namespace["x"])
    truth = [g is None for g in tape.gradient(namespace["tf"].reduce_mean(pred), model.trainable_variables)]
    _, [site], _ = sites(tmp_path, capsys, text)
    assert [s["tensorflow_none"] for s in site["sources"]] == truth == [s["verdict"] != "receives" for s in site["sources"]]
    assert [s["verdict"] for s in site["sources"]] == ["unused", "unused"]
    assert any("not computed while the tape recorded" in note for note in site["notes"])
