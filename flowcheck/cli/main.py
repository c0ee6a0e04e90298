"""The command line: ``flowcheck run SCRIPT.py [options] [-- args]`` (:mod:`flowcheck.cli.run`) and
``flowcheck analyze PATH[:NAME] [options]``.

Thin on purpose: it loads the target (:mod:`flowcheck.cli.load`), calls the public API, formats with
:mod:`flowcheck.outputs.text`, and chooses the exit status: 0 when every expectation holds and the real
step agrees, 1 when not (or the step found a non-finite loss or gradient), 2 for a usage or input
error, printed as one line (its traceback only under ``--debug``). It catches only flowcheck's own
errors; TensorFlow is imported only once a file is to be analyzed.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import io
import json
import math
import os
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from flowcheck.cli import snapshot as _snapshot_cli
from flowcheck.cli.outputs import Progress as _Progress
from flowcheck.errors import FlowcheckError, TargetLoadError
from flowcheck.source.lines import display_path

if TYPE_CHECKING:
    from flowcheck._report import Report
    from flowcheck.outputs.expect import Expectation

__all__ = ["main"]

_DESCRIPTION = """\
Import a Python file, analyze a target in it and say which variables receive a gradient from
its loss, which cannot and why (the op and your line), then check with one real optimizer step.

target (PATH[:NAME]): NAME, else the module's `flowcheck_target`, else the only tf.function
defined in the file (if it defines none, the only compiled Keras model). It may be a
tf.function or a function returning the loss, a compiled Keras model (its training step), or a
function called with no argument that returns `target`, `(target, args)` or `(target, args, kwargs)`.

example inputs: what that function returned, else the module's `NAME_inputs` or `example_inputs`
(a tuple of positional arguments; for a Keras model `(x, y)`), else random tensors from the
tf.function's input_signature or the model's input shapes (seeded by --seed, batch 2).

optimizer: --optimizer/--learning-rate, else the module's `flowcheck_optimizer` (e.g.
`("sgd", 1.0)`), else SGD with its default learning rate. --learning-rate alone keeps the
module's optimizer.
"""

_EPILOG = """\
examples:
  flowcheck analyze examples/seed_stop_gradient.py
  flowcheck analyze train.py:train_step -o flow.svg -o flow.html
  flowcheck analyze model.py:build --optimizer adam --learning-rate 1e-3
  flowcheck analyze dqn.py --expect-receives 'q/*' --expect-blocked 'target/*'
  flowcheck analyze model.py --json > report.json
  flowcheck analyze model.py --snapshot flow.toml      (then commit flow.toml)
  flowcheck analyze model.py --check flow.toml         (in CI: exit 1 with a diff when the flow changed)

exit status: 0 every expectation holds and verification agrees; 1 an expectation fails,
verification disagrees or finds a non-finite loss or gradient, or the --check snapshot
differs; 2 usage or input error.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    return _command(argv)[0]


def console() -> NoReturn:
    """The ``flowcheck`` command itself: exit with :func:`main`'s status.

    When ``flowcheck run`` ended the script after its first round of steps (no ``--continue``), the
    process leaves right after the report: the script's ``atexit`` functions run and every open
    Python file is flushed, but not TensorFlow's teardown of the training it interrupted (the
    threads of a ``fit`` ended mid-epoch can take ten seconds and more to wind down).
    """
    code, ended_script = _command(None)
    if not ended_script:
        sys.exit(code)
    atexit._run_exitfuncs()  # noqa: SLF001 -- what a normal exit runs first
    for obj in gc.get_objects():
        if isinstance(obj, io.IOBase) and not obj.closed and obj.writable():
            with contextlib.suppress(Exception):
                obj.flush()
    os._exit(code)


