"""Variables made under a ``tf.distribute`` strategy, seen as the user holds them.

A variable created in ``strategy.scope()`` (``MirroredStrategy``, ``MultiWorkerMirroredStrategy``;
``SyncOnRead`` ones such as metrics too) is one object for the user but one ``tf.Variable`` per
local replica for the graph: a traced step captures the components (``head``,
``head/replica_1``), and ``FuncGraph.variables`` lists them. flowcheck reports the object the user
made, named as they named it, and maps every component back to it. TensorFlow marks each
component with a weak reference to its container (``values.DistributedVariable.__init__``, read
by ``distribute_utils.value_container``); that is what :func:`container` follows.

Plain attribute access only, so that every stage (the report included) can use it without
importing TensorFlow.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EAGER_REPLICAS", "components", "container", "handles", "names", "replica_threads"]


def components(variable: Any) -> tuple[Any, ...]:
    """The per-replica variables behind a distributed variable; ``(variable,)`` for any other."""
    values = getattr(variable, "_values", None)
    return tuple(values) if values else (variable,)


def container(variable: Any) -> Any:
    """The distributed variable a per-replica component belongs to; ``variable`` itself otherwise."""
    if getattr(variable, "_values", None):
        return variable  # already the container (it has a ``_distributed_container`` of its own)
    # A ResourceVariable carries the mark on its handle (attributes set on a CompositeTensor are
    # lost through tf.nest), other variables on themselves.
    for holder in (getattr(variable, "handle", None), variable):
        ref = getattr(holder, "_distributed_container", None)
        found = ref() if callable(ref) else None
        if found is not None:
            return found
    return variable


def handles(variable: Any) -> tuple[Any, ...]:
    """Every resource handle by which a graph may capture the variable (one per replica)."""
    found = tuple(c.handle for c in components(variable))
    packed = getattr(variable, "_packed_var", None)  # TPU strategies capture one packed handle
    return found + ((packed.handle,) if packed is not None else ())


def names(variable: Any) -> tuple[str, ...]:
    """The TensorFlow names of the variable's components, without the ``:0`` suffix."""
    return tuple(str(getattr(c, "name", "")).split(":")[0] for c in components(variable))


# Why an eager call gives a distributed variable no gradient where its traced graph gives one.
EAGER_REPLICAS = (
    "called eagerly, strategy.run runs each replica on a thread of its own, which a tape around the "
    "call does not record: wrap the step in tf.function, or take the gradient inside the replica function"
)


def replica_threads(variable: Any, eager_receives: bool) -> str | None:
    """:data:`EAGER_REPLICAS` for a distributed variable the eager call gives no gradient; else None."""
    return EAGER_REPLICAS if getattr(variable, "_values", None) and not eager_receives else None
