"""Training throughput: vrnn-train's step against the write-up's per-timestep baseline.

    python benchmarks/bench_training.py [--json out.json] [--reps 5]

At the write-up's exact configuration (64-unit embedding, hidden state and
latent, one GRU layer, 128-symbol vocabulary, batch 64, sequence 300, Adam 1e-3),
measures characters per second of one optimizer step, as the median of --reps
steps taken in turn (A, B, C, A, B, C, ...) in one process, of:
  - the baseline (benchmarks/baseline_vrnn.py): one cell call per time step;
  - vrnn-train's step (Trainer.train_step on the `writeup` preset), whose one-layer
    recurrence runs in FusedRecurrence;
  - the same step with the recurrence as a plain autograd loop, to show what the
    fusion contributes.
Random text and weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_vrnn import VOCAB, BaselineVRNNCell, baseline_train_step

from vrnn.runtime.schema import ModelConfig
from vrnn.runtime.vocab import Vocabulary
from vrnn.training.config import PRESETS, TrainConfig
from vrnn.training.data import Corpus
from vrnn.training.trainer import OutputPaths, Trainer

BATCH, SEQ = 64, 300


def writeup_trainer(workdir: Path) -> Trainer:
    """A Trainer on the writeup preset over random text with a 128-symbol vocabulary."""
    generator = torch.Generator().manual_seed(0)
    chars = [chr(i) for i in range(VOCAB)]
    text = "".join(chars[i] for i in torch.randint(0, VOCAB, (200_000,), generator=generator).tolist())
    corpus = Corpus.from_text(text, "random", "-", Vocabulary.from_text(text))
    sizes, settings = PRESETS["writeup"]
    config = ModelConfig(vocab_size=VOCAB, **sizes)
    train_config = TrainConfig(**settings)
    assert (train_config.batch_size, train_config.seq_len, train_config.lr) == (BATCH, SEQ, 1e-3)
    return Trainer(corpus, config, train_config, OutputPaths(workdir / "bench.pt"), torch.device("cpu"), print)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    baseline = BaselineVRNNCell()
    baseline_opt = torch.optim.Adam(baseline.parameters(), lr=1e-3)
    batch = torch.randint(0, VOCAB, (BATCH, SEQ))
    with tempfile.TemporaryDirectory() as tmp:
        fused = writeup_trainer(Path(tmp))
        looped = writeup_trainer(Path(tmp))
        looped.model.use_fused_recurrence = False
        runs = {
            "baseline": lambda: baseline_train_step(baseline, baseline_opt, batch),
            "vrnn-train": fused.train_step,
            "vrnn-train, autograd loop": looped.train_step,
        }
        for fn in runs.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.reps):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)

    chars = BATCH * SEQ
    rate = {name: chars / statistics.median(ts) for name, ts in times.items()}
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "config": "writeup: E=H=Z=64, 1 layer, vocab 128, batch 64, seq 300, Adam 1e-3",
        "reps": args.reps,
        "chars_per_s": rate,
        "step_s": {name: statistics.median(ts) for name, ts in times.items()},
        "speedup_vs_baseline": {name: r / rate["baseline"] for name, r in rate.items()},
        "target_speedup": 3.0,
    }
    print(f"training throughput, {results['config']} ({results['machine']}), median of {args.reps}")
    print(f"{'step':<28}{'chars/s':>10}{'s/step':>9}{'vs baseline':>13}")
    for name in runs:
        print(f"{name:<28}{rate[name]:>10,.0f}{results['step_s'][name]:>9.2f}{rate[name] / rate['baseline']:>12.2f}x")
    met = results["speedup_vs_baseline"]["vrnn-train"] >= 3.0
    print(f"target: vrnn-train >= 3x the baseline: {'met' if met else 'missed'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
