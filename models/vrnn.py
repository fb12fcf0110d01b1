"""The Variational RNN (Chung et al. 2015) for characters, in one file.

Notation, per time step t (x_t a character, z_t a latent vector, h the GRU state):

    phi_x(x)  = ELU(Linear(Embedding(x)))                      [E]
    phi_z(z)  = ELU(Linear(z))                                 [E]
    prior     p(z_t | h_{t-1})              = N(mu_p, sigma_p)    Linear(h) -> [2Z]
    encoder   q(z_t | phi_x(x_t), h_{t-1})  = N(mu_q, sigma_q)    Linear([phi_x, h]) -> [2Z]   ("filtering")
          or  q(z_t | b_t, h_{t-1})         = N(mu_q, sigma_q)    Linear([b, h]) -> [2Z]       ("smoothing")
              with b_t = GRU_back(phi_x(x_t), b_{t+1}) run backwards over the window [Hb]
    decoder   p(x_t | z_t, h_{t-1})         = softmax(Linear([phi_z(z_t), h_{t-1}]))  [V]
    recurrence h_t = GRU([phi_x(x_t), phi_z(z_t)], h_{t-1})

The smoothing posterior (SRNN, Fraccaro et al. 2016; Z-forcing, Goyal et al. 2017) sees the
future of the window, which a filtering one cannot: whatever z_t could carry about x_t alone the
GRU receives for free.  Its auxiliary cost (Z-forcing) asks z_t to predict b_t:
    aux       p(b_t | z_t)                  = N(mu_a, sigma_a)    MLP(z) -> [2Hb], b_t held fixed
reported per dimension of b (its mean, not its sum, so that its weight does not scale with H).
Only prior, decoder and GRU make the generation cell, so every posterior exports the same way.

Standard deviations are softplus(.) + SIGMA_FLOOR, so they can neither reach zero
nor overflow.  With several GRU layers, prior, encoder and decoder read the top one.

The time convention is "rotated" so that generation needs one cell call per
character: a text x_0 x_1 ... x_T is modelled *given* its first character x_0
(the start character "\\n" for unprimed generation).  The state starts at zeros,
with phi_z of the (non-existent) z_0 taken as zeros, and the generation step
consumes the previous character:

    step(x_{t-1}, h_{t-2}, phi_z(z_{t-1}), eps_t):
        h_{t-1} = GRU([phi_x(x_{t-1}), phi_z(z_{t-1})], h_{t-2})
        z_t     = mu_p(h_{t-1}) + sigma_p(h_{t-1}) * eps_t
        logits  = decoder(phi_z(z_t), h_{t-1})
        return logits, h_{t-1}, phi_z(z_t)

Training (`forward`) evaluates exactly this recurrence with z_t drawn from the
encoder instead of the prior, and is tested against `step` for that reason, and
against vrnn.models.reference, the same equations one step at a time.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vrnn.models.fused_kl import GaussianKL
from vrnn.models.fused_recurrence import FusedRecurrence, gate_inputs
from vrnn.runtime.schema import SIGMA_FLOOR, ModelConfig

__all__ = ["VRNN", "ElboTerms", "ModelConfig", "gaussian_kl"]


def gaussian_kl(mu_q: Tensor, sigma_q: Tensor, mu_p: Tensor, sigma_p: Tensor) -> Tensor:
    """KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2)) per dimension, in closed form (nats)."""
    ratio = (sigma_q / sigma_p) ** 2
    return 0.5 * (ratio + ((mu_q - mu_p) / sigma_p) ** 2 - 1.0 - torch.log(ratio))


def log_density_ratio(eps: Tensor, mu_q: Tensor, sigma_q: Tensor, mu_p: Tensor, sigma_p: Tensor) -> Tensor:
    """log p(z) - log q(z) summed over the last dimension, for z = mu_q + sigma_q * eps (the 2*pi terms cancel)."""
    z = mu_q + sigma_q * eps
    log_q = -0.5 * eps**2 - torch.log(sigma_q)
    log_p = -0.5 * ((z - mu_p) / sigma_p) ** 2 - torch.log(sigma_p)
    return (log_p - log_q).sum(dim=-1)


def gaussian_params(raw: Tensor) -> tuple[Tensor, Tensor]:
    """Split a Linear output [..., 2Z] into a mean and a floored softplus standard deviation."""
    mu, pre_sigma = raw.chunk(2, dim=-1)
    return mu, F.softplus(pre_sigma) + SIGMA_FLOOR


def gru_update(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    """One GRU update from precomputed input (gi) and hidden (gh) projections, torch's gate order r, z, n."""
    i_r, i_u, i_n = gi.chunk(3, dim=-1)
    h_r, h_u, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    u = torch.sigmoid(i_u + h_u)
    n = torch.tanh(i_n + r * h_n)
    return n + u * (h - n)  # = (1 - u) * n + u * h


