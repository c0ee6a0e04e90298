"""Which objects a traced function can reach that own variables.

A step reaches variables through what its code names: its closure cells, the globals named by its
code (and by the code of functions defined inside it), the object of a method (a ``tf.function``
method too: TensorFlow binds it through a ``TfMethodTarget``) and that object's attributes, and
the user's own helper functions it names (a ``strategy.run`` replica function defined at module
level, a model-building helper), followed a few calls deep, never into library code. Those that
own variables (``tf.Module``s, Keras layers and models, ``tf.Variable``s) are the owners: their
variables are listed even when the step never reads them (*unused*).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from typing import Any

import tensorflow as tf
from tensorflow.python.eager.polymorphic_function.tf_method_target import TfMethodTarget

from flowcheck.source.lines import is_library_file

__all__ = [
    "frame_module_paths", "is_keras_layer", "module_paths", "owners_in", "owners_of", "seen_through", "untracked_by_keras",
    "user_function",
]

_HELPER_DEPTH = 3  # step -> replica function -> model function -> layer helper


def owners_of(fn: Any) -> list[Any]:
    """Objects reachable from a function that may own variables (closures, globals, self, helpers)."""
    found: list[Any] = []
    _collect(fn, found, set(), _HELPER_DEPTH)
    return owners_in(tuple(found))


def seen_through(fn: Any) -> tuple[list[Any], Any]:
    """The user's function behind flowcheck's own trace wrapper (trace/created) and ``functools.partial`` s,
    and the values the partials bind (a model, a trainer): both may own variables and state."""
    bound: list[Any] = []
    fn = getattr(fn, "flowcheck_target", fn)
    while isinstance(fn, functools.partial):
        bound.extend((*fn.args, *fn.keywords.values()))
        fn = getattr(fn.func, "flowcheck_target", fn.func)
    return bound, fn


def _collect(fn: Any, found: list[Any], seen: set[int], depth: int) -> None:
    bound_values, fn = seen_through(fn)
    found.extend(bound_values)
    target = inspect.unwrap(fn) if callable(fn) else fn
    if id(target) in seen:
        return
    seen.add(id(target))
    bound = getattr(target, "__self__", None)
    bound = bound.target if isinstance(bound, TfMethodTarget) else bound
    if bound is not None:  # a method's object, and the variables and models among its attributes
        found.extend((bound, getattr(bound, "__dict__", {})))
        target = getattr(target, "__func__", target)
    reached: list[Any] = []
    for cell in getattr(target, "__closure__", None) or ():
        try:
            reached.append(cell.cell_contents)
        except ValueError:
            continue
    code = getattr(target, "__code__", None)
    globals_ = getattr(target, "__globals__", {})
    if code is not None:
        reached.extend(globals_[n] for n in _names(code) if n in globals_)
    found.extend(reached)
    found.extend(vars(value) for value in reached if _user_object(value))  # trainer.model, named by the function
    if not callable(fn) or (not inspect.isfunction(target) and not inspect.ismethod(fn)):
        found.append(fn)
    if depth > 0:
        for value in reached:
            helper = user_function(value)
            if helper is not None:
                _collect(helper, found, seen, depth - 1)


def _user_object(value: Any) -> bool:
    """An instance of a class the user wrote (a trainer holding a model): its attributes may own variables."""
    cls = type(value)
    if cls.__module__ == "builtins" or inspect.isclass(value) or inspect.ismodule(value) or callable(value):
        return False
    try:
        return not is_library_file(inspect.getfile(cls)) and isinstance(getattr(value, "__dict__", None), dict)
    except (TypeError, OSError):  # a class with no file: defined in a notebook cell or by exec
        return False


def user_function(value: Any) -> Any:
    """The Python function behind ``value`` when it is one the user wrote; else None."""
    if isinstance(value, tf.types.experimental.PolymorphicFunction):
        value = value.python_function
    if not inspect.isfunction(value) or is_library_file(value.__code__.co_filename):
        return None
    return value


def _names(code: Any) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if inspect.iscode(const):
            yield from _names(const)


def owners_in(values: tuple[Any, ...]) -> list[Any]:
    """The values (or the items of list, tuple and dict values) that may own variables."""
    owners: list[Any] = []
    for value in values:
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else (value,)
        for item in items:
            if isinstance(item, tf.Module) or is_keras_layer(item) or isinstance(item, tf.Variable):
                owners.append(item)
    return owners


def is_keras_layer(value: Any) -> bool:
    """Whether ``value`` is a Keras 3 layer (a model included)."""
    import keras

    return isinstance(value, keras.layers.Layer)


def module_paths(owner: Any) -> dict[int, str]:
    """Every ``tf.Variable`` of a ``tf.Module`` by the module's name and the attributes that lead to
    it (``mlp/l1/w``), keyed by ``id``."""
    found = owner._flatten(predicate=lambda v: isinstance(v, tf.Variable), with_path=True)  # noqa: SLF001
    return {id(v): "/".join([_module_name(owner), *(str(p) for p in path)]) for path, v in found}


def _module_name(owner: Any) -> str:
    """A module's name; for a subclass whose ``__init__`` never called ``super().__init__()`` (it
    still works, ``name`` alone raises), the name ``tf.Module`` would have given it."""
    from tensorflow.python.module.module import camel_to_snake

    name = getattr(owner, "_name", None)
    return name if isinstance(name, str) else str(camel_to_snake(type(owner).__name__))


def frame_module_paths(frame: Any, sources: tuple[Any, ...]) -> dict[int, str]:
    """Paths (:func:`module_paths`) for ``sources``, from the ``tf.Module`` objects (not Keras
    layers: their variables carry a path) the user's ``frame`` holds in its locals and globals."""
    wanted = {id(s) for s in sources if isinstance(s, tf.Variable) and not isinstance(getattr(s, "path", None), str)}
    if not wanted:
        return {}
    paths: dict[int, str] = {}
    seen: set[int] = set()
    for value in [*frame.f_locals.values(), *frame.f_globals.values()]:
        if isinstance(value, tf.Module) and not is_keras_layer(value) and id(value) not in seen:
            seen.add(id(value))
            found = module_paths(value)
            paths.update((k, n) for k, n in found.items() if k in wanted and k not in paths)
            if wanted <= paths.keys():
                break
    return paths


