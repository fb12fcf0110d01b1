"""The trainer: learning, checkpoints, resume, the CLI and its refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_TEXT, bin_path

from vrnn.models.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_checkpoint, model_from_checkpoint
from vrnn.runtime.scoring import windows as validation_windows
from vrnn.training.cli import main as train_main
from vrnn.training.data import Corpus
from vrnn.training.evaluation import LN2, evaluate


def run_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([bin_path("vrnn-train"), *args], capture_output=True, text=True, timeout=600)


def train_inprocess(*args: str) -> None:
    train_main([*args, "--quiet", "--threads", "1"], standalone_mode=False)


@pytest.mark.slow
def test_tiny_corpus_is_overfit(tmp_path: Path, tiny_corpus: Path) -> None:
    """A 300-character text repeated 3 times: the ELBO must fall far below the uniform 3.2 nats/char.

    Stated bound: negative ELBO on the training split < 1.0 nats/char after 400 steps
    (a uniform guess over the 33 characters costs ln 33 = 3.50)."""
    ckpt = tmp_path / "ckpt.pt"
    train_inprocess(str(tiny_corpus), "-o", str(ckpt), "--preset", "tiny", "--steps", "400", "--hidden-size", "64",
                    "--seq-len", "48", "--lr", "1e-2", "--eval-every", "400")  # fmt: skip
    payload = load_checkpoint(ckpt)
    model, vocab = model_from_checkpoint(payload)
    corpus = Corpus.from_text(TINY_TEXT, "tiny", "", vocab)
    score = evaluate(model, corpus.ids(corpus.train), seq_len=48, batch_size=16)
    assert score.elbo < 1.0, score
    assert score.bpc == pytest.approx(score.elbo / LN2)


def test_checkpoint_contents_and_vocabulary(trained: dict[str, Path]) -> None:
    payload = torch.load(trained["checkpoint"], map_location="cpu", weights_only=True)
    assert payload["format"] == CHECKPOINT_FORMAT and payload["version"] == CHECKPOINT_VERSION
    assert payload["vocab"] == sorted(set(TINY_TEXT))
    assert payload["start_char"] == "\n"
    assert payload["step"] == 300
    assert payload["model_config"]["vocab_size"] == len(set(TINY_TEXT))
    assert payload["model_config"]["layers"] == 2
    assert {"optimizer", "rng", "train_config", "metrics"} <= payload.keys()
    assert payload["metrics"]["val_bpc"] == pytest.approx(payload["metrics"]["val_elbo_nats"] / LN2)
    best = load_checkpoint(trained["dir"] / "ckpt.best.pt")
    assert "optimizer" not in best
    lines = (trained["dir"] / "ckpt.metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [100, 200, 300]


def test_checkpoint_round_trip_restores_the_model(trained: dict[str, Path]) -> None:
    payload = load_checkpoint(trained["checkpoint"])
    model, _ = model_from_checkpoint(payload)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, payload["model"][name])


@pytest.mark.slow
def test_resume_is_bit_identical_to_an_uninterrupted_run(
    tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 20-step run interrupted (Ctrl-C) after step 7 and resumed ends with the same weights as one that was not."""
    from vrnn.training.trainer import Trainer

    common = ["--preset", "tiny", "--seq-len", "16", "--eval-every", "5", "--seed", "7", "--steps", "20"]
    straight, split = tmp_path / "straight.pt", tmp_path / "split.pt"
    train_inprocess(str(tiny_corpus), "-o", str(straight), *common)

    real_step = Trainer.train_step

    def interrupt_after_7(self: Trainer):
        result = real_step(self)
        if self.step == 7:
            os.kill(os.getpid(), signal.SIGINT)  # handled between steps: save, exit 130
        return result

    monkeypatch.setattr(Trainer, "train_step", interrupt_after_7)
    # Python's own Ctrl-C handler, whatever the test runner was started with (a background job ignores SIGINT,
    # and the trainer leaves an ignored signal ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(SystemExit) as exit_info:
            train_inprocess(str(tiny_corpus), "-o", str(split), *common)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert exit_info.value.code == 130
    assert load_checkpoint(split)["step"] == 7
    monkeypatch.setattr(Trainer, "train_step", real_step)
    train_inprocess(str(tiny_corpus), "-o", str(split), "--resume", *common)
    a, b = load_checkpoint(straight), load_checkpoint(split)
    assert b["step"] == 20
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert [r["val_elbo_nats"] for r in a["metrics"]["history"]] == [
        r["val_elbo_nats"] for r in b["metrics"]["history"]
    ]


