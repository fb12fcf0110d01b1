"""Resume from any checkpoint: the first validation's, a killed run's; best.pt and metrics stay true to the run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from vrnn.models.checkpoint import load_checkpoint, save_checkpoint
from vrnn.training.cli import main as train_main

COMMON = ["--preset", "tiny", "--seq-len", "16", "--seed", "5", "--quiet", "--threads", "1"]


# A run cut short and extended is the same run only when nothing depends on --steps (the cosine schedule and
# the KL warm-up's cap at half the run do).
SAME_RUN = ["--lr-schedule", "constant", "--kl-anneal-steps", "0"]


def train(corpus: Path, out: Path, *args: str) -> None:
    train_main([str(corpus), "-o", str(out), *COMMON, *args], standalone_mode=False)


def metrics_rows(ckpt: Path) -> list[dict]:
    return [json.loads(line) for line in ckpt.with_name(ckpt.stem + ".metrics.jsonl").read_text().splitlines()]


def test_resume_from_the_first_validations_checkpoint(tmp_path: Path, tiny_corpus: Path) -> None:
    """A run shorter than --eval-every validates once, at its end; that checkpoint must resume (it used to
    record best_val_elbo_nats = None and crash the resume with a TypeError)."""
    ckpt = tmp_path / "ckpt.pt"
    train(tiny_corpus, ckpt, "--steps", "3", "--eval-every", "10")
    payload = load_checkpoint(ckpt)
    assert payload["metrics"]["best_val_elbo_nats"] == payload["metrics"]["history"][0]["val_elbo_nats"]
    train(tiny_corpus, ckpt, "--steps", "6", "--eval-every", "10", "--resume")
    assert load_checkpoint(ckpt)["step"] == 6


@pytest.mark.slow
def test_a_checkpoint_from_another_kind_of_device_is_refused_in_one_line(
    tmp_path: Path, tiny_corpus: Path, capsys: pytest.CaptureFixture
) -> None:
    """A CUDA run's noise generator state (16 bytes) cannot continue on the CPU (5,056), nor the reverse: the
    resume names the device that can, instead of torch's RuntimeError (found by benchmarks/gpu_smoke.py's
    review; the CUDA state is written here by hand, no GPU needed)."""
    ckpt = tmp_path / "ckpt.pt"
    train(tiny_corpus, ckpt, "--steps", "2", "--eval-every", "2")
    payload = load_checkpoint(ckpt)
    payload["rng"]["noise"] = torch.zeros(16, dtype=torch.uint8)  # the size of a CUDA generator's state
    save_checkpoint(ckpt, payload)
    before = ckpt.read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        train(tiny_corpus, ckpt, "--steps", "4", "--eval-every", "2", "--resume", "--device", "cpu")
    assert exited.value.code == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: this checkpoint was trained with --device cuda, whose noise generator cannot continue on cpu: "
        "resume it with --device cuda"
    )
    assert ckpt.read_bytes() == before


def test_checkpoint_written_by_the_old_order_still_resumes(tmp_path: Path, tiny_corpus: Path) -> None:
    """Checkpoints saved before the fix hold best = None (first validation) or one validation late:
    the resume takes the best of the recorded history."""
    ckpt = tmp_path / "ckpt.pt"
    train(tiny_corpus, ckpt, "--steps", "4", "--eval-every", "2")
    payload = load_checkpoint(ckpt)
    payload["metrics"]["best_val_elbo_nats"] = None
    save_checkpoint(ckpt, payload)
    train(tiny_corpus, ckpt, "--steps", "6", "--eval-every", "2", "--resume")
    history = load_checkpoint(ckpt)["metrics"]
    assert history["best_val_elbo_nats"] == min(r["val_elbo_nats"] for r in history["history"])


@pytest.mark.slow
def test_best_after_resume_is_the_best_of_a_straight_run(tmp_path: Path, tiny_corpus: Path) -> None:
    """best.pt and the recorded best of a resumed run equal those of an uninterrupted run at every split point."""
    straight = tmp_path / "straight.pt"
    train(tiny_corpus, straight, "--steps", "12", "--eval-every", "2", "--lr", "3e-2", *SAME_RUN)
    reference = load_checkpoint(straight.with_name("straight.best.pt"))
    history = load_checkpoint(straight)["metrics"]["history"]
    assert load_checkpoint(straight)["metrics"]["best_val_elbo_nats"] == min(r["val_elbo_nats"] for r in history)
    for split_at in (2, 6, 10):
        split = tmp_path / f"split{split_at}.pt"
        train(tiny_corpus, split, "--steps", str(split_at), "--eval-every", "2", "--lr", "3e-2", *SAME_RUN)
        train(tiny_corpus, split, "--steps", "12", "--eval-every", "2", "--lr", "3e-2", "--resume", *SAME_RUN)
        best = load_checkpoint(split.with_name(split.stem + ".best.pt"))
        assert best["step"] == reference["step"], split_at
        for name in reference["model"]:
            assert torch.equal(best["model"][name], reference["model"][name]), (split_at, name)
        resumed, expected = load_checkpoint(split)["metrics"], load_checkpoint(straight)["metrics"]
        assert resumed["best_val_elbo_nats"] == expected["best_val_elbo_nats"], split_at
        assert [r["val_elbo_nats"] for r in resumed["history"]] == [r["val_elbo_nats"] for r in history]


def test_metrics_file_matches_the_checkpoint_history_after_a_resume(tmp_path: Path, tiny_corpus: Path) -> None:
    """A kill can fall between the checkpoint and the metrics file: the resume rewrites the file from the
    checkpoint's history, so no step is ever listed twice or missing."""
    ckpt = tmp_path / "ckpt.pt"
    train(tiny_corpus, ckpt, "--steps", "4", "--eval-every", "2")
    metrics = ckpt.with_name("ckpt.metrics.jsonl")
    rows = metrics.read_text().splitlines()
    metrics.write_text("\n".join([*rows, rows[-1].replace('"step": 4', '"step": 6')]) + "\n")  # a row too many
    train(tiny_corpus, ckpt, "--steps", "8", "--eval-every", "2", "--resume")
    history = load_checkpoint(ckpt)["metrics"]["history"]
    assert metrics_rows(ckpt) == json.loads(json.dumps(history))
    assert [r["step"] for r in history] == [2, 4, 6, 8]
    assert all(math.isfinite(r["val_elbo_nats"]) for r in history)


