"""vrnn-serve over real HTTP on a free loopback port: concurrent clients get vrnn-run's text, disconnects free
their rows, a full queue answers 503 at once, bad requests get a 4xx naming the field, SIGTERM drains, and
/metrics counts what was sent.  Each test starts its own server as a child process and stops it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from conftest import REPO, bin_path, default_stop_signals
from prometheus_client.parser import text_string_to_metric_families

from vrnn.runtime import Sampler
from vrnn.runtime.bundled import BUNDLED_CELL, bundled_file

FIXTURES = REPO / "tests" / "conformance"
BUNDLED = str(bundled_file(BUNDLED_CELL, "the bundled cell"))
START_TIMEOUT = 60


class Server:
    """A vrnn-serve child process and its base URL."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process, self.url = process, url

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics by name and labels, e.g. 'vrnn_requests_total{outcome=completed}'."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    def wait_rows(self, rows: int, timeout: float = 10.0) -> None:
        """Wait until the batch has `rows` rows in flight and nothing queued."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            metrics = self.metrics()
            if metrics["vrnn_rows_in_flight"] == rows and metrics["vrnn_queue_depth"] == 0:
                return
            time.sleep(0.02)
        raise AssertionError(f"rows in flight stayed at {metrics['vrnn_rows_in_flight']}, not {rows}")


@contextlib.contextmanager
def serving(*args: str, cell: str = BUNDLED) -> Iterator[Server]:
    """Start `vrnn-serve CELL --port 0 ARGS` and stop it (SIGKILL if it is still running) when done."""
    process = subprocess.Popen(
        [bin_path("vrnn-serve"), cell, "--port", "0", "--threads", "1", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_stop_signals,
    )  # fmt: skip
    try:
        line = process.stdout.readline()  # "vrnn-serve: listening on http://127.0.0.1:PORT (...)"
        if "listening on " not in line:
            process.kill()
            raise AssertionError(f"vrnn-serve did not start: {line!r} {process.stderr.read()!r}")
        yield Server(process, line.split("listening on ")[1].split()[0])
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        process.stdout.close()
        process.stderr.close()


def generate(server: Server, **body: object) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/generate", json=body, timeout=60)


def read_events(text: str) -> list[tuple[str, dict]]:
    """The (event, data) pairs of a Server-Sent Events body."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def mixed_requests(count: int, vocab_chars: str, seed: int = 0) -> list[dict]:
    """`count` requests with every option mixed: temperatures, top-k, top-p, greedy, latent temperatures,
    primes, lengths, seeds, streamed or not."""
    rng = np.random.default_rng(seed)
    options = [{}, {"temperature": 0.7}, {"top_k": 5}, {"top_p": 0.9, "temperature": 1.3}, {"greedy": True},
               {"latent_temperature": 0.0}, {"latent_temperature": 1.5, "temperature": 0.5},
               {"greedy": True, "latent_temperature": 0}, {"top_k": 3, "top_p": 0.5}]  # fmt: skip
    primes = ["", "ROMEO:", "The ", "\n\n", vocab_chars[:7]]
    requests = []
    for i in range(count):
        request = {"length": int(rng.integers(1, 300)), "seed": int(rng.integers(0, 2**63 - 1)),
                   "prime": primes[i % len(primes)], "stream": bool(i % 2), **options[i % len(options)]}  # fmt: skip
        requests.append(request)
    return requests


