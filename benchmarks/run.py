"""``make bench``: how long each flowcheck stage takes on real models, and the targets of issues 5 and 15.

Every model runs in fresh child processes (``children.py``), so that each peak RSS belongs to one model and one
activity, and TensorFlow's import is timed cold:

* a *timing* child: the median of 3 runs of each stage of ``flowcheck.analyze`` as
  ``stages.StageClock`` splits it -- trace (every ``get_concrete_function`` call), graph build
  (``flowcheck.graph.build.build_graph``), analysis (``flowcheck._api.build_report``: verdicts and barrier
  explanations), own (all of ``analyze`` but the trace) -- then render collapsed (``Report.svg()``)
  and verify (``Report.verify()``), with wall-clock and process CPU times; after each analysis the
  graph is built and analyzed once more from the same trace, the oracle warm (*warm*);
* a *flowcheck* child: what ``flowcheck analyze`` does once, cold (analyze, verify, collapsed SVG),
  with the trace clocked apart from flowcheck's own work;
* a *hand-written* child: what a user does instead, cold -- one eager ``tf.GradientTape`` over
  every variable around the loss, listing the ``None`` gradients, then one optimizer step.

The ratios are taken between figures of the same run. On a shared machine the wall clock
depends on the neighbours; the process CPU time much less, so both are printed.

Usage: ``python benchmarks/run.py [MODEL ...] [--budget SECONDS]`` (models: keys of
``benchmarks.models.BUILDERS``; default all).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from children import STAGES  # this script's folder is first on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_ORDER = (
    "chain10", "chain100", "transformer", "mobilenetv2", "mobilenetv2_step", "resnet50", "efficientnetb0",
    "chain1000", "chain10000",
)
# The 10,000-layer chain alone can take longer than the rest together: it runs last, with one run
# per stage, and verifies only if the 1,000-layer chain's figures say that fits the budget.
SINGLE_RUN = frozenset({"chain10000"})
# The cold flowcheck and hand-written children of the big chains would cost minutes of the budget
# for the same comparison the real models already make.
NO_COLD = frozenset({"chain1000", "chain10000"})

TARGET_OWN_OVER_TRACE = 0.1
TARGET_GROWTH = 10.5
TARGET_END_TO_END = 1.5
TARGET_MEMORY = 1.3


def _run_child(args: Sequence[str], timeout: float) -> tuple[dict[str, Any] | None, str, float]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join([HERE, ROOT, os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, os.path.join(HERE, "children.py"), *args],
            capture_output=True, text=True, env=env, timeout=max(timeout, 1.0), check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        partial = [line for line in output.splitlines() if line.startswith("PARTIAL ")]
        found = json.loads(partial[-1][len("PARTIAL "):]) if partial else None
        return found, f"killed at the budget after {timeout:.0f} s", time.perf_counter() - start
    elapsed = time.perf_counter() - start
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):]), "", elapsed
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return None, f"exit {proc.returncode}: {tail}", elapsed


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _ratio_line(name: str, value: float | None, target: float, detail: str, lower_is_better: bool = True) -> tuple[str, bool | None]:
    if value is None:
        return f"  {name}: n/a ({detail})", None
    ok = value <= target if lower_is_better else value >= target
    return f"  {name}: {value:.2f} (target <= {target:g}) {'MET' if ok else 'MISSED'} -- {detail}", ok


class Bench:
    """Runs every model's children within a time budget and prints what it measured."""

    def __init__(self, keys: Sequence[str], budget: float) -> None:
        self.keys = list(keys)
        self.deadline = time.perf_counter() + budget
        self.timing: dict[str, dict[str, Any]] = {}
        self.flowcheck: dict[str, dict[str, Any]] = {}
        self.hand: dict[str, dict[str, Any]] = {}
        self.notes: list[str] = []

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def run(self) -> int:
        started = time.perf_counter()
        cli = None
        for key in self.keys:
            self.run_model(key)
            if key == "resnet50":
                cli = self.run_cli()
        self.print_targets(cli)
        for note in self.notes:
            print(f"note: {note}")
        print(f"\ntotal benchmark time: {time.perf_counter() - started:.0f} s")
        return 0

    def run_model(self, key: str) -> None:
        runs = 1 if key in SINGLE_RUN else 3
        verify = True
        if key in SINGLE_RUN:
            verify = self.verify_fits(key)
        print(f"\n== {key} ({runs} run{'s' if runs > 1 else ''} per stage) ==", flush=True)
        if self.remaining() < 10:
            print("  skipped: the budget is spent")
            self.notes.append(f"{key}: not measured (budget spent)")
            return
        result, error, elapsed = _run_child(["timing", key, str(runs), str(int(verify))], self.remaining())
        if error:
            print(f"  timing child: {error}{'; what it measured until then:' if result else ''}")
            self.notes.append(f"{key}: timing child {error}" + ("; figures are what it measured until then" if result else ""))
        if result is None or not result["wall"]["trace"]:
            return
        self.timing[key] = result
        self.print_timing(key, result, elapsed)
        if key in SINGLE_RUN:
            self.notes.append(
                f"{key}: 1 run per stage (budget of make bench)"
                + ("" if verify else "; verify skipped: 10 x the 1,000-layer chain's figures do not fit the budget")
            )
        if key in NO_COLD:
            self.notes.append(f"{key}: no cold flowcheck / hand-written children (budget of make bench)")
            return
        if self.remaining() < 10:
            self.notes.append(f"{key}: no cold children (budget spent)")
            return
        fc, error, _ = _run_child(["flowcheck", key], self.remaining())
        if fc is None:
            print(f"  flowcheck child failed: {error}")
        else:
            self.flowcheck[key] = fc
        hand, error, _ = _run_child(["hand", key], self.remaining())
        if hand is None:
            print(f"  hand-written child failed: {error}")
        else:
            self.hand[key] = hand
        self.print_cold(key)

    def verify_fits(self, key: str) -> bool:
        small = self.timing.get("chain1000")
        if small is None or not small["wall"]["verify"]:
            return False
        estimate = 10 * (sum(_median(small["wall"][s]) or 0 for s in ("trace", "own", "warm", "render", "verify"))
                         + small["build_s"])
        return bool(estimate < self.remaining() - 30)

    def print_timing(self, key: str, r: dict[str, Any], elapsed: float) -> None:
        size = r["size"]
        v = r["verdicts"]
        print(f"  graph: {size['ops']:,} ops (nested bodies included), {size['edges']:,} edges, "
              f"{size['variables']:,} variables ({v['receives']} receive, {v['blocked']} blocked, {v['unused']} unused)")
        print(f"  import tensorflow {_fmt(r['import_s'])}, model build {_fmt(r['build_s'])}")
        print(f"  {'stage':<10}{'wall (median)':>15}{'cpu (median)':>15}   runs (wall)")
        for stage in STAGES:
            wall = r["wall"][stage]
            note = ""
            if stage == "render" and not wall:
                note = f"  ({r['render_note'] or 'did not finish within the budget'})"
            elif stage == "verify" and not wall:
                note = "  (skipped: budget)"
            runs = ", ".join(_fmt(x) for x in wall)
            print(f"  {stage:<10}{_fmt(_median(wall)):>15}{_fmt(_median(r['cpu'][stage])):>15}   {runs}{note}")
        if r["agrees"] is not None:
            print(f"  verification agrees with the prediction: {r['agrees']}")
        print(f"  peak RSS of the timing child: {r['peak_mb']:.0f} MB; child wall time {elapsed:.0f} s", flush=True)

    def print_cold(self, key: str) -> None:
        fc, hand = self.flowcheck.get(key), self.hand.get(key)
        if fc is not None:
            w, c = fc["wall"], fc["cpu"]
            render = f"{_fmt(w['render'])} (cpu {_fmt(c['render'])})" if "render" in w else f"n/a ({fc['render_note']})"
            print(f"  cold flowcheck: analyze {_fmt(w['analyze'])} (cpu {_fmt(c['analyze'])}), verify {_fmt(w['verify'])} "
                  f"(cpu {_fmt(c['verify'])}), render {render}; peak RSS {fc['peak_mb']:.0f} MB "
                  f"(model built: {fc['base_mb']:.0f} MB)")
            st = fc["stages"]["cpu"]
            print(f"  cold analyze, cpu: trace {_fmt(st['trace'])}, own work {_fmt(st['own'])} (stage 1 {_fmt(st['trace_rest'])}, "
                  f"graph {_fmt(st['graph'])}, analysis {_fmt(st['analysis'])}, rest {_fmt(st['other'])}): "
                  f"own / trace {st['own'] / st['trace']:.3f}")
        if hand is not None:
            w, c = hand["wall"], hand["cpu"]
            print(f"  cold hand-written: tape check {_fmt(w['check'])} (cpu {_fmt(c['check'])}; {len(hand['none'])} None), "
                  f"then one step {_fmt(w['step'])}; peak RSS {hand['peak_mb']:.0f} MB (model built: {hand['base_mb']:.0f} MB)")
        if fc is not None and hand is not None and len(fc["none"]) != len(hand["none"]):
            print(f"  WARNING: flowcheck says {len(fc['none'])} variables get no gradient, the tape {len(hand['none'])}")
        sys.stdout.flush()

    def run_cli(self) -> dict[str, float] | None:
        """``flowcheck analyze`` itself on ResNet50 vs the hand-written script, each a fresh process."""
        try:
            import importlib.util

            if importlib.util.find_spec("flowcheck.cli") is None:
                self.notes.append("flowcheck.cli not available: the command line was not timed")
                return None
        except ImportError:
            return None
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join([HERE, ROOT, os.environ.get("PYTHONPATH", "")]))
        with tempfile.TemporaryDirectory() as tmp:
            target = os.path.join(tmp, "resnet50_target.py")
            with open(target, "w") as f:
                f.write("import models\n\ncase = models.build('resnet50')\nresnet50_loss = case.loss_fn\n"
                        "flowcheck_target = case.loss_fn\nexample_inputs = case.args\n")
            hand = os.path.join(tmp, "hand_written.py")
            with open(hand, "w") as f:
                f.write("import models\n\ncase = models.build('resnet50')\nprint(models.hand_written_check(case))\n")
            flowcheck_bin = os.path.join(os.path.dirname(sys.executable), "flowcheck")
            commands = {
                "cli": [flowcheck_bin, "analyze", target, "-o", os.path.join(tmp, "resnet50.svg")],
                "hand": [sys.executable, hand],
            }
            times: dict[str, float] = {}
            for name, command in commands.items():
                if self.remaining() < 60:
                    self.notes.append("no budget left to time the command line")
                    return None
                start, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
                try:
                    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=self.remaining(), check=False)
                except subprocess.TimeoutExpired:
                    self.notes.append(f"{name} timed out")
                    return None
                times[f"{name}_wall"] = time.perf_counter() - start
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                times[f"{name}_cpu"] = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
                if proc.returncode not in (0, 1):
                    tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no output"])[-1]
                    self.notes.append(f"`flowcheck analyze` on ResNet50 exited {proc.returncode}: {tail}")
                    return None
        print(f"\n== command line, ResNet50, fresh processes (python start, import, model build included) ==")
        print(f"  flowcheck analyze (verify + collapsed SVG): {_fmt(times['cli_wall'])} (cpu {_fmt(times['cli_cpu'])})")
        print(f"  hand-written tape script:                    {_fmt(times['hand_wall'])} (cpu {_fmt(times['hand_cpu'])})")
        return times

    def own_targets(self) -> list[bool | None]:
        """flowcheck's own work (all of analyze but the trace) over the trace, warm and cold."""
        results: list[bool | None] = []
        print("own work / trace (trace: every get_concrete_function inside flowcheck.analyze), medians of the timing child:")
        for key, r in self.timing.items():
            for clock in ("wall", "cpu"):
                trace, own = _median(r[clock]["trace"]), _median(r[clock]["own"]) or 0
                line, ok = _ratio_line(f"{key:<17} {clock:<4}", own / trace if trace else None, TARGET_OWN_OVER_TRACE,
                                       f"{_fmt(own)} / {_fmt(trace)}")
                print(line)
                results.append(ok)
        print("own work / trace, cold: the first analysis in a fresh process (the flowcheck child):")
        for key, fc in self.flowcheck.items():
            for clock in ("wall", "cpu"):
                trace, own = fc["stages"][clock]["trace"], fc["stages"][clock]["own"]
                line, ok = _ratio_line(f"{key:<17} {clock:<4}", own / trace if trace else None, TARGET_OWN_OVER_TRACE,
                                       f"{_fmt(own)} / {_fmt(trace)}")
                print(line)
                results.append(ok)
        return results

    def growth_targets(self) -> list[bool | None]:
        """Growth of the own work from the 1,000- to the 10,000-layer chain, cold and warm side by side."""
        small, big = self.timing.get("chain1000"), self.timing.get("chain10000")
        results: list[bool | None] = []
        print("growth of the own work from the 1,000- to the 10,000-layer chain: cold (each chain's first analysis "
              "in its fresh process) | warm (graph + analysis again from the same trace, the oracle warm; "
              "the 1,000-layer figure a median of 3):")
        for clock in ("wall", "cpu"):
            if small is None or big is None or not small[clock]["own"] or not big[clock]["own"]:
                print(f"  {clock}: n/a (a chain was not measured)")
                continue
            size = big["size"]["ops"] / small["size"]["ops"]
            cold_a, cold_b = small[clock]["own"][0], big[clock]["own"][0]
            warm_a, warm_b = _median(small[clock]["warm"]) or 0, _median(big[clock]["warm"]) or 0
            cold, ok_cold = _ratio_line(f"{clock:<4} cold", cold_b / cold_a if cold_a else None, TARGET_GROWTH,
                                        f"{_fmt(cold_b)} / {_fmt(cold_a)}; the graph grew {size:.1f}x")
            warm, ok_warm = _ratio_line("warm", warm_b / warm_a if warm_a else None, TARGET_GROWTH, f"{_fmt(warm_b)} / {_fmt(warm_a)}")
            print(f"{cold} | {warm.strip()}")
            results.extend([ok_cold, ok_warm])
        return results

    def print_targets(self, cli: dict[str, float] | None) -> None:
        print("\n== targets ==")
        results: list[bool | None] = []
        results.extend(self.own_targets())
        results.extend(self.growth_targets())
        print("flowcheck end to end (analyze + verify + collapsed SVG) vs the hand-written tape check, "
              "each cold in a fresh process, both plus the import of TensorFlow:")
        for key in self.flowcheck:
            fc, hand = self.flowcheck[key], self.hand.get(key)
            if hand is None:
                continue
            for clock in ("wall", "cpu"):
                mine = sum(fc[clock].get(s, 0.0) for s in ("import", "analyze", "verify", "render"))
                theirs = hand[clock]["import"] + hand[clock]["check"]
                extra = "" if "render" in fc[clock] else " (no SVG: renderer unavailable)"
                line, ok = _ratio_line(f"{key:<15} {clock:<4}", mine / theirs, TARGET_END_TO_END, f"{_fmt(mine)} / {_fmt(theirs)}{extra}")
                print(line)
                if key == "resnet50":
                    results.append(ok)
        if cli is not None:
            for clock in ("wall", "cpu"):
                mine, theirs = cli[f"cli_{clock}"], cli[f"hand_{clock}"]
                line, ok = _ratio_line(f"`flowcheck analyze` command vs hand-written script, ResNet50, {clock}", mine / theirs,
                                       TARGET_END_TO_END, f"{_fmt(mine)} / {_fmt(theirs)}")
                print(line)
                results.append(ok)
        print("peak RSS of analyze + verify vs tracing plus one hand-written step, each a fresh process:")
        for key in self.flowcheck:
            fc, hand = self.flowcheck[key], self.hand.get(key)
            if hand is None:
                continue
            line, ok = _ratio_line(f"{key:<15}", fc["peak_mb"] / hand["peak_mb"], TARGET_MEMORY,
                                   f"{fc['peak_mb']:.0f} MB / {hand['peak_mb']:.0f} MB")
            print(line)
            results.append(ok)
        missed = sum(1 for ok in results if ok is False)
        print(f"targets: {sum(1 for ok in results if ok)} met, {missed} missed, {sum(1 for ok in results if ok is None)} n/a")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("models", nargs="*", help="model keys (default: all)")
    parser.add_argument("--budget", type=float, default=20 * 60, help="seconds for the whole run (default 1200)")
    args = parser.parse_args(argv)
    sys.path.insert(0, HERE)
    from models import BUILDERS

    keys = args.models or list(DEFAULT_ORDER)
    unknown = [k for k in keys if k not in BUILDERS]
    if unknown:
        parser.error(f"unknown model {', '.join(unknown)}; expected one of {', '.join(BUILDERS)}")
    print(f"flowcheck benchmarks: {', '.join(keys)}; budget {args.budget:.0f} s; python {sys.version.split()[0]}; "
          f"{os.cpu_count()} cpus, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    return Bench(keys, args.budget).run()


if __name__ == "__main__":
    sys.exit(main())
