"""What packed weights cost a single sample: the runtime (one session, weights packed, the same arithmetic at
every batch size) against a session with packing off (onnxruntime's matrix-vector kernel at batch 1).

    python benchmarks/bench_packing.py [--reps 7] [--chars 2000] [--json benchmarks/results-packing.json]

Per character of `Sampler.generate` at batch 1 (what vrnn-run runs), for the bundled float32 cell and its
int8 export, on 1 and on every core; interleaved repetition by repetition, medians.  Also counted: in how
many of 20 texts of 2,000 characters the two sessions print something different (a near-tie that the two
kernels' rounding decides differently), which is why the runtime packs at batch 1 too.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
from bench_serve import int8_cell

from vrnn.runtime import Sampler
from vrnn.runtime.bundled import BUNDLED_CELL, bundled_file
from vrnn.runtime.cell import session_options

HERE = Path(__file__).resolve().parent


def unpacked(path: str, threads: int) -> Sampler:
    """A Sampler whose cell's session has weight packing off (what the runtime did at batch 1 until 2026-12-05)."""
    sampler = Sampler.from_onnx(path, threads=threads)
    sampler.cell.session = ort.InferenceSession(path, session_options(threads, pack_weights=False))
    return sampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--chars", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=HERE / "results-packing.json")
    args = parser.parse_args()
    report = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "onnxruntime": ort.__version__, "chars": args.chars, "reps": args.reps, "cells": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        cells = {"float32": str(bundled_file(BUNDLED_CELL, "the bundled cell")), "int8": int8_cell(Path(scratch))}
        for name, path in cells.items():
            for threads in sorted({1, os.cpu_count() or 1}):
                samplers = {"packed": Sampler.from_onnx(path, threads=threads), "unpacked": unpacked(path, threads)}
                times: dict[str, list[float]] = {k: [] for k in samplers}
                for rep in range(args.reps + 1):
                    for kind, sampler in samplers.items():
                        started = time.perf_counter()
                        sampler.generate(args.chars, seed=rep)
                        if rep:  # the first repetition warms up
                            times[kind].append(time.perf_counter() - started)
                us = {k: 1e6 * statistics.median(v) / args.chars for k, v in times.items()}
                differ = sum(samplers["packed"].generate(2000, seed=s) != samplers["unpacked"].generate(2000, seed=s)
                             for s in range(20))  # fmt: skip
                report["cells"][f"{name}, {threads} thread(s)"] = {**{f"{k}_us_per_char": v for k, v in us.items()},
                                                                   "packed_vs_unpacked": us["packed"] / us["unpacked"],
                                                                   "texts_differing_of_20": differ}  # fmt: skip
                print(f"{name}, {threads} thread(s): packed {us['packed']:.1f} us/char, unpacked "
                      f"{us['unpacked']:.1f} ({us['packed'] / us['unpacked']:.2f}x the time); "
                      f"{differ} of 20 texts differ", flush=True)  # fmt: skip
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
