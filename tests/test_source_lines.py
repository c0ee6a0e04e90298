"""Each barrier names the line and column of its own call, under AutoGraph or not.

The expected place is read from this file's own source: the line carrying a marker comment and
the column where the call starts on it.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from typing import Any

import keras
import pytest
import tensorflow as tf

import flowcheck
from flowcheck.outputs.text import to_json
from flowcheck.source.lines import SourceLine, display_path

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

AUTOGRAPH = [pytest.param(True, id="autograph"), pytest.param(False, id="no-autograph")]
X = tf.constant([1.0, 2.0])


def _where(fn: Callable[..., Any], marker: str, needle: str = "tf.stop_gradient(", nth: int = 0) -> tuple[int, int]:
    """(line, 1-based column) of the ``nth`` ``needle`` on the line of ``fn`` marked ``# marker``."""
    lines, first = inspect.getsourcelines(inspect.unwrap(fn))
    found = [i for i, text in enumerate(lines) if text.rstrip().endswith(f"# {marker}")]
    assert len(found) == 1, f"marker {marker!r} must mark one line"
    text = lines[found[0]]
    col = -1
    for _ in range(nth + 1):
        col = text.index(needle, col + 1)
    return first + found[0], col + 1


def _places(report: flowcheck.Report, variable: Any) -> list[tuple[int, int | None]]:
    places = []
    for b in report.result(variable).barriers:
        assert b.source is not None and b.source.file == __file__, b
        places.append((b.source.line, b.source.column))
    return sorted(places)


def _variables() -> tuple[tf.Variable, tf.Variable, tf.Variable]:
    return tf.Variable([1.0, 1.0], name="a"), tf.Variable([2.0, 2.0], name="b"), tf.Variable([3.0, 3.0], name="c")


@pytest.mark.parametrize("autograph", AUTOGRAPH)
def test_a_multi_line_return_tuple_gives_each_barrier_its_own_line(autograph: bool) -> None:
    a, b, c = _variables()

    def losses(x: tf.Tensor) -> Any:
        return (
            tf.reduce_sum(tf.stop_gradient(a * x) + c * x),  # first
            tf.reduce_sum(tf.stop_gradient(b * x) + c * x),  # second
            tf.reduce_sum(c * x),
        )

    report = flowcheck.analyze(tf.function(losses, autograph=autograph), X)
    assert _places(report, a) == [_where(losses, "first")]
    assert _places(report, b) == [_where(losses, "second")]
    assert report.result(c).barriers == ()


@pytest.mark.parametrize("autograph", AUTOGRAPH)
def test_a_call_with_arguments_on_several_lines(autograph: bool) -> None:
    a, b, c = _variables()

    def loss(x: tf.Tensor) -> tf.Tensor:
        y = tf.add(
            tf.stop_gradient(a * x),  # first argument
            tf.stop_gradient(  # second argument
                b * x),
        )
        return tf.reduce_sum(y + c * x)

    report = flowcheck.analyze(tf.function(loss, autograph=autograph), X)
    assert _places(report, a) == [_where(loss, "first argument")]
    assert _places(report, b) == [_where(loss, "second argument")]


@pytest.mark.parametrize("autograph", AUTOGRAPH)
def test_list_and_dict_comprehensions(autograph: bool) -> None:
    a, b, c = _variables()

    def loss(x: tf.Tensor) -> tf.Tensor:
        parts = [
            tf.stop_gradient(v * x) for v in (a, b)  # list
        ]
        named = {"c": tf.square(c * x), "b": tf.stop_gradient(b * x)}  # dict
        return tf.reduce_sum(parts[0] + parts[1] + named["c"] + named["b"])

    report = flowcheck.analyze(tf.function(loss, autograph=autograph), X)
    assert _places(report, a) == [_where(loss, "list")]
    assert _places(report, b) == sorted([_where(loss, "list"), _where(loss, "dict")])


@pytest.mark.parametrize("autograph", AUTOGRAPH)
def test_two_stop_gradients_on_consecutive_lines(autograph: bool) -> None:
    a, b, c = _variables()

    def loss(x: tf.Tensor) -> tf.Tensor:
        ya = tf.stop_gradient(a * x)  # line a
        yb = tf.stop_gradient(b * x)  # line b
        return tf.reduce_sum(ya + yb + c * x)

    report = flowcheck.analyze(tf.function(loss, autograph=autograph), X)
    assert _places(report, a) == [_where(loss, "line a")]
    assert _places(report, b) == [_where(loss, "line b")]


