"""The SMC bound (vrnn.training.smc): IWAE-K when it never resamples, the exact NLL without a latent, and the
true log-likelihood in the limit, which a very large IWAE estimates on a model small enough to afford it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vrnn.models.vrnn import VRNN, gaussian_params
from vrnn.runtime.schema import ModelConfig
from vrnn.training.evaluation import score_text
from vrnn.training.smc import smc_text


def small_model(latent: int, layers: int = 1, posterior: str = "filtering", seed: int = 0) -> VRNN:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=6, embed_size=5, hidden_size=7, latent_size=latent, layers=layers,
                         posterior=posterior)  # fmt: skip
    model = VRNN(config).double().eval()
    with torch.no_grad():  # a latent that matters: z moves the predictions, the posterior is far from the prior
        model.phi_z_proj.weight.mul_(4.0)
        model.encoder.weight.mul_(3.0)
    return model.float()


def text(length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 6, (length,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("layers", "posterior"), [(1, "filtering"), (2, "filtering"), (1, "smoothing")])
def test_without_resampling_it_is_iwae_for_the_same_noise(layers: int, posterior: str) -> None:
    model = small_model(3, layers, posterior)
    ids = text(70)
    iwae = score_text(model, ids, window=16, samples=8, batch_size=32, seed=5)
    smc = smc_text(model, ids, window=16, particles=8, batch_size=32, seed=5, ess_fraction=0.0)
    assert smc.resampling_rate == 0.0
    assert smc.smc == pytest.approx(iwae.iwae, abs=1e-5)


def test_without_a_latent_it_is_the_exact_nll() -> None:
    model = small_model(0)
    ids = text(50)
    exact = score_text(model, ids, window=16, samples=1).elbo
    assert smc_text(model, ids, window=16, particles=4).smc == pytest.approx(exact, abs=1e-5)


@torch.no_grad()
def exact_nll(model: VRNN, ids: torch.Tensor, grid: int = 120, bound: float = 12.0) -> float:
    """-log p(x_1..x_T | x_0) per character for a one-dimensional latent, every latent path summed: z_t on a grid
    of `grid` points over [-bound, bound] at every step (grid ** T paths), p(z_t | h) dz times p(x_t | z_t, h)."""
    z = torch.linspace(-bound, bound, grid, dtype=torch.float64)
    h = torch.zeros(1, model.config.hidden_size, dtype=torch.float64)
    phi_z = torch.zeros(1, model.config.embed_size, dtype=torch.float64)
    log_paths = torch.zeros(1, dtype=torch.float64)
    for t in range(len(ids) - 1):
        h = model.rnn[0](torch.cat([model.phi_x(ids[t].repeat(len(h))), phi_z], -1), h).repeat_interleave(grid, 0)
        mu, sigma = gaussian_params(model.prior(h))
        values = z.repeat(len(h) // grid)[:, None]
        log_prior = (-0.5 * ((values - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(-1)
        phi_z = model.phi_z(values)
        logits = model.decoder(torch.cat([phi_z, h], -1))
        log_px = -F.cross_entropy(logits, ids[t + 1].repeat(len(h)), reduction="none")
        log_paths = log_paths.repeat_interleave(grid) + log_prior + torch.log(z[1] - z[0]) + log_px
    return -torch.logsumexp(log_paths, 0).item() / (len(ids) - 1)


@pytest.mark.slow
def test_it_converges_to_the_exact_likelihood_and_is_tighter_than_iwae() -> None:
    """A latent that matters (the ELBO is far above the exact NLL): SMC with 4,096 particles, averaged over
    seeds, lands on the exact value summed over every latent path, and is closer to it than IWAE-4096."""
    torch.manual_seed(0)
    model = VRNN(ModelConfig(vocab_size=6, embed_size=5, hidden_size=7, latent_size=1)).double().eval()
    with torch.no_grad():
        model.phi_z_proj.weight.mul_(3.0)
        model.encoder.weight.mul_(2.0)
    ids = torch.tensor([2, 4, 1, 5])
    exact = exact_nll(model, ids)
    assert exact == pytest.approx(exact_nll(model, ids, grid=200), abs=1e-5)  # the grid is fine enough
    model = model.float()
    elbo = score_text(model, ids, window=8, samples=64, batch_size=64, seed=11).elbo
    assert elbo - exact > 0.3, "the latent must matter for this test to say anything"
    runs = [smc_text(model, ids, window=8, particles=4096, batch_size=4096, seed=s) for s in range(8)]
    mean = sum(r.smc for r in runs) / len(runs)
    iwae = score_text(model, ids, window=8, samples=4096, batch_size=4096, seed=11).iwae
    assert all(r.resampling_rate > 0 for r in runs)
    assert abs(mean - exact) < 0.04 and abs(mean - exact) < iwae - exact
