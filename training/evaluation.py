"""Scoring a text with a trained VRNN: ELBO, the importance-weighted bound, KL and active units.

The one scoring module: `vrnn-eval` calls `score_text`, and the trainer's validation is `evaluate`, the
same scorer with one sample per window.

How a text is scored (this is what `vrnn-eval` reports):

* The ids are cut into consecutive windows of `window` predicted characters that
  overlap by one: each window starts from the zero state (h = 0, phi_z = 0) with
  the character just before it as context, so every character is predicted
  exactly once and no prediction sees more than `window` characters of history.
  The first character of the text is predicted from the model's start character
  (or, for the validation split, from the last character of the training split).
* For each window, K latent trajectories z_{1:T} are drawn from the encoder q.
  With log w_k = sum_t [log p(x_t | z_t, h) + log p(z_t | h) - log q(z_t | x_t, h)]:
    -ELBO   = -(1/K) sum_k sum_t [log p(x_t | z_t, h) - KL(q_t || p_t)]   (KL in closed form)
    -IWAE-K = -log (1/K) sum_k w_k
  both summed over windows and divided by the number of characters.  IWAE-K is a
  tighter bound than the ELBO, approaching the true NLL as K grows; IWAE-1 equals
  the ELBO in expectation.
* Active latent dimensions, two ways.  By KL: the dimension's KL(q || p), averaged over
  the text, exceeds 0.01 nats; this is what the latent costs and therefore carries, and a
  prior that follows the posterior cannot fool it.  By variance (Burda et al. 2016): the
  variance across the text of the posterior mean exceeds 0.01, which a posterior mean that
  moves *with the prior's* counts as active although it tells the decoder nothing new.
* A smoothing posterior's auxiliary cost (the Gaussian NLL of the backward state given z,
  per dimension of that state) is reported beside the bounds, never inside them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vrnn.models.vrnn import VRNN
from vrnn.runtime.errors import VrnnError
from vrnn.runtime.scoring import windows
from vrnn.runtime.stop_signals import raise_if_stopped

LN2 = math.log(2.0)
ACTIVE_UNIT_THRESHOLD = 0.01


@dataclass
class TextScore:
    """Per-character costs of a text under a model (nats unless a name says bits)."""

    chars: int
    window: int
    iwae_samples: int
    elbo: float  # negative ELBO, nats/char
    iwae: float  # negative IWAE-K bound, nats/char
    nll: float  # reconstruction term of the ELBO, nats/char
    kl: float  # KL term of the ELBO, nats/char
    active_units: int  # by posterior-mean variance (Burda et al.)
    active_units_kl: int  # by average KL
    latent_size: int
    unit_variance: list[float]  # variance of each dimension's posterior mean across the text
    unit_kl: list[float]  # average KL of each dimension, nats per character
    aux: float | None  # smoothing posterior's auxiliary cost per character, None without one
    char_nll: np.ndarray  # [chars] reconstruction cost of each character (mean over the K samples), or
    char_kl: np.ndarray  # [chars] KL of each character's latent; both only the first keep_chars if given

    @property
    def elbo_bits(self) -> float:
        return self.elbo / LN2

    @property
    def iwae_bits(self) -> float:
        return self.iwae / LN2

    def summary(self) -> dict[str, Any]:
        """The scalar results, JSON-ready."""
        return {
            "chars": self.chars,
            "window": self.window,
            "iwae_samples": self.iwae_samples,
            "elbo_nats": self.elbo,
            "elbo_bits": self.elbo_bits,
            "iwae_nats": self.iwae,
            "iwae_bits": self.iwae_bits,
            "nll_nats": self.nll,
            "kl_nats": self.kl,
            "kl_bits": self.kl / LN2,
            "active_units": self.active_units,
            "active_units_kl": self.active_units_kl,
            "latent_size": self.latent_size,
            "unit_variance": self.unit_variance,
            "unit_kl": self.unit_kl,
            "aux_nats": self.aux,
        }


Ids = torch.Tensor | np.ndarray  # a tensor, or a numpy array such as a token file's memory map


def _window_groups(pieces: list[Ids], window: int, per_pass: int) -> Iterator[list[Ids]]:
    """The windows of every piece (runtime.scoring.windows), in text order, as groups of at most `per_pass`
    windows of equal length; made one group at a time, so a long text is never cut up all at once."""
    group: list[Ids] = []
    for piece in pieces:
        for w in windows(piece, window):
            if group and (len(group) == per_pass or len(group[0]) != len(w)):
                yield group
                group = []
            group.append(w)
    if group:
        yield group


def _stack(group: list[Ids]) -> torch.Tensor:
    if isinstance(group[0], torch.Tensor):
        return torch.stack(group)
    return torch.from_numpy(np.stack(group).astype(np.int64))


def scored_pieces(ids: Ids | list[Ids]) -> list[Ids]:
    """The stretches to score: `ids` itself or its list, each a context id followed by at least one id."""
    pieces = ids if isinstance(ids, list) else [ids]
    if not pieces or any(len(piece) < 2 for piece in pieces):
        raise ValueError("need at least one character to score after the context character")
    return pieces


def checked_groups(model: VRNN, pieces: list[Ids], window: int, per_pass: int) -> Iterator[torch.Tensor]:
    """The windows of `pieces` stacked in groups of `per_pass` ([b, T+1] each, see _window_groups), every id
    checked against the model's vocabulary (a damaged token file: one line, never an IndexError), with the
    model in eval mode until the last group is done and a stop signal honoured between two groups."""
    was_training = model.training
    model.eval()
    try:
        for group in _window_groups(pieces, window, per_pass):
            raise_if_stopped()
            stacked = _stack(group)
            if int(stacked.max()) >= model.config.vocab_size:
                raise VrnnError(f"the text holds character id {int(stacked.max())}, outside the model's vocabulary")
            yield stacked
    finally:
        model.train(was_training)


@torch.no_grad()
def score_text(
    model: VRNN,
    ids: Ids | list[Ids],
    window: int,
    samples: int = 1,
    batch_size: int = 64,
    seed: int = 0,
    keep_chars: int | None = None,
) -> TextScore:
    """Score ids[1:] given ids[0] as described in the module docstring; `ids` may also be a list of such
    stretches (a validation subset, data.validation_subset), scored as if one followed the other, and
    numpy arrays (a memory-mapped token file: only the windows being scored are read).

    `batch_size` counts latent trajectories per forward pass (windows x samples).
    The encoder noise comes from a CPU generator seeded with `seed`, so a score is
    reproducible; the model may live on any device.  `keep_chars` bounds the per-character
    arrays (char_nll, char_kl) to the text's first characters (None: all of them).
    """
    pieces = scored_pieces(ids)
    device = next(model.parameters()).device
    z_size = model.config.latent_size
    generator = torch.Generator().manual_seed(seed)
    kept = 0

    elbo_sum = iwae_sum = nll_sum = kl_sum = 0.0
    mean_sum = torch.zeros(z_size, dtype=torch.float64)
    square_sum = torch.zeros(z_size, dtype=torch.float64)
    unit_kl_sum = torch.zeros(z_size, dtype=torch.float64)
    aux_sum: float | None = None
    positions = 0
    char_nll, char_kl = [], []
    for stacked in checked_groups(model, pieces, window, max(1, batch_size // samples)):
        b, t = stacked.shape[0], stacked.shape[1] - 1
        tokens = stacked.repeat_interleave(samples, dim=0).to(device)  # [b*K, T+1], sample index fastest
        eps = torch.randn((t, b * samples, z_size), generator=generator).to(device)
        terms = model(tokens, eps)
        nll = terms.nll.double().cpu().reshape(b, samples, t)
        kl_units = terms.kl.double()  # [b*K, T, Z]
        unit_kl_sum += kl_units.sum((0, 1)).cpu() / samples
        kl = kl_units.sum(-1).cpu().reshape(b, samples, t)
        if terms.aux is not None:
            aux_sum = (aux_sum or 0.0) + terms.aux.double().sum().item() / samples
        log_w = (terms.log_ratio.double().cpu().reshape(b, samples, t) - nll).sum(-1)  # [b, K]
        iwae_sum -= (torch.logsumexp(log_w, dim=1) - math.log(samples)).sum().item()
        elbo_sum += (nll + kl).sum(-1).mean(1).sum().item()
        nll_sum += nll.sum(-1).mean(1).sum().item()
        kl_sum += kl.sum(-1).mean(1).sum().item()
        mu = terms.mu_q.double().cpu().flatten(0, 1)  # [b*K*T, Z]
        mean_sum += mu.sum(0)
        square_sum += (mu**2).sum(0)
        positions += mu.shape[0]
        if keep_chars is None or kept < keep_chars:
            char_nll.append(nll.mean(1).reshape(-1).numpy())
            char_kl.append(kl.mean(1).reshape(-1).numpy())
            kept += len(char_nll[-1])

    chars = sum(len(piece) - 1 for piece in pieces)
    mean = mean_sum / positions
    variance = (square_sum / positions - mean**2).clamp(min=0.0)
    return TextScore(
        chars=chars,
        window=window,
        iwae_samples=samples,
        elbo=elbo_sum / chars,
        iwae=iwae_sum / chars,
        nll=nll_sum / chars,
        kl=kl_sum / chars,
        active_units=int((variance > ACTIVE_UNIT_THRESHOLD).sum().item()),
        active_units_kl=int((unit_kl_sum / chars > ACTIVE_UNIT_THRESHOLD).sum().item()),
        latent_size=z_size,
        unit_variance=[round(v, 6) for v in variance.tolist()],
        unit_kl=[round(v, 6) for v in (unit_kl_sum / chars).tolist()],
        aux=None if aux_sum is None else aux_sum / chars,
        char_nll=np.concatenate(char_nll)[:keep_chars],
        char_kl=np.concatenate(char_kl)[:keep_chars],
    )


def latent_verdict(score: TextScore) -> str:
    """In words, whether the latent carries anything, by the measure the active units use: a dimension is active
    when its KL averages more than ACTIVE_UNIT_THRESHOLD nats per character, so a whole latent below that much
    KL carries less than one active dimension would (the posterior has collapsed onto the prior), and one above
    it with no active dimension carries a little, spread thin."""
    if score.latent_size == 0:
        return "none: a plain GRU language model"
    kl = f"KL {score.kl:.4f} nats/char"
    if score.active_units_kl == 0 and score.kl <= ACTIVE_UNIT_THRESHOLD:
        return (
            f"unused: {kl}, less than the {ACTIVE_UNIT_THRESHOLD} of one active unit (posterior collapse: "
            "the decoder ignores z)"
        )
    share = f" ({score.kl / score.elbo:.1%} of the -ELBO)" if score.elbo > 0 else ""
    if score.active_units_kl == 0:
        return f"carries little: {kl}{share} spread over {score.latent_size} units, none above {ACTIVE_UNIT_THRESHOLD}"
    in_active = sum(v for v in score.unit_kl if v > ACTIVE_UNIT_THRESHOLD)
    units = f"{score.active_units_kl} unit{'s' if score.active_units_kl > 1 else ''}"
    return f"used: carries {kl}{share}, {in_active:.4f} of it in {units} above {ACTIVE_UNIT_THRESHOLD}"


@dataclass
class Evaluation:
    """Negative ELBO on a text, per character."""

    nll: float  # nats/char reconstruction term
    kl: float  # nats/char KL term
    chars: int  # characters predicted
    aux: float | None = None  # the smoothing posterior's auxiliary cost, not part of the bound
    active_units_kl: int = 0  # latent dimensions with average KL > 0.01 nats
    iwae: float | None = None  # negative IWAE-K bound, nats/char (with K > 1 samples per window)

    @property
    def elbo(self) -> float:
        """Negative ELBO in nats per character (lower is better)."""
        return self.nll + self.kl

    @property
    def bpc(self) -> float:
        """Negative ELBO in bits per character."""
        return self.elbo / LN2


def evaluate(
    model: VRNN, ids: Ids | list[Ids], seq_len: int, batch_size: int, seed: int = 0, samples: int = 1
) -> Evaluation:
    """Negative ELBO over `ids`: consecutive windows of seq_len (state reset per window); with `samples` > 1
    also the negative IWAE-K bound (K = samples, the ELBO then averaged over the K trajectories).

    Every character after the first is predicted once, given the preceding
    character of its window as context.  The posterior noise comes from a
    generator seeded with `seed`, so the score of given weights is deterministic.
    This is vrnn-eval's `score_text`, on the model's device.
    """
    score = score_text(model, ids, seq_len, samples=samples, batch_size=batch_size * samples, seed=seed)
    iwae = score.iwae if samples > 1 else None
    return Evaluation(score.nll, score.kl, score.chars, score.aux, score.active_units_kl, iwae)
