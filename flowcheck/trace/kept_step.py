"""The training step a Keras 3 model keeps between ``fit`` calls, and which weights it really trains.

Keras 3 traces ``model.train_function`` once and keeps it until ``compile()`` (or
``make_train_function(force=True)``): a ``trainable`` flag changed in between changes nothing in it.
A layer frozen after a first ``fit`` is still trained by the next one, and a layer unfrozen is not
(its weights are also unknown to the optimizer built on the first step's weights). What the kept step
trains is read from its traced graphs: the weights its optimizer assigns to.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

import tensorflow as tf

from flowcheck._model import Verdict

__all__ = [
    "frozen_but_trained", "kept_assignments", "left_out_by_fit", "left_out_of_kept_step", "outputs_without_loss",
    "overrides_train_step", "unknown_to_optimizer",
]

# Keras's TensorFlow optimizers change a weight through these (assign_sub, assign_add, assign).
_ASSIGNS: Final = frozenset({"AssignVariableOp", "AssignSubVariableOp", "AssignAddVariableOp"})
# The ops that call function bodies, and the attributes naming them (only these are read: reading
# an attribute every op lacks costs 0.7 s on a MobileNetV2 step).
_CALLS: Final = {
    "PartitionedCall": ("f",), "StatefulPartitionedCall": ("f",), "If": ("then_branch", "else_branch"),
    "StatelessIf": ("then_branch", "else_branch"), "Case": ("branches",), "StatelessCase": ("branches",),
    "While": ("body",), "StatelessWhile": ("body",),
}
_DEPTH: Final = 4


def kept_assignments(model: Any) -> frozenset[int] | None:
    """``id`` of each weight handle the step ``fit`` kept assigns to; None when ``fit`` will trace anew.

    Read once per question asked of the kept step: it walks every traced graph and its bodies.
    """
    traces = list(_concrete_functions(model))
    if not traces:
        return None
    assigned: set[int] = set()
    for concrete in traces:
        assigned.update(_assigned_handles(concrete))
    return frozenset(assigned)


def frozen_but_trained(model: Any, assigned: frozenset[int] | None) -> list[Any]:
    """The weights of ``model``, not trainable now, that the kept traced step (``assigned``) still trains.

    Only weights one of the model's optimizers was built on count (``model.optimizer``, or those a
    GAN's ``compile`` keeps as attributes): a target network a custom ``train_step`` updates by
    assignment (an EMA) is not trained by a gradient.
    """
    if not assigned:
        return []
    optimizers = [_built(o) for o in [getattr(model, "optimizer", None), *vars(model).values()]]
    built = [o for o in optimizers if o is not None]
    trainable = {id(w) for w in model.trainable_weights}
    frozen = [w for w in model.weights if id(w) not in trainable]
    return [w for w in frozen if id(_handle(w)) in assigned and any(o._var_key(w) in known for o, known in built)]  # noqa: SLF001


def _built(optimizer: Any) -> tuple[Any, dict[Any, Any]] | None:
    """A built Keras 3 optimizer (a LossScaleOptimizer's own) and the keys of the variables it knows."""
    inner: Any = getattr(optimizer, "inner_optimizer", optimizer)
    known = getattr(inner, "_trainable_variables_indices", None)
    if inner is None or not getattr(inner, "built", False) or not isinstance(known, dict) or not hasattr(inner, "_var_key"):
        return None
    return inner, known


def left_out_by_fit(model: Any, assigned: frozenset[int] | None, sites: Sequence[Any] = ()) -> list[Any]:
    """The trainable weights ``fit`` will not train: left out of the kept step (``assigned``), or unknown to the optimizer.

    ``sites``: the step's gradient calls as analyzed now; a ``train_step`` override is judged on the
    weights they ask for and that receive a gradient (Keras's own step asks for ``trainable_weights``).
    """
    asked = None if not overrides_train_step(model) else [
        s.variable for site in sites for s in site.sources if s.verdict is Verdict.RECEIVES
    ]
    left_out = {id(w): w for w in [*unknown_to_optimizer(model), *left_out_of_kept_step(model, assigned, asked)]}
    return list(left_out.values())


def left_out_of_kept_step(model: Any, assigned: frozenset[int] | None, asked: Sequence[Any] | None = None) -> list[Any]:
    """The trainable weights of ``model`` the kept traced step (``assigned``) does not train (none without one).

    Keras's own ``train_step`` trains the weights trainable when it was traced: one unfrozen since
    is left out, also when its optimizer knows it (built when it was trainable before). An override
    is judged on the weights it asks for now (``asked``), when its kept step trains some weights.
    """
    if assigned is None or (asked is None and overrides_train_step(model)):
        return []
    mine = {id(_handle(w)): w for w in model.trainable_weights}
    if not any(h in assigned for h in mine):  # an override that applies no gradient itself
        return []
    wanted = mine if asked is None else {id(_handle(v)): v for v in asked if id(_handle(v)) in mine}
    return [mine[h] for h in wanted if h not in assigned]


def unknown_to_optimizer(model: Any) -> list[Any]:
    """The trainable weights ``fit`` will not train because the model's optimizer was built without them.

    A Keras 3 optimizer is built on the trainable weights of the first step it applies and refuses
    any other ("Unknown variable"), and ``fit`` keeps the step it traced until ``compile()``. A
    weight made trainable after a first ``fit`` (a backbone unfrozen for fine-tuning, with no
    ``compile()`` with a new optimizer since) is never trained: silently when ``fit`` runs its traced
    step again, with Keras's ``ValueError`` when new batch shapes make it trace again. Only Keras's
    own ``train_step`` applies ``model.optimizer`` to ``trainable_weights``.
    """
    found = None if overrides_train_step(model) else _built(getattr(model, "optimizer", None))
    if found is None:
        return []
    optimizer, known = found
    return [w for w in model.trainable_weights if optimizer._var_key(w) not in known]  # noqa: SLF001 -- as apply asks


def overrides_train_step(model: Any) -> bool:
    """Whether ``model``'s class overrides Keras's own ``train_step``."""
    import keras

    return type(model).train_step is not keras.Model.train_step


def _handle(weight: Any) -> Any:
    variable = weight if isinstance(weight, tf.Variable) else getattr(weight, "value", weight)
    return getattr(variable, "handle", None)


def _concrete_functions(model: Any) -> Iterator[Any]:
    """The traces of ``model.train_function`` that ``fit`` will run again (none before one traced it).

    ``fit`` calls Keras's ``multi_step_on_iterator`` with its dataset's iterator: kept once traced.
    Traced anew, it calls ``one_step_on_data`` on batches of unknown size, and reuses only a trace
    of it made for such batches (by an earlier ``fit``): one made by ``train_on_batch`` on a fixed
    batch size is not what ``fit`` runs.
    """
    functions = list(_tf_functions(getattr(model, "train_function", None), set(), 0))
    named = {getattr(getattr(f, "_python_function", None), "__name__", ""): f for f in functions}
    outer, inner = named.get("multi_step_on_iterator"), named.get("one_step_on_data")
    if outer is None or inner is None:  # another Keras: every trace it holds
        for function in functions:
            yield from _traces(function)
    elif outer.experimental_get_tracing_count():
        yield from _traces(outer)  # the traces of one_step_on_data it calls are reached through its call ops
    else:
        yield from (c for c in _traces(inner) if _any_batch_size(c))


def _traces(function: Any) -> list[Any]:
    list_all = getattr(function, "_list_all_concrete_functions", None)
    return list(list_all()) if function.experimental_get_tracing_count() and list_all is not None else []


def _any_batch_size(concrete: Any) -> bool:
    """Whether a trace takes batches of any size (its inputs' first dimensions unknown)."""
    specs = [s for s in tf.nest.flatten(concrete.structured_input_signature) if isinstance(s, tf.TensorSpec)]
    return bool(specs) and all(s.shape.rank and s.shape[0] is None for s in specs)


def _tf_functions(fn: Any, seen: set[int], depth: int) -> Iterator[Any]:
    """The ``tf.function`` s ``fn`` closes over (Keras wraps its traced step in plain closures)."""
    if fn is None or id(fn) in seen or depth > _DEPTH:
        return
    seen.add(id(fn))
    if isinstance(fn, tf.types.experimental.PolymorphicFunction):
        yield fn
        fn = getattr(fn, "_python_function", None)
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if callable(value):
            yield from _tf_functions(value, seen, depth + 1)


def _assigned_handles(concrete: Any) -> set[int]:
    """``id`` of each outer variable handle an assign op of the trace (nested functions included) writes."""
    graph = concrete.graph
    outer = {_key(inner): handle for handle, inner in graph.captures}
    found: set[int] = set()
    _walk(graph, graph, outer, found, 0)
    return found


def _walk(top: Any, graph: Any, outer: dict[tuple[int, str], Any], found: set[int], depth: int) -> None:
    for op in graph.get_operations():
        if op.type in _ASSIGNS and op.inputs:
            handle = outer.get(_key(op.inputs[0]))
            if handle is not None:
                found.add(id(handle))
        elif depth < _DEPTH:
            for body, inputs in _bodies(top, op):
                inner = {_key(p): outer[_key(t)] for p, t in zip(body.inputs, inputs) if _key(t) in outer}
                if inner:
                    _walk(top, body, inner, found, depth + 1)


def _bodies(top: Any, op: Any) -> Iterator[tuple[Any, Any]]:
    """Each function graph ``op`` calls, with the op's inputs its placeholders stand for."""
    inputs = list(op.inputs)
    if op.type in ("If", "StatelessIf", "Case", "StatelessCase"):
        inputs = inputs[1:]  # the predicate or branch index
    for attr in _CALLS.get(op.type, ()):
        try:
            value = op.get_attr(attr)
        except (ValueError, TypeError):
            continue
        for name in (getattr(v, "name", None) for v in (value if isinstance(value, list) else [value])):
            atomic = top._get_function(name) if name else None  # noqa: SLF001 -- the graph's function library
            body = getattr(atomic, "graph", None)
            if body is not None:
                yield body, inputs


def _key(tensor: Any) -> tuple[int, str]:
    return id(tensor.graph), tensor.name


def outputs_without_loss(model: Any) -> list[str]:
    """Said when ``compile(loss=...)`` (a dict or a list) gives some of the model's outputs no loss:
    the weights only those outputs read are then unused, and the site alone says no more than that."""
    loss = getattr(getattr(model, "_compile_loss", None), "_user_loss", None)
    names = list(getattr(model, "output_names", None) or ())
    if isinstance(loss, dict):
        missing = [n for n in names if loss.get(n) is None]
    elif isinstance(loss, (list, tuple)) and len(loss) == len(names):
        missing = [n for n, one in zip(names, loss) if one is None]
    else:
        return []
    if not missing or len(missing) == len(names):
        return []
    return [f"Keras model {model.name!r}: compile(loss=...) gives output{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(n) for n in missing)} no loss: weights only {'they read' if len(missing) > 1 else 'it reads'} "
            "get no gradient from fit"]
