"""Property test: on random small programs, flowcheck's verdicts equal the tape's.

Hypothesis writes a straight-line program over a pool of 2x2 float tensors (some variables, some
inputs): each step applies one op of :data:`OPS` to earlier values, and the loss sums a few of
them. The pool mixes differentiable ops with every kind of barrier flowcheck knows (stop_gradient,
integer casts, ops whose gradient is None or zeros, custom gradients, control-flow predicates),
with the call, cond and while ops whose gradients TensorFlow builds from function bodies, and
with an op that has no gradient at all: where the tape then raises, flowcheck must predict it
(``report.gradient_errors``), and where it does not, the verdicts must agree.

The run is derandomized (same examples every time, no example database) so CI is reproducible;
``FLOWCHECK_PROPERTY_EXAMPLES=200 FLOWCHECK_PROPERTY_SEED=random`` explores further.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowcheck
from test_corpus import assert_agrees_with_tape, tape_truth

Tensor = Any


def _values(*xs: Any) -> list[Tensor]:
    # The module-level tf.functions below are shared by all examples; a variable passed to one would
    # tie its cached trace to an example's variable that is gone by the next example.
    return [tf.convert_to_tensor(x) for x in xs]


@tf.custom_gradient
def _grad_first_only(a: Tensor, b: Tensor) -> Any:
    def grad(dy: Tensor) -> tuple[Any, Any]:
        return dy * b, None

    return a * b, grad


@tf.custom_gradient
def _zero_grad(a: Tensor) -> Any:
    return tf.identity(a), lambda dy: tf.zeros_like(dy)


@tf.function
def _pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    return a * 2.0, tf.tanh(b)


def _first_of_pair(a: Tensor, b: Tensor) -> Tensor:
    first, _ = _pair(*_values(a, b))  # the call is differentiated for both outputs: b gets zeros
    return first


def _argmax_gather(a: Tensor, b: Tensor) -> Tensor:
    return tf.gather(b, tf.argmax(a, axis=1))  # rows of b picked by a's argmax: a gets nothing


def _cond(a: Tensor, b: Tensor, p: Tensor) -> Tensor:
    return tf.cond(tf.reduce_sum(p) > 0.0, lambda: tf.tanh(a), lambda: b * 3.0)


def _while(a: Tensor, b: Tensor) -> Tensor:
    _, h = tf.while_loop(lambda i, h: i < 2, lambda i, h: (i + 1, tf.tanh(h) * b), (0, a))
    return h


def _while_stopped(a: Tensor, b: Tensor) -> Tensor:
    _, h = tf.while_loop(lambda i, h: i < 2, lambda i, h: (i + 1, tf.stop_gradient(h * b) + 1.0), (0, a))
    return h


def _cond_stopped(a: Tensor, b: Tensor, p: Tensor) -> Tensor:
    # One branch cuts a, the other uses it: the If still gives a gradient (zeros) when reached.
    return tf.cond(tf.reduce_sum(p) > 0.0, lambda: tf.stop_gradient(a) * b, lambda: a + b)


def _switch(a: Tensor, b: Tensor, p: Tensor) -> Tensor:
    index = tf.cast(tf.reduce_sum(p) > 0.0, tf.int32) + 1
    return tf.switch_case(index, [lambda: a, lambda: tf.round(a) * b, lambda: tf.sign(b)])


@tf.function
def _pair_stopped(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    return tf.stop_gradient(a) * b, tf.cast(tf.cast(b, tf.int32), tf.float32)


def _nested_stopped(a: Tensor, b: Tensor) -> Tensor:
    first, second = _pair_stopped(*_values(a, b))
    return first + second


def _top_k_values(a: Tensor) -> Tensor:
    return tf.math.top_k(a, k=2).values


def _top_k_indices(a: Tensor, b: Tensor) -> Tensor:
    return tf.gather(b, tf.math.top_k(a, k=2).indices, batch_dims=1)


def _while_counted(a: Tensor, b: Tensor) -> Tensor:
    # The trip count comes from a (no gradient); b is a loop variable that only passes through.
    n = tf.cast(tf.abs(tf.reduce_sum(a)), tf.int32) % 3
    _, h, _ = tf.while_loop(lambda i, h, g: i < n, lambda i, h, g: (i + 1, h * 0.5, g), (0, b, a))
    return h


def _py_function(a: Tensor) -> Tensor:
    out = tf.py_function(lambda t: t * 2.0, [a], tf.float32)
    return tf.ensure_shape(out, (2, 2))


@tf.function
def _nested_cond(a: Tensor, b: Tensor, p: Tensor) -> Tensor:
    # Shared by every example: earlier examples' gradients rewrite its cached graph in place.
    # (b * 1.0: passed as is, TensorFlow's own cond gradient fails an internal assertion here.)
    return tf.cond(tf.reduce_sum(p) > 0.0, lambda: _grad_first_only(a * 2.0, b * 1.0), lambda: tf.round(b) * a)


def _no_gradient(a: Tensor, b: Tensor) -> Tensor:
    return tf.truncatemod(a, tf.abs(b) + 1.0)  # TruncateMod has no registered gradient


def _cond_no_gradient(a: Tensor, b: Tensor, p: Tensor) -> Tensor:
    return tf.cond(tf.reduce_sum(p) > 0.0, lambda: tf.truncatemod(a, 2.0), lambda: b * 2.0)


def _concat_split(a: Tensor, b: Tensor) -> Tensor:
    first, _ = tf.split(tf.concat([a, b], axis=1), 2, axis=1)  # only a's half is used
    return first


# name -> (arity, op). Every op maps 2x2 float tensors to a 2x2 float tensor.
OPS: dict[str, tuple[int, Callable[..., Tensor]]] = {
    "matmul": (2, tf.matmul),
    "add": (2, tf.add),
    "mul": (2, tf.multiply),
    "tanh": (1, tf.tanh),
    "relu": (1, tf.nn.relu),
    "stop_gradient": (1, tf.stop_gradient),
    "int_round_trip": (1, lambda a: tf.cast(tf.cast(a * 3.0, tf.int32), tf.float32)),
    "round": (1, tf.round),
    "sign": (1, tf.sign),
    "floor": (1, tf.floor),
    "reduce_sum_broadcast": (1, lambda a: tf.reduce_sum(a, axis=0, keepdims=True) + tf.zeros((2, 2))),
    "argmax_gather": (2, _argmax_gather),
    "where_mask": (3, lambda a, b, c: tf.where(a > 0.0, b, c)),
    "cond": (3, _cond),
    "concat_split": (2, _concat_split),
    "custom_grad_none": (2, _grad_first_only),
    "custom_grad_zeros": (1, _zero_grad),
    "nested_call_first_output": (2, _first_of_pair),
    "while_loop": (2, _while),
    "while_loop_stop_gradient": (2, _while_stopped),
    "shape_only": (1, lambda a: tf.cast(tf.shape(a)[0], tf.float32) * tf.ones((2, 2))),
    "cond_stop_gradient_branch": (3, _cond_stopped),
    "switch_case": (3, _switch),
    "nested_call_stopped": (2, _nested_stopped),
    "top_k_values": (1, _top_k_values),
    "top_k_indices_gather": (2, _top_k_indices),
    "while_counted_by_value": (2, _while_counted),
    "py_function": (1, _py_function),
    "matmul_transpose": (2, lambda a, b: tf.matmul(a, b, transpose_b=True)),
    "softmax": (1, lambda a: tf.nn.softmax(a, axis=-1)),
    "nested_function_cond": (3, lambda a, b, p: _nested_cond(*_values(a, b, p))),
    "clip_saturated": (1, lambda a: tf.clip_by_value(a + 10.0, -1.0, 1.0)),
    "no_gradient": (2, _no_gradient),
    "cond_no_gradient_branch": (3, _cond_no_gradient),
}

N_VARIABLES = 4
N_INPUTS = 2


@dataclass(frozen=True)
class Program:
    """A random straight-line program: steps over a growing pool, and the pool entries summed."""

    steps: tuple[tuple[str, tuple[int, ...]], ...]
    outputs: tuple[int, ...]
    variables_as_arguments: bool = False

    def __str__(self) -> str:
        names = [f"v{i}" for i in range(N_VARIABLES)] + [f"x{i}" for i in range(N_INPUTS)]
        lines = ["# variables passed as arguments"] if self.variables_as_arguments else []
        for op, args in self.steps:
            names.append(f"t{len(names) - N_VARIABLES - N_INPUTS}")
            lines.append(f"{names[-1]} = {op}({', '.join(names[a] for a in args)})")
        lines.append("loss = " + " + ".join(f"sum({names[o]})" for o in self.outputs))
        return "\n".join(lines)


@st.composite
def programs(draw: Any) -> Program:
    """Programs of 1-6 steps whose loss sums 1-3 of the values (variables included)."""
    pool = N_VARIABLES + N_INPUTS
    steps = []
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(sorted(OPS)))
        arity = OPS[op][0]
        steps.append((op, tuple(draw(st.integers(0, pool - 1)) for _ in range(arity))))
        pool += 1
    # Bias towards the last value so that most programs are deep, but allow any value.
    outputs = tuple(sorted(set(draw(st.lists(st.integers(0, pool - 1), min_size=0, max_size=2)) + [pool - 1])))
    return Program(tuple(steps), outputs, draw(st.booleans()))


def build(program: Program) -> tuple[Any, list[tf.Variable], tuple[Tensor, ...]]:
    """The program as a tf.function over fresh variables, with its example inputs.

    The variables are captured, or passed as the function's first argument (a list).
    """
    rng = np.random.default_rng(len(program.steps))
    variables = [tf.Variable(rng.normal(size=(2, 2)).astype(np.float32), name=f"v{i}") for i in range(N_VARIABLES)]
    inputs = tuple(tf.constant(rng.normal(size=(2, 2)), dtype=tf.float32) for _ in range(N_INPUTS))

    def run(vs: list[tf.Variable], xs: tuple[Tensor, ...]) -> Tensor:
        values: list[Any] = [*vs, *xs]
        for v in vs:
            v.read_value()  # every variable is read, used or not: unused ones must come out unused
        for op, args in program.steps:
            values.append(OPS[op][1](*(values[a] for a in args)))
        return tf.add_n([tf.reduce_sum(values[o]) for o in program.outputs])

    if program.variables_as_arguments:

        @tf.function
        def random_program_with_arguments(vs: list[tf.Variable], *xs: Tensor) -> Tensor:
            return run(vs, xs)

        return random_program_with_arguments, variables, (variables, *inputs)

    @tf.function
    def random_program(*xs: Tensor) -> Tensor:
        return run(variables, xs)

    return random_program, variables, inputs


_SEED = os.environ.get("FLOWCHECK_PROPERTY_SEED", "fixed")
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("FLOWCHECK_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    derandomize=_SEED != "random",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)

def assert_agrees_or_raises_as_the_tape(fn: Any, variables: list[tf.Variable], *inputs: Tensor) -> None:
    """flowcheck predicts gradient errors exactly when the tape raises, and else its verdicts."""
    try:
        tape_truth(fn, variables, *inputs)
    except LookupError:  # No gradient defined for operation ...
        report = flowcheck.analyze(fn, *inputs)
        assert report.gradient_errors, "the tape raises, but flowcheck predicts no gradient error"
        assert report.verify().agrees
        return
    report = assert_agrees_with_tape(fn, variables, *inputs)
    assert not report.gradient_errors, f"the tape answers, but flowcheck predicts errors at {report.gradient_errors}"


@PROPERTY_SETTINGS
@given(programs())
def test_random_program_agrees_with_tape(program: Program) -> None:
    fn, variables, inputs = build(program)
    try:
        assert_agrees_or_raises_as_the_tape(fn, variables, *inputs)
    except BaseException as exc:
        exc.add_note(f"program:\n{program}")
        raise


def test_every_op_of_the_pool_builds_and_agrees() -> None:
    """Each op once on its own, so that a pool op hypothesis happens not to draw is still checked."""
    for op, (arity, _) in sorted(OPS.items()):
        program = Program(((op, tuple(range(arity))),), (N_VARIABLES + N_INPUTS,))  # variables in every slot
        fn, variables, inputs = build(program)
        try:
            assert_agrees_or_raises_as_the_tape(fn, variables, *inputs)
        except BaseException as exc:
            exc.add_note(f"program:\n{program}")
            raise
