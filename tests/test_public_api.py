"""The public surface is exactly ``flowcheck.__all__``."""

from __future__ import annotations

import inspect

import flowcheck


def test_all_names_exist_and_nothing_else_public_is_exported() -> None:
    for name in flowcheck.__all__:
        assert hasattr(flowcheck, name), name
    public_modules = {"errors", "cli", "testing", "keras", "pytest_plugin", "render"}
    # The pipeline's stage packages: internal (nothing in them is in __all__), listed so that no other module leaks.
    stages = {"source", "trace", "graph", "analysis", "outputs", "verify", "run", "snapshot"}
    exported = {
        name for name, value in vars(flowcheck).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert exported == set(flowcheck.__all__) - {"__version__"}
    leaked = {name for name, value in vars(flowcheck).items() if inspect.ismodule(value) and name[0] not in "_@"}
    assert leaked <= public_modules | stages


def test_errors_share_one_root_and_subclass_builtins_where_meaning_matches() -> None:
    assert issubclass(flowcheck.InvalidTargetError, TypeError)
    assert issubclass(flowcheck.UsageError, TypeError) and issubclass(flowcheck.UsageError, ValueError)
    assert issubclass(flowcheck.GradientFlowAssertionError, AssertionError)
    assert issubclass(flowcheck.LossError, TypeError)
    assert issubclass(flowcheck.VariableNotFoundError, KeyError)
    assert issubclass(flowcheck.ExecutableNotFoundError, flowcheck.RenderError)
    for name in flowcheck.__all__:
        value = getattr(flowcheck, name)
        if inspect.isclass(value) and issubclass(value, Exception):
            assert issubclass(value, flowcheck.FlowcheckError), name


def test_package_is_typed() -> None:
    from importlib.resources import files

    assert files("flowcheck").joinpath("py.typed").is_file()
