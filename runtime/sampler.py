"""The Python API for sampling text: `Sampler.from_onnx(path).generate(500)` (or `Generator(path)`).

A Sampler turns any backend that runs the cell's steps (the ONNX cell here, the PyTorch model in
vrnn.export.torch_sampler) into text: priming, noise, sampling options, decoding.  Options are either
keywords or one SamplingOptions object built once by the caller (`options=`), as the CLIs do."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from vrnn.runtime import schema
from vrnn.runtime.cell import OnnxCell
from vrnn.runtime.errors import UsageError, VrnnError
from vrnn.runtime.limits import check_seed
from vrnn.runtime.loop import NoiseSource, SeededNoise, StepsFn, check_length, generate_ids
from vrnn.runtime.sampling import SamplingOptions
from vrnn.runtime.vocab import Vocabulary


class Cell(Protocol):
    """A backend that runs generation steps, N per call: the ONNX cell, or the PyTorch model."""

    @property
    def config(self) -> schema.ModelConfig: ...

    @property
    def vocab(self) -> Vocabulary: ...

    @property
    def start_char(self) -> str: ...

    def initial_state(self, batch: int) -> dict[str, np.ndarray]: ...

    steps: StepsFn


class Sampler:
    """Turns a cell (any backend) into text: priming, noise, sampling options, decoding."""

    def __init__(self, cell: Cell) -> None:
        self.cell = cell

    @property
    def vocab(self) -> Vocabulary:
        return self.cell.vocab

    def check(
        self, length: int, prime: str, options: SamplingOptions, num_samples: int = 1, seed: int | None = None
    ) -> np.ndarray:
        """Validate a request before any work; return the context ids (start character + prime)."""
        check_length(length, num_samples)
        check_seed(seed)
        options.validate(len(self.vocab))
        if not isinstance(prime, str):
            raise UsageError("--prime must be a string")
        try:
            prime_ids = self.vocab.encode(prime, what="--prime")
        except VrnnError as exc:  # an unusable option value: a usage error (exit 2)
            raise UsageError(str(exc)) from None
        return np.concatenate([self.vocab.encode(self.cell.start_char), prime_ids])

    def _ids(
        self,
        length: int,
        prime: str,
        options: SamplingOptions,
        seed: int | None,
        num_samples: int,
        noise: NoiseSource | None,
    ) -> Iterator[np.ndarray]:
        context = self.check(length, prime, options, num_samples, seed)
        if noise is None:
            noise = SeededNoise(seed, num_samples, self.cell.config.latent_size)
        return generate_ids(self.cell.steps, self.cell.initial_state(num_samples), context, length, noise, options)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike[str], **session: Any) -> Sampler:
        """A Sampler over an exported cell with onnxruntime (no PyTorch needed); `session` takes Generator's
        threads, providers and batch."""
        return Generator(path, **session)

    def stream(
        self,
        length: int,
        prime: str = "",
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
        seed: int | None = None,
        latent_temperature: float = 1.0,
        *,
        options: SamplingOptions | None = None,
    ) -> Iterator[str]:
        """Yield the characters of one sample as they are generated (the prime is not repeated).
        `options`, if given, replaces the individual sampling keywords."""
        chars = self.vocab.chars
        options = options or SamplingOptions(temperature, top_k, top_p, greedy, latent_temperature)
        for ids in self._ids(length, prime, options, seed, 1, None):
            yield chars[ids[0]]

    def generate(
        self,
        length: int,
        prime: str = "",
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        greedy: bool = False,
        seed: int | None = None,
        num_samples: int = 1,
        latent_temperature: float = 1.0,
        *,
        noise: NoiseSource | None = None,
        options: SamplingOptions | None = None,
    ) -> str | list[str]:
        """Return `prime` followed by `length` generated characters; a list of such texts if num_samples > 1.

        The same seed (and options) gives the same text on every run and on both
        backends.  `latent_temperature` scales the latent noise (0: the prior's mean); `greedy` alone still
        varies with the seed through the latent, `greedy` with `latent_temperature=0` does not.
        `noise` replaces the seeded noise (see vrnn.runtime.loop); `options`, if given, the sampling keywords.
        """
        options = options or SamplingOptions(temperature, top_k, top_p, greedy, latent_temperature)
        rows = self._ids(length, prime, options, seed, num_samples, noise)  # validates the request first
        columns = np.empty((num_samples, length), np.int32)  # compact: a batch is held until it is done
        for i, ids in enumerate(rows):
            columns[:, i] = ids
        texts = [prime + self.vocab.decode(row) for row in columns]
        return texts[0] if num_samples == 1 else texts


class Generator(Sampler):
    """Samples text from an exported vrnn cell with onnxruntime (no PyTorch needed).

    >>> Generator("cell.onnx").generate(200, prime="ROMEO:", temperature=0.8, seed=1)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int | None = 1,
        providers: list[str] | None = None,
        batch: int = 1,
    ) -> None:
        """`threads` None: chosen for the cell's size and `batch` samples at once (see default_threads)."""
        self.onnx_cell = OnnxCell(path, threads=threads, providers=providers, batch=batch)
        super().__init__(self.onnx_cell)

    @property
    def metadata(self) -> dict[str, str]:
        """The cell's raw metadata_props."""
        return self.onnx_cell.info.metadata
