"""The model: the KL formula, the training recurrence against the generation step, robustness."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from vrnn.models import reference
from vrnn.models.fused_kl import GaussianKL
from vrnn.models.vrnn import VRNN, gaussian_kl, gaussian_params
from vrnn.runtime.schema import SIGMA_FLOOR, ModelConfig


def test_closed_form_kl_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    mu_q, mu_p = torch.randn(64, 16, generator=g) * 3, torch.randn(64, 16, generator=g) * 3
    sigma_q = torch.rand(64, 16, generator=g) * 4 + 1e-3
    sigma_p = torch.rand(64, 16, generator=g) * 4 + 1e-3
    expected = kl_divergence(Normal(mu_q, sigma_q), Normal(mu_p, sigma_p))
    torch.testing.assert_close(gaussian_kl(mu_q, sigma_q, mu_p, sigma_p), expected, rtol=1e-5, atol=1e-5)
    assert torch.all(gaussian_kl(mu_q, sigma_q, mu_q, sigma_q).abs() < 1e-6)


def test_fused_kl_matches_the_formula_and_its_gradients() -> None:
    """GaussianKL (hand-written backward) against gaussian_kl under autograd, in float64."""
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randn(7, 5, 3, generator=g, dtype=torch.float64) * 2 for _ in range(2)]
    sigmas = [torch.rand(7, 5, 3, generator=g, dtype=torch.float64) * 3 + 1e-2 for _ in range(2)]
    args = [inputs[0], sigmas[0], inputs[1], sigmas[1]]
    weights = torch.randn(7, 5, 3, generator=g, dtype=torch.float64)
    results = []
    for kl in (gaussian_kl, GaussianKL.apply):
        leaves = [a.clone().requires_grad_() for a in args]
        value = kl(*leaves)
        (value * weights).sum().backward()
        results.append((value.detach(), [leaf.grad for leaf in leaves]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-12, atol=1e-12)
    for fused, expected in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(fused, expected, rtol=1e-10, atol=1e-12)


def test_batched_forward_equals_step_by_step_reference() -> None:
    """Both ways forward computes phi_x's products: per-character tables (11 symbols < 40 positions) and
    per position (64 symbols > 40 positions), for one and for several GRU layers."""
    torch.manual_seed(0)
    for layers, vocab in ((1, 11), (3, 11), (1, 64)):
        model = VRNN(ModelConfig(vocab_size=vocab, embed_size=8, hidden_size=12, latent_size=5, layers=layers))
        tokens = torch.randint(0, vocab, (4, 10))
        eps = torch.randn(9, 4, 5)
        terms = model(tokens, eps)
        nll, kl, _ = reference.elbo_terms(model, tokens, eps)
        torch.testing.assert_close(terms.nll, nll, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(terms.kl, kl, rtol=1e-5, atol=1e-6)


def test_step_is_the_training_recurrence_with_the_prior() -> None:
    """step() consumes the previous character and samples z from the prior: feed it text and compare
    its state with the reference loop's when the encoder is replaced by the prior."""
    torch.manual_seed(1)
    model = VRNN(ModelConfig(vocab_size=7, embed_size=6, hidden_size=9, latent_size=4, layers=2))
    model.encoder = torch.nn.Linear(6 + 9, 8)
    with torch.no_grad():  # make the "encoder" ignore x and copy the prior: q == p
        model.encoder.weight.zero_()
        model.encoder.weight[:, 6:] = model.prior.weight
        model.encoder.bias.copy_(model.prior.bias)
    tokens = torch.randint(0, 7, (3, 6))
    eps = torch.randn(5, 3, 4)
    terms = model(tokens, eps)
    assert terms.kl.abs().max() < 1e-5
    h, phi_z = model.initial_state(3)
    for t in range(5):
        logits, h, phi_z = model.step(tokens[:, t], h, phi_z, eps[t])
        torch.testing.assert_close(F.cross_entropy(logits, tokens[:, t + 1], reduction="none"), terms.nll[:, t])


def test_standard_deviations_are_floored_and_finite() -> None:
    raw = torch.tensor([[-1e4, 1e4, 0.0, 0.0, -1e4, 1e4]])
    _, sigma = gaussian_params(raw.view(1, 6))
    assert torch.all(sigma >= SIGMA_FLOOR) and torch.all(torch.isfinite(sigma))
    model = VRNN(ModelConfig(vocab_size=5, embed_size=4, hidden_size=4, latent_size=3))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(100.0)  # a terrible initialisation
    terms = model(torch.randint(0, 5, (2, 8)), torch.randn(7, 2, 3))
    assert torch.isfinite(terms.nll).all() and torch.isfinite(terms.kl).all()


def test_fused_recurrence_matches_autograd_values_and_gradients() -> None:
    """FusedRecurrence's hand-written BPTT against the autograd loop, in float64, with every output in the loss."""
    for latent in (5, 0):
        torch.manual_seed(latent)
        model = VRNN(ModelConfig(vocab_size=11, embed_size=6, hidden_size=9, latent_size=latent)).double()
        tokens = torch.randint(0, 11, (4, 13))
        eps = torch.randn(12, 4, latent, dtype=torch.float64)
        mask = (torch.rand(12, 4, 9) > 0.3).double() / 0.7  # time-major, like eps
        results = {}
        for fused in (True, False):
            model.zero_grad()
            terms = model(tokens, eps, mask, autograd_recurrence=not fused)
            # A loss that reaches h, phi_z, mu_q and sigma_q through every path (nll, kl, log_ratio, mu_q).
            loss = terms.nll.sum() + 0.7 * terms.kl.sum() - 0.3 * terms.log_ratio.sum() + (terms.mu_q**2).sum()
            loss.backward()
            results[fused] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
        torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-12, atol=1e-12)
        for name, grad in results[False][1].items():
            torch.testing.assert_close(results[True][1][name], grad, rtol=1e-9, atol=1e-12, msg=name)
