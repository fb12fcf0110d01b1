"""`vrnn-train` (also `python -m vrnn.training`): fit a VRNN to a UTF-8 text file."""

from __future__ import annotations

from typing import Any

import click

from vrnn import __version__
from vrnn.runtime.commands import OneLineCommand, cli_errors, require_extra
from vrnn.runtime.errors import UsageError, VrnnError
from vrnn.runtime.schema import ModelConfig
from vrnn.training.config import CHOICES, MAX_SELECT_SAMPLES, MIN_VAL_CHARS, PRESETS, TrainConfig

MODEL_OPTIONS = ("embed_size", "hidden_size", "latent_size", "layers", "posterior", "backward_size")
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
    "dropout_scope",
    "weight_decay",
    "eval_every",
    "val_chars",
    "select_on",
    "select_by",
    "select_samples",
    "seed",
)
# Options that may change when a run is resumed; the rest would make it a different run.
RESUMABLE_OPTIONS = ("steps", "eval_every", "val_chars")


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
    # Only a value given on the command line: a preset's width is no choice of the user's.  0 is the default.
    if (overrides.get("backward_size") or 0) > 0 and config.posterior != "smoothing":
        raise UsageError("--backward-size needs --posterior smoothing (the width of that posterior's backward GRU)")
    return config, train_config


@click.command(cls=OneLineCommand, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", message="%(prog)s %(version)s")
@click.argument("corpus", nargs=-1, required=True)
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
    "--backward-size",
    type=int,
    help="Width of the smoothing posterior's backward GRU (0: --hidden-size); narrower is cheaper.",
)
@click.option(
    "--aux-weight",
    type=float,
    help="Weight of the smoothing posterior's auxiliary cost: z_t predicts the backward state (0: off).",
)
@click.option("--dropout", type=float, help="Dropout on what the decoder reads, in [0, 1) (training only).")
@click.option(
    "--dropout-scope",
    type=click.Choice(CHOICES["dropout_scope"]),
    help="What --dropout masks: the decoder's whole input [phi_z(z), h], or the state h alone (which leaves the "
    "latent's path to the prediction unregularised).  [default: decoder-input]",
)
@click.option(
    "--weight-decay", type=float, help="Decoupled (AdamW) weight decay of weight matrices and embedding (0: off)."
)
@click.option("--eval-every", type=int, help="Validate, checkpoint and plot every N steps.")
@click.option(
    "--val-chars",
    type=int,
    help=f"Score at most N validation characters per validation, in {MIN_VAL_CHARS} stretches spread over the "
    f"split (0: all of it; else at least {MIN_VAL_CHARS}, one character per stretch).  [default: "
    f"{TrainConfig.val_chars:,}]",
)
@click.option(
    "--select-on",
    type=click.Choice(CHOICES["select_on"]),
    help="What validation scores to choose OUT.best.pt: the whole validation split, or its first half (the "
    "second half then stays unseen: report on it with vrnn-eval --split val-second-half).  [default: val]",
)
@click.option(
    "--select-by",
    type=click.Choice(CHOICES["select_by"]),
    help="The score that chooses OUT.best.pt: the negative ELBO, or the importance-weighted bound with "
    "--select-samples trajectories per window (does not favour a collapsed posterior).  [default: elbo]",
)
@click.option(
    "--select-samples",
    type=int,
    help=f"Trajectories per window of --select-by iwae (1 to {MAX_SELECT_SAMPLES}).  [default: "
    f"{TrainConfig.select_samples}]",
)
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
    corpus: tuple[str, ...],
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
    """Train a VRNN on CORPUS: a UTF-8 text file (or 'tinyshakespeare', downloaded once and checked), or
    several files, directories or glob patterns, concatenated in sorted path order with a newline between
    two files.

    The first use encodes the corpus once into a token file in the cache ($VRNN_CACHE/tokens), which later
    runs memory-map: a corpus need not fit in memory.  The vocabulary is the corpus's sorted set of
    characters; the last 10% of the text is the validation split and training windows are drawn at random
    from the first 90%.  Every --eval-every steps the validation score is computed: the negative ELBO
    (cross-entropy + KL, one posterior sample, noise seeded so the score is deterministic) over the
    validation split (at most --val-chars of it) cut into consecutive --seq-len windows with the state
    reset per window, in nats/char and bits/char.

    Writes OUT (the resumable checkpoint), OUT.best.pt (weights with the best
    validation score), OUT.metrics.jsonl and OUT.png (loss curves) beside it.
    """
    require_extra("vrnn-train", "torch")
    from vrnn.training.launch import train_from_cli  # PyTorch from here on

    train_from_cli(corpus, out, preset, device, threads, (resume, force, allow_corpus_change), quiet, options)


if __name__ == "__main__":
    main()
