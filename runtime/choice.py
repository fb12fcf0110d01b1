"""Choosing the next character from the cell's logits, in numpy.

Temperature, top-k, top-p and greedy decoding are plain code shared by the ONNX
runtime and the PyTorch path: given the same logits and the same uniform numbers
both pick the same character.  Sampling is by inverse CDF: one uniform number in
[0, 1) per character.  The common case, temperature only (`choose_unfiltered`),
is also built into the ONNX cell with the same float64 operations, so the cell
can generate many characters per run(); this module is its reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vrnn.runtime.errors import UsageError

# The largest latent temperature: 100 times the model's noise is far past any useful text, and larger values
# (1e38 and up) overflow float32 in the latent and end in non-finite logits.  The JavaScript runtime uses it too.
MAX_LATENT_TEMPERATURE = 100.0


@dataclass(frozen=True, kw_only=True)
class SamplingOptions:
    """How the next character is chosen from the distribution the cell predicts.  Keyword-only: the fields'
    order means nothing, so reordering them can never swap two options."""

    temperature: float = 1.0  # logits are divided by it; < 1 sharpens, > 1 flattens
    top_k: int | None = None  # keep only the k most likely characters
    top_p: float | None = None  # keep the smallest set whose probability reaches p (nucleus)
    greedy: bool = False  # always take the most likely character (ignores the others)
    # Scales the latent noise: 0 = the prior's mean at every step, 1 = the model.  Not a choice of character,
    # so it combines with every option above; with greedy and 0 the text is the same for every seed.
    latent_temperature: float = 1.0

    @property
    def unfiltered(self) -> bool:
        """Temperature only: the choice `choose_unfiltered` makes.  A top-p of 1 filters nothing: it is no top-p
        (docs/cell-spec.md section 4.2), as the cell's per-row input says it."""
        return not self.greedy and self.top_k is None and (self.top_p is None or self.top_p >= 1)

    def row(self) -> tuple[float, int, float]:
        """(temperature, top_k, top_p) as a schema-3 cell takes them for one row: top_k 0 and top_p 1 for none,
        and greedy as top_k 1 at temperature 1, which picks the same character (docs/cell-spec.md, 4.3)."""
        if self.greedy:
            return 1.0, 1, 1.0
        return float(self.temperature), self.top_k or 0, 1.0 if self.top_p is None else float(self.top_p)

    def validate(self, vocab_size: int) -> SamplingOptions:
        """Refuse values that cannot work, with a message naming the option."""
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise UsageError(f"--temperature must be a finite number > 0, got {t!r}")
        k = self.top_k
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= vocab_size):
            raise UsageError(f"--top-k must be an integer from 1 to the vocabulary size {vocab_size}, got {k!r}")
        if self.top_p is not None:
            p = self.top_p
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 < p <= 1.0):
                raise UsageError(f"--top-p must be in (0, 1], got {p!r}")
        lt = self.latent_temperature
        if isinstance(lt, bool) or not isinstance(lt, (int, float)) or not 0 <= lt <= MAX_LATENT_TEMPERATURE:
            bound = f"{MAX_LATENT_TEMPERATURE:g}"
            raise UsageError(f"--latent-temperature must be a finite number in [0, {bound}], got {lt!r}")
        if self.greedy and (self.top_k is not None or self.top_p is not None or t != 1.0):
            raise UsageError("--greedy cannot be combined with --temperature, --top-k or --top-p")
        return self


def _scaled(logits: np.ndarray, temperature: float) -> np.ndarray:
    """(logits - row max) / temperature in float64: every entry <= 0 and the maximum exactly 0, so a
    tiny temperature gives -inf for the others (greedy in the limit), never inf - inf = nan."""
    scaled = logits.astype(np.float64)
    scaled -= scaled.max(axis=1, keepdims=True)
    if temperature != 1.0:
        with np.errstate(over="ignore"):
            scaled /= temperature
    return scaled


