"""`vrnn-train` (also `python -m vrnn.training`): fit a VRNN to a UTF-8 text file."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import click
import torch

from vrnn.models.checkpoint import load_checkpoint
from vrnn.runtime.atomic import check_writable_destination, refuse_overwriting_inputs
from vrnn.runtime.errors import OneLineCommand, UsageError, VrnnError, cli_errors
from vrnn.runtime.limits import check_memory, check_threads
from vrnn.runtime.schema import ModelConfig
from vrnn.runtime.vocab import Vocabulary, describe_chars
from vrnn.training.config import PRESETS, TrainConfig
from vrnn.training.data import Corpus, read_corpus
from vrnn.training.distributed import Distribution, init_distribution, shutdown_distribution
from vrnn.training.run_lock import exclusive_run
from vrnn.training.trainer import OutputPaths, Trainer, estimate_training_bytes, resolve_device

MODEL_OPTIONS = ("embed_size", "hidden_size", "latent_size", "layers", "posterior")
TRAIN_OPTIONS = (
    "steps",
    "batch_size",
    "seq_len",
    "lr",
    "clip",
    "kl_anneal_steps",
    "free_bits",
    "aux_weight",
    "dropout",
    "weight_decay",
    "eval_every",
    "seed",
)
# Options that may change when a run is resumed; the rest would make it a different run.
RESUMABLE_OPTIONS = ("steps", "eval_every")


def _log(message: str) -> None:
    click.echo(message, err=True)


def set_torch_threads(threads: int | None) -> None:
    """Apply --threads (None: torch's default, all cores), refusing values below 1."""
    check_threads(threads)
    if threads is not None:
        torch.set_num_threads(threads)


def _silent(message: str) -> None:
    """The log of processes other than rank 0 under torchrun."""


def build_configs(preset: str, vocab_size: int, overrides: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """Start from a preset and apply the options given on the command line."""
    model_sizes, train_settings = PRESETS[preset]
    model = {**model_sizes, **{k: overrides[k] for k in MODEL_OPTIONS if overrides.get(k) is not None}}
    train = {**train_settings, **{k: overrides[k] for k in TRAIN_OPTIONS if overrides.get(k) is not None}}
    if overrides.get("warmup_steps") is not None:
        train["warmup_steps"] = overrides["warmup_steps"]
    if overrides.get("lr_schedule") is not None:
        train["lr_schedule"] = overrides["lr_schedule"]
    try:
        config = ModelConfig(vocab_size=vocab_size, **model)
    except VrnnError as exc:
        raise UsageError(str(exc).removeprefix("model config: ")) from None
    train_config = TrainConfig(**train, preset=preset).validate()
    if train_config.aux_weight > 0 and config.posterior != "smoothing":
        raise UsageError("--aux-weight needs --posterior smoothing (the auxiliary cost predicts its backward state)")
    return config, train_config


@click.command(cls=OneLineCommand, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("corpus")
@click.option(
    "-o", "--out", type=click.Path(readable=False), required=True, help="Checkpoint to write (and to --resume from)."
)
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default=None,
    help="Model sizes and settings to start from; the options below override it.  [default: default]",
)
@click.option("--steps", type=int, help="Optimizer steps in total.  [default: preset's]")
@click.option(
    "--batch-size",
    type=int,
    help="Windows per step in each process; under torchrun the global batch is this times the number of processes.",
)
@click.option(
    "--seq-len", type=int, help="Predicted characters per window (each window also has one context character)."
)
@click.option("--embed-size", type=int, help="Width of phi_x(x) and phi_z(z).")
@click.option("--hidden-size", type=int, help="GRU state width.")
@click.option("--latent-size", type=int, help="Dimensions of the latent z; 0 removes it (a plain GRU language model).")
@click.option("--layers", type=int, help="Stacked GRU layers.")
@click.option("--lr", type=float, help="Adam learning rate (peak, with the cosine schedule).")
@click.option(
    "--lr-schedule", type=click.Choice(["constant", "cosine"]), help="Constant, or linear warm-up then cosine decay."
)
@click.option("--warmup-steps", type=int, help="Linear warm-up steps of the cosine schedule.")
@click.option("--clip", type=float, help="Clip the gradient norm to this before each step (0: off).")
@click.option(
    "--kl-anneal-steps",
    type=int,
    help="Raise the KL weight linearly from 0 to 1 over these steps, at most half of --steps (0: off).",
)
@click.option("--free-bits", type=float, help="Nats per latent dimension of KL left unpenalised (0: off).")
@click.option(
    "--posterior",
    type=click.Choice(["filtering", "smoothing"]),
    help="Encoder q(z_t | x_t, h) ('filtering'), or q(z_t | b_t, h) with a backward GRU over the window "
    "('smoothing').  [default: preset's]",
)
@click.option(
    "--aux-weight",
    type=float,
    help="Weight of the smoothing posterior's auxiliary cost: z_t predicts the backward state (0: off).",
)
@click.option("--dropout", type=float, help="Dropout on the GRU state the decoder reads, in [0, 1) (training only).")
@click.option(
    "--weight-decay", type=float, help="Decoupled (AdamW) weight decay of weight matrices and embedding (0: off)."
)
@click.option("--eval-every", type=int, help="Validate, checkpoint and plot every N steps.")
@click.option("--seed", type=int, help="Seed of initialisation, window sampling and latent noise.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=int, default=None, help="Torch CPU threads.  [default: all cores]")
@click.option("--resume", is_flag=True, help="Continue the run saved at --out (up to --steps).")
@click.option("--force", is_flag=True, help="Overwrite an existing --out instead of refusing.")
@click.option(
    "--allow-corpus-change",
    is_flag=True,
    help="With --resume: continue on a different text with the same characters (fine-tuning).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar; one log line per validation.")
@cli_errors
def main(
    corpus: str,
    out: str,
    preset: str | None,
    device: str,
    threads: int | None,
    resume: bool,
    force: bool,
    allow_corpus_change: bool,
    quiet: bool,
    **options: Any,
) -> None:
    """Train a VRNN on CORPUS, a UTF-8 text file (or 'tinyshakespeare', downloaded once and checked).

    The vocabulary is the corpus's sorted set of characters; the last 10% of the
    text is the validation split and training windows are drawn at random from the
    first 90%.  Every --eval-every steps the validation score is computed: the
    negative ELBO (cross-entropy + KL, one posterior sample, noise seeded so the
    score is deterministic) over the whole validation split cut into consecutive
    --seq-len windows with the state reset per window, in nats/char and bits/char.

    Writes OUT (the resumable checkpoint), OUT.best.pt (weights with the best
    validation score), OUT.metrics.jsonl and OUT.png (loss curves) beside it.
    """
    set_torch_threads(threads)
    paths = OutputPaths(check_writable_destination(out, files_only=True))
    for derived in (paths.best, paths.metrics, paths.plot):
        check_writable_destination(derived, files_only=True)
    outputs = {
        "-o": paths.checkpoint,
        "its best file": paths.best,
        "its metrics": paths.metrics,
        "its plot": paths.plot,
    }
    refuse_overwriting_inputs(outputs, {"CORPUS": corpus})
    text, sha = read_corpus(corpus)
    distribution, torch_device = init_distribution(resolve_device(device))
    try:
        # Rank 0 writes every file, so it alone takes the lock; its peers follow it.
        with exclusive_run(paths.checkpoint) if distribution.is_main else contextlib.nullcontext():
            if distribution.is_main:
                paths.remove_stale_temp_files()
            _train(corpus, text, sha, paths, preset, (resume, force, allow_corpus_change), quiet, distribution,
                   torch_device, options)  # fmt: skip
    except BaseException:
        shutdown_distribution(wait_for_peers=False)
        raise
    shutdown_distribution(wait_for_peers=True)


def _train(
    corpus: str,
    text: str,
    sha: str,
    paths: OutputPaths,
    preset: str | None,
    flags: tuple[bool, bool, bool],
    quiet: bool,
    distribution: Distribution,
    torch_device: torch.device,
    options: dict[str, Any],
) -> None:
    log = _log if distribution.is_main else _silent
    resume, force, allow_corpus_change = flags
    if options.get("batch_size") is not None:
        if options["batch_size"] < 1:
            raise UsageError(f"--batch-size must be at least 1, got {options['batch_size']}")
        options["batch_size"] *= distribution.world_size  # checkpoints record the global batch
    if resume:
        payload = load_checkpoint(paths.checkpoint)
        saved = {  # with today's defaults for fields older checkpoints lack
            **TrainConfig.from_dict(payload.get("train_config", {})).to_dict(),
            **ModelConfig.from_dict(payload["model_config"]).to_dict(),
        }
        # Repeating the original command with --resume is fine; changing the run is not.
        changed = [
            k
            for k in (*MODEL_OPTIONS, *TRAIN_OPTIONS, "warmup_steps", "lr_schedule")
            if options.get(k) is not None and k not in RESUMABLE_OPTIONS and options[k] != saved.get(k)
        ]
        if changed:
            flags = ", ".join("--" + k.replace("_", "-") for k in changed)
            raise UsageError(f"{flags} cannot change when resuming (the checkpoint fixes them)")
        recorded = payload.get("train_config", {}).get("preset")
        if preset is not None and preset != recorded:
            was = f"was trained with --preset {recorded}" if recorded else "does not record a preset"
            raise UsageError(f"--preset {preset} cannot change when resuming (the checkpoint {was}): drop --preset")
        vocab = Vocabulary(payload["vocab"])
        found = Vocabulary.from_text(text)
        if found != vocab:
            extra, missing = set(found.chars) - set(vocab.chars), set(vocab.chars) - set(found.chars)
            detail = f"new characters {describe_chars(extra)}" if extra else f"lacks {describe_chars(missing)}"
            raise VrnnError(
                f"{corpus} does not have the checkpoint's vocabulary ({detail}): resume with the same corpus"
            )
        trained_on = (payload.get("corpus") or {}).get("sha256")
        if trained_on and trained_on != sha and not allow_corpus_change:
            raise VrnnError(
                f"{corpus} is not the text {paths.checkpoint} was trained on (its sha256 differs): resume with "
                "the same corpus, or pass --allow-corpus-change to continue training on this one"
            )
        model_config = ModelConfig.from_dict(payload["model_config"])
        train_config = TrainConfig.from_dict(payload.get("train_config", {}))
        for key in RESUMABLE_OPTIONS:
            if options.get(key) is not None:
                setattr(train_config, key, options[key])
        train_config.validate()
    else:
        if paths.checkpoint.exists() and not force:
            raise UsageError(f"{paths.checkpoint} exists: pass --resume to continue it or --force to overwrite it")
        vocab = Vocabulary.from_text(text)
        preset = preset or "default"
        if options.get("batch_size") is None:
            options["batch_size"] = PRESETS[preset][1].get("batch_size", TrainConfig.batch_size)
            options["batch_size"] *= distribution.world_size
        model_config, train_config = build_configs(preset, len(vocab), options)
        payload = None
        if force and distribution.is_main:
            for stale in (paths.metrics,):
                if stale.exists():
                    os.unlink(stale)

    check_memory(
        estimate_training_bytes(model_config, train_config),
        f"training a {model_config.hidden_size}-unit model on batches of {train_config.batch_size} x "
        f"{train_config.seq_len} characters",
        "reduce --batch-size, --seq-len or the model's sizes",
    )
    data = Corpus.from_text(text, Path(corpus).name, sha, vocab)
    data.check_window(train_config.seq_len)
    trainer = Trainer(data, model_config, train_config, paths, torch_device, log, payload, distribution)
    if not quiet:
        processes = f", {distribution.world_size} processes" if distribution.enabled else ""
        log(
            f"vrnn: {trainer.model.num_parameters():,} parameters, vocabulary {len(vocab)}, "
            f"{len(data.train):,} training / {len(data.val):,} validation characters, device {torch_device}"
            f"{processes}, global batch {train_config.batch_size}"
        )
    trainer.run(quiet=quiet)
    log(f"saved {paths.checkpoint} (best: {paths.best}, metrics: {paths.metrics})")


if __name__ == "__main__":
    main()
