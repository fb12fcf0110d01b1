"""`vrnn-serve`: serve a cell over HTTP, many concurrent requests batched into one cell (uvicorn + Starlette).

Needs the `serve` extra (pip install 'vrnn[serve]'); the base install stays numpy, onnxruntime and click.
The first SIGTERM or Ctrl-C drains (new requests get 503, /readyz turns false, requests in flight finish
within --drain-timeout) and exits 0; a second one exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

import click

from vrnn import __version__
from vrnn.runtime.bundled import BUNDLED_CELL, bundled_file
from vrnn.runtime.commands import OneLineCommand, cli_errors, require_extra
from vrnn.runtime.errors import UsageError, VrnnError
from vrnn.runtime.limits import MAX_THREADS, check_threads
from vrnn.runtime.loop import MAX_LENGTH
from vrnn.runtime.serving.batcher import MAX_CALL_STEPS
from vrnn.runtime.serving.request import BODY_TIMEOUT, HEADER_TIMEOUT, MAX_HEAD_BYTES, MAX_HEADERS, ConnectionLimits
from vrnn.runtime.stop_signals import STOP_SIGNALS, Terminated, handling_signals

if TYPE_CHECKING:
    from vrnn.runtime.serving.server import ServeApp

SERVE_MODULES = ("starlette", "uvicorn", "prometheus_client")
MAX_ROWS = 4096  # rows of one batch, and requests waiting: the cell's state for 4096 rows is tens of MB
MAX_DRAIN_SECONDS = 24 * 3600
LISTEN_BACKLOG = 2048  # connections the kernel holds before they are accepted (uvicorn's default)
MAX_CONNECTIONS = ConnectionLimits.max_connections  # the rows and queue (256 + 1,024), keep-alive idlers
RESERVED_FILES = 64  # file descriptors kept for the cell, threads, logs and the listening socket
MAX_TIMEOUT = 3600.0


def check_count(value: int, name: str, low: int, high: int) -> None:
    """Refuse an integer option outside [low, high], naming it."""
    if not low <= value <= high:
        raise UsageError(f"{name} must be from {low} to {high:,}, got {value}")


def check_seconds(value: float, name: str, high: float) -> None:
    """Refuse a duration option outside [0, high] seconds (NaN included), naming it."""
    if not 0 <= value <= high:  # False for NaN too
        raise UsageError(f"{name} must be from 0 to {high:g} seconds, got {value}")


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0: a free one), refused in one line when it cannot be."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        raise UsageError(f"--host must be an IP address such as 127.0.0.1 or ::1, got {host!r}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)  # now, not when uvicorn starts: clients may connect once the port is printed
    except OSError as exc:
        sock.close()
        raise VrnnError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def raise_file_limit() -> int:
    """Raise the soft limit on open files to the hard one (each connection holds one); return the soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # a hard limit of "unlimited" past the kernel's nr_open
        return soft
    return target


def serve(app: ServeApp, sock: socket.socket, drain_timeout: float, limits: ConnectionLimits, banner: str) -> int:
    """Run the app on `sock` until a stop signal; return the signal that cut it short, 0 after a drain.  `banner`
    is printed once the signals are ours: a signal right after it drains like any other."""
    import uvicorn

    from vrnn.runtime.serving.http_guard import guarded_protocol

    loop_kind = "uvloop" if _importable("uvloop") else "asyncio"
    config = uvicorn.Config(app.app, lifespan="off", log_level="warning", access_log=False, loop=loop_kind,
                            http=guarded_protocol(limits), timeout_graceful_shutdown=2,
                            server_header=False)  # fmt: skip

    class DrainingServer(uvicorn.Server):
        """uvicorn's server with vrnn-serve's signals: the first drains, the second stops at once."""

        first_signal: int | None = None
        second_signal: int | None = None

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with handling_signals(STOP_SIGNALS, self.handle_exit):
                print(banner, flush=True)
                yield

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.first_signal is None:
                self.first_signal = sig
                self._loop.call_soon_threadsafe(self._start_drain)
            else:
                self.second_signal = sig
                self.force_exit = self.should_exit = True
                # Exiting at once cancels the requests in flight: uvicorn would log each as a traceback.
                logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)

        def _start_drain(self) -> None:
            self._drain_task = asyncio.ensure_future(self._drain())

        async def _drain(self) -> None:
            in_flight = app.batcher.rows_in_flight + app.batcher.queue_depth
            say(f"draining: {in_flight} request(s) in flight or queued, up to {drain_timeout:g} s")
            drained = await app.drain(drain_timeout)
            if not drained:
                say("drain timeout: the requests still running were ended")
            self.should_exit = True

        async def serve(self, sockets: list[socket.socket] | None = None) -> None:
            self._loop = asyncio.get_running_loop()
            await super().serve(sockets)

    server = DrainingServer(config)
    server.run(sockets=[sock])
    if server.second_signal is not None:
        return server.second_signal
    if server.first_signal is None:  # uvicorn stopped on its own (a startup failure it logged)
        raise VrnnError("the server stopped unexpectedly")
    return 0


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def say(message: str) -> None:
    """One status line on stderr."""
    print(f"vrnn-serve: {message}", file=sys.stderr, flush=True)