@dataclass(frozen=True)
class RowOptions:
    """Each row's sampling options, as a schema-3 cell's inputs take them: `temperature` float64 [B], `top_k`
    int64 [B] (0: none) and `top_p` float64 [B] (1: none).  The latent temperature is not here: it scales a
    row's noise before the cell sees it."""

    temperature: np.ndarray
    top_k: np.ndarray
    top_p: np.ndarray

    @classmethod
    def of(cls, options: Sequence[SamplingOptions]) -> RowOptions:
        """One row for each of `options`, in order."""
        rows = [o.row() for o in options]
        return cls(
            np.array([r[0] for r in rows], np.float64),
            np.array([r[1] for r in rows], np.int64),
            np.array([r[2] for r in rows], np.float64),
        )

    @classmethod
    def same(cls, options: SamplingOptions, batch: int) -> RowOptions:
        """`batch` rows of the same options."""
        return cls.of([options]).repeat(batch)

    def repeat(self, batch: int) -> RowOptions:
        """This one row `batch` times."""
        return RowOptions(*(np.repeat(a, batch) for a in (self.temperature, self.top_k, self.top_p)))

    @classmethod
    def given(cls, rows: RowOptions | float, batch: int) -> RowOptions:
        """`rows` itself, or a temperature for `batch` rows without top-k or top-p."""
        return rows if isinstance(rows, RowOptions) else cls.same(SamplingOptions(temperature=rows), batch)

    def options(self, row: int) -> SamplingOptions:
        """Row `row` as SamplingOptions (greedy comes back as top_k 1, which picks the same characters)."""
        k, p = int(self.top_k[row]), float(self.top_p[row])
        return SamplingOptions(temperature=float(self.temperature[row]), top_k=k or None, top_p=p if p < 1 else None)


def _filtered_probabilities(logits: np.ndarray, options: SamplingOptions) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities in float64 after temperature and filtering.

    Returns (probs, order): with top-k/top-p the columns of `probs` are sorted by
    descending logit and `order` maps them back to token ids; otherwise `order` is None.
    """
    scaled = _scaled(logits, options.temperature)
    order = None
    if not options.unfiltered:
        order = np.argsort(-scaled, axis=1, kind="stable")
        scaled = np.take_along_axis(scaled, order, axis=1)
        if options.top_k is not None:
            scaled[:, options.top_k :] = -np.inf
    probs = np.exp(scaled)  # the row maximum is already 0 (see _scaled) and survives top-k
    # A running sum, not numpy's pairwise one: the order of additions is part of docs/cell-spec.md, so
    # that runtimes in other languages add in the same order.
    probs /= np.cumsum(probs, axis=1)[:, -1:]
    if options.top_p is not None and options.top_p < 1:  # a top-p of 1 is none (see SamplingOptions.unfiltered)
        before = np.cumsum(probs, axis=1) - probs  # mass strictly above each candidate
        probs = np.where(before < options.top_p, probs, 0.0)
    return probs, order


def _cdf(probs: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(probs, axis=1)
    return cdf / cdf[:, -1:]


def choose_unfiltered(logits: np.ndarray, uniform: np.ndarray, temperature: float) -> np.ndarray:
    """Inverse-CDF sampling over the whole vocabulary at `temperature`: the common case, and the
    choice the ONNX cell makes in-graph with the same float64 operations (export/onnx_cell.py).

    The CDF stays unnormalised and the uniform number is scaled by its total instead:
    row by row the same arithmetic at any batch size, so batch 1 and batch N agree.
    """
    weights = _scaled(logits, temperature)
    np.exp(weights, out=weights)
    cdf = np.cumsum(weights, axis=1)
    threshold = uniform * cdf[:, -1]
    if len(cdf) == 1:
        picked = np.array([np.searchsorted(cdf[0], threshold[0], side="right")], dtype=np.int64)
    else:
        picked = (cdf <= threshold[:, None]).sum(axis=1)
    # u * total can round up to the total: take the last character with non-zero weight instead.
    for row in np.flatnonzero(picked >= cdf.shape[1]):
        picked[row] = np.searchsorted(cdf[row], cdf[row, -1], side="left")
    return picked.astype(np.int64)


def choose(logits: np.ndarray, uniform: np.ndarray, options: SamplingOptions) -> np.ndarray:
    """Pick one token id per row of `logits` [B, V] using `uniform` [B] numbers in [0, 1)."""
    if options.greedy:
        return logits.argmax(axis=1).astype(np.int64)
    if options.unfiltered:
        return choose_unfiltered(logits, uniform, options.temperature)
    probs, order = _filtered_probabilities(logits, options)
    cdf = _cdf(probs)
    picked = (cdf <= uniform[:, None]).sum(axis=1)
    # Never pick past the last candidate with non-zero mass (u close to 1, rounding).
    picked = np.minimum(picked, (probs > 0).shape[1] - 1 - np.argmax((probs > 0)[:, ::-1], axis=1))
    if order is not None:
        picked = np.take_along_axis(order, picked[:, None], axis=1)[:, 0]
    return picked.astype(np.int64)


def choose_rows(logits: np.ndarray, uniform: np.ndarray, rows: RowOptions) -> np.ndarray:
    """Pick one token id per row of `logits` [B, V] with each row's own options: what a schema-3 cell computes
    in-graph (export/onnx_cell.py), row by row the same as `choose` with that row's options."""
    picked = np.empty(len(logits), np.int64)
    keys = np.stack([rows.temperature, rows.top_k.astype(np.float64), rows.top_p], axis=1)
    distinct, group = np.unique(keys, axis=0, return_inverse=True)
    for g in range(len(distinct)):
        members = np.flatnonzero(group.ravel() == g)
        picked[members] = choose(logits[members], uniform[members], rows.options(int(members[0])))
    return picked


