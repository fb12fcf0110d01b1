"""Large corpora: preparation, start-up, memory and validation cost for 10 MB, 100 MB and 1 GB of text.

    python benchmarks/bench_corpus.py [--sizes 10,100,1000] [--old PATH] [--json out.json] [--workdir DIR]

Writes synthetic corpora itself (seeded words over a 70-character vocabulary with a few accented
letters, so the UTF-8 decoder works; --workdir, default a temporary directory, needs about 2.3x the
largest size free), then measures each in fresh processes (wall time and peak RSS of the whole process):
  1. first-use preparation (`prepare_tokens` into an empty cache: both passes, the token file written)
     and its throughput in MB/s;
  2. a later run's preparation (the cache found by stat alone);
  3. start-up to the first training step: `vrnn-train CORPUS --preset tiny --steps 1 --val-chars 1000`
     as a whole process, minus the same on Tiny Shakespeare's size (1.1 MB of the same synthetic text);
  4. the trainer's peak RSS over 200 steps of the `tiny` preset, beside the same run on 1.1 MB;
  5. one validation at the default --val-chars (1,000,000) with the `default` preset's model (hidden 512);
  6. with --old PATH (a copy of the package from before token files, e.g. `pip install --target`): the
     old loader (read_corpus + Corpus.from_text, the whole text in memory) for the sizes it can load:
     its time after the imports, and the process's peak RSS (PyTorch imported, as in training).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_generation import process_stats

_WORD_TEXT = (
    "the and of to a in that is was he for it with as his on be at by I had not are but from or have an they "
    "which one you were her all she there would their we him been has when who will more no if out so said "
    "what up its about into than them can only other new some could time these two may then do first any "
    "my now such like our over man me even most made after also did many before must through back years "
    "where much your way well down should because each just those people how too little state good very "
    "make world still own see men work long get here between both life being under never day same another "
    "know while last might us great old year off come since against go came right used take three café "
    "naïve façade Zoë über señor"
)
WORDS = _WORD_TEXT.split()
SMALL_MB = 1.1  # Tiny Shakespeare's size: the baseline of the start-up and memory targets


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> None:
    """Seeded words and line breaks, about `megabytes` MB, written in blocks (bounded memory)."""
    rng = np.random.default_rng(seed)
    target = int(megabytes * 1_000_000)
    block_words = np.array(WORDS, dtype=object)
    with open(path, "w", encoding="utf-8") as handle:
        written = 0
        while written < target:
            words = block_words[rng.integers(0, len(WORDS), 200_000)]
            lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
            block = ".\n".join(lines) + ".\n"
            data = block.encode("utf-8")[: target - written]
            text = data.decode("utf-8", errors="ignore")
            handle.write(text)
            written += len(text.encode("utf-8"))


PREPARE = """
import sys, time
from pathlib import Path
from vrnn.training.tokens import prepare_tokens
start = time.perf_counter()
tokens = prepare_tokens(sys.argv[1], cache=Path(sys.argv[2]))
print(time.perf_counter() - start, len(tokens.ids), tokens.built_s is not None, file=sys.stderr)
"""

OLD_LOAD = """
import sys, time
from vrnn.training.data import Corpus, read_corpus
start = time.perf_counter()
text, sha = read_corpus(sys.argv[1])
corpus = Corpus.from_text(text, "c", sha)
print(time.perf_counter() - start, file=sys.stderr)
"""

VALIDATE = """
import sys, time, torch
from pathlib import Path
from vrnn.models.vrnn import VRNN
from vrnn.runtime.schema import ModelConfig
from vrnn.training.data import Corpus, validation_subset
from vrnn.training.evaluation import evaluate
from vrnn.training.tokens import prepare_tokens
from vrnn.training.torch_settings import flushed_denormals
corpus = Corpus.from_tokens(prepare_tokens(sys.argv[1], cache=Path(sys.argv[2])), "c")
torch.manual_seed(0)
model = VRNN(ModelConfig(vocab_size=len(corpus.vocab), embed_size=64, hidden_size=512, latent_size=32))
pieces = validation_subset(corpus, 1_000_000)
start = time.perf_counter()
with flushed_denormals():
    evaluate(model, pieces, 256, 32)
