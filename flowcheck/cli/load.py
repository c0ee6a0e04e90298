"""Loading what ``flowcheck analyze PATH[:NAME]`` points at: the user's file, its target and inputs.

The conventions, in the order they are tried (the CLI's ``--help`` and README repeat them):

Target
    1. ``NAME`` from ``PATH:NAME`` (a dotted path such as ``agent.train_step`` is allowed);
    2. else a module-level ``flowcheck_target``;
    3. else the only ``tf.function`` defined in the file; when it defines none, the only compiled
       Keras model held at module level (else the only Keras model).

    The target is a ``tf.function``, a plain callable returning the loss, a compiled Keras model (its training step is
    analyzed), or a *factory*: a plain function that takes no argument. A factory is called once and returns one of
    ``target``, ``(target, args)`` or ``(target, args, kwargs)``, where ``args`` is a tuple (or list) of positional
    inputs -- for a Keras model, ``(x, y)`` -- and ``kwargs`` a dict. A zero-argument function that returns a tensor
    instead is a loss with no inputs and is analyzed itself; one whose own body asks for gradients (a training step
    reading its globals) is never called as a factory.

Example inputs
    1. the inputs a factory returned;
    2. else the module's own or random ones, as :mod:`flowcheck.cli.inputs` makes them.

The file is imported under a unique module name with its directory first on ``sys.path`` (as pytest does; a package's
module, ``proj/model.py``, is named in its package, the folder holding the package next, for its relative imports) and
``sys.argv = [PATH]`` as ``python PATH`` gives it (argparse at import sees its defaults); :func:`user_module` undoes
these after, and forgets the sibling modules the file imported (another file of that name sees its own code).
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import inspect
import itertools
import keyword
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Final

from flowcheck.cli.inputs import check_arity, example_inputs, is_keras_model, is_tf_function, tf_function_methods
from flowcheck._phrases import a_or_an
from flowcheck.errors import InvalidTargetError, TargetLoadError
from flowcheck.source.files import check_file, compile_python, training_at_import
from flowcheck.source.exceptions import describe_exception

__all__ = ["LoadedTarget", "find_target", "split_spec", "user_module"]

_counter = itertools.count()


@dataclass(frozen=True)
class LoadedTarget:
    """What to analyze, found in the user's module.

    Attributes:
        target: The object passed to ``flowcheck.analyze``.
        name: Its name in the module (``NAME`` or the attribute holding it).
        chosen_by: How it was found, in words.
        args: Positional example inputs.
        kwargs: Keyword example inputs.
        inputs_from: Where the inputs came from, in words.
        optimizer: The module's ``flowcheck_optimizer`` as ``(optimizer, learning_rate)``.
    """

    target: Any
    name: str
    chosen_by: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    inputs_from: str = "no inputs"
    optimizer: tuple[Any, float | None] | None = None


def split_spec(spec: str) -> tuple[str, str | None]:
    """Split ``PATH[:NAME]`` into the path and the name (None when absent)."""
    path, sep, name = spec.rpartition(":")
    if sep and path and name and all(part.isidentifier() and not keyword.iskeyword(part) for part in name.split(".")):
        return path, name
    return spec, None


@contextlib.contextmanager
def user_module(path: str) -> Iterator[ModuleType]:
    """Import the user's file for the duration of the block.

    Raises:
        TargetLoadError: the file is missing, a directory, not Python, has a syntax error, raises or exits importing.
    """
    full = check_file(path)
    code = compile_python(path, full)
    training = training_at_import(full)
    if training is not None:  # importing it would train, and save what it trains: refused before
        raise TargetLoadError(
            f"importing {path} would train: line {training[0]} ({training[1]}) runs at import; `flowcheck run {path}` "
            "runs it as python does and analyzes its training steps (or put its training under "
            "`if __name__ == \"__main__\":`)")

    directory = os.path.dirname(full)
    stem = os.path.splitext(os.path.basename(full))[0]
    name = f"_flowcheck_user_{next(_counter)}_{stem if stem.isidentifier() else 'module'}"
    package, root = _package_of(directory)
    if package:  # a module of a package (proj/model.py): its relative imports (from .layers import ...) work
        name = f"{package}.{name}"
    spec = importlib.util.spec_from_file_location(name, full)
    assert spec is not None  # a .py path always gives a spec
    module = importlib.util.module_from_spec(spec)
    before = set(sys.modules)
    saved_path, saved_argv = list(sys.path), sys.argv
    sys.path[:0] = [directory, root] if package else [directory]
    sys.argv = [path]  # as `python model.py` gives it: not flowcheck's own arguments
    sys.modules[name] = module  # dataclasses and pickling look the module up while it runs
    try:
        try:
            exec(code, module.__dict__)  # noqa: S102 -- importing the user's file is the point
        except SystemExit as exc:
            raise TargetLoadError(
                f"{path} called sys.exit({exc.code!r}) while being imported; put the script part "
                "under `if __name__ == \"__main__\":`"
            ) from exc
        except Exception as exc:  # noqa: BLE001 -- any error of the user's file, reported as one line
            raise TargetLoadError(_user_failure(f"importing {path}", exc, full)) from exc
        yield module
    finally:
        sys.path[:], sys.argv = saved_path, saved_argv
        for added in set(sys.modules) - before:
            file = getattr(sys.modules[added], "__file__", None) or ""
            ours = added == "flowcheck" or added.startswith("flowcheck.")  # lazily imported stages stay
            if added == name or (not ours and os.path.abspath(file).startswith(directory + os.sep)):
                del sys.modules[added]


def _runs_as_main(module: ModuleType, name: str) -> bool:
    """Whether the file's ``if __name__ == "__main__":`` block calls ``name`` once (``main()``, ``app.run(main)``)."""
    try:
        with open(str(module.__file__), encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError, TypeError):
        return False
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and "__name__" in ast.unparse(node.test):
            # Called once for its effect, its result unused (main(), sys.exit(main())): the entry point, not
            # a factory whose result the block uses, nor a step its loop calls
            named = {n.id for stmt in node.body if isinstance(stmt, (ast.Expr, ast.Raise))
                     for n in ast.walk(stmt) if isinstance(n, ast.Name)}
            if name.split(".")[0] in named:
                return True
    return False


