"""The training recurrence of a one-layer VRNN as a single autograd Function (hand-written BPTT).

Only the part of the model that cannot be batched over time lives here: per step,
the GRU update, the encoder's dependence on the state, the reparameterised sample
and phi_z.  Autograd would record ~30 tiny operations per character and replay
them one by one; this Function runs the forward loop without recording and a
backward loop of plain tensor operations, and computes every weight gradient as
one large matrix product over all time steps instead of T small ones.  The
autograd loop in `VRNN._recurrence_autograd` is the reference it is tested against.

At the write-up's sizes a step's tensors hold a few thousand numbers, so each
operation's fixed cost (a few microseconds) weighs as much as its arithmetic.  The
loops are written for the fewest operations per step, 10 forward and 7 backward (what each
trick bought is in docs/results.md):

- The state is one buffer S[t] = [h_t, phi_z_t] ([T+1, B, H+E]), and the GRU's two
  products with it are one, S[t] @ W_cat, with W_cat [H+E, 4H] laid out so that the
  result is [a_r + g_r, a_u + g_u, a_n, g_n] (the candidate needs a_n and g_n apart).
  Backward, dY @ W_cat^T gives the gradients of h and phi_z at once.
- SIGMA_FLOOR * eps is added to the encoder's mean input for the whole window, so a
  step samples z = e_mu' + softplus(e_s) * eps in one operation.
- The GRU update n + u (h - n) is one `lerp`; backward, all four gate gradients are one
  broadcast product of dh with factors computed for the whole window.
- Steps write into preallocated [T, ...] buffers whose per-step views are made once.

Per step t, with the x-parts of the GRU input (`gate_inputs`) and of the encoder precomputed:

    y   = gates_x[t] + S[t] W_cat     r, u = sigmoid(y[:2H]);   a_n, g_n = y[2H:3H], y[3H:]
    n   = tanh(a_n + r * g_n)          h_t = lerp(n, h_{t-1}, u) = n + u * (h_{t-1} - n)
    e   = enc'[t] + h_t W_eh^T         z = e[:Z] + softplus(e[Z:]) * eps_t
    phi_z_t = ELU(z W_pz^T + b_pz)     (mu = e[:Z] - floor * eps_t, sigma = softplus(e[Z:]) + floor)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vrnn.runtime.schema import SIGMA_FLOOR


def gate_inputs(gi: Tensor, b_hh: Tensor) -> Tensor:
    """The GRU input's pre-activations gi [..., 3H] (torch's gate order r, u, n) and the state product's
    bias b_hh [3H] as what FusedRecurrence adds to S[t] @ W_cat: [gi_r + b_r, gi_u + b_u, gi_n, b_n]."""
    H = gi.shape[-1] // 3
    return torch.cat([gi[..., : 2 * H] + b_hh[: 2 * H], gi[..., 2 * H :], b_hh[2 * H :].expand(*gi.shape[:-1], H)], -1)


class FusedRecurrence(torch.autograd.Function):
    """(gates_x [T,B,4H], enc_x [T,B,2Z], eps [T,B,Z], W_iz, W_hh, W_eh, W_pz, b_pz)
    -> (states [T,B,H+E] = [h_t, phi_z_t] for t = 1..T, mu_q [T,B,Z], sigma_q [T,B,Z]); state starts at zeros.

    gates_x is `gate_inputs` of the GRU input's x part; W_iz [3H, E] and W_hh [3H, H] are
    the phi_z part of the GRU's input weight and its state weight, W_eh [2Z, H] the state
    part of the encoder's weight, W_pz [E, Z] and b_pz phi_z's Linear.
    """

    @staticmethod
    def forward(
        ctx: Any,
        gates_x: Tensor,
        enc_x: Tensor,
        eps: Tensor,
        w_iz: Tensor,
        w_hh: Tensor,
        w_eh: Tensor,
        w_pz: Tensor,
        b_pz: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        T, B, H, Z = gates_x.shape[0], gates_x.shape[1], gates_x.shape[2] // 4, eps.shape[-1]
        w_cat = _stacked_state_weight(w_iz, w_hh)
        enc = enc_x.clone()
        enc[..., :Z].add_(eps, alpha=SIGMA_FLOOR)

        state = gates_x.new_zeros(T + 1, B, H + w_pz.shape[0])  # S[t] = [h_t, phi_z_t], S[0] = 0
        ys = gates_x.new_empty(T, B, 4 * H)  # [r, u] (after the sigmoid), a_n, g_n
        ns = gates_x.new_empty(T, B, H)
        es = gates_x.new_empty(T, B, 2 * Z)  # [mu + floor * eps, pre-softplus sigma]
        w_eh_t, w_pz_t = w_eh.t(), w_pz.t()
        (h_views,) = _per_step(state[..., :H])  # h_{t-1} of step t is h_t of step t - 1
        steps = zip(
            *_per_step(gates_x, enc, eps, state[:-1]),
            h_views[:-1],
            h_views[1:],
            *_per_step(state[1:, :, H:]),
            *_per_step(ys, ys[..., : 2 * H], ys[..., :H], ys[..., H : 2 * H], ys[..., 2 * H : 3 * H]),
            *_per_step(ys[..., 3 * H :], ns, es, es[..., :Z], es[..., Z:]),
            strict=True,
        )
        softpluses = []  # softplus(e_s) of every step: sigma - floor
        for gates_t, enc_t, eps_t, s_prev, h_prev, h, phi, y, ru, r, u, a_n, g_n, n, e, e_mu, e_s in steps:
            torch.addmm(gates_t, s_prev, w_cat, out=y)
            ru.sigmoid_()
            torch.addcmul(a_n, r, g_n, out=n).tanh_()
            torch.lerp(n, h_prev, u, out=h)
            torch.addmm(enc_t, h, w_eh_t, out=e)
            softpluses.append(F.softplus(e_s))
            z = torch.addcmul(e_mu, softpluses[-1], eps_t)
            F.elu(torch.addmm(b_pz, z, w_pz_t, out=phi), inplace=True)

        softplus_all = torch.stack(softpluses) if softpluses else es[..., Z:]  # [T, B, Z]
        ctx.save_for_backward(eps, w_cat, w_eh, w_pz, state, ys, ns, es, softplus_all)
        return state[1:], es[..., :Z] - SIGMA_FLOOR * eps, softplus_all + SIGMA_FLOOR

    @staticmethod
    def backward(
        ctx: Any, d_states: Tensor | None, d_mu_out: Tensor | None, d_sigma_out: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        eps, w_cat, w_eh, w_pz, state, ys, ns, es, softplus_all = ctx.saved_tensors
        T, B, H, Z, E = ys.shape[0], ys.shape[1], ys.shape[2] // 4, eps.shape[-1], w_pz.shape[0]
        hs, phis = state[..., :H], state[1:, :, H:]
        d_state_out = _dense(d_states, T, B, H + E, ys)  # the gradient reaching S[t+1] from outside

        # Derivative factors of every step at once.
        r, u, g_n = ys[..., :H], ys[..., H : 2 * H], ys[..., 3 * H :]
        elu_grad = (phis + 1.0).clamp_(max=1.0)  # ELU'(x) = 1 for x > 0, else ELU(x) + 1
        softplus_grad = torch.sigmoid(es[..., Z:])
        # d e = d_e_base + [dz, dz * eps * softplus'], with dz the gradient reaching z through phi_z
        d_sigma = _dense(d_sigma_out, T, B, Z, ys) * softplus_grad
        d_e_base = torch.cat([_dense(d_mu_out, T, B, Z, ys), d_sigma], -1)
        dz_factor = torch.cat([torch.ones_like(eps), eps * softplus_grad], -1)
        w_pz2 = torch.cat([w_pz, w_pz], 1)  # [E, 2Z]: d_pz @ w_pz2 = [dz, dz]
        # Every gate's gradient is dh times a factor: to u and a_n through h = n + u (h_prev - n), and
        # from a_n on to r (times g_n r (1 - r)) and g_n (times r).  One product per step then.
        gate_factor = ys.new_empty(T, B, 4, H)  # dh -> [d r_pre, d u_pre, d a_n, d g_n]
        one_minus_u = 1.0 - u
        n_factor = torch.mul(one_minus_u, 1.0 - ns * ns, out=gate_factor[:, :, 2])  # dh -> d a_n
        torch.mul(n_factor * g_n * r, 1.0 - r, out=gate_factor[:, :, 0])  # d a_n -> d r_pre: g_n r (1 - r)
        torch.mul((hs[:-1] - ns) * u, one_minus_u, out=gate_factor[:, :, 1])
        torch.mul(n_factor, r, out=gate_factor[:, :, 3])  # d a_n -> d g_n: r

        d_ys = ys.new_empty(T, B, 4 * H)  # gradients of y's pre-activations [r, u, a_n, g_n]
        d_es, d_pzs = ys.new_empty(T, B, 2 * Z), ys.new_empty(T, B, E)
        grads = ys.new_empty(T, B, H + E)  # grads[t]: the whole gradient reaching S[t+1]
        grads[-1] = d_state_out[-1]
        # Step t also carries the gradient into S[t] (nothing for S[0], the constant zero state).
        grads_h, grads_phi = _per_step(grads[..., :H], grads[..., H:])
        carries = (None, *zip(*_per_step(d_state_out[:-1], grads[:-1]), grads_h[:-1], strict=True))
        steps = zip(
            *_per_step(elu_grad, d_e_base, dz_factor, gate_factor, u, d_es, d_pzs, d_ys.view(T, B, 4, H), d_ys),
            grads_h,
            grads_phi,
            carries,
            strict=True,
        )
        w_cat_t = w_cat.t()
        for (
            elu_t,
            d_e_base_t,
            dz_f,
            gate_f,
            u_t,
            d_e,
            d_pz,
            d_gates,
            d_y,
            grad_h,
            grad_phi,
            carry,
        ) in reversed(list(steps)):
            torch.mul(grad_phi, elu_t, out=d_pz)
            torch.addcmul(d_e_base_t, torch.mm(d_pz, w_pz2), dz_f, out=d_e)
            dh = torch.addmm(grad_h, d_e, w_eh)
            torch.mul(dh.unsqueeze(1), gate_f, out=d_gates)
            if carry is not None:
                outside_prev, grad_prev, grad_h_prev = carry
                torch.addmm(outside_prev, d_y, w_cat_t, out=grad_prev)
                grad_h_prev.addcmul_(dh, u_t)  # h_t = ... + u * h_{t-1}

        # Weight gradients: one product over all (t, b) pairs each.
        flat = lambda x: x.reshape(T * B, x.shape[-1])  # noqa: E731
        # (two products rather than d_ys^T @ S: W_cat's zero blocks need no gradient)
        d_w_iz = flat(d_ys[..., : 3 * H]).t() @ flat(state[:-1, :, H:])  # rows r, u, a_n; columns phi_z
        d_w_h = flat(d_ys).t() @ flat(hs[:-1])  # [4H, H]; W_hh's rows are r, u, g_n
        d_w_hh = torch.cat([d_w_h[: 2 * H], d_w_h[3 * H :]])
        zs = torch.addcmul(es[..., :Z], softplus_all, eps)  # the z of every step again
        d_w_eh = flat(d_es).t() @ flat(hs[1:])
        d_w_pz = flat(d_pzs).t() @ flat(zs)
        return d_ys, d_es, None, d_w_iz, d_w_hh, d_w_eh, d_w_pz, flat(d_pzs).sum(0)


def _stacked_state_weight(w_iz: Tensor, w_hh: Tensor) -> Tensor:
    """W_cat [H+E, 4H] with [h, phi_z] @ W_cat = [a_r + g_r, a_u + g_u, a_n, g_n] (a: from phi_z, g: from h)."""
    H, E = w_hh.shape[1], w_iz.shape[1]
    w_cat = w_hh.new_zeros(H + E, 4 * H)
    w_cat[:H, : 2 * H] = w_hh[: 2 * H].t()
    w_cat[H:, : 3 * H] = w_iz.t()
    w_cat[:H, 3 * H :] = w_hh[2 * H :].t()
    return w_cat


def _per_step(*tensors: Tensor) -> list[tuple[Tensor, ...]]:
    """Each [T, ...] tensor as its T per-step views, made once before a loop rather than sliced in it."""
    return [x.unbind(0) for x in tensors]


def _dense(grad: Tensor | None, T: int, B: int, size: int, like: Tensor) -> Tensor:
    """Autograd passes None for outputs that did not reach the loss: zeros [T, B, size] then."""
    return like.new_zeros(T, B, size) if grad is None else grad
