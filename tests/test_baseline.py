"""--latent-size 0: the plain GRU language model that the VRNN is compared against, end to end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import bin_path


def run(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([bin_path(name), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_model_without_latent_trains_exports_samples_and_scores(tiny_corpus: Path, tmp_path: Path) -> None:
    ckpt, cell = tmp_path / "gru.pt", tmp_path / "gru.onnx"
    train = run("vrnn-train", str(tiny_corpus), "-o", str(ckpt), "--preset", "tiny", "--latent-size", "0",
                "--steps", "60", "--threads", "1", "-q")  # fmt: skip
    assert train.returncode == 0, train.stderr
    assert "kl 0.0000" in train.stderr
    export = run("vrnn-export", str(ckpt), str(cell))
    assert export.returncode == 0, export.stderr
    onnx_text = run("vrnn-run", str(cell), "--length", "80", "--seed", "3")
    torch_text = run("vrnn-sample", str(ckpt), "--length", "80", "--seed", "3")
    assert onnx_text.returncode == 0 and onnx_text.stdout == torch_text.stdout
    score = json.loads(run("vrnn-eval", str(tiny_corpus), "-c", str(ckpt), "-k", "4", "--json").stdout)
    assert score["latent_size"] == 0 and score["active_units"] == 0
    assert score["kl_nats"] == 0.0
    assert score["iwae_nats"] == pytest.approx(score["elbo_nats"], abs=1e-9)  # no latent: the bound is exact
