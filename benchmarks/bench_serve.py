"""vrnn-serve under load: streaming clients against the batched server, a one-request-at-a-time server, and the
cell's own throughput at the same batch size without HTTP.

    python benchmarks/bench_serve.py [--clients 1,16,64,256] [--seconds 6] [--rounds 3] [--soak 120]

For each cell (the bundled float32 one, and its int8 export) and each number of concurrent clients, in one
run on loopback, --rounds times in turn: a fresh `vrnn-serve --max-batch 256` and a fresh `vrnn-serve
--max-batch 1` each take the load for --seconds after a warm-up, then `Sampler.generate(500, num_samples=N)`
measures the cell alone at batch N; medians over the rounds (this machine's throughput moves by 10-15%
from minute to minute).  The load comes from a separate process (asyncio + aiohttp): every client streams
one request of 500 characters after another.  Reported: aggregate characters/s received in the window,
time to first character p50/p99, the gap between chunks p99, errors, the server's peak RSS.  Then sweeps of
--steps-per-call and --call-budget (and --flush-interval if asked) at 64 and 256 clients, one round each;
then a soak: 64 clients for --soak seconds against one server, a random tenth of the requests dropped
mid-stream and one bad request in ten, with the server's RSS after 20 s and at the end.

Nothing else should run meanwhile (a training would share the cores): ratios within one run are what count.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LENGTH = 500
WARMUP_SECONDS = 2.0


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of `values`, None if there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


# ---- the load generator (run in its own process: `bench_serve.py --load URL CLIENTS SECONDS [SOAK]`) ----


def client_options(index: int) -> dict:
    """Client `index`'s own options in the mixed load: a temperature from 0.5 to 1.5, a third with top-p 0.9,
    a sixth with top-k 10, one in twelve greedy (as a real service's clients send them)."""
    if index % 12 == 5:
        return {"greedy": True}
    options: dict = {"temperature": 0.5 + (index % 11) / 10}
    if index % 3 == 0:
        options["top_p"] = 0.9
    elif index % 6 == 1:
        options["top_k"] = 10
    return options


def parse_event(event: bytes) -> tuple[str, str, bool]:
    """One streamed event of either API: ("text", its characters, stopped) or ("done", "", stopped) or
    ("error", "", False).  /v1/generate sends `event: text|done`; /v1/completions sends `data: {chunk}`
    and `data: [DONE]`."""
    if event.startswith(b"data: "):
        data = event[len(b"data: ") :]
        if data == b"[DONE]":
            return "done", "", False
        choice = json.loads(data)["choices"][0]
        return "text", choice["text"], choice["finish_reason"] == "stop"
    kind, _, data = event.partition(b"\ndata: ")
    if kind == b"event: text":
        return "text", json.loads(data)["text"], False
    if kind == b"event: done":
        return "done", "", json.loads(data).get("finish_reason") == "stop"
    return "error", "", False


async def one_client(session, url: str, start: float, stop: float, soak: bool, record: dict,
                     options: dict | None = None, openai: bool = False) -> None:  # fmt: skip
    """Stream requests one after another until `stop` (each with `options`; through /v1/completions when
    `openai`); record characters (with arrival times), first-character times, gaps between chunks, texts
    ended by a stop string and errors."""
    body = ({"model": "shakespeare", "prompt": "", "max_tokens": LENGTH, "stream": True} if openai
            else {"length": LENGTH, "stream": True}) | (options or {})  # fmt: skip
    if openai:
        url = url.replace("/v1/generate", "/v1/completions")
    rng = random.Random(id(record) ^ int(start * 1e6))
    while time.perf_counter() < stop:
        if soak and rng.random() < 0.1:  # a bad request: must be refused, and must not disturb the others
            async with session.post(url, json={"length": -1}) as response:
                await response.read()
                record["bad_refused" if response.status == 422 else "bad_wrong"] += 1
            continue
        drop_after = rng.randint(1, LENGTH - 1) if soak and rng.random() < 0.1 else None
        sent = time.perf_counter()
        received = 0
        last = None
        buffer = b""
        try:
            async with session.post(url, json=body) as response:
                if response.status != 200:
                    record["errors"] += 1
                    await response.read()
                    await asyncio.sleep(0.05)
                    continue
                done = stopped = False
                async for chunk in response.content.iter_any():
                    now = time.perf_counter()
                    buffer += chunk
                    *events, buffer = buffer.split(b"\n\n")
                    for event in events:
                        kind, text, ended_by_stop = parse_event(event)
                        stopped |= ended_by_stop
                        if kind == "text" and text:
                            n = len(text)
                            received += n
                            if now >= start:
                                record["chars"].append((now, n))
                            if last is None:
                                if sent >= start:
                                    record["first"].append(now - sent)
                            elif now >= start:
                                record["gaps"].append(now - last)
                            last = now
                        elif kind == "done":
                            done = True
                        elif kind == "error":
                            record["errors"] += 1
                    if drop_after is not None and received >= drop_after:
                        break
                if drop_after is not None and received >= drop_after:
                    record["dropped"] += 1
                elif done and (received == LENGTH or stopped):
                    record["completed"] += 1
                    record["stopped"] += stopped
                else:
                    record["errors"] += 1
        except Exception as exc:  # a refused or reset connection is an error of the run, counted
            record["errors"] += 1
            record.setdefault("exceptions", []).append(f"{type(exc).__name__}: {exc}"[:200])
            await asyncio.sleep(0.05)


async def load(url: str, clients: int, seconds: float, soak: bool, mixed: bool = False, openai: bool = False,
               stops: bool = False) -> dict:  # fmt: skip
    import aiohttp

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter() + (0 if soak else WARMUP_SECONDS)
        stop = start + seconds
        records = [{"chars": [], "first": [], "gaps": [], "errors": 0, "completed": 0, "dropped": 0,
                    "bad_refused": 0, "bad_wrong": 0, "stopped": 0} for _ in range(clients)]  # fmt: skip

        def options(i: int) -> dict | None:
            return client_options(i) if mixed else {"stop": ["\n\n"]} if stops else None

        await asyncio.gather(*(one_client(session, url, start, stop, soak, r, options(i), openai)
                               for i, r in enumerate(records)))  # fmt: skip
    chars = [n for r in records for t, n in r["chars"] if t <= stop]
    first = [x for r in records for x in r["first"]]
    gaps = [x for r in records for x in r["gaps"]]
    sums = {k: sum(r[k] for r in records)
            for k in ("errors", "completed", "dropped", "bad_refused", "bad_wrong", "stopped")}  # fmt: skip
    return {
        "clients": clients,
        "seconds": seconds,
        "chars_per_s": sum(chars) / seconds,
        "first_char_p50_ms": None if not first else 1000 * percentile(first, 50),
        "first_char_p99_ms": None if not first else 1000 * percentile(first, 99),
        "gap_p99_ms": None if not gaps else 1000 * percentile(gaps, 99),
        "exceptions": [e for r in records for e in r.get("exceptions", [])][:5],
        **sums,
    }


# ---- the orchestration ----


def ms(value: float | None) -> str:
    """Milliseconds for the report ('-' when nothing was measured: no request began within the window)."""
    return "-" if value is None else f"{value:.1f}"


class ServerProcess:
    """A vrnn-serve child on a free loopback port."""

    def __init__(self, cell: str, *args: str, layer: str = "vrnn-serve") -> None:
        if layer == "vrnn-serve":
            command = [str(Path(sys.executable).with_name("vrnn-serve")), cell, "--port", "0", *args]
        else:  # the same app under another HTTP server (benchmarks/serve_under.py)
            command = [sys.executable, str(HERE / "serve_under.py"), layer, cell]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if "listening on " not in line:
            raise SystemExit(f"vrnn-serve did not start: {line} {self.process.stderr.read()}")
        self.url = line.split("listening on ")[1].split()[0] + "/v1/generate"

    def memory(self, key: str) -> int:
        """VmHWM (peak) or VmRSS of the server, in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {key}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def run_load(url: str, clients: int, seconds: float, soak: bool = False, mixed: bool = False,
             mode_name: str = "") -> dict:  # fmt: skip
    mode = ["soak"] if soak else ["mixed"] if mixed else [mode_name] if mode_name else []
    args = [sys.executable, __file__, "--load", url, str(clients), str(seconds), *mode]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def serve_under_load(
    cell: str,
    clients: int,
    seconds: float,
    max_batch: int,
    *extra: str,
    layer: str = "vrnn-serve",
    mixed: bool = False,
    mode: str = "",
) -> dict:
    server = ServerProcess(cell, "--max-batch", str(max_batch), "--max-queue", "4096", *extra, layer=layer)
    try:
        result = run_load(server.url, clients, seconds, mixed=mixed, mode_name=mode)
        result["server_peak_rss_mib"] = server.memory("VmHWM") / 2**20
    finally:
        server.stop()
    return result


def cell_alone(cell: str, batch: int, reps: int = 3) -> float:
    """Characters/s of Sampler.generate at `batch` samples of LENGTH (every core), median of `reps`."""
    from vrnn.runtime import Sampler

    sampler = Sampler.from_onnx(cell, threads=None, batch=batch)
    sampler.generate(50, num_samples=batch, seed=0)  # warm-up
    times = []
    for rep in range(reps):
        started = time.perf_counter()
        sampler.generate(LENGTH, num_samples=batch, seed=rep)
        times.append(time.perf_counter() - started)
    return batch * LENGTH / statistics.median(times)


def exported_cell(directory: Path, weights: str = "int8") -> str:
    """The bundled checkpoint exported with `weights`."""
    out = directory / f"shakespeare-{weights}.onnx"
    checkpoint = HERE.parent / "models" / "bundled-checkpoint" / "shakespeare.pt"
    subprocess.run([str(Path(sys.executable).with_name("vrnn-export")), str(checkpoint), str(out), "--weights",
                    weights], check=True, capture_output=True)  # fmt: skip
    return str(out)


def summarise(clients: int, rounds: list[tuple[dict, dict, float]]) -> dict:
    """Medians over rounds: throughputs, each round's ratios, first-character and gap percentiles; errors
    summed, peak RSS the largest.  Every round's raw numbers are kept."""

    def median(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    return {
        "clients": clients,
        "chars_per_s": median([b["chars_per_s"] for b, _, _ in rounds]),
        "max_batch_1_chars_per_s": median([n["chars_per_s"] for _, n, _ in rounds]),
        "cell_chars_per_s": median([c for _, _, c in rounds]),
        "vs_max_batch_1": median([b["chars_per_s"] / n["chars_per_s"] for b, n, _ in rounds]),
        "vs_cell": median([b["chars_per_s"] / c for b, _, c in rounds]),
        "first_char_p50_ms": median([b["first_char_p50_ms"] for b, _, _ in rounds]),
        "first_char_p99_ms": median([b["first_char_p99_ms"] for b, _, _ in rounds]),
        "gap_p99_ms": median([b["gap_p99_ms"] for b, _, _ in rounds]),
        "max_batch_1_first_char_p99_ms": median([n["first_char_p99_ms"] for _, n, _ in rounds]),
        "errors": sum(b["errors"] + n["errors"] for b, n, _ in rounds),
        "server_peak_rss_mib": max(b["server_peak_rss_mib"] for b, _, _ in rounds),
        "rounds": [{"batched": b, "max_batch_1": n, "cell_chars_per_s": c} for b, n, c in rounds],
    }


def compare_apis(cell: str, args: argparse.Namespace) -> None:
    """At each client count, rounds in turn, a fresh server each: /v1/generate, the same load through
    /v1/completions, and /v1/generate with stop ["\\n\\n"] (characters of useful text per second, and how
    many of the texts completed, warm-up included, ended at the stop and left their rows early)."""
    modes = {"generate": "", "completions": "openai", "stop": "stop"}
    report: dict = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "length": LENGTH, "seconds": args.seconds, "rounds": args.rounds,
                    "runs": []}  # fmt: skip
    for clients in (int(n) for n in args.clients.split(",")):
        rounds = [{name: serve_under_load(cell, clients, args.seconds, 256, mode=mode) for name, mode in modes.items()}
                  for _ in range(args.rounds)]  # fmt: skip
        row: dict = {"clients": clients, "rounds": rounds}
        for name in modes:
            row[name] = {
                "chars_per_s": statistics.median(r[name]["chars_per_s"] for r in rounds),
                "stopped": sum(r[name]["stopped"] for r in rounds),
                "completed": sum(r[name]["completed"] for r in rounds),
                "vs_generate": statistics.median(r[name]["chars_per_s"] / r["generate"]["chars_per_s"] for r in rounds),
                "first_char_p99_ms": statistics.median(r[name]["first_char_p99_ms"] or 0 for r in rounds),
                "errors": sum(r[name]["errors"] for r in rounds),
            }
            print(f"{clients:>3} clients {name:>11}: {row[name]['chars_per_s']:>8,.0f} chars/s "
                  f"({row[name]['vs_generate']:.2f}x /v1/generate), "
                  f"{row[name]['stopped']} of {row[name]['completed']} ended at a stop, first char p99 "
                  f"{row[name]['first_char_p99_ms']:.0f} ms, errors {row[name]['errors']}", flush=True)  # fmt: skip
        report["runs"].append(row)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")


def compare_options(args: argparse.Namespace) -> None:
    """Each cell and client count, rounds in turn: a fresh server under the same load with every client's
    options the same (the defaults), then one with each client's own (client_options)."""
    from vrnn.runtime.bundled import BUNDLED_CELL, bundled_file

    report: dict = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "length": LENGTH, "seconds": args.seconds, "rounds": args.rounds,
                    "mix": [client_options(i) for i in range(12)], "runs": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        cells = {"float32": str(bundled_file(BUNDLED_CELL, "the bundled cell"))}
        for weights in ("int8", "float16"):
            if weights in args.cells:
                cells[weights] = exported_cell(Path(scratch), weights)
        for name, cell in cells.items():
            for clients in (int(n) for n in args.clients.split(",")):
                rounds = [(serve_under_load(cell, clients, args.seconds, 256),
                           serve_under_load(cell, clients, args.seconds, 256, mixed=True))
                          for _ in range(args.rounds)]  # fmt: skip
                row = {
                    "cell": name,
                    "clients": clients,
                    "same_chars_per_s": statistics.median(s["chars_per_s"] for s, _ in rounds),
                    "mixed_chars_per_s": statistics.median(m["chars_per_s"] for _, m in rounds),
                    "mixed_vs_same": statistics.median(m["chars_per_s"] / s["chars_per_s"] for s, m in rounds),
                    "ratios": [m["chars_per_s"] / s["chars_per_s"] for s, m in rounds],
                    "same_first_char_p99_ms": statistics.median(s["first_char_p99_ms"] or 0 for s, _ in rounds),
                    "mixed_first_char_p99_ms": statistics.median(m["first_char_p99_ms"] or 0 for _, m in rounds),
                    "errors": sum(s["errors"] + m["errors"] for s, m in rounds),
                    "rounds": [{"same": s, "mixed": m} for s, m in rounds],
                }
                report["runs"].append(row)
                print(f"{name} {clients:>3} clients: same options {row['same_chars_per_s']:>8,.0f} chars/s, each its "
                      f"own {row['mixed_chars_per_s']:>8,.0f} ({row['mixed_vs_same']:.2f}x, "
                      f"{min(row['ratios']):.2f}-{max(row['ratios']):.2f}); first char p99 "
                      f"{row['same_first_char_p99_ms']:.0f} / {row['mixed_first_char_p99_ms']:.0f} ms, "
                      f"errors {row['errors']}", flush=True)  # fmt: skip
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")


def compare_layers(cell: str, args: argparse.Namespace) -> None:
    """The same app and load under each HTTP layer, rounds in turn; medians of characters/s and first-character
    p99, each layer's ratio to the first one named, per round."""
    layers = args.http_layers.split(",")
    report: dict = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "length": LENGTH, "seconds": args.seconds, "rounds": args.rounds,
                    "layers": {}}  # fmt: skip
    for clients in (int(n) for n in args.clients.split(",")):
        rounds = [{layer: serve_under_load(cell, clients, args.seconds, 256, layer=layer) for layer in layers}
                  for _ in range(args.rounds)]  # fmt: skip
        for layer in layers:
            runs = [r[layer] for r in rounds]
            row = {
                "clients": clients,
                "chars_per_s": statistics.median(r["chars_per_s"] for r in runs),
                "vs_first": statistics.median(r[layer]["chars_per_s"] / r[layers[0]]["chars_per_s"] for r in rounds),
                "first_char_p99_ms": statistics.median(r["first_char_p99_ms"] or 0 for r in runs),
                "errors": sum(r["errors"] for r in runs),
                "server_peak_rss_mib": max(r["server_peak_rss_mib"] for r in runs),
                "rounds": runs,
            }
            report["layers"].setdefault(layer, []).append(row)
            print(f"{layer:>18} {clients:>3} clients: {row['chars_per_s']:>8,.0f} chars/s ({row['vs_first']:.2f}x "
                  f"{layers[0]}), first char p99 {row['first_char_p99_ms']:.0f} ms, errors {row['errors']}, "
                  f"peak RSS {row['server_peak_rss_mib']:.0f} MiB", flush=True)  # fmt: skip
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", nargs="+", help=argparse.SUPPRESS)  # the load generator's own entry
    parser.add_argument("--clients", default="1,16,64,256")
    parser.add_argument("--seconds", type=float, default=6.0, help="the measured window of each load")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (batched, --max-batch 1, cell alone)")
    parser.add_argument("--soak", type=float, default=120.0, help="seconds of the soak (0: none)")
    parser.add_argument("--cells", default="float32,int8")
    parser.add_argument("--sweep-clients", default="64,256", help="client counts of the scheduling sweeps ('': none)")
    parser.add_argument("--steps-per-call", default="1,4,8,16,32", help="the --steps-per-call values swept")
    parser.add_argument("--flush-intervals", default="", help="the --flush-interval values swept ('': none)")
    parser.add_argument("--call-budgets", default="0.005,0.01,0.02,0.05", help="the --call-budget values swept")
    parser.add_argument("--http-layers", default="",
                        help="instead: compare HTTP layers at --clients, e.g. vrnn-serve,uvicorn-httptools,uvicorn-h11,"
                        "hypercorn,granian (see serve_under.py); written to --json")  # fmt: skip
    parser.add_argument("--mixed-options", action="store_true",
                        help="instead: each client its own options (client_options) against every client the "
                        "same, per cell (--cells, float16 too) and --clients; written to --json")  # fmt: skip
    parser.add_argument("--apis", action="store_true",
                        help="instead: /v1/completions and /v1/generate with stop ['\\n\\n'] against /v1/generate, "
                        "at --clients; written to --json")  # fmt: skip
    parser.add_argument("--json", type=Path, default=HERE / "results-serve.json")
    args = parser.parse_args()
    if args.load:
        url, clients, seconds, *mode = args.load
        result = load(url, int(clients), float(seconds), mode == ["soak"], mode == ["mixed"], mode == ["openai"],
                      mode == ["stop"])  # fmt: skip
        print(json.dumps(asyncio.run(result)))
        return
    from vrnn.runtime.bundled import BUNDLED_CELL, bundled_file

    if args.http_layers:
        compare_layers(str(bundled_file(BUNDLED_CELL, "the bundled cell")), args)
        return
    if args.mixed_options:
        compare_options(args)
        return
    if args.apis:
        compare_apis(str(bundled_file(BUNDLED_CELL, "the bundled cell")), args)
        return

    report = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "length": LENGTH, "seconds": args.seconds, "rounds": args.rounds,
              "runs": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        cells = {"float32": str(bundled_file(BUNDLED_CELL, "the bundled cell"))}
        if "int8" in args.cells:
            cells["int8"] = exported_cell(Path(scratch))
        for name in args.cells.split(","):
            rows = []
            for clients in (int(n) for n in args.clients.split(",")):
                rounds = []
                for _ in range(args.rounds):  # in turn, so that a slow minute hits all three alike
                    batched = serve_under_load(cells[name], clients, args.seconds, max_batch=256)
                    naive = serve_under_load(cells[name], clients, args.seconds, max_batch=1)
                    rounds.append((batched, naive, cell_alone(cells[name], clients)))
                row = summarise(clients, rounds)
                rows.append(row)
                print(f"{name} {clients:>3} clients: {row['chars_per_s']:>8,.0f} chars/s "
                      f"({row['vs_max_batch_1']:.2f}x max-batch-1 {row['max_batch_1_chars_per_s']:,.0f}, "
                      f"{row['vs_cell']:.2f}x the cell alone {row['cell_chars_per_s']:,.0f}); first char p50/p99 "
                      f"{ms(row['first_char_p50_ms'])}/{ms(row['first_char_p99_ms'])} ms, gap p99 "
                      f"{ms(row['gap_p99_ms'])} ms, errors {row['errors']}, "
                      f"peak RSS {row['server_peak_rss_mib']:.0f} MiB", flush=True)  # fmt: skip
            report["runs"][name] = rows
        # The scheduling trade-offs, on the float32 cell: steps per call and the call budget (a call's fixed
        # cost against how long a new request waits to join), and the flush interval (the event loop's work
        # per character against the gap between a stream's chunks).
        sweeps = []
        for clients in (int(n) for n in args.sweep_clients.split(",") if n):
            for option, values in (
                ("--steps-per-call", args.steps_per_call),
                ("--call-budget", args.call_budgets),
                ("--flush-interval", args.flush_intervals),
            ):
                for value in (v for v in values.split(",") if v):
                    # Steps per call alone: no budget stretching the calls of a small batch.
                    alone = ("--call-budget", "0") if option == "--steps-per-call" else ()
                    result = serve_under_load(cells["float32"], clients, args.seconds, 256, option, value, *alone)
                    sweeps.append({"clients": clients, "option": option, "value": float(value), **result})
                    first = f"{ms(result['first_char_p50_ms'])}/{ms(result['first_char_p99_ms'])}"
                    print(f"sweep {clients:>3} clients {option} {value:>5}: {result['chars_per_s']:>8,.0f} chars/s, "
                          f"first char p50/p99 {first} ms, gap p99 {ms(result['gap_p99_ms'])} ms, "
                          f"errors {result['errors']}", flush=True)  # fmt: skip
        report["sweeps"] = sweeps
        if args.soak:
            server = ServerProcess(cells["float32"], "--max-batch", "256")
            try:
                soak_out: dict = {}
                loader = subprocess.Popen([sys.executable, __file__, "--load", server.url, "64", str(args.soak),
                                           "soak"], stdout=subprocess.PIPE, text=True)  # fmt: skip
                time.sleep(20)
                rss_20s = server.memory("VmRSS")
                soak_out = json.loads(loader.communicate()[0])
                rss_end = server.memory("VmRSS")
            finally:
                server.stop()
            soak_out |= {"rss_after_20s_mib": rss_20s / 2**20, "rss_end_mib": rss_end / 2**20,
                         "rss_growth": rss_end / rss_20s - 1}  # fmt: skip
            report["soak"] = soak_out
            print(
                f"soak {args.soak:g} s, 64 clients: {soak_out['completed']} completed, {soak_out['dropped']} "
                f"dropped on purpose, {soak_out['bad_refused']} bad requests refused ({soak_out['bad_wrong']} "
                f"answered otherwise), errors {soak_out['errors']}; RSS {soak_out['rss_after_20s_mib']:.0f} MiB "
                f"after 20 s, {soak_out['rss_end_mib']:.0f} MiB at the end ({100 * soak_out['rss_growth']:+.1f}%)"
            )
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