def log_probabilities(logits: np.ndarray, options: SamplingOptions) -> np.ndarray:
    """The log-probabilities [B, V] (float64) of the distribution `choose` draws from with `options`: after
    temperature, top-k and top-p, renormalised; -inf for the characters they cut.  Greedy is certain: 0 for
    its pick, -inf elsewhere."""
    if options.greedy:
        out = np.full(logits.shape, -np.inf)
        out[np.arange(len(logits)), logits.argmax(axis=1)] = 0.0
        return out
    if options.unfiltered:
        scaled = _scaled(logits, options.temperature)
        return scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
    probs, order = _filtered_probabilities(logits, options)
    with np.errstate(divide="ignore"):
        sorted_log = np.log(probs / probs.sum(axis=1, keepdims=True))
    out = np.empty_like(sorted_log)
    np.put_along_axis(out, order, sorted_log, axis=1)
    return out


def decision_margin(logits: np.ndarray, uniform: np.ndarray, options: SamplingOptions) -> np.ndarray:
    """How close each row's choice is to flipping: the smallest distance of any decision boundary.

    The boundaries are the uniform number against the CDF, the k-th against the
    (k+1)-th scaled logit (top-k), the cumulative mass against p (top-p), and the
    top-two logit gap (greedy).  Two logit vectors that differ by rounding can only
    lead to different choices when this margin is about as small as that rounding:
    parity tests use it to tell a real divergence from a float near-tie.
    """
    scaled = _scaled(logits, options.temperature)
    ranked = -np.sort(-scaled, axis=1)
    if options.greedy:
        return ranked[:, 0] - ranked[:, 1]
    probs, _ = _filtered_probabilities(logits, options)
    margins = [np.abs(_cdf(probs) - uniform[:, None]).min(axis=1)]
    if options.top_k is not None and options.top_k < scaled.shape[1]:
        margins.append(ranked[:, options.top_k - 1] - ranked[:, options.top_k])
    if options.top_p is not None and options.top_p < 1:
        before_p = SamplingOptions(temperature=options.temperature, top_k=options.top_k)
        unfiltered, _ = _filtered_probabilities(logits, before_p)
        ranked_probs = -np.sort(-unfiltered, axis=1)
        before = np.cumsum(ranked_probs, axis=1) - ranked_probs
        margins.append(np.abs(before - options.top_p).min(axis=1))
    return np.min(margins, axis=0)
