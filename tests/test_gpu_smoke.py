"""benchmarks/gpu_smoke.py on a machine without a GPU: every check with the CPU standing in for CUDA, at the
tiny preset on a tiny corpus; and the one line and distinct exit without CUDA."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY_TEXT

SCRIPT = REPO / "benchmarks" / "gpu_smoke.py"


@pytest.mark.slow
def test_every_check_runs_with_the_cpu_standing_in(tmp_path: Path) -> None:
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT * 2, encoding="utf-8")
    out = tmp_path / "results.json"
    args = ["--device", "cpu", "--corpus", str(corpus), "--preset", "tiny", "--steps", "6", "--eval-every", "3",
            "--timing-steps", "2", "--timing-warmup", "1", "--sample-length", "40", "--threads", "1",
            "--workdir", str(tmp_path / "work"), "--out", str(out)]  # fmt: skip
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"all \d+ checks passed on cpu \(standing in for cuda\)", done.stdout)

    results = json.loads(out.read_text())
    assert results["gpu_device"] == "cpu (standing in for cuda)"
    assert results["date"].startswith("20")
    assert {"gpu", "torch", "cuda", "cudnn", "cpu", "commit"} <= set(results["machine"])
    assert results["machine"]["torch"] == torch.__version__
    assert results["preset"] == "tiny" and results["train_config"]["steps"] == 6
    assert results["passed"] and all(check["passed"] for check in results["checks"])
    names = " | ".join(check["name"] for check in results["checks"])
    for part in ("exits 0", "logs the device", "Adam state", "curves: training loss, KL warm-up",
                 "curves: validation -ELBO, KL weight 1", "step parity cpu/cpu: gradients",
                 "fused/autograd on cpu, float64", "fused/autograd on cpu, float32", "vrnn-export",
                 "vrnn-run text == vrnn-sample text"):  # fmt: skip
        assert part in names
    for role in ("gpu", "cpu"):
        run = results["runs"][role]
        assert run["exit"] == 0 and run["logged_device"] == "cpu"
        assert [row["step"] for row in run["rows"]] == [3, 6]
        assert results["timing"][role]["median_s"] > 0 and results["timing"][role]["steps"] == 2
    # CPU against CPU is one computation twice: the curves agree exactly.
    assert results["runs"]["gpu"]["rows"][-1]["train_loss"] == results["runs"]["cpu"]["rows"][-1]["train_loss"]
    assert results["export"]["text"].count("--- sample") == 2
    assert set(results["tolerances"]) == {"curve_relative", "curve_relative_kl_warmup", "step_parity", "fused"}
    # Fit to commit: no folder of this machine (test_docs_tables.py holds committed results to that).
    machine_path = re.compile(r"""["'\s=](/(?:work|tmp|home|root|Users|mnt|opt|var)/[^"'\s]*)""")
    assert not machine_path.findall(out.read_text(encoding="utf-8"))


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_without_cuda_it_says_so_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "CUDA is not available" in done.stderr
    assert "--device cpu" in done.stderr
    assert not out.exists()
