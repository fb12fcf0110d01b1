"""vrnn-serve's HTTP API (an ASGI app on Starlette): generation, model metadata, health, readiness, metrics.

Every request for text becomes a row of one Batcher (vrnn.runtime.serving.batcher): the event loop parses and
answers, the batcher's worker thread runs the cell.  The worker hands each call's characters to the loop
in one `call_soon_threadsafe`, which puts them on each request's own queue.  The routes, fields and errors
are documented in docs/serving.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from vrnn import __version__
from vrnn.runtime import schema
from vrnn.runtime.cell import OnnxCell
from vrnn.runtime.serving.batcher import Batcher, Busy, Closed, Delivery, Ticket
from vrnn.runtime.serving.metrics import ServeMetrics
from vrnn.runtime.serving.openai_request import Completions, OpenAIError, parse_completions
from vrnn.runtime.serving.request import (
    BODY_TIMEOUT,
    HALF_CLOSED,
    MAX_BODY_BYTES,
    Limits,
    Parsed,
    RequestError,
    parse_generate,
)

log = logging.getLogger("vrnn.serve")

RETRY_AFTER_SECONDS = 1  # a full queue clears within a few hundred characters' time
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy may hold the stream back


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: a request can put a lone surrogate (valid in JSON text,
    not encodable as UTF-8) into a field name the error then quotes, which Starlette's UTF-8 rendering
    would turn into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(
    status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """The JSON every refusal has: {"error": message, "field": name or null}."""
    return AsciiJSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def openai_error(
    status: int,
    message: str,
    kind: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """An error in OpenAI's shape, {"error": {"message", "type", "param", "code"}}, which its clients raise as
    the exception of the status (400 BadRequestError, 404 NotFoundError, ...)."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return AsciiJSONResponse(body, status_code=status, headers=headers)


def sse(event: str, data: dict[str, Any]) -> str:
    """One Server-Sent Event: a name and one line of JSON (JSON escapes newlines, so the text fits one line)."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


class Whole(NamedTuple):
    """One request's whole text as its deliveries brought it: the characters, their log-probabilities if
    asked, and the cell's error if it failed."""

    text: str
    logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    error: str | None


