"""vrnn-eval: the ELBO and IWAE-K bounds, active units, the bits conversion and the CLI."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TEXT, bin_path

from vrnn.models.vrnn import VRNN
from vrnn.runtime.schema import ModelConfig
from vrnn.runtime.vocab import Vocabulary
from vrnn.training.evaluation import TextScore, latent_verdict, score_text

VOCAB = Vocabulary.from_text(TINY_TEXT)
IDS = torch.from_numpy(VOCAB.encode("\n" + TINY_TEXT))


def random_model(seed: int = 0, scale: float = 3.0) -> VRNN:
    """An untrained model with enlarged weights, so q and p differ and the KL is far from zero."""
    torch.manual_seed(seed)
    model = VRNN(ModelConfig(vocab_size=len(VOCAB), embed_size=8, hidden_size=16, latent_size=4, layers=1))
    with torch.no_grad():
        for name in ("encoder", "prior"):
            getattr(model, name).weight.mul_(scale)
    return model.eval()


def test_iwae_1_equals_the_elbo_in_expectation() -> None:
    model = random_model()
    gaps = []
    for seed in range(30):
        score = score_text(model, IDS, window=32, samples=1, seed=seed)
        gaps.append(score.iwae - score.elbo)
    gaps = np.array(gaps)
    assert score.kl > 0.3  # the check would be empty with an unused latent
    stderr = gaps.std(ddof=1) / math.sqrt(len(gaps))
    assert abs(gaps.mean()) < 4 * stderr + 1e-6, (gaps.mean(), stderr)


def test_iwae_is_below_the_elbo_and_tightens_with_k() -> None:
    model = random_model()
    scores = {k: score_text(model, IDS, window=32, samples=k, seed=7) for k in (1, 4, 16, 64)}
    # Seed-to-seed spread (std) measured on this text: 0.03 nats/char for the ELBO, 0.09 for IWAE-1;
    # the gaps between K = 1, 4, 16, 64 are 0.1 to 0.3, so a wrong bound cannot hide in this tolerance.
    noise = 0.05
    for k in (4, 16, 64):
        assert scores[k].iwae <= scores[k].elbo + noise
    assert scores[4].iwae <= scores[1].iwae + noise
    assert scores[16].iwae <= scores[4].iwae + noise
    assert scores[64].iwae <= scores[16].iwae + noise
    assert scores[64].iwae < scores[1].iwae - 0.05  # the bound really tightens here


def test_a_uniform_model_costs_log_v_in_both_units() -> None:
    """Zero decoder weights give uniform logits; encoder = prior gives zero KL: exactly ln V nats, log2 V bits."""
    model = random_model()
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.zero_()
        model.encoder.weight.zero_()
        model.prior.weight.zero_()
        model.encoder.bias.copy_(model.prior.bias)
    score = score_text(model, IDS, window=50, samples=4)
    v = len(VOCAB)
    assert score.elbo == pytest.approx(math.log(v), abs=1e-6)
    assert score.iwae == pytest.approx(math.log(v), abs=1e-6)
    assert score.elbo_bits == pytest.approx(math.log2(v), abs=1e-6)
    assert score.kl == pytest.approx(0.0, abs=1e-6)
    assert score.active_units == 0  # a posterior that ignores the text has constant means


def test_every_character_is_scored_once_whatever_the_window() -> None:
    model = random_model()
    chars = len(IDS) - 1
    for window in (1, 7, 32, chars, 10 * chars):
        score = score_text(model, IDS, window=window, samples=2)
        assert score.chars == chars
        assert score.char_nll.shape == score.char_kl.shape == (chars,)
        assert float(score.char_nll.mean()) == pytest.approx(score.nll, rel=1e-9)
    a = score_text(model, IDS, window=32, samples=3, seed=5)
    b = score_text(model, IDS, window=32, samples=3, seed=5)
    assert a.summary() == b.summary()


def run_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([bin_path("vrnn-eval"), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_reports_json_and_plot(trained: dict[str, Path], tiny_corpus: Path, tmp_path: Path) -> None:
    plot = tmp_path / "passage.png"
    proc = run_eval(str(tiny_corpus), "-c", str(trained["checkpoint"]), "-k", "4", "--json", "--plot", str(plot))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["chars"] == len(TINY_TEXT)
    assert result["iwae_samples"] == 4 and result["window"] == 24  # the training --seq-len
    assert result["elbo_bits"] == pytest.approx(result["elbo_nats"] / math.log(2))
    assert result["elbo_nats"] == pytest.approx(result["nll_nats"] + result["kl_nats"])
    assert 0 <= result["active_units"] <= result["latent_size"] == 8
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    val = run_eval(str(tiny_corpus), "-c", str(trained["checkpoint"]), "--split", "val", "--json")
    assert json.loads(val.stdout)["chars"] == len(TINY_TEXT) - int(len(TINY_TEXT) * 0.9)

    assert result["latent_verdict"].split(":")[0] in ("unused", "carries little", "used")

    text = run_eval(str(tiny_corpus), "-c", str(trained["checkpoint"]))
    assert text.returncode == 0 and "-ELBO" in text.stdout and "bits/char" in text.stdout
    assert f"\n  latent       {result['latent_verdict'].split(':')[0]}: KL " in text.stdout  # same model, other K


@pytest.mark.slow
def test_cli_reports_the_smc_bound(trained: dict[str, Path], tiny_corpus: Path) -> None:
    """--estimator smc: the K-particle bound beside one trajectory's ELBO, in JSON and in the text report."""
    ckpt = str(trained["checkpoint"])
    proc = run_eval(str(tiny_corpus), "-c", ckpt, "-k", "8", "--estimator", "smc", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["smc_particles"] == 8 and result["iwae_samples"] == 1
    assert result["smc_bits"] == pytest.approx(result["smc_nats"] / math.log(2))
    assert 0.0 <= result["smc_resampling_rate"] <= 1.0
    assert result["smc_nats"] < result["elbo_nats"] + 0.05  # a bound from 8 particles, not looser than one
    text = run_eval(str(tiny_corpus), "-c", ckpt, "-k", "8", "--estimator", "smc")
    assert text.returncode == 0 and "-SMC-8" in text.stdout and "resampled at" in text.stdout
    bad = run_eval(str(tiny_corpus), "-c", ckpt, "--estimator", "fivo")
    assert bad.returncode == 2 and "fivo" in bad.stderr


@pytest.mark.slow
def test_cli_refuses_unknown_characters_unless_told(trained: dict[str, Path], tmp_path: Path) -> None:
    """A text with characters the model lacks: one line that says how many, which and how much of the text,
    and points first to a model trained on the text (--skip-unknown drops the text's own characters)."""
    odd = tmp_path / "odd.txt"
    odd.write_text("ROMEO: but soft, what § light @ yonder", encoding="utf-8")
    proc = run_eval(str(odd), "-c", str(trained["checkpoint"]))
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"{odd} has 2 characters ckpt.pt does not know ('@', '§'; 5.3% of the text): " in proc.stderr
    assert proc.stderr.index("a model trained on this text") < proc.stderr.index("--skip-unknown")
    bundled = run_eval(str(odd))  # the default model: Shakespeare, which knows neither
    assert bundled.returncode == 1 and bundled.stderr.count("\n") == 1
    assert "has 2 characters the bundled Shakespeare model does not know" in bundled.stderr
    assert "score a model trained on this text with -c CKPT, or drop them with --skip-unknown" in bundled.stderr
    skipped = run_eval(str(odd), "-c", str(trained["checkpoint"]), "--skip-unknown", "--json")
    assert skipped.returncode == 0, skipped.stderr
    assert json.loads(skipped.stdout)["skipped_chars"] == 2


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["-k", "0"], 2, "--iwae-samples must be at least 1"),
        (["--window", "0"], 2, "--window must be at least 1"),
        (["--batch-size", "-3"], 2, "--batch-size must be at least 1"),
        (["--plot", "/nonexistent-dir/x.png"], 1, "output directory does not exist"),
        (["--split", "test"], 2, "--split"),
    ],
)
@pytest.mark.slow
def test_cli_refuses_bad_options(
    trained: dict[str, Path], tiny_corpus: Path, args: list[str], code: int, message: str
) -> None:
    proc = run_eval(str(tiny_corpus), "-c", str(trained["checkpoint"]), *args)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cli_refuses_bad_files(trained: dict[str, Path], tiny_corpus: Path, tmp_path: Path) -> None:
    empty, latin1, binary = tmp_path / "empty.txt", tmp_path / "latin1.txt", tmp_path / "binary.bin"
    empty.write_bytes(b"")
    latin1.write_bytes("ROMEO: caf\u00e9".encode("latin-1"))
    binary.write_bytes(b"ROMEO\x00\x01\x02")
    cases = [
        ([str(tmp_path / "missing.txt"), "-c", str(trained["checkpoint"])], "corpus not found"),
        ([str(empty), "-c", str(trained["checkpoint"])], "corpus is empty"),
        ([str(latin1), "-c", str(trained["checkpoint"])], "not UTF-8"),
        ([str(binary), "-c", str(trained["checkpoint"])], "looks binary"),
        ([str(tiny_corpus), "-c", str(tmp_path / "none.pt")], "checkpoint not found"),
        ([str(tiny_corpus), "-c", str(tiny_corpus)], "not a readable vrnn checkpoint"),
        ([str(tiny_corpus), "-c", str(tmp_path)], "checkpoint is a directory"),
    ]
    for args, message in cases:
        proc = run_eval(*args)
        assert proc.returncode == 1, (args, proc.stderr)
        assert message in proc.stderr and proc.stderr.count("\n") == 1, (args, proc.stderr)


