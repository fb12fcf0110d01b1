"""The bundled Tiny Shakespeare model: it ships, it is consistent, and the CLIs use it by default."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import bin_path

from vrnn.models.bundled import BUNDLED_CHECKPOINT
from vrnn.models.checkpoint import file_sha256, load_checkpoint
from vrnn.runtime.bundled import BUNDLED_CELL, bundled_file
from vrnn.runtime.errors import VrnnError
from vrnn.runtime.onnx_meta import read_metadata
from vrnn.runtime.schema import META_SOURCE

# The bundled model's validation -ELBO as published in the README (vrnn-eval --split val, K = 1, seed 0),
# with its training windows of 256 characters (nanoGPT's block size) and with 128.
PUBLISHED_VAL_ELBO = {128: 1.5070, 256: 1.4933}


def run(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([bin_path(name), *args], capture_output=True, text=True, timeout=300)


def test_the_bundled_files_ship_and_belong_together() -> None:
    assert BUNDLED_CELL.stat().st_size <= 10 * 2**20
    payload = load_checkpoint(BUNDLED_CHECKPOINT)
    assert "optimizer" not in payload and "rng" not in payload  # weights only
    assert len(payload["vocab"]) == 65 and payload["corpus"]["name"] == "tinyshakespeare.txt"
    source = json.loads(read_metadata(BUNDLED_CELL.read_bytes(), str(BUNDLED_CELL))[META_SOURCE])
    assert source["checkpoint_sha256"] == file_sha256(BUNDLED_CHECKPOINT)


@pytest.mark.slow
def test_vrnn_run_without_a_cell_samples_the_bundled_model() -> None:
    onnx_text = run("vrnn-run", "--length", "300", "--seed", "1")
    assert onnx_text.returncode == 0, onnx_text.stderr
    assert len(onnx_text.stdout) == 301  # 300 characters and the closing newline
    torch_text = run("vrnn-sample", str(BUNDLED_CHECKPOINT), "--length", "300", "--seed", "1")
    assert torch_text.stdout == onnx_text.stdout


@pytest.mark.slow
def test_vrnn_eval_without_a_checkpoint_uses_the_bundled_model(tmp_path: Path) -> None:
    text = tmp_path / "verse.txt"
    text.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n", encoding="utf-8")
    proc = run("vrnn-eval", str(text), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert Path(result["checkpoint"]).name == BUNDLED_CHECKPOINT.name
    assert result["elbo_nats"] < 3.0  # far better than uniform over 65 characters (4.17)


def test_a_missing_bundle_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(VrnnError, match=r"no bundled model .* give a CELL argument explicitly"):
        bundled_file(tmp_path / "shakespeare.onnx", "a CELL argument")


@pytest.mark.parametrize("window", sorted(PUBLISHED_VAL_ELBO))
def test_the_published_validation_score_holds(shakespeare: Path, window: int) -> None:
    proc = run("vrnn-eval", str(shakespeare), "--split", "val", "--window", str(window), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["elbo_nats"] == pytest.approx(PUBLISHED_VAL_ELBO[window], abs=5e-4)
