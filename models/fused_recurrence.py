"""The training recurrence of a one-layer VRNN as a single autograd Function (hand-written BPTT).

Only the part of the model that cannot be batched over time lives here: per step,
the GRU update, the encoder's dependence on the state, the reparameterised sample
and phi_z.  Autograd would record ~30 tiny operations per character and replay
them one by one; this Function runs the forward loop without recording and a
backward loop of plain tensor operations, and computes every weight gradient as
one large matrix product over all time steps instead of T small ones.  The
autograd loop in `VRNN._recurrence_autograd` is the reference it is tested against.

Per step t, with a_t and e_t's x-parts precomputed for the whole window:

    a   = gi_x[t] + phi_z_{t-1} W_iz^T          g = h_{t-1} W_hh^T + b_hh
    r   = sigmoid(a_r + g_r)   u = sigmoid(a_u + g_u)   n = tanh(a_n + r * g_n)
    h_t = n + u * (h_{t-1} - n)
    e   = enc_x[t] + h_t W_eh^T                 mu, s = e[:, :Z], e[:, Z:]
    sigma = softplus(s) + floor                 z = mu + sigma * eps_t
    phi_z_t = ELU(z W_pz^T + b_pz)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vrnn.runtime.schema import SIGMA_FLOOR


class FusedRecurrence(torch.autograd.Function):
    """(gi_x [T,B,3H], enc_x [T,B,2Z], eps [T,B,Z], W_iz, W_hh, b_hh, W_eh, W_pz, b_pz)
    -> (h [T,B,H], phi_z [T,B,E], mu_q [T,B,Z], sigma_q [T,B,Z]); state starts at zeros.

    Per-step work is kept to the operations that truly depend on the previous step:
    inputs are split into per-step views once (`unbind`), results are stacked once,
    and every derivative factor that does not depend on the incoming gradient is
    computed for all steps at once before the backward loop.
    """

    @staticmethod
    def forward(
        ctx: Any,
        gi_x: Tensor,
        enc_x: Tensor,
        eps: Tensor,
        w_iz: Tensor,
        w_hh: Tensor,
        b_hh: Tensor,
        w_eh: Tensor,
        w_pz: Tensor,
        b_pz: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        B, H, Z, E = gi_x.shape[1], gi_x.shape[2] // 3, eps.shape[-1], w_pz.shape[0]
        h = gi_x.new_zeros(B, H)
        phi = gi_x.new_zeros(B, E)
        hs, phis, rus, ns, g_ns, es, pz_pres = [h], [phi], [], [], [], [], []
        w_iz_t, w_hh_t, w_eh_t, w_pz_t = w_iz.t(), w_hh.t(), w_eh.t(), w_pz.t()
        for gi_t, enc_t, eps_t in zip(gi_x.unbind(0), enc_x.unbind(0), eps.unbind(0), strict=True):
            a = torch.addmm(gi_t, phi, w_iz_t)
            g = torch.addmm(b_hh, h, w_hh_t)
            ru = torch.sigmoid(a[:, : 2 * H] + g[:, : 2 * H])
            r, u = ru[:, :H], ru[:, H:]
            g_n = g[:, 2 * H :]
            n = torch.tanh(torch.addcmul(a[:, 2 * H :], r, g_n))
            h = torch.addcmul(n, u, h - n)
            e = torch.addmm(enc_t, h, w_eh_t)
            z = torch.addcmul(e[:, :Z], F.softplus(e[:, Z:]) + SIGMA_FLOOR, eps_t)
            pz_pre = torch.addmm(b_pz, z, w_pz_t)
            phi = F.elu(pz_pre)
            hs.append(h)
            phis.append(phi)
            rus.append(ru)
            ns.append(n)
            g_ns.append(g_n)
            es.append(e)
            pz_pres.append(pz_pre)
        hs_all, phis_all = torch.stack(hs), torch.stack(phis)  # [T+1, B, *], index 0 = the zero state
        e_all = torch.stack(es)
        mus, s_pre = e_all[..., :Z], e_all[..., Z:]
        sigmas = F.softplus(s_pre) + SIGMA_FLOOR
        zs = mus + sigmas * eps
        gates = (torch.stack(rus), torch.stack(ns), torch.stack(g_ns))
        ctx.save_for_backward(eps, w_iz, w_hh, w_eh, w_pz, hs_all, phis_all, *gates, s_pre, zs)
        return hs_all[1:], phis_all[1:], mus, sigmas

    @staticmethod
    def backward(
        ctx: Any, d_h_out: Tensor, d_phi_out: Tensor, d_mu_out: Tensor, d_sigma_out: Tensor
    ) -> tuple[Tensor | None, ...]:
        eps, w_iz, w_hh, w_eh, w_pz, hs, phis, ru, n, g_n, s_pre, zs = ctx.saved_tensors
        # W_iz and W_eh are column slices of larger weights: contiguous copies keep the per-step products fast.
        w_iz, w_eh = w_iz.contiguous(), w_eh.contiguous()
        T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
        d_h_out = _dense(d_h_out, hs[1:])
        d_phi_out = _dense(d_phi_out, phis[1:])
        d_mu_out = _dense(d_mu_out, s_pre)
        d_sigma_out = _dense(d_sigma_out, s_pre)

        # Derivative factors of every step at once.
        r, u = ru[..., :H], ru[..., H:]
        elu_grad = (phis[1:] + 1.0).clamp_(max=1.0)  # ELU'(x) = 1 for x > 0, else ELU(x) + 1
        softplus_grad = torch.sigmoid(s_pre)
        d_s_direct = d_sigma_out * softplus_grad  # sigma = softplus(s) + floor
        eps_softplus = eps * softplus_grad  # z = mu + sigma * eps
        n_factor = (1.0 - u) * (1.0 - n * n)  # dh -> d n_pre through h = n + u (h_prev - n)
        u_factor = (hs[:-1] - n) * u * (1.0 - u)  # dh -> d u_pre
        r_factor = g_n * r * (1.0 - r)  # d n_pre -> d r_pre

        # Each step writes its gradients straight into these (no per-step concatenation or final stack).
        Z, E = s_pre.shape[-1], phis.shape[-1]
        d_a, d_g = hs.new_empty(T, B, 3 * H), hs.new_empty(T, B, 3 * H)
        d_e, d_pz = hs.new_empty(T, B, 2 * Z), hs.new_empty(T, B, E)
        dh = hs.new_zeros(B, H)  # gradient reaching h_t from step t + 1
        dphi = phis.new_zeros(B, E)  # gradient reaching phi_z_t from step t + 1
        steps = zip(
            *(x.unbind(0) for x in (d_h_out, d_phi_out, d_mu_out, d_s_direct, elu_grad, eps_softplus)),
            *(x.unbind(0) for x in (n_factor, u_factor, r_factor, r, u, d_a, d_g, d_e, d_pz)),
            strict=True,
        )
        for (
            d_h_t,
            d_phi_t,
            d_mu_t,
            d_s_t,
            elu_t,
            eps_sp_t,
            n_f,
            u_f,
            r_f,
            r_t,
            u_t,
            d_a_t,
            d_g_t,
            d_e_t,
            d_pz_t,
        ) in reversed(list(steps)):
            torch.add(dphi, d_phi_t, out=d_pz_t).mul_(elu_t)
            dz = d_pz_t @ w_pz
            torch.add(d_mu_t, dz, out=d_e_t[:, :Z])
            torch.addcmul(d_s_t, dz, eps_sp_t, out=d_e_t[:, Z:])
            dh = torch.addmm(dh + d_h_t, d_e_t, w_eh)
            dn_pre = torch.mul(dh, n_f, out=d_a_t[:, 2 * H :])
            torch.mul(dh, u_f, out=d_a_t[:, H : 2 * H])
            torch.mul(dn_pre, r_f, out=d_a_t[:, :H])
            d_g_t[:, : 2 * H].copy_(d_a_t[:, : 2 * H])
            torch.mul(dn_pre, r_t, out=d_g_t[:, 2 * H :])
            dphi = d_a_t @ w_iz
            dh = torch.addmm(dh * u_t, d_g_t, w_hh)

        # Weight gradients: one product over all (t, b) pairs each.
        flat = lambda x: x.reshape(T * B, x.shape[-1])  # noqa: E731
        d_w_iz = flat(d_a).t() @ flat(phis[:-1])
        d_w_hh = flat(d_g).t() @ flat(hs[:-1])
        d_b_hh = flat(d_g).sum(0)
        d_w_eh = flat(d_e).t() @ flat(hs[1:])
        d_w_pz = flat(d_pz).t() @ flat(zs)
        d_b_pz = flat(d_pz).sum(0)
        return d_a, d_e, None, d_w_iz, d_w_hh, d_b_hh, d_w_eh, d_w_pz, d_b_pz


def _dense(grad: Tensor | None, like: Tensor) -> Tensor:
    """Autograd passes None for outputs that did not reach the loss."""
    return torch.zeros_like(like) if grad is None else grad