async def fetch_all(url: str, requests: list[dict]) -> list[str]:
    """Send every request at once; return each one's text (prime + generated), streamed or not."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=len(requests))
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one(request: dict) -> str:
            if not request["stream"]:
                response = await client.post(f"{url}/v1/generate", json=request)
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["seed"] == request["seed"] and body["chars"] == request["length"]
                return body["text"]
            async with client.stream("POST", f"{url}/v1/generate", json=request) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                events = read_events((await response.aread()).decode())
            assert events[-1][0] == "done" and events[-1][1]["chars"] == request["length"], events[-1]
            return request["prime"] + "".join(data["text"] for kind, data in events if kind == "text")

        return await asyncio.gather(*(one(r) for r in requests))


@pytest.mark.parametrize(
    ("cell", "clients"),
    [
        (BUNDLED, 64),
        (str(FIXTURES / "cell-float16.onnx"), 24),
        (str(FIXTURES / "cell-int8.onnx"), 24),
        (str(FIXTURES / "cell-v2.onnx"), 24),
    ],
    ids=["float32-bundled", "float16", "int8", "schema-2"],
)
@pytest.mark.slow
def test_concurrent_clients_each_get_vrnn_runs_text(cell: str, clients: int) -> None:
    """Many clients at once, every option mixed in one batch: each gets exactly the text vrnn-run makes
    alone with its seed and options (streamed or not), whatever else is in flight."""
    sampler = Sampler.from_onnx(cell)
    requests = mixed_requests(clients, "".join(sampler.vocab.chars))
    with serving("--max-batch", "64", cell=cell) as server:
        texts = asyncio.run(fetch_all(server.url, requests))
        server.wait_rows(0)
    options = ("temperature", "top_k", "top_p", "greedy", "latent_temperature")
    for request, text in zip(requests, texts, strict=True):
        chosen = {k: request[k] for k in options if k in request}
        assert text == sampler.generate(request["length"], request["prime"], seed=request["seed"], **chosen), request
    # And against the command itself, for a few of them (vrnn-run prints the text and a newline).
    for request, text in list(zip(requests, texts, strict=True))[:3]:
        flags = [f"--{k.replace('_', '-')}={request[k]}" for k in options if k in request and k != "greedy"]
        flags += ["--greedy"] if request.get("greedy") else []
        printed = subprocess.run(
            [bin_path("vrnn-run"), cell, "--length", str(request["length"]), "--seed", str(request["seed"]),
             "--prime", request["prime"], *flags], capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert printed == text + "\n"


@pytest.mark.slow
def test_stop_ends_a_text_before_its_first_stop_string_and_frees_the_row() -> None:
    """`stop` in /v1/generate: streamed and whole, the text is vrnn-run --stop's (a prefix of the unstopped
    one), `finish_reason` says "stop", and the row leaves the batch at once (a length of 10,000 that stops
    within a few characters does not run on)."""
    sampler = Sampler.from_onnx(BUNDLED)
    with serving() as server:
        for seed in range(3):
            for stop in (["\n"], ["e", "th"], "ROMEO", ["zzz"]):
                whole = sampler.generate(300, seed=seed)
                expected = sampler.complete(300, seed=seed, stop=stop)[0]
                assert whole.startswith(expected.text)
                answer = generate(server, length=300, seed=seed, stop=stop).json()
                assert (answer["text"], answer["finish_reason"]) == (expected.text, expected.finish_reason)
                assert answer["chars"] == len(expected.text)
                streamed = httpx.post(f"{server.url}/v1/generate", json={"length": 300, "seed": seed, "stop": stop,
                                      "stream": True}, timeout=60)  # fmt: skip
                events = read_events(streamed.text)
                assert "".join(d["text"] for k, d in events if k == "text") == expected.text
                assert events[-1][1]["finish_reason"] == expected.finish_reason
        calls = server.metrics()["vrnn_cell_call_seconds_count"]
        answer = generate(server, length=10_000, seed=1, stop=["e"]).json()
        assert answer["finish_reason"] == "stop" and answer["chars"] < 50
        # A few calls of up to 32 steps, not the 300-odd that 10,000 characters take.
        assert server.metrics()["vrnn_cell_call_seconds_count"] - calls < 10
        server.wait_rows(0)
        for bad in ([], ["a"] * 5, [""], [1], {"a": 1}):
            refused = generate(server, length=5, stop=bad)
            assert refused.status_code == 422 and refused.json()["field"] == "stop", refused.text


def test_logprobs_are_sampler_completes_streamed_or_not_with_other_rows_in_flight() -> None:
    """`logprobs` N in /v1/generate: one value per character sent and up to N alternatives, exactly those of
    Sampler.complete for the same seed and options, whatever else is in the batch (stops included)."""
    sampler = Sampler.from_onnx(BUNDLED)
    requests = [{"length": 150, "seed": s, "logprobs": s % 3, "stream": bool(s % 2), **o}
                for s, o in enumerate([{}, {"top_p": 0.8}, {"greedy": True}, {"top_k": 4, "temperature": 1.4},
                                       {"stop": ["\n"]}, {"temperature": 0.5, "stop": "e"}])]  # fmt: skip
    with serving() as server:

        async def all_at_once() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                return await asyncio.gather(*(client.post(f"{server.url}/v1/generate", json=r) for r in requests))

        for request, response in zip(requests, asyncio.run(all_at_once()), strict=True):
            options = {k: v for k, v in request.items() if k not in ("length", "seed", "logprobs", "stream")}
            (expected,) = sampler.complete(150, seed=request["seed"], logprobs=request["logprobs"], **options)
            if request["stream"]:
                events = [d for k, d in read_events(response.text) if k == "text"]
                text = "".join(d["text"] for d in events)
                values = [v for d in events for v in d["logprobs"]]
                tops = [t for d in events for t in d.get("top_logprobs", [])]
            else:
                body = response.json()
                text, values, tops = body["text"], body["logprobs"], body.get("top_logprobs", [])
            assert text == expected.text and values == pytest.approx(expected.logprobs, abs=1e-12), request
            assert tops == (expected.top_logprobs or []), request
        refused = generate(server, length=5, logprobs=6)
        assert refused.status_code == 422 and refused.json()["field"] == "logprobs"


def test_a_request_without_a_seed_gets_one_that_reproduces_its_text() -> None:
    with serving() as server:
        first = generate(server, length=60, temperature=0.9)
        assert first.status_code == 200
        seed = first.json()["seed"]
        assert first.headers["x-vrnn-seed"] == str(seed)
        again = generate(server, length=60, temperature=0.9, seed=seed)
        assert again.json()["text"] == first.json()["text"]


def test_a_client_that_disconnects_frees_its_row() -> None:
    """A stream closed mid-way leaves the batch (rows in flight back to 0, counted as disconnected); so does a
    client waiting for a whole answer that goes away."""
    with serving("--max-length", "1000000") as server:
        with (
            httpx.Client(timeout=30) as client,
            client.stream("POST", f"{server.url}/v1/generate", json={"length": 1_000_000, "stream": True}) as r,
        ):
            chunks = r.iter_raw()  # (an iterator dropped closes the response: it is kept until the end)
            next(chunks)  # the first characters
            server.wait_rows(1)
        server.wait_rows(0)
        # The whole-answer kind: send the request on a raw socket and hang up.
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        body = json.dumps({"length": 1_000_000}).encode()
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
            server.wait_rows(1)
        server.wait_rows(0)
        assert server.metrics()["vrnn_requests_total{outcome=disconnected}"] == 2
        assert generate(server, length=5, seed=1).status_code == 200


def test_a_full_queue_answers_503_at_once() -> None:
    with serving("--max-batch", "1", "--max-queue", "1", "--max-length", "1000000") as server:
        with httpx.Client(timeout=30) as client:
            streams = [
                client.stream("POST", f"{server.url}/v1/generate", json={"length": 1_000_000, "stream": True})
                for _ in range(2)
            ]
            with contextlib.ExitStack() as stack:
                for stream in streams:
                    stack.enter_context(stream)  # one row busy, one request waiting
                started = time.monotonic()
                refused = client.post(f"{server.url}/v1/generate", json={"length": 5})
                assert time.monotonic() - started < 5
                assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
                assert "queue is full" in refused.json()["error"]
        server.wait_rows(0)
        assert generate(server, length=5).status_code == 200
        assert server.metrics()["vrnn_requests_total{outcome=busy}"] == 1


# (description, how to send it, expected status, a piece of the message, the field named)
BAD_REQUESTS = [
    ("malformed JSON", {"content": b'{"length": 5'}, 400, "not valid JSON", None),
    ("empty body", {"content": b""}, 400, "not valid JSON", None),
    ("not UTF-8", {"content": b'{"prime": "\xff"}'}, 400, "not UTF-8", None),
    ("a JSON array", {"content": b"[1, 2]"}, 400, "must be a JSON object", None),
    ("a JSON string", {"content": b'"hello"'}, 400, "must be a JSON object", None),
    ("NaN", {"content": b'{"temperature": NaN}'}, 400, "NaN is not a JSON number", None),
    ("Infinity", {"content": b'{"temperature": Infinity}'}, 400, "Infinity is not a JSON number", None),
    ("a number too large for a float", {"content": b'{"temperature": 1e999}'}, 422, "finite number", "temperature"),
    ("deep nesting", {"content": b"[" * 100_000 + b"]" * 100_000}, 413, "larger than 64 KiB", None),
    ("nesting under 64 KiB", {"content": b'{"x": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"}, 400, "nested too deeply",
     None),
    ("body over 64 KiB", {"json": {"prime": "a" * 70_000}}, 413, "larger than 64 KiB", None),
    ("unknown field", {"json": {"lenght": 5}}, 422, "unknown field 'lenght'", "lenght"),
    ("a field named by a lone surrogate", {"content": b'{"\\ud800": 1}'}, 422, "unknown field '\\ud800'", "\ud800"),
    ("a prime with a lone surrogate", {"content": b'{"prime": "\\udc00"}'}, 422, "'\\udc00'", "prime"),
    ("length zero", {"json": {"length": 0}}, 422, "length must be from 1", "length"),
    ("length negative", {"json": {"length": -5}}, 422, "length must be from 1", "length"),
    ("length over --max-length", {"json": {"length": 10_001}}, 422, "length must be from 1 to 10,000", "length"),
    ("length huge", {"json": {"length": 10**30}}, 422, "length must be from 1", "length"),
    ("length a string", {"json": {"length": "5"}}, 422, "length must be an integer", "length"),
    ("length a float", {"json": {"length": 5.0}}, 422, "length must be an integer", "length"),
    ("length true", {"json": {"length": True}}, 422, "length must be an integer", "length"),
    ("temperature zero", {"json": {"temperature": 0}}, 422, "temperature must be in (0, 100]", "temperature"),
    ("temperature negative", {"json": {"temperature": -1}}, 422, "temperature must be in", "temperature"),
    ("temperature huge", {"json": {"temperature": 1e300}}, 422, "temperature must be in", "temperature"),
    ("temperature a string", {"json": {"temperature": "hot"}}, 422, "finite number", "temperature"),
    ("top_k zero", {"json": {"top_k": 0}}, 422, "top_k must be from 1 to 65", "top_k"),
    ("top_k past the vocabulary", {"json": {"top_k": 66}}, 422, "top_k must be from 1 to 65", "top_k"),
    ("top_p zero", {"json": {"top_p": 0}}, 422, "top_p must be in (0, 1]", "top_p"),
    ("top_p over 1", {"json": {"top_p": 1.5}}, 422, "top_p must be in (0, 1]", "top_p"),
    ("greedy a string", {"json": {"greedy": "yes"}}, 422, "greedy must be true or false", "greedy"),
    ("greedy with top_k", {"json": {"greedy": True, "top_k": 3}}, 422, "greedy cannot be combined", "greedy"),
    ("latent temperature negative", {"json": {"latent_temperature": -0.5}}, 422, "latent_temperature must be in [0",
     "latent_temperature"),
    ("latent temperature huge", {"json": {"latent_temperature": 1000}}, 422, "latent_temperature must be in",
     "latent_temperature"),
    ("seed negative", {"json": {"seed": -1}}, 422, "seed must be from 0", "seed"),
    ("seed past 2**63-1", {"json": {"seed": 2**63}}, 422, "seed must be from 0", "seed"),
    ("seed a float", {"json": {"seed": 1.5}}, 422, "seed must be an integer", "seed"),
    ("stream a number", {"json": {"stream": 1}}, 422, "stream must be true or false", "stream"),
    ("prime a number", {"json": {"prime": 5}}, 422, "prime must be a string", "prime"),
    ("prime outside the vocabulary", {"json": {"prime": "héllo"}}, 422, "outside the model's vocabulary", "prime"),
    ("prime over --max-prime", {"json": {"prime": "a" * 4097}}, 422, "more than this server's 4,096", "prime"),
    ("wrong content type", {"content": b'{"length": 5}', "headers": {"content-type": "text/plain"}}, 415,
     "must be application/json", None),
    ("no content type", {"content": b'{"length": 5}', "headers": {"content-type": ""}}, 415,
     "must be application/json", None),
    ("wrong method", {"method": "GET"}, 405, "GET is not allowed on /v1/generate", None),
    ("PUT", {"method": "PUT", "json": {}}, 405, "PUT is not allowed", None),
    ("no such route", {"path": "/v1/generat"}, 404, "no such route: /v1/generat", None),
]  # fmt: skip


def test_bad_requests_get_a_4xx_naming_the_problem_and_the_server_keeps_serving() -> None:
    assert len(BAD_REQUESTS) >= 45
    with serving() as server, httpx.Client(timeout=30) as client:
        for description, how, status, message, field in BAD_REQUESTS:
            how = dict(how)
            method, path = how.pop("method", "POST"), how.pop("path", "/v1/generate")
            headers = how.pop("headers", {"content-type": "application/json"})
            response = client.request(method, f"{server.url}{path}", headers=headers, **how)
            assert response.status_code == status, (description, response.text)
            body = response.json()
            assert message in body["error"], (description, body)
            assert body["field"] == field, (description, body)
            good = client.post(f"{server.url}/v1/generate", json={"length": 3, "seed": 1})
            assert good.status_code == 200 and len(good.json()["text"]) == 3, description
        served = server.metrics()
        assert served["vrnn_requests_total{outcome=bad_request}"] == sum(s < 500 for _, _, s, _, _ in BAD_REQUESTS
                                                                        if s not in (404, 405))  # fmt: skip
        assert served["vrnn_requests_total{outcome=completed}"] == len(BAD_REQUESTS)


@pytest.mark.slow
def test_sigterm_drains_in_flight_streams_refuses_new_ones_and_exits_0() -> None:
    with serving("--max-length", "100000") as server, httpx.Client(timeout=60) as client:
        request = {"length": 30_000, "stream": True, "seed": 4}
        with client.stream("POST", f"{server.url}/v1/generate", json=request) as stream:
            chunks = stream.iter_raw()
            received = [next(chunks)]
            server.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while client.get(f"{server.url}/readyz").status_code != 503:
                assert time.monotonic() < deadline, "/readyz stayed ready after SIGTERM"
                time.sleep(0.02)
            refused = client.post(f"{server.url}/v1/generate", json={"length": 5})
            assert refused.status_code == 503 and "shutting down" in refused.json()["error"]
            received += list(chunks)
        events = read_events(b"".join(received).decode())
        assert events[-1][0] == "done"
        text = "".join(data["text"] for kind, data in events if kind == "text")
        assert len(text) == 30_000
        assert server.process.wait(timeout=30) == 0
        assert "drained, exiting" in server.process.stderr.read()


@pytest.mark.slow
def test_a_drain_timeout_ends_what_is_still_running_and_a_second_signal_exits_at_once() -> None:
    with serving("--max-length", "10000000", "--drain-timeout", "0.5") as server, httpx.Client(timeout=60) as client:
        with client.stream("POST", f"{server.url}/v1/generate", json={"length": 10_000_000, "stream": True}) as r:
            chunks = r.iter_raw()
            received = [next(chunks)]
            server.process.send_signal(signal.SIGTERM)
            received += list(chunks)
        events = read_events(b"".join(received).decode())
        assert events[-1] == ("error", {"error": "the server is shutting down"})
        assert server.process.wait(timeout=30) == 0
    with serving("--max-length", "10000000", "--drain-timeout", "600") as server, httpx.Client(timeout=60) as client:
        with client.stream("POST", f"{server.url}/v1/generate", json={"length": 10_000_000, "stream": True}) as r:
            chunks = r.iter_raw()
            next(chunks)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(timeout=10) == 128 + signal.SIGTERM
        stderr = server.process.stderr.read()
        assert stderr.strip().endswith("error: terminated by SIGTERM")
        assert "Traceback" not in stderr and "CancelledError" not in stderr, stderr  # the cancelled stream, quietly


@pytest.mark.slow
def test_a_signal_right_after_the_listening_line_drains_and_exits_0() -> None:
    """The signal handlers are in place before the line is printed: nothing in flight, so a clean drain."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        with serving() as server:
            server.process.send_signal(sig)
            assert server.process.wait(timeout=30) == 0
            assert "drained, exiting" in server.process.stderr.read()