@pytest.mark.parametrize("autograph", AUTOGRAPH)
def test_the_same_call_twice_in_one_statement_has_two_columns(autograph: bool) -> None:
    a, _, c = _variables()

    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.stop_gradient(a * x) + tf.stop_gradient(a * x) + c * x)  # twice

    report = flowcheck.analyze(tf.function(loss, autograph=autograph), X)
    assert _places(report, a) == [_where(loss, "twice"), _where(loss, "twice", nth=1)]


@pytest.mark.parametrize("autograph", AUTOGRAPH)
def test_a_nested_tf_function(autograph: bool) -> None:
    a, b, c = _variables()

    @tf.function(autograph=autograph)
    def inner(x: tf.Tensor) -> tf.Tensor:
        return tf.stop_gradient(b * x)  # inner

    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.stop_gradient(a * x) + inner(  # outer
            x) + c * x)

    report = flowcheck.analyze(tf.function(loss, autograph=autograph), X)
    assert _places(report, a) == [_where(loss, "outer")]
    assert _places(report, b) == [_where(inner, "inner")]


def test_a_plain_callable_wrapped_by_flowcheck() -> None:
    a, b, c = _variables()

    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(
            tf.cast(tf.cast(a * x, tf.int32), tf.float32)  # cast
            + tf.stop_gradient(b * x) + c * x  # stop
        )

    report = flowcheck.analyze(loss, X)
    # The barrier is the cast to int32, the inner call.
    assert _places(report, a) == [_where(loss, "cast", needle="tf.cast(", nth=1)]
    assert _places(report, b) == [_where(loss, "stop")]


def test_a_conditional_expression_under_autograph() -> None:
    a, b, c = _variables()

    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(
            (tf.stop_gradient(a * x) if tf.reduce_sum(x) > 0 else tf.stop_gradient(b * x)) + c * x  # cond
        )

    report = flowcheck.analyze(tf.function(loss), X)
    assert _places(report, a) == [_where(loss, "cond")]
    assert _places(report, b) == [_where(loss, "cond", nth=1)]


class _TwoWeights(keras.layers.Layer):  # type: ignore[misc]
    def build(self, input_shape: Any) -> None:
        self.w1 = self.add_weight(shape=(2,), name="w1")
        self.w2 = self.add_weight(shape=(2,), name="w2")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return (tf.stop_gradient(self.w1 * x)  # keras first
                + tf.stop_gradient(self.w2 * x))  # keras second


@pytest.mark.parametrize("autograph", AUTOGRAPH)
def test_a_keras_layers_call_method(autograph: bool) -> None:
    layer = _TwoWeights(name="two_weights")
    layer(X)
    c = tf.Variable([1.0, 1.0], name="c")

    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(layer(x) + c * x)

    report = flowcheck.analyze(tf.function(loss, autograph=autograph), X)
    assert _places(report, layer.w1) == [_where(_TwoWeights.call, "keras first")]
    assert _places(report, layer.w2) == [_where(_TwoWeights.call, "keras second")]


def test_an_assign_barrier_says_the_value_carries_no_gradient_and_json_has_the_column() -> None:
    a, b, c = _variables()

    def loss(x: tf.Tensor) -> tf.Tensor:
        a.assign(b * x)  # assign
        return tf.reduce_sum(a * x + c)

    report = flowcheck.analyze(tf.function(loss), X)
    (barrier,) = report.result(b).barriers
    assert barrier.kind is flowcheck.BarrierKind.ASSIGN
    assert "raises" not in barrier.detail and "assigned" in barrier.detail
    line, column = _where(loss, "assign", needle="a.assign(")
    assert (barrier.source.line, barrier.source.column) == (line, column)
    (row,) = [v for v in json.loads(json.dumps(to_json(report, None)))["variables"] if v["name"].startswith("b")]
    source = row["barriers"][0]["source"]
    assert (source["line"], source["column"]) == (line, column)
    assert str(barrier.source) == f"{barrier.source.short_file}:{line}"
    assert barrier.source.location == f"{barrier.source.short_file}:{line}:{column}"