def test_validation_windows_cover_every_character_once() -> None:
    ids = torch.arange(23)
    windows = list(validation_windows(ids, 5))
    predicted = torch.cat([w[1:] for w in windows])
    assert torch.equal(predicted, ids[1:])
    assert all(torch.equal(w[:1], ids[w[0] : w[0] + 1]) for w in windows)


@pytest.mark.slow
def test_cli_end_to_end(tmp_path: Path, tiny_corpus: Path) -> None:
    out = tmp_path / "run" / "model.pt"
    out.parent.mkdir()
    result = run_train(str(tiny_corpus), "-o", str(out), "--preset", "tiny", "--steps", "20", "--eval-every", "10",
                       "--seq-len", "16", "--threads", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "bits/char" in result.stderr and "Traceback" not in result.stderr
    for name in ("model.pt", "model.best.pt", "model.metrics.jsonl", "model.png"):
        assert (out.parent / name).is_file(), name
    again = run_train(str(tiny_corpus), "-o", str(out), "--preset", "tiny", "--steps", "20")
    assert again.returncode == 2 and "--resume" in again.stderr  # never overwrites silently
    module = subprocess.run([sys.executable, "-m", "vrnn.training", "--help"], capture_output=True, text=True)
    assert module.returncode == 0 and "--kl-anneal-steps" in module.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\xff\xfe\xfa not utf-8 \xc3\x28", "not UTF-8"),
        (b"\x00\x01\x02binary\x00", "binary"),
        (b"too short", "too short"),
    ],
)
@pytest.mark.slow
def test_bad_corpora_are_refused_in_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    out = tmp_path / "ckpt.pt"
    result = run_train(str(corpus), "-o", str(out), "--preset", "tiny")
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()


@pytest.mark.slow
def test_missing_corpus_and_bad_options_are_refused(tmp_path: Path, tiny_corpus: Path) -> None:
    missing = run_train(str(tmp_path / "nope.txt"), "-o", str(tmp_path / "c.pt"))
    assert missing.returncode == 1 and "not found" in missing.stderr
    bad = run_train(str(tiny_corpus), "-o", str(tmp_path / "c.pt"), "--steps", "0")
    assert bad.returncode == 2 and "--steps" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    nodir = run_train(str(tiny_corpus), "-o", str(tmp_path / "no" / "c.pt"))
    assert nodir.returncode == 1 and "does not exist" in nodir.stderr


def test_kl_annealing_ends_by_half_of_the_run() -> None:
    from vrnn.training.config import TrainConfig
    from vrnn.training.objective import kl_weight

    short = TrainConfig(steps=500, kl_anneal_steps=1000)
    assert short.effective_kl_anneal_steps == 250
    assert kl_weight(250, short.effective_kl_anneal_steps) == 1.0
    assert TrainConfig(steps=5000, kl_anneal_steps=1000).effective_kl_anneal_steps == 1000
    assert kl_weight(10, TrainConfig(steps=50, kl_anneal_steps=0).effective_kl_anneal_steps) == 1.0


def test_weight_decay_shrinks_matrices_only() -> None:
    """With zero gradients Adam's own update is zero, so one step shows the decay alone:
    every matrix (and the embedding) scaled by exactly 1 - lr * weight_decay, biases untouched."""
    from vrnn.models.vrnn import VRNN
    from vrnn.runtime.schema import ModelConfig
    from vrnn.training.config import TrainConfig
    from vrnn.training.trainer import make_optimizer

    model = VRNN(ModelConfig(vocab_size=5, embed_size=4, hidden_size=6, latent_size=2))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = make_optimizer(model, TrainConfig(lr=0.1, weight_decay=0.5))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        expected = before[name] * (1 - 0.1 * 0.5) if p.dim() >= 2 else before[name]
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-7, msg=name)
    assert len(make_optimizer(model, TrainConfig()).param_groups) == 1  # no decay: plain Adam, as before


@pytest.mark.slow
def test_bad_weight_decay_is_refused(tmp_path: Path, tiny_corpus: Path) -> None:
    bad = run_train(str(tiny_corpus), "-o", str(tmp_path / "c.pt"), "--weight-decay", "-1")
    assert bad.returncode == 2 and "--weight-decay" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