@dataclass
class ElboTerms:
    """Per-character terms of the negative ELBO for a batch of windows (nats)."""

    # nll, kl and mu_q are transposed views of time-major tensors: reshape them, do not view them.
    nll: Tensor  # [B, T] cross-entropy of each target character
    kl: Tensor  # [B, T, Z] KL(q || p) of each latent dimension
    mu_q: Tensor  # [B, T, Z] posterior means (for active-unit statistics)
    # eps, mu_q, sigma_q, mu_p, sigma_p, each time-major [T, B, Z]: what log_ratio needs
    gaussians: tuple[Tensor, Tensor, Tensor, Tensor, Tensor]
    aux: Tensor | None = None  # [B, T] Gaussian NLL of b_t given z_t per dimension of b (smoothing only)

    @property
    def log_ratio(self) -> Tensor:
        """[B, T] log p(z_t | h) - log q(z_t | x_t, h) at the sampled z_t (the importance weights of IWAE).
        Computed on demand: training never needs it."""
        return log_density_ratio(*self.gaussians).t()


class VRNN(nn.Module):
    """A character VRNN; `forward` computes the ELBO terms, `step` is the generation cell."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        V, E, H, Z, L = config.vocab_size, config.embed_size, config.hidden_size, config.latent_size, config.layers
        self.embedding = nn.Embedding(V, E)
        self.phi_x_proj = nn.Linear(E, E)
        self.smoothing = config.posterior == "smoothing"
        with warnings.catch_warnings():  # Z = 0 (the no-latent baseline): phi_z is the constant ELU(bias)
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            self.phi_z_proj = nn.Linear(Z, E)
            self.prior = nn.Linear(H, 2 * Z)
            # input [phi_x(x_t), h_{t-1}] (filtering) or [b_t, h_{t-1}] (smoothing)
            Hb = config.backward_width
            self.encoder = nn.Linear((Hb if self.smoothing else E) + H, 2 * Z)
        if self.smoothing:
            self.backward_rnn = nn.GRU(E, Hb)  # b_t = GRU_back(phi_x(x_t), b_{t+1}), run on the reversed window
            self.aux = nn.Sequential(nn.Linear(Z, E), nn.Tanh(), nn.Linear(E, 2 * Hb))  # p(b_t | z_t)
        self.decoder = nn.Linear(E + H, V)  # input [phi_z(z_t), h_{t-1}]
        self.rnn = nn.ModuleList(nn.GRUCell(2 * E if i == 0 else H, H) for i in range(L))
        # Start both Gaussians near N(0, 1): softplus(b) + floor = 1.
        unit = math.log(math.expm1(1.0 - SIGMA_FLOOR))
        for layer in (self.prior, self.encoder):
            nn.init.constant_(layer.bias[Z:], unit)

    # --- small pieces ------------------------------------------------------
    def phi_x(self, chars: Tensor) -> Tensor:
        """Character features: [...] int64 -> [..., E]."""
        return F.elu(self.phi_x_proj(self.embedding(chars)))

    def phi_z(self, z: Tensor) -> Tensor:
        """Latent features: [..., Z] -> [..., E]."""
        return F.elu(self.phi_z_proj(z))

    def initial_state(self, batch: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """Zero state before any character: h [L, B, H] and phi_z [B, E]."""
        c = self.config
        return (
            torch.zeros(c.layers, batch, c.hidden_size, device=device),
            torch.zeros(batch, c.embed_size, device=device),
        )

    # --- generation: the exported cell ------------------------------------
    def step(self, prev_char: Tensor, h: Tensor, phi_z: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One generation step (see module docstring): (prev_char [B], h [L,B,H], phi_z [B,E], eps [B,Z])
        -> (logits [B,V], h [L,B,H], phi_z [B,E]).  Pure: all randomness comes in as `eps`."""
        x = torch.cat([self.phi_x(prev_char), phi_z], dim=-1)  # [B, 2E]
        layers = []
        for cell, h_layer in zip(self.rnn, h, strict=True):
            x = cell(x, h_layer)  # [B, H]
            layers.append(x)
        h_top = x
        mu_p, sigma_p = gaussian_params(self.prior(h_top))
        phi_z = self.phi_z(mu_p + sigma_p * eps)  # [B, E]
        logits = self.decoder(torch.cat([phi_z, h_top], dim=-1))  # [B, V]
        return logits, torch.stack(layers), phi_z

    # --- training -----------------------------------------------------------
    def forward(
        self,
        tokens: Tensor,
        eps: Tensor,
        decoder_mask: Tensor | None = None,
        with_aux: bool = True,
        autograd_recurrence: bool = False,
    ) -> ElboTerms:
        """ELBO terms for windows `tokens` [B, T+1], predicting tokens[:, 1:] given tokens[:, 0].

        `eps` [T, B, Z] is the standard normal noise of the reparameterised posterior
        samples.  `decoder_mask`, if given, multiplies what the decoder reads: [T, B, H+E] its
        whole input [h_{t-1}, phi_z(z_t)], or [T, B, H] the state alone (inverted dropout drawn by
        the trainer from its own generator, so a resumed run stays bit-identical); prior, encoder
        and recurrence never see it.

        Everything that does not depend on the recurrence (phi_x, the input
        projections, prior, decoder, losses) is computed for the whole window at once;
        only encoder sampling, phi_z and the GRU update run step by step: for one GRU
        layer in FusedRecurrence (hand-written BPTT), otherwise in an autograd loop.
        All of it is time-major ([T, B, ...]), the layout the recurrence produces, so
        that no elementwise work runs on transposed views; only the returned terms
        are [B, T, ...] views.  The smoothing posterior's backward GRU depends on the text alone,
        so it runs as one nn.GRU call before the recurrence, whose encoder input it becomes;
        `with_aux` computes its auxiliary cost as well.
        """
        T = tokens.shape[1] - 1
        E, H = self.config.embed_size, self.config.hidden_size
        tokens = tokens.t()  # [T+1, B]
        first = self.rnn[0]
        # One layer runs the hand-written BPTT (FusedRecurrence); stacked layers, or autograd_recurrence, the
        # autograd loop, which is also the fused one's reference in tests and benchmarks.
        fused = len(self.rnn) == 1 and not autograd_recurrence
        w_gi_x, w_enc_x = first.weight_ih[:, :E], self.encoder.weight[:, :E]  # layer-0 input = [phi_x, phi_z]
        w_enc_h = self.encoder.weight[:, -H:]  # the encoder's h_{t-1} part, for either posterior

        def gru_x(fx: Tensor) -> Tensor:  # the GRU input's phi_x part, as the recurrence takes it
            gi = F.linear(fx, w_gi_x, first.bias_ih)  # [..., 3H]
            return gate_inputs(gi, first.bias_hh) if fused else gi  # fused: [..., 4H]

        backward_states = None
        if self.config.vocab_size < tokens.numel():
            # phi_x and both products with it depend on the character alone: compute them once per
            # vocabulary entry and gather, instead of once per position (a third of a write-up-size
            # training step's multiply-adds, forward and backward, become a [V, ...] table's).
            fx_table = self.phi_x(torch.arange(self.config.vocab_size, device=tokens.device))  # [V, E]
            x_part = F.embedding(tokens[:T], gru_x(fx_table))  # [T, B, 3H or 4H]
            if self.smoothing:
                backward_states = self._backward_states(F.embedding(tokens[1:], fx_table))
            else:
                enc_x = F.embedding(tokens[1:], F.linear(fx_table, w_enc_x, self.encoder.bias))  # [T, B, 2Z]
        else:
            fx = self.phi_x(tokens)  # [T+1, B, E]
            x_part = gru_x(fx[:T])
            if self.smoothing:
                backward_states = self._backward_states(fx[1:])
            else:
                enc_x = F.linear(fx[1:], w_enc_x, self.encoder.bias)
        if backward_states is not None:
            enc_x = F.linear(backward_states, self.encoder.weight[:, :-H], self.encoder.bias)  # [T, B, 2Z]
        if fused:
            states, mu_q, sigma_q = FusedRecurrence.apply(
                x_part,
                enc_x,
                eps,
                first.weight_ih[:, E:],
                first.weight_hh,
                w_enc_h,
                self.phi_z_proj.weight,
                self.phi_z_proj.bias,
            )
        else:
            h_tops, phi_zs, mu_q, sigma_q = self._recurrence_autograd(x_part, enc_x, eps, w_enc_h)
            states = torch.cat([h_tops, phi_zs], -1)
        # states [T, B, H+E]: [h_prev, phi_z], the state each prediction conditions on and phi_z(z_t);
        # mu_q, sigma_q [T, B, Z]
        mu_p, sigma_p = gaussian_params(self.prior(states[..., :H]))
        if decoder_mask is not None:
            if decoder_mask.shape[-1] == H:  # the state only: phi_z(z_t) passes unmasked
                decoder_mask = F.pad(decoder_mask, (0, E), value=1.0)
            states = states * decoder_mask
        # decoder([phi_z, h]) as one product with [h, phi_z]: the weight's column blocks swapped
        w_dec = self.decoder.weight
        logits = F.linear(states, torch.cat([w_dec[:, E:], w_dec[:, :E]], 1), self.decoder.bias)  # [T, B, V]
        nll = F.cross_entropy(logits.flatten(0, 1), tokens[1:].flatten(), reduction="none").view_as(tokens[1:])
        aux = None
        if backward_states is not None and with_aux:
            aux = self._aux_cost(mu_q + sigma_q * eps, backward_states.detach()).t()
        return ElboTerms(
            nll=nll.t(),
            kl=GaussianKL.apply(mu_q, sigma_q, mu_p, sigma_p).transpose(0, 1),  # gaussian_kl, fused
            mu_q=mu_q.transpose(0, 1),
            gaussians=(eps, mu_q, sigma_q, mu_p, sigma_p),
            aux=aux,
        )

    def _backward_states(self, fx_targets: Tensor) -> Tensor:
        """b_t = GRU_back(phi_x(x_t), b_{t+1}) over the targets x_1..x_T from b_{T+1} = 0: [T,B,E] -> [T,B,H]."""
        reversed_states, _ = self.backward_rnn(fx_targets.flip(0))
        return reversed_states.flip(0)

    def _aux_cost(self, z: Tensor, target: Tensor) -> Tensor:
        """Z-forcing's auxiliary cost: -log N(b_t; MLP(z_t)) averaged over b's dimensions, [T, B].
        The target is held fixed: the backward GRU must not make itself easy to predict."""
        mu, sigma = gaussian_params(self.aux(z))
        return (0.5 * ((target - mu) / sigma) ** 2 + torch.log(sigma)).mean(-1) + 0.5 * math.log(2 * math.pi)

    def _recurrence_autograd(
        self, gi_x: Tensor, enc_x: Tensor, eps: Tensor, w_enc_h: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The step-by-step part of `forward` as a plain autograd loop (any number of layers; the reference
        for FusedRecurrence).  Inputs and the returned (h_top, phi_z, mu_q, sigma_q) are time-major [T, B, *]."""
        T, B, E = gi_x.shape[0], gi_x.shape[1], self.config.embed_size
        first = self.rnn[0]
        w_ih_z = first.weight_ih[:, E:]
        h, phi_z = (s.to(gi_x.dtype) for s in self.initial_state(B, gi_x.device))
        h = list(h)  # per layer [B, H]
        tops, phi_zs, mus, sigmas = [], [], [], []
        for t in range(T):
            # consume x_t (t = 0 is the context) with phi_z of z_t: h_{t} in the docstring's terms
            x = gi_x[t] + F.linear(phi_z, w_ih_z)
            for i, cell in enumerate(self.rnn):
                if i > 0:
                    x = F.linear(h[i - 1], cell.weight_ih, cell.bias_ih)
                h[i] = gru_update(x, F.linear(h[i], cell.weight_hh, cell.bias_hh), h[i])
            h_top = h[-1]
            mu_q, sigma_q = gaussian_params(enc_x[t] + F.linear(h_top, w_enc_h))
            phi_z = self.phi_z(mu_q + sigma_q * eps[t])
            tops.append(h_top)
            phi_zs.append(phi_z)
            mus.append(mu_q)
            sigmas.append(sigma_q)

        stack = lambda xs: torch.stack(xs, dim=0)  # noqa: E731
        return stack(tops), stack(phi_zs), stack(mus), stack(sigmas)

    def num_parameters(self) -> int:
        """Trainable parameter count."""
        return sum(p.numel() for p in self.parameters())