def check_body_framing(request: Request) -> None:
    """Refuse a body this server cannot read as sent: compressed (415), or framed by a transfer coding other
    than chunked (501, as RFC 9112 asks), which the HTTP parser would otherwise pass through undecoded."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise RequestError(415, f"the body must not be compressed (Content-Encoding: {encoding[:40]})")
    coding = request.headers.get("transfer-encoding")
    if coding is not None and coding.strip().lower() != "chunked":
        raise RequestError(501, f"Transfer-Encoding {coding[:40]!r} is not supported: send chunked or a length")


class ServeApp:
    """The HTTP side of vrnn-serve: routes, request checks, streaming, draining, metrics."""

    def __init__(
        self,
        cell: OnnxCell,
        cell_path: str,
        limits: Limits,
        max_batch: int,
        max_queue: int,
        flush_interval: float = 0.02,
        steps_per_call: int = 8,
        call_budget: float = 0.02,
        body_timeout: float = BODY_TIMEOUT,
    ) -> None:
        self.cell, self.cell_path, self.limits, self.body_timeout = cell, cell_path, limits, body_timeout
        self.model_id = Path(cell_path).stem  # the name OpenAI's clients know the served cell by
        self.started = int(time.time())
        self.draining = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.metrics = ServeMetrics(lambda: self.batcher.rows_in_flight, lambda: self.batcher.queue_depth)
        self.batcher = Batcher(cell, self._publish, max_batch=max_batch, max_queue=max_queue,
                               flush_interval=flush_interval, steps_per_call=steps_per_call, call_budget=call_budget,
                               on_call=self.metrics.observe_call)  # fmt: skip
        routes = [
            Route("/v1/generate", self.generate, methods=["POST"]),
            Route("/v1/model", self.model, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics_route, methods=["GET"]),
            # OpenAI's protocol (docs/serving.md, "OpenAI-compatible"): the models, and a clear answer for chat.
            Route("/v1/models", self.openai_models, methods=["GET"]),
            Route("/v1/models/{model:path}", self.openai_model, methods=["GET"]),
            Route("/v1/completions", self.openai_completions, methods=["POST"]),
            Route("/v1/chat/completions", self.openai_chat, methods=["POST"]),
        ]
        handlers = {HTTPException: self._http_error, Exception: self._internal_error}
        self.app = Starlette(routes=routes, exception_handlers=handlers)  # type: ignore[arg-type]
        # `POST /v1/generate/` would get a 307 whose Location is built from the client's own Host header.
        self.app.router.redirect_slashes = False

    # ---- the worker's hand-off ----

    def _publish(self, deliveries: list[Delivery]) -> None:
        """From the batcher's thread: pass one call's deliveries to the event loop in one hop."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: the process is exiting
            loop.call_soon_threadsafe(self._deliver, deliveries)

    def _deliver(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            queue: asyncio.Queue[Delivery] = delivery.ticket.context  # type: ignore[assignment]
            queue.put_nowait(delivery)

    # ---- routes ----

    async def generate(self, request: Request) -> Response:
        """POST /v1/generate: one sample, as one JSON answer or as Server-Sent Events."""
        self._loop = asyncio.get_running_loop()
        try:
            if self.draining:
                raise RequestError(503, "the server is shutting down: try another instance")
            check_body_framing(request)
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                raise RequestError(415, f"the body must be application/json, not {kind[:60] or 'untyped'}")
            try:
                body = await asyncio.wait_for(self._read_body(request), self.body_timeout)
            except asyncio.TimeoutError:  # TimeoutError itself from 3.11 on
                raise RequestError(408, f"the body did not arrive within {self.body_timeout:g} s") from None
            parsed = parse_generate(body, self.cell.vocab, self.limits)
            queue: asyncio.Queue[Delivery] = asyncio.Queue()
            try:
                ticket = self.batcher.submit(parsed.request, context=queue)
            except Busy:
                raise RequestError(503, "every row is busy and the queue is full: retry shortly") from None
            except Closed:
                raise RequestError(503, "the server is shutting down: try another instance") from None
        except RequestError as exc:
            outcome = "busy" if exc.status == 503 and not self.draining else "draining" if exc.status == 503 else None
            self.metrics.requests.labels(outcome or "bad_request").inc()
            headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.status == 503 else {}
            if exc.status in (408, 413, 501):  # a body not read to its end: the connection cannot carry another
                headers["Connection"] = "close"
            return error_response(exc.status, exc.message, exc.field, headers or None)
        headers = {"X-Vrnn-Seed": str(parsed.request.seed)}
        if parsed.stream:
            return StreamingResponse(self._events(ticket, queue, parsed), media_type="text/event-stream",
                                     headers=SSE_HEADERS | headers)  # fmt: skip
        return await self._whole(request, ticket, queue, parsed, headers)

    async def _read_body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it passes MAX_BODY_BYTES (before reading it all)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise RequestError(413, f"the body is larger than {MAX_BODY_BYTES // 1024} KiB")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise RequestError(413, f"the body is larger than {MAX_BODY_BYTES // 1024} KiB")
                chunks.append(chunk)
        except ClientDisconnect:
            raise RequestError(400, "the client went away before sending the whole body") from None
        return b"".join(chunks)

    def _summary(self, ticket: Ticket, parsed: Parsed) -> dict[str, Any]:
        """The counts and timings of a finished request (milliseconds from its arrival)."""
        now = time.perf_counter()

        def since(moment: float | None) -> float | None:
            return None if moment is None else round((moment - ticket.submitted) * 1000, 3)

        return {
            "seed": parsed.request.seed,
            "prime_chars": len(parsed.prime),
            "chars": ticket.sent_chars,
            "finish_reason": ticket.finish_reason,
            "queued_ms": since(ticket.admitted),
            "first_char_ms": since(ticket.first_char),
            "total_ms": since(now),
        }

    def _finished(self, ticket: Ticket, error: str | None) -> None:
        self.metrics.requests.labels("failed" if error else "completed").inc()
        if ticket.first_char is not None and error is None:
            self.metrics.first_char_seconds.observe(ticket.first_char - ticket.submitted)

    async def _events(self, ticket: Ticket, queue: asyncio.Queue[Delivery], parsed: Parsed) -> AsyncIterator[str]:
        """The Server-Sent Events of one request: `text` events as characters are made, then `done` (or
        `error`).  If the client goes away the stream is cancelled here, and its row leaves the batch."""
        finished = False
        try:
            while True:
                delivery = await queue.get()
                if delivery.text:
                    event: dict[str, Any] = {"text": delivery.text}
                    if delivery.logprobs is not None:
                        event["logprobs"] = delivery.logprobs
                        if delivery.top_logprobs is not None:
                            event["top_logprobs"] = delivery.top_logprobs
                    yield sse("text", event)
                    self.metrics.characters.inc(len(delivery.text))  # handed to the connection, not only made
                if delivery.done:
                    finished = True
                    self._finished(ticket, delivery.error)
                    if delivery.error:
                        yield sse("error", {"error": delivery.error})
                    else:
                        yield sse("done", self._summary(ticket, parsed))
                    return
        finally:
            if not finished:
                self.batcher.cancel(ticket)
                self.metrics.requests.labels("disconnected").inc()

    async def _whole_texts(
        self, request: Request, tickets: list[Ticket], queues: list[asyncio.Queue[Delivery]]
    ) -> tuple[list[Whole] | None, bool]:
        """Each ticket's whole text once all are done, or None if the client goes away first (its rows are
        then dropped); and whether it half-closed, which vrnn-serve's protocol reports through HALF_CLOSED:
        all that a client that closed shows until something is written, and a whole answer writes nothing
        until its end."""

        async def collect(queue: asyncio.Queue[Delivery]) -> Whole:
            pieces, values, tops = [], [], []
            while True:
                delivery = await queue.get()
                pieces.append(delivery.text)
                values.extend(delivery.logprobs or ())
                tops.extend(delivery.top_logprobs or ())
                if delivery.done:
                    return Whole("".join(pieces), values, tops, delivery.error)

        async def disconnected() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        half_closed = request.scope.get("extensions", {}).get(HALF_CLOSED, asyncio.Event())
        work = asyncio.ensure_future(asyncio.gather(*(collect(q) for q in queues)))
        watchers = {asyncio.ensure_future(disconnected()), asyncio.ensure_future(half_closed.wait())}
        try:
            await asyncio.wait({work, *watchers}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for watcher in watchers:
                watcher.cancel()
            if not work.done():
                work.cancel()
                for ticket in tickets:
                    self.batcher.cancel(ticket)
                    self.metrics.requests.labels("disconnected").inc()
        if not work.done() or work.cancelled():
            return None, half_closed.is_set()
        return work.result(), half_closed.is_set()

    async def _whole(
        self, request: Request, ticket: Ticket, queue: asyncio.Queue[Delivery], parsed: Parsed, headers: dict[str, str]
    ) -> Response:
        """One JSON answer when the text is done; the row is dropped if the client goes away first."""
        results, half_closed = await self._whole_texts(request, [ticket], [queue])
        if results is None:
            if half_closed:  # perhaps still reading (`nc -N`): say why no text comes
                message = (
                    "the client half-closed the connection: a whole answer needs it open to the end (a stream does not)"
                )
                return error_response(400, message)
            return Response(status_code=499)  # nobody is listening; uvicorn drops it
        (whole,) = results
        self._finished(ticket, whole.error)
        if whole.error:
            return error_response(500, whole.error)
        self.metrics.characters.inc(len(whole.text))
        answer: dict[str, Any] = {"text": parsed.prime + whole.text, **self._summary(ticket, parsed)}
        if parsed.request.logprobs is not None:
            answer["logprobs"] = whole.logprobs
            if parsed.request.logprobs:
                answer["top_logprobs"] = whole.top_logprobs
        return AsciiJSONResponse(answer, headers=headers)

    async def model(self, request: Request) -> Response:
        """GET /v1/model: what the cell is and what this server allows."""
        info = self.cell.info
        return AsciiJSONResponse({
            "file": Path(self.cell_path).name,
            "format": schema.CELL_FORMAT,
            "schema_version": int(info.metadata.get(schema.META_SCHEMA_VERSION, schema.CELL_SCHEMA_VERSION)),
            "weights": info.weights,
            "config": asdict(info.config),
            "vocab": list(info.vocab.chars),
            "start_char": info.start_char,
            "source": info.source,
            "limits": {"max_length": self.limits.max_length, "max_prime": self.limits.max_prime,
                       "max_batch": self.batcher.max_batch, "max_queue": self.batcher.max_queue,
                       "max_body_bytes": MAX_BODY_BYTES},
            "server": {"name": "vrnn-serve", "version": __version__},
        })  # fmt: skip

    # ---- OpenAI's protocol ----

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.model_id, "object": "model", "created": self.started, "owned_by": "vrnn"}

    async def openai_models(self, request: Request) -> Response:
        """GET /v1/models: the one model served, as OpenAI's clients list models."""
        return AsciiJSONResponse({"object": "list", "data": [self._model_card()]})

    async def openai_model(self, request: Request) -> Response:
        """GET /v1/models/{id}: the served model, or OpenAI's 404."""
        if request.path_params["model"] != self.model_id:
            message = f"no model {request.path_params['model'][:100]!r}: this server serves {self.model_id!r}"
            return openai_error(404, message, "invalid_request_error", "model", "model_not_found")
        return AsciiJSONResponse(self._model_card())

    async def openai_completions(self, request: Request) -> Response:
        """POST /v1/completions: OpenAI's completions protocol on the same batcher (docs/serving.md)."""
        self._loop = asyncio.get_running_loop()
        try:
            if self.draining:
                raise OpenAIError(503, "the server is shutting down: try another instance")
            try:
                check_body_framing(request)
                body = await asyncio.wait_for(self._read_body(request), self.body_timeout)
            except RequestError as exc:
                raise OpenAIError(exc.status, exc.message) from None
            except asyncio.TimeoutError:  # TimeoutError itself from 3.11 on
                raise OpenAIError(408, f"the body did not arrive within {self.body_timeout:g} s") from None
            parsed = parse_completions(body, self.cell.vocab, self.limits, self.model_id)
            queues: list[asyncio.Queue[Delivery]] = [asyncio.Queue() for _ in parsed.requests]
            try:
                tickets = self.batcher.submit_all(parsed.requests, list(queues))
            except Busy:
                raise OpenAIError(503, "every row is busy and the queue is full: retry shortly") from None
            except Closed:
                raise OpenAIError(503, "the server is shutting down: try another instance") from None
        except OpenAIError as exc:
            outcome = ("draining" if self.draining else "busy") if exc.status == 503 else "bad_request"
            self.metrics.requests.labels(outcome).inc()
            kind = "server_error" if exc.status >= 500 else "invalid_request_error"
            retry = {"Retry-After": str(RETRY_AFTER_SECONDS)} if exc.status == 503 else None
            return openai_error(exc.status, exc.message, kind, exc.param, headers=retry)
        head = {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion", "created": int(time.time()),
                "model": self.model_id}  # fmt: skip
        headers = {"X-Vrnn-Seed": str(parsed.seed)}
        if parsed.stream:
            return StreamingResponse(self._completion_chunks(head, parsed, tickets, queues),
                                     media_type="text/event-stream", headers=SSE_HEADERS | headers)  # fmt: skip
        return await self._completion(request, head, parsed, tickets, queues, headers)

    def _choice_logprobs(self, parsed: Completions, index: int, text: str, values: list[float],
                         tops: list[dict[str, float]], offset: int) -> dict[str, Any] | None:  # fmt: skip
        """OpenAI's legacy logprobs object for `text` (echoed prompt characters have none)."""
        if parsed.logprobs is None:
            return None
        prompt = parsed.prompts[index // parsed.n] if parsed.echo and offset == 0 else ""
        tokens = list(prompt + text)
        return {
            "tokens": tokens,
            "token_logprobs": [None] * len(prompt) + values,
            "top_logprobs": ([None] * len(prompt) + list(tops)) if parsed.logprobs else None,
            "text_offset": list(range(offset, offset + len(tokens))),
        }

    async def _completion(self, request: Request, head: dict[str, Any], parsed: Completions, tickets: list[Ticket],
                          queues: list[asyncio.Queue[Delivery]], headers: dict[str, str]) -> Response:  # fmt: skip
        """Every choice whole, in one JSON answer; the rows are dropped if the client goes away first."""
        results, _ = await self._whole_texts(request, tickets, queues)
        if results is None:
            return Response(status_code=499)  # nobody is listening; uvicorn drops it
        choices, made = [], 0
        for index, ((text, values, tops, error), ticket) in enumerate(zip(results, tickets, strict=True)):
            self._finished(ticket, error)
            if error:
                return openai_error(500, error, "server_error")
            made += len(text)
            self.metrics.characters.inc(len(text))
            prompt = parsed.prompts[index // parsed.n] if parsed.echo else ""
            choices.append({"text": prompt + text, "index": index,
                            "logprobs": self._choice_logprobs(parsed, index, text, values, tops, 0),
                            "finish_reason": ticket.finish_reason})  # fmt: skip
        prompt_chars = sum(len(p) for p in parsed.prompts)
        usage = {"prompt_tokens": prompt_chars, "completion_tokens": made, "total_tokens": prompt_chars + made}
        return AsciiJSONResponse({**head, "choices": choices, "usage": usage}, headers=headers)

    async def _completion_chunks(self, head: dict[str, Any], parsed: Completions, tickets: list[Ticket],
                                 queues: list[asyncio.Queue[Delivery]]) -> AsyncIterator[str]:  # fmt: skip
        """OpenAI's stream: `data: {chunk}` as each choice's characters come, a last chunk per choice with its
        finish_reason, then `data: [DONE]`.  If the client goes away, every row leaves the batch."""
        merged: asyncio.Queue[tuple[int, Delivery]] = asyncio.Queue()

        async def forward(index: int, queue: asyncio.Queue[Delivery]) -> None:
            while True:
                delivery = await queue.get()
                merged.put_nowait((index, delivery))
                if delivery.done:
                    return

        def chunk(index: int, text: str, logprobs: dict[str, Any] | None, finish: str | None) -> str:
            choice = {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}
            return f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"

        forwarders = [asyncio.ensure_future(forward(i, q)) for i, q in enumerate(queues)]
        offsets = [0] * len(tickets)
        open_choices, finished = len(tickets), False
        try:
            if parsed.echo:
                for index in range(len(tickets)):
                    prompt = parsed.prompts[index // parsed.n]
                    logprobs = self._choice_logprobs(parsed, index, "", [], [], 0)
                    offsets[index] = len(prompt)
                    yield chunk(index, prompt, logprobs, None)
            while open_choices:
                index, delivery = await merged.get()
                if delivery.text:
                    logprobs = self._choice_logprobs(parsed, index, delivery.text, delivery.logprobs or [],
                                                     delivery.top_logprobs or [], offsets[index] or 1)  # fmt: skip
                    if logprobs is not None and offsets[index] == 0:
                        logprobs["text_offset"] = list(range(len(delivery.text)))
                    offsets[index] += len(delivery.text)
                    yield chunk(index, delivery.text, logprobs, None)
                    self.metrics.characters.inc(len(delivery.text))
                if delivery.done:
                    open_choices -= 1
                    self._finished(tickets[index], delivery.error)
                    if delivery.error:
                        yield f"data: {json.dumps({'error': {'message': delivery.error, 'type': 'server_error'}})}\n\n"
                    else:
                        yield chunk(index, "", None, tickets[index].finish_reason)
            finished = True
            yield "data: [DONE]\n\n"
        finally:
            for forwarder in forwarders:
                forwarder.cancel()
            if not finished:
                for ticket in tickets:
                    self.batcher.cancel(ticket)
                self.metrics.requests.labels("disconnected").inc()

    async def openai_chat(self, request: Request) -> Response:
        """POST /v1/chat/completions: a 404 that says where to go instead."""
        message = (f"{self.model_id} is a character-level model with no chat format: use /v1/completions with a "
                   "prompt")  # fmt: skip
        return openai_error(404, message, "invalid_request_error", None, "unknown_url")

    async def healthz(self, request: Request) -> Response:
        """GET /healthz: the process answers."""
        return AsciiJSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """GET /readyz: accepting work (200), or draining (503)."""
        if self.draining:
            return AsciiJSONResponse({"ready": False, "reason": "draining"}, status_code=503)
        return AsciiJSONResponse({"ready": True})

    async def metrics_route(self, request: Request) -> Response:
        """GET /metrics: Prometheus text format."""
        body, content_type = self.metrics.exposition()
        return Response(body, media_type=content_type)

    # ---- errors ----

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        """Starlette's own refusals (no such route, wrong method) as the same JSON as ours."""
        assert isinstance(exc, HTTPException)
        message = {404: f"no such route: {request.url.path[:100]}",
                   405: f"{request.method[:20]} is not allowed on {request.url.path[:100]}"}.get(exc.status_code,
                                                                                               exc.detail)  # fmt: skip
        return error_response(exc.status_code, message, headers=exc.headers)

    async def _internal_error(self, request: Request, exc: Exception) -> Response:
        """A bug: one log line and a 500, never a traceback to the client."""
        log.error("internal error on %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        self.metrics.requests.labels("failed").inc()
        return error_response(500, "internal server error")

    # ---- draining ----

    async def drain(self, timeout: float) -> bool:
        """Refuse new work and wait up to `timeout` seconds for the requests in flight and queued to finish;
        True if they all did.  Those still running after it end with an error event."""
        self.draining = True
        self.batcher.stop_accepting()
        deadline = time.monotonic() + timeout
        while not self.batcher.idle and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        drained = self.batcher.idle
        await asyncio.to_thread(self.batcher.close)
        await asyncio.sleep(0.05)  # the last deliveries reach their streams before the server closes them
        return drained
