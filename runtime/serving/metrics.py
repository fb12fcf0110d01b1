"""vrnn-serve's Prometheus metrics (`GET /metrics`), in a registry of the server's own.

prometheus-client writes the text format and keeps the counters thread-safe: the batcher's worker thread
observes cell calls while the event loop counts requests.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

OUTCOMES = ("completed", "bad_request", "busy", "draining", "disconnected", "failed")
"""How a generation request ended: done; refused as malformed (4xx); refused for a full queue or while
draining (503); its client went away before the end; failed in the cell or cut by shutdown (5xx or an error
event)."""

# A batch-1 step takes about 0.1 ms and a batch-256 step a few ms on a laptop-class CPU: buckets from 50 µs
# to 0.5 s, so a slow machine or a stall still lands in a bucket rather than +Inf.
CALL_BUCKETS = (5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
FIRST_CHAR_BUCKETS = (1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServeMetrics:
    """The counters, gauges and histograms vrnn-serve exports."""

    def __init__(self, rows_in_flight: Callable[[], float], queue_depth: Callable[[], float]) -> None:
        """`rows_in_flight` and `queue_depth` are read at each scrape."""
        disable_created_metrics()  # the *_created series: a start time per series, noise in a scrape
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "vrnn_requests", "Generation requests by how they ended.", ["outcome"], registry=self.registry
        )
        for outcome in OUTCOMES:  # every outcome present from the start, at 0
            self.requests.labels(outcome)
        self.characters = Counter(
            "vrnn_generated_characters", "Characters generated and sent to clients.", registry=self.registry
        )
        Gauge("vrnn_rows_in_flight", "Requests being generated now (rows of the batch).",
              registry=self.registry).set_function(rows_in_flight)  # fmt: skip
        Gauge("vrnn_queue_depth", "Requests waiting for a row.", registry=self.registry).set_function(queue_depth)
        self.call_seconds = Histogram(
            "vrnn_cell_call_seconds", "Duration of one cell call (one step of every row).", buckets=CALL_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.call_rows = Histogram(
            "vrnn_cell_call_rows", "Rows advanced by one cell call.", buckets=ROW_BUCKETS, registry=self.registry
        )
        self.first_char_seconds = Histogram(
            "vrnn_time_to_first_char_seconds", "From a request's arrival to its first character being made.",
            buckets=FIRST_CHAR_BUCKETS, registry=self.registry,
        )  # fmt: skip

    def observe_call(self, seconds: float, rows: int) -> None:
        """One cell call (from the batcher's worker thread)."""
        self.call_seconds.observe(seconds)
        self.call_rows.observe(rows)

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
