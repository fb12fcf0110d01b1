"""The closed-form Gaussian KL as one autograd Function, for training speed.

Autograd records the formula in `vrnn.gaussian_kl` as about ten elementwise
operations and replays about twenty in backward, each a full pass over [T, B, Z]
(1.2M numbers at the write-up's size).  The derivatives have short closed forms,
so this Function computes them directly: ten passes forward, eight backward.
`gaussian_kl` stays the readable reference it is tested against.

With rho = sigma_q / sigma_p and delta = (mu_q - mu_p) / sigma_p:

    KL            = (rho^2 + delta^2 - 1) / 2 - log rho
    dKL/dmu_q     = delta / sigma_p           = -dKL/dmu_p
    dKL/dsigma_q  = (rho - 1 / rho) / sigma_p
    dKL/dsigma_p  = (1 - rho^2 - delta^2) / sigma_p
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


class GaussianKL(torch.autograd.Function):
    """(mu_q, sigma_q, mu_p, sigma_p), all the same shape -> KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2))
    per element, in nats."""

    @staticmethod
    def forward(ctx: Any, mu_q: Tensor, sigma_q: Tensor, mu_p: Tensor, sigma_p: Tensor) -> Tensor:
        inv_p = sigma_p.reciprocal()
        rho = sigma_q * inv_p
        delta = (mu_q - mu_p).mul_(inv_p)
        squares = torch.addcmul(rho * rho, delta, delta)
        ctx.save_for_backward(inv_p, rho, delta, squares)
        return (squares - 1.0).mul_(0.5).sub_(torch.log(rho))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        inv_p, rho, delta, squares = ctx.saved_tensors
        scaled = grad * inv_p
        d_mu_q = scaled * delta
        d_sigma_q = scaled * (rho - rho.reciprocal())
        d_sigma_p = scaled * (1.0 - squares)
        return d_mu_q, d_sigma_q, -d_mu_q, d_sigma_p
