"""Continuous batching: many generation requests advance together, one step of one cell call at a time.

vrnn-serve's engine, with no HTTP in it.  A worker thread owns the cell.  Every call advances each row in
flight by one character: a request joins at the next call and leaves when it is done or cancelled, so a
new request waits for at most one step, never for the others to finish.

Each row is exactly the sample `Sampler.stream` (and vrnn-run) makes alone with the same seed and options:

- its own noise streams (SeededNoise(seed, 1, Z)), drawn a block at a time, which draws the same numbers
  as one step at a time (the streams do not depend on chunking);
- its own options: a schema-3 cell takes each row's temperature, top-k and top-p and picks every row's
  character itself, so any mix of options runs many steps per call; a schema-2 cell takes one temperature,
  and a batch of mixed options runs one step per call, the cell at temperature 1 with its picks discarded
  and every row's character chosen here in numpy (`choose`, the reference the cell's in-graph sampler is
  tested against), rows grouped by their options.  Latent temperatures scale each row's noise here;
- its own arithmetic: the cell's session packs its weights, and a row's logits are then bit for bit the
  same at any batch size (tests/test_runtime.py), which is what makes "whatever else is in flight" hold.

Characters reach the caller through `publish(deliveries)`, called from the worker thread once per call
with every row that has something due: its first characters at once (time to first character), then
at most every `flush_interval` seconds while streaming -- or every rows / MAX_CHUNK_RATE seconds when
that is longer: fewer, larger chunks under load, less work per character for the HTTP side -- or all at
once when it is done.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vrnn.runtime.cell import OnnxCell
from vrnn.runtime.choice import RowOptions, SamplingOptions, choose, log_probabilities
from vrnn.runtime.loop import FORCED_UNIFORM, SeededNoise
from vrnn.runtime.stops import StopMatcher

# The most chunks per second a server sends across all its streams: each costs the event loop and the
# client a fixed amount of work, so under load a stream's chunks are spaced further apart (rows / this
# many seconds) rather than crowding out the cell.  Measured: docs/results.md, "Serving".
MAX_CHUNK_RATE = 2000
NOISE_BLOCK = 64  # steps of noise drawn per row at a time: a row's random generator is called once per block
OUTPUT_RING = 64  # characters a row holds before they move to its text, at the latest
MAX_CALL_STEPS = OUTPUT_RING // 2  # steps of one call at most, so a ring emptied at half full never wraps


class SampleNoise:
    """Sample i's noise among n drawn together (`vrnn-run --num-samples n --seed S`): the n-wide streams, of
    which this row keeps column i (the streams do not depend on how they are chunked, so neither does it)."""

    def __init__(self, seed: int, index: int, count: int, latent_size: int) -> None:
        self.inner, self.index = SeededNoise(seed, count, latent_size), index

    def eps(self, steps: int) -> np.ndarray:
        return self.inner.eps(steps)[:, self.index : self.index + 1]

    def uniform(self, steps: int) -> np.ndarray:
        return self.inner.uniform(steps)[:, self.index : self.index + 1]


class Busy(Exception):
    """Every row is busy and the queue is full: try again later."""


class Closed(Exception):
    """The batcher no longer accepts work (it is draining or stopped)."""


@dataclass(frozen=True)
class GenerationRequest:
    """One sample: `length` characters after `prime`, with `seed` and `options` (validated by the caller)."""

    prime_ids: np.ndarray  # int64 [P]: the prime's characters, which the row is forced through first
    length: int
    seed: int
    options: SamplingOptions
    streaming: bool = False  # publish characters as they come (else once, when done)
    stop: tuple[str, ...] = ()  # end just before the first of these generated (vrnn.runtime.stops)
    logprobs: int | None = None  # each character's log-probability, and this many alternatives (0 to 5)
    sample: tuple[int, int] = (0, 1)  # (i, n): the noise of sample i of `vrnn-run --num-samples n` (OpenAI's n)


@dataclass(slots=True)
class Delivery:
    """What a row has for its caller after one call: new text, and whether it has ended (done or failed)."""

    ticket: Ticket
    text: str
    done: bool = False
    error: str | None = None
    logprobs: list[float] | None = None  # one per character of `text`, when the request asked
    top_logprobs: list[dict[str, float]] | None = None


@dataclass(eq=False)
class Ticket:
    """A request's handle: the caller keeps it to cancel the request; `context` is the caller's own."""

    request: GenerationRequest
    context: object = None
    submitted: float = field(default_factory=time.perf_counter)
    admitted: float | None = None  # when the row joined the batch
    first_char: float | None = None  # when its first character was made
    cancelled: bool = False
    finish_reason: str | None = None  # "stop" or "length" once it has ended well
    sent_chars: int = 0  # characters delivered (fewer than `length` when a stop ended it)


@dataclass
class _Row:
    """The worker's own record of a row in flight (its arrays live in the batch's columns)."""

    ticket: Ticket
    noise: SeededNoise | SampleNoise
    slot: int  # its place in the noise and output buffers, fixed while it lives
    text: list[str] = field(default_factory=list)
    stops: StopMatcher | None = None  # with stop strings: every call's characters go through it
    logprobs: list[float] = field(default_factory=list)  # every generated character's, when asked
    top_logprobs: list[dict[str, float]] = field(default_factory=list)


class Batcher:
    """Runs generation requests as rows of one batch on `cell`, in a worker thread of its own."""

    def __init__(
        self,
        cell: OnnxCell,
        publish: Callable[[list[Delivery]], None],
        max_batch: int = 64,
        max_queue: int = 256,
        flush_interval: float = 0.02,
        steps_per_call: int = 8,
        call_budget: float = 0.02,
        on_call: Callable[[float, int], None] | None = None,
    ) -> None:
        """`publish` receives each call's deliveries (from the worker thread); `on_call(seconds, rows)` is told
        each cell call's duration and batch size (metrics).  `steps_per_call` (at most MAX_CALL_STEPS) is
        how many steps a call runs when the cell's own choice fits every row: more spread the call's fixed
        cost, fewer let a new request join sooner.  While steps are cheap (few rows) such a call runs as many
        as fit in `call_budget` seconds instead, up to MAX_CALL_STEPS: a request arriving meanwhile waits at
        most about that long, and a lone stream does not pay a call's fixed cost every few characters."""
        if not 1 <= steps_per_call <= MAX_CALL_STEPS:
            raise ValueError(f"steps_per_call must be from 1 to {MAX_CALL_STEPS}")
        self.steps_per_call, self.call_budget = steps_per_call, call_budget
        self.cell, self.publish, self.on_call = cell, publish, on_call
        self.max_batch, self.max_queue, self.flush_interval = max_batch, max_queue, flush_interval
        config = cell.config
        self._latent = config.latent_size
        self._chars = np.array(cell.vocab.chars, dtype="<U1")  # one character each (the cell format's rule)
        self._start = cell.vocab.chars.index(cell.start_char)
        self._lock = threading.Condition()
        self._waiting: collections.deque[Ticket] = collections.deque()
        self._cancelled: set[int] = set()  # id() of cancelled tickets, for the worker to drop
        self._accepting = True
        self._stopped = False
        self._stop_reason = "the server is shutting down"
        # Per slot (fixed while a row lives): noise blocks and the output ring.
        slots = max_batch
        self._free = list(range(slots - 1, -1, -1))
        self._eps = np.zeros((slots, NOISE_BLOCK, self._latent), np.float32)
        self._eps_at = np.full(slots, NOISE_BLOCK)
        self._uniform = np.zeros((slots, NOISE_BLOCK), np.float64)
        self._uniform_at = np.full(slots, NOISE_BLOCK)
        self._ring = np.zeros((slots, OUTPUT_RING), np.int64)
        # Per row, in batch order (rebuilt when rows join or leave).
        self._rows: list[_Row] = []
        self._by_slot: dict[int, _Row] = {}
        self._state = cell.initial_state(0)
        self._columns = self._empty_columns()
        self._groups: list[tuple[SamplingOptions, np.ndarray]] = []
        self._cell_chooses = False
        self._step_seconds = 0.0  # the last call's time per step
        self._thread = threading.Thread(target=self._work, name="vrnn-batcher", daemon=True)
        self._thread.start()

    # ---- the caller's side (any thread) ----

    def submit(self, request: GenerationRequest, context: object = None) -> Ticket:
        """Queue `request`; it joins the batch at the next call.  Raises Busy when `max_batch` rows are in
        flight and `max_queue` wait, Closed once draining or stopped."""
        return self.submit_all([request], [context])[0]

    def submit_all(self, requests: list[GenerationRequest], contexts: list[object]) -> list[Ticket]:
        """Queue every one of `requests` (each with its context), or none (Busy, Closed): the choices of one
        OpenAI request join together or not at all."""
        with self._lock:
            if not self._accepting:
                raise Closed("not accepting requests")
            if len(self._rows) + len(self._waiting) + len(requests) > self.max_batch + self.max_queue:
                raise Busy(f"{self.max_batch} rows busy and {self.max_queue} requests waiting")
            tickets = [Ticket(request, context) for request, context in zip(requests, contexts, strict=True)]
            self._waiting.extend(tickets)
            self._lock.notify()
        return tickets

    def cancel(self, ticket: Ticket) -> None:
        """Drop a request (its caller went away): it leaves the batch before the next call."""
        with self._lock:
            ticket.cancelled = True
            self._cancelled.add(id(ticket))
            self._lock.notify()

    @property
    def rows_in_flight(self) -> int:
        return len(self._rows)

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        """Nothing in flight and nothing waiting."""
        with self._lock:
            return not self._rows and not self._waiting

    def stop_accepting(self) -> None:
        """Refuse new requests (Closed); those in flight and waiting go on."""
        with self._lock:
            self._accepting = False

    def close(self, reason: str = "the server is shutting down") -> None:
        """Stop the worker; every request still in flight or waiting ends with `reason` as its error."""
        with self._lock:
            self._accepting = False
            self._stopped = True
            self._stop_reason = reason
            self._lock.notify()
        self._thread.join()

    # ---- the worker ----

    def _empty_columns(self) -> dict[str, np.ndarray]:
        return {
            "prev": np.zeros(0, np.int64),
            "slot": np.zeros(0, np.int64),
            "scale": np.zeros(0, np.float32),  # latent temperature
            "temperature": np.zeros(0, np.float64),  # each row's options as a schema-3 cell takes them
            "top_k": np.zeros(0, np.int64),
            "top_p": np.zeros(0, np.float64),
            "stopping": np.zeros(0, bool),  # has stop strings: its characters go through its matcher each call
            "scoring": np.zeros(0, bool),  # asked for log-probabilities
            "forced": np.zeros(0, np.int64),  # prime characters still to force
            "made": np.zeros(0, np.int64),  # characters generated
            "length": np.zeros(0, np.int64),
            "taken": np.zeros(0, np.int64),  # characters moved out of the ring into the row's text
            "streaming": np.zeros(0, bool),
            "published": np.zeros(0, np.int64),  # characters handed to publish()
            "last_publish": np.zeros(0, np.float64),
        }

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._stopped and not self._rows and not self._waiting:
                    self._lock.wait()
                if self._stopped:
                    break
                cancelled, self._cancelled = self._cancelled, set()
                joining = []
                while self._waiting and len(self._rows) + len(joining) < self.max_batch:
                    ticket = self._waiting.popleft()
                    if not ticket.cancelled:
                        joining.append(ticket)
            deliveries: list[Delivery] = []
            if cancelled:
                self._leave([i for i, row in enumerate(self._rows) if id(row.ticket) in cancelled])
            if joining:
                self._join(joining)
            if self._rows:
                try:
                    deliveries = self._step()
                except Exception as exc:  # the cell failed (VrnnError, MemoryError): every row ends with it
                    message = str(exc) or type(exc).__name__
                    deliveries = [Delivery(row.ticket, "", True, message) for row in self._rows]
                    self._leave(list(range(len(self._rows))))
            if deliveries:
                self.publish(deliveries)
        rows = [row.ticket for row in self._rows] + list(self._waiting)
        self._waiting.clear()
        if rows:
            self.publish([Delivery(ticket, "", True, self._stop_reason) for ticket in rows])

    def _join(self, tickets: list[Ticket]) -> None:
        now = time.perf_counter()
        rows = []
        for ticket in tickets:
            ticket.admitted = now
            request = ticket.request
            index, count = request.sample
            noise = SeededNoise(request.seed, 1, self._latent) if count == 1 else SampleNoise(
                request.seed, index, count, self._latent)  # fmt: skip
            row = _Row(ticket, noise, self._free.pop(),
                       stops=StopMatcher(request.stop) if request.stop else None)  # fmt: skip
            self._eps_at[row.slot] = NOISE_BLOCK  # refilled on first use
            self._uniform_at[row.slot] = NOISE_BLOCK
            rows.append(row)
        n = len(rows)
        options = RowOptions.of([r.ticket.request.options for r in rows])
        add = {
            "temperature": options.temperature,
            "top_k": options.top_k,
            "top_p": options.top_p,
            "stopping": np.array([bool(r.ticket.request.stop) for r in rows], bool),
            "scoring": np.array([r.ticket.request.logprobs is not None for r in rows], bool),
            "prev": np.full(n, self._start, np.int64),
            "slot": np.array([r.slot for r in rows], np.int64),
            "scale": np.array([r.ticket.request.options.latent_temperature for r in rows], np.float32),
            "forced": np.array([len(r.ticket.request.prime_ids) for r in rows], np.int64),
            "made": np.zeros(n, np.int64),
            "length": np.array([r.ticket.request.length for r in rows], np.int64),
            "taken": np.zeros(n, np.int64),
            "streaming": np.array([r.ticket.request.streaming for r in rows], bool),
            "published": np.zeros(n, np.int64),
            "last_publish": np.full(n, now),
        }
        self._columns = {k: np.concatenate([v, add[k]]) for k, v in self._columns.items()}
        fresh = self.cell.initial_state(n)
        batch_axis = {k: v.ndim - 2 for k, v in fresh.items()}  # every state tensor is [..., B, width]
        self._state = {k: np.concatenate([self._state[k], fresh[k]], axis=batch_axis[k]) for k in fresh}
        self._rows.extend(rows)
        self._by_slot.update((row.slot, row) for row in rows)
        self._regroup()

    def _leave(self, indices: list[int]) -> None:
        if not indices:
            return
        keep = np.ones(len(self._rows), bool)
        keep[indices] = False
        for i in indices:
            self._free.append(self._rows[i].slot)
            del self._by_slot[self._rows[i].slot]
        self._rows = [row for row, kept in zip(self._rows, keep, strict=True) if kept]
        self._columns = {k: v[keep] for k, v in self._columns.items()}
        self._state = {k: np.compress(keep, v, axis=v.ndim - 2) for k, v in self._state.items()}
        self._regroup()

    def _regroup(self) -> None:
        """The rows of each distinct set of options (each group's characters are chosen in one numpy call),
        and whether the cell's own choice fits every row: always for a schema-3 cell, for a schema-2 one when
        all are unfiltered at one temperature."""
        groups: dict[SamplingOptions, list[int]] = {}
        for i, row in enumerate(self._rows):
            groups.setdefault(row.ticket.request.options, []).append(i)
        self._groups = [(options, np.array(rows, np.int64)) for options, rows in groups.items()]
        temperatures = {options.temperature for options in groups}
        self._cell_chooses = self.cell.chooses_per_row or (
            len(temperatures) == 1 and all(options.unfiltered for options in groups)
        )

    def _draw(self, which: str, slots: np.ndarray, steps: int) -> np.ndarray:
        """The next `steps` draws of noise of each row in `slots` ([steps, len(slots), ...]), from each row's
        own stream: a row whose block has fewer left keeps them and draws the rest (the stream does not
        depend on how it is split into blocks)."""
        block, at = (self._eps, self._eps_at) if which == "eps" else (self._uniform, self._uniform_at)
        for slot in slots[at[slots] + steps > NOISE_BLOCK]:
            noise = self._by_slot[int(slot)].noise
            left = NOISE_BLOCK - at[slot]
            block[slot, :left] = block[slot, at[slot] :]
            wanted = NOISE_BLOCK - left
            block[slot, left:] = noise.eps(wanted)[:, 0, :] if which == "eps" else noise.uniform(wanted)[:, 0]
            at[slot] = 0
        offsets = at[slots][None, :] + np.arange(steps)[:, None]  # [steps, rows]
        drawn = block[slots[None, :], offsets]
        at[slots] += steps
        return drawn

    def _steps_for_call(self) -> int:
        """Steps for a call where the cell chooses: `steps_per_call`, or more while steps are cheap (few rows),
        as many as fit in `call_budget` seconds by the last call's time per step, up to MAX_CALL_STEPS."""
        fitting = int(self.call_budget / self._step_seconds) if self._step_seconds > 0 else self.steps_per_call
        return max(self.steps_per_call, min(fitting, MAX_CALL_STEPS))

    def _step(self) -> list[Delivery]:
        """Advance every row by one call: `steps_per_call` steps when the cell's own choice fits every row and
        none is being primed, else one step with each row's character chosen here.  Return what is due."""
        c = self._columns
        slot = c["slot"]
        sampling = c["forced"] == 0
        multi = self._cell_chooses and bool(sampling.all()) and self.steps_per_call > 1
        steps = self._steps_for_call() if multi else 1
        eps = self._draw("eps", slot, steps) * c["scale"][None, :, None]  # as generate_ids scales it (float32)
        uniform = np.full((steps, len(slot)), FORCED_UNIFORM)
        uniform[:, sampling] = self._draw("uniform", slot[sampling], steps)
        if self.cell.chooses_per_row:
            options: RowOptions | float = RowOptions(c["temperature"], c["top_k"], c["top_p"])
        else:
            options = self._groups[0][0].temperature if multi else 1.0

        started = time.perf_counter()
        chars, logits, self._state = self.cell.steps(c["prev"], self._state, eps, uniform, options)
        seconds = time.perf_counter() - started
        self._step_seconds = seconds / steps
        if self.on_call is not None:
            self.on_call(seconds, len(slot))

        broken = ~np.isfinite(logits).all(axis=(0, 2))
        if multi:  # the cell's own picks, made in-graph with the same arithmetic as choose
            picks = chars
        else:
            if self.cell.chooses_per_row:
                picks = chars.copy()
            else:
                picks = np.zeros((1, len(slot)), np.int64)
                for group, rows in self._groups:
                    picks[0, rows] = choose(logits[0, rows], uniform[0, rows], group)
            # Rows being primed are forced through their prime's characters (their picks are discarded).
            for i in np.flatnonzero(~sampling):
                prime = self._rows[i].ticket.request.prime_ids
                picks[0, i] = prime[len(prime) - c["forced"][i]]
            c["forced"][~sampling] -= 1
        broken |= ((picks < 0) | (picks >= logits.shape[2])).any(axis=0)
        c["prev"] = picks[-1]

        made, length = c["made"], c["length"]
        before = made.copy()
        if c["scoring"].any():
            self._keep_logprobs(logits, picks, c["scoring"] & sampling & (made < length), length - made)
        for step in range(steps):
            writing = sampling & (made < length)
            self._ring[slot[writing], made[writing] % OUTPUT_RING] = picks[step, writing]
            made[writing] += 1
        now = time.perf_counter()
        for i in np.flatnonzero((before == 0) & (made > 0)):
            self._rows[i].ticket.first_char = now
        done = made >= length
        # Rows with stop strings: this call's characters through their matchers now, so that a stopped row
        # leaves at once; what the matcher releases waits in the row's text for its next delivery.
        matching = c["stopping"] & (made > c["taken"])
        if matching.any():
            rows = np.flatnonzero(matching)
            for i, piece in zip(rows.tolist(), self._take(rows), strict=True):
                row = self._rows[i]
                matcher = row.stops
                assert matcher is not None
                released = "".join(matcher.feed(char) for char in piece if not matcher.stopped)
                if matcher.stopped:
                    done[i] = True
                elif done[i]:
                    released += matcher.flush()
                if released:
                    row.text.append(released)
        pending = made - c["published"]
        interval = max(self.flush_interval, len(slot) / MAX_CHUNK_RATE)
        due = (pending > 0) & (
            done | (c["streaming"] & ((c["published"] == 0) | (now - c["last_publish"] >= interval)))
        )
        # The ring must be emptied before the next call could wrap it.
        full = (made - c["taken"] > OUTPUT_RING - MAX_CALL_STEPS) & ~due
        due &= ~broken
        full &= ~broken
        deliveries: list[Delivery] = []
        leaving = np.flatnonzero(broken).tolist()
        for i in leaving:
            message = "the cell produced non-finite logits or a character outside its vocabulary"
            deliveries.append(Delivery(self._rows[i].ticket, "", True, message))
        moving = np.flatnonzero(due | full)
        if len(moving):
            pieces = self._take(moving)
            published, last_publish = c["published"], c["last_publish"]
            for i, piece, is_due, is_done in zip(
                moving.tolist(), pieces, due[moving].tolist(), done[moving].tolist(), strict=True
            ):
                row = self._rows[i]
                if not is_due:
                    row.text.append(piece)
                    continue
                if row.text:
                    piece = "".join(row.text) + piece
                    row.text.clear()
                published[i] = made[i]
                last_publish[i] = now
                if row.ticket.request.logprobs is not None:
                    start, end = row.ticket.sent_chars, row.ticket.sent_chars + len(piece)
                    top = row.top_logprobs[start:end] if row.ticket.request.logprobs else None
                    delivery = Delivery(row.ticket, piece, is_done, None, row.logprobs[start:end], top)
                else:
                    delivery = Delivery(row.ticket, piece, is_done)
                row.ticket.sent_chars += len(piece)
                if is_done:
                    row.ticket.finish_reason = "stop" if row.stops is not None and row.stops.stopped else "length"
                    leaving.append(i)
                deliveries.append(delivery)
        self._leave(leaving)
        return deliveries

    def _keep_logprobs(self, logits: np.ndarray, picks: np.ndarray, writing: np.ndarray, left: np.ndarray) -> None:
        """For the rows that asked, each pick's log-probability under its row's options (and the best
        alternatives), in order beside the row's characters: only steps that write a character count."""
        for i in np.flatnonzero(writing).tolist():
            row = self._rows[i]
            top = row.ticket.request.logprobs
            assert top is not None  # (`writing` holds only rows that asked)
            steps = min(len(picks), int(left[i]))
            lp = log_probabilities(logits[:steps, i], row.ticket.request.options)
            row.logprobs.extend(lp[np.arange(steps), picks[:steps, i]].tolist())
            if top:
                best = np.argsort(-lp, axis=1, kind="stable")[:, :top]
                chars = self._chars
                row.top_logprobs.extend(
                    {str(chars[j]): float(lp[s, j]) for j in best[s].tolist() if lp[s, j] > -np.inf}
                    for s in range(steps)
                )

    def _take(self, rows: np.ndarray) -> list[str]:
        """Move the characters of `rows` (batch indices) out of their rings: each row's text since its last take,
        decoded for all of them at once."""
        c = self._columns
        start, stop = c["taken"][rows], c["made"][rows]
        counts = stop - start
        owner = np.repeat(np.arange(len(rows)), counts)
        offsets = np.cumsum(counts) - counts
        positions = (np.arange(int(counts.sum())) - offsets[owner] + start[owner]) % OUTPUT_RING
        ids = self._ring[c["slot"][rows][owner], positions]
        text = self._chars[ids].tobytes().decode("utf-32-le", "surrogatepass")  # one character per id
        c["taken"][rows] = stop
        bounds = [0, *np.cumsum(counts).tolist()]
        return [text[a:b] for a, b in itertools.pairwise(bounds)]