def _command(argv: Sequence[str] | None) -> tuple[int, bool]:
    """The exit status, and whether ``flowcheck run`` ended the user's script itself."""
    parser = _parser()
    from flowcheck.cli.run import split_script_arguments

    argv, script_arguments = split_script_arguments(list(sys.argv[1:] if argv is None else argv))
    try:
        if argv and argv[0].endswith(".py"):  # `flowcheck train.py`: argparse said only "invalid choice"
            parser.error(f"give a command first: flowcheck run {argv[0]} (a training script) or flowcheck analyze {argv[0]}")
        ns, unknown = parser.parse_known_args(argv)
        if getattr(ns, "module", None) is not None and ns.script is not None:  # -m M --epochs 3: "3" is no script
            unknown, ns.script = [a for a in argv if a in {*unknown, ns.script}], None
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}" + _script_arguments_hint(ns, unknown))
        if script_arguments and ns.command != "run":
            parser.error("arguments after -- are for `flowcheck run SCRIPT.py -- ARGS...`")
        ns.arguments = script_arguments
    except SystemExit as exc:  # argparse exits on --help, --version and usage errors
        return (exc.code if isinstance(exc.code, int) else 2), False
    if ns.command is None:
        parser.print_usage(sys.stderr)
        print("flowcheck: error: give a command: flowcheck run SCRIPT.py or flowcheck analyze PATH[:NAME]", file=sys.stderr)
        return 2, False
    try:
        if ns.command == "run":
            from flowcheck.cli.run import run_command

            return run_command(ns, sys.stdout, sys.stderr), bool(getattr(ns, "ended_script", False))
        return _analyze(ns, sys.stdout, sys.stderr), False
    except FlowcheckError as exc:
        if ns.debug:
            if exc.original is not None:  # the user's or TensorFlow's error behind it, not chained to it
                traceback.print_exception(exc.original, file=sys.stderr)
            traceback.print_exception(exc, file=sys.stderr)
        print(f"flowcheck: error: {_one_line(exc)}", file=sys.stderr)
        return 2, bool(getattr(ns, "ended_script", False))
    except KeyboardInterrupt as exc:  # Ctrl-C, or the user's file raising it: one line, the shell's 128 + SIGINT
        from flowcheck.source.exceptions import describe_exception

        if ns.debug:
            traceback.print_exception(exc, file=sys.stderr)
        print(f"flowcheck: interrupted: {describe_exception(exc, None)}", file=sys.stderr)
        return 130, bool(getattr(ns, "ended_script", False))


def _script_arguments_hint(ns: argparse.Namespace, unknown: list[str]) -> str:
    """``flowcheck run train.py --epochs 3``: the script's own options go after ``--``; say so."""
    if getattr(ns, "command", None) != "run":
        return ""
    what = ns.script if ns.script is not None else f"-m {ns.module}"
    return f" (the script's own arguments go after --: flowcheck run {what} -- {' '.join(unknown)})"


def _one_line(exc: FlowcheckError) -> str:
    message = " ".join(str(exc).split())
    return message if isinstance(exc, TargetLoadError) else f"{type(exc).__name__}: {message}"