@click.command(cls=OneLineCommand, needs=SERVE_MODULES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", message="%(prog)s %(version)s")
@click.argument("cell", type=click.Path(readable=False), required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--port", type=int, default=8000, show_default=True, help="Port; 0 picks a free one and prints it.")
@click.option("--max-batch", type=int, default=256, show_default=True, help="Rows advanced together per cell call.")
@click.option("--max-queue", type=int, default=1024, show_default=True,
              help="Requests waiting for a row; beyond them, 503 with Retry-After.")  # fmt: skip
@click.option("--max-length", type=int, default=10_000, show_default=True, help="Largest `length` a request may ask.")
@click.option("--max-prime", type=int, default=4_096, show_default=True, help="Longest `prime` in characters.")
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads.  [default: every core]")
@click.option("--drain-timeout", type=float, default=30.0, show_default=True,
              help="Seconds requests in flight get to finish after SIGTERM or Ctrl-C.")  # fmt: skip
@click.option("--flush-interval", type=float, default=0.02, show_default=True,
              help="Seconds between a stream's chunks at most (its first characters go at once).")  # fmt: skip
@click.option("--steps-per-call", type=int, default=8, show_default=True,
              help="Steps a cell call runs when every row takes the cell's own choice (1 to 32): more spread "
              "each call's fixed cost, fewer let new requests join sooner.")  # fmt: skip
@click.option("--call-budget", type=float, default=0.02, show_default=True,
              help="Seconds a call may take when steps are cheap (few rows): it then runs more steps than "
              "--steps-per-call, up to 32.")  # fmt: skip
@click.option("--max-connections", type=int, default=MAX_CONNECTIONS, show_default=True,
              help="Open connections at most; past them a new one gets 503 and is closed.  Capped by the open-file "
              "limit, which start-up raises to its hard limit.")  # fmt: skip
@click.option("--header-timeout", type=float, default=HEADER_TIMEOUT, show_default=True,
              help="Seconds a request's head (request line and headers) may take to arrive, from the connection's "
              "opening or the previous response's end.")  # fmt: skip
@click.option("--body-timeout", type=float, default=BODY_TIMEOUT, show_default=True,
              help="Seconds a request's body may take to arrive once its head has (408 past them).")  # fmt: skip
@click.option("--max-head-bytes", type=int, default=MAX_HEAD_BYTES, show_default=True,
              help="Largest request head (request line and headers); past it, 431.")  # fmt: skip
@click.option("--max-headers", type=int, default=MAX_HEADERS, show_default=True,
              help="Most header lines in a request; past them, 431.")  # fmt: skip
@cli_errors
def main(
    cell: str | None,
    host: str,
    port: int,
    max_batch: int,
    max_queue: int,
    max_length: int,
    max_prime: int,
    threads: int | None,
    drain_timeout: float,
    flush_interval: float,
    steps_per_call: int,
    call_budget: float,
    max_connections: int,
    header_timeout: float,
    body_timeout: float,
    max_head_bytes: int,
    max_headers: int,
) -> None:
    """Serve CELL over HTTP: POST /v1/generate, GET /v1/model, /healthz, /readyz, /metrics, GET /v1/models.

    Without CELL, serves the bundled Tiny Shakespeare model.  Concurrent requests advance together in one
    batched cell call; a request with seed S and options O gets exactly `vrnn-run CELL --seed S` with O.
    API and examples: docs/serving.md.
    """
    check_count(port, "--port", 0, 65535)
    check_count(max_batch, "--max-batch", 1, MAX_ROWS)
    check_count(max_queue, "--max-queue", 0, MAX_ROWS * 16)
    check_count(max_length, "--max-length", 1, MAX_LENGTH)
    check_count(max_prime, "--max-prime", 0, 65_536)
    check_count(steps_per_call, "--steps-per-call", 1, MAX_CALL_STEPS)
    check_threads(threads)
    check_seconds(drain_timeout, "--drain-timeout", MAX_DRAIN_SECONDS)
    check_seconds(call_budget, "--call-budget", 10)
    check_seconds(flush_interval, "--flush-interval", 10)
    check_count(max_connections, "--max-connections", 1, 1 << 20)
    check_count(max_head_bytes, "--max-head-bytes", 1024, 1 << 20)
    check_count(max_headers, "--max-headers", 1, 10_000)
    for value, name in ((header_timeout, "--header-timeout"), (body_timeout, "--body-timeout")):
        check_seconds(value, name, MAX_TIMEOUT)
        if value == 0:
            raise UsageError(f"{name} must be more than 0 seconds")
    require_extra("vrnn-serve", *SERVE_MODULES)
    from vrnn.runtime.cell import OnnxCell
    from vrnn.runtime.serving.request import Limits
    from vrnn.runtime.serving.server import ServeApp

    path = cell if cell is not None else str(bundled_file(BUNDLED_CELL, "a CELL argument"))
    # No spinning: between calls the event loop needs the cores (measured: the same throughput, shorter gaps).
    loaded = OnnxCell(path, threads=threads if threads is not None else min(MAX_THREADS, os.cpu_count() or 1),
                      batch=max_batch, spinning=False)  # fmt: skip
    sock = listening_socket(host, port)
    app = ServeApp(loaded, path, Limits(max_length, max_prime), max_batch, max_queue, flush_interval, steps_per_call,
                   call_budget, body_timeout)  # fmt: skip
    files = raise_file_limit()
    if max_connections > files - RESERVED_FILES:
        max_connections = max(1, files - RESERVED_FILES)
        say(f"--max-connections lowered to {max_connections:,}: the open-file limit is {files:,}")
    limits = ConnectionLimits(max_head_bytes, max_headers, header_timeout, max_connections)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    banner = (f"vrnn-serve: listening on http://{shown}:{bound_port} ({loaded.info.weights} cell {path}, "
              f"max batch {max_batch}, {loaded.threads} thread(s))")  # fmt: skip
    try:
        stopped_by = serve(app, sock, drain_timeout, limits, banner)
    finally:
        app.batcher.close()  # a cell call still running when the interpreter exits would abort the process
    if stopped_by:
        if stopped_by == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(stopped_by)
    say("drained, exiting")


if __name__ == "__main__":
    main()
