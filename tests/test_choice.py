"""The numpy sampling code shared by both paths."""

from __future__ import annotations

import numpy as np
import pytest

from vrnn.runtime.choice import SamplingOptions, choose, decision_margin
from vrnn.runtime.errors import UsageError
from vrnn.runtime.loop import SeededNoise

LOGITS = np.log(np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]], dtype=np.float32))


def frequencies(options: SamplingOptions, n: int = 40_000, row: int = 0) -> np.ndarray:
    u = np.random.default_rng(0).random(n)
    picks = choose(np.repeat(LOGITS[row : row + 1], n, axis=0), u, options)
    return np.bincount(picks, minlength=4) / n


def test_sampling_follows_the_distribution() -> None:
    np.testing.assert_allclose(frequencies(SamplingOptions()), [0.1, 0.2, 0.3, 0.4], atol=0.01)


def test_temperature_sharpens_and_flattens() -> None:
    cold, hot = frequencies(SamplingOptions(temperature=0.5)), frequencies(SamplingOptions(temperature=2.0))
    expected_cold = np.array([0.1, 0.2, 0.3, 0.4]) ** 2 / np.sum(np.array([0.1, 0.2, 0.3, 0.4]) ** 2)
    np.testing.assert_allclose(cold, expected_cold, atol=0.01)
    assert hot[0] > 0.1 and hot[3] < 0.4


def test_top_k_and_top_p_keep_the_right_candidates() -> None:
    np.testing.assert_allclose(frequencies(SamplingOptions(top_k=2)), [0, 0, 3 / 7, 4 / 7], atol=0.01)
    # top-p 0.5: 0.4 is not enough, 0.4 + 0.3 reaches it -> {3, 2}
    np.testing.assert_allclose(frequencies(SamplingOptions(top_p=0.5)), [0, 0, 3 / 7, 4 / 7], atol=0.01)
    np.testing.assert_allclose(frequencies(SamplingOptions(top_p=0.3), row=1), [1, 0, 0, 0])
    np.testing.assert_allclose(frequencies(SamplingOptions(top_k=1)), [0, 0, 0, 1])


def test_greedy_is_argmax_and_u_near_one_stays_in_range() -> None:
    assert list(choose(LOGITS, np.array([0.0, 0.0]), SamplingOptions(greedy=True))) == [3, 0]
    picks = choose(LOGITS, np.array([1 - 1e-16, 1 - 1e-16]), SamplingOptions(top_k=2))
    assert picks[0] in (2, 3) and picks[1] in (0, 1, 2, 3)


def test_decision_margin_measures_distance_to_the_cdf() -> None:
    margin = decision_margin(LOGITS[:1], np.array([0.3 + 1e-4]), SamplingOptions())
    assert margin[0] == pytest.approx(1e-4, rel=1e-2)


@pytest.mark.parametrize(
    "options",
    [
        SamplingOptions(temperature=0),
        SamplingOptions(temperature=float("nan")),
        SamplingOptions(top_k=0),
        SamplingOptions(top_k=5),
        SamplingOptions(top_p=0.0),
        SamplingOptions(top_p=1.01),
        SamplingOptions(greedy=True, top_k=2),
    ],
)
def test_invalid_options_are_refused(options: SamplingOptions) -> None:
    with pytest.raises(UsageError):
        options.validate(4)


def test_seeded_noise_does_not_depend_on_chunking() -> None:
    whole = SeededNoise(3, 2, 5)
    parts = SeededNoise(3, 2, 5)
    np.testing.assert_array_equal(whole.eps(10), np.concatenate([parts.eps(3), parts.eps(7)]))
    np.testing.assert_array_equal(whole.uniform(10), np.concatenate([parts.uniform(4), parts.uniform(6)]))


def test_batch_1_and_batch_n_choose_alike_even_at_the_edges() -> None:
    """The unfiltered path takes another route at batch 1 (searchsorted); it must pick the same ids."""
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((500, 65)) * 4).astype(np.float32)
    logits[:50, 40:] = -1e4  # weights that underflow to exactly zero at the end of the vocabulary
    u = rng.random(500)
    u[:25] = np.nextafter(1.0, 0.0)  # the largest uniform below 1: u * total may round to the total
    for options in (SamplingOptions(), SamplingOptions(temperature=0.7)):
        batched = choose(logits, u, options)
        singles = np.concatenate([choose(logits[i : i + 1], u[i : i + 1], options) for i in range(500)])
        np.testing.assert_array_equal(batched, singles)
        probs = np.exp(logits.astype(np.float64) / options.temperature)
        assert np.all(probs[np.arange(500), batched] > 0)  # never a character of zero weight
        assert np.all(batched[:50] < 40)


@pytest.mark.parametrize("extra", [{}, {"top_k": 3}, {"top_p": 0.9}])
def test_a_vanishing_temperature_is_greedy_without_nan(extra: dict) -> None:
    logits = np.array([[1e30, -1e30, 3.0, 2.0], [0.1, 0.4, 0.3, 0.2]], dtype=np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow, no nan
        picks = choose(logits, np.array([0.999, 0.5]), SamplingOptions(temperature=1e-300, **extra))
    assert list(picks) == [0, 1]
