"""`vrnn-train` (also `python -m vrnn.training`): fit a VRNN to a UTF-8 text file.

Its model and training options are generated from the config dataclasses (vrnn.training.options): one per
field, typed by the field, with the help text below."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, get_type_hints

import click

from vrnn import __version__
from vrnn.runtime.commands import OneLineCommand, cli_errors, require_extra
from vrnn.runtime.schema import POSTERIORS, ModelConfig
from vrnn.training import budget
from vrnn.training.config import CHOICES, MAX_SELECT_SAMPLES, MIN_VAL_CHARS, PRESETS, TrainConfig
from vrnn.training.options import DEFAULT_PRESET, MODEL_OPTIONS, TRAIN_OPTIONS, option_name, preset_value

# What each config option does (its type, choices and default come from the dataclasses and the presets).
OPTION_HELP = {
    "embed_size": "Width of phi_x(x) and phi_z(z).",
    "hidden_size": "GRU state width.",
    "latent_size": "Dimensions of the latent z; 0 removes it (a plain GRU language model).",
    "layers": "Stacked GRU layers.",
    "posterior": "Encoder q(z_t | x_t, h) ('filtering'), or q(z_t | b_t, h) with a backward GRU over the window "
    "('smoothing').",
    "backward_size": "Width of the smoothing posterior's backward GRU (0: --hidden-size); narrower is cheaper.",
    "steps": "Optimizer steps in total.",
    "minutes": "Wall-clock budget from the command's start (fractions allowed): the step time is measured early and "
    "the steps, the schedule and (unless given) --eval-every and --val-chars are fitted to end on time; excludes "
    "--steps (0: off).",
    "batch_size": "Windows per step in each process; under torchrun the global batch is this times the number of "
    "processes.",
    "seq_len": "Predicted characters per window (each window also has one context character).",
    "lr": "Adam learning rate (peak, with the cosine schedule).",
    "lr_schedule": "Constant, or linear warm-up then cosine decay.",
    "warmup_steps": "Linear warm-up steps of the cosine schedule.",
    "min_lr_ratio": "Where the cosine schedule ends, as a fraction of --lr.",
    "clip": "Clip the gradient norm to this before each step (0: off).",
    "kl_anneal_steps": "Raise the KL weight linearly from 0 to 1 over these steps, at most half of --steps (0: off).",
    "free_bits": "Nats per latent dimension of KL left unpenalised (0: off).",
    "aux_weight": "Weight of the smoothing posterior's auxiliary cost: z_t predicts the backward state (0: off).",
    "dropout": "Dropout on what the decoder reads, in [0, 1) (training only).",
    "dropout_scope": "What --dropout masks: the decoder's whole input [phi_z(z), h], or the state h alone (which "
    "leaves the latent's path to the prediction unregularised).",
    "weight_decay": "Decoupled (AdamW) weight decay of weight matrices and embedding (0: off).",
    "eval_every": "Validate, checkpoint and plot every N steps.",
    "val_chars": f"Score at most N validation characters per validation, in {MIN_VAL_CHARS} stretches spread over "
    f"the split (0: all of it; else at least {MIN_VAL_CHARS}, one character per stretch).",
    "select_on": "What validation scores to choose OUT.best.pt: the whole validation split, or its first half (the "
    "second half then stays unseen: report on it with vrnn-eval --split val-second-half).",
    "select_by": "The score that chooses OUT.best.pt: the negative ELBO, or the importance-weighted bound with "
    "--select-samples trajectories per window (does not favour a collapsed posterior).",
    "select_samples": f"Trajectories per window of --select-by iwae (1 to {MAX_SELECT_SAMPLES}).",
    "seed": "Seed of initialisation, window sampling and latent noise.",
}


def _config_option(config: type, field: dataclasses.Field) -> Callable[[Callable], Callable]:
    """The click option of one field of `config`: the field's type (a choice for the string fields), its
    help, and the value --preset default gives it (the option itself defaults to None: not given)."""
    choices = {**CHOICES, "posterior": POSTERIORS}
    kind = click.Choice(choices[field.name]) if field.name in choices else get_type_hints(config)[field.name]
    default = preset_value(DEFAULT_PRESET, field.name)
    shown = f"{default:,}" if isinstance(default, int) and not isinstance(default, bool) else f"{default}"
    shown = "off" if field.name == "minutes" and not default else shown
    return click.option(option_name(field.name), field.name, type=kind,
                        help=f"{OPTION_HELP[field.name]}  [default: {shown}, or the preset's]")  # fmt: skip


def config_options(func: Callable) -> Callable:
    """Add an option for every model and training option (options.MODEL_OPTIONS, TRAIN_OPTIONS)."""
    fields = [(ModelConfig, f) for f in dataclasses.fields(ModelConfig) if f.name in MODEL_OPTIONS]
    fields += [(TrainConfig, f) for f in dataclasses.fields(TrainConfig) if f.name in TRAIN_OPTIONS]
    for config, field in reversed(fields):
        func = _config_option(config, field)(func)
    return func


@click.command(
    cls=OneLineCommand,
    needs=("torch",),
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", message="%(prog)s %(version)s")
@click.argument("corpus", nargs=-1, required=True)
@click.option(
    "-o", "--out", type=click.Path(readable=False), required=True, help="Checkpoint to write (and to --resume from)."
)
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default=None,
    help=f"Model sizes and settings to start from; the options below override it.  [default: {DEFAULT_PRESET}]",
)
@config_options
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

    With --minutes N the run fits itself to N minutes of wall-clock time: after a few steps it measures the
    step time and one validation, then sets --steps (the cosine schedule follows it) and, unless given,
    --eval-every and --val-chars, and says so in one line.  --resume finishes the fitted schedule.

    Writes OUT (the resumable checkpoint), OUT.best.pt (weights with the best
    validation score), OUT.metrics.jsonl and OUT.png (loss curves) beside it.
    """
    started = budget.clock()  # --minutes counts from here: PyTorch's import and the corpus's preparation included
    require_extra("vrnn-train", "torch")
    from vrnn.training.launch import train_from_cli  # PyTorch from here on

    flags = (resume, force, allow_corpus_change)
    train_from_cli(corpus, out, preset, device, threads, flags, quiet, options, started=started)


if __name__ == "__main__":
    main()
