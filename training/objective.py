"""The training objective and the validation score.

Training minimises, per character, cross-entropy + beta * KL, where beta ramps
from 0 to 1 over the KL annealing steps and KL may be floored per latent
dimension ("free bits", Kingma et al. 2016).  Validation (vrnn.training.evaluation.evaluate)
reports the plain negative ELBO (beta = 1, no free bits): an upper bound on the true NLL.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vrnn.models.vrnn import ElboTerms


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
