"""The generation loop, shared by the ONNX runtime and the PyTorch path.

A backend runs N steps per call (`ChunkFn`): each step consumes the previous
character, returns logits for the next one, and picks it by unfiltered
inverse-CDF sampling with that step's uniform number.  The ONNX cell does this
in one InferenceSession.run (an ONNX Scan); `run_steps` is the same contract in
numpy around a single-step function, which the PyTorch path uses.  The loop
first feeds the start character as context, then forces the prime's characters
one call each, then samples: many steps per call when the cell's own choice is
the one wanted, one step per call when top-k, top-p or greedy choose from the
logits instead.  Both backends run this same code on the same noise, which is
what makes "same seed, same text" hold across them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

import numpy as np

from vrnn.runtime.choice import RowOptions, SamplingOptions, choose, choose_rows
from vrnn.runtime.errors import UsageError, VrnnError
from vrnn.runtime.stop_signals import raise_if_stopped
from vrnn.runtime.vocab import first_outside

MAX_LENGTH = 10_000_000  # characters per call: beyond this, ask for it in pieces
MAX_SAMPLES = 4096
MAX_HELD_CHARS = 1 << 26  # samples x length of a batch, which is kept until done: 256 MiB of ids at most
MAX_CALL_STEPS = 256  # steps per call: the call's fixed cost is spread thin, and text still streams
MAX_CALL_VALUES = 1 << 16  # steps x samples per call: bounds the noise and logits held at once
FORCED_UNIFORM = 0.5  # the uniform number of a step whose character is forced (its pick is discarded)

State = dict[str, np.ndarray]
OneStepFn = Callable[[np.ndarray, State, np.ndarray], tuple[np.ndarray, State]]
"""One step: (prev_char int64 [B], state, eps float32 [B, Z]) -> (logits float32 [B, V], new state)"""
ChunkFn = Callable[
    [np.ndarray, State, np.ndarray, np.ndarray, RowOptions | float], tuple[np.ndarray, np.ndarray, State]
]
"""N steps: (prev_char int64 [B], state, eps float32 [N, B, Z], uniform float64 [N, B], each row's options)
-> (chars int64 [N, B], logits float32 [N, B, V], state after the last step)"""


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
        self._arrays = {"latent": np.asarray(eps, np.float32), "uniform": np.asarray(uniform, np.float64)}
        self._positions = {"latent": 0, "uniform": 0}

    def _take(self, which: str, steps: int) -> np.ndarray:
        start = self._positions[which]
        out = self._arrays[which][start : start + steps]
        self._positions[which] = start + steps
        if len(out) != steps:
            raise UsageError(f"not enough {which} noise for the requested length")
        return out

    def eps(self, steps: int) -> np.ndarray:
        return self._take("latent", steps)

    def uniform(self, steps: int) -> np.ndarray:
        return self._take("uniform", steps)


def check_finite_logits(logits: np.ndarray, name: str = "the model") -> None:
    """Refuse NaN or infinite logits in one line: a model with broken weights would print noise."""
    if not np.isfinite(logits).all():
        raise VrnnError(f"{name} produced non-finite logits (NaN or infinity): its weights are broken")


def check_picks(chars: np.ndarray, vocab_size: int) -> None:
    """Refuse character ids outside [0, vocab_size) in one line, before any is decoded: the load-time probe
    tries only a few picks, and a bad one would end in an IndexError, or for -1 in the last character
    printed as though nothing were wrong."""
    bad = first_outside(chars, vocab_size)
    if bad is not None:
        raise VrnnError(
            f"the cell picked character id {bad}, outside its vocabulary of {vocab_size} characters: it is broken"
        )


def check_length(length: object, num_samples: object = 1) -> None:
    """Refuse a length or sample count that is not a sensible positive integer."""
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= MAX_LENGTH:
        raise UsageError(f"--length must be an integer from 1 to {MAX_LENGTH}, got {length!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or not 1 <= num_samples <= MAX_SAMPLES:
        raise UsageError(f"--num-samples must be an integer from 1 to {MAX_SAMPLES}, got {num_samples!r}")
    if num_samples > 1 and num_samples * length > MAX_HELD_CHARS:
        raise UsageError(
            f"--num-samples {num_samples} x --length {length} is {num_samples * length:,} characters, more than "
            f"the {MAX_HELD_CHARS:,} a batch may hold until it is done: ask for fewer, or one sample at a time "
            "(which streams)"
        )


def run_steps(
    step: OneStepFn,
    prev_char: np.ndarray,
    state: State,
    eps: np.ndarray,
    uniform: np.ndarray,
    rows: RowOptions | float,
) -> tuple[np.ndarray, np.ndarray, State]:
    """What one call of the (schema-3) ONNX cell computes, in numpy around a single-step function (a `ChunkFn`).

    Each step's character is picked by `choose_rows`, each row with its own options and that step's uniform
    number, and fed to the next step.  `rows` may be a temperature, for every row without top-k or top-p.
    """
    rows = RowOptions.given(rows, len(prev_char))
    chars, logits = [], []
    for eps_t, uniform_t in zip(eps, uniform, strict=True):
        step_logits, state = step(prev_char, state, eps_t)
        prev_char = choose_rows(step_logits, uniform_t, rows)
        chars.append(prev_char)
        logits.append(step_logits)
    return np.stack(chars), np.stack(logits), state


def steps_per_call(batch: int) -> int:
    """How many steps one call runs for a batch of `batch` samples."""
    return max(1, min(MAX_CALL_STEPS, MAX_CALL_VALUES // batch))


def generate_ids(
    steps: ChunkFn,
    initial_state: Mapping[str, np.ndarray],
    context_ids: np.ndarray,
    length: int,
    noise: NoiseSource,
    options: SamplingOptions | Sequence[SamplingOptions],
    on_logits: Callable[[np.ndarray, np.ndarray], None] | None = None,
    per_row: bool = True,
) -> Iterator[np.ndarray]:
    """Yield `length` rows of sampled token ids (int64 [B]), one per step.

    `context_ids` [T >= 1] are the characters the text starts from: the start
    character followed by the prime.  The first T - 1 steps only consume them, one
    call each (their picks are discarded; the latent is still drawn from the
    prior); the next `length` steps sample.  `on_logits(logits, uniform)`, if
    given, sees every sampling step's inputs to the choice (parity tests use it).
    `options` are every sample's, or one per sample (a batch of mixed options, latent temperatures
    included).  `per_row`: `steps` applies every option itself (a schema-3 cell, run_steps); False for a
    schema-2 cell, whose top-k, top-p and greedy are chosen here from one step's logits (one set of options
    for the whole batch, then).
    """
    state = dict(initial_state)
    batch = next(iter(state.values())).shape[-2]  # every state tensor is [..., B, width]
    prev = np.full(batch, context_ids[0], dtype=np.int64)
    forced_uniform = np.full((1, batch), FORCED_UNIFORM)
    each = [options] * batch if isinstance(options, SamplingOptions) else list(options)
    if len(each) != batch:
        raise UsageError(f"{len(each)} sets of options for a batch of {batch}")
    if not per_row and len(set(each)) > 1:
        raise UsageError("a schema-2 cell takes one set of options for the whole batch: re-export it")
    scale = np.array([o.latent_temperature for o in each], np.float32)[None, :, None]
    rows, forced_rows = RowOptions.of(each), RowOptions.same(SamplingOptions(), batch)

    def eps(n: int) -> np.ndarray:  # the noise is drawn either way: the uniforms do not depend on the scale
        drawn = noise.eps(n)
        return drawn if (scale == 1).all() else drawn * scale  # (x 1 is exact: the same values either way)

    for forced in context_ids[1:]:
        _, _, state = steps(prev, state, eps(1), forced_uniform, forced_rows)
        prev = np.full(batch, forced, dtype=np.int64)
    cell_chooses = per_row or each[0].unfiltered
    per_call = steps_per_call(batch) if cell_chooses else 1
    remaining = length
    while remaining > 0:
        raise_if_stopped()
        n = min(per_call, remaining)
        step_eps, uniform = eps(n), noise.uniform(n)
        chars, logits, state = steps(prev, state, step_eps, uniform, rows)
        check_finite_logits(logits)
        if cell_chooses:  # the cell's own picks become text: each must be a character (the logits' width)
            check_picks(chars, logits.shape[-1])
        else:  # a schema-2 cell with top-k, top-p or greedy: choose from this one step's logits here
            chars = choose(logits[0], uniform[0], each[0])[None]
        for i in range(n):
            if on_logits is not None:
                on_logits(logits[i], uniform[i])
            yield chars[i]
        prev = chars[-1]
        remaining -= n
