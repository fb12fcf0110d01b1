"""`vrnn-eval TEXT`: score a text with a checkpoint (ELBO, IWAE-K, KL/char, active units)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
import numpy as np

from vrnn import __version__
from vrnn.runtime.atomic import check_writable_destination, refuse_overwriting_inputs
from vrnn.runtime.bundled import bundled_file
from vrnn.runtime.cli import require_stdout
from vrnn.runtime.commands import OneLineCommand, cli_errors, require_extra
from vrnn.runtime.errors import UsageError, VrnnError
from vrnn.runtime.limits import check_seed
from vrnn.runtime.schema import DEFAULT_START_CHAR
from vrnn.runtime.score_cli import split_option
from vrnn.runtime.splits import split_bounds
from vrnn.runtime.vocab import Vocabulary, describe_unknown
from vrnn.training.config import TrainConfig

MAX_IWAE_SAMPLES = 4096
TRANSLATE_SLICE = 1 << 24  # token ids translated at a time into the model's numbering


def in_model_ids(ids: np.ndarray, text_vocab: Vocabulary, model_vocab: Vocabulary) -> tuple[np.ndarray, int]:
    """A text's token ids (its own vocabulary) in the model's numbering, without the characters the model
    lacks; and how many were dropped.  The same vocabulary: the ids as they are (a memory map stays one)."""
    if text_vocab == model_vocab:
        return ids, 0
    index = {c: i for i, c in enumerate(model_vocab.chars)}
    table = np.array([index.get(c, -1) for c in text_vocab.chars], np.int32)
    out = np.empty(len(ids), np.uint16 if len(model_vocab) > 256 else np.uint8)
    filled = 0
    for start in range(0, len(ids), TRANSLATE_SLICE):
        part = ids[start : start + TRANSLATE_SLICE]
        if len(part) and int(part.max()) >= len(table):  # a damaged token file: never an IndexError
            raise VrnnError(f"the text's token file holds character id {int(part.max())}, outside its vocabulary")
        mapped = table[part]
        mapped = mapped[mapped >= 0]
        out[filled : filled + len(mapped)] = mapped
        filled += len(mapped)
    return out[:filled], len(ids) - filled


def windowed_pieces(ids: np.ndarray, split: str, start: int, window: int) -> list[np.ndarray]:
    """The context id and the ids to score for --split, as score_text's pieces: for a part that starts after
    the text's start, a view from its preceding character; otherwise the start character's window, then a view
    of the rest, cut where the windows of the whole would be cut (so the scores are those of one contiguous
    array)."""
    begin, end = split_bounds(len(ids), split)
    if begin > 0:
        piece = ids[begin - 1 : end]
        return [piece] if len(piece) >= 2 else []
    text = ids[:end]
    if len(text) == 0:
        return []
    first = np.concatenate([np.array([start], text.dtype), text[:window]])
    rest = text[window - 1 :]
    return [first, rest] if len(rest) >= 2 else [first]


def unknown_message(
    text: str, unknown: set[str], counts: list[int] | None, text_vocab: Vocabulary, checkpoint: str | None
) -> str:
    """The one-line refusal of a text with characters the model lacks: how many, which, what share of the text
    they are (`counts`: the token file's count of each of `text_vocab`'s characters), and what to do: a model
    trained on the text first, since --skip-unknown drops the text's own characters."""
    share = None
    if counts and len(counts) == len(text_vocab) and sum(counts) > 0:
        share = sum(n for c, n in zip(text_vocab.chars, counts, strict=True) if c in unknown) / sum(counts)
    kinds, which = describe_unknown(unknown, share)
    if checkpoint is None:
        return (
            f"{text} has {kinds} the bundled Shakespeare model does not know ({which}): "
            "score a model trained on this text with -c CKPT, or drop them with --skip-unknown"
        )
    return (
        f"{text} has {kinds} {Path(checkpoint).name} does not know ({which}): score it "
        "with a model trained on this text, or drop them with --skip-unknown"
    )


