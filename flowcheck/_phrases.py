"""The words every output says the same way: the terminal, JSON, HTML, diagrams, assertion messages, the Keras callback.

Sentences, and the small texts built from results (a shape, the verdict counts).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from flowcheck._model import Verdict

__all__ = [
    "EAGER_ANSWER", "GRADIENT_ERROR_ADVICE", "NEVER_TRAINED", "a_or_an", "left_out_lines", "still_trained_lines", "gradient_error_cause", "gradient_error_message", "counts_text", "disagreement", "receiving_text",
    "shape_text", "untracked_text", "verdict_counts", "would_receive_text",
]

GRADIENT_ERROR_ADVICE: Final = (
    "a gradient reaches these ops and they have none; if a result is meant as a constant, wrap the "
    "result in tf.stop_gradient (not the input: a gradient still reaches the op)"
)
"""What to do about ``Report.gradient_errors``."""

EAGER_ANSWER: Final = "called eagerly: TensorFlow's own answer, without a graph to explain it"
"""Said of a gradient call made eagerly: its verdicts are TensorFlow's answers, no op named."""

OUTSIDE_TAPE: Final = ("the targets were not computed while the tape recorded (outside its with block): "
                       "nothing is differentiated")
"""Said of a gradient call whose targets the tape holds no record of."""

NO_REGISTERED_GRADIENT: Final = "has no registered gradient"
"""Said in the detail of an op with no gradient at all (``graph.ops``), not of a gradient that refuses."""


def gradient_error_cause(details: Iterable[str]) -> str:
    """What TensorFlow raises at the ops of ``Report.gradient_errors``, from their barriers' details.

    An op with no registered gradient raises ``LookupError``; a gradient function that refuses for
    the op's settings (QR of full matrices, least squares with ``fast=False``) says so in its detail.
    """
    causes: set[str] = set()
    for detail in details:
        if NO_REGISTERED_GRADIENT in detail or " raises " not in detail:
            causes.add("LookupError (no gradient defined)")
        else:  # "the registered gradient of Qr raises NotImplementedError: ..."
            causes.add(detail.split(" raises ", 1)[1].split(":", 1)[0])
    return " or ".join(sorted(causes)) or "LookupError (no gradient defined)"

NEVER_TRAINED: Final = "receives a gradient, but no gradient call asks for it: it never trains"
"""The finding of ``Report.never_trained``."""


def untracked_text(name: str, held_as: str) -> str:
    """Why a never-trained ``tf.Variable`` that a Keras layer holds as ``held_as`` is asked for by no call."""
    layer = held_as.split(".", 1)[0]
    return (f"{name} is a tf.Variable held as {held_as}: Keras 3 tracks only its own variables, not a tf.Variable "
            f"or tf.Module set on a layer, so it is not in {layer}.trainable_variables (nor saved with it); create "
            f"it with self.add_weight(...) (or keras.Variable) to train it with the model")


FROZEN_MODEL: Final = "has no trainable weights (trainable=False when the step runs), so Keras's train_step asks for no gradient"
"""Why ``fit`` trains nothing for a Keras model whose every weight is frozen (a report with no gradient site)."""


def a_or_an(noun: str) -> str:
    """``noun`` with its indefinite article, as said aloud: "an int", "an EagerTensor", "a uint8", "a list"."""
    sounds_like_you = noun[:1].lower() == "u" and noun[1:3].lower() in ("in", "ni", "se")  # uint8, unicode, user
    return f"{'an' if noun[:1].lower() in 'aeiou' and not sounds_like_you else 'a'} {noun}"


def shape_text(shape: Sequence[int | None] | None) -> str:
    """``[2,?]`` for a shape tuple, ``[?]`` for an unknown shape."""
    if shape is None:
        return "[?]"
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"


def verdict_counts(results: Iterable[object]) -> dict[Verdict, int]:
    """How many of ``results`` (anything with a ``verdict``) have each verdict, in :class:`Verdict`'s order."""
    verdicts = [getattr(r, "verdict") for r in results]
    return {v: sum(found is v for found in verdicts) for v in Verdict}


def counts_text(results: Iterable[object]) -> str:
    """``"2 receives, 1 blocked, 0 unused"``."""
    return ", ".join(f"{n} {v.value}" for v, n in verdict_counts(results).items())


def disagreement(predicted: bool, gradient: object) -> str:
    """``"predicted a gradient, the tape gave none"``: a verification check that went against the prediction."""
    return f"predicted {'a gradient' if predicted else 'no gradient'}, the tape gave {gradient}"


def receiving_text(count: int) -> str:
    """``"1 source receives a gradient"``, ``"3 sources receive a gradient"``: a site's receiving sources counted."""
    return f"{count} source receives a gradient" if count == 1 else f"{count} sources receive a gradient"


def would_receive_text(count: int) -> str:
    """``"3 sources would receive a gradient had the call not raised"``: a raising site's receiving sources
    (a call that raises gives no gradient at all; these are what its graph would give)."""
    return f"{count} source{'' if count == 1 else 's'} would receive a gradient had the call not raised"


def left_out_lines(model: str, names: Sequence[str], traced: bool) -> list[str]:
    """Why ``fit`` will not train the trainable weights ``names`` of ``model`` (whose step it kept, when
    ``traced``), and the names below."""
    n = len(names)
    weights = f"{n} weight{'s' if n != 1 else ''} of model {model!r}"
    if traced:
        why = (f"fit will not train {weights} made trainable after its training step was traced: Keras keeps "
               "that step and the optimizer's variables until model.compile() is called again with a new optimizer:")
    else:  # compile() dropped the step, but its optimizer was built on other weights: the new step raises
        why = (f"fit will raise Keras's 'Unknown variable' error on {weights} made trainable after its "
               "optimizer was built: give model.compile() a new optimizer:")
    return [why, *(f"    {name}" for name in names)]


def still_trained_lines(model: str, names: Sequence[str]) -> list[str]:
    """Why ``fit`` will still train the weights ``names`` of ``model`` frozen after it traced its step, and the names."""
    n = len(names)
    return [
        f"fit will still train {n} weight{'s' if n != 1 else ''} of model {model!r} frozen after its training "
        "step was traced: Keras keeps that step until model.compile() is called again:",
        *(f"    {name}" for name in names),
    ]


def gradient_error_message(report: Any) -> str:
    """Why differentiating ``report``'s loss raises, one op per line, for people to act on (assertions, the callback)."""
    advice, remedy = GRADIENT_ERROR_ADVICE.split("; ", 1)
    cause = gradient_error_cause(b.detail for b in report.gradient_errors)
    lines = [f"differentiating the loss of {report.target} raises {cause}: {advice}"]
    for b in report.gradient_errors:
        lines.append(f"    {b.op_type} {b.op_name!r}" + (f" at {b.source}" if b.source else ""))
        if b.source is not None and b.source.code:
            lines.append(f"        {b.source.code}")
    lines.append(f"  {remedy}")
    return "\n".join(lines)
