"""The Python API for sampling text: `Sampler.from_onnx(path).generate(500, temperature=0.8, seed=1)`.

A Sampler turns any backend that runs the cell's steps into text: priming, noise, sampling options,
decoding.  Two backends, one constructor each: `Sampler.from_onnx` (onnxruntime, no PyTorch) here, and
`vrnn.export.torch_cell.torch_sampler` (the PyTorch model of a checkpoint) on the torch side.  Sampling
options are keywords whose names and defaults are the fields of SamplingOptions; a request is validated
once, when `generate` or `stream` is called, before the first character is produced.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, Protocol

import numpy as np

from vrnn.runtime import schema
from vrnn.runtime.cell import OnnxCell
from vrnn.runtime.choice import SamplingOptions, log_probabilities
from vrnn.runtime.errors import UsageError, VrnnError
from vrnn.runtime.limits import check_seed
from vrnn.runtime.loop import ChunkFn, NoiseSource, SeededNoise, check_length, generate_ids
from vrnn.runtime.stops import StopMatcher, check_stops, cut_at_stop, stopped_stream
from vrnn.runtime.vocab import Vocabulary

OPTION_NAMES = tuple(field.name for field in fields(SamplingOptions))
MAX_LOGPROBS = 5  # alternatives per character, as OpenAI's completions allow


class Cell(Protocol):
    """A backend that runs generation steps, N per call: the ONNX cell, or the PyTorch model."""

    @property
    def config(self) -> schema.ModelConfig: ...

    @property
    def vocab(self) -> Vocabulary: ...

    @property
    def start_char(self) -> str: ...

    def initial_state(self, batch: int) -> dict[str, np.ndarray]: ...

    steps: ChunkFn
    # True: `steps` applies each row's options (a schema-3 cell, the PyTorch path); False (a schema-2 cell):
    # one temperature, with top-k, top-p and greedy chosen by the loop from one step's logits.
    chooses_per_row: bool


def sampling_options(keywords: dict[str, Any]) -> SamplingOptions:
    """The SamplingOptions named by `keywords` (temperature, top_k, top_p, greedy, latent_temperature);
    an unknown name is a usage error that lists the known ones."""
    unknown = sorted(set(keywords) - set(OPTION_NAMES))
    if unknown:
        raise UsageError(f"unknown sampling option {', '.join(map(repr, unknown))} (known: {', '.join(OPTION_NAMES)})")
    return SamplingOptions(**keywords)


@dataclass(frozen=True)
class Completion:
    """One sample's new characters (without the prime) and why they ended: "stop" (a stop string was
    generated; it is not in `text`) or "length" (all `length` characters were made)."""

    text: str
    finish_reason: Literal["stop", "length"]
    # With logprobs: each character's log-probability under the distribution it was drawn from, and with
    # logprobs N > 0 the N most likely characters of that distribution with theirs (ties by vocabulary order).
    logprobs: list[float] | None = None
    top_logprobs: list[dict[str, float]] | None = None


class Sampler:
    """Turns a cell (any backend) into text: priming, noise, sampling options, decoding."""

    def __init__(self, cell: Cell) -> None:
        self.cell = cell

    @classmethod
    def from_onnx(
        cls,
        path: str | os.PathLike[str],
        *,
        threads: int | None = 1,
        providers: list[str] | None = None,
        batch: int = 1,
    ) -> Sampler:
        """A Sampler over an exported cell with onnxruntime (no PyTorch needed); the file is validated here.

        `threads` None: chosen for the cell's size and `batch` samples at once (see cell.default_threads)."""
        return cls(OnnxCell(path, threads=threads, providers=providers, batch=batch))

    @property
    def vocab(self) -> Vocabulary:
        return self.cell.vocab

    def _prepare(
        self, length: int, prime: str, options: dict[str, Any], num_samples: int, seed: int | None
    ) -> tuple[np.ndarray, SamplingOptions]:
        """Validate a request before any work; return the context ids (start character + prime) and the options."""
        check_length(length, num_samples)
        check_seed(seed)
        chosen = sampling_options(options).validate(len(self.vocab))
        if not isinstance(prime, str):
            raise UsageError("--prime must be a string")
        try:
            prime_ids = self.vocab.encode(prime, what="--prime")
        except VrnnError as exc:  # an unusable option value: a usage error (exit 2)
            raise UsageError(str(exc)) from None
        return np.concatenate([self.vocab.encode(self.cell.start_char), prime_ids]), chosen

    def stream(
        self, length: int, prime: str = "", *, seed: int | None = None, stop: str | Sequence[str] | None = None,
        **options: Any,
    ) -> Iterator[str]:  # fmt: skip
        """The characters of one sample as they are generated (the prime is not repeated).

        The request is validated when this is called, before the first character; `options` are the
        fields of SamplingOptions (temperature, top_k, top_p, greedy, latent_temperature).  `stop`: up to 4
        strings; the text ends just before the first one generated (vrnn.runtime.stops), and characters that
        may begin one are held back until they cannot.  Fewer than `length` characters: a stop ended it."""
        stops = check_stops(stop)
        context, chosen = self._prepare(length, prime, options, 1, seed)
        ids = generate_ids(self.cell.steps, self.cell.initial_state(1), context, length,
                           SeededNoise(seed, 1, self.cell.config.latent_size), chosen,
                           per_row=self.cell.chooses_per_row)  # fmt: skip
        chars = self.vocab.chars
        return stopped_stream((chars[row[0]] for row in ids), stops)

    def generate(
        self,
        length: int,
        prime: str = "",
        *,
        seed: int | None = None,
        num_samples: int = 1,
        noise: NoiseSource | None = None,
        stop: str | Sequence[str] | None = None,
        **options: Any,
    ) -> str | list[str]:
        """Return `prime` followed by `length` generated characters; a list of such texts if num_samples > 1.
        With `stop` (up to 4 strings), each text ends just before the first one it generates (`complete`
        also says which texts did).

        `options` are the fields of SamplingOptions (temperature, top_k, top_p, greedy, latent_temperature).
        The same seed and options give the same text on every run and on both backends.  `latent_temperature`
        scales the latent noise (0: the prior's mean); `greedy` alone still varies with the seed through the
        latent, `greedy` with `latent_temperature=0` does not.  `noise` replaces the seeded noise (see
        vrnn.runtime.loop).
        """
        completions = self.complete(length, prime, seed=seed, num_samples=num_samples, noise=noise, stop=stop,
                                    **options)  # fmt: skip
        texts = [prime + c.text for c in completions]
        return texts[0] if num_samples == 1 else texts

    def complete(
        self,
        length: int,
        prime: str = "",
        *,
        seed: int | None = None,
        num_samples: int = 1,
        noise: NoiseSource | None = None,
        stop: str | Sequence[str] | None = None,
        logprobs: int | None = None,
        **options: Any,
    ) -> list[Completion]:
        """`generate`, with why each sample ended: a list of `num_samples` Completions, each the new
        characters (no prime) and "stop" or "length".  With `stop`, each sample ends on its own, and the
        batch stops early once every sample has.  With `logprobs` N (0 to 5), each character's log-probability
        under the distribution it was drawn from (temperature, top-k and top-p applied; 0 for greedy) and the
        N most likely alternatives: p(x_t | x_<t, z_<=t) along the latent path drawn, not the marginal
        likelihood that vrnn-eval bounds.  Computed only when asked."""
        stops = check_stops(stop)
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int)
                                     or not 0 <= logprobs <= MAX_LOGPROBS):  # fmt: skip
            raise UsageError(f"logprobs must be an integer from 0 to {MAX_LOGPROBS}, got {logprobs!r}")
        context, chosen = self._prepare(length, prime, options, num_samples, seed)
        if noise is None:
            noise = SeededNoise(seed, num_samples, self.cell.config.latent_size)
        seen: list[np.ndarray] = []  # the logits of the step whose characters come next
        rows = generate_ids(self.cell.steps, self.cell.initial_state(num_samples), context, length, noise, chosen,
                            per_row=self.cell.chooses_per_row,
                            on_logits=None if logprobs is None else lambda lg, _u: seen.append(lg))  # fmt: skip
        if logprobs is not None:
            return self._with_logprobs(rows, seen, chosen, stops, num_samples, logprobs)
        if not stops:
            columns = np.empty((num_samples, length), np.int32)  # compact: a batch is held until it is done
            for i, ids in enumerate(rows):
                columns[:, i] = ids
            return [Completion(self.vocab.decode(row), "length") for row in columns]
        matchers = [StopMatcher(stops) for _ in range(num_samples)]
        pieces: list[list[str]] = [[] for _ in range(num_samples)]
        chars = self.vocab.chars
        for ids in rows:
            for matcher, piece, char_id in zip(matchers, pieces, ids.tolist(), strict=True):
                if not matcher.stopped:
                    piece.append(matcher.feed(chars[char_id]))
            if all(m.stopped for m in matchers):
                rows.close()  # every sample has stopped: no more steps
                break
        return [Completion("".join(piece) + m.flush(), "stop" if m.stopped else "length")
                for m, piece in zip(matchers, pieces, strict=True)]  # fmt: skip

    def _with_logprobs(
        self, rows: Iterator[np.ndarray], seen: list[np.ndarray], options: SamplingOptions, stops: tuple[str, ...],
        num_samples: int, top: int,
    ) -> list[Completion]:  # fmt: skip
        """complete's loop with each character's log-probability (and the `top` best alternatives) kept beside
        it; a stop string's characters and those held back are dropped with it."""
        chars = self.vocab.chars
        texts: list[list[str]] = [[] for _ in range(num_samples)]
        values: list[list[float]] = [[] for _ in range(num_samples)]
        alternatives: list[list[dict[str, float]]] = [[] for _ in range(num_samples)]
        for ids in rows:
            lp = log_probabilities(seen.pop(), options)
            best = np.argsort(-lp, axis=1, kind="stable")[:, :top]
            for b, char_id in enumerate(ids.tolist()):
                texts[b].append(chars[char_id])
                values[b].append(float(lp[b, char_id]))
                # (a character the options cut, at -inf, is no alternative)
                alternatives[b].append({chars[i]: float(lp[b, i]) for i in best[b].tolist() if lp[b, i] > -np.inf})
        completions = []
        for text, vals, alts in zip(texts, values, alternatives, strict=True):
            kept, stopped = cut_at_stop("".join(text), stops)
            n = len(kept)
            completions.append(Completion(kept, "stop" if stopped else "length", vals[:n],
                                          alts[:n] if top else None))  # fmt: skip
        return completions
