"""Process-wide PyTorch settings that training and scoring share: threads, denormal flushing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from vrnn.runtime.limits import check_threads


def set_torch_threads(threads: int | None) -> None:
    """Apply --threads (None: torch's default, all cores), refusing values below 1."""
    check_threads(threads)
    if threads is not None:
        torch.set_num_threads(threads)


@contextmanager
def flushed_denormals() -> Iterator[None]:
    """Denormal floats (tiny gradients late in a run) cost CPUs many times a normal operation's time: a small
    GRU run stalled about 5x without flushing them to zero, which changes no score we report.  The setting is
    the process's (the CPU's control register), so it is restored on the way out."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)
