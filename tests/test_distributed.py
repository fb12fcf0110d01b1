"""torchrun + DistributedDataParallel: 2 CPU processes (gloo on 127.0.0.1) follow a 1-process run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import bin_path

from vrnn.models.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # every test starts torchrun processes that train

# Tiny model, 20 steps, dropout on so that sharding of the masks is exercised too.
COMMON = ["--preset", "tiny", "--seq-len", "16", "--steps", "20", "--eval-every", "10", "--seed", "3",
          "--dropout", "0.2", "-q"]  # fmt: skip
RELATIVE_TOLERANCE = 1e-4  # float sums in another order (two local means, then an all-reduce)


def torchrun(nproc: int, *args: str, timeout: float = 240, cache: Path | None = None) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node=N vrnn-train ...` with one thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **({"VRNN_CACHE": str(cache)} if cache else {})}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               bin_path("vrnn-train"), *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([bin_path("vrnn-train"), *args, "--threads", "1"], capture_output=True, text=True)


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ddp")
    single, double = out / "single.pt", out / "double.pt"
    one = train(str(tiny_corpus), "-o", str(single), "--batch-size", "8", *COMMON)
    assert one.returncode == 0, one.stderr
    two = torchrun(2, str(tiny_corpus), "-o", str(double), "--batch-size", "4", *COMMON)
    assert two.returncode == 0, two.stderr[-3000:]
    return {"single": single, "double": double, "dir": out, "two_stderr": two.stderr}


def test_two_processes_match_one_with_the_same_global_batch(runs: dict[str, Path]) -> None:
    a, b = load_checkpoint(runs["single"]), load_checkpoint(runs["double"])
    assert a["train_config"]["batch_size"] == b["train_config"]["batch_size"] == 8  # the global batch
    for row_a, row_b in zip(a["metrics"]["history"], b["metrics"]["history"], strict=True):
        assert row_a["step"] == row_b["step"]
        for key in ("train_loss", "train_nll", "train_kl", "val_elbo_nats"):
            assert relative(row_a[key], row_b[key]) < RELATIVE_TOLERANCE, (row_a["step"], key, row_a[key], row_b[key])
    for name, weight in a["model"].items():
        assert torch.allclose(weight, b["model"][name], rtol=RELATIVE_TOLERANCE, atol=1e-6), name
    # Generator states advance identically: the checkpoints are interchangeable.
    assert torch.equal(a["rng"]["data"], b["rng"]["data"])
    assert torch.equal(a["rng"]["noise"], b["rng"]["noise"])


def test_only_rank_0_writes_and_reports(runs: dict[str, Path]) -> None:
    lines = [line for line in runs["two_stderr"].splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 10/20", "step 20/20"]  # once, not once per rank
    files = sorted(p.name for p in runs["dir"].iterdir() if p.name.startswith("double"))
    assert files == ["double.best.pt", "double.metrics.jsonl", "double.png", "double.pt"]


def test_checkpoints_resume_across_process_counts(runs: dict[str, Path], tiny_corpus: Path) -> None:
    """A 2-process checkpoint continues in one process and a 1-process one under torchrun, as the same run."""
    longer = [*COMMON[: COMMON.index("--steps")], "--steps", "30", *COMMON[COMMON.index("--steps") + 2 :]]
    one = train(str(tiny_corpus), "-o", str(runs["double"]), "--resume", *longer)
    assert one.returncode == 0, one.stderr
    two = torchrun(2, str(tiny_corpus), "-o", str(runs["single"]), "--resume", *longer)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = load_checkpoint(runs["single"]), load_checkpoint(runs["double"])
    assert a["step"] == b["step"] == 30
    for name, weight in a["model"].items():
        assert torch.allclose(weight, b["model"][name], rtol=RELATIVE_TOLERANCE, atol=1e-6), name


def test_a_failing_rank_ends_the_run_with_a_message(tiny_corpus: Path, tmp_path: Path) -> None:
    """A global batch the processes cannot share fails on every rank at once, with a one-line reason."""
    proc = torchrun(2, str(tiny_corpus), "-o", str(tmp_path / "x.pt"), "--batch-size", "0", *COMMON, timeout=120)
    assert proc.returncode != 0
    assert "--batch-size must be at least 1" in proc.stderr
    assert not (tmp_path / "x.pt").exists()


def test_the_ranks_build_one_token_file_and_share_it(tmp_path: Path, tiny_corpus: Path) -> None:
    """Both ranks start on a corpus no token file exists for: one builds it while the other waits, and
    both train from the same file."""
    corpus = tmp_path / "fresh.txt"
    corpus.write_text(tiny_corpus.read_text(encoding="utf-8") * 2, encoding="utf-8")
    cache = tmp_path / "cache"
    run = torchrun(2, str(corpus), "-o", str(tmp_path / "m.pt"), "--batch-size", "4", *COMMON, cache=cache)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(list((cache / "tokens").glob("*.tokens"))) == 1
    assert len(list((cache / "tokens").glob("sources-*.json"))) == 1
