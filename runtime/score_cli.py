"""`vrnn-score CELL TEXT`: score a text with an exported cell, onnxruntime only (vrnn.runtime.scoring)."""

from __future__ import annotations

import json
import math
import os
import time

import click

from vrnn import __version__
from vrnn.runtime.cell import OnnxCell
from vrnn.runtime.cli import require_stdout
from vrnn.runtime.commands import OneLineCommand, cli_errors
from vrnn.runtime.errors import UsageError, VrnnError
from vrnn.runtime.inputs import check_input_file
from vrnn.runtime.limits import check_seed, check_threads
from vrnn.runtime.scoring import score_cell
from vrnn.runtime.splits import SPLITS, split_bounds
from vrnn.runtime.vocab import describe_unknown

MAX_SAMPLES = 4096


def check_text(path: str) -> None:
    """Refuse a TEXT that exists but is not a regular file (a FIFO, a socket, a device, a directory) before
    anything opens it (vrnn.runtime.inputs); a missing or unreadable one is left to the read, which says so."""
    if os.path.exists(path):
        check_input_file(path, "text")


def read_text(path: str) -> str:
    """A UTF-8 text file's contents, or one line that says why not."""
    check_text(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise VrnnError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VrnnError(f"{path} is not UTF-8 text (invalid byte at offset {exc.start})") from None


# vrnn-score's and vrnn-eval's --split: which part of TEXT is scored (text_to_score).
split_option = click.option(
    "--split",
    type=click.Choice(SPLITS),
    default="all",
    show_default=True,
    help="Score the whole text, its first 90% or last 10% (vrnn-train's split), or either half of that 10%.",
)


def text_to_score(content: str, split: str, start_char: str) -> tuple[str, str]:
    """(context character, text to score) of `content` for --split, as vrnn-eval takes them."""
    start, end = split_bounds(len(content), split)
    if start > 0:  # a part after the text's start: the character before it is its context
        return content[start - 1 : start], content[start:end]
    return start_char, content[:end]


def unknown_message(text: str, content: str, unknown: set[str], cell: str) -> str:
    """The one-line refusal of a text with characters the cell lacks: how many, which, their share of the text,
    and what to do (vrnn-score has no way to skip them: a cell of a model trained on the text is the answer)."""
    kinds, which = describe_unknown(unknown, sum(content.count(c) for c in unknown) / max(1, len(content)))
    return (
        f"{text} has {kinds} outside the model's vocabulary ({which}): {cell} was not "
        "trained on this text; score a cell exported from a model trained on it (vrnn-train, then vrnn-export)"
    )


@click.command(cls=OneLineCommand, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", message="%(prog)s %(version)s")
@click.argument("cell", type=click.Path(readable=False))
@click.argument("text", type=click.Path(readable=False))
@split_option
@click.option("--window", "-w", type=int, default=256, show_default=True, help="Characters per window.")
@click.option("--samples", "-k", type=int, default=8, show_default=True, help="Latent noise sequences per window.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the latent noise.")
@click.option("--threads", type=int, default=None, help="Intra-op threads.  [default: every core]")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@cli_errors
def main(
    cell: str, text: str, split: str, window: int, samples: int, seed: int, threads: int | None, as_json: bool
) -> None:
    """Score TEXT with CELL: nats per character of the teacher-forced likelihood with the latent drawn from
    the prior, K noise sequences per window (an importance-weighted bound with the prior as proposal).

    Every cell of one model (float32, float16, int8) gets the same noise for the same --seed, so the
    difference between their scores is the cost of the weight format.  Needs onnxruntime only.
    """
    if not 1 <= window <= 1 << 20:
        raise UsageError(f"--window must be from 1 to {1 << 20}, got {window}")
    if not 1 <= samples <= MAX_SAMPLES:
        raise UsageError(f"--samples must be from 1 to {MAX_SAMPLES}, got {samples}")
    check_seed(seed)
    check_threads(threads)
    require_stdout()
    check_text(text)  # before the cell is loaded: a refusal should not wait for that
    scorer = OnnxCell(cell, threads=threads, batch=256)
    context, scored = text_to_score(read_text(text), split, scorer.start_char)
    if not scored or not context:
        raise VrnnError(f"{text} leaves nothing to score in --split {split}")
    unknown = scorer.vocab.unknown(context + scored)
    if unknown:
        raise VrnnError(unknown_message(text, scored, unknown, cell))
    ids = scorer.vocab.encode(context + scored, text)
    started = time.perf_counter()
    score = score_cell(scorer, ids, window, samples, seed)
    if not all(math.isfinite(v) for v in (score.iw_nats, score.mean_nats)):
        raise VrnnError(f"{cell} gives non-finite scores on {text}: its weights are broken")
    result = {"cell": cell, "weights": scorer.info.weights, "text": text, "split": split, **score.summary()}
    result["seconds"] = time.perf_counter() - started
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(
        f"{cell} ({scorer.info.weights}) on {text} ({split}): {score.chars:,} characters, windows of {window}, "
        f"K = {samples}, seed {seed}\n"
        f"  -IW-{samples} (prior proposal): {score.iw_nats:.4f} nats/char "
        f"= {score.iw_nats / math.log(2):.4f} bits/char\n"
        f"  mean teacher-forced NLL:      {score.mean_nats:.4f} nats/char"
    )


if __name__ == "__main__":
    main()
