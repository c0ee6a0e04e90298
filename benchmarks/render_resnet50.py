"""How long the collapsed ResNet50 report takes to draw (target: under 10 s).

Analyzes ``keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)``
compiled with ``sparse_categorical_crossentropy``, then times, in one run: building the DOT text,
running ``dot`` on it (the SVG), and the whole ``report.svg()``. Optionally writes the SVG, the
DOT and a PNG to a directory for looking at.

    python benchmarks/render_resnet50.py [--out DIR] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write resnet50.dot/.svg/.png/.html here")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions (default 3)")
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    import flowcheck
    from flowcheck.render.graphviz import render_svg

    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    y = np.array([1, 2])
    start = time.perf_counter()
    report = flowcheck.analyze(model, x, y)
    analyze_s = time.perf_counter() - start

    dot_s, svg_s, total_s = [], [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        source = report.to_dot()
        t1 = time.perf_counter()
        svg = render_svg(source)
        t2 = time.perf_counter()
        report.svg()
        t3 = time.perf_counter()
        dot_s.append(t1 - t0)
        svg_s.append(t2 - t1)
        total_s.append(t3 - t2)

    ops = sum(1 for _, a in report.graph.nodes(data=True) if a.get("kind") == "op")
    drawn = source.count(" [id=")
    print(f"ResNet50 64px: {ops} ops, {len(report.variables)} variables, {report!r}")
    print(f"analyze:                    {analyze_s:6.2f} s")
    print(f"collapsed DOT text:         {statistics.median(dot_s):6.2f} s  ({drawn} nodes drawn, {len(source) / 1e3:.0f} kB)")
    print(f"dot -Tsvg:                  {statistics.median(svg_s):6.2f} s  ({len(svg) / 1e6:.1f} MB SVG)")
    print(f"report.svg() end to end:    {statistics.median(total_s):6.2f} s  (median of {args.repeat}; target < 10 s)")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        report.save(args.out / "resnet50.dot")
        report.save(args.out / "resnet50.svg")
        report.save(args.out / "resnet50.html")
        subprocess.run(["dot", "-Tpng", "-Gdpi=36", "-o", str(args.out / "resnet50.png"), str(args.out / "resnet50.dot")], check=True)
        print(f"wrote {args.out}/resnet50.{{dot,svg,html,png}}")
    return 0 if statistics.median(total_s) < 10 else 1


if __name__ == "__main__":
    sys.exit(main())
