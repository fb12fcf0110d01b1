"""vrnn-serve against hostile clients at the HTTP layer: oversized and endless heads, silent and half-sent
requests, too many connections, numbers no parser should spend time on, and framing it cannot read.

Each case talks raw bytes to a server on a free loopback port (started by test_serve's `serving`, with small
limits so that every case ends within seconds), is bounded in bytes and time, and closes what it opens.
Each must end in a bounded answer -- a 4xx or 503 JSON naming the problem, or a closed socket -- while the
server keeps answering everyone else.
"""

from __future__ import annotations

import json
import re
import resource
import signal
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import bin_path, default_stop_signals
from test_serve import BUNDLED, Server, generate, read_events, serving

from vrnn.runtime import Sampler

TIMEOUT = 1.0  # --header-timeout and --body-timeout of the servers here


def connect(server: Server, timeout: float = 10.0) -> socket.socket:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    return sock


def read_all(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the server sends until it closes (or `limit` bytes, or the socket's timeout)."""
    chunks, size = [], 0
    try:
        while size < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def status_and_json(raw: bytes) -> tuple[int, dict]:
    """The status and JSON body of one whole response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), head
    return status, json.loads(body)


def rss_kib(server: Server) -> int:
    status = open(f"/proc/{server.process.pid}/status").read()  # noqa: SIM115 (one read)
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))


def still_serves(server: Server) -> None:
    response = generate(server, length=20, seed=3)
    assert response.status_code == 200 and len(response.json()["text"]) == 20


REQUEST = b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with serving("--header-timeout", str(TIMEOUT), "--body-timeout", str(TIMEOUT)) as running:
        yield running


# ---- the request head: bounded by size and count, refused before it is buffered ----


def test_an_endless_head_of_small_headers_is_refused_431_and_memory_stays_flat(server: Server) -> None:
    """32 MiB of `X-a: b` lines took the server from 90 to 587 MB.  Now the head stops at 16 KiB: 431, and the
    client can send little more before the server closes."""
    before = rss_kib(server)
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    sent, line = 0, b"X-a: b\r\n" * 8192  # 64 KiB a write, up to 32 MiB
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        while sent < 32 << 20:
            sock.sendall(line)
            sent += len(line)
    reply = read_all(sock)
    sock.close()
    assert sent < 8 << 20, f"the server took {sent:,} bytes of head before closing"
    if reply:  # the refusal, unless the reset beat it
        status, body = status_and_json(reply)
        assert status == 431 and ("100 headers" in body["error"] or "16,384 bytes" in body["error"])
    assert rss_kib(server) - before < 20_000
    still_serves(server)


def test_one_header_value_streamed_in_pieces_stalls_nobody(server: Server) -> None:
    """A header value sent 16 KiB at a time used to be concatenated piece by piece on the event loop (12.6 s
    for another client's request at 120 MiB).  Now it is refused at 16 KiB, and others are answered at once."""
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        while sent < 64 << 20:
            sock.sendall(b"a" * 16384)
            sent += 16384
            if sent % (1 << 20) == 0:  # meanwhile, someone else
                started = time.perf_counter()
                assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
                assert time.perf_counter() - started < 1.0
    sock.close()
    assert sent < 8 << 20
    still_serves(server)


@pytest.mark.parametrize(
    ("head", "says"),
    [
        (b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: b\r\n" % i for i in range(101)) + b"\r\n", "more than 100"),
        (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n", "larger than 16,384"),  # one read
        (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n", "larger than 16,384"),
    ],
    ids=["101-headers", "one-40-KiB-header", "20-KB-path"],
)
def test_heads_past_a_bound_get_431_naming_it(server: Server, head: bytes, says: str) -> None:
    sock = connect(server)
    sock.sendall(head)
    status, body = status_and_json(read_all(sock))
    sock.close()
    assert status == 431 and says in body["error"]


# ---- timeouts: nothing waits forever ----


@pytest.mark.parametrize(
    ("sent", "status"),
    [
        (b"", None),  # a silent socket: closed, nobody to tell
        (b"POST /v1/gen", 408),  # half a request line
        (REQUEST, 408),  # half the headers
        (REQUEST + b'Content-Length: 20\r\n\r\n{"length":', 408),  # half the body
        (REQUEST + b"Content-Length: 20\r\nExpect: 100-continue\r\n\r\n", 408),  # 100-continue, no body
    ],
    ids=["silent", "half-request-line", "half-headers", "half-body", "expect-100-no-body"],
)
@pytest.mark.slow
def test_a_stalled_request_is_ended_by_a_timeout(server: Server, sent: bytes, status: int | None) -> None:
    sock = connect(server, timeout=TIMEOUT + 5)
    started = time.monotonic()
    sock.sendall(sent)
    reply = read_all(sock)
    sock.close()
    assert time.monotonic() - started < TIMEOUT + 3
    if status is None:
        assert reply == b""
        return
    reply = reply.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
    got, body = status_and_json(reply)
    assert got == status and "did not arrive within 1 s" in body["error"], body


def test_a_keep_alive_connection_gets_the_header_timeout_again_after_each_response(server: Server) -> None:
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    time.sleep(TIMEOUT / 2)
    sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # and never the rest
    started = time.monotonic()
    got, _ = status_and_json(read_all(sock))
    sock.close()
    assert got == 408 and time.monotonic() - started < TIMEOUT + 2


@pytest.mark.slow
def test_a_long_stream_is_not_cut_by_the_header_timeout(server: Server) -> None:
    """The header timeout is for heads: a response that takes longer than it (here, a slow-read stream) runs on."""
    with httpx.stream("POST", f"{server.url}/v1/generate", json={"length": 3000, "seed": 1, "stream": True},
                      timeout=30) as response:  # fmt: skip
        chunks = []
        for chunk in response.iter_text():
            chunks.append(chunk)
            time.sleep(0.05)  # reading slowly: the whole stream takes well over TIMEOUT
    events = read_events("".join(chunks))
    assert events[-1][0] == "done" and sum(len(d["text"]) for k, d in events if k == "text") == 3000


# ---- connections: capped, and the cap refuses cleanly ----


@pytest.mark.slow
def test_past_max_connections_new_ones_get_503_and_admitted_ones_keep_working() -> None:
    with serving("--max-connections", "8", "--header-timeout", "3") as server:
        active = httpx.Client(timeout=10, limits=httpx.Limits(max_connections=1))
        assert active.get(f"{server.url}/healthz").status_code == 200  # one admitted, kept alive
        idle = [connect(server) for _ in range(7)]  # the other seven slots, silent
        time.sleep(0.2)
        extra = connect(server)
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, body = status_and_json(read_all(extra))
        extra.close()
        assert status == 503 and "connections" in body["error"]
        for _ in range(3):  # the admitted connection is not starved
            assert active.get(f"{server.url}/healthz").status_code == 200
        time.sleep(3.5)  # the silent ones time out and free their slots
        for sock in idle:
            assert read_all(sock) == b""
            sock.close()
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        active.close()


def test_start_up_raises_the_open_file_limit_and_fits_the_cap_to_it() -> None:
    def low_soft_limit() -> None:
        default_stop_signals()
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 512))

    import subprocess

    process = subprocess.Popen([bin_path("vrnn-serve"), BUNDLED, "--port", "0", "--threads", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=low_soft_limit)  # fmt: skip
    try:
        assert "listening on " in process.stdout.readline()
        limits = open(f"/proc/{process.pid}/limits").read()  # noqa: SIM115
        assert re.search(r"Max open files\s+512\s+512", limits), limits
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "--max-connections lowered to 448: the open-file limit is 512" in err


# ---- client mistakes are 4xx, never 500, and errors quote values cut short ----


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"length": %s}' % ("9" * 5000), "length"),
        ('{"seed": -%s}' % ("9" * 5000), "seed"),
        ('{"oops": %s}' % ("9" * 5000), "oops"),
        ('{"top_k": [%s]}' % ("9" * 5000), "top_k"),
        ('{"temperature": 1%s}' % ("0" * 400), "temperature"),
        ('{"top_p": 1%s}' % ("0" * 308), "top_p"),
        ('{"latent_temperature": -%s}' % ("9" * 4000), "latent_temperature"),
        ('{"length": 1%s}' % ("0" * 60), "length"),
    ],
)
def test_huge_numbers_get_a_422_naming_the_field_with_the_value_cut_short(server: Server, body: str,
                                                                          field: str) -> None:  # fmt: skip
    before = server.metrics()
    response = httpx.post(f"{server.url}/v1/generate", content=body,
                          headers={"Content-Type": "application/json"}, timeout=10)  # fmt: skip
    assert response.status_code == 422 and response.json()["field"] == field, response.text
    assert len(response.json()["error"]) < 200
    after = server.metrics()
    assert after["vrnn_requests_total{outcome=failed}"] == before["vrnn_requests_total{outcome=failed}"]


@pytest.mark.parametrize(
    ("request_bytes", "status", "says"),
    [
        (
            b"POST /v1/generate/ HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}",
            404,
            "no such route",
        ),
        (REQUEST + b"Content-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}", 415, "compressed"),
        (REQUEST + b"Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 501, "Transfer-Encoding"),
        (b"GARBAGE\r\n\r\n", 400, "not valid HTTP"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400, "not valid HTTP"),
    ],
    ids=["trailing-slash", "gzip-body", "gzip-transfer-coding", "garbage", "malformed-header"],
)
@pytest.mark.slow
def test_requests_it_cannot_read_get_json_refusals(server: Server, request_bytes: bytes, status: int,
                                                    says: str) -> None:  # fmt: skip
    sock = connect(server)
    sock.sendall(request_bytes)
    raw = read_all(sock, limit=65536)
    sock.close()
    assert b"location:" not in raw.lower()
    got, body = status_and_json(raw)
    assert got == status and says in body["error"], body


def test_a_client_that_half_closes_after_its_request_still_gets_its_stream() -> None:
    """As `nc -N` does: the whole request, then shutdown(SHUT_WR).  A stream is answered to its end, then the
    server closes.  A whole answer cannot be: TCP shows a half-close and a close alike, and a whole answer writes
    nothing until its end, so its row is freed at once (counted as disconnected), as for a client that left,
    and a 400 says why."""
    with serving() as server:
        body = json.dumps({"length": 200, "seed": 5, "stream": True}).encode()
        sock = connect(server)
        sock.sendall(REQUEST + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        sock.shutdown(socket.SHUT_WR)
        raw = read_all(sock)
        sock.close()
        assert raw.startswith(b"HTTP/1.1 200")
        payload = raw.partition(b"\r\n\r\n")[2]
        text = re.sub(rb"\r\n[0-9a-f]+\r\n", b"", b"\r\n" + payload).decode()  # undo the chunked framing
        events = read_events(text)
        assert "".join(d["text"] for k, d in events if k == "text") == Sampler.from_onnx(BUNDLED).generate(200, seed=5)
        assert events[-1][0] == "done"

        body = json.dumps({"length": 10_000, "seed": 5}).encode()
        sock = connect(server)
        sock.sendall(REQUEST + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        sock.shutdown(socket.SHUT_WR)
        status, answer = status_and_json(read_all(sock))
        sock.close()
        assert status == 400 and "half-closed" in answer["error"]
        server.wait_rows(0)
        metrics = server.metrics()
        assert metrics["vrnn_requests_total{outcome=completed}"] == 1
        assert metrics["vrnn_requests_total{outcome=disconnected}"] == 1
        assert metrics["vrnn_generated_characters_total"] == 200


def test_characters_count_only_what_reached_a_connection() -> None:
    """A client that leaves before its whole answer is sent was sent nothing: the counter stays at 0."""
    with serving() as server:
        sock = connect(server)
        body = json.dumps({"length": 10_000, "seed": 1}).encode()
        sock.sendall(REQUEST + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        server.wait_rows(1)
        sock.close()
        server.wait_rows(0)
        metrics = server.metrics()
        assert metrics["vrnn_requests_total{outcome=disconnected}"] == 1
        assert metrics["vrnn_generated_characters_total"] == 0
