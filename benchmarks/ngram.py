"""A character n-gram model with interpolated modified Kneser-Ney smoothing (Chen & Goodman 1998): a frozen
scorer of generated text that is not the model being judged.

    model = KneserNey.fit(training_text, order=6)
    model.nll(text)                       # nats per character of `text`, each scored from its own history
    model.probabilities(history)          # the next character's distribution, summing to 1

Written here rather than taken from a library: NLTK's `nltk.lm.KneserNeyInterpolated` is the maintained
candidate, but it fails on histories it never saw (nltk#2332) and is pure Python throughout; KenLM's
Python package queries models but cannot build them.  This one is tested for normalisation
(tests/test_ngram.py) and scores 100k characters in about a second.

The highest order uses counts, lower orders continuation counts (how many different characters precede an
n-gram); each order has three discounts (for n-grams seen once, twice, three or more times) from its
counts of counts; the lowest order interpolates with the uniform distribution over the vocabulary, so
every character of the vocabulary has a probability above zero.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass


@dataclass
class _Order:
    counts: dict[str, Counter[str]]  # history -> next character -> count (or continuation count)
    totals: dict[str, int]  # history -> sum of its counts
    kinds: dict[str, tuple[int, int, int]]  # history -> how many next characters have count 1, 2, >= 3
    discounts: tuple[float, float, float]


def _discounts(counts: dict[str, Counter[str]]) -> tuple[float, float, float]:
    """Modified Kneser-Ney's D1, D2, D3+ from the counts of counts n1..n4 (Chen & Goodman's estimate)."""
    n = Counter()
    for following in counts.values():
        for c in following.values():
            if c <= 4:
                n[c] += 1
    if not n[1] or not n[2]:
        return 0.5, 0.5, 0.5  # too little data to estimate: a plain absolute discount
    y = n[1] / (n[1] + 2 * n[2])
    d1 = 1 - 2 * y * n[2] / n[1]
    d2 = 2 - 3 * y * n[3] / n[2] if n[2] else d1
    d3 = 3 - 4 * y * n[4] / n[3] if n[3] else d2
    return tuple(min(max(d, 0.0), c) for d, c in zip((d1, d2, d3), (1, 2, 3), strict=True))  # type: ignore[return-value]


class KneserNey:
    """An interpolated modified Kneser-Ney character model of a fixed order over a fixed vocabulary."""

    def __init__(self, orders: list[_Order], vocab: list[str]) -> None:
        self.orders, self.vocab = orders, vocab  # orders[k]: histories of k characters

    @classmethod
    def fit(cls, text: str, order: int = 6, vocab: list[str] | None = None) -> KneserNey:
        """Count `text` (n-grams of up to `order` characters: histories of up to order - 1)."""
        vocab = sorted(set(text) | set(vocab or []))
        top = order - 1
        raw: dict[str, Counter[str]] = defaultdict(Counter)
        for i in range(top, len(text)):
            raw[text[i - top : i]][text[i]] += 1
        levels: list[dict[str, Counter[str]]] = [dict() for _ in range(order)]
        levels[top] = raw
        # Continuation counts of order k: distinct characters seen before each (k+1)-gram of order k + 1.
        for k in range(top - 1, -1, -1):
            higher = raw if k == top - 1 else levels[k + 1]
            lower: dict[str, Counter[str]] = defaultdict(Counter)
            for history, following in higher.items():
                for char in following:
                    lower[history[1:]][char] += 1
            levels[k] = lower
        orders = []
        for counts in levels:
            totals = {h: sum(f.values()) for h, f in counts.items()}
            kinds = {}
            for h, f in counts.items():
                ones = twos = more = 0
                for c in f.values():
                    if c == 1:
                        ones += 1
                    elif c == 2:
                        twos += 1
                    else:
                        more += 1
                kinds[h] = (ones, twos, more)
            orders.append(_Order(dict(counts), totals, kinds, _discounts(counts)))
        return cls(orders, vocab)

    @property
    def order(self) -> int:
        return len(self.orders)

    def probability(self, history: str, char: str) -> float:
        """P(char | the last order - 1 characters of `history`)."""
        p = 1.0 / len(self.vocab)
        for k, level in enumerate(self.orders):
            if k > len(history):
                break
            h = history[len(history) - k :] if k else ""
            total = level.totals.get(h)
            if not total:
                continue  # never seen this history: the lower order's estimate stands
            d1, d2, d3 = level.discounts
            c = level.counts[h].get(char, 0)
            discounted = max(c - (d1 if c == 1 else d2 if c == 2 else d3), 0.0) if c else 0.0
            ones, twos, more = level.kinds[h]
            gamma = (d1 * ones + d2 * twos + d3 * more) / total
            p = discounted / total + gamma * p
        return p

    def probabilities(self, history: str) -> dict[str, float]:
        """The next character's distribution over the vocabulary."""
        return {char: self.probability(history, char) for char in self.vocab}

    def nll(self, text: str, history: str = "") -> float:
        """Mean negative log-likelihood in nats per character of `text`, after `history` (its first characters
        are scored from the shorter histories they have)."""
        top = self.order - 1
        full = history + text
        total = 0.0
        for i in range(len(history), len(full)):
            total -= math.log(self.probability(full[max(0, i - top) : i], full[i]))
        return total / len(text)
