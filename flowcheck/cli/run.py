"""The ``flowcheck run`` command: its options, and the glue from :mod:`flowcheck.run.script` to the output.

``flowcheck run train.py [flowcheck options] [-- script arguments...]`` runs the script the way
``python train.py script-arguments`` would, analyzes each training step of its first round at its
first call, and prints the report after the script's own output (on stdout; with ``--json`` the
script's output goes to stderr and stdout holds the JSON document alone).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

from flowcheck.cli import snapshot as _snapshot_cli
from flowcheck.errors import TargetLoadError

__all__ = [
    "add_run_command", "check_outputs", "is_json_report", "run_command", "script_hint", "split_script_arguments", "write_json",
]

_DESCRIPTION = """\
Run a training script exactly as `python SCRIPT.py ARGS...` would (as __main__, with sys.argv
and its directory first on sys.path), with flowcheck watching. Every distinct training step of
the script's first round is analyzed at its first call, with that call's real inputs:

  * Keras Model.fit / train_on_batch: the first batch, through the model's own train_step;
  * a tf.function that asks for a gradient (tape.gradient, tf.gradients): its first call;
  * TF1 Session.run whose fetches depend on a gradient: its first run, with its feed_dict;
  * an eager tape.gradient outside any tf.function: TensorFlow's own answer.

Each step is verified by one real run: a traced step by the script's own first call of it, else
(and under --continue) by a run of its own whose every piece of state is restored. The script
ends when a step already analyzed is about to run again (or when it ends), and the report follows
the script's own output. --continue lets the script train on as if flowcheck were not there.
"""

_EPILOG = """\
examples:
  flowcheck run train.py
  flowcheck run train.py -- --epochs 3 --batch-size 32
  flowcheck run gan.py --expect-receives 'generator/*' -o report.json
  flowcheck run train.py --json > report.json
  flowcheck run train.py --continue
  flowcheck run -m proj.train -- --config configs/base.yaml   (python -m proj.train ...)

exit status: 0 every source of every gradient call receives a gradient and verification agrees;
1 a source gets no gradient (None), a fit / train_on_batch trains nothing (no trainable weights),
or an expectation or the verification fails; 2 usage error,
or the script failed or ended before its first training step.
"""


def add_run_command(commands: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``run`` to the command line's subparsers, with the options it shares with ``analyze``."""
    p = commands.add_parser(
        "run", help="run a training script and analyze its training steps (start here)",
        description=_DESCRIPTION, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="flowcheck run SCRIPT.py | -m MODULE [flowcheck options] [-- script arguments...]",
        # A script's own --opt or --out is not flowcheck's --optimizer or --output: unknown, it is
        # refused with the hint to put it after --, never silently taken.
        allow_abbrev=False,
    )
    p.add_argument("script", metavar="SCRIPT.py", nargs="?", help="the training script")
    p.add_argument("-m", dest="module", metavar="MODULE",
                   help="run a package's module as `python -m MODULE` does (the current folder first on sys.path), "
                   "instead of a script")
    common(p)
    _snapshot_cli.add_options(p)
    p.add_argument("--explore", action="store_true",
                   help="then browse every analyzed step's whole graph in Model Explorer on 127.0.0.1 (Ctrl-C stops "
                   "it; needs pip install 'flowcheck[explore]')")
    p.add_argument("--continue", dest="keep_going", action="store_true",
                   help="let the script go on training after its first round, as if flowcheck were not there")


@contextlib.contextmanager
def script_hint(path: str) -> Iterator[None]:
    """``flowcheck analyze`` on a training script: its load errors point to ``flowcheck run``."""
    try:
        yield
    except TargetLoadError as exc:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            raise exc from None
        if not any(mark in text for mark in _SCRIPT_MARKS) or "`flowcheck run " in str(exc):  # (said already)
            raise
        raise TargetLoadError(f"{exc}; {path} looks like a training script: `flowcheck run {path}` runs it "
                              "as python does and analyzes its training steps") from exc


_SCRIPT_MARKS = ("__main__", ".fit(", "train_on_batch(", "GradientTape(", "Session(", "argparse")


def split_script_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """flowcheck's own arguments, and the script's: everything after the first ``--``."""
    if "--" not in argv:
        return argv, []
    at = argv.index("--")
    return argv[:at], argv[at + 1:]


def is_json_report(path: str) -> bool:
    """``-o report.json``: the JSON report (``.me.json`` is a Model Explorer graph, drawn)."""
    name = path.lower()
    return name.endswith(".json") and not name.endswith(".me.json")


def check_outputs(outputs: Sequence[str]) -> None:
    """Refuse an ``-o`` file of an unknown format before the slow part.

    Raises:
        TargetLoadError: a suffix is not one of the report formats.
    """
    from flowcheck.render.graphviz import SUFFIXES

    for output in outputs:
        if not output.lower().endswith(SUFFIXES):
            raise TargetLoadError(f"cannot write {output!r}: the report formats are {', '.join(SUFFIXES)}")


def write_json(path: str, document: dict[str, Any]) -> None:
    """Write a JSON report, creating its folder as every report file's.

    Raises:
        RenderError: the file cannot be written.
    """
    from flowcheck.render.graphviz import write_text

    write_text(path, json.dumps(document, indent=2, allow_nan=False) + "\n")


class _LineEnds:
    """The script's stdout, remembering whether what it wrote last left a line unfinished."""

    def __init__(self, stream: TextIO) -> None:
        self._stream, self.unfinished = stream, False

    def write(self, text: str) -> int:
        if text:
            self.unfinished = not text.endswith("\n")
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:  # isatty, flush, fileno, encoding: the stream's own
        return getattr(self._stream, name)


