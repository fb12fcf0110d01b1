"""The generation loop, shared by the ONNX runtime and the PyTorch path.

One call of `step` per character: the cell consumes the previous character and
returns logits for the next one plus its new state.  The loop first feeds the
start character as context, then forces the prime's characters, then samples.
Both backends run this same code on the same noise, which is what makes
"same seed, same text" hold across them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import numpy as np

from vrnn.runtime.errors import UsageError
from vrnn.runtime.sampling import SamplingOptions, choose

MAX_LENGTH = 10_000_000  # characters per call: beyond this, ask for it in pieces
MAX_SAMPLES = 4096
NOISE_CHUNK = 4096  # steps of noise drawn at a time: bounded memory for long runs

State = dict[str, np.ndarray]
StepFn = Callable[[np.ndarray, State, np.ndarray], tuple[np.ndarray, State]]
"""(prev_char int64 [B], state, eps float32 [B, Z]) -> (logits float32 [B, V], new state)"""


class NoiseSource(Protocol):
    """Supplies the latent noise and the sampling uniforms, in order, a chunk at a time."""

    def eps(self, steps: int) -> np.ndarray:
        """The next `steps` rows of standard normal latent noise, float32 [steps, B, Z]."""
        ...

    def uniform(self, steps: int) -> np.ndarray:
        """The next `steps` rows of uniform numbers in [0, 1), float64 [steps, B]."""
        ...


class SeededNoise:
    """Noise from numpy's default_rng: the same seed gives the same text on every run.

    Latent noise and sampling uniforms come from two independent child streams,
    so the text does not depend on how the run is split into chunks.
    """

    def __init__(self, seed: int | None, batch: int, latent_size: int) -> None:
        eps_seq, uniform_seq = np.random.SeedSequence(seed).spawn(2)
        self._eps_rng = np.random.default_rng(eps_seq)
        self._uniform_rng = np.random.default_rng(uniform_seq)
        self.batch, self.latent_size = batch, latent_size

    def eps(self, steps: int) -> np.ndarray:
        return self._eps_rng.standard_normal((steps, self.batch, self.latent_size), dtype=np.float32)

    def uniform(self, steps: int) -> np.ndarray:
        return self._uniform_rng.random((steps, self.batch))


class ArrayNoise:
    """Noise given as arrays (tests, or callers that bring their own randomness)."""

    def __init__(self, eps: np.ndarray, uniform: np.ndarray) -> None:
        self._eps, self._uniform = np.asarray(eps, np.float32), np.asarray(uniform, np.float64)
        self._eps_pos = self._uniform_pos = 0

    def eps(self, steps: int) -> np.ndarray:
        out = self._eps[self._eps_pos : self._eps_pos + steps]
        self._eps_pos += steps
        if len(out) != steps:
            raise UsageError("not enough latent noise for the requested length")
        return out

    def uniform(self, steps: int) -> np.ndarray:
        out = self._uniform[self._uniform_pos : self._uniform_pos + steps]
        self._uniform_pos += steps
        if len(out) != steps:
            raise UsageError("not enough uniform noise for the requested length")
        return out


def check_length(length: object, num_samples: object = 1) -> None:
    """Refuse a length or sample count that is not a sensible positive integer."""
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= MAX_LENGTH:
        raise UsageError(f"--length must be an integer from 1 to {MAX_LENGTH}, got {length!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or not 1 <= num_samples <= MAX_SAMPLES:
        raise UsageError(f"--num-samples must be an integer from 1 to {MAX_SAMPLES}, got {num_samples!r}")


def generate_ids(
    step: StepFn,
    initial_state: Mapping[str, np.ndarray],
    context_ids: np.ndarray,
    length: int,
    noise: NoiseSource,
    options: SamplingOptions,
    on_logits: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> Iterator[np.ndarray]:
    """Yield `length` rows of sampled token ids (int64 [B]), one per step.

    `context_ids` [T >= 1] are the characters the text starts from: the start
    character followed by the prime.  The first T - 1 steps only consume them
    (their logits are discarded; the latent is still drawn from the prior); the
    next `length` steps sample.  `on_logits(logits, uniform)`, if given, sees every
    sampling step's inputs to the choice (parity tests use it).
    """
    state = dict(initial_state)
    batch = next(iter(state.values())).shape[-2]  # every state tensor is [..., B, width]
    prev = np.full(batch, context_ids[0], dtype=np.int64)
    forced = context_ids[1:]
    total = len(forced) + length
    done = 0  # steps taken
    while done < total:
        chunk = min(NOISE_CHUNK, total - done)
        eps = noise.eps(chunk)
        first_sampled = max(len(forced) - done, 0)  # index within the chunk of the first sampling step
        uniform = noise.uniform(chunk - first_sampled) if first_sampled < chunk else None
        for i in range(chunk):
            logits, state = step(prev, state, eps[i])
            if i < first_sampled:
                prev = np.full(batch, forced[done + i], dtype=np.int64)
                continue
            u = uniform[i - first_sampled]
            if on_logits is not None:
                on_logits(logits, u)
            prev = choose(logits, u, options)
            yield prev
        done += chunk
