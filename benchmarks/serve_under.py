"""vrnn-serve's app under another HTTP server, for bench_serve.py's comparison of HTTP layers.

    python benchmarks/serve_under.py LAYER CELL

LAYER is one of `uvicorn-httptools` (uvicorn with its C parser, bare: no vrnn-serve guards),
`uvicorn-h11` (uvicorn with the pure-Python h11 parser), `hypercorn` (h11 too, its own loop) or
`granian` (a Rust server: hyper, in the same process).  Each serves the same ServeApp (batcher, routes,
streaming) as `vrnn-serve` with its defaults (--max-batch 256, --max-queue 4096) on a free loopback port,
prints `listening on URL` like vrnn-serve, and runs until SIGTERM.  Hypercorn and Granian are not
dependencies of the project: install them to measure them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys

from vrnn.runtime.cell import OnnxCell
from vrnn.runtime.serving.request import Limits
from vrnn.runtime.serving.server import ServeApp


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    layer, cell_path = sys.argv[1], sys.argv[2]
    cell = OnnxCell(cell_path, threads=min(2, os.cpu_count() or 1), batch=256, spinning=False)
    app = ServeApp(cell, cell_path, Limits(), max_batch=256, max_queue=4096)
    port = free_port()
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    try:
        if layer.startswith("uvicorn-"):
            import uvicorn

            uvicorn.run(app.app, host="127.0.0.1", port=port, lifespan="off", log_level="warning",
                        access_log=False, loop="uvloop", http=layer.removeprefix("uvicorn-"))  # fmt: skip
        elif layer == "hypercorn":
            from hypercorn.asyncio import serve
            from hypercorn.config import Config

            config = Config()
            config.bind = [f"127.0.0.1:{port}"]
            config.accesslog = None
            stop = asyncio.Event()

            async def run() -> None:
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
                await serve(app.app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

            asyncio.run(run())
        elif layer == "granian":
            from granian.constants import Interfaces
            from granian.server.embed import Server

            async def run_granian() -> None:
                server = Server(app.app, address="127.0.0.1", port=port, interface=Interfaces.ASGI,
                                log_enabled=False)  # fmt: skip
                loop = asyncio.get_running_loop()
                loop.add_signal_handler(signal.SIGTERM, server.stop)
                await server.serve()

            asyncio.run(run_granian())
        else:
            raise SystemExit(f"unknown layer {layer!r}")
    finally:
        app.batcher.close()


if __name__ == "__main__":
    main()
