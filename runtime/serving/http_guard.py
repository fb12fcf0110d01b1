"""vrnn-serve's connection guards: uvicorn's httptools protocol with bounds on what one client can hold.

uvicorn on httptools bounds nothing before a request reaches the app (the class of GHSA-rxc4-3w6r-4v47):
a head of any size is buffered, a header value streamed in pieces is concatenated piece by piece (work
that grows with the square of its length, on the event loop everyone shares), a silent or half-sent
request holds its socket forever, and every accepted socket holds a file descriptor.  This protocol keeps
uvicorn's parser and request cycle and adds, per connection:

- a bound on the request head (request line and headers) by bytes and by header count: past it, 431 at
  once, before more is buffered;
- a header timeout: the head must arrive within it of the connection opening or of the previous response
  ending (408 if part of it came, a plain close if nothing did);
- a cap on open connections: past it, a new connection gets 503 and is closed, and those already open
  are untouched;
- parser refusals as the same JSON as every other refusal, logged at debug level only (a client can send
  them as fast as it likes);
- a client that sends its request and half-closes (`nc -N`) still gets its answer.

The body timeout is the app's (vrnn.runtime.serving.server): only the routes that read a body know when they
wait for one.  Limits and their defaults are documented in docs/serving.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from vrnn.runtime.serving.request import HALF_CLOSED, ConnectionLimits

log = logging.getLogger("vrnn.serve")

REFUSED_LINGER = 1.0  # seconds a refused connection waits for its request, so that the 503 is read, not reset
MAX_LINGERING = 256  # refused connections lingering at once; past it they are closed at once


class HeadTooLarge(Exception):
    """Raised from a parser callback: the request head passed a bound (httptools re-raises it wrapped)."""


def plain_response(status: int, message: str, extra: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response with the JSON every refusal has ({"error", "field"}), closing the connection."""
    body = json.dumps({"error": message, "field": None}, ensure_ascii=True).encode("ascii")
    headers = {"content-type": "application/json", "content-length": str(len(body)), "connection": "close"}
    head = "".join(f"{name}: {value}\r\n" for name, value in (headers | (extra or {})).items())
    return STATUS_LINE[status] + head.encode("ascii") + b"\r\n" + body


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of `limits` (set on the subclass guarded_protocol makes)."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    lingering: ClassVar[set[GuardedProtocol]] = set()  # refused connections waiting to be told so (all of this class)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused = False
        self.reading_head = True  # no request head in progress or complete: the next bytes begin one
        self.head_bytes = 0  # bytes received since the head began (an upper bound: a chunk may hold more)
        self.header_count = 0
        self.head_timer: asyncio.TimerHandle | None = None
        self.linger_timer: asyncio.TimerHandle | None = None

    # ---- connections ----

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.transport, self.refused = transport, True
            if len(self.lingering) >= MAX_LINGERING:
                transport.abort()  # a flood of refused connections: no file descriptor is held for them
                return
            self.lingering.add(self)
            self.linger_timer = self.loop.call_later(REFUSED_LINGER, self._refuse_now)
            return
        super().connection_made(transport)
        self._arm_head_timer()

    def _refuse_now(self) -> None:
        self.lingering.discard(self)
        if self.linger_timer is not None:
            self.linger_timer.cancel()
        if not self.transport.is_closing():
            message = "this server has as many connections as it allows: retry shortly"
            self.transport.write(plain_response(503, message, {"retry-after": "1"}))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        if self.refused:
            self.lingering.discard(self)
            if self.linger_timer is not None:
                self.linger_timer.cancel()
            return
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:
        """The client half-closed (`nc -N`) or closed: TCP cannot tell which until something is written.  A
        request received whole and not yet answered keeps the connection open for its answer (then it closes),
        and the app is told through the scope's HALF_CLOSED event: a stream goes on (its writes find out soon
        enough if nobody reads), a whole answer, which writes nothing until the end, takes it as the client's
        leaving.  Otherwise there is nothing more to do and the connection closes now."""
        cycle = self.cycle
        if not self.refused and cycle is not None and not cycle.response_complete and not cycle.more_body:
            cycle.keep_alive = False
            cycle.scope["extensions"][HALF_CLOSED].set()  # type: ignore[index]
            return True  # keep the transport open for writing
        return None

    # ---- bytes in ----

    def data_received(self, data: bytes) -> None:
        if self.refused:
            self._refuse_now()
            return
        self._unset_keepalive_if_required()
        if self.reading_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported")
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._refuse(431, str(exc.__context__))
            else:
                log.debug("refused a request that is not valid HTTP: %s", exc)
                self._refuse(400, f"the request is not valid HTTP: {str(exc)[:80]}")
            return
        if self.reading_head and self.head_bytes > self.limits.max_head_bytes:
            self._refuse(431, self._too_large())

    def _too_large(self) -> str:
        return f"the request head is larger than {self.limits.max_head_bytes:,} bytes"

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` with `message` and close, unless a response has begun (then only close)."""
        self._disarm_head_timer()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.disconnected = True  # the app's task, if any, sees a disconnect
                self.cycle.message_event.set()
            self.transport.write(plain_response(status, message))
        self.transport.close()

    # ---- parser callbacks ----

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_count = 0
        self.scope["extensions"] = {HALF_CLOSED: asyncio.Event()}

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > self.limits.max_headers:
            raise HeadTooLarge(f"the request has more than {self.limits.max_headers} headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        # A head that came in one large read is whole before the byte count above is checked: measure it.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.limits.max_head_bytes:
            raise HeadTooLarge(self._too_large())
        self.reading_head, self.head_bytes = False, 0
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.reading_head, self.head_bytes = True, 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()  # the next request's head has header_timeout from now

    # ---- the header timeout ----

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self.head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if not self.reading_head or busy or self.transport.is_closing():
            return  # a request is being read or answered: its own bounds apply
        if self.head_bytes:
            self._refuse(408, f"the request head did not arrive within {self.limits.header_timeout:g} s")
        else:
            self.transport.close()  # a silent connection: nobody to tell


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """The protocol class uvicorn gets as `http=`: GuardedProtocol bound to `limits`."""
    return type("GuardedProtocol", (GuardedProtocol,), {"limits": limits, "lingering": set()})