def verdict(kl: float, unit_kl: list[float], elbo: float = 1.5) -> str:
    units = len(unit_kl)
    score = TextScore(100, 10, 1, elbo, elbo, elbo - kl, kl, units, sum(v > 0.01 for v in unit_kl), units,
                      [1.0] * units, unit_kl, None, np.zeros(0), np.zeros(0))  # fmt: skip
    return latent_verdict(score)


def test_the_latent_verdict_says_in_words_what_the_kl_measures() -> None:
    """By the active units' own threshold, 0.01 nats/char per dimension: less than that in all is no use of z
    (however many units the variance counts), more of it spread thin is little, and units above it carry it."""
    collapsed = verdict(0.0005, [0.0005 / 32] * 32)
    assert collapsed.startswith("unused: KL 0.0005 nats/char") and "posterior collapse" in collapsed
    thin = verdict(0.018, [0.018 / 32] * 32, elbo=1.49)
    assert thin == "carries little: KL 0.0180 nats/char (1.2% of the -ELBO) spread over 32 units, none above 0.01"
    used = verdict(0.12, [0.05, 0.06, 0.005, 0.005], elbo=1.2)
    assert used == "used: carries KL 0.1200 nats/char (10.0% of the -ELBO), 0.1100 of it in 2 units above 0.01"
    assert verdict(0.0, []) == "none: a plain GRU language model"


