"""The verdict of the quality-diversity study (benchmarks/latent_quality.py): a VRNN setting is "better" or
"worse" than the GRU only where its band and the GRU's band, interpolated at the same diversity, do not
overlap; the better of the GRU's curves is the one compared; a point outside the GRU's range gets no verdict.
Also the metrics of one prompt's samples, on strings whose answers are known."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from latent_quality import at_matched_diversity, bootstrap, comparisons, per_prompt


def point(arm: str, setting: dict, distinct: float, nll: float, half_band: float = 0.01) -> dict:
    return {"arm": arm, "setting": setting, "distinct4": (distinct, distinct, distinct),
            "ngram_nll": (nll, nll - half_band, nll + half_band)}  # fmt: skip


def gru_curves() -> list[dict]:
    plain = [point("gru", {"temperature": t, "top_p": None}, d, n) for t, d, n in
             ((0.6, 0.6, 1.0), (0.8, 0.7, 1.2), (1.0, 0.8, 1.4))]  # fmt: skip
    nucleus = [point("gru", {"temperature": t, "top_p": 0.9}, d, n) for t, d, n in
               ((0.6, 0.55, 0.95), (0.8, 0.65, 1.05), (1.0, 0.75, 1.25))]  # fmt: skip
    return plain + nucleus


@pytest.mark.parametrize(
    ("distinct", "nll", "half_band", "verdict", "top_p"),
    [
        (0.65, 1.00, 0.01, "better", 0.9),  # top-p 0.9 is the lower GRU curve here: 1.05 at 0.65
        (0.65, 1.10, 0.01, "worse", 0.9),
        (0.65, 1.06, 0.02, "within the bands", 0.9),
        (0.78, 1.20, 0.01, "better", None),  # only the plain curve reaches 0.78: 1.36 there
        (0.90, 1.00, 0.01, "outside the reference's diversity range", None),
    ],
)
def test_verdict_at_matched_diversity(distinct: float, nll: float, half_band: float, verdict: str, top_p) -> None:
    vrnn = point("vrnn", {"temperature": 1.0, "latent_temperature": 1.0}, distinct, nll, half_band)
    [row] = comparisons([*gru_curves(), vrnn], "ngram_nll")["vrnn_vs_gru"]
    assert row["verdict"] == verdict
    if row["reference"] is not None:  # the interpolated mean lies on the chosen curve
        assert row["curve"] == f"GRU, top-p {top_p or 'none'}"
        curve = sorted((p for p in gru_curves() if p["setting"]["top_p"] == top_p), key=lambda p: p["distinct4"][0])
        expected = np.interp(distinct, [p["distinct4"][0] for p in curve], [p["ngram_nll"][0] for p in curve])
        assert row["reference"][0] == pytest.approx(expected)


def test_latent_temperature_is_judged_against_the_same_models_temperature_curve() -> None:
    own = [point("vrnn", {"temperature": t, "latent_temperature": 1.0}, d, n) for t, d, n in
           ((0.6, 0.6, 1.0), (1.0, 0.8, 1.4))]  # fmt: skip
    gains = point("vrnn", {"temperature": 0.6, "latent_temperature": 1.5}, 0.7, 1.1)  # own curve: 1.2 at 0.7
    loses = point("vrnn", {"temperature": 0.6, "latent_temperature": 0.0}, 0.62, 1.2)  # own curve: 1.04
    rows = comparisons([*gru_curves(), *own, gains, loses], "ngram_nll")["latent_vs_temperature"]
    assert [r["verdict"] for r in rows] == ["better", "worse"]
    assert {r["curve"] for r in rows} == {"VRNN, latent T 1.0"}
    assert len(at_matched_diversity([gains], {}, "ngram_nll")) == 1  # no reference: a row, no verdict


def test_per_prompt_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    import latent_quality

    class UniformNgram:
        def nll(self, text: str, history: str) -> float:
            return 1.5

    # the other-seed model's NLL is scorer_nll's (teacher forcing through the runtime): a constant here
    monkeypatch.setattr(latent_quality, "scorer_nll", lambda scorer, samples, chosen: np.full(len(samples), 2.0))
    monkeypatch.setattr(latent_quality, "SPAN", 4)
    same = ["abcdefgh"] * 4  # four identical samples: 5 distinct 4-grams of 20, each sample all in the others
    apart = ["abcdefgh", "ijklmnop", "qrstuvwx", "yz012345"]  # nothing shared
    metrics = per_prompt([same, apart], ["p", "q"], UniformNgram(), None, spans={"abcd", "ijkl"})
    assert metrics["ngram_nll"].tolist() == [1.5, 1.5]
    assert metrics["model_nll"].tolist() == [2.0, 2.0]
    assert metrics["distinct4"].tolist() == pytest.approx([5 / 20, 1.0])
    assert metrics["self_similarity"].tolist() == pytest.approx([1.0, 0.0])
    assert metrics["entropy4"].tolist() == pytest.approx([np.log(5), np.log(20)])
    assert metrics["memorised"].tolist() == pytest.approx([4 / 20, 2 / 20])  # spans of 4 found in "training"


def test_bootstrap_interval_holds_the_mean_and_shrinks_with_agreement() -> None:
    rng = np.random.default_rng(0)
    noisy = [rng.normal(1.0, 0.5, 200), rng.normal(1.0, 0.5, 200)]
    mean, low, high = bootstrap(noisy, rng)
    assert low < mean < high
    assert mean == pytest.approx(np.mean(noisy))
    _, tight_low, tight_high = bootstrap([np.full(200, 1.0) + rng.normal(0, 0.01, 200)] * 2, rng)
    assert tight_high - tight_low < (high - low) / 10
    _, apart_low, apart_high = bootstrap([np.full(200, 1.0), np.full(200, 2.0)], rng)  # seeds that disagree
    assert apart_low == pytest.approx(1.0) and apart_high == pytest.approx(2.0)  # the band spans them
