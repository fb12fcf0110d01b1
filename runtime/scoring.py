"""Score a cell on a text with onnxruntime alone, and compare two cells of one model on the same text.

A generation cell has no encoder, so it cannot compute the training ELBO.  What it can compute is the
teacher-forced likelihood of a text with the latent drawn from the prior: feed the text's characters one
step at a time, each step's z = mu_p + sigma_p * eps from that step's noise, and add up the log-probability
the step gives the next character.  With K noise sequences per window of W characters, K likelihoods
p_k(window) come out, and

    −log (1/K Σ_k p_k(window)) / W   is an importance-weighted bound with the prior as proposal (IW-K):
                                     it lies above the model's true NLL and falls towards it as K grows;
    −(1/K) Σ_k log p_k(window) / W    is the mean teacher-forced NLL (the IW-1 bound, averaged).

Every cell of a model (float32, float16, int8) is scored on the same noise for the same seed, so their
difference is the cost of the weight format alone.  The windows are vrnn-eval's: the state starts at zero
every W characters, and each window's first character is predicted from the one before it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from vrnn.runtime.cell import OnnxCell
from vrnn.runtime.stop_signals import raise_if_stopped

SCORE_BATCH = 256  # windows per run(): large enough to use the matrix kernels, small enough to bound memory


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, in float64."""
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def teacher_forced_logits(cell: OnnxCell, inputs: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Logits [T, B, V] of the cell fed the characters `inputs` [B, T] one step at a time from the zero state,
    with `eps` [T, B, Z] as each step's latent noise.  Step t's logits predict the character after inputs[:, t]."""
    batch, steps = inputs.shape
    state = cell.initial_state(batch)
    uniform = np.zeros((1, batch))  # the cell's own pick is not used
    logits = []
    for t in range(steps):
        _, step_logits, state = cell.steps(inputs[:, t], state, eps[t : t + 1], uniform, 1.0)
        logits.append(step_logits[0])
    return np.stack(logits)


def windows(ids: Sequence, window: int) -> Iterator:
    """Cut ids (a numpy array, a memory map or a tensor) into consecutive windows of window + 1 ids that
    overlap by one, made one at a time: each window's first id is context, the others are predicted, so every
    id after the first is predicted exactly once.  The last window may be shorter.  The windows of
    vrnn-score, vrnn-eval and the trainer's validation."""
    for start in range(0, len(ids) - 1, window):
        yield ids[start : start + window + 1]


def _batches(ids: np.ndarray, window: int) -> list[np.ndarray]:
    """The windows as equal-length batches [B, W + 1] of at most SCORE_BATCH rows (a short last window alone)."""
    rows = list(windows(ids, window))
    full = [r for r in rows if len(r) == window + 1]
    batches = [np.stack(full[i : i + SCORE_BATCH]) for i in range(0, len(full), SCORE_BATCH)]
    return batches + [r[None, :] for r in rows if len(r) != window + 1]


@dataclass(frozen=True)
class CellScore:
    """The scores of one cell on one text (nats per character)."""

    chars: int  # characters scored
    window: int
    samples: int  # K, noise sequences per window
    seed: int
    iw_nats: float  # −log mean_k p_k(window), summed over windows, per character: the IW-K bound
    mean_nats: float  # mean_k −log p_k(window), summed over windows, per character

    def summary(self) -> dict[str, float | int]:
        """The score as plain JSON-able values."""
        return {
            "chars": self.chars,
            "window": self.window,
            "samples": self.samples,
            "seed": self.seed,
            "iw_nats": self.iw_nats,
            "mean_nats": self.mean_nats,
            "iw_bpc": self.iw_nats / np.log(2),
        }


def score_cell(cell: OnnxCell, ids: np.ndarray, window: int = 256, samples: int = 8, seed: int = 0) -> CellScore:
    """Score `ids` (the context character, then the text to score) with `cell`: see the module's docstring.
    The noise is numpy's default_rng(seed), drawn batch by batch, sample by sample, as float32 standard
    normals [W, B, Z]: the same for every cell with the same sizes."""
    if len(ids) < 2:
        raise ValueError("nothing to score: ids holds the context character and no text")
    rng = np.random.default_rng(seed)
    z = cell.config.latent_size
    iw_total = mean_total = 0.0
    for batch in _batches(ids, window):
        raise_if_stopped()
        inputs, targets = batch[:, :-1], batch[:, 1:]
        steps, rows = inputs.shape[1], inputs.shape[0]
        per_sample = np.empty((samples, rows))  # log p_k(window) per row
        for k in range(samples):
            eps = rng.standard_normal((steps, rows, z), dtype=np.float32)
            log_probs = log_softmax(teacher_forced_logits(cell, inputs, eps))  # [T, B, V]
            picked = np.take_along_axis(log_probs, targets.T[:, :, None], axis=2)[:, :, 0]
            per_sample[k] = picked.sum(axis=0)
        peak = per_sample.max(axis=0)
        iw_total -= float(np.sum(peak + np.log(np.mean(np.exp(per_sample - peak), axis=0))))
        mean_total -= float(np.sum(per_sample.mean(axis=0)))
    chars = len(ids) - 1
    return CellScore(chars, window, samples, seed, iw_total / chars, mean_total / chars)


@dataclass(frozen=True)
class CellAgreement:
    """How closely a cell follows a reference cell of the same model along one text, on the same noise."""

    steps: int  # next-character distributions compared
    mean_kl: float  # mean KL(reference || candidate) of the next-character distributions, nats
    max_kl: float
    max_logit_diff: float  # max |logits - reference logits|
    argmax_agreement: float  # fraction of steps where both put the most weight on the same character


def compare_cells(reference: OnnxCell, candidate: OnnxCell, inputs: np.ndarray, eps: np.ndarray) -> CellAgreement:
    """Teacher-force both cells along `inputs` [B, T] with the noise `eps` [T, B, Z] and compare each step's
    next-character distribution.  Both follow the same text, so a near-tie cannot send them down different
    paths (as free generation would)."""
    ref = teacher_forced_logits(reference, inputs, eps)
    cand = teacher_forced_logits(candidate, inputs, eps)
    log_p, log_q = log_softmax(ref), log_softmax(cand)
    kl = np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)
    return CellAgreement(
        steps=int(kl.size),
        mean_kl=float(kl.mean()),
        max_kl=float(kl.max()),
        max_logit_diff=float(np.max(np.abs(ref.astype(np.float64) - cand))),
        argmax_agreement=float(np.mean(ref.argmax(-1) == cand.argmax(-1))),
    )
