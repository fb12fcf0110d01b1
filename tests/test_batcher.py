"""vrnn-serve's engine without HTTP: rows of one batch are each vrnn-run's sample (on the many-steps path too),
a broken row fails alone, cancelled rows leave, a full queue and a closed batcher refuse, closing ends the
rows still running."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vrnn.runtime import Sampler
from vrnn.runtime.cell import OnnxCell
from vrnn.runtime.choice import SamplingOptions
from vrnn.runtime.serving.batcher import Batcher, Busy, Closed, Delivery, GenerationRequest

CELL = Path(__file__).parent / "conformance" / "cell.onnx"


class Collector:
    """Gathers deliveries per ticket context; `wait(n)` until n requests have ended."""

    def __init__(self) -> None:
        self.texts: dict[object, list[str]] = {}
        self.errors: dict[object, str] = {}
        self.ended: set[object] = set()
        self._changed = threading.Condition()

    def __call__(self, deliveries: list[Delivery]) -> None:
        with self._changed:
            for d in deliveries:
                self.texts.setdefault(d.ticket.context, []).append(d.text)
                if d.done:
                    self.ended.add(d.ticket.context)
                    if d.error:
                        self.errors[d.ticket.context] = d.error
            self._changed.notify_all()

    def wait(self, count: int, timeout: float = 60) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.ended) >= count, timeout), f"{len(self.ended)} ended"

    def text(self, key: object) -> str:
        return "".join(self.texts.get(key, []))


def request(cell: OnnxCell, length: int, seed: int, prime: str = "", **options: object) -> GenerationRequest:
    return GenerationRequest(cell.vocab.encode(prime), length, seed, SamplingOptions(**options), streaming=True)


@pytest.mark.parametrize("steps_per_call", [1, 8, 32])
def test_rows_on_the_many_steps_path_are_each_vrnn_runs_sample(steps_per_call: int) -> None:
    """One temperature, no top-k/top-p/greedy, latent temperatures mixed: calls run many steps with the cell's
    own choice; requests joining later, primed (one step per call while they read) and of every length
    still each get their own sample."""
    cell = OnnxCell(CELL, batch=16)
    collected = Collector()
    batcher = Batcher(cell, collected, max_batch=16, steps_per_call=steps_per_call)
    rng = np.random.default_rng(1)
    asked = []
    for i in range(40):
        options = {"temperature": 0.8, "latent_temperature": [1.0, 0.0, 0.5, 2.0][i % 4]}
        length, prime = int(rng.integers(1, 150)), ["", "", "ab"][i % 3]
        asked.append((length, prime, i, options))
        batcher.submit(request(cell, length, i, prime, **options), context=i)
        if i % 10 == 9:
            time.sleep(0.01)  # later requests join a batch already running
    collected.wait(len(asked))
    batcher.close()
    sampler = Sampler(cell)
    for length, prime, seed, options in asked:
        assert prime + collected.text(seed) == sampler.generate(length, prime, seed=seed, **options), seed
    assert not collected.errors


class BreakingCell:
    """The conformance cell, except that on its third call the first row's logits are NaN."""

    def __init__(self) -> None:
        self.inner = OnnxCell(CELL, batch=4)
        self.config, self.vocab, self.start_char = self.inner.config, self.inner.vocab, self.inner.start_char
        self.chooses_per_row = self.inner.chooses_per_row
        self.calls = 0

    def initial_state(self, batch: int) -> dict[str, np.ndarray]:
        return self.inner.initial_state(batch)

    def steps(self, *args: object) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        chars, logits, state = self.inner.steps(*args)
        self.calls += 1
        if self.calls == 3:
            logits = logits.copy()
            logits[:, 0] = np.nan
        return chars, logits, state


def test_a_row_with_broken_logits_fails_alone() -> None:
    cell = BreakingCell()
    collected = Collector()
    batcher = Batcher(cell, collected, max_batch=4, steps_per_call=1)  # type: ignore[arg-type]
    with batcher._lock:  # all three join the same first call
        for i in range(3):
            batcher.submit(request(cell.inner, 20, seed=i, top_k=10), context=i)
    collected.wait(3)
    batcher.close()
    assert collected.errors == {0: "the cell produced non-finite logits or a character outside its vocabulary"}
    sampler = Sampler(cell.inner)
    for i in (1, 2):
        assert collected.text(i) == sampler.generate(20, seed=i, top_k=10)


def test_a_full_queue_refuses_a_cancelled_row_leaves_and_closing_ends_the_rest() -> None:
    cell = OnnxCell(CELL)
    collected = Collector()
    batcher = Batcher(cell, collected, max_batch=1, max_queue=1)
    running = batcher.submit(request(cell, 10_000_000, seed=1), context="running")
    batcher.submit(request(cell, 5, seed=2), context="waiting")
    with pytest.raises(Busy):
        batcher.submit(request(cell, 5, seed=3), context="refused")
    deadline = time.monotonic() + 10
    while not collected.text("running") and time.monotonic() < deadline:
        time.sleep(0.01)
    batcher.cancel(running)  # its row goes; the waiting one takes it and finishes
    collected.wait(1)
    assert collected.ended == {"waiting"} and collected.text("waiting") == Sampler(cell).generate(5, seed=2)
    assert batcher.rows_in_flight == 0 and batcher.idle
    batcher.submit(request(cell, 10_000_000, seed=4), context="cut")
    batcher.submit(request(cell, 5, seed=5), context="queued")
    batcher.stop_accepting()
    with pytest.raises(Closed):
        batcher.submit(request(cell, 5, seed=6))
    batcher.close("going away")
    assert collected.errors == {"cut": "going away", "queued": "going away"}
    assert "running" not in collected.ended  # a cancelled request gets nothing more


def test_steps_per_call_is_bounded() -> None:
    cell = OnnxCell(CELL)
    for bad in (0, 33):
        with pytest.raises(ValueError, match="steps_per_call must be from 1 to 32"):
            Batcher(cell, lambda deliveries: None, steps_per_call=bad)