@pytest.mark.slow
def test_resume_holds_the_corpus_and_preset_fixed(tmp_path: Path, tiny_corpus: Path) -> None:
    """A different text with the same characters is refused unless --allow-corpus-change; a different --preset,
    --lr-schedule or --warmup-steps is refused (each used to be silently ignored)."""
    import subprocess

    from conftest import bin_path

    ckpt = tmp_path / "ckpt.pt"
    train(tiny_corpus, ckpt, "--steps", "2", "--eval-every", "2")
    shuffled = tmp_path / "shuffled.txt"
    shuffled.write_text("".join(sorted(tiny_corpus.read_text())), encoding="utf-8")  # same characters, new text

    def resume(text: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([bin_path("vrnn-train"), str(text), "-o", str(ckpt), "--resume", "-q", *args],
                              capture_output=True, text=True)  # fmt: skip

    before = ckpt.read_bytes()
    for text, args, code, words in (
        (shuffled, ["--steps", "4"], 1, "--allow-corpus-change"),
        (tiny_corpus, ["--steps", "4", "--preset", "shakespeare"], 2, "--preset shakespeare cannot change"),
        (tiny_corpus, ["--steps", "4", "--lr-schedule", "constant"], 2, "--lr-schedule"),
        (tiny_corpus, ["--steps", "4", "--warmup-steps", "7"], 2, "--warmup-steps"),
    ):
        result = resume(text, *args)
        assert result.returncode == code and result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
        assert ckpt.read_bytes() == before
    assert resume(tiny_corpus, "--steps", "4", "--preset", "tiny").returncode == 0  # repeating it is fine
    result = resume(shuffled, "--steps", "6", "--allow-corpus-change")
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(ckpt)["corpus"]["name"] == "shuffled.txt"
