"""`vrnn-run`: sample text from an exported cell with onnxruntime only.

The option set and output handling are shared with `vrnn-sample` (the PyTorch
path), which imports `sampling_options` and `emit_samples` from here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import IO, Any

import click

from vrnn import __version__
from vrnn.runtime.atomic import atomic_write, check_writable_destination, refuse_overwriting_inputs
from vrnn.runtime.bundled import BUNDLED_CELL, bundled_file
from vrnn.runtime.commands import OneLineCommand, cli_errors
from vrnn.runtime.errors import VrnnError
from vrnn.runtime.limits import check_threads
from vrnn.runtime.sampler import Sampler

RUN_THREADS_HELP = (
    "Intra-op threads.  [default: every core once a step's matrix products reach 500k multiply-adds "
    "(weights x samples), else 1]"
)


def sampling_options(threads_help: str) -> Callable[[Callable], Callable]:
    """The options common to vrnn-run and vrnn-sample (`threads_help`: how each picks its thread count)."""
    return lambda func: _with_sampling_options(func, threads_help)


def _with_sampling_options(func: Callable, threads_help: str) -> Callable:
    options = [
        click.option(
            "--length", "-n", type=int, default=500, show_default=True, help="Characters to generate (after the prime)."
        ),
        click.option("--prime", default="", help="Text to start from; it is printed, then continued."),
        click.option(
            "--temperature", "-t", type=float, default=1.0, show_default=True, help="Divide logits by T (> 0)."
        ),
        click.option("--top-k", type=int, default=None, help="Sample only from the K most likely characters."),
        click.option(
            "--top-p", type=float, default=None, help="Sample only from the smallest set with probability >= P."
        ),
        click.option(
            "--greedy",
            is_flag=True,
            help="Always take the most likely character (the latent still varies with the seed: see below).",
        ),
        click.option(
            "--latent-temperature",
            type=float,
            default=1.0,
            show_default=True,
            help="Scale the latent noise, 0 to 100: 0 = the prior's mean (with --greedy: the same text for every "
            "seed).",
        ),
        click.option(
            "--stop",
            multiple=True,
            help="End the text just before this string (up to 4; a newline from a shell: --stop $'\\n\\n').",
        ),
        click.option("--seed", type=int, default=None, help="Seed for numpy's default_rng; same seed, same text."),
        click.option(
            "--num-samples", type=int, default=1, show_default=True, help="Independent samples, run as one batch."
        ),
        click.option(
            "--threads",
            type=int,
            default=None,
            help=threads_help,
        ),
        click.option(
            "-o",
            "--out",
            type=click.Path(readable=False),
            default=None,
            help="Write to FILE (atomically) instead of stdout.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _samples(sampler: Sampler, settings: dict[str, Any]) -> Callable[[IO[str], bool], None]:
    """Validate the request (every option, before anything is written or a file created) and return the
    writer of its samples: `write(sink, interactive)`.  One sample streams; several are made at once."""
    request = dict(settings)
    length, prime, seed, num_samples = (request.pop(k) for k in ("length", "prime", "seed", "num_samples"))
    request["stop"] = list(request.get("stop") or ()) or None
    if num_samples == 1:
        chars = sampler.stream(length, prime, seed=seed, **request)  # the rest of `request`: sampling options

        def write_one(sink: IO[str], interactive: bool) -> None:
            sink.write(prime)
            for char in chars:
                sink.write(char)
                if interactive or char == "\n":
                    sink.flush()
            sink.write("\n")

        return write_one
    texts = sampler.generate(length, prime, seed=seed, num_samples=num_samples, **request)

    def write_all(sink: IO[str], interactive: bool) -> None:
        for i, text in enumerate(texts, 1):
            sink.write(f"--- sample {i}/{num_samples} ---\n{text}\n")

    return write_all


def require_stdout() -> None:
    """Refuse to start when standard output is closed (`>&-`): the results would go nowhere, and the first
    file the command opened would take descriptor 1."""
    try:
        os.fstat(1)
        closed = sys.stdout is None
    except OSError:
        closed = True
    if closed:
        raise VrnnError("standard output is closed: nothing could be written (use -o FILE, or open it)")


def emit_samples(
    sampler_factory: Callable[[int | None, int], Sampler],
    out: str | None,
    threads: int | None,
    inputs: dict[str, str],
    **settings: Any,
) -> None:
    """Validate the options, build the sampler and write the samples to stdout or `out`.

    `sampler_factory(threads, batch)` builds the sampler; `threads` None asks it for its default
    for `batch` samples at once.  `inputs` names the files the sampler reads, which `out` must not be.
    """
    check_threads(threads)
    if out is None:
        require_stdout()
    else:
        check_writable_destination(out)
        refuse_overwriting_inputs({"-o": out}, inputs)
    num_samples = settings["num_samples"]
    sampler = sampler_factory(threads, num_samples if isinstance(num_samples, int) else 1)
    write = _samples(sampler, settings)
    if out is not None:
        with atomic_write(out, "w") as handle:
            write(handle, False)
        return
    sys.stdout.flush()
    try:
        # UTF-8 whatever the locale says.
        with open(sys.stdout.fileno(), "w", encoding="utf-8", closefd=False) as stdout:
            write(stdout, sys.stdout.isatty())
    except BrokenPipeError:  # `vrnn-run ... | head` is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@click.command(cls=OneLineCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", message="%(prog)s %(version)s")
@click.argument("cell", type=click.Path(readable=False), required=False)
@sampling_options(RUN_THREADS_HELP)
@cli_errors
def main(cell: str | None, out: str | None, threads: int | None, **settings: object) -> None:
    """Sample text from CELL, a vrnn cell exported by vrnn-export (onnxruntime only).

    Without CELL, samples from the bundled Tiny Shakespeare model. Text streams to
    stdout as it is generated. The same --seed and options give the same text every
    time, and the same text as vrnn-sample on the checkpoint the cell came from.
    """
    path = cell if cell is not None else str(bundled_file(BUNDLED_CELL, "a CELL argument"))
    # threads None: the cell's size and the batch decide (see default_threads)

    def build(n: int | None, batch: int) -> Sampler:
        return Sampler.from_onnx(path, threads=n, batch=batch)

    emit_samples(build, out, threads, {"CELL": path}, **settings)


if __name__ == "__main__":
    main()