def untracked_by_keras(owners: list[Any]) -> dict[int, str]:
    """The ``tf.Variable`` s Keras layers among ``owners`` hold without tracking them, keyed by ``id``,
    each told as ``layer.attribute`` (``clip.logit_scale``, ``model.centers[0]``, ``model.tower``).

    Keras 3 tracks only its own variables (``add_weight``, ``keras.Variable``): a ``tf.Variable``
    or a ``tf.Module`` set on a layer (directly, or in a list or dict) is left out of its
    ``trainable_variables``, so ``tape.gradient(loss, model.trainable_variables)`` never asks for
    it (a CLIP temperature, a two-tower embedding table written as in Keras 2).
    """
    found: dict[int, str] = {}
    seen: set[int] = set()
    for owner in owners:
        if not is_keras_layer(owner):
            continue
        for layer in (owner, *owner._flatten_layers(include_self=False)):  # noqa: SLF001
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            tracked = {id(getattr(v, "_value", None)) for v in layer.variables}
            for held, variable in _held_variables(vars(layer)):
                if id(variable) not in tracked:
                    found.setdefault(id(variable), f"{layer.name}.{held}")
    return found


def _held_variables(attributes: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """``(how it is held, tf.Variable)`` for the tf.Variables and tf.Modules among a layer's attributes."""
    for attr, value in attributes.items():
        if attr.startswith("_"):  # Keras's and TensorFlow's own bookkeeping (dependency maps) names them again
            continue
        if isinstance(value, dict):
            items = [(f"{attr}[{key!r}]", item) for key, item in value.items()]
        elif isinstance(value, (list, tuple)):
            items = [(f"{attr}[{i}]", item) for i, item in enumerate(value)]
        else:
            items = [(attr, value)]
        for held, item in items:
            if isinstance(item, tf.Variable):
                yield held, item
            elif isinstance(item, tf.Module) and not is_keras_layer(item):
                yield from ((f"{held} (a tf.Module)", v) for v in item.variables)


def variable_holders(owners: list[Any], wanted: dict[int, int]) -> dict[int, tuple[Any, str | None]]:
    """The layer or module among ``owners`` (or their sublayers) holding each variable of ``wanted``, and
    the attribute it is held as (None when only a Keras layer's own variables list holds it).

    ``wanted`` maps the ``id`` of a variable, or of its ``tf.Variable``, to the key the answer is given under.
    """
    found: dict[int, tuple[Any, str | None]] = {}
    seen: set[int] = set()
    for owner in owners:
        keras_layer = is_keras_layer(owner)
        if not keras_layer and not isinstance(owner, tf.Module):
            continue
        for holder in (owner, *owner._flatten_layers(include_self=False)) if keras_layer else (owner, *owner.submodules):  # noqa: SLF001
            if id(holder) in seen:
                continue
            seen.add(id(holder))
            for attr, value in vars(holder).items():
                if attr.startswith("_"):  # Keras's own lists of the layer's variables: not how the user holds it
                    continue
                items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else (value,)
                for item in items:
                    if id(item) in wanted:
                        found.setdefault(wanted[id(item)], (holder, attr))
            for v in getattr(holder, "_trainable_variables", []) + getattr(holder, "_non_trainable_variables", []):
                if id(v) in wanted:
                    found.setdefault(wanted[id(v)], (holder, None))
            if len(found) == len(set(wanted.values())):
                return found
    return found
