"""Generation benchmarks: the onnxruntime path against the PyTorch path on the same cell.

    python benchmarks/bench_generation.py [--json out.json] [--reps 5]

Builds a model of the `default` preset (random weights: speed does not depend on
training), exports its cell (an ONNX Scan: many characters per run()), then measures, each as the median of --reps runs
side by side in one process:
  1. per character at batch 1: Sampler loop vs the PyTorch step loop (one thread
     each), and four floors: InferenceSession.run on a one-node Identity graph (the
     fixed cost of a call), an iteration of an ONNX Scan with an Identity body (the
     fixed cost of a character inside the cell's Scan), and the cell's matrix-vector
     products alone (the cost of reading the weights once, one thread): by numpy, and
     by onnxruntime as the cell's own Gemms in a Scan with nothing else;
  2. the same at batch 1 on a cell of the write-up's size (64 units everywhere), where
     the per-call cost, not the arithmetic, is what a character costs;
  3. batch 256: characters/s of both paths, and the FLOP rate of the runtime as a
     fraction of numpy's matmul rate on the cell's matrix shapes -- all three with
     --threads threads (default: every core);
  4. cold start: whole process `vrnn-run cell --length 500` vs `vrnn-sample ckpt`;
  5. peak RSS of those two processes, and of Python importing the runtime's
     dependencies and nothing else (the floor of the runtime's memory).
numpy's rates are measured in a child process whose BLAS thread count is set to
match the path it is compared with.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from vrnn.export.cli import export_cell
from vrnn.export.torch_cell import torch_sampler
from vrnn.models.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, save_checkpoint
from vrnn.models.vrnn import VRNN
from vrnn.runtime import Sampler
from vrnn.runtime.cell import session_options, step_multiply_adds
from vrnn.runtime.schema import ModelConfig
from vrnn.training.config import PRESETS

VOCAB = [chr(i) for i in range(32, 97)]  # 65 characters, like Tiny Shakespeare


def median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_model(workdir: Path, sizes: dict[str, int], name: str) -> tuple[Path, Path, ModelConfig]:
    config = ModelConfig(vocab_size=len(VOCAB), **sizes)
    torch.manual_seed(0)
    model = VRNN(config)
    ckpt = workdir / f"{name}.pt"
    save_checkpoint(ckpt, {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                           "model_config": config.to_dict(), "vocab": VOCAB, "start_char": VOCAB[0],
                           "model": model.state_dict(), "step": 0})  # fmt: skip
    cell = workdir / f"{name}.onnx"
    export_cell(str(ckpt), str(cell))
    return ckpt, cell, config


def identity_floor(reps: int, calls: int) -> float:
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [1])])  # fmt: skip
    session = ort.InferenceSession(helper.make_model(graph).SerializeToString(), session_options(1))
    feed = {"x": np.zeros(1, np.int64)}

    def loop() -> None:
        for _ in range(calls):
            session.run(None, feed)

    return median_time(loop, reps) / calls


def scan_iteration_floor(reps: int, iterations: int) -> float:
    """Seconds per iteration of an ONNX Scan whose body only passes one int64 on (Identity): the fixed
    cost of a character in the cell's design, as the Identity run() is the fixed cost of a call."""
    info = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Identity", ["x_t"], ["c_out"])],
        "body",
        [info("c", TensorProto.INT64, [1]), info("x_t", TensorProto.INT64, [1])],
        [info("c_out", TensorProto.INT64, [1])],
    )
    graph = helper.make_graph(
        [helper.make_node("Scan", ["c0", "xs"], ["c_last"], body=body, num_scan_inputs=1)],
        "scan",
        [info("c0", TensorProto.INT64, [1]), info("xs", TensorProto.INT64, ["n", 1])],
        [info("c_last", TensorProto.INT64, [1])],
    )
    session = ort.InferenceSession(helper.make_model(graph).SerializeToString(), session_options(1))
    feed = {"c0": np.zeros(1, np.int64), "xs": np.zeros((iterations, 1), np.int64)}
    return median_time(lambda: session.run(None, feed), reps) / iterations