def test_paths_are_shown_normalised(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    (work / "run").mkdir(parents=True)
    monkeypatch.chdir(work)
    assert SourceLine("run/../model.py", 3, "f").short_file == "model.py"
    assert display_path(str(work / "run" / ".." / "model.py")) == "model.py"
    outside = str(tmp_path / "other" / ".." / "lib.py")
    assert display_path(outside) == os.path.join(str(tmp_path), "lib.py")
    assert display_path("<stdin>") == "<stdin>"


def test_the_command_line_shows_paths_normalised(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from flowcheck.cli.main import main

    (tmp_path / "run").mkdir()
    model = tmp_path / "model.py"
    text = (
        "import tensorflow as tf\n"
        "w = tf.Variable(1.0, name='w')\n"
        "v = tf.Variable(1.0, name='v')\n"
        "example_inputs = (tf.constant(2.0),)\n"
        "@tf.function\n"
        "def loss(x):\n"
        "    return (v * x +\n"
        "            tf.stop_gradient(w * x))\n"
    )
    model.write_text(text)
    (line,) = [n for n, code in enumerate(text.splitlines(), 1) if "tf.stop_gradient(" in code]
    column = text.splitlines()[line - 1].index("tf.stop_gradient(") + 1
    monkeypatch.chdir(tmp_path)
    assert main(["analyze", "run/../model.py", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["target"]["file"] == "model.py"
    (w,) = [row for row in data["variables"] if row["name"].startswith("w")]
    source = w["barriers"][0]["source"]
    assert (source["file"], source["line"], source["column"]) == ("model.py", line, column)


def test_recording_leaves_no_op_callback_behind() -> None:
    from tensorflow.python.eager import context, execute

    a, _, c = _variables()

    def fails(x: tf.Tensor) -> tf.Tensor:
        raise ValueError("no")

    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.stop_gradient(a * x) + c * x)

    flowcheck.analyze(loss, X)
    with pytest.raises(flowcheck.TraceError):
        flowcheck.analyze(fails, X)
    assert context.context().op_callbacks == []
    assert execute.execute is execute.quick_execute


def _helper(t: tf.Tensor) -> tf.Tensor:
    return tf.stop_gradient(t)  # helper


@pytest.mark.parametrize("autograph", AUTOGRAPH)
def test_helpers_lambdas_keywords_and_two_statements_on_one_line(autograph: bool) -> None:
    a, b, c = _variables()
    d, e = tf.Variable([1.0, 1.0], name="d"), tf.Variable([1.0, 1.0], name="e")

    def loss(x: tf.Tensor) -> tf.Tensor:
        g = lambda t: tf.stop_gradient(t)  # noqa: E731  # lambda
        é = {"clé": g(a * x)}; y = tf.stop_gradient(b * x)  # noqa: E702  # two statements
        z = tf.add(x=_helper(c * x),
                   y=tf.stop_gradient(d * x))  # keywords
        return tf.reduce_sum(é["clé"] + y + z + e * x)

    report = flowcheck.analyze(tf.function(loss, autograph=autograph), X)
    assert _places(report, a) == [_where(loss, "lambda")]
    assert _places(report, b) == [_where(loss, "two statements")]
    assert _places(report, c) == [_where(_helper, "helper")]
    assert _places(report, d) == [_where(loss, "keywords")]
    assert _places(report, e) == []


def test_branches_and_boolean_operators_under_autograph() -> None:
    a, b, c = _variables()

    def loss(x: tf.Tensor) -> tf.Tensor:
        y = c * x
        if tf.reduce_sum(x) > 0 and tf.reduce_sum(tf.stop_gradient(a * x)) > -1.0:  # test
            y = y + tf.stop_gradient(  # then
                a * x)
        else:
            y = y + tf.stop_gradient(b * x)  # else
        return tf.reduce_sum(y)

    report = flowcheck.analyze(tf.function(loss), X)
    # The one in the condition cuts a path too (into the predicate, which carries no gradient).
    assert _places(report, a) == sorted([_where(loss, "test"), _where(loss, "then")])
    assert _places(report, b) == [_where(loss, "else")]


@pytest.mark.parametrize("autograph", AUTOGRAPH)
def test_a_nested_tf_function_traced_before_flowcheck(autograph: bool) -> None:
    # The user ran a step first: the inner function's graph is cached; flowcheck traces a clone
    # of it, so it sees its ops made...
    a, b, c = _variables()

    @tf.function(autograph=autograph)
    def inner(x: tf.Tensor) -> tf.Tensor:
        return (tf.stop_gradient(a * x)  # cached first
                + tf.round(b * x)  # cached second
                + c * x)

    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(inner(x))

    outer = tf.function(loss, autograph=autograph)
    outer(X)
    report = flowcheck.analyze(outer, X)
    assert _places(report, a) == [_where(inner, "cached first")]
    assert _places(report, b) == [_where(inner, "cached second", needle="tf.round(")]


def test_the_same_call_twice_in_a_cached_statement_gets_its_exact_column() -> None:
    # ... and when they do not: flowcheck traces the cached function afresh, so its ops' own
    # positions are recorded and each call gets its line and column.
    a, b, c = _variables()

    @tf.function
    def inner(x: tf.Tensor) -> tf.Tensor:
        return (tf.stop_gradient(a * x)  # same first
                + tf.stop_gradient(b * x)  # same second
                + c * x)

    def loss(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(inner(x))

    outer = tf.function(loss)
    outer(X)
    report = flowcheck.analyze(outer, X)
    assert _places(report, a) == [_where(inner, "same first")]
    assert _places(report, b) == [_where(inner, "same second")]


@pytest.mark.parametrize("autograph", AUTOGRAPH)
def test_the_same_call_twice_as_keyword_arguments_and_in_a_comprehension(autograph: bool) -> None:
    a, _, c = _variables()

    def loss(x: tf.Tensor) -> tf.Tensor:
        y = tf.add(x=tf.stop_gradient(a * x),  # keyword x
                   y=tf.stop_gradient(a * x))  # keyword y
        z = sum([tf.stop_gradient(a * x) for _ in range(2)], tf.stop_gradient(a * x))  # comprehension
        return tf.reduce_sum(y + z + c * x)

    report = flowcheck.analyze(tf.function(loss, autograph=autograph), X)
    # (The comprehension's call makes two ops, one per iteration, at one place.)
    assert set(_places(report, a)) == {
        _where(loss, "keyword x"), _where(loss, "keyword y"),
        _where(loss, "comprehension"), _where(loss, "comprehension", nth=1),
    }


def test_the_summary_gives_columns_only_to_barriers_sharing_a_line() -> None:
    from flowcheck.outputs.text import format_summary

    a, b, c = _variables()

    def loss(x: tf.Tensor) -> tf.Tensor:
        y = tf.stop_gradient(b * x)  # alone
        return tf.reduce_sum(tf.stop_gradient(a * x) + tf.stop_gradient(a * x) + y + c * x)  # shared

    text = format_summary(flowcheck.analyze(tf.function(loss), X), None)
    short = SourceLine(__file__, 1, "f").short_file
    (line, first), (_, second) = _where(loss, "shared"), _where(loss, "shared", nth=1)
    assert f"at {short}:{line}:{first}\n" in text and f"at {short}:{line}:{second}\n" in text
    assert f"at {short}:{_where(loss, 'alone')[0]}\n" in text


def test_an_edited_copy_of_a_file_gets_its_own_lines(tmp_path: Any) -> None:
    # Code objects that differ only in their file compare equal; so does AutoGraph's output for
    # two copies of one function. Each copy's barrier is on its own line.
    import importlib.util

    body = (
        "import tensorflow as tf\n"
        "w = tf.Variable(1.0, name='w')\n"
        "v = tf.Variable(1.0, name='v')\n"
        "@tf.function\n"
        "def loss(x):\n"
        "    return (v * x +\n"
        "            tf.stop_gradient(w * x))\n"
    )
    found = []
    for i, text in enumerate((body, "\n\n\n" + body)):
        path = tmp_path / f"copy{i}" / "model.py"
        path.parent.mkdir()
        path.write_text(text)
        spec = importlib.util.spec_from_file_location(f"_lines_copy_{i}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        report = flowcheck.analyze(module.loss, tf.constant(2.0))
        (barrier,) = report.result(module.w).barriers
        expected = [n for n, code in enumerate(text.splitlines(), 1) if "tf.stop_gradient(" in code]
        found.append((barrier.source.file, barrier.source.line, expected[0]))
    assert [line for _, line, _ in found] == [want for _, _, want in found]
    assert found[0][0] != found[1][0]


@pytest.mark.parametrize(("generated", "user"), [
    ("ag__.converted_call(ag__.ld(tf).stop_gradient, (ag__.ld(a) * ag__.ld(x),), None, fscope)", "tf.stop_gradient(a * x)"),
    ("ag__.converted_call(ag__.ld(f), (ag__.ld(a),) + tuple(ag__.ld(rest)), dict(k=1, **ag__.ld(kw)), fscope)", "f(a, *rest, k=1, **kw)"),
    ("ag__.if_exp(ag__.ld(c), lambda: ag__.ld(a), lambda: ag__.ld(b), 'c')", "a if c else b"),
    ("ag__.and_(lambda: ag__.ld(a), lambda: ag__.and_(lambda: ag__.ld(b), lambda: ag__.ld(c)))", "a and b and c"),
    ("ag__.not_(ag__.ldu(lambda: x, 'x'))", "not x"),
    ("[ag__.converted_call(g, (v,), None, fscope) for v in ag__.ld(vs)]", "[g(v) for v in vs]"),
])
def test_undoing_autographs_rewrites_gives_the_users_expression(generated: str, user: str) -> None:
    import ast

    from flowcheck.source.positions import _undo

    node = ast.parse(generated, mode="eval").body
    found: list[ast.AST] = []
    assert ast.dump(_undo(node, node, found)) == ast.dump(ast.parse(user, mode="eval").body)
    assert len(found) == 1
