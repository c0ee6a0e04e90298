"""The truth every test compares flowcheck with: TensorFlow's own tape, run in the test.

A variable receives a gradient exactly when ``tape.gradient(loss, v, unconnected_gradients=NONE)``
is not None with ``v`` watched (``watch_accessed_variables=False`` and ``tape.watch(v)`` for every
variable), whatever its trainable flag. Whether a *default* tape watches it is a separate fact.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tensorflow as tf


def tf_variable(v: Any) -> tf.Variable:
    """The ``tf.Variable`` behind a tf or Keras 3 variable."""
    if isinstance(v, tf.Variable):
        return v
    backing = getattr(v, "_value", None)
    return backing if isinstance(backing, tf.Variable) else v.value


def is_float(v: Any) -> bool:
    dtype = tf.as_dtype(tf_variable(v).dtype)
    return bool(dtype.is_floating or dtype.is_complex)


def _targets(out: Any) -> list[Any]:
    return [t for t in tf.nest.flatten(out) if isinstance(t, tf.Tensor) and (t.dtype.is_floating or t.dtype.is_complex)]


def watched_gradients(fn: Callable[..., Any], variables: Sequence[Any], *args: Any, **kwargs: Any) -> list[Any]:
    """What a tape watching every variable gives each one (None for non-float variables)."""
    floats = [i for i, v in enumerate(variables) if is_float(v)]
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        for i in floats:
            tape.watch(tf_variable(variables[i]))
        out = fn(*args, **kwargs)
    grads = tape.gradient(
        _targets(out), [tf_variable(variables[i]) for i in floats], unconnected_gradients=tf.UnconnectedGradients.NONE
    )
    result: list[Any] = [None] * len(variables)
    for i, g in zip(floats, grads):
        result[i] = g
    return result


def watched_truth(fn: Callable[..., Any], variables: Sequence[Any], *args: Any, **kwargs: Any) -> list[bool]:
    """Per variable: does a watching tape give it a gradient (zeros included)?"""
    return [g is not None for g in watched_gradients(fn, variables, *args, **kwargs)]


def default_tape_watches(fn: Callable[..., Any], variables: Sequence[Any], *args: Any, **kwargs: Any) -> list[bool]:
    """Per variable: does a default ``tf.GradientTape`` watch it when ``fn`` runs?"""
    with tf.GradientTape() as tape:
        fn(*args, **kwargs)
    watched = {id(v) for v in tape.watched_variables()}
    return [id(tf_variable(v)) in watched or any(id(c) in watched for c in getattr(tf_variable(v), "_values", ()))
            for v in variables]


def line_of(where: str | os.PathLike[str] | Callable[..., Any], marker: str) -> int:
    """The 1-based line holding ``marker`` in a file (a path) or in a function's source (a function).

    The marker must be on exactly one line (a line calling ``line_of`` does not count): that is
    where the test expects a barrier, a site or a call to be reported.
    """
    if callable(where):
        fn = inspect.unwrap(getattr(where, "python_function", where))
        lines, start = inspect.getsourcelines(fn)
    else:
        lines, start = Path(where).read_text(encoding="utf-8").splitlines(), 1
    hits = [start + i for i, line in enumerate(lines) if marker in line and "line_of(" not in line]
    assert len(hits) == 1, f"{marker!r} is on lines {hits} of {where}"
    return hits[0]


# TensorFlow 1 programs run in fresh interpreters (``tf.disable_v2_behavior()`` switches a whole
# process to graph mode): under ``flowcheck run`` and under plain Python, then asked of TensorFlow.
ROOT = Path(__file__).parent.parent
CHILD_ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONHASHSEED="0")


def flowcheck_run(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """``flowcheck run ARGS`` in a fresh interpreter, from the project's root."""
    code = "import sys; from flowcheck.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "run", *map(str, args)], capture_output=True, text=True,
                          env=CHILD_ENV, timeout=300, cwd=ROOT)


def python_run(script: Path) -> subprocess.CompletedProcess[str]:
    """``python script`` in a fresh interpreter, as its user runs it."""
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=CHILD_ENV, timeout=300)


def tf1_tensorflow_none(script: Path, target: str, sources: list[str]) -> list[bool]:
    """TensorFlow's answer after the script ran: is ``tf.gradients(target, [source])[0]`` None, per source."""
    truth = script.with_name(script.stem + "_truth.py")
    truth.write_text(script.read_text() + (
        "\nimport json as _json\nimport tensorflow as _tf\n"
        f"with {target}.graph.as_default():\n"
        f"    print('TRUTH', _json.dumps([_tf.compat.v1.gradients({target}, [s])[0] is None for s in [{', '.join(sources)}]]))\n"
    ))
    done = python_run(truth)
    assert done.returncode == 0, done.stderr[-2000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("TRUTH ")]
    return [bool(none) for none in json.loads(line.removeprefix("TRUTH "))]


def tf1_run_against_truth(
    script: Path, text: str, target: str, sources: list[str], *args: str,
) -> tuple[list[bool], dict[str, Any]]:
    """Write the TF1 program ``text`` to ``script``, ask TensorFlow (:func:`tf1_tensorflow_none`), then run it
    under ``flowcheck run --json ARGS``: TensorFlow's answer and the run's document (its exit status checked:
    1 exactly when a source gets None)."""
    script.write_text(text)
    truth = tf1_tensorflow_none(script, target, sources)
    done = flowcheck_run(script, "--json", *args)
    assert done.returncode == (1 if any(truth) else 0), done.stderr[-2000:]
    return truth, json.loads(done.stdout)
