"""Data-parallel training under torchrun: process group, batch sharding and cross-rank agreement.

Under `torchrun --nproc-per-node=N`, every process draws the *whole* global batch
(windows, latent noise, dropout masks) from identically seeded generators and
keeps its own slice.  With equal slices, DistributedDataParallel's gradient
average is the gradient of the global mean, so N processes follow the same
trajectory as one process with the global batch, and every process holds the
same generator states: a checkpoint from either kind of run resumes in the other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from vrnn.runtime.errors import VrnnError

# A rank that dies is noticed by torchrun, which stops the others; this bounds the wait
# of a collective when that cannot happen (e.g. a rank stuck in I/O).
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class Distribution:
    """This process's place in the run: rank 0 of 1 when not under torchrun."""

    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints, metrics, plots and progress."""
        return self.rank == 0

    def local_slice(self, global_batch: int) -> slice:
        """This rank's share of a global batch (which the world size divides)."""
        local = global_batch // self.world_size
        return slice(self.rank * local, (self.rank + 1) * local)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Average a small tensor over ranks (identity for one process)."""
        if not self.enabled:
            return values
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values / self.world_size

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if it is true on any (e.g. Ctrl-C reached only some processes)."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)


def under_torchrun() -> bool:
    """True when torchrun (or another launcher setting WORLD_SIZE > 1) started this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distribution(device: torch.device) -> tuple[Distribution, torch.device]:
    """Join the process group when launched by torchrun: gloo on CPU, nccl on CUDA (one GPU per process)."""
    if not under_torchrun():
        return Distribution(), device
    if not dist.is_available():
        raise VrnnError("this PyTorch build has no torch.distributed: run without torchrun")
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
    return Distribution(dist.get_rank(), dist.get_world_size()), device


def shutdown_distribution(wait_for_peers: bool) -> None:
    """Leave the process group (no-op for one process).

    After a successful run every rank first waits for the others: rank 0 finishes
    last (it writes the checkpoint and plot), and a peer that tears down its gloo
    connections while rank 0's are still open made rank 0 abort at exit
    ("terminate called without an active exception", about one run in three
    when rank 0 was 3 s behind).  After a failure there is no waiting: the other
    ranks may be inside a different collective, and torchrun stops them anyway.
    """
    if dist.is_available() and dist.is_initialized():
        if wait_for_peers:
            dist.barrier()
        dist.destroy_process_group()
