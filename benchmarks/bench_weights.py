"""Weight formats: float32, float16 and int8 cells of one model side by side with the PyTorch path.

    python benchmarks/bench_weights.py [--checkpoint CKPT] [--text tinyshakespeare.txt] [--json out.json]

Exports the checkpoint (default: the bundled model) in each format with `vrnn-export --weights`, then
measures, in one run, interleaved repetition by repetition so that a slow minute hits every format alike:
  1. file size;
  2. per character at batch 1, one thread: `Sampler.generate` (what vrnn-run runs) for each cell, and
     the PyTorch step loop (what vrnn-sample runs) -- medians of --reps; and two floors: the cell's
     matrix products alone in its format (an ONNX Scan of nothing else) and an empty Scan iteration;
  3. characters/s at batch 256 with every core;
  4. cold start and peak RSS of a whole `vrnn-run CELL --length 500` process (and `vrnn-sample CKPT`);
  5. quality, with --text: `vrnn-score` on its validation split (the last 10%, 256-character windows,
     K = 8, seed 0: the same noise for every cell), nats/char and the difference to float32; and the
     agreement of greedy text (`--greedy --latent-temperature 0`, 2,000 characters): the characters
     before the first that differs from float32's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch
from bench_generation import onnxruntime_products_floor, process_stats, scan_iteration_floor

from vrnn.export.cli import export_cell
from vrnn.export.torch_cell import torch_sampler
from vrnn.models.bundled import BUNDLED_CHECKPOINT
from vrnn.runtime import Sampler
from vrnn.runtime.bundled import bundled_file

FORMATS = ("float32", "float16", "int8")
GREEDY = {"greedy": True, "latent_temperature": 0.0}


def interleaved(fns: dict[str, object], reps: int) -> dict[str, float]:
    """Median seconds of each zero-argument function, timed in turn within every repetition."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def common_prefix(a: str, b: str) -> int:
    """How many leading characters two texts share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled model")
    parser.add_argument("--text", type=Path, default=None, help="score each cell on this text's validation split")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--chars", type=int, default=2000, help="characters per batch-1 repetition")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads at batch 256")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    ckpt = args.checkpoint or bundled_file(BUNDLED_CHECKPOINT, "--checkpoint")
    results: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
        f"onnxruntime {ort.__version__}, torch {torch.__version__}",
        "checkpoint": str(args.checkpoint or "bundled"),
    }
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        cells = {w: Path(tmp) / f"cell-{w}.onnx" for w in FORMATS}
        export = {}
        for weights, path in cells.items():
            export_cell(str(ckpt), str(path), weights=weights, echo=lambda m, w=weights: export.setdefault(w, m))
        results["size_bytes"] = {w: p.stat().st_size for w, p in cells.items()}

        n = args.chars
        gens = {w: Sampler.from_onnx(p, threads=1) for w, p in cells.items()}
        pt = torch_sampler(str(ckpt), threads=1)
        fns = {w: (lambda g=g: g.generate(n, seed=1)) for w, g in gens.items()}
        fns["torch"] = lambda: pt.generate(n, seed=1)
        results["batch1_us_per_char"] = {k: v / n * 1e6 for k, v in interleaved(fns, args.reps).items()}
        results["batch1_products_floor_us"] = {
            w: onnxruntime_products_floor(p, args.reps, n) * 1e6 for w, p in cells.items()
        }
        results["scan_iteration_floor_us"] = scan_iteration_floor(args.reps, n) * 1e6

        b, steps = 256, 200
        gens = {w: Sampler.from_onnx(p, threads=args.threads, batch=b) for w, p in cells.items()}
        pt = torch_sampler(str(ckpt), threads=args.threads)
        fns = {w: (lambda g=g: g.generate(steps, seed=1, num_samples=b)) for w, g in gens.items()}
        fns["torch"] = lambda: pt.generate(steps, seed=1, num_samples=b)
        results["batch256_chars_per_s"] = {k: b * steps / v for k, v in interleaved(fns, args.reps).items()}
        results["batch256_threads"] = args.threads

        cold, rss = {}, {}
        for _ in range(args.reps):  # interleaved as above, one process at a time
            for w, p in cells.items():
                t, r = process_stats([str(bin_dir / "vrnn-run"), str(p), "--length", "500", "--seed", "1"], 1)
                cold.setdefault(w, []).append(t)
                rss.setdefault(w, []).append(r)
        t, r = process_stats([str(bin_dir / "vrnn-sample"), str(ckpt), "--length", "500", "--seed", "1"], args.reps)
        results["cold_start_s"] = {w: statistics.median(v) for w, v in cold.items()} | {"torch": t}
        results["peak_rss_mib"] = {w: statistics.median(v) for w, v in rss.items()} | {"torch": r}

        greedy = {w: Sampler.from_onnx(p, threads=1).generate(2000, seed=1, **GREEDY) for w, p in cells.items()}
        results["greedy_chars_equal_to_float32"] = {w: common_prefix(t, greedy["float32"]) for w, t in greedy.items()}
        if args.text is not None:
            scores = {}
            for w, p in cells.items():
                run = subprocess.run(
                    [str(bin_dir / "vrnn-score"), str(p), str(args.text), "--split", "val", "-k", "8", "--json"],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                scores[w] = json.loads(run.stdout)
            results["val_iw8_nats"] = {w: s["iw_nats"] for w, s in scores.items()}
            results["val_mean_nats"] = {w: s["mean_nats"] for w, s in scores.items()}
        results["export_check"] = {w: m for w, m in export.items() if w != "float32"}

    print(json.dumps(results, indent=2))
    print(markdown_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def markdown_table(r: dict) -> str:
    """The table docs/results.md shows."""
    b1, b256 = r["batch1_us_per_char"], r["batch256_chars_per_s"]
    rows = [
        "| cell | file | batch 1, µs/char | vs float32 | vs PyTorch | batch 256, chars/s | cold start | peak RSS "
        "| val −IW-8, nats/char | vs float32 | greedy chars = float32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    scores = r.get("val_iw8_nats", {})
    for w in (*FORMATS, "torch"):
        size = f"{r['size_bytes'][w] / 1e6:.2f} MB" if w in r["size_bytes"] else "(checkpoint)"
        score = f"{scores[w]:.4f}" if w in scores else ""
        delta = f"{scores[w] - scores['float32']:+.5f}" if w in scores else ""
        greedy = str(r["greedy_chars_equal_to_float32"].get(w, ""))
        name = "PyTorch (vrnn-sample)" if w == "torch" else w
        rows.append(
            f"| {name} | {size} | {b1[w]:.1f} | {b1['float32'] / b1[w]:.2f}× | {b1['torch'] / b1[w]:.2f}× "
            f"| {b256[w]:,.0f} | {r['cold_start_s'][w]:.2f} s | {r['peak_rss_mib'][w]:.0f} MiB | {score} | {delta} "
            f"| {greedy} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
