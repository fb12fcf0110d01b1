"""Crash safety and safe loading: Ctrl-C, SIGKILL, hostile and foreign checkpoints."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import bin_path, default_stop_signals

from vrnn.models.checkpoint import load_checkpoint, save_checkpoint
from vrnn.runtime.errors import VrnnError

TRAIN_ARGS = ["--preset", "tiny", "--steps", "100000", "--seq-len", "16", "--eval-every", "3", "--threads", "1", "-q"]


def start_training(corpus: Path, ckpt: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [bin_path("vrnn-train"), str(corpus), "-o", str(ckpt), *TRAIN_ARGS, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_stop_signals,
    )


def wait_for(proc: subprocess.Popen, path: Path, timeout: float = 60.0, newer_than: float = 0.0) -> None:
    """Wait until `path` exists and was written after `newer_than` (an mtime)."""
    deadline = time.monotonic() + timeout
    while not path.exists() or path.stat().st_mtime_ns <= newer_than:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_130(tmp_path: Path, tiny_corpus: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    proc = start_training(tiny_corpus, ckpt)
    wait_for(proc, ckpt)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert load_checkpoint(ckpt)["step"] >= 3


@pytest.mark.slow
def test_sigkill_at_random_moments_always_leaves_a_loadable_checkpoint(tmp_path: Path, tiny_corpus: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    rng = random.Random(0)
    steps = []
    for attempt in range(10):
        written = ckpt.stat().st_mtime_ns if ckpt.exists() else 0
        proc = start_training(tiny_corpus, ckpt, *(["--resume"] if attempt else []))
        wait_for(proc, ckpt, newer_than=written)  # this run has saved at least once: it is mid-training
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.wait(timeout=30)
        steps.append(load_checkpoint(ckpt)["step"])  # raises if torn
    assert steps == sorted(steps) and steps[-1] > steps[0]  # resumed runs kept making progress


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.slow
def test_hostile_and_foreign_checkpoints_are_refused(tmp_path: Path) -> None:
    good = {"format": "vrnn-checkpoint", "version": 1}
    cases = {}
    (tmp_path / "code.pt").write_bytes(pickle.dumps({"format": "vrnn-checkpoint", "x": _Exploit()}))
    cases["code.pt"] = "pickled objects"
    torch.save({"format": "vrnn-checkpoint", "version": 99}, tmp_path / "newer.pt")
    cases["newer.pt"] = "version 99"
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    cases["foreign.pt"] = "not a vrnn checkpoint"
    (tmp_path / "text.pt").write_text("hello")
    cases["text.pt"] = "not a readable vrnn checkpoint"
    save_checkpoint(tmp_path / "full.pt", {**good, "model_config": {}, "vocab": [], "start_char": "\n"})
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    cases["truncated.pt"] = "not a readable vrnn checkpoint"
    cases["full.pt"] = "missing checkpoint fields"
    for name, message in cases.items():
        with pytest.raises(VrnnError, match=message):
            load_checkpoint(tmp_path / name)
        result = subprocess.run(
            [bin_path("vrnn-sample"), str(tmp_path / name), "-n", "5"], capture_output=True, text=True
        )
        assert result.returncode == 1 and message in result.stderr, (name, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and "pwned" not in result.stdout


@pytest.mark.slow
def test_resume_with_a_different_corpus_is_refused(tmp_path: Path, trained: dict[str, Path]) -> None:
    other = tmp_path / "other.txt"
    other.write_text("completely different text with new letters: xyzq 12345\n" * 20)
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(trained["checkpoint"].read_bytes())
    before = ckpt.read_bytes()
    result = subprocess.run([bin_path("vrnn-train"), str(other), "-o", str(ckpt), "--resume"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1 and "vocabulary" in result.stderr, result.stderr
    assert ckpt.read_bytes() == before


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vrnn.training import trainer
    from vrnn.training.cli import main as train_main

    real_loss = trainer.training_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss, *rest = real_loss(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan"), *rest) if calls["n"] == 7 else (loss, *rest)

    monkeypatch.setattr(trainer, "training_loss", poisoned)
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(SystemExit) as exit_info:
        train_main([str(tiny_corpus), "-o", str(ckpt), *TRAIN_ARGS], standalone_mode=False)
    assert exit_info.value.code == 1
    assert "non-finite loss at step 7" in capsys.readouterr().err
    assert load_checkpoint(ckpt)["step"] == 6  # saved at step 6, untouched by the failed step 7
