"""docs/deploying.md's nginx configuration, run for real: Debian's nginx on a free loopback port in front of
two vrnn-serve replicas.  64 concurrent requests through it get vrnn-run's text for their seed (streamed and
whole); a replica killed with SIGKILL costs no request; a replica sent SIGTERM mid-stream finishes that
stream while new requests go to the other.

Skipped where nginx is not installed, unless VRNN_REQUIRE_NGINX=1 (as .ci/run sets it, after installing it).
Everything runs under a temporary prefix and is stopped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import REPO, bin_path, default_stop_signals
from test_serve import BUNDLED, Server, fetch_all, mixed_requests, read_events

from vrnn.runtime import Sampler

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
if NGINX is None:
    if os.environ.get("VRNN_REQUIRE_NGINX") == "1":
        raise RuntimeError("VRNN_REQUIRE_NGINX=1 but nginx is not installed (Debian: apt install nginx)")
    pytest.skip("nginx is not installed (Debian: apt install nginx)", allow_module_level=True)

VOCAB = "".join(Sampler.from_onnx(BUNDLED).vocab.chars)


def documented_config() -> str:
    """The nginx block of docs/deploying.md, as written."""
    text = (REPO / "docs" / "deploying.md").read_text(encoding="utf-8")
    return re.search(r"```nginx\n(.*?)```", text, re.S).group(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_replica(port: int) -> Server:
    process = subprocess.Popen([bin_path("vrnn-serve"), BUNDLED, "--port", str(port), "--threads", "1",
                                "--max-length", "100000"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_stop_signals)  # fmt: skip
    line = process.stdout.readline()
    assert "listening on " in line, process.stderr.read()
    return Server(process, f"http://127.0.0.1:{port}")


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.kill()
    server.process.wait(timeout=30)
    server.process.stdout.close()
    server.process.stderr.close()


@contextlib.contextmanager
def nginx_in_front(ports: list[int], prefix: Path) -> Iterator[str]:
    """nginx with the documented configuration, its upstreams moved to `ports`; yields its URL."""
    config = documented_config()
    documented = re.findall(r"server 127\.0\.0\.1:(\d+)", config)
    assert len(documented) == len(ports) == 2, documented
    for old, new in zip(documented, ports, strict=True):
        config = config.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
    listen = free_port()
    config = re.sub(r"listen \d+;", f"listen 127.0.0.1:{listen};", config)
    temp = {name: prefix / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir()
    (prefix / "nginx.conf").write_text(f"""
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format upstreams "$status $upstream_status $upstream_addr $request_time";
    access_log {prefix}/access.log upstreams;
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
{config}
}}
""")
    process = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{listen}"
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "nginx did not answer"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def back_in_rotation(url: str, replica: Server, timeout: float = 15.0) -> None:
    """Wait until nginx sends requests to `replica` again: a replica that failed is skipped for the upstream's
    fail_timeout even once it is back (docs/deploying.md's rolling restart waits the same way)."""
    deadline = time.monotonic() + timeout
    while replica.metrics()["vrnn_requests_total{outcome=completed}"] == 0:
        assert time.monotonic() < deadline, "nginx never sent a request to the restarted replica"
        assert httpx.post(f"{url}/v1/generate", json={"length": 1}, timeout=10).status_code == 200
        time.sleep(0.2)


def expected(requests: list[dict]) -> list[str]:
    sampler = Sampler.from_onnx(BUNDLED)
    options = ("temperature", "top_k", "top_p", "greedy", "latent_temperature")
    return [sampler.generate(r["length"], prime=r["prime"], seed=r["seed"], **{k: r[k] for k in options if k in r})
            for r in requests]  # fmt: skip


@pytest.mark.slow
def test_two_replicas_behind_nginx_survive_a_kill_and_a_drain(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    replicas = [start_replica(port) for port in ports]
    try:
        with nginx_in_front(ports, tmp_path) as url:
            # 64 at once, streamed and whole, every option: each gets vrnn-run's text for its seed.
            requests = mixed_requests(64, VOCAB, seed=11)
            assert asyncio.run(fetch_all(url, requests)) == expected(requests)
            served = [r.metrics()["vrnn_requests_total{outcome=completed}"] for r in replicas]
            assert all(count > 0 for count in served), f"one replica did all the work: {served}"
            assert httpx.get(f"{url}/metrics", timeout=5).status_code == 404

            # SIGKILL one replica: nothing fails, the other takes every request.
            replicas[0].process.kill()
            stop(replicas[0])
            more = mixed_requests(16, VOCAB, seed=12)
            assert asyncio.run(fetch_all(url, more)) == expected(more)

            # Back on its port; then SIGTERM whichever replica holds a long stream, mid-stream.
            replicas[0] = start_replica(ports[0])
            back_in_rotation(url, replicas[0])
            with httpx.Client(timeout=60) as client:
                request = {
                    "length": 50_000,
                    "seed": 9,
                    "stream": True,
                }  # several seconds: the drain outlasts what follows
                with client.stream("POST", f"{url}/v1/generate", json=request) as stream:
                    chunks = stream.iter_raw()
                    received = [next(chunks)]
                    holder = next(r for r in replicas if r.metrics()["vrnn_rows_in_flight"] == 1)
                    holder.process.send_signal(signal.SIGTERM)
                    deadline = time.monotonic() + 10
                    while httpx.get(f"{holder.url}/readyz", timeout=5).status_code != 503:
                        assert time.monotonic() < deadline
                        time.sleep(0.02)
                    during = mixed_requests(16, VOCAB, seed=13)
                    assert asyncio.run(fetch_all(url, during)) == expected(during)
                    received += list(chunks)
            events = read_events(b"".join(received).decode())
            assert events[-1][0] == "done"
            assert "".join(d["text"] for k, d in events if k == "text") == Sampler.from_onnx(BUNDLED).generate(
                50_000, seed=9
            )
            assert holder.process.wait(timeout=30) == 0
    finally:
        for replica in replicas:
            stop(replica)