@click.command(
    cls=OneLineCommand,
    needs=("torch",),
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", message="%(prog)s %(version)s")
@click.argument("text")
@click.option(
    "--checkpoint", "-c", type=click.Path(readable=False), default=None, help="Checkpoint.  [default: bundled model]"
)
@split_option
@click.option("--window", "-w", type=int, default=None, help="Predicted characters per window.  [default: training's]")
@click.option("--iwae-samples", "-k", type=int, default=1, show_default=True, help="Latent trajectories per window.")
@click.option(
    "--estimator",
    type=click.Choice(["iwae", "smc"]),
    default="iwae",
    show_default=True,
    help="The bound made of the K trajectories: importance-weighted (IWAE-K), or sequential Monte Carlo "
    "(K particles resampled when their effective number falls below K/2: tighter when the latent carries much).",
)
@click.option("--batch-size", type=int, default=64, show_default=True, help="Trajectories per forward pass.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the encoder noise.")
@click.option("--skip-unknown", is_flag=True, help="Drop characters outside the vocabulary instead of refusing.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@click.option("--plot", type=click.Path(readable=False), default=None, help="Draw per-character NLL and KL to a PNG.")
@click.option("--plot-chars", type=int, default=120, show_default=True, help="Characters of the passage in --plot.")
@click.option("--threads", type=int, default=None, help="Torch CPU threads.  [default: all cores]")
@cli_errors
def main(
    text: str,
    checkpoint: str | None,
    split: str,
    window: int | None,
    iwae_samples: int,
    estimator: str,
    batch_size: int,
    seed: int,
    skip_unknown: bool,
    as_json: bool,
    plot: str | None,
    plot_chars: int,
    threads: int | None,
) -> None:
    """Score TEXT (a UTF-8 file, or 'tinyshakespeare') with a trained VRNN.

    Reports the negative ELBO and the importance-weighted bound IWAE-K (K latent
    trajectories per window from the encoder; with --estimator smc, the sequential
    Monte Carlo bound with K particles beside IWAE-1), in nats and bits per character, the
    KL per character and the number of active latent units (by average KL > 0.01 nats,
    and by posterior-mean variance across the text > 0.01), and a smoothing posterior's
    auxiliary cost apart from the bounds.

    The text is cut into consecutive windows of --window predicted characters; each
    window starts from the zero state with the character before it as context, so
    every character is scored once (the first from the model's start character, or
    for --split val from the last training character).
    """
    for name, value, low in (("--iwae-samples", iwae_samples, 1), ("--batch-size", batch_size, 1)):
        if value < low:
            raise UsageError(f"{name} must be at least {low}, got {value}")
    if iwae_samples > MAX_IWAE_SAMPLES:
        raise UsageError(f"--iwae-samples must be at most {MAX_IWAE_SAMPLES}, got {iwae_samples}")
    if window is not None and window < 1:
        raise UsageError(f"--window must be at least 1, got {window}")
    if plot_chars < 1:
        raise UsageError(f"--plot-chars must be at least 1, got {plot_chars}")
    check_seed(seed)
    require_extra("vrnn-eval", "torch")

    from vrnn.models.bundled import BUNDLED_CHECKPOINT
    from vrnn.models.checkpoint import load_checkpoint, model_from_checkpoint
    from vrnn.training.corpus import resolve_corpus
    from vrnn.training.evaluation import latent_verdict, score_text
    from vrnn.training.plot import draw_passage, matplotlib_available
    from vrnn.training.smc import smc_text
    from vrnn.training.tokens import prepare_tokens
    from vrnn.training.torch_settings import flushed_denormals, set_torch_threads

    set_torch_threads(threads)
    require_stdout()
    if plot is not None:
        if not matplotlib_available():
            raise VrnnError("--plot needs matplotlib: pip install 'vrnn[plot]'")
        check_writable_destination(plot)

    ckpt_path = Path(checkpoint) if checkpoint is not None else bundled_file(BUNDLED_CHECKPOINT, "--checkpoint")
    refuse_overwriting_inputs({"--plot": plot}, {"TEXT": text, "--checkpoint": ckpt_path})
    model_name = ckpt_path.name if checkpoint is not None else "the bundled model"
    payload = load_checkpoint(ckpt_path)
    model, vocab = model_from_checkpoint(payload)
    if window is None:
        window = TrainConfig.from_dict(payload.get("train_config", {})).seq_len
    if Path(text).is_dir():
        raise VrnnError(f"corpus is a directory, not a file: {text}")
    tokens = prepare_tokens(resolve_corpus(text))  # encoded once, then memory-mapped: texts of any size
    unknown = vocab.unknown("".join(tokens.vocab.chars))
    if unknown and not skip_unknown:
        raise VrnnError(unknown_message(text, unknown, tokens.meta.get("counts"), tokens.vocab, checkpoint))
    content, dropped = in_model_ids(tokens.ids, tokens.vocab, vocab)
    start = vocab.chars.index(payload.get("start_char", DEFAULT_START_CHAR))
    pieces = windowed_pieces(content, split, start, window)
    if not pieces:
        raise VrnnError(f"{text} leaves nothing to score in --split {split}")
    with flushed_denormals():  # as in training: denormals only cost time
        # With SMC the ELBO, KL and active units come from one trajectory per window; the bound from K particles.
        samples = 1 if estimator == "smc" else iwae_samples
        score = score_text(model, pieces, window, samples, batch_size, seed, keep_chars=plot_chars)
        smc = smc_text(model, pieces, window, iwae_samples, batch_size, seed) if estimator == "smc" else None

    if not all(math.isfinite(v) for v in (score.elbo, score.iwae, score.nll, score.kl)):
        raise VrnnError(f"{model_name} gives non-finite scores on {text} (NaN or infinity): its weights are broken")
    if plot is not None:
        shown = min(plot_chars, score.chars)
        # the first characters scored: after each piece's context id (two pieces hold more than a window)
        scored = vocab.decode(np.concatenate([np.asarray(p[1 : shown + 1]) for p in pieces[:2]])[:shown])
        title = f"{model_name} on {Path(text).name} ({split})"
        draw_passage(scored, score.char_nll[:shown], score.char_kl[:shown], plot, title)

    result = {"text": text, "split": split, "checkpoint": str(ckpt_path), "skipped_chars": dropped, **score.summary(),
              "latent_verdict": latent_verdict(score)}  # fmt: skip
    if smc is not None:
        result.update(smc_particles=smc.particles, smc_nats=smc.smc, smc_bits=smc.smc / math.log(2),
                      smc_resampling_rate=smc.resampling_rate)  # fmt: skip
    if as_json:
        click.echo(json.dumps(result, indent=2, allow_nan=False))
        return
    k = score.iwae_samples
    lines = [
        f"{model_name} on {text} ({split}): {score.chars:,} characters, windows of {score.window}, "
        f"{k} sample{'s' if k > 1 else ''} per window" + (f", {dropped} unknown characters skipped" if dropped else ""),
        f"  -ELBO        {score.elbo:.4f} nats/char  {score.elbo_bits:.4f} bits/char",
        f"  -IWAE-{k:<6d} {score.iwae:.4f} nats/char  {score.iwae_bits:.4f} bits/char",
        f"  NLL term     {score.nll:.4f} nats/char",
        f"  KL term      {score.kl:.4f} nats/char  {score.kl / math.log(2):.4f} bits/char",
        f"  active units {score.active_units_kl} of {score.latent_size} by KL (> 0.01 nats/char each), "
        f"{score.active_units} by posterior-mean variance (> 0.01)",
        f"  latent       {latent_verdict(score)}",
    ]
    if smc is not None:
        lines.insert(3, f"  -SMC-{smc.particles:<7d} {smc.smc:.4f} nats/char  {smc.smc / math.log(2):.4f} bits/char  "
                        f"(resampled at {smc.resampling_rate:.1%} of steps)")  # fmt: skip
    if score.aux is not None:
        lines.append(f"  aux cost     {score.aux:.4f} nats per backward-state dimension (not part of the bounds)")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
