"""The smoothing posterior and its auxiliary cost: the equations, the fast path, the CLI and the cell."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import onnx
import pytest
import torch
from conftest import bin_path

from vrnn.export.cli import export_cell
from vrnn.models import reference
from vrnn.models.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from vrnn.models.vrnn import VRNN
from vrnn.runtime import schema
from vrnn.runtime.schema import ModelConfig
from vrnn.training.cli import main as train_main


def test_smoothing_forward_matches_its_equations() -> None:
    """Both ways forward computes phi_x (a per-character table or per position)."""
    torch.manual_seed(0)
    for vocab, backward in ((11, 0), (64, 0), (11, 5)):  # 5: a backward GRU narrower than the forward one
        config = ModelConfig(vocab_size=vocab, embed_size=6, hidden_size=9, latent_size=4, posterior="smoothing",
                             backward_size=backward)  # fmt: skip
        model = VRNN(config).double()
        tokens = torch.randint(0, vocab, (3, 10))
        eps = torch.randn(9, 3, 4, dtype=torch.float64)
        terms = model(tokens, eps)
        nll, kl, aux = reference.elbo_terms(model, tokens, eps)
        torch.testing.assert_close(terms.nll, nll, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(terms.kl, kl, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(terms.aux, aux, rtol=1e-10, atol=1e-12)
        assert model(tokens, eps, with_aux=False).aux is None


def test_smoothing_fused_recurrence_matches_autograd_values_and_gradients() -> None:
    """The fused BPTT with the backward GRU feeding the encoder, against the autograd loop, in float64:
    every parameter's gradient, the backward GRU's and the auxiliary network's included."""
    torch.manual_seed(3)
    config = ModelConfig(vocab_size=11, embed_size=6, hidden_size=9, latent_size=5, posterior="smoothing",
                         backward_size=7)  # fmt: skip
    model = VRNN(config).double()
    tokens = torch.randint(0, 11, (4, 13))
    eps = torch.randn(12, 4, 5, dtype=torch.float64)
    mask = (torch.rand(12, 4, 9) > 0.3).double() / 0.7
    results = {}
    for fused in (True, False):
        model.zero_grad()
        terms = model(tokens, eps, mask, autograd_recurrence=not fused)
        loss = terms.nll.sum() + 0.7 * terms.kl.sum() - 0.3 * terms.log_ratio.sum() + 0.5 * terms.aux.sum()
        loss.backward()
        results[fused] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-12, atol=1e-12)
    assert {n for n in results[True][1] if n.startswith(("backward_rnn", "aux"))}
    for name, grad in results[False][1].items():
        torch.testing.assert_close(results[True][1][name], grad, rtol=1e-9, atol=1e-12, msg=name)


def test_the_auxiliary_cost_never_trains_the_backward_gru() -> None:
    """Its target is held fixed: b_t reaches the auxiliary cost through z_t (the encoder reads it), never as
    the target.  With the encoder's b columns zeroed, the auxiliary cost alone leaves the backward GRU no gradient."""
    torch.manual_seed(4)
    model = VRNN(ModelConfig(vocab_size=7, embed_size=4, hidden_size=5, latent_size=3, posterior="smoothing"))
    with torch.no_grad():
        model.encoder.weight[:, :5] = 0.0
    terms = model(torch.randint(0, 7, (2, 6)), torch.randn(5, 2, 3))
    terms.aux.sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in model.backward_rnn.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.encoder.parameters())  # through z


def test_config_refuses_what_cannot_work() -> None:
    with pytest.raises(Exception, match="posterior must be one of"):
        ModelConfig(vocab_size=5, posterior="psychic")
    with pytest.raises(Exception, match="needs a latent"):
        ModelConfig(vocab_size=5, latent_size=0, posterior="smoothing")
    assert ModelConfig.from_dict({"vocab_size": 5, "hidden_size": 8}).posterior == "filtering"  # old checkpoints


@pytest.fixture(scope="module")
def smoothing_run(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    ckpt = tmp_path_factory.mktemp("smoothing") / "ckpt.pt"
    train_main([str(tiny_corpus), "-o", str(ckpt), "--preset", "tiny", "--steps", "40", "--seq-len", "24",
                "--posterior", "smoothing", "--aux-weight", "0.5", "--backward-size", "12", "--eval-every", "20",
                "--quiet", "--threads", "1"], standalone_mode=False)  # fmt: skip
    return ckpt


@pytest.mark.slow
def test_smoothing_run_is_recorded_exported_and_scored(smoothing_run: Path, tiny_corpus: Path) -> None:
    payload = load_checkpoint(smoothing_run)
    assert payload["model_config"]["posterior"] == "smoothing" and payload["model_config"]["backward_size"] == 12
    assert payload["train_config"]["aux_weight"] == 0.5
    assert all("val_aux" in row and "train_aux" in row for row in payload["metrics"]["history"])
    cell = smoothing_run.with_name("cell.onnx")
    export_cell(str(smoothing_run), str(cell))
    meta = {p.key: p.value for p in onnx.load(str(cell)).metadata_props}
    assert json.loads(meta[schema.META_SOURCE])["posterior"] == "smoothing"
    assert not {"posterior", "backward_size"} & set(json.loads(meta[schema.META_CONFIG]))  # the cell is unchanged
    run = subprocess.run([bin_path("vrnn-run"), str(cell), "-n", "40", "--seed", "1"], capture_output=True, text=True)
    sample = subprocess.run(
        [bin_path("vrnn-sample"), str(smoothing_run), "-n", "40", "--seed", "1"], capture_output=True, text=True
    )
    assert run.returncode == 0 and run.stdout == sample.stdout, run.stderr + sample.stderr
    scored = subprocess.run(
        [bin_path("vrnn-eval"), str(tiny_corpus), "-c", str(smoothing_run), "-k", "4", "--json"],
        capture_output=True,
        text=True,
    )
    summary = json.loads(scored.stdout)
    assert summary["aux_nats"] is not None and summary["iwae_nats"] <= summary["elbo_nats"] + 0.05
    assert len(summary["unit_kl"]) == 8 and 0 <= summary["active_units_kl"] <= 8
    text = subprocess.run(
        [bin_path("vrnn-eval"), str(tiny_corpus), "-c", str(smoothing_run)], capture_output=True, text=True
    ).stdout
    assert "aux cost" in text and "by KL" in text


@pytest.mark.slow
def test_posterior_options_are_checked(smoothing_run: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    def train(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([bin_path("vrnn-train"), str(tiny_corpus), *args], capture_output=True, text=True)

    refused = train("-o", str(tmp_path / "a.pt"), "--preset", "tiny", "--aux-weight", "1")
    assert refused.returncode == 2 and "--posterior smoothing" in refused.stderr
    refused = train("-o", str(tmp_path / "a.pt"), "--preset", "tiny", "--posterior", "smoothing", "--latent-size", "0")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "latent" in refused.stderr
    changed = train("-o", str(smoothing_run), "--posterior", "filtering", "--resume", "--steps", "50")
    assert changed.returncode == 2 and "--posterior" in changed.stderr


def test_checkpoints_without_a_posterior_load_as_filtering(trained: dict[str, Path], tmp_path: Path) -> None:
    payload = load_checkpoint(trained["checkpoint"])
    payload["model_config"].pop("posterior", None)
    old = tmp_path / "old.pt"
    save_checkpoint(old, payload)
    model, _ = model_from_checkpoint(load_checkpoint(old))
    assert model.config.posterior == "filtering" and not hasattr(model, "backward_rnn")
