"""Training throughput: vrnn-train's step against the write-up's per-timestep baseline.

    python benchmarks/bench_training.py [--json out.json] [--reps 9]

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

    python benchmarks/bench_training.py --time-to-quality CORPUS [--baseline-iters 2000]

adds the long measurement (hours on 2 cores): train the baseline for 2000
iterations as the write-up does (random windows of Tiny Shakespeare's first 90%),
score its validation -ELBO on the last 10%, then train with vrnn-train's `default`
recipe, validating every --eval-every steps, until it reaches that score; report
both training wall times (validation time excluded from both).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline_vrnn import SIZE, VOCAB, BaselineVRNNCell, baseline_train_step

from vrnn.models.fused_recurrence import FusedRecurrence
from vrnn.models.vrnn import VRNN
from vrnn.runtime.schema import ModelConfig
from vrnn.runtime.vocab import Vocabulary
from vrnn.training.config import PRESETS, TrainConfig
from vrnn.training.corpus import resolve_corpus
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


def baseline_val_elbo(cell: BaselineVRNNCell, val: torch.Tensor) -> float:
    """The baseline's -ELBO per character on consecutive windows of SEQ characters (zero state per window)."""
    torch.manual_seed(0)  # the cell draws its noise from the global generator
    total, chars = 0.0, 0
    windows = [val[i : i + SEQ] for i in range(0, len(val) - SEQ + 1, SEQ)]
    with torch.no_grad():
        for i in range(0, len(windows), BATCH):
            batch = torch.stack(windows[i : i + BATCH])
            hidden = torch.zeros(batch.size(0), SIZE)
            for t in range(batch.size(1)):
                loss1, loss2, hidden = cell.calculate_loss(batch[:, t], hidden)
                total += (loss1 + loss2).item() * batch.size(0)
            chars += batch.numel()
    return total / chars


