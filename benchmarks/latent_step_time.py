"""The training cost of each arm of the latent study: seconds per optimizer step, measured in one process.

    python benchmarks/latent_step_time.py CORPUS [--reps 15] [--threads 2]

The study's runs were paused, resumed and shared the machine, so their own wall times do not compare.
This takes one Trainer per arm of benchmarks/latent_study.py (its runs' own vrnn-train flags, at dropout
0.4), and times Trainer.train_step in turn (A, B, C, A, B, C, ...) after two warm-up steps each; the median
per arm goes to benchmarks/results-latent-step-time.json.  Run it with nothing else on the machine.
Validation is not included: it is the same for every arm but for the VRNNs' K = 8 importance samples.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latent_study import ARMS, COMMON, STEP_TIME

from vrnn.runtime.schema import ModelConfig
from vrnn.training.cli import main as train_cli
from vrnn.training.config import TrainConfig
from vrnn.training.corpus import resolve_corpus
from vrnn.training.data import Corpus
from vrnn.training.options import MODEL_OPTIONS, TRAIN_OPTIONS, resolve_configs
from vrnn.training.tokens import prepare_tokens
from vrnn.training.torch_settings import flushed_denormals, set_torch_threads
from vrnn.training.trainer import OutputPaths, Trainer


def study_configs(arm: str, vocab_size: int) -> tuple[ModelConfig, TrainConfig]:
    """The configs of one arm's study runs at dropout 0.4: its vrnn-train flags (the study's COMMON and ARMS)
    read by vrnn-train's own parser, then resolved as vrnn-train resolves them."""
    flags = [*COMMON, *ARMS[arm], "--dropout", "0.4"]
    params = train_cli.make_context("vrnn-train", ["CORPUS", "-o", "unused.pt", *flags]).params
    options = {k: v for k, v in params.items() if k in MODEL_OPTIONS or k in TRAIN_OPTIONS}
    return resolve_configs(params["preset"], options, vocab_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=STEP_TIME)
    args = parser.parse_args()
    set_torch_threads(args.threads)
    tokens = prepare_tokens(resolve_corpus(args.corpus))
    data = Corpus.from_tokens(tokens, args.corpus)
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as scratch, flushed_denormals():
        trainers = {}
        for arm in ARMS:
            model_config, train_config = study_configs(arm, len(tokens.vocab))
            paths = OutputPaths(Path(scratch) / f"{arm}.pt")
            trainers[arm] = Trainer(data, model_config, train_config, paths, torch.device("cpu"), lambda _: None)
            for _ in range(2):
                trainers[arm].train_step()
        for _ in range(args.reps):
            for arm, trainer in trainers.items():
                started = time.perf_counter()
                trainer.train_step()
                times[arm].append(time.perf_counter() - started)
    medians = {arm: statistics.median(ts) for arm, ts in times.items()}
    chars = train_config.batch_size * train_config.seq_len
    for arm, seconds in medians.items():
        print(f"{arm}: {seconds * 1000:.0f} ms per step ({chars / seconds:,.0f} chars/s), "
              f"{seconds / medians['gru']:.2f}x the GRU's", flush=True)  # fmt: skip
    args.out.write_text(json.dumps({
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, torch {torch.__version__}, {args.threads} threads",
        "reps": args.reps,
        "chars_per_step": chars,
        "step_s": medians,
        "all_step_s": times,
    }, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
