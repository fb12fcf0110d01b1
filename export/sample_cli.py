"""`vrnn-sample CKPT`: sample text with the PyTorch model (the reference path for vrnn-run)."""

from __future__ import annotations

import os

import click

from vrnn import __version__
from vrnn.runtime.cli import emit_samples, sampling_options
from vrnn.runtime.commands import OneLineCommand, cli_errors, require_extra
from vrnn.runtime.sampler import Sampler

# PyTorch's step at batch 1 is all per-operation overhead, which more threads only add to: every core
# from this many samples on, one thread below.
MULTI_THREAD_BATCH = 32


def torch_threads(batch: int) -> int:
    """Torch threads for sampling `batch` samples at once (vrnn-sample's default)."""
    return 1 if batch < MULTI_THREAD_BATCH else max(1, os.cpu_count() or 1)


def _torch_sampler(checkpoint: str, threads: int) -> Sampler:
    require_extra("vrnn-sample", "torch")
    from vrnn.export.torch_cell import torch_sampler  # here, not at the top: `--help` works without PyTorch

    return torch_sampler(checkpoint, threads)


@click.command(cls=OneLineCommand, needs=("torch",), context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", message="%(prog)s %(version)s")
@click.argument("checkpoint", type=click.Path(readable=False))
@sampling_options("Torch CPU threads.  [default: 1 below 32 samples, every core from 32 on]")
@cli_errors
def main(checkpoint: str, out: str | None, threads: int | None, **settings: object) -> None:
    """Sample text from CHECKPOINT with PyTorch.

    Same options and, for the same --seed, the same text as vrnn-run on the cell
    exported from this checkpoint.
    """
    emit_samples(
        lambda n, batch: _torch_sampler(checkpoint, n or torch_threads(batch)),
        out,
        threads,
        {"CHECKPOINT": checkpoint},
        **settings,
    )


if __name__ == "__main__":
    main()