def test_metrics_parse_as_prometheus_text_and_count_what_was_sent() -> None:
    with serving() as server:
        lengths = [5, 17, 40]
        for length in lengths:
            assert generate(server, length=length).status_code == 200
        with (
            httpx.Client(timeout=30) as client,
            client.stream("POST", f"{server.url}/v1/generate", json={"length": 33, "stream": True}) as r,
        ):
            r.read()
        assert generate(server, length=0).status_code == 422
        metrics = server.metrics()
        assert metrics["vrnn_requests_total{outcome=completed}"] == 4
        assert metrics["vrnn_requests_total{outcome=bad_request}"] == 1
        assert metrics["vrnn_generated_characters_total"] == sum(lengths) + 33
        # One request at a time, each alone in the batch: 8 steps per call (the default) or up to 32 while a
        # call stays short, one row each.
        sent = [*lengths, 33]
        calls = metrics["vrnn_cell_call_seconds_count"]
        assert sum(-(-n // 32) for n in sent) <= calls <= sum(-(-n // 8) for n in sent)
        assert metrics["vrnn_cell_call_rows_sum"] == calls
        assert metrics["vrnn_time_to_first_char_seconds_count"] == 4
        assert metrics["vrnn_rows_in_flight"] == 0 and metrics["vrnn_queue_depth"] == 0


def test_model_health_and_readiness() -> None:
    with serving() as server:
        model = httpx.get(f"{server.url}/v1/model").json()
        sampler = Sampler.from_onnx(BUNDLED)
        assert model["vocab"] == list(sampler.vocab.chars) and model["weights"] == "float32"
        assert model["config"]["hidden_size"] == sampler.cell.config.hidden_size
        assert model["limits"]["max_length"] == 10_000
        assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{server.url}/readyz").json() == {"ready": True}


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([bin_path("vrnn-serve"), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_command_line_errors_are_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = [
            (["--port", str(port)], 1, f"cannot listen on 127.0.0.1:{port}"),
            (["--port", "70000"], 2, "--port must be from 0 to 65,535"),
            (["--max-batch", "0"], 2, "--max-batch must be from 1"),
            (["--host", "localhost:80"], 2, "--host must be an IP address"),
            (["--drain-timeout", "nan"], 2, "--drain-timeout must be from 0"),
            (["--call-budget", "-1"], 2, "--call-budget must be from 0"),
            (["--steps-per-call", "33"], 2, "--steps-per-call must be from 1 to 32"),
            (["/no/such/cell.onnx"], 1, "ONNX cell not found: /no/such/cell.onnx"),
            ([str(REPO / "README.md")], 1, "README.md"),
        ]
        for args, status, message in cases:
            result = run_serve(*args)
            assert result.returncode == status, (args, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, lines)
    version = run_serve("--version")
    assert version.returncode == 0 and version.stdout.startswith("vrnn-serve ")


def test_the_curl_examples_in_docs_serving_work_as_written() -> None:
    """Every curl command of docs/serving.md, run against a server (its port for 8000), answers what the page
    shows after it (timings aside)."""
    import re

    page = (REPO / "docs" / "serving.md").read_text()
    blocks = re.findall(r"```(\w*)\n(.*?)```", page, re.S)
    timings = ("queued_ms", "first_char_ms", "total_ms", "id", "created")  # and what names an OpenAI answer
    ran = 0
    with serving() as server:
        for (kind, code), following in zip(blocks, [*blocks[1:], ("", "")], strict=True):
            if kind != "sh" or not code.startswith("curl"):
                continue
            command = code.replace("http://127.0.0.1:8000", server.url)
            out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, check=True)
            ran += 1
            shown_kind, shown = following
            if shown_kind == "json":
                got, want = json.loads(out.stdout), json.loads(shown)
                assert {k: v for k, v in got.items() if k not in timings} == {
                    k: v for k, v in want.items() if k not in timings
                }
            elif shown.startswith("event:"):
                got_events, want_events = read_events(out.stdout), read_events(shown)

                def joined(events: list[tuple[str, dict]]) -> str:  # chunks depend on timing; the text does not
                    return "".join(data["text"] for kind, data in events if kind == "text")

                assert joined(got_events) == joined(want_events)
                assert got_events[-1][0] == "done" and got_events[-1][1]["chars"] == want_events[-1][1]["chars"]
            else:
                assert out.stdout.startswith("vrnn_requests_total{outcome=")
    assert ran == 5


def test_random_json_bodies_get_an_answer_never_a_server_error() -> None:
    """Property: whatever JSON arrives (any field names, values of every type, nested, non-ASCII, surrogates),
    the answer is 200 or a 4xx naming the problem, never a 5xx, and the server keeps serving."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    names = st.sampled_from(["prime", "length", "temperature", "top_k", "top_p", "greedy", "latent_temperature",
                             "seed", "stream"]) | st.text(max_size=5)  # fmt: skip
    scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
               | st.text(max_size=8))  # fmt: skip
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3),
                          inner, max_size=3), max_leaves=6)  # fmt: skip
    bodies = st.dictionaries(names, values, max_size=4) | values

    with serving("--max-length", "40") as server, httpx.Client(timeout=30) as client:

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(bodies)
        def answers(body: object) -> None:
            raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
            response = client.post(f"{server.url}/v1/generate", content=raw,
                                   headers={"content-type": "application/json"})  # fmt: skip
            assert response.status_code in (200, 400, 413, 422), (body, response.text)
            if response.status_code != 200:
                assert response.json()["error"]

        answers()
        assert generate(server, length=5, seed=1).status_code == 200