def recurrence_split(reps: int) -> dict[str, float]:
    """Seconds per training step at the write-up's shapes of
    (a) the recurrence alone, forward and backward (FusedRecurrence);
    (b) its serial matrix products alone: per time step the three forward ([64 x 128] by
        [128 x 256], [64 x 64] by [64 x 128], [64 x 64] by [64 x 64]) and three backward products
        it makes ([64 x 64] by [64 x 128], [64 x 128] by [128 x 64], [64 x 256] by [256 x 128]), nothing else;
    (c) the same recurrence with every size 1 (batch, hidden state, latent, phi_z): the fixed cost of
        its operations, which does not shrink with the work.
    """

    def recurrence(B: int, H: int) -> Callable[[], None]:
        torch.manual_seed(0)
        leaf = lambda *shape: (torch.randn(*shape) * 0.1).requires_grad_()  # noqa: E731
        inputs = (leaf(SEQ, B, 4 * H), leaf(SEQ, B, 2 * H), torch.randn(SEQ, B, H))
        weights = (leaf(3 * H, H), leaf(3 * H, H), leaf(2 * H, H), leaf(H, H), leaf(H))
        return lambda: torch.stack([o.sum() for o in FusedRecurrence.apply(*inputs, *weights)]).sum().backward()

    B, H = BATCH, SIZE
    shapes = [(B, 2 * H, 4 * H), (B, H, 2 * H), (B, H, H), (B, H, 2 * H), (B, 2 * H, H), (B, 4 * H, 2 * H)]
    pairs = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]

    def products() -> None:
        for _ in range(SEQ):
            for a, b in pairs:
                torch.mm(a, b)

    runs = {"recurrence": recurrence(B, H), "serial_products": products, "recurrence_size_1": recurrence(1, 1)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()
    for _ in range(reps):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def time_to_quality(corpus: str, baseline_iters: int, eval_every: int) -> dict:
    """Wall time of the baseline for `baseline_iters` iterations vs vrnn-train's default recipe to match it."""
    text = resolve_corpus(corpus)[0].read_text(encoding="utf-8")
    if max(map(ord, text)) >= VOCAB:
        raise SystemExit("--time-to-quality needs an ASCII corpus (the baseline's vocabulary is 128 symbols)")
    ids = torch.tensor([ord(c) for c in text])
    split = int(len(ids) * 0.9)
    train, val = ids[:split], ids[split:]

    torch.manual_seed(0)
    cell = BaselineVRNNCell()
    optimizer = torch.optim.Adam(cell.parameters(), lr=1e-3)
    windows = torch.Generator().manual_seed(0)
    baseline_s = 0.0
    for _ in range(baseline_iters):
        starts = torch.randint(0, len(train) - SEQ, (BATCH,), generator=windows).tolist()
        batch = torch.stack([train[s : s + SEQ] for s in starts])
        start = time.perf_counter()
        baseline_train_step(cell, optimizer, batch)
        baseline_s += time.perf_counter() - start
    target = baseline_val_elbo(cell, val)
    print(f"baseline: {baseline_iters} iterations in {baseline_s:,.0f} s, val -ELBO {target:.4f} nats/char")

    corpus_obj = Corpus.from_text(text, Path(corpus).name, hashlib.sha256(text.encode()).hexdigest())
    sizes, settings = PRESETS["default"]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            corpus_obj,
            ModelConfig(vocab_size=len(corpus_obj.vocab), **sizes),
            TrainConfig(**settings),
            OutputPaths(Path(tmp) / "ttq.pt"),
            torch.device("cpu"),
            print,
        )
        ours_s, reached, elbo = 0.0, None, float("inf")
        while trainer.step < trainer.tc.steps:
            start = time.perf_counter()
            trainer.train_step()
            ours_s += time.perf_counter() - start
            if trainer.step % eval_every == 0 or trainer.step == trainer.tc.steps:
                elbo = trainer.validate().elbo
                print(f"vrnn-train default: step {trainer.step}, {ours_s:,.0f} s, val -ELBO {elbo:.4f}", flush=True)
                if elbo <= target:
                    reached = trainer.step
                    break
    return {
        "baseline_iters": baseline_iters,
        "baseline_val_elbo_nats": target,
        "baseline_train_s": baseline_s,
        "vrnn_train_steps": reached,
        "vrnn_train_val_elbo_nats": elbo,
        "vrnn_train_s": ours_s if reached else None,
        "speedup": baseline_s / ours_s if reached else None,
        "target_speedup": 5.0,
        "vrnn_params": VRNN(ModelConfig(vocab_size=len(corpus_obj.vocab), **sizes)).num_parameters(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--time-to-quality", metavar="CORPUS", help="also run the (long) time-to-quality race")
    parser.add_argument("--baseline-iters", type=int, default=2000)
    parser.add_argument("--eval-every", type=int, default=50, help="vrnn-train validation interval in the race")
    args = parser.parse_args()

    torch.manual_seed(0)
    baseline = BaselineVRNNCell()
    baseline_opt = torch.optim.Adam(baseline.parameters(), lr=1e-3)
    batch = torch.randint(0, VOCAB, (BATCH, SEQ))
    with tempfile.TemporaryDirectory() as tmp:
        fused = writeup_trainer(Path(tmp))
        looped = writeup_trainer(Path(tmp))
        looped.model.forward = functools.partial(looped.model.forward, autograd_recurrence=True)
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
    split = recurrence_split(args.reps)
    results["vrnn_train_split_s"] = split
    step = results["step_s"]["vrnn-train"]
    print(
        f"of vrnn-train's {step:.3f} s step: the recurrence (forward + backward) {split['recurrence']:.3f} s, "
        f"of which its serial matrix products alone take {split['serial_products']:.3f} s; the same recurrence "
        f"with every size 1 (its operations' fixed cost) {split['recurrence_size_1']:.3f} s"
    )
    if args.time_to_quality:
        race = time_to_quality(args.time_to_quality, args.baseline_iters, args.eval_every)
        results["time_to_quality"] = race
        if race["speedup"] is None:
            print("time to quality: vrnn-train's default recipe never reached the baseline's score")
        else:
            print(
                f"time to quality: {race['vrnn_train_s']:,.0f} s vs {race['baseline_train_s']:,.0f} s = "
                f"{race['speedup']:.1f}x shorter (target >= 5x: {'met' if race['speedup'] >= 5 else 'missed'})"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