def test_vrnn_score_points_to_a_model_trained_on_the_text(trained: dict[str, Path], tmp_path: Path) -> None:
    odd = tmp_path / "odd.txt"
    odd.write_text("ROMEO: but soft, what § light @ yonder", encoding="utf-8")
    proc = subprocess.run([bin_path("vrnn-score"), str(trained["cell"]), str(odd)], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "has 2 characters outside the model's vocabulary ('@', '§'; 5.3% of the text)" in proc.stderr
    assert "score a cell exported from a model trained on it" in proc.stderr


@pytest.mark.parametrize("split", ["all", "train", "val"])
def test_scoring_a_memory_map_in_pieces_equals_scoring_one_tensor(tmp_path: Path, split: str) -> None:
    """vrnn-eval scores a memory-mapped token file in pieces (no copy of the text, windows made as they are
    scored): every number equals the score of the same ids as one in-memory tensor."""
    from vrnn.training.eval_cli import windowed_pieces

    text = TINY_TEXT * 4
    mapped = np.memmap(tmp_path / "ids", dtype=np.uint8, mode="w+", shape=(len(text),))
    mapped[:] = VOCAB.encode(text)
    start = VOCAB.chars.index("\n")
    split_at = int(len(text) * 0.9)
    whole = {"all": "\n" + text, "train": "\n" + text[:split_at], "val": text[split_at - 1 :]}[split]
    model = random_model()
    reference = score_text(model, torch.from_numpy(VOCAB.encode(whole)), window=50, samples=3, batch_size=12)
    pieces = windowed_pieces(mapped, split, start, 50)
    streamed = score_text(model, pieces, window=50, samples=3, batch_size=12, keep_chars=70)
    assert streamed.summary() == reference.summary()
    np.testing.assert_array_equal(streamed.char_nll, reference.char_nll[:70])
