"""The user-style example scripts, each run unchanged under ``flowcheck run`` (in-process).

The truth is computed here, independently of flowcheck: the script is run again with every
``tf.function`` executed eagerly and ``tf.GradientTape.gradient`` recorded, so that each gradient
call of the first round gives TensorFlow's own answer, source by source. flowcheck's verdict on
every source of every site must equal it, and the barriers must sit at the line the script's own
text marks (found here by searching the script for the cut).
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from typing import Any

import keras
import pytest
import tensorflow as tf

from flowcheck.cli.main import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Each test runs a whole example training script twice (once eagerly for the truth): make test runs
# them, the quick loop leaves them to test_run.py and test_run_keras.py, which run small scripts.
pytestmark = pytest.mark.slow

# script, its arguments, exit status, text of the line that cuts (None: no barrier expected)
CASES = [
    ("quickstart_int_cast.py", [], 1, "tf.cast(tf.cast(h * 4.0, tf.int32)"),
    ("argmax_gate.py", ["--steps", "2"], 1, "choice = tf.argmax(gate(x), axis=1)"),
    ("subclassed_train_step.py", [], 1, "features = self.encoder(x)"),
    ("gan_two_tapes.py", ["--steps", "2"], 0, None),
    ("fit_round_loss.py", [], 1, "tf.round(y_pred)"),
    ("eager_loop.py", [], 1, None),
    ("cut_everywhere.py", [], 1, "predicted = tf.argmax(model(x, training=True), axis=1)"),
    ("class_trainer.py", ["--epochs", "1"], 1, None),
    ("mixed_precision.py", [], 1, "h = tf.cast(tf.cast(h, tf.int32), h.dtype)"),
]


class _FirstRoundOver(BaseException):
    pass


def tape_truth(path: Path, argv: list[str]) -> dict[tuple[str, ...], list[bool]]:
    """Per gradient call of the first round: its source names -> whether TensorFlow gave None."""
    calls: dict[tuple[str, int], tuple[tuple[str, ...], list[bool]]] = {}
    original = tf.GradientTape.gradient

    def gradient(tape: Any, target: Any, sources: Any, *args: Any, **kwargs: Any) -> Any:
        caller = sys._getframe(1)  # noqa: SLF001
        key = (caller.f_code.co_filename, caller.f_lineno)
        if key in calls:
            raise _FirstRoundOver
        result = original(tape, target, sources, *args, **kwargs)
        names = tuple(str(getattr(s, "path", None) or s.name).split(":")[0] for s in tf.nest.flatten(sources))
        calls[key] = (names, [g is None for g in tf.nest.flatten(result)])
        return result

    keras.utils.clear_session()
    saved_argv = sys.argv
    tf.GradientTape.gradient = gradient  # type: ignore[method-assign]
    tf.config.run_functions_eagerly(True)
    sys.argv = [str(path), *argv]
    try:
        runpy.run_path(str(path), run_name="__main__")
    except _FirstRoundOver:
        pass
    except ValueError as exc:  # a step cut everywhere: its apply_gradients raises after the call
        assert "No gradients provided for any variable" in str(exc)
    finally:
        tf.GradientTape.gradient = original  # type: ignore[method-assign]
        tf.config.run_functions_eagerly(False)
        sys.argv = saved_argv
        keras.mixed_precision.set_global_policy("float32")
    return dict(calls.values())


def flowcheck_run(path: Path, argv: list[str], capsys: Any) -> tuple[int, dict[str, Any]]:
    keras.utils.clear_session()
    try:
        code = main(["run", str(path), "--json", "--", *argv])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    captured = capsys.readouterr()
    assert captured.out, captured.err
    return code, json.loads(captured.out)


def verdicts(document: dict[str, Any]) -> dict[tuple[str, ...], tuple[list[bool], list[int]]]:
    """Per site (or, for a report without sites, per step): source names -> (receives, barrier lines)."""
    found = {}
    for step in document["steps"]:
        sites = [step["site"]] if step["site"] else step["report"]["gradient_sites"]
        groups = [site["sources"] for site in sites]
        if not sites:
            groups = [[v for v in step["report"]["variables"] if v["trainable"]]]
        for sources in groups:
            lines = [b["source"]["line"] for s in sources for b in s["barriers"] if b["source"]]
            found[tuple(s["name"] for s in sources)] = ([s["verdict"] == "receives" for s in sources], lines)
    return found


@pytest.mark.parametrize(("name", "argv", "status", "cut_text"), CASES, ids=[c[0] for c in CASES])
def test_example_under_flowcheck_run(name: str, argv: list[str], status: int, cut_text: str | None, capsys: Any) -> None:
    path = EXAMPLES / name
    truth = tape_truth(path, argv)
    capsys.readouterr()
    code, document = flowcheck_run(path, argv, capsys)
    assert code == status
    found = verdicts(document)
    for names, none in truth.items():
        assert names in found, f"no site with sources {names}; flowcheck found {list(found)}"
        assert found[names][0] == [not n for n in none]
    if cut_text is not None:
        (line,) = [i for i, text in enumerate(path.read_text().splitlines(), 1) if cut_text in text]
        assert {line} == set().union(*(set(lines) for _, lines in found.values()))
    else:
        assert all(not lines for _, lines in found.values())
