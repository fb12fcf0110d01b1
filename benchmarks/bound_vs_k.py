"""The bound against K: -IWAE-K and -SMC-K of one checkpoint on the same windows, for growing K.

    python benchmarks/bound_vs_k.py CORPUS -c CKPT [--name ARM] [--windows 32] [--ks 16,64,256,1024]
    python benchmarks/bound_vs_k.py --table     # the recorded results as markdown

IWAE weighs whole trajectories, so for a latent that carries information its gain over the ELBO is at most
log K per window and its weights degenerate as windows grow; SMC resamples where the particles' effective
number falls below K/2 (vrnn-eval --estimator smc).  Both are upper bounds on -log p(x) in expectation and
approach it as K grows; their gap at a given K says how loose IWAE is for that model.

The windows: the first --windows windows of 256 characters of the second half of the validation split
(text neither training nor checkpoint selection saw, as in benchmarks/latent_study.py), scored as
vrnn-eval scores them.  Each K runs with --seeds noise seeds; the mean and the standard deviation over
seeds are recorded.  Results go to benchmarks/results-bound-vs-k.json under --name; rows for new K join
those of an earlier run of the same checkpoint, windows and seeds (a K measured again replaces its row).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from latent_study import portable  # (this folder: a path relative to the repository, else a file name)

from vrnn.models.checkpoint import load_checkpoint, model_from_checkpoint
from vrnn.runtime.splits import split_bounds
from vrnn.training.corpus import resolve_corpus
from vrnn.training.evaluation import score_text
from vrnn.training.smc import smc_text
from vrnn.training.tokens import prepare_tokens
from vrnn.training.torch_settings import flushed_denormals, set_torch_threads

RESULTS = Path(__file__).resolve().parent / "results-bound-vs-k.json"
WINDOW = 256


def windows_of(corpus: str, vocab_chars: list[str], count: int) -> np.ndarray:
    """The first `count` windows of the validation split's second half, as one stretch of ids (context id
    first) in the checkpoint's vocabulary."""
    tokens = prepare_tokens(resolve_corpus(corpus))
    start, end = split_bounds(len(tokens.ids), "val-second-half")
    end = min(end, start + count * WINDOW)
    table = np.array([vocab_chars.index(c) for c in tokens.vocab.chars], np.int64)  # corpus id -> model id
    return table[np.asarray(tokens.ids[start - 1 : end], np.int64)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?")
    parser.add_argument("-c", "--checkpoint")
    parser.add_argument("--name", default=None, help="the entry's name (default: the checkpoint's file name)")
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--ks", default="16,64,256,1024")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024, help="trajectories per forward pass")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", action="store_true", help="print the recorded results as markdown and stop")
    args = parser.parse_args()
    if args.table:
        print(tables(json.loads(RESULTS.read_text())))
        return
    if args.corpus is None or args.checkpoint is None:
        parser.error("CORPUS and --checkpoint are needed unless --table")
    set_torch_threads(args.threads)
    model, vocab = model_from_checkpoint(load_checkpoint(args.checkpoint))
    ids = torch.from_numpy(windows_of(args.corpus, list(vocab.chars), args.windows))
    rows = []
    with flushed_denormals():
        elbo = [score_text(model, ids, WINDOW, 1, args.batch_size, seed).elbo for seed in range(args.seeds)]
        for k in (int(k) for k in args.ks.split(",")):
            started = time.perf_counter()
            iwae = [score_text(model, ids, WINDOW, k, args.batch_size, seed).iwae for seed in range(args.seeds)]
            smc = [smc_text(model, ids, WINDOW, k, args.batch_size, seed) for seed in range(args.seeds)]
            row = {
                "k": k,
                "iwae_nats": statistics.mean(iwae),
                "iwae_sd": statistics.stdev(iwae) if len(iwae) > 1 else 0.0,
                "smc_nats": statistics.mean(s.smc for s in smc),
                "smc_sd": statistics.stdev(s.smc for s in smc) if len(smc) > 1 else 0.0,
                "smc_resampling_rate": statistics.mean(s.resampling_rate for s in smc),
                "wall_s": time.perf_counter() - started,
            }
            rows.append(row)
            print(f"K={k}: -IWAE {row['iwae_nats']:.4f} ± {row['iwae_sd']:.4f}, -SMC {row['smc_nats']:.4f} ± "
                  f"{row['smc_sd']:.4f} (resampled at {row['smc_resampling_rate']:.1%} of steps), "
                  f"{row['wall_s']:.0f} s", flush=True)  # fmt: skip
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    name = args.name or Path(args.checkpoint).name
    checkpoint = portable(str(Path(args.checkpoint).resolve()), corpus="")  # no path of this machine recorded
    entry = {"checkpoint": checkpoint, "chars": len(ids) - 1, "seeds": args.seeds}
    earlier = results.get(name, {})
    if all(earlier.get(key) == value for key, value in entry.items()):  # the same measurement: add to its rows
        rows = [row for row in earlier["rows"] if row["k"] not in {r["k"] for r in rows}] + rows
        rows.sort(key=lambda row: row["k"])
    results[name] = {**entry, "elbo_nats": statistics.mean(elbo), "rows": rows, "threads": args.threads,
                     "date": datetime.date.today().isoformat()}  # fmt: skip
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def tables(results: dict[str, dict]) -> str:
    """One markdown table per recorded checkpoint: -IWAE-K and -SMC-K (mean ± sd over noise seeds) by K."""
    out = []
    for name, entry in results.items():
        out += [f"{name}: −ELBO {entry['elbo_nats']:.4f}, {entry['chars']:,} characters, {entry['seeds']} seeds, "
                f"{entry['date']}", "", "| K | −IWAE-K | −SMC-K | steps resampled |", "|---|---|---|---|"]  # fmt: skip
        for row in entry["rows"]:
            iwae, smc = f"{row['iwae_nats']:.4f} ± {row['iwae_sd']:.4f}", f"{row['smc_nats']:.4f} ± {row['smc_sd']:.4f}"
            out.append(f"| {row['k']} | {iwae} | {smc} | {row['smc_resampling_rate']:.1%} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    main()
