"""The VRNN's equations, one time step at a time, with no speed tricks: the reference every fast path is
tested against (the batched and fused training forward in vrnn.models.vrnn, and through VRNN.step the
exported ONNX cell).  It reads the parameters of a VRNN module and recomputes its ELBO terms the plain way.

Per window x_0 x_1 ... x_T (x_0 is context), with h_0 = 0 and phi_z(z_0) = 0, for t = 1..T:

    h_{t-1}  = GRU([phi_x(x_{t-1}), phi_z(z_{t-1})], h_{t-2})          (every layer; the top one is read below)
    prior    N(mu_p, sigma_p) = prior(h_{t-1})
    encoder  N(mu_q, sigma_q) = encoder([phi_x(x_t), h_{t-1}])        filtering
                              = encoder([b_t, h_{t-1}])               smoothing, b_t = GRU_back(phi_x(x_t), b_{t+1})
    z_t      = mu_q + sigma_q * eps_t
    logits   = decoder([phi_z(z_t), h_{t-1}])
    nll_t    = -log softmax(logits)[x_t]
    kl_t     = KL(N(mu_q, sigma_q) || N(mu_p, sigma_p))                 per latent dimension
    aux_t    = -log N(b_t; aux(z_t)), averaged over b's dimensions     smoothing only
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vrnn.models.vrnn import VRNN, gaussian_kl, gaussian_params


def backward_states(model: VRNN, tokens: Tensor) -> list[Tensor]:
    """b_1..b_T of the smoothing posterior for windows `tokens` [B, T+1], one GRU cell step at a time."""
    rnn = model.backward_rnn
    cell = torch.nn.GRUCell(rnn.input_size, rnn.hidden_size).to(rnn.weight_ih_l0.dtype)
    cell.load_state_dict({name.removesuffix("_l0"): value for name, value in rnn.state_dict().items()})
    B, T = tokens.shape[0], tokens.shape[1] - 1
    b = torch.zeros(B, rnn.hidden_size, dtype=rnn.weight_ih_l0.dtype)
    states: list[Tensor] = [b] * T
    for t in reversed(range(1, T + 1)):
        b = cell(model.phi_x(tokens[:, t]), b)
        states[t - 1] = b
    return states


def elbo_terms(model: VRNN, tokens: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """(nll [B, T], kl [B, T, Z], aux [B, T] or None) for windows `tokens` [B, T+1] and noise `eps` [T, B, Z]."""
    B, T = tokens.shape[0], tokens.shape[1] - 1
    smoothing = model.config.posterior == "smoothing"
    b = backward_states(model, tokens) if smoothing else None
    h, phi_z = (s.to(eps.dtype) for s in model.initial_state(B))
    nll, kl, aux = [], [], []
    for t in range(1, T + 1):
        x = torch.cat([model.phi_x(tokens[:, t - 1]), phi_z], dim=-1)
        layers = []
        for cell, h_layer in zip(model.rnn, h, strict=True):
            x = cell(x, h_layer)
            layers.append(x)
        h = torch.stack(layers)
        h_top = h[-1]
        mu_p, sigma_p = gaussian_params(model.prior(h_top))
        evidence = b[t - 1] if smoothing else model.phi_x(tokens[:, t])
        mu_q, sigma_q = gaussian_params(model.encoder(torch.cat([evidence, h_top], dim=-1)))
        z = mu_q + sigma_q * eps[t - 1]
        phi_z = model.phi_z(z)
        logits = model.decoder(torch.cat([phi_z, h_top], dim=-1))
        nll.append(F.cross_entropy(logits, tokens[:, t], reduction="none"))
        kl.append(gaussian_kl(mu_q, sigma_q, mu_p, sigma_p))
        if smoothing:
            mu_a, sigma_a = gaussian_params(model.aux(z))
            aux.append(-torch.distributions.Normal(mu_a, sigma_a).log_prob(b[t - 1].detach()).mean(-1))
    return torch.stack(nll, 1), torch.stack(kl, 1), torch.stack(aux, 1) if smoothing else None