print(time.perf_counter() - start, sum(len(p) - 1 for p in pieces), file=sys.stderr)
"""


def timed_child(code: str, *args: str, env: dict | None = None) -> tuple[float, float, str]:
    """(wall s, peak RSS MiB, its stderr) of `python -c code args` in a fresh process."""
    wrapper = (
        "import os, sys, time, resource\n"
        "start = time.perf_counter()\n"
        "r = __import__('subprocess').run(sys.argv[1:], capture_output=True, text=True)\n"
        "wall = time.perf_counter() - start\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(wall, rss, r.returncode); print(r.stderr, end='')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper, sys.executable, "-c", code, *args],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    first, _, rest = out.stdout.partition("\n")
    wall, rss_kb, code_rc = first.split()
    if int(code_rc) != 0:
        raise SystemExit(f"benchmark child failed:\n{rest}")
    return float(wall), int(rss_kb) / 1024, rest.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100,1000", help="corpus sizes in MB")
    parser.add_argument("--old", type=Path, default=None, help="package copy from before token files")
    parser.add_argument("--old-max-mb", type=float, default=200, help="largest size the old loader is given")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vrnn-bench-corpus-"))
    work.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    results: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "sizes": {},
    }
    try:
        small = work / "small.txt"
        write_corpus(small, SMALL_MB)
        for mb in [SMALL_MB, *sizes]:
            corpus = small if mb == SMALL_MB else work / f"corpus-{mb:g}MB.txt"
            if not corpus.exists():
                write_corpus(corpus, mb)
            cache = work / f"cache-{mb:g}"
            shutil.rmtree(cache, ignore_errors=True)
            row: dict = {"bytes": corpus.stat().st_size}
            wall, rss, out = timed_child(PREPARE, str(corpus), str(cache))
            row["prepare_first_s"], row["prepare_first_rss_mib"] = wall, rss
            row["prepare_mb_per_s"] = row["bytes"] / 1e6 / float(out.split()[0])
            again = [timed_child(PREPARE, str(corpus), str(cache)) for _ in range(args.reps)]
            row["prepare_again_s"] = statistics.median(float(o.split()[0]) for _, _, o in again)
            env = {**os.environ, "VRNN_CACHE": str(cache.parent / f"train-cache-{mb:g}")}
            subprocess.run([sys.executable, "-c", PREPARE, str(corpus), str(cache.parent / f"train-cache-{mb:g}" /
                            "tokens")], check=True, capture_output=True)  # fmt: skip
            ckpt = work / "t.pt"
            start_cmd = [str(bin_dir / "vrnn-train"), str(corpus), "-o", str(ckpt), "--force", "--preset", "tiny",
                         "--steps", "1", "--val-chars", "1000", "--threads", "1", "-q"]  # fmt: skip
            times = []
            for _ in range(args.reps):
                started = time.perf_counter()
                subprocess.run(start_cmd, check=True, env=env, capture_output=True)
                times.append(time.perf_counter() - started)
            row["start_to_first_step_s"] = statistics.median(times)
            train_cmd = [str(bin_dir / "vrnn-train"), str(corpus), "-o", str(ckpt), "--force", "--preset", "tiny",
                         "--steps", "200", "--eval-every", "100", "--threads", "1", "-q"]  # fmt: skip
            os.environ["VRNN_CACHE"] = env["VRNN_CACHE"]
            _, row["train_peak_rss_mib"] = process_stats(train_cmd, 1)
            wall, _, out = timed_child(VALIDATE, str(corpus), str(cache.parent / f"train-cache-{mb:g}" / "tokens"))
            row["validation_s"], row["validation_chars"] = float(out.split()[0]), int(out.split()[1])
            if args.old is not None and mb <= args.old_max_mb:
                old_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(args.old), *sys.path[1:]])}
                wall, rss, out = timed_child(OLD_LOAD, str(corpus), env=old_env)
                row["old_load_s"], row["old_load_rss_mib"] = float(out.split()[0]), rss
            results["sizes"][f"{mb:g}"] = row
            print(f"{mb:g} MB: {json.dumps(row)}", flush=True)
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(cache.parent / f"train-cache-{mb:g}", ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(markdown_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def markdown_table(results: dict) -> str:
    """The table docs/results.md shows."""
    rows = [
        "| corpus | first use: prepare | MB/s | its peak RSS | later runs: find it | start-up to step 1 "
        "| trainer peak RSS (200 steps) | one validation (val-chars 1M) | old loader: time | old: peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["sizes"].values():
        old_t = f"{r['old_load_s']:.2f} s" if "old_load_s" in r else "—"
        old_m = f"{r['old_load_rss_mib']:,.0f} MiB" if "old_load_rss_mib" in r else "—"
        rows.append(
            f"| {r['bytes'] / 1e6:,.1f} MB | {r['prepare_first_s']:.2f} s | {r['prepare_mb_per_s']:,.0f} "
            f"| {r['prepare_first_rss_mib']:,.0f} MiB | {r['prepare_again_s'] * 1000:.0f} ms "
            f"| {r['start_to_first_step_s']:.2f} s | {r['train_peak_rss_mib']:,.0f} MiB "
            f"| {r['validation_s']:.1f} s ({r['validation_chars']:,} chars) | {old_t} | {old_m} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