def _package_of(directory: str) -> tuple[str, str]:
    """The dotted package a folder is (``proj.sub``, from its ``__init__.py`` files up) and the folder
    that holds the top package (``("", "")``: not a package)."""
    parts: list[str] = []
    while os.path.isfile(os.path.join(directory, "__init__.py")) and os.path.basename(directory).isidentifier():
        parts.insert(0, os.path.basename(directory))
        directory = os.path.dirname(directory)
    return (".".join(parts), directory) if parts else ("", "")


def _user_failure(what: str, exc: BaseException, full: str | None = None) -> str:
    """``"<what> raised <Type> at <file:line> (<code>): <message>"``, at the user's innermost line
    (in a module the file imports when it raised there, as :func:`describe_exception` says)."""
    return f"{what} raised {describe_exception(exc, full)}"


# --- finding the target -------------------------------------------------------------------------


def find_target(module: ModuleType, path: str, name: str | None, seed: int) -> LoadedTarget:
    """Find the target and its example inputs in the imported module.

    Raises:
        TargetLoadError: no target, several candidates, NAME not found, no inputs.
        InvalidTargetError: the target is not callable, or a factory returned something unusable.
    """
    try:
        target, name, chosen_by = _choose(module, path, name)
    except TargetLoadError as exc:
        raise TargetLoadError(f"{exc}{_graph_mode_hint(path)}") from None
    optimizer = _module_optimizer(module, path)
    if not callable(target) or inspect.isclass(target):
        what = "a class" if inspect.isclass(target) else f"{a_or_an(type(target).__name__)}, not callable"
        raise InvalidTargetError(
            f"{name} in {path} is {what}: the target must be a tf.function, a function returning the loss, "
            f"a compiled Keras model (an instance), or a zero-argument function returning one{_graph_mode_hint(path)}"
        )
    args: tuple[Any, ...] | None = None
    kwargs: dict[str, Any] = {}
    inputs_from = ""
    if _is_factory(target) and _runs_as_main(module, name):  # called, it would train (and save) before returning None
        raise TargetLoadError(
            f"{name} is what {path} runs under `if __name__ == \"__main__\":`, its whole training: `flowcheck run "
            f"{path}` runs the script as python does and analyzes its training steps (or name a step: {path}:STEP)")
    if _is_factory(target) and _asks_for_gradients(target):
        # A training step without inputs (it reads globals), not a factory: never called to find out.
        return LoadedTarget(target, name, chosen_by, (), {}, "no inputs (it takes none)", optimizer)
    if _is_factory(target):
        try:
            produced = target()
        except (Exception, SystemExit) as exc:  # noqa: BLE001 -- the user's factory failed: say where, as one line
            raise TargetLoadError(_user_failure(f"calling {name}()", exc)) from exc
        if _is_tensor_tree(produced):
            # A zero-argument loss function, not a factory: analyze the function itself.
            return LoadedTarget(target, name, chosen_by, (), {}, "no inputs (it takes none)", optimizer)
        target, args, kwargs = _unpack_factory(produced, name)
        inputs_from = f"returned by {name}()" if args is not None else ""
        chosen_by += f" (a factory returning {_display_name(target)})"
    try:
        if args is None:
            args, kwargs, inputs_from = example_inputs(module, path, name, target, seed)
        check_arity(target, name, args, kwargs, inputs_from)
    except TargetLoadError as exc:
        hint = _method_hint(module, path, name)
        if not hint:
            raise
        raise TargetLoadError(f"{exc}; {hint}") from exc
    return LoadedTarget(target, name, chosen_by, args, kwargs, inputs_from, optimizer)


