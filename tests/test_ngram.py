"""The frozen n-gram scorer of the latent study (benchmarks/ngram.py): every next-character distribution sums
to 1 over the vocabulary, seen and unseen histories alike; it learns; it is the textbook estimate on a case
worked by hand."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from conftest import TINY_TEXT

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from ngram import KneserNey


@pytest.mark.parametrize("order", [1, 2, 3, 6])
def test_every_distribution_sums_to_one(order: int) -> None:
    model = KneserNey.fit(TINY_TEXT, order=order, vocab=["#"])  # "#" never occurs: it still gets mass
    histories = ["", "R", "RO", "ROMEO", "But soft", "zzzz", "##", TINY_TEXT[:40], "\n\n"]
    for history in histories:
        probabilities = model.probabilities(history)
        assert math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-12), (order, history)
        assert min(probabilities.values()) > 0


def test_it_learns_and_higher_orders_help_on_seen_text() -> None:
    held_out = "ROMEO:\nBut soft, what light through yonder window breaks?\n"
    scores = [KneserNey.fit(TINY_TEXT, order=n).nll(held_out) for n in (1, 3, 6)]
    assert scores[0] > scores[1] > scores[2]
    assert scores[0] < math.log(len(set(TINY_TEXT)))  # better than uniform


def test_bigram_estimate_worked_by_hand() -> None:
    """Text "abab" (order 2): bigrams ab, ba, ab; history "a" -> {b: 2}.  Counts of counts: n1 = 1 (ba),
    n2 = 1 (ab): Y = 1/3, D1 = 1 - 2Y n2/n1 = 1/3, D2 = 2 - 3Y n3/n2 = 2 (clamped), D3 as D2.  Unigram
    continuation counts: b after one distinct char, a after one: {a: 1, b: 1}, total 2, both seen once;
    its D1 = 0.5 (too little data), so P1(b) = (1 - 0.5)/2 + (0.5 * 2 / 2) * 1/2 = 0.5."""
    model = KneserNey.fit("abab", order=2)
    p1_b = (1 - 0.5) / 2 + (0.5 * 2 / 2) * 0.5
    assert math.isclose(model.probability("", "b"), p1_b)
    d2 = model.orders[1].discounts[1]
    gamma = d2 * 1 / 2
    assert math.isclose(model.probability("a", "b"), (2 - d2) / 2 + gamma * p1_b)