def run_command(ns: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``flowcheck run``: run the script, print the report, return the exit status."""
    from flowcheck.run.report import candidates, exit_status, format_run, run_json
    from flowcheck.run.script import RunOptions, run_script

    if ns.script is None and ns.module is None:
        raise TargetLoadError("give the training script (flowcheck run train.py) or its module (flowcheck run -m proj.train)")
    check_outputs(ns.output)
    _snapshot_cli.validate(ns)
    if ns.explore:
        from flowcheck.render.server import check_installed

        check_installed()
    options = RunOptions(
        script=ns.script or "", module=ns.module, arguments=tuple(ns.arguments), keep_going=ns.keep_going, verify=not ns.no_verify,
        optimizer=ns.optimizer, learning_rate=ns.learning_rate, verbose=ns.verbose,
    )
    # --json: stdout is the JSON document's alone; what the script prints goes to stderr.
    script_out = _LineEnds(err if ns.json else out)
    script_err = script_out if ns.json else _LineEnds(err)  # tqdm's bar is on stderr, the same terminal
    with contextlib.redirect_stdout(script_out), contextlib.redirect_stderr(script_err):
        result = run_script(options)
    ns.script = result.script  # -m: the module's file, as the report names it
    for stream in dict.fromkeys((script_err, script_out)):
        if stream.unfinished:  # a progress bar ended mid-epoch: the report starts on a line of its own
            stream.write("\n")
    ns.ended_script = result.stopped  # the console command may then exit without TensorFlow's teardown
    if not result.steps:
        return _nothing_analyzed(result, ns.script, err)
    from flowcheck.outputs.expect import match_expectations

    expectations = match_expectations(candidates(result.steps), ns.expect_receives, ns.expect_blocked)
    document = run_json(result, ns.script, ns.arguments, expectations)
    written = [output for output in ns.output if is_json_report(output)]
    for output in written:  # the analysis itself: written before any drawing
        write_json(output, document)
    check = _snapshot_cli.record_snapshot(ns, lambda root: _run_snapshot(result, ns.script, root), ns.script, err)
    if check is not None:  # --check: the comparison is the output
        reasons = [f"step {s.name}: verification disagrees" for s in result.steps
                   if s.verification is not None and not s.verification.agrees]
        return _snapshot_cli.check_output(check, ns.script, ns.check, reasons, out)
    if ns.json:
        out.write(json.dumps(document, indent=2, allow_nan=False) + "\n")
    else:
        out.flush()
        out.write(format_run(result, ns.script, expectations, ns.all_sources))
        if written:
            out.write(f"wrote {', '.join(written)}\n")
    _draw([o for o in ns.output if not is_json_report(o)], result, err if ns.json else out)
    reports = [s.report for s in result.steps if s.report is not None]
    if ns.explore and reports:
        from flowcheck.cli.outputs import explore

        explore(reports, err if ns.json else out)
    return exit_status(result, expectations)


def _run_snapshot(result: Any, script: str, root: Any) -> Any:
    """Every analyzed step's gradient sites in one snapshot (the first round of the script)."""
    from flowcheck.snapshot.build import sites_snapshot

    sites = [site for step in result.steps for site in (
        step.report.gradient_sites if step.report is not None else (step.eager,) if step.eager is not None else ()
    )]
    return sites_snapshot(script, sites, root)


def _nothing_analyzed(result: Any, script: str, err: TextIO) -> int:
    if result.error is not None:
        print(f"flowcheck: error: {script} failed before its first training step: {result.error}", file=err)
        return 2
    code = result.exit_code
    if code == 2:
        return 2  # the script's usage error: argparse has printed it under the script's own name
    if isinstance(code, str):
        print(code, file=err)  # what Python prints for sys.exit("message")
    if code not in (None, 0):
        print(f"flowcheck: error: {script} exited (sys.exit({code!r})) before its first training step", file=err)
        return 2
    if result.untrained:
        print(f"flowcheck: error: {script} ended without a training step: " + "; ".join(result.untrained), file=err)
        return 2
    if result.graph_calls:  # TF1: the train op was built but never run
        made = "; ".join(result.graph_calls)
        print(f"flowcheck: error: {script} ended without a training step: it built graph-mode gradients ({made}) "
              "but no Session.run fetched them or an op that depends on them", file=err)
        return 2
    print(f"flowcheck: error: {script} ended without a training step (no fit, train_on_batch, tf.function "
          "asking for a gradient, Session.run of a gradient or train op, or tape.gradient was called)", file=err)
    return 2


def _draw(outputs: Sequence[str], result: Any, out: TextIO) -> None:
    """A diagram or HTML report per analyzed step, after the summary: ``wrote FILE``, or in one line why not."""
    from flowcheck.cli.outputs import draw_outputs

    reports = [(s.name, s.report) for s in result.steps if s.report is not None]
    if not reports:
        for output in outputs:
            out.write(f"not drawn: {output}: no step has a graph to draw (eager steps have none)\n")
        return
    for name, report in reports:
        paths = [output if len(reports) == 1 else _per_step(output, name) for output in outputs]
        draw_outputs(report, paths, "collapsed", None, out, lambda _: None)


def _per_step(output: str, step: str) -> str:
    stem, suffix = os.path.splitext(output)
    return f"{stem}.{_safe(step)}{suffix}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
