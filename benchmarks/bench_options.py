"""What per-row options in the cell (schema 3) cost and buy at batch 1: `Sampler.generate`, one sample, against
the same model's schema-2 cell, for each option and thread count.

    python benchmarks/bench_options.py v2-float32=OLD.onnx v3-float32=NEW.onnx ... [--chars 2000] [--reps 7]

Cells are given as NAME=PATH pairs; names `v2-X` and `v3-X` are compared as a pair (X: the weight format).
A schema-2 cell is exported by the vrnn before schema 3 (0.2; as 2026-12-07's measurement did: that commit's
packages copied under one folder on PYTHONPATH, then `export_cell(..., weights=X)` from the bundled
checkpoint).  For each option set, thread count and repetition the cells run in turn, so that a slow
minute hits them alike; medians of the repetitions, microseconds per character, and each v3/v2 ratio.
Nothing else should run meanwhile.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

from vrnn.runtime import Sampler

HERE = Path(__file__).resolve().parent
OPTIONS = {"defaults": {}, "top-p 0.9": {"top_p": 0.9}, "top-k 5": {"top_k": 5}, "greedy": {"greedy": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cells", nargs="+", help="NAME=PATH")
    parser.add_argument("--chars", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--json", type=Path, default=HERE / "results-options.json")
    args = parser.parse_args()
    cells = dict(pair.split("=", 1) for pair in args.cells)
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        samplers = {name: Sampler.from_onnx(path, threads=threads) for name, path in cells.items()}
        for sampler in samplers.values():
            sampler.generate(200, seed=0)  # warm-up
        times: dict[tuple[str, str], list[float]] = {(n, o): [] for n in cells for o in OPTIONS}
        for rep in range(args.reps):
            for option, keywords in OPTIONS.items():
                for name, sampler in samplers.items():
                    started = time.perf_counter()
                    sampler.generate(args.chars, seed=rep, **keywords)
                    times[(name, option)].append((time.perf_counter() - started) / args.chars * 1e6)
        for (name, option), values in times.items():
            rows.append({"cell": name, "threads": threads, "options": option, "us_per_char": statistics.median(values),
                         "runs": values})  # fmt: skip
        for option in OPTIONS:
            line = [f"{threads} thread(s), {option:>10}:"]
            for name in cells:
                line.append(f"{name} {statistics.median(times[(name, option)]):6.1f}")
            for name in cells:
                if name.startswith("v3-") and f"v2-{name[3:]}" in cells:
                    old = statistics.median(times[(f"v2-{name[3:]}", option)])
                    line.append(f"{name}/v2 {statistics.median(times[(name, option)]) / old:.3f}")
            print("  ".join(line), flush=True)
    machine = platform.processor() or platform.machine()
    report = {"date": datetime.date.today().isoformat(), "machine": machine, "cores": os.cpu_count(),
              "chars": args.chars, "reps": args.reps, "cells": {n: Path(p).name for n, p in cells.items()},
              "rows": rows}  # fmt: skip
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
