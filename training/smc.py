"""A sequential Monte Carlo bound on a text's log-likelihood (FIVO: Maddison et al. 2017; Le et al. 2018;
Naesseth et al. 2018), tighter than IWAE-K for a model whose latent carries much.

Per window, K particles are latent trajectories drawn from the model's own posterior q (the proposal), each
carrying its GRU state.  At every step t each particle draws z_t ~ q(z_t | ., h_{t-1}) and gains the
incremental log-weight

    log alpha_t = log p(x_t | z_t, h_{t-1}) + log p(z_t | h_{t-1}) - log q(z_t | ., h_{t-1}).

When the effective sample size (sum w)^2 / sum w^2 of a window's weights falls below `ess_fraction` * K, the
window's estimate gains log mean w, K ancestors are drawn in proportion to w (multinomial), their states
copied, and the weights reset to 1.  The log of the product of those means (and of the last one) is an
unbiased estimate of p(x) in the linear domain, so its negative is an upper bound on -log p(x) in expectation,
like -IWAE-K; with resampling never triggered it *is* -IWAE-K for the same noise (tested).  IWAE weighs whole
trajectories, so a latent that carries information makes its weights degenerate as a window grows: its gain
over the ELBO is at most log K.  Resampling keeps the particles where the posterior mass is.

The latent noise is drawn exactly as evaluation.score_text draws it (one CPU generator seeded with `seed`, one
tensor per group of windows), the ancestors from a second generator (seed + 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vrnn.models.vrnn import VRNN, gaussian_params, log_density_ratio
from vrnn.training.evaluation import Ids, checked_groups, scored_pieces

DEFAULT_ESS_FRACTION = 0.5


@dataclass
class SmcScore:
    """The SMC bound on a text, per character."""

    chars: int
    window: int
    particles: int
    smc: float  # negative SMC bound, nats/char
    resampling_rate: float  # resampling events per window step (0: the bound was IWAE-K)


@torch.no_grad()
def smc_windows(
    model: VRNN,
    tokens: Tensor,
    eps: Tensor,
    ancestry: torch.Generator,
    ess_fraction: float = DEFAULT_ESS_FRACTION,
) -> tuple[Tensor, int]:
    """log p-hat of each window of `tokens` [b, T+1] (tokens[:, 1:] given tokens[:, 0]) with K particles, where
    `eps` [T, b*K, Z] is the proposal noise (particle index fastest, as score_text repeats windows); returns
    (float64 [b], the number of resampling events)."""
    config = model.config
    T, b = tokens.shape[1] - 1, tokens.shape[0]
    K = eps.shape[1] // b
    chars = tokens.t().repeat_interleave(K, dim=1)  # [T+1, b*K]
    fx = model.phi_x(chars)  # [T+1, bK, E]
    encoder_x = model._backward_states(fx[1:]) if model.smoothing else fx[1:]  # [T, bK, E or Hb]
    h = [torch.zeros(b * K, config.hidden_size, device=tokens.device) for _ in model.rnn]
    phi_z = torch.zeros(b * K, config.embed_size, device=tokens.device)
    log_w = torch.zeros(b, K, dtype=torch.float64)
    estimate = torch.zeros(b, dtype=torch.float64)
    rows = torch.arange(b * K).view(b, K)
    events = 0
    for t in range(T):
        layer_input = torch.cat([fx[t], phi_z], dim=-1)  # the GRU consumes the previous character and latent
        for i, cell in enumerate(model.rnn):
            h[i] = cell(layer_input, h[i])
            layer_input = h[i]
        h_top = h[-1]
        mu_p, sigma_p = gaussian_params(model.prior(h_top))
        mu_q, sigma_q = gaussian_params(model.encoder(torch.cat([encoder_x[t], h_top], dim=-1)))
        phi_z = model.phi_z(mu_q + sigma_q * eps[t])
        logits = model.decoder(torch.cat([phi_z, h_top], dim=-1))
        log_px = -F.cross_entropy(logits, chars[t + 1], reduction="none")
        log_alpha = log_px + log_density_ratio(eps[t], mu_q, sigma_q, mu_p, sigma_p)
        log_w += log_alpha.double().cpu().view(b, K)
        if t == T - 1:
            break
        ess = torch.exp(2 * torch.logsumexp(log_w, 1) - torch.logsumexp(2 * log_w, 1))
        low = ess < ess_fraction * K
        if low.any():
            estimate[low] += torch.logsumexp(log_w[low], 1) - math.log(K)
            chosen = torch.multinomial(torch.softmax(log_w[low], 1), K, replacement=True, generator=ancestry)
            index = rows.clone()
            index[low] = rows[low].gather(1, chosen)
            index = index.flatten().to(tokens.device)
            h = [layer[index] for layer in h]
            phi_z = phi_z[index]
            log_w[low] = 0.0
            events += int(low.sum())
    estimate += torch.logsumexp(log_w, 1) - math.log(K)
    return estimate, events


@torch.no_grad()
def smc_text(
    model: VRNN,
    ids: Ids | list[Ids],
    window: int,
    particles: int,
    batch_size: int = 64,
    seed: int = 0,
    ess_fraction: float = DEFAULT_ESS_FRACTION,
) -> SmcScore:
    """Score ids[1:] given ids[0] (or a list of such stretches) with the SMC bound: the windows of
    evaluation.score_text, `particles` per window, `batch_size` particles per pass."""
    pieces = scored_pieces(ids)
    device = next(model.parameters()).device
    noise = torch.Generator().manual_seed(seed)
    ancestry = torch.Generator().manual_seed(seed + 1)
    total, events, steps = 0.0, 0, 0
    for tokens in checked_groups(model, pieces, window, max(1, batch_size // particles)):
        b, t = tokens.shape[0], tokens.shape[1] - 1
        eps = torch.randn((t, b * particles, model.config.latent_size), generator=noise).to(device)
        estimate, found = smc_windows(model, tokens.to(device), eps, ancestry, ess_fraction)
        total -= estimate.sum().item()
        events += found
        steps += b * max(t - 1, 0)
    chars = sum(len(piece) - 1 for piece in pieces)
    return SmcScore(chars, window, particles, total / chars, events / max(steps, 1))
