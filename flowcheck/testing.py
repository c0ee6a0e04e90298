"""Gradient contracts for users' own tests: fail the day a refactor silently cuts a gradient.

>>> flowcheck.assert_gradient_flow(generator_step, z, receives="generator/*")
>>> flowcheck.assert_all_trainable_receive(model, x, y)

Expectations name variables by the object (a ``tf.Variable`` or a Keras variable), by name, or by
an :mod:`fnmatch` pattern over names (``"generator/*"``); ``receives="all-trainable"`` means every
trainable variable the function can see. A name or pattern that matches nothing fails the
assertion, so a typo or a renamed layer cannot make a contract pass silently.

For a function returning several losses (a dict or tuple), ``loss="d_loss"`` checks the verdicts
for that output alone: what a tape gives when only that loss is differentiated inside the step.

On failure a :class:`GradientFlowAssertionError` (an ``AssertionError``) says, for each variable
whose verdict differs, what was expected and what was found, and for blocked ones which ops cut
every path and on which line of the user's code they were made.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from difflib import get_close_matches
from typing import Any, Final

from flowcheck._api import analyze
from flowcheck._model import Verdict
from flowcheck._phrases import disagreement, gradient_error_message, left_out_lines
from flowcheck._report import Barrier, Report, VariableResult, _is_variable
from flowcheck.errors import FlowcheckError, GradientFlowAssertionError, UsageError

__all__ = [
    "ALL_TRAINABLE",
    "GradientFlowAssertionError",
    "assert_all_trainable_receive",
    "assert_gradient_flow",
]

ALL_TRAINABLE: Final = "all-trainable"
"""The expectation that stands for every trainable variable in the report."""

_GLOB_CHARS: Final = frozenset("*?[")
# How many variables and barriers one failure lists before pointing to the full report.
_MAX_NAMES: Final = 20
_MAX_BARRIERS: Final = 5

# Specificity of an expectation: a variable named exactly overrides a pattern, which overrides
# "all-trainable" (receives="all-trainable", blocked="target/*" is a DQN's contract).
_EXACT, _PATTERN, _ALL = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class _Expectation:
    verdict: Verdict
    level: int
    spec: str


def assert_gradient_flow(
    fn: Any,
    *args: Any,
    receives: Any = None,
    blocked: Any = None,
    unused: Any = None,
    verify: bool = True,
    loss: str | None = None,
    **kwargs: Any,
) -> Report:
    """Assert which variables receive a gradient from ``fn(*args, **kwargs)``.

    Args:
        fn: What :func:`flowcheck.analyze` takes (a ``tf.function``, a callable returning the
            loss, a compiled Keras model), or a :class:`Report` from an earlier call, to check
            several contracts (one per loss) on one analysis; then no ``args`` are allowed.
        *args: Example inputs for ``fn``.
        receives: Variables a gradient must reach: a variable, a name, a glob pattern over names,
            ``"all-trainable"``, or an iterable of those.
        blocked: Variables that must feed the loss with every gradient path cut.
        unused: Variables that must not feed the loss at all.
        verify: Also run one real optimizer step (variables restored afterwards) and fail when
            the tape disagrees with the prediction.
        loss: Check the verdicts for this output of ``fn`` alone (a key of the dict it returns,
            or ``"0"``, ``"1"``, ... for a tuple): what a tape gives when that loss alone is
            differentiated inside the step. None checks the verdicts for the total.
        **kwargs: Keyword inputs for ``fn``.

    Returns:
        The :class:`Report`, to check further contracts on it.

    Raises:
        GradientFlowAssertionError: a verdict differs from the expectation, an expectation
            matches no variable, ``loss`` names no output, differentiating the loss raises
            (an op with no gradient is reached: ``report.gradient_errors``), or the real step
            disagrees.
        ValueError: one variable is expected with two verdicts at the same specificity.
        FlowcheckError: ``fn`` cannot be analyzed, or the real step cannot run
            (:class:`flowcheck.VerificationError`).
    """
    __tracebackhide__ = True
    _check_arguments(receives, blocked, unused, loss, verify, kwargs)
    report = _report_of(fn, *args, **kwargs)
    if loss is not None and loss not in report.losses:
        step = " (a training step's: what its gradient calls differentiate, a Keras model's compiled total)" * bool(report.gradient_sites)
        raise GradientFlowAssertionError(f"{report.target} has no output named {loss!r}; its losses are: {', '.join(report.losses)}{step}", report, loss)
    if report.gradient_errors:
        raise GradientFlowAssertionError(gradient_error_message(report), report, loss)
    judged = _judged_at_sites(report) if report.gradient_sites and loss is None else report  # a step: its sites
    expected, unmatched = _expectations(
        judged, ((Verdict.RECEIVES, receives), (Verdict.BLOCKED, blocked), (Verdict.UNUSED, unused))
    )
    wrong = [(r, e) for r, e in expected if _found(r, loss) is not e.verdict]
    if wrong or unmatched:
        raise GradientFlowAssertionError(_contract_message(judged, loss, wrong, unmatched), report, loss)
    if verify:
        check = _verify(report, loss)
        if not check.agrees:
            raise GradientFlowAssertionError(_verification_message(report, loss, check), report, loss)
    return report


_CONTRACT_KEYWORDS: Final = ("receives", "blocked", "unused")


def _check_arguments(receives: Any, blocked: Any, unused: Any, loss: Any, verify: Any, kwargs: dict[str, Any]) -> None:
    if receives is None and blocked is None and unused is None:
        # A misspelt keyword (recieves=) lands in fn's **kwargs: name it, not the missing one alone.
        near = [(k, m[0]) for k in kwargs for m in [get_close_matches(k, _CONTRACT_KEYWORDS, 1)] if m]
        hint = "".join(f"; got {k}= (an input of fn): did you mean {m}=?" for k, m in near)
        raise UsageError(f"assert_gradient_flow needs at least one of receives=, blocked= or unused={hint}")
    if loss is not None and not isinstance(loss, str):
        raise UsageError(f"loss must be the name of an output (a str), not {type(loss).__name__}")
    if not isinstance(verify, bool):  # verify="no" is truthy: it verified
        raise UsageError(f"verify must be True or False, not {verify!r}")


def _judged_at_sites(report: Report) -> Report:
    from flowcheck.analysis.steps import judged_at_sites

    return judged_at_sites(report)  # type: ignore[no-any-return]


def _report_of(fn: Any, *args: Any, **kwargs: Any) -> Report:
    """``fn`` itself when it is a :class:`Report` (then no inputs are allowed), else its analysis."""
    __tracebackhide__ = True
    if isinstance(fn, Report):
        if args or kwargs:
            raise UsageError("a Report was given: pass no inputs (they were fixed when it was analyzed)")
        return fn
    try:
        return analyze(fn, *args, **kwargs)
    except FlowcheckError as exc:  # the user's mistake: pytest shows their test's line and the message, not our frames
        raise exc.with_traceback(None)  # noqa: B904 -- the same error, its internal frames dropped


def assert_all_trainable_receive(
    model: Any, x: Any, y: Any = None, *, sample_weight: Any = None, verify: bool = True
) -> Report:
    """Assert that every trainable weight of a compiled Keras model receives a gradient.

    The model's training step is analyzed (its compiled loss on ``model(x, training=True)``);
    non-trainable weights (frozen layers, BatchNormalization moving statistics) are not checked.

    Args:
        model: A compiled Keras model (or anything :func:`assert_gradient_flow` takes).
        x: A sample batch of inputs.
        y: Its targets.
        sample_weight: Its sample weights, if the loss uses them.
        verify: Also run one real optimizer step and fail when the tape disagrees.

    Returns:
        The :class:`Report`.

    Raises:
        GradientFlowAssertionError: a trainable weight receives no gradient, or the model has no
            trainable weight at all.
    """
    __tracebackhide__ = True
    extra = {} if sample_weight is None else {"sample_weight": sample_weight}
    report = assert_gradient_flow(model, x, y, receives=ALL_TRAINABLE, verify=False, **extra)
    _fit_trains_them_all(model, report)  # before verifying: a step on them makes Keras's optimizer raise
    return assert_gradient_flow(report, receives=ALL_TRAINABLE, verify=True) if verify else report


def _fit_trains_them_all(model: Any, report: Report) -> None:
    """Fail when ``fit`` will not train some trainable weights: its kept step or its optimizer leaves them out."""
    __tracebackhide__ = True
    if report.target_kind != "keras model":
        return
    from flowcheck.trace.kept_step import kept_assignments, left_out_by_fit

    assigned = kept_assignments(model)
    left_out = left_out_by_fit(model, assigned, report.gradient_sites)
    if left_out:
        lines = left_out_lines(model.name, [w.path for w in left_out], assigned is not None)
        raise GradientFlowAssertionError("\n".join(lines), report, None)


def _found(result: VariableResult, loss: str | None) -> Verdict:
    return result.verdict if loss is None else result.per_loss[loss]


def _expectations(
    report: Report, specs: Iterable[tuple[Verdict, Any]]
) -> tuple[list[tuple[VariableResult, _Expectation]], list[str]]:
    """Resolve each expectation to results; the most specific one wins for each variable."""
    chosen: dict[int, tuple[VariableResult, _Expectation]] = {}
    unmatched: list[str] = []
    for verdict, spec in specs:
        items = _items(spec, verdict)
        if spec is not None and not items:  # model.trainable_weights of a model not built yet: checks nothing
            unmatched.append(f"{verdict.value}= is empty: it names no variable (the weights of a model not built yet?)")
        for item in items:
            matches, level = _resolve(report, item)
            if not matches:
                unmatched.append(_no_match(report, verdict, item))
            for result in matches:
                new = _Expectation(verdict, level, _spec_text(item))
                old = chosen.get(id(result.variable))
                if old is None or level < old[1].level:
                    chosen[id(result.variable)] = (result, new)
                elif level == old[1].level and verdict is not old[1].verdict:
                    raise UsageError(
                        f"{result.name} is expected both to be {old[1].verdict} ({old[1].spec}) "
                        f"and {verdict} ({new.spec})"
                    )
    order = {id(r.variable): i for i, r in enumerate(report.variables)}
    ordered = sorted(chosen.values(), key=lambda pair: order.get(id(pair[0].variable), len(order)))
    return ordered, unmatched


def _items(spec: Any, verdict: Verdict) -> list[Any]:
    if spec is None:
        return []
    if isinstance(spec, str) or _is_variable(spec):
        return [spec]
    weights = getattr(spec, "weights", None) if not isinstance(spec, type) else None
    if weights is not None or hasattr(spec, "trainable_variables"):  # a Keras layer or model, a tf.Module
        name = getattr(spec, "name", None) or type(spec).__name__
        kind = "weights" if weights is not None else "variables"
        raise UsageError(f"{verdict.value}= takes variables, names or glob patterns, not {type(spec).__name__} "
                         f"{name!r}: for all its {kind} pass {verdict.value}={name}.{kind} or its name's pattern")
    if isinstance(spec, Iterable) and not isinstance(spec, Mapping):
        items = list(spec)
        for item in items:
            if not (isinstance(item, str) or _is_variable(item)):
                raise UsageError(
                    f"{verdict.value}= takes variables, names or glob patterns, not {type(item).__name__}"
                )
        return items
    raise UsageError(f"{verdict.value}= takes a variable, a name, a glob pattern or an iterable of those, "
                    f"not {type(spec).__name__}")


def _resolve(report: Report, item: Any, pool: Sequence[VariableResult] | None = None) -> tuple[list[VariableResult], int]:
    """The results ``item`` names among ``pool`` (the report's variables) and how specifically."""
    pool = report.variables if pool is None else pool
    if not isinstance(item, str):  # a step's report gives no verdict to a weight none of its calls asks for
        found = report.result(item)
        return ([found] if not report.gradient_sites or any(r.node == found.node for r in pool) else []), _EXACT
    if item == ALL_TRAINABLE:
        return [r for r in pool if r.trainable], _ALL
    exact = [r for r in pool if item in (r.name, r.name.split(":")[0])]
    if exact:
        return exact, _EXACT
    if _GLOB_CHARS & set(item):
        return [r for r in pool if fnmatch.fnmatchcase(r.name, item)], _PATTERN
    return [], _EXACT


def _spec_text(item: Any) -> str:
    if isinstance(item, str):
        return repr(item)
    return str(getattr(item, "path", None) or getattr(item, "name", "variable"))


def _no_match(report: Report, verdict: Verdict, item: Any) -> str:
    names = [r.name for r in report.variables]
    if isinstance(item, str) and item == ALL_TRAINABLE:
        return f"{verdict.value}={item!r}: {report.target} has no trainable variable"
    # Keras paths carry the model's name first; a pattern written without it is the usual slip.
    hint = ""
    if isinstance(item, str) and any(fnmatch.fnmatchcase(n, "*/" + item) for n in names):
        hint = f" (did you mean '*/{item}'?)"
    shown = ", ".join(names[:_MAX_NAMES]) + (f", ... ({len(names)} in all)" if len(names) > _MAX_NAMES else "")
    listed = {r.node for r in report.variables}  # a step's report lists the sources its gradient calls ask for
    others = [r.name for r in _resolve(report, item, [r for r in report._everything if r.node not in listed])[0]]  # noqa: SLF001
    if others and report.gradient_sites:  # a frozen backbone's weights: no verdict, as no gradient call asks for them
        more = f", ... ({len(others)} in all)" if len(others) > _MAX_NAMES else ""
        return (f"{verdict.value}={_spec_text(item)} matches only variables the step's gradient calls do not ask for "
                f"({', '.join(others[:_MAX_NAMES])}{more}: not trainable, or not among the sources), so they have no "
                f"verdict and its optimizer does not train them; the sources are: {shown}")
    return f"{verdict.value}={_spec_text(item)} matches no variable{hint}; the variables are: {shown}"


def _format_barrier(barrier: Barrier) -> str:
    """One barrier: where it was made, what it is, and the user's code there (as a traceback does)."""
    if barrier.source is None:
        return f"{barrier.what}, made inside library code"
    if not barrier.in_user_code:
        return f"{barrier.what}, made{barrier.where()}"
    code = f"\n          {barrier.source.code}" if barrier.source.code else ""
    return f"{barrier.source}: {barrier.what}{code}"


def _format_results(
    title: str, results: Sequence[VariableResult], found: Verdict, barriers: dict[int, tuple[Barrier, ...]]
) -> list[str]:
    """Lines for variables sharing one (expected, found) pair, grouped by the barriers they share."""
    lines: list[str] = []
    groups: dict[tuple[Barrier, ...], list[VariableResult]] = {}
    for r in results:
        groups.setdefault(barriers.get(id(r.variable), ()) if found is Verdict.BLOCKED else (), []).append(r)
    for cut, members in groups.items():
        lines.append(f"  {title}:")
        lines.extend(f"    {r.name}" for r in members[:_MAX_NAMES])
        if len(members) > _MAX_NAMES:
            lines.append(f"    ... and {len(members) - _MAX_NAMES} more")
        if found is Verdict.BLOCKED:
            lines.append("    every gradient path from them to the loss is cut at:" if cut else
                         "    (no barrier could be named)")
            lines.extend(f"      {_format_barrier(b)}" for b in cut[:_MAX_BARRIERS])
            if len(cut) > _MAX_BARRIERS:
                lines.append(f"      ... and {len(cut) - _MAX_BARRIERS} more barriers")
        elif found is Verdict.UNUSED:
            lines.append("    they do not feed the loss at all")
        elif found is Verdict.RECEIVES:
            lines.append("    a gradient reaches them from the loss")
            frozen = sum(not r.trainable for r in members)
            if frozen:  # "my frozen backbone must not train": trainable=False cuts no gradient
                lines.append(f"    ({'all' if frozen == len(members) else frozen} of them not trainable: the optimizer "
                             "leaves them alone, but trainable=False cuts no gradient, the tape still gives them one)")
    return lines


def _contract_message(
    report: Report, loss: str | None, wrong: list[tuple[VariableResult, _Expectation]], unmatched: list[str]
) -> str:
    about = f"loss {loss!r} of {report.target}" if loss is not None else report.target
    lines = [f"gradient flow of {about} breaks the contract"
             + (f": {len(wrong)} variable{'s differ' if len(wrong) != 1 else ' differs'}" if wrong else "")]
    pairs: dict[tuple[Verdict, Verdict], list[VariableResult]] = {}
    for r, e in wrong:
        pairs.setdefault((e.verdict, _found(r, loss)), []).append(r)
    barriers = report.barriers_for([r for r, _ in wrong], loss)
    for (expected, found), results in pairs.items():
        lines.extend(_format_results(f"expected {expected}, found {found}", results, found, barriers))
    lines.extend(f"  {u}" for u in unmatched)
    if loss is not None and len(report.losses) > 1:
        lines.append(f"  {_per_loss_note(loss)}")
    return "\n".join(lines)


def _per_loss_note(loss: str) -> str:
    return (f"(verdicts for {loss!r} alone: what a tape gives when only {loss} is differentiated inside "
            "the step; a tape around the whole call gives zeros, not None, to variables other outputs use)")


def _verify(report: Report, loss: str | None) -> Any:
    if loss is None or len(report.losses) == 1 or report.gradient_sites:  # a step runs whole, as it trains
        return report.verify()
    from flowcheck.verify.loss import run_step

    traced = report._traced  # noqa: SLF001 -- the traced target the report was made from
    one = dataclasses.replace(traced, function=_only_output(traced.function, loss),
                              losses=[out for out in traced.losses if out.name == loss])
    return run_step(one, [r.per_loss[loss] is Verdict.RECEIVES for r in report.variables])


def _only_output(function: Any, loss: str) -> Any:
    """A copy of the traced ``tf.function`` returning only the output ``loss``.

    Differentiating one output of a function that returns several gives zeros, not None, to
    variables only the other outputs use (TensorFlow differentiates a call for all its outputs at
    once); a function returning that output alone gives the per-loss truth.
    """
    from tensorflow.python.util import nest

    python_function = function.python_function

    def only(*args: Any, **kwargs: Any) -> Any:
        return dict(nest.flatten_with_joined_string_paths(python_function(*args, **kwargs)))[loss]

    only.__name__ = f"{getattr(python_function, '__name__', 'step')}_{loss}"
    return function._clone(only)  # noqa: SLF001 -- keeps the user's tf.function options


def _verification_message(report: Report, loss: str | None, check: Any) -> str:
    about = f"loss {loss!r} of {report.target}" if loss is not None else report.target
    lines = [f"one real optimizer step on {about} disagrees with flowcheck's prediction "
             "(a flowcheck bug: please report it with this function):"]
    for c in check.disagreements:
        lines.append(f"    {c.name}: {disagreement(c.predicted, c.gradient)}")
    lines.extend(f"  {p}" for p in check.problems)
    return "\n".join(lines)