def _graph_mode_hint(path: str) -> str:
    """Said when the file turned eager execution off (``tf.disable_v2_behavior()``): TensorFlow 1 graph code."""
    import tensorflow as tf

    if tf.compat.v1.executing_eagerly_outside_functions():
        return ""
    return (f"; {path} is TensorFlow 1 graph code (eager execution is off): `flowcheck run {path}` runs it and "
            "analyzes its Session.run")


def _choose(module: ModuleType, path: str, name: str | None) -> tuple[Any, str, str]:
    """The target, its name and how it was chosen: NAME, ``flowcheck_target`` or the only candidate."""
    if name is not None:
        return _lookup(module, path, name), name, f"{name}, named on the command line"
    if hasattr(module, "flowcheck_target"):
        target = module.flowcheck_target
        name = _attribute_name(module, target) or "flowcheck_target"
        return target, name, f"{name}, the module's flowcheck_target"
    found = _candidates(module)
    functions_found = [c for c in found if c[1] == "tf.function"]
    # Compiled: with a loss, or with an optimizer alone (its loss added by add_loss or compute_loss).
    compiled = [c for c in found if c[1] == "Keras model" and getattr(getattr(module, c[0]), "compiled", False)]
    if functions_found:
        found = functions_found  # the models are most likely what the function trains
    elif compiled:
        # An uncompiled model (a backbone) has no training step of its own.
        found = [(n, "compiled Keras model") for n, _ in compiled]
    elif found and (functions := _functions(module)):
        # Uncompiled models only: what trains them is most likely one of the file's functions.
        raise TargetLoadError(
            f"the Keras model{'s' if len(found) > 1 else ''} in {path} ({', '.join(n for n, _ in found)}) "
            f"{'are' if len(found) > 1 else 'is'} not compiled, so there is no training step to analyze: name the "
            f"function returning the loss ({path}:NAME; its functions: {', '.join(functions)}) or compile the model"
        )
    if not found:
        functions, methods = _functions(module), tf_function_methods(module)  # agent.loss: a tf.Module's tf.function
        hint = (f"; its functions: {', '.join(functions)}" if functions else "") + (
            f"; tf.functions of its objects: {', '.join(methods)}" if methods else "")
        raise TargetLoadError(
            f"no target found in {path}: name one ({path}:NAME), set flowcheck_target = ..., or "
            f"define a tf.function or a Keras model at module level{hint}"
        )
    if len(found) > 1:
        listed = ", ".join(f"{n} ({kind})" for n, kind in found)
        raise TargetLoadError(
            f"{path} has several candidate targets: {listed}; pick one with {path}:NAME or set flowcheck_target"
        )
    name, kind = found[0]
    return getattr(module, name), name, f"{name}, the only {kind} in {path}"


def _lookup(module: ModuleType, path: str, name: str) -> Any:
    value: Any = module
    for i, part in enumerate(name.split(".")):
        if not hasattr(value, part):
            if i == 0:
                names = [n for n, _ in _candidates(module)] + _functions(module)
                listed = ", ".join(dict.fromkeys(names)) or "none"
                raise TargetLoadError(f"no {name!r} in {path}; candidates: {listed}")
            raise TargetLoadError(f"{'.'.join(name.split('.')[:i])} in {path} has no attribute {part!r}")
        value = getattr(value, part)
    return value


