"""The training objective and the validation score.

Training minimises, per character, cross-entropy + beta * KL, where beta ramps
from 0 to 1 over the KL annealing steps and KL may be floored per latent
dimension ("free bits", Kingma et al. 2016).  Validation reports the plain
negative ELBO (beta = 1, no free bits): an upper bound on the true NLL.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vrnn.models.vrnn import VRNN, ElboTerms
from vrnn.training.evaluation import LN2, score_text


def kl_weight(step: int, anneal_steps: int) -> float:
    """Linear KL warm-up: 0 at step 0, 1 from `anneal_steps` on (always 1 if anneal_steps is 0)."""
    return 1.0 if anneal_steps <= 0 else min(1.0, step / anneal_steps)


def training_loss(
    terms: ElboTerms, beta: float, free_bits: float, aux_weight: float = 0.0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(loss, nll, kl, aux) per character; loss = nll + beta * max(KL_d, free_bits) summed over dims d
    + aux_weight * aux (the smoothing posterior's auxiliary cost, 0 without one)."""
    nll = terms.nll.mean()
    kl_per_dim = terms.kl.mean(dim=(0, 1))  # [Z], averaged over batch and time
    kl = kl_per_dim.sum()
    kl_term = torch.clamp(kl_per_dim, min=free_bits).sum() if free_bits > 0 else kl
    loss = nll + beta * kl_term
    aux = terms.aux.mean() if terms.aux is not None else torch.zeros((), device=nll.device)
    if aux_weight > 0:
        loss = loss + aux_weight * aux
    return loss, nll, kl, aux


@dataclass
class Evaluation:
    """Negative ELBO on a text, per character."""

    nll: float  # nats/char reconstruction term
    kl: float  # nats/char KL term
    chars: int  # characters predicted
    aux: float | None = None  # the smoothing posterior's auxiliary cost, not part of the bound
    active_units_kl: int = 0  # latent dimensions with average KL > 0.01 nats

    @property
    def elbo(self) -> float:
        """Negative ELBO in nats per character (lower is better)."""
        return self.nll + self.kl

    @property
    def bpc(self) -> float:
        """Negative ELBO in bits per character."""
        return self.elbo / LN2


def evaluate(model: VRNN, ids: Tensor, seq_len: int, batch_size: int, seed: int = 0) -> Evaluation:
    """Single-sample negative ELBO over `ids`: consecutive windows of seq_len (state reset per window).

    Every character after the first is predicted once, given the preceding
    character of its window as context.  The posterior noise comes from a
    generator seeded with `seed`, so the score of given weights is deterministic.
    This is vrnn-eval's `score_text` with one sample per window, on the model's device.
    """
    score = score_text(model, ids, seq_len, samples=1, batch_size=batch_size, seed=seed)
    return Evaluation(score.nll, score.kl, score.chars, score.aux, score.active_units_kl)
