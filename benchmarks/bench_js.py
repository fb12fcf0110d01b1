"""The JavaScript runtime against vrnn-run on the same cell: characters/s at batch 1, cold start, first character.

    python benchmarks/bench_js.py [--cell CELL] [--length N] [--repeats R]   (needs `make js-test` run once)

Every figure is the median of R runs, all in one invocation, one thread each (onnxruntime's intra-op
threads; the browser's WebAssembly runs single-threaded without cross-origin isolation):
- vrnn-run: a fresh `vrnn-run CELL -n N --seed 1 --threads 1` process; characters/s from its wall time
  minus that of `-n 1` (the cold start: interpreter, imports, session, probe).
- node: clients/js/bench.mjs with onnxruntime-node: the cell's load, then N characters after a warm-up;
  cold start is a fresh `node` process generating one character.
- browser: the demo page in headless Chromium with onnxruntime-web (WASM): the worker's load of the cell,
  N characters after a warm-up, and the time from the click to the first character on the page.
Unfiltered sampling at temperature 1 everywhere (the cell picks in-graph).  Results go to
benchmarks/results-js.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
JS = REPO / "clients" / "js"
BIN = Path(sys.executable).parent


def wall(argv: list[str], **kwargs) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, **kwargs)
    return time.perf_counter() - started


def node_json(mode: str, cell: Path, length: int) -> dict:
    out = subprocess.run(["node", "bench.mjs", mode, str(cell), str(length)], cwd=JS, check=True,
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", type=Path, default=REPO / "runtime" / "bundled-cell" / "shakespeare.onnx")
    parser.add_argument("--length", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cell = args.cell.resolve()
    run = [str(BIN / "vrnn-run"), str(cell), "--seed", "1", "--threads", "1"]
    node_cold = ["node", "--input-type=module", "-e",
                 "import * as ort from 'onnxruntime-node'; import {readFileSync} from 'node:fs';"
                 "import {VrnnCell} from './vrnn.mjs';"
                 f"const c = await VrnnCell.load(ort, readFileSync({str(cell)!r}), {{intraOpNumThreads: 1}});"
                 "await c.generate({length: 1, seed: 1});"]  # fmt: skip
    samples: dict[str, list[float]] = {k: [] for k in ("run_cold", "run_cps", "node_cold", "node_load", "node_cps",
                                                        "web_load", "web_cps", "web_first_ms")}  # fmt: skip
    for _ in range(args.repeats):
        cold = wall([*run, "-n", "1"])
        samples["run_cold"].append(cold)
        samples["run_cps"].append(args.length / (wall([*run, "-n", str(args.length)]) - cold))
        samples["node_cold"].append(wall(node_cold, cwd=JS))
        node = node_json("node", cell, args.length)
        samples["node_load"].append(node["load_s"])
        samples["node_cps"].append(node["chars_per_s"])
        web = node_json("browser", cell, args.length)
        samples["web_load"].append(web["load_s"])
        samples["web_cps"].append(web["chars_per_s"])
        samples["web_first_ms"].append(web["first_char_ms"])
    median = {k: statistics.median(v) for k, v in samples.items()}
    results = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {__import__('os').cpu_count()} cores",
        "cell": str(cell.relative_to(REPO)) if cell.is_relative_to(REPO) else str(cell),
        "length": args.length,
        "repeats": args.repeats,
        "median": median,
        "samples": samples,
    }
    (REPO / "benchmarks" / "results-js.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| runtime | characters/s (batch 1) | vs vrnn-run | cold start | first character |")
    print("|---|---|---|---|---|")
    base = median["run_cps"]
    print(f"| vrnn-run (Python, onnxruntime) | {base:,.0f} | 1.00x | {median['run_cold']:.2f} s (process) | |")
    print(
        f"| Node (onnxruntime-node) | {median['node_cps']:,.0f} | {median['node_cps'] / base:.2f}x "
        f"| {median['node_cold']:.2f} s (process); cell load {median['node_load'] * 1000:.0f} ms | |"
    )
    print(
        f"| browser (onnxruntime-web, WASM) | {median['web_cps']:,.0f} | {median['web_cps'] / base:.2f}x "
        f"| cell load in the worker {median['web_load']:.2f} s | {median['web_first_ms']:.0f} ms |"
    )


if __name__ == "__main__":
    main()