def _method_hint(module: ModuleType, path: str, name: str) -> str:
    """``model.py:Trainer.train_step``: a method named on its class has no ``self``; name it on the file's instance."""
    owner, _, method = name.rpartition(".")
    cls: Any = module
    for part in owner.split(".") if owner else ():
        cls = getattr(cls, part, None)
    if not inspect.isclass(cls) or isinstance(inspect.getattr_static(cls, method, None), (staticmethod, classmethod)):
        return ""
    instances = [key for key, value in vars(module).items() if isinstance(value, cls) and not key.startswith("_")]
    if not instances:
        return ""  # the message already says how to pass self, or to point at a function returning the step
    return f"{owner}.{method} is a method of class {owner}: name it on the instance, {path}:{instances[0]}.{method}"


def _attribute_name(module: ModuleType, target: Any) -> str | None:
    return next((k for k, v in vars(module).items() if v is target and k != "flowcheck_target" and not k.startswith("_")), None)


def _candidates(module: ModuleType) -> list[tuple[str, str]]:
    """Module-level tf.functions defined in the file and Keras models, with their kind."""
    found = []
    for key, value in vars(module).items():
        if key.startswith("_"):
            continue
        if is_tf_function(value) and getattr(value.python_function, "__module__", None) == module.__name__:
            found.append((key, "tf.function"))
        elif is_keras_model(value):
            found.append((key, "Keras model"))
    return found


def _functions(module: ModuleType) -> list[str]:
    return [
        key for key, value in vars(module).items()
        if inspect.isfunction(value) and value.__module__ == module.__name__ and not key.startswith("_")
    ]


def _is_factory(target: Any) -> bool:
    """A plain Python function (not a tf.function, model or other callable object) called with no argument:
    none it must be given (``build_model(num_classes=10)`` is a builder, as users write them)."""
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        return False
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return False
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in signature.parameters.values())


# Names a training step's own body uses to ask for gradients (tape.gradient, optimizer.minimize, ...);
# a factory's body builds and returns a step, whose own code is a nested function's, not its own.
_GRADIENT_CALLS: Final = frozenset({"GradientTape", "gradient", "apply_gradients", "minimize", "jacobian", "gradients"})


def _asks_for_gradients(target: Any) -> bool:
    """Whether ``target``'s own body (not a function nested in it) asks for gradients: a training step."""
    code = getattr(inspect.unwrap(getattr(target, "__func__", target)), "__code__", None)
    return code is not None and not _GRADIENT_CALLS.isdisjoint(code.co_names)


def _is_tensor_tree(value: Any) -> bool:
    import tensorflow as tf

    leaves = tf.nest.flatten(value) if value is not None else []
    return bool(leaves) and all(isinstance(v, (tf.Tensor, tf.Variable)) for v in leaves) and not callable(value)


def _unpack_factory(produced: Any, name: str) -> tuple[Any, tuple[Any, ...] | None, dict[str, Any]]:
    expected = "return target, (target, args) or (target, args, kwargs), with args a tuple and kwargs a dict"
    if callable(produced):
        return produced, None, {}
    if not isinstance(produced, tuple) or not 1 <= len(produced) <= 3 or not callable(produced[0]):
        got = a_or_an(type(produced).__name__) if not isinstance(produced, tuple) else (
            f"a tuple of {len(produced)} starting with {a_or_an(type(produced[0]).__name__)}" if produced else "an empty tuple"
        )
        raise InvalidTargetError(f"{name}() takes no argument, so it is read as a factory, but it returned {got}: {expected}")
    target = produced[0]
    if len(produced) == 1:
        return target, None, {}
    args = produced[1]
    if not isinstance(args, (tuple, list)):
        raise InvalidTargetError(
            f"{name}() returned {a_or_an(type(args).__name__)} as its inputs: {expected} "
            f"(one input x: return {_display_name(target)}, (x,))"
        )
    kwargs = produced[2] if len(produced) == 3 else {}
    if not isinstance(kwargs, dict):
        raise InvalidTargetError(f"{name}() returned {a_or_an(type(kwargs).__name__)} as keyword inputs: {expected}")
    return target, tuple(args), dict(kwargs)


def _display_name(target: Any) -> str:
    return str(getattr(target, "__name__", None) or getattr(target, "name", None) or type(target).__name__)


def _module_optimizer(module: ModuleType, path: str) -> tuple[Any, float | None] | None:
    value = getattr(module, "flowcheck_optimizer", None)
    if value is None:
        return None
    if isinstance(value, str):
        return value, None
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], (int, float)):
        return value[0], float(value[1])
    if not isinstance(value, tuple):
        return value, None  # a Keras optimizer class or instance; verify() checks it
    raise TargetLoadError(
        f"flowcheck_optimizer in {path} is {value!r}: expected a name ('sgd', 'adam'), a Keras optimizer, "
        "or (optimizer, learning_rate)"
    )
