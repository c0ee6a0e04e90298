"""What ``flowcheck run`` finds: one :class:`Step` per analyzed training step, and the eager-site helpers.

Plain data and small pure helpers (no TensorFlow import), shared by the hooks
(:mod:`flowcheck.run.intercept`), the runner (:mod:`flowcheck.run.script`) and the output
(:mod:`flowcheck.run.report`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from flowcheck.source.lines import SourceLine
from flowcheck.trace.sites import GradientSite

__all__ = ["EAGERLY_NOTE", "EAGER_NOTE", "Step", "StopScript", "asks_for_variables", "code_file", "UNFINISHED_REPEATS", "keep_values", "never_trained_ids", "round_unfinished", "step_name", "unasked_trainable_ids",
           "untrained_text",
           "updated_ids"]

EAGER_NOTE = (
    "without a graph flowcheck cannot name the op that cuts a source; put the step (the tape and its loss) "
    "in a function decorated with @tf.function to get the op and your line"
)
EAGERLY_NOTE = (
    "without a graph flowcheck cannot name the op that cuts a source; tf.config.run_functions_eagerly(True) "
    "runs your tf.functions as plain Python: without it flowcheck gets the op and your line"
)


class StopScript(BaseException):
    """Raised into the script to end it: its first round of training steps has been analyzed.

    A ``BaseException``, so that the script's own ``except Exception`` does not swallow it.
    """


@dataclass
class Step:
    """One analyzed training step of the script.

    Attributes:
        kind: ``"keras train_step"``, ``"tf.function"``, ``"tf1 Session.run"``, ``"tf1 graph"`` (a TF1
            gradient call that raised while the graph was built) or ``"eager tape.gradient"``.
        name: The step's name (the function's, or the model's and how it was called).
        call: The script's line that called it first.
        report: flowcheck's report on the step (None for an eager site or when analysis failed).
        verification: The report's verification, when it was run.
        eager: For an eager ``tape.gradient``: the site, with TensorFlow's own answer as verdicts.
        error: Analysis failed: why, in one line.
        raised: The step itself raised when it ran (after being analyzed): the error in one line.
        owners: Names of the Keras models and layers that own each variable (for ``--expect-*``).
        first_call: The verification that the script's next call of the step will make
            (``flowcheck.verify.first_call.FirstCall``), until it is made.
        next_call: For an eager site: the sources TensorFlow gave a gradient at the first call and
            None at the next (the next round's call, made as the script ended), in words.
        untraceable: Analysis failed because the step cannot be traced (it runs eagerly and takes
            values out of TensorFlow): its gradient calls can still be judged as they run.
        held_by: For an eager site with a cut, made inside a function of the script: that function
            and the arguments of its call (and its call's place on its line, and the user's lines its
            tape's block ran), traced once the script has ended to name the cuts
            (``flowcheck.run.eager_trace``).
    """

    kind: str
    name: str
    call: SourceLine | None
    report: Any = None
    verification: Any = None
    eager: GradientSite | None = None
    error: str | None = None
    raised: str | None = None
    owners: dict[int, tuple[str, ...]] = field(default_factory=dict)
    first_call: Any = field(default=None, repr=False)
    next_call: str | None = None
    untraceable: bool = False
    values: dict[int, tuple[Any, Any]] = field(default_factory=dict, repr=False)
    updated: set[int] = field(default_factory=set)
    held_by: tuple[Any, tuple[Any, ...], dict[str, Any], int, frozenset[tuple[str, int]] | None] | None = field(default=None, repr=False)


def keep_values(step: Step) -> None:
    """Keep the values of the variables the step reads and does not train, before its first run.

    A DDPG's target networks are read in the critic's tape and trained by no gradient: the script
    moves them itself (a soft update by ``assign`` or ``set_weights`` between steps). What changed
    when the round ends was updated by the script, so it is not "never trained".
    """
    never = getattr(step.report, "never_trained", ())
    unasked = _unasked_trainable([step.report]) if getattr(step.report, "gradient_sites", None) is not None else []
    for result in (*never, *unasked):  # (SAC's target critics, cut by a stop_gradient, moved by its own soft update)
        try:
            step.values[id(result.variable)] = (result.variable, np.array(result.variable.numpy(), copy=True))
        except Exception:  # noqa: BLE001 -- a value that cannot be read is judged as before: never trained
            continue


def updated_ids(steps: Sequence[Step]) -> set[int]:
    """The ids of the variables kept by :func:`keep_values` whose values the script has changed since."""
    for step in steps:
        for key, (variable, value) in step.values.items():
            if key not in step.updated and _moved(variable, value):
                step.updated.add(key)
    return {key for step in steps for key in step.updated}


def _moved(variable: Any, value: Any) -> bool:
    try:
        return not np.array_equal(np.asarray(variable.numpy()), value)
    except Exception:  # noqa: BLE001 -- no longer readable (a deleted variable): not known to have moved
        return False


def _reports(steps: Sequence[Step]) -> list[Any]:
    """The steps' reports that have gradient sites, and each eager step's site as a report of its own."""
    reports = [s.report for s in steps if getattr(s.report, "gradient_sites", None) is not None]
    return reports + [SimpleNamespace(gradient_sites=(s.eager,), never_trained=()) for s in steps if s.eager is not None]


def never_trained_ids(steps: Sequence[Step]) -> set[int]:
    """The ids of the variables some step reads and no gradient call of any of ``steps`` asks for
    (a GAN's discriminator, read by the generator's step, is trained by its own step)."""
    from flowcheck.analysis.steps import never_trained_across

    return {id(r.variable) for r in never_trained_across(_reports(steps))} - updated_ids(steps)


def unasked_trainable_ids(steps: Sequence[Step]) -> set[int]:
    """The ids of the trainable variables some step reads and no gradient call of any of ``steps``
    asks for, differentiably or not (a WGAN's generator, run before the critic's tape opens: its
    own step comes after ``n_critic`` critic steps); the never-trained ones among them."""
    from flowcheck.analysis.steps import listed_ids

    reports = _reports(steps)
    unasked = {id(r.variable) for r in _unasked_trainable(reports)}
    # A TF1 step's report also names the trainable variables it reads that other gradient calls list.
    listed = listed_ids(reports)
    unasked |= {id(v) for report in reports for v in getattr(report, "read_trainable", ()) if id(v) not in listed}
    return unasked - updated_ids(steps)


def _unasked_trainable(reports: Sequence[Any]) -> list[Any]:
    """The results of the trainable variables the steps of ``reports`` read that no gradient call asks for."""
    from flowcheck.analysis.steps import listed_ids

    listed = listed_ids(reports)
    read = [r for report in reports for r in (*getattr(report, "_everything", ()), *report.never_trained)
            if r.trainable and _reads(report, r)]
    return [r for r in read if not {id(r.variable), id(getattr(r.variable, "_value", None))} & listed]


def _reads(report: Any, result: Any) -> bool:
    """Whether the step of ``report`` reads ``result`` 's variable (a Keras model's tracked head that
    its train_step never calls, SimCLR's linear probe, is the model's, not the step's)."""
    graph = getattr(report, "graph", None)
    return graph is None or result.node not in graph or graph.out_degree(result.node) > 0


def asks_for_variables(steps: Sequence[Step]) -> bool:
    """Whether a gradient call of the steps asks for a variable: one asking only for tensors (a saliency
    map of validation images before training starts) trains nothing, and the training step is to come."""
    return any(hasattr(source.variable, "assign") for report in _reports(steps) for site in report.gradient_sites
               if site is not None for source in site.sources)


# Repeated calls of analyzed steps let through while the round looks unfinished; then it ends all the same.
UNFINISHED_REPEATS = 10


def round_unfinished(steps: Sequence[Step], repeats: int) -> bool:
    """Whether a step analyzed once, about to run again, should pass (``repeats``: how many did):
    while a trainable variable the steps read is trained by none of them, or no step asks for a
    variable at all, a step of the round may still come (a WGAN's critic step runs ``n_critic`` times
    before the generator's first step; a saliency loop runs before training), up to
    :data:`UNFINISHED_REPEATS` repeats."""
    if repeats < UNFINISHED_REPEATS and (unasked_trainable_ids(steps) or not asks_for_variables(steps)):
        return True
    for step in steps:  # the round is over: what the script moves later (a phase after it) is not judged
        step.values.clear()
    return False


def code_file(fn: Any) -> str:
    """The file that defines a ``tf.function``'s Python function ("" when it has none); for a method,
    the method's own (TensorFlow binds it through a wrapper of its own)."""
    target = getattr(fn, "python_function", None)
    method = getattr(target, "weakrefself_func__", None)
    target = inspect.unwrap(method() if callable(method) else target) if callable(target) else target
    target = getattr(target, "__func__", target)
    return str(getattr(getattr(target, "__code__", None), "co_filename", ""))


def step_name(fn: Any) -> str:
    """A ``tf.function``'s name as its user wrote it: its Python function's qualified name (a
    ``functools.partial``'s function's, ``tf.function(partial(train_step, model=model))``)."""
    python = getattr(fn.python_function, "func", fn.python_function)
    return str(getattr(python, "__qualname__", None) or getattr(fn, "__name__", None) or type(python).__name__)


def untrained_text(step: Step, model: Any) -> str:
    """A Keras ``fit`` / ``train_on_batch`` of a model with no trainable weights, in one line.

    Keras 3 reads ``trainable`` when the step runs (Keras 2 froze it at ``compile()``): a model
    whose layers were all set ``trainable = False`` after compiling trains nothing, and Keras's
    ``train_step`` asks for no gradient, silently. Nor does it track a ``tf.Variable`` a layer holds
    (``self.w = tf.Variable(5.0)``, the "Basic training loops" guide's Keras model): no weight at all.
    """
    import tensorflow as tf

    at = f" at {step.call}" if step.call else ""
    weights = len(model.weights)
    held = [f"{layer.name}.{name}" if layer is not model else name for layer in [model, *model._flatten_layers(include_self=False)]  # noqa: SLF001
            for name, value in vars(layer).items() if isinstance(value, tf.Variable)]
    if not weights and held:
        return (f"{step.name}{at} trains nothing: the model has no weights: Keras 3 does not track the tf.Variable "
                f"{', '.join(held)} it holds (create {'it' if len(held) == 1 else 'them'} with self.add_weight), "
                "so Keras's train_step asks for no gradient")
    frozen = f" (its {weights} weights are frozen: trainable=False when the step runs)" if weights else ""
    return (f"{step.name}{at} trains nothing: the model has no {'trainable ' if weights else ''}weights{frozen}, "
            "so Keras's train_step asks for no gradient")