def onnxruntime_products_floor(cell: Path, reps: int, iterations: int) -> float:
    """Seconds per iteration of an ONNX Scan whose body is only the cell's matrix products at batch 1 on the
    cell's own weights, in its weight format (float Gemms; for int8 the state's QuantizeLinear, MatMulInteger,
    Cast, Mul and Add), each input carried on unchanged by an Identity, with the runtime's session settings:
    what onnxruntime needs to read the weights once per character, beside the rest of the step (gates,
    sampling, the Scan itself)."""
    model = onnx.load(str(cell))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    body = next(n for n in model.graph.node if n.op_type == "Scan").attribute[0].g

    def float_matrix(name: str) -> np.ndarray:  # a Gemm's weight as the session sees it after folding
        if name in inits:
            return inits[name]
        if f"{name}_f16" in inits:
            return inits[f"{name}_f16"].astype(np.float32)
        return (inits[f"{name}_q"].astype(np.float32) * inits[f"{name}_scale"]).astype(np.float32)

    info = helper.make_tensor_value_info
    nodes, inputs, carried, products, used, feed = [], [], [], [], {}, {}
    rng = np.random.default_rng(0)
    for i, node in enumerate(n for n in body.node if n.op_type in ("Gemm", "MatMulInteger")):
        if node.op_type == "Gemm":
            used[node.input[1]] = float_matrix(node.input[1])
            k = used[node.input[1]].shape[0]
            nodes.append(helper.make_node("Gemm", [f"x{i}", node.input[1]], [f"y{i}"]))
        else:
            w = node.input[1]  # NAME_q; its scales and bias beside it
            stem = w.removesuffix("_q")
            for name in (w, f"{stem}_rescale", f"{stem}_B", "state_scale", "state_zero"):
                used[name] = inits[name]
            k = inits[w].shape[0]
            nodes += [
                helper.make_node("QuantizeLinear", [f"x{i}", "state_scale", "state_zero"], [f"q{i}"]),
                helper.make_node("MatMulInteger", [f"q{i}", w, "state_zero"], [f"a{i}"]),
                helper.make_node("Cast", [f"a{i}"], [f"f{i}"], to=TensorProto.FLOAT),
                helper.make_node("Mul", [f"f{i}", f"{stem}_rescale"], [f"m{i}"]),
                helper.make_node("Add", [f"m{i}", f"{stem}_B"], [f"y{i}"]),
            ]
        nodes.append(helper.make_node("Identity", [f"x{i}"], [f"x{i}_next"]))
        inputs.append(info(f"x{i}", TensorProto.FLOAT, [1, k]))
        carried.append(info(f"x{i}_next", TensorProto.FLOAT, [1, k]))
        products.append(info(f"y{i}", TensorProto.FLOAT, None))
        feed[f"x{i}"] = rng.uniform(-0.9, 0.9, (1, k)).astype(np.float32)
    outputs = carried + products  # a Scan's carried state comes first
    scan_body = helper.make_graph(nodes, "products", [*inputs, info("t", TensorProto.FLOAT, [1])], outputs)
    scan_out = [info(f"{v.name}_out", TensorProto.FLOAT, None) for v in outputs]
    graph = helper.make_graph(
        [helper.make_node("Scan", [*(v.name for v in inputs), "ts"], [v.name for v in scan_out], body=scan_body,
                          num_scan_inputs=1)],
        "products_scan", [*inputs, info("ts", TensorProto.FLOAT, ["n", 1])], scan_out,
        initializer=[numpy_helper.from_array(v, k) for k, v in used.items()],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = min(proto.ir_version, 9)
    session = ort.InferenceSession(proto.SerializeToString(), session_options(1, pack_weights=False))
    feed["ts"] = np.zeros((iterations, 1), np.float32)
    return median_time(lambda: session.run(None, feed), reps) / iterations


def matrix_shapes(config: ModelConfig) -> list[tuple[int, int]]:
    """(inputs, outputs) of each of the cell's matrix products: phi_z's GRU input product (phi_x's is a
    table lookup), then per layer one product of the new state (the top layer's with prior, decoder
    h-part and the next step's recurrent weights; a lower layer's with the next layer's input and its
    own recurrent weights), phi_z, the decoder's z-part."""
    E, H, Z, V, L = config.embed_size, config.hidden_size, config.latent_size, config.vocab_size, config.layers
    return [(E, 3 * H), *[(H, 6 * H)] * (L - 1), (H, 2 * Z + V + 3 * H), (Z, E), (E, V)]


def cell_flops(config: ModelConfig, batch: int) -> int:
    """Multiply-adds x 2 of the cell's matrix products (the count the runtime's thread choice uses)."""
    multiply_adds = sum(k * n for k, n in matrix_shapes(config))
    assert multiply_adds == step_multiply_adds(config), "matrix_shapes and the runtime's count disagree"
    return 2 * batch * multiply_adds


_NUMPY_PRODUCTS = """
import json, statistics, sys, time
import numpy as np
shapes, batch, calls, reps = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
mats = [(rng.standard_normal((batch, k), np.float32), rng.standard_normal((k, n), np.float32)) for k, n in shapes]
times = []
for _ in range(reps + 1):  # the first pass warms up
    start = time.perf_counter()
    for _ in range(calls):
        for a, b in mats:
            a @ b
    times.append((time.perf_counter() - start) / calls)
print(statistics.median(times[1:]))
"""


def numpy_products_time(config: ModelConfig, batch: int, threads: int, reps: int) -> float:
    """Seconds numpy needs for one pass of the cell's matrix products (nothing else), with
    `threads` BLAS threads: in a child process, as BLAS reads its thread count at import."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))  # fmt: skip
    calls = 2000 if batch == 1 else 200
    args = json.dumps([matrix_shapes(config), batch, calls, reps])
    out = subprocess.run([sys.executable, "-c", _NUMPY_PRODUCTS, args], env=env, capture_output=True, text=True,
                         check=True)  # fmt: skip
    return float(out.stdout)


def batch1(ckpt: Path, cell: Path, chars: int, reps: int) -> tuple[float, float]:
    """Seconds per character at batch 1, one thread each: (runtime, PyTorch)."""
    onnx_gen, torch_gen = Sampler.from_onnx(cell, threads=1), torch_sampler(str(ckpt), threads=1)
    rt = median_time(lambda: onnx_gen.generate(chars, seed=1), reps) / chars
    pt = median_time(lambda: torch_gen.generate(chars, seed=1), reps) / chars
    return rt, pt


# Runs a command and reports its own peak RSS and wall time.  A small process in
# between is needed: Linux carries a process's peak RSS across exec, so a child
# spawned straight from this (large) benchmark process would report ours.
_MEASURE = """
import os, sys, time
out = os.open(os.devnull, os.O_WRONLY)
start = time.perf_counter()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, out, 1)])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, os.waitstatus_to_exitcode(status), time.perf_counter() - start)
"""


def process_stats(cmd: list[str], reps: int) -> tuple[float, float]:
    """Median wall time (s) and peak RSS (MiB) of a whole process."""
    times, rss = [], []
    for _ in range(reps):
        report = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, check=True)
        maxrss_kb, code, seconds = report.stdout.split()
        if int(code) != 0:
            raise SystemExit(f"benchmark command failed: {' '.join(cmd)}")
        times.append(float(seconds))
        rss.append(int(maxrss_kb) / 1024)
    return statistics.median(times), statistics.median(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--chars", type=int, default=2000, help="characters per batch-1 repetition")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of all three at batch 256")
    args = parser.parse_args()
    results: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
        f"onnxruntime {ort.__version__}, torch {torch.__version__}",
        "batch256_threads": args.threads,
    }
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, cell, config = make_model(Path(tmp), PRESETS["default"][0], "default")
        small_ckpt, small_cell, small_config = make_model(Path(tmp), PRESETS["writeup"][0], "writeup")
        results["model"] = config.to_dict()
        results["small_model"] = small_config.to_dict()
        scan = next(n for n in onnx.load(str(cell)).graph.node if n.op_type == "Scan")  # its body: one step
        results["cell_nodes_per_step"] = len(scan.attribute[0].g.node)

        n = args.chars
        rt, pt = batch1(ckpt, cell, n, args.reps)
        small_rt, small_pt = batch1(small_ckpt, small_cell, n, args.reps)
        floor = identity_floor(args.reps, n)
        results["batch1_us_per_char"] = {
            "runtime": rt * 1e6,
            "torch": pt * 1e6,
            "identity_floor": floor * 1e6,
            "scan_iteration_floor": scan_iteration_floor(args.reps, n) * 1e6,
            "numpy_products": numpy_products_time(config, 1, 1, args.reps) * 1e6,
            "onnxruntime_products": onnxruntime_products_floor(cell, args.reps, n) * 1e6,
            "small_runtime": small_rt * 1e6,
            "small_torch": small_pt * 1e6,
            "small_numpy_products": numpy_products_time(small_config, 1, 1, args.reps) * 1e6,
        }

        b, steps = 256, 200
        onnx_gen = Sampler.from_onnx(cell, threads=args.threads, batch=b)  # as `vrnn-run --num-samples 256` builds it
        torch_gen = torch_sampler(str(ckpt), threads=args.threads)
        rt256 = median_time(lambda: onnx_gen.generate(steps, seed=1, num_samples=b), args.reps)
        pt256 = median_time(lambda: torch_gen.generate(steps, seed=1, num_samples=b), args.reps)
        flops = cell_flops(config, b) * steps
        numpy_s = numpy_products_time(config, b, args.threads, args.reps)
        results["batch256"] = {
            "runtime_chars_per_s": b * steps / rt256,
            "torch_chars_per_s": b * steps / pt256,
            "runtime_gflops": flops / rt256 / 1e9,
            "numpy_matmul_gflops": cell_flops(config, b) / numpy_s / 1e9,
        }

        bin_dir = Path(sys.executable).parent
        run_t, run_rss = process_stats(
            [str(bin_dir / "vrnn-run"), str(cell), "--length", "500", "--seed", "1"], args.reps
        )
        smp_t, smp_rss = process_stats([str(bin_dir / "vrnn-sample"), str(ckpt), "--length", "500", "--seed", "1"],
                                       args.reps)  # fmt: skip
        # The floor of the runtime's memory: Python with its three dependencies imported, nothing run.
        _, imports_rss = process_stats([sys.executable, "-c", "import numpy, onnxruntime, click"], args.reps)
        results["cold_start_s"] = {"vrnn-run": run_t, "vrnn-sample": smp_t}
        results["peak_rss_mib"] = {"vrnn-run": run_rss, "vrnn-sample": smp_rss, "runtime_imports_only": imports_rss}

    b1, b256 = results["batch1_us_per_char"], results["batch256"]
    rows = [
        ("batch 1, us/char", f"{b1['runtime']:.1f}", f"{b1['torch']:.1f}",
         f"runtime {b1['torch'] / b1['runtime']:.2f}x faster (target >= 5x); "
         f"{b1['runtime'] / b1['identity_floor']:.2f}x the identity floor "
         f"{b1['identity_floor']:.1f} us (target <= 2x); the cell's products alone: "
         f"numpy {b1['numpy_products']:.1f} us, "
         f"onnxruntime's Gemms in a Scan {b1['onnxruntime_products']:.1f} us; "
         f"an empty Scan iteration {b1['scan_iteration_floor']:.1f} us"),
        ("  write-up-size cell", f"{b1['small_runtime']:.1f}", f"{b1['small_torch']:.1f}",
         f"runtime {b1['small_torch'] / b1['small_runtime']:.2f}x faster; "
         f"{b1['small_runtime'] / b1['identity_floor']:.2f}x the identity floor; "
         f"numpy's products alone {b1['small_numpy_products']:.1f} us"),
        (f"batch 256, chars/s ({args.threads} threads)", f"{b256['runtime_chars_per_s']:,.0f}",
         f"{b256['torch_chars_per_s']:,.0f}",
         f"{b256['runtime_chars_per_s'] / b256['torch_chars_per_s']:.2f}x (target >= 1.5x); runtime "
         f"{b256['runtime_gflops']:.1f} GFLOP/s = {b256['runtime_gflops'] / b256['numpy_matmul_gflops']:.0%} of "
         f"numpy matmul {b256['numpy_matmul_gflops']:.1f} (target >= 50%)"),
        ("cold start, s", f"{run_t:.2f}", f"{smp_t:.2f}", f"{smp_t / run_t:.2f}x (target >= 5x)"),
        ("peak RSS, MiB", f"{run_rss:.0f}", f"{smp_rss:.0f}", f"{run_rss / smp_rss:.2f} of torch's (target <= 0.25); "
         f"importing numpy, onnxruntime and click alone: {imports_rss:.0f} MiB = {imports_rss / smp_rss:.2f}"),
    ]  # fmt: skip
    nodes = results["cell_nodes_per_step"]
    print(f"{results['date']} | {results['machine']} | cell of {nodes} nodes per step, {results['model']}")
    print(f"{'measure':<34} {'onnxruntime':>12} {'pytorch':>12}  result")
    for name, a, c, verdict in rows:
        print(f"{name:<34} {a:>12} {c:>12}  {verdict}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
