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
    -> (h [T,B,H], phi_z [T,B,E], mu_q [T,B,Z], sigma_q [T,B,Z]); state starts at zeros."""

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
        T, B, three_h = gi_x.shape
        H, Z, E = three_h // 3, eps.shape[-1], w_pz.shape[0]
        hs = gi_x.new_empty(T + 1, B, H)  # hs[t + 1] = h_t; hs[0] = 0
        hs[0].zero_()
        phis = gi_x.new_empty(T + 1, B, E)  # phis[t + 1] = phi_z_t
        phis[0].zero_()
        gates = gi_x.new_empty(T, B, 3 * H)  # r, u, n after their nonlinearities
        g_n = gi_x.new_empty(T, B, H)  # the recurrent part of n's pre-activation, before r
        mus = gi_x.new_empty(T, B, Z)
        s_pre = gi_x.new_empty(T, B, Z)
        zs = gi_x.new_empty(T, B, Z)
        pz_pre = gi_x.new_empty(T, B, E)
        w_iz_t, w_hh_t, w_eh_t, w_pz_t = w_iz.t(), w_hh.t(), w_eh.t(), w_pz.t()
        for t in range(T):
            h_prev = hs[t]
            a = torch.addmm(gi_x[t], phis[t], w_iz_t)
            g = torch.addmm(b_hh, h_prev, w_hh_t)
            ru = torch.sigmoid(a[:, : 2 * H] + g[:, : 2 * H])
            r, u = ru[:, :H], ru[:, H:]
            g_n[t] = g[:, 2 * H :]
            n = torch.tanh(torch.addcmul(a[:, 2 * H :], r, g_n[t]))
            gates[t, :, : 2 * H] = ru
            gates[t, :, 2 * H :] = n
            h = torch.addcmul(n, u, h_prev - n, out=hs[t + 1])
            e = torch.addmm(enc_x[t], h, w_eh_t)
            mus[t] = e[:, :Z]
            s_pre[t] = e[:, Z:]
            z = torch.addcmul(e[:, :Z], F.softplus(e[:, Z:]) + SIGMA_FLOOR, eps[t], out=zs[t])
            torch.addmm(b_pz, z, w_pz_t, out=pz_pre[t])
            phis[t + 1] = F.elu(pz_pre[t])
        sigmas = F.softplus(s_pre) + SIGMA_FLOOR
        ctx.save_for_backward(eps, w_iz, w_hh, w_eh, w_pz, hs, phis, gates, g_n, s_pre, zs, pz_pre)
        return hs[1:], phis[1:], mus, sigmas

    @staticmethod
    def backward(
        ctx: Any, d_h_out: Tensor, d_phi_out: Tensor, d_mu_out: Tensor, d_sigma_out: Tensor
    ) -> tuple[Tensor | None, ...]:
        eps, w_iz, w_hh, w_eh, w_pz, hs, phis, gates, g_n, s_pre, zs, pz_pre = ctx.saved_tensors
        T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
        Z = eps.shape[-1]
        d_h_out = _dense(d_h_out, hs[1:])
        d_phi_out = _dense(d_phi_out, phis[1:])
        d_mu_out = _dense(d_mu_out, s_pre)
        d_sigma_out = _dense(d_sigma_out, s_pre)

        d_a = torch.empty_like(gates)  # d loss / d a_t: also the gradient of gi_x
        d_g = torch.empty_like(gates)  # d loss / d g_t
        d_e = hs.new_empty(T, B, 2 * Z)  # d loss / d e_t: also the gradient of enc_x
        d_pz = torch.empty_like(pz_pre)  # d loss / d (z W_pz^T + b_pz)
        dh = hs.new_zeros(B, H)  # gradient reaching h_t from step t + 1
        dphi = phis.new_zeros(B, phis.shape[-1])  # gradient reaching phi_z_t from step t + 1
        sig_s = torch.sigmoid(s_pre)  # softplus'
        for t in range(T - 1, -1, -1):
            # phi_z_t = ELU(pz_pre): ELU'(x) = 1 for x > 0, else ELU(x) + 1
            dphi = dphi + d_phi_out[t]
            pre = pz_pre[t]
            torch.mul(dphi, torch.where(pre > 0, 1.0, phis[t + 1] + 1.0), out=d_pz[t])
            dz = d_pz[t] @ w_pz
            # z = mu + sigma * eps; sigma = softplus(s) + floor
            d_e[t, :, :Z] = d_mu_out[t] + dz
            d_e[t, :, Z:] = (d_sigma_out[t] + dz * eps[t]) * sig_s[t]
            dh = dh + d_h_out[t] + d_e[t] @ w_eh
            # h = n + u * (h_prev - n)
            h_prev = hs[t]
            r, u, n = gates[t, :, :H], gates[t, :, H : 2 * H], gates[t, :, 2 * H :]
            dn_pre = dh * (1.0 - u) * (1.0 - n * n)
            du_pre = dh * (h_prev - n) * u * (1.0 - u)
            dr_pre = dn_pre * g_n[t] * r * (1.0 - r)
            d_a[t, :, :H] = dr_pre
            d_a[t, :, H : 2 * H] = du_pre
            d_a[t, :, 2 * H :] = dn_pre
            d_g[t, :, : 2 * H] = d_a[t, :, : 2 * H]
            d_g[t, :, 2 * H :] = dn_pre * r
            dphi = d_a[t] @ w_iz
            dh = dh * u + d_g[t] @ w_hh

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