def _parser() -> argparse.ArgumentParser:
    from flowcheck._version import __version__

    parser = argparse.ArgumentParser(
        prog="flowcheck", description="Which TensorFlow variables receive a gradient from your loss, and why not."
    )
    parser.add_argument("--version", action="version", version=f"flowcheck {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    from flowcheck.cli.run import add_run_command

    add_run_command(commands, _common_options)  # first: it is what most users need
    p = commands.add_parser(
        "analyze", help="analyze a target in a Python file", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="PATH[:NAME]", help="the Python file, and optionally the target's name in it")
    _common_options(p)
    # analyze's own: a script run by `run` brings its inputs (and a --seed of its own is the script's)
    p.add_argument("--seed", type=_seed, default=0, help="seed of random example inputs (default: 0)")
    p.add_argument("--focus", action="append", default=None, metavar="PATTERN",
                   help="draw only the variables matching this glob and their paths to the loss; repeatable")
    p.add_argument("--detail", choices=("collapsed", "ops"), default="collapsed",
                   help="collapsed (default): one node per layer, repeats folded, op detail only where a gradient "
                   "is blocked; ops: every op")
    p.add_argument("--explore", action="store_true",
                   help="then browse the whole graph in Model Explorer on 127.0.0.1 (Ctrl-C stops it; needs "
                   "pip install 'flowcheck[explore]')")
    _snapshot_cli.add_options(p)
    return parser


def _common_options(p: argparse.ArgumentParser) -> None:
    """The options ``analyze`` and ``run`` share."""
    p.add_argument("-o", "--output", action="append", default=[], metavar="FILE",
                   help="write the report to FILE (.svg, .html, .dot, .json, or .me.json for Model Explorer); "
                   "repeatable; drawn after the summary, which a failed drawing never loses")
    p.add_argument("--json", action="store_true", help="print a machine-readable report (schema_version 2) instead")
    p.add_argument("--no-verify", action="store_true", help="skip the real optimizer step")
    p.add_argument("--optimizer", choices=("sgd", "adam"), help="optimizer of the real step (default: sgd)")
    p.add_argument("--learning-rate", type=_positive_float, metavar="LR", help="its learning rate")
    p.add_argument("--expect-receives", action="append", default=[], metavar="PATTERN",
                   help="fail unless every variable matching this glob receives a gradient; repeatable")
    p.add_argument("--expect-blocked", action="append", default=[], metavar="PATTERN",
                   help="fail unless every variable matching this glob gets no gradient (blocked or unused); "
                   "repeatable")
    p.add_argument("--all", dest="all_sources", action="store_true",
                   help="list every source of a gradient site that receives a gradient, not their count")
    p.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up notices")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _seed(text: str) -> int:
    """A seed NumPy takes: a non-negative integer (a negative one made ``default_rng`` raise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, not {text}")
    return value


def _analyze(ns: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from flowcheck.cli.load import find_target, split_spec, user_module
    from flowcheck.cli.run import check_outputs, script_hint
    from flowcheck.run.script import import_tensorflow, variable_owners

    check_outputs(ns.output)  # before the slow part
    _snapshot_cli.validate(ns)
    if ns.explore:
        from flowcheck.render.server import check_installed

        check_installed()
    path, name = split_spec(ns.target)
    verbose = not ns.json
    # --json: stdout is the JSON document's alone; what the user's file prints goes to stderr.
    user_out = contextlib.redirect_stdout(err) if ns.json else contextlib.nullcontext()
    with _Progress(verbose and err.isatty(), err) as progress, user_out:
        progress.step(f"importing {path}")
        import_tensorflow(ns.verbose)
        with script_hint(path), user_module(path) as module:
            import flowcheck

            loaded = find_target(module, display_path(path), name, ns.seed)
            if name is None and verbose:
                progress.say(f"flowcheck: analyzing {loaded.chosen_by}")
            progress.step(f"tracing and analyzing {loaded.name}")
            report = flowcheck.analyze(loaded.target, *loaded.args, **loaded.kwargs)
            owners = variable_owners(loaded.target, loaded.args) if ns.expect_receives or ns.expect_blocked else {}
            if not ns.check:  # with --check, a loss cut off from everything is a change to show
                _check_differentiable(report)
            verification = None
            if not ns.no_verify:
                progress.step("verifying with one real optimizer step")
                optimizer, learning_rate = _optimizer(ns, loaded.optimizer, display_path(path))
                verification = report.verify(optimizer=optimizer, learning_rate=learning_rate)
                report.notes += _unused_optimizer_note(ns, report)
            snapshot_check = _snapshot_cli.record(ns, report, err)
    code = _summary(ns, report, verification, (loaded, path, snapshot_check, owners), out)
    # Drawing comes after the summary and the JSON: a drawing that fails or takes too long loses nothing.
    from flowcheck.cli.outputs import draw_outputs, explore
    from flowcheck.cli.run import is_json_report

    with _Progress(verbose and err.isatty(), err) as progress:
        drawn = [o for o in ns.output if not is_json_report(o)]  # -o report.json: written with the summary
        draw_outputs(report, drawn, ns.detail, ns.focus, err if ns.json else out, progress.step)
    if ns.explore:
        explore(report, err if ns.json else out)
    return code


def _summary(ns: argparse.Namespace, report: Report, verification: Any, found: tuple[Any, str, Any, Any], out: TextIO) -> int:
    """Print the summary (or JSON, or the snapshot comparison); the exit status."""
    from flowcheck.outputs.text import RunInfo, failures, format_rich, format_summary, to_json

    from flowcheck.cli.run import is_json_report, write_json

    loaded, path, snapshot_check, owners = found
    run = RunInfo(
        file=display_path(path), chosen_by=loaded.chosen_by, inputs=loaded.inputs_from,
        expectations=_expectations(report, ns.expect_receives, ns.expect_blocked, owners),
        # Text output says "wrote FILE" for each -o file after drawing it, below the summary.
        outputs=(*(ns.output if ns.json else ()), *([ns.snapshot] if ns.snapshot else [])),
        all_sources=ns.all_sources,
    )
    if snapshot_check is not None:  # --check: the comparison is the output
        reasons = failures(report, verification, run, pinned=True)
        return _snapshot_cli.check_output(snapshot_check, report.target, ns.check, reasons, out)
    written = [o for o in ns.output if is_json_report(o)]
    for output in written:
        write_json(output, to_json(report, verification, run))
    if ns.json:
        out.write(json.dumps(to_json(report, verification, run), indent=2, allow_nan=False) + "\n")
    elif out.isatty():
        from rich.console import Console

        Console(file=out, highlight=False).print(format_rich(report, verification, run), end="", soft_wrap=True)
    else:
        out.write(format_summary(report, verification, run))
    if written and not ns.json:  # as the drawings after it say theirs, and as ``run`` does
        out.write(f"wrote {', '.join(written)}\n")
    out.flush()
    return 1 if failures(report, verification, run) else 0


def _check_differentiable(report: Report) -> None:
    """A loss no variable gets a gradient from is not a loss to train on: say where it is cut.

    A training step is judged at its own gradient calls instead: one whose every source is cut (Keras
    raises "No gradients provided for any variable") is a finding reported in full, as ``run`` does.
    """
    from flowcheck._model import Verdict
    from flowcheck.errors import LossError

    if report.gradient_sites or any(r.verdict is Verdict.RECEIVES for r in report.variables):
        return
    cuts = list(dict.fromkeys(
        f"{b.op_type} at {b.source}" if b.source else b.op_type for r in report.variables for b in r.barriers
    ))
    where = f": every path is cut ({', '.join(cuts[:3])}{', ...' if len(cuts) > 3 else ''})" if cuts else ""
    raise LossError(
        f"the loss of {report.target} is not differentiable with respect to any of its "
        f"{len(report.variables)} variable(s){where}; nothing would train"
    )


def _optimizer(ns: argparse.Namespace, from_module: tuple[Any, float | None] | None, path: str) -> tuple[Any, float | None]:
    """--optimizer replaces the module's choice; --learning-rate alone keeps the module's optimizer.

    Raises:
        TargetLoadError: the module's ``flowcheck_optimizer`` is one verify cannot make (said as the
            module's setting, not as a failed verification).
    """
    if ns.optimizer is not None:
        return ns.optimizer, ns.learning_rate
    optimizer, learning_rate = from_module or (None, None)
    chosen = optimizer, ns.learning_rate if ns.learning_rate is not None else learning_rate
    if from_module is not None:
        from flowcheck.errors import VerificationError
        from flowcheck.verify.loss import make_optimizer

        try:
            make_optimizer(*chosen)
        except VerificationError as exc:
            raise TargetLoadError(f"flowcheck_optimizer in {path}: {exc}") from None
    return chosen


def _unused_optimizer_note(ns: argparse.Namespace, report: Report) -> tuple[str, ...]:
    """A training step is verified with its own optimizer: the flags that asked for another are said unused."""
    given = [flag for flag, value in (("--optimizer", ns.optimizer), ("--learning-rate", ns.learning_rate))
             if value is not None]
    if not report.gradient_sites or not given:
        return ()
    return (f"{' and '.join(given)} not used: a training step is verified with its own optimizer, as it trains",)


def _expectations(
    report: Report, receives: Sequence[str], blocked: Sequence[str], owners: dict[int, tuple[str, ...]],
) -> tuple[Expectation, ...]:
    from flowcheck._model import Verdict
    from flowcheck.outputs.expect import Candidate
    from flowcheck.outputs.expect import Expectation

    unasked: tuple[Any, ...] = ()
    if report.gradient_sites:  # a training step: each variable as its gradient calls judge it
        from flowcheck.analysis.steps import judged_at_sites

        report = judged_at_sites(report)
        listed = {r.node for r in report.variables}
        unasked = tuple(r for r in report._everything if r.node not in listed)  # noqa: SLF001 -- a frozen backbone's

    def matching(results: Sequence[Any], pattern: str) -> list[Any]:
        return [r for r in results
                if Candidate(r.name, r.receives, owners.get(id(getattr(r.variable, "value", r.variable)), ())).matches(pattern)]

    found = []
    for expect, patterns in (("receives", receives), ("blocked", blocked)):
        for pattern in patterns:
            matched = matching(report.variables, pattern)
            wrong = [r for r in matched if (r.verdict is Verdict.RECEIVES) != (expect == "receives")]
            found.append(Expectation(expect, pattern, tuple(r.name for r in matched), tuple(
                f"{r.name} {r.verdict.value}" for r in wrong), () if matched else tuple(r.name for r in matching(unasked, pattern))))
    return tuple(found)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
