"""A GPU smoke run: `vrnn-train --device cuda` against the CPU, the fused recurrence on the GPU, export and
sampling from the GPU-trained checkpoint, and a training step's time on both devices (issue 41).

On a machine with an NVIDIA GPU, from the repository root:

    make setup TORCH_INDEX=https://download.pytorch.org/whl/cu126
    .venv/bin/python benchmarks/gpu_smoke.py          # writes benchmarks/results-gpu-smoke.json

It trains the bundled model's preset (`shakespeare`: 64/512/32, one GRU layer, batch 32 x 256) for --steps
(300) on Tiny Shakespeare: --corpus, else $VRNN_TEST_CORPUS, else ../shared/data/tinyshakespeare.txt, else
the name `tinyshakespeare` as vrnn-train resolves it (the cached copy, downloaded once).  Expect about
5 minutes on a 16-core host, nearly all of it the CPU half (300 steps at roughly 0.5 s); the GPU half
takes under a minute.  It prints a table, writes every figure to --out with the date and the machine, and
exits 0 when every check passes, 1 (with a one-line message) when one fails, and 3 (one line) when CUDA
is not available.  `--device cpu` runs every check with the CPU standing in for CUDA (CPU against CPU:
the curves then agree exactly), which exercises the script on a machine without a GPU, not the GPU (about
15 minutes on 2 cores at this preset); its results go to results-gpu-smoke-cpu-standin.json unless --out
says otherwise.

The checks, and why each tolerance:

1. Plumbing.  `vrnn-train --device cuda` exits 0, says "device cuda", and its checkpoint's Adam state
   lives on CUDA (loaded without map_location): the run really trained there.
2. Loss curves.  vrnn-train on CUDA and on the CPU, same preset, seed and corpus, validating every
   --eval-every (50) steps.  Each metrics row's training loss (the mean of the 50 steps before it: the last
   row's is the mean of the last 50 training losses) and its validation -ELBO agree within 2% relative
   where the KL weight was 1 for all of the row's steps (rows 200-300 of 300 steps: the warm-up lasts
   min(400, steps / 2) steps), and within 10% during the warm-up (rows 50-150), a gross check only.
   Not float32 ulps: the runs share the initialisation (seeded on the CPU, then moved) and the windows
   (a CPU generator), but the latent noise and dropout masks come from a generator on the training
   device, and CUDA's (Philox) and the CPU's (Mersenne Twister) give different numbers for the same seed.
   So the two runs are two draws of the same stochastic training, not one computation in two reduction
   orders.  Three seeds of this preset (benchmarks/latent-study/*-s[123], where everything random differs)
   spread by at most 1.7% in training loss and 1.2% in validation -ELBO once the KL weight was past 0.9
   (1.0% and 1.2% once it was 1); earlier, as the loss leaves its initial plateau at a step that varies,
   by up to 3.5% in validation -ELBO and 17% in a 125-step training mean.  Sharing the initialisation and
   the windows narrows that here, but not to rounding.  A broken device path (wrong gradients, a stuck
   optimizer) misses the 2% rows by far more; the arithmetic itself is held tight by check 3.
3. Step parity, the arithmetic held tight: one forward and backward of the training loss on CUDA and on
   the CPU with the same weights (the CUDA run's), windows, noise and dropout mask (drawn on the CPU and
   copied), in float32.  Loss within 1e-5 relative; every parameter's gradient within 1e-4 of its largest
   entry (max |g_cuda - g_cpu| / max |g_cpu|).  On the CPU, with the bundled weights and one batch of this
   size, float32 is 1.4e-8 (loss) and 8e-6 (gradients) from float64: two devices each about that far from
   the exact values stay well inside.
4. The fused recurrence on the device: VRNN.forward's hand-written BPTT (FusedRecurrence) against the
   autograd loop (autograd_recurrence=True), same weights and inputs, a loss reaching every output (nll,
   KL, log-ratio, mu_q, as tests/test_model.py).  float64: loss 1e-12 relative, outputs and gradients
   1e-9 of their largest entry (the figures tests/test_model.py holds per element on a small model; the
   CPU measures 7e-15 at this size).  float32: loss 1e-5, outputs and gradients 1e-4 (the CPU measures 0
   and 8e-6).
5. Export and sampling: vrnn-export of the CUDA run's checkpoint (which checks the cell against PyTorch
   to 1e-5 before writing it), vrnn-run on the cell and vrnn-sample on the checkpoint with the same seed
   and options: byte-identical text.  These run with CUDA hidden (CUDA_VISIBLE_DEVICES=""): a checkpoint
   written on a GPU must serve on a machine without one.

Timing (figures, not checks): Trainer.train_step on each device, the median of --timing-steps steps after
--timing-warmup, with torch.cuda.synchronize() before and after each.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from vrnn.models.checkpoint import load_checkpoint, model_from_checkpoint
from vrnn.models.vrnn import VRNN
from vrnn.runtime.errors import VrnnError
from vrnn.training.config import PRESETS
from vrnn.training.corpus import cache_dir, corpus_name, resolve_corpus
from vrnn.training.data import Corpus, sample_windows
from vrnn.training.objective import training_loss
from vrnn.training.options import resolve_configs
from vrnn.training.tokens import prepare_tokens
from vrnn.training.torch_settings import flushed_denormals
from vrnn.training.trainer import OutputPaths, Trainer

REPO = Path(__file__).resolve().parent.parent
BUNDLED_PRESET = "shakespeare"  # what models/bundled-checkpoint/shakespeare.pt records as its train_config
EXIT_FAILED, EXIT_NO_CUDA = 1, 3  # 2 is argparse's (and the vrnn commands') usage error

CURVE_TOLERANCE = 0.02  # relative, rows where the KL weight was 1 throughout
WARMUP_CURVE_TOLERANCE = 0.10  # relative, rows during the KL warm-up: a gross check (see the docstring)
STEP_LOSS_TOLERANCE, STEP_GRAD_TOLERANCE = 1e-5, 1e-4  # CUDA against CPU, float32
FUSED_TOLERANCES = {torch.float64: (1e-12, 1e-9), torch.float32: (1e-5, 1e-4)}  # (loss, outputs and gradients)
SAMPLE_OPTIONS = ["--seed", "1", "--temperature", "0.8", "--num-samples", "2"]

COMMANDS = {
    "vrnn-train": "vrnn.training.cli",
    "vrnn-export": "vrnn.export.cli",
    "vrnn-sample": "vrnn.export.sample_cli",
    "vrnn-run": "vrnn.runtime.cli",
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        why = "this torch is a CPU build" if torch.version.cuda is None else "no CUDA device is visible"
        print(f"gpu_smoke: CUDA is not available ({why}, torch {torch.__version__}); "
              "pass --device cpu to run every check with the CPU standing in", file=sys.stderr)  # fmt: skip
        return EXIT_NO_CUDA
    if args.threads:
        torch.set_num_threads(args.threads)
    standin = "" if args.device == "cuda" else "-cpu-standin"  # a stand-in run never replaces a GPU's figures
    out = Path(args.out or REPO / "benchmarks" / f"results-gpu-smoke{standin}.json")
    with contextlib.ExitStack() as stack:
        workdir = Path(args.workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu-smoke-")))
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            results = smoke(args, workdir)
        except VrnnError as exc:  # the corpus cannot be found or read: nothing to run
            print(f"gpu_smoke: {exc}", file=sys.stderr)
            return EXIT_FAILED
        text = without_machine_paths(json.dumps(results, indent=2) + "\n", workdir)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print_table(results)
    failed = [c["name"] for c in results["checks"] if not c["passed"]]
    if failed:
        print(f"gpu_smoke: {len(failed)} of {len(results['checks'])} checks failed: {'; '.join(failed)} "
              f"(figures in {out})", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    print(f"gpu_smoke: all {len(results['checks'])} checks passed on {results['gpu_device']}; wrote {out}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device",
        choices=["cuda", "cpu"],
        default="cuda",
        help="The device under test; cpu stands in for CUDA on a machine without one.",
    )
    parser.add_argument("--corpus", default=None, help="Training text (default: Tiny Shakespeare, see above).")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=BUNDLED_PRESET,
        help=f"vrnn-train preset (default: {BUNDLED_PRESET}, the bundled model's).",
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50, help="Validation (and metrics row) interval.")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--timing-steps", type=int, default=20, help="Timed training steps per device.")
    parser.add_argument("--timing-warmup", type=int, default=5, help="Untimed steps before them.")
    parser.add_argument("--sample-length", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None, help="Torch CPU threads (default: all cores).")
    parser.add_argument("--workdir", default=None, help="Keep checkpoints and cells here (default: a temporary one).")
    parser.add_argument("--out", default=None, help="Results JSON (default: benchmarks/results-gpu-smoke.json).")
    args = parser.parse_args(argv)  # fmt: skip
    if min(args.steps, args.eval_every, args.timing_steps, args.sample_length) < 1 or args.timing_warmup < 0:
        parser.error("--steps, --eval-every, --timing-steps and --sample-length must be at least 1")
    return args


# --- the run ----------------------------------------------------------------------------------------------


def smoke(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Every stage in turn; a stage that raises is a failed check, and the later ones still run."""
    gpu = torch.device(args.device)
    corpus_spec = args.corpus or default_corpus()
    files = resolve_corpus(corpus_spec)
    corpus = Corpus.from_tokens(prepare_tokens([str(f) for f in files]), corpus_name(corpus_spec))
    options = {"steps": args.steps, "eval_every": args.eval_every, "seed": args.seed}
    model_config, train_config = resolve_configs(args.preset, options, len(corpus.vocab))
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "gpu_device": "cuda" if gpu.type == "cuda" else "cpu (standing in for cuda)",
        "corpus": {"files": [f.name for f in files], "sha256": corpus.sha256,
                   "train_val": [len(corpus.train), len(corpus.val)]},
        "preset": args.preset,
        "model_config": model_config.to_dict(),
        "train_config": train_config.to_dict(),
        "tolerances": {
            "curve_relative": CURVE_TOLERANCE,
            "curve_relative_kl_warmup": WARMUP_CURVE_TOLERANCE,
            "step_parity": {"loss_relative": STEP_LOSS_TOLERANCE, "gradient_of_max": STEP_GRAD_TOLERANCE},
            "fused": {dtype_name(k): {"loss_relative": v[0], "of_max": v[1]} for k, v in FUSED_TOLERANCES.items()},
        },
        "checks": [],
    }  # fmt: skip
    checks = Checks(results["checks"])

    runs: dict[str, dict[str, Any]] = {}
    for role, device in (("gpu", gpu), ("cpu", torch.device("cpu"))):
        with checks.stage(f"vrnn-train --device {device.type} ({role} run)"):
            runs[role] = train_run(corpus_spec, args, device, workdir / f"{role}.pt")
            checks.add(f"vrnn-train --device {device.type} ({role} run) exits 0", runs[role]["exit"], 0,
                       runs[role]["exit"] == 0, runs[role]["error"])  # fmt: skip
    results["runs"] = runs
    gpu_checkpoint = workdir / "gpu.pt"
    if "gpu" in runs and runs["gpu"]["exit"] == 0:
        with checks.stage("plumbing"):
            check_plumbing(checks, runs["gpu"], gpu_checkpoint, gpu)
    if all(role in runs and runs[role]["exit"] == 0 for role in ("gpu", "cpu")):
        with checks.stage("curves"):
            compare_curves(checks, runs["gpu"]["rows"], runs["cpu"]["rows"], train_config.effective_kl_anneal_steps)

    # The CUDA run's weights (realistic magnitudes) and one batch drawn on the CPU, as the trainer draws it.
    model = lambda: trained_model(gpu_checkpoint, model_config, args.seed)  # noqa: E731
    inputs = lambda: batch_inputs(corpus, model_config, train_config, args.seed)  # noqa: E731
    with checks.stage("step parity"):
        check_step_parity(checks, model(), inputs(), train_config, gpu)
    with checks.stage("fused recurrence"):
        check_fused(checks, model(), inputs(), gpu)
    with checks.stage("export and sampling"):
        results["export"] = check_export_and_sampling(checks, gpu_checkpoint, workdir, args)

    results["timing"] = {}
    for role, device in (("gpu", gpu), ("cpu", torch.device("cpu"))):
        with checks.stage(f"timing ({role})"):
            results["timing"][role] = time_steps(corpus, model_config, train_config, device, args, workdir)
    if len(results["timing"]) == 2:
        results["timing"]["cpu_over_gpu"] = results["timing"]["cpu"]["median_s"] / results["timing"]["gpu"]["median_s"]
    results["passed"] = all(c["passed"] for c in results["checks"])
    return results


class Checks:
    """The list of checks: each a name, its figure, its bound, and whether it passed."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def add(self, name: str, value: Any, bound: Any, passed: bool, detail: str = "") -> None:
        self.rows.append({"name": name, "value": value, "bound": bound, "passed": bool(passed), "detail": detail})

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # a crash on the device is a result, not the end of the run
            self.add(f"{name}: ran", None, None, False, f"{type(exc).__name__}: {one_line(str(exc))}")


def without_machine_paths(text: str, workdir: Path) -> str:
    """`text` with this machine's folders named portably (committed results carry none: test_docs_tables)."""
    names = {workdir: "WORKDIR", REPO: ".", REPO.parent: "..", cache_dir(): "VRNN_CACHE", Path.home(): "~"}
    folders = {str(f): name for path, name in names.items() for f in (path, path.resolve()) if len(f.parts) > 1}
    for folder in sorted(folders, key=len, reverse=True):  # the innermost first
        text = re.sub(re.escape(folder) + r"(?=[/\"\s]|$)", folders[folder], text)
    return text


def default_corpus() -> str:
    """$VRNN_TEST_CORPUS, else shared/data/tinyshakespeare.txt beside or inside the checkout, else the name
    `tinyshakespeare` (vrnn-train's own lookup: the cached copy, downloaded once and checked)."""
    candidates = [os.environ.get("VRNN_TEST_CORPUS", "")]
    candidates += [str(base / "shared" / "data" / "tinyshakespeare.txt") for base in (REPO.parent, REPO)]
    return next((c for c in candidates if c and Path(c).is_file()), "tinyshakespeare")


def command(name: str) -> list[str]:
    """A vrnn console script of this environment (what a user runs), else its module under this Python."""
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.is_file() else [sys.executable, "-m", COMMANDS[name]]


def run(name: str, args: list[str], cpu_only: bool = False) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if cpu_only else {})}
    return subprocess.run([*command(name), *args], capture_output=True, env=env, check=False)


def last_line(data: bytes) -> str:
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else ""


def one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def train_run(corpus: str, args: argparse.Namespace, device: torch.device, out: Path) -> dict[str, Any]:
    """vrnn-train on `device`; its exit, log, wall time and metrics rows."""
    cli = [corpus, "-o", str(out), "--preset", args.preset, "--steps", str(args.steps), "--eval-every",
           str(args.eval_every), "--seed", str(args.seed), "--device", device.type, "--force"]  # fmt: skip
    cli += ["--threads", str(args.threads)] if args.threads else []
    start = time.perf_counter()
    done = run("vrnn-train", cli)
    wall = time.perf_counter() - start
    log = done.stderr.decode("utf-8", "replace")
    metrics = OutputPaths(out).metrics
    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    keep = ("step", "train_loss", "train_nll", "train_kl", "val_elbo_nats", "val_nll", "val_kl", "kl_weight", "lr",
            "chars_per_s", "elapsed_s")  # fmt: skip
    return {
        "device": device.type,
        "exit": done.returncode,
        "error": "" if done.returncode == 0 else last_line(done.stderr),
        "wall_s": wall,
        "logged_device": (re.findall(r"\bdevice (\S+?),", log) or [None])[0],
        "rows": [{k: row.get(k) for k in keep} for row in rows],
    }


def check_plumbing(checks: Checks, run_: dict[str, Any], checkpoint: Path, device: torch.device) -> None:
    """The run says it trained on `device`, and its Adam state (saved as it was, not moved) lives there."""
    checks.add("vrnn-train logs the device", run_["logged_device"], device.type, run_["logged_device"] == device.type)
    payload = torch.load(checkpoint, weights_only=True)  # no map_location: tensors come back where they were
    states = payload["optimizer"]["state"].values()  # the moments; Adam keeps its step count on the CPU anyway
    where = sorted({state[key].device.type for state in states for key in ("exp_avg", "exp_avg_sq")})
    checks.add("checkpoint's Adam state is on the device", where, [device.type], where == [device.type])


def compare_curves(checks: Checks, gpu_rows: list[dict], cpu_rows: list[dict], anneal_steps: int) -> None:
    """Each row's training loss and validation -ELBO, worst relative difference per phase (see docstring)."""
    if [r["step"] for r in gpu_rows] != [r["step"] for r in cpu_rows] or not gpu_rows:
        checks.add("curves: the same validation steps", len(gpu_rows), len(cpu_rows), False)
        return
    phases: dict[str, list[tuple[int, str, float]]] = {"KL warm-up": [], "KL weight 1": []}
    previous = 0
    for gpu_row, cpu_row in zip(gpu_rows, cpu_rows, strict=True):
        phase = "KL weight 1" if previous >= anneal_steps else "KL warm-up"
        for key in ("train_loss", "val_elbo_nats"):
            difference = not_nan(abs(gpu_row[key] - cpu_row[key]) / abs(cpu_row[key]))
            phases[phase].append((gpu_row["step"], key, difference))
        previous = gpu_row["step"]
    for phase, bound in (("KL warm-up", WARMUP_CURVE_TOLERANCE), ("KL weight 1", CURVE_TOLERANCE)):
        for key, label in (("train_loss", "training loss"), ("val_elbo_nats", "validation -ELBO")):
            found = [(d, step) for step, k, d in phases[phase] if k == key]
            if found:
                worst, step = max(found)
                steps = ", ".join(str(s) for _, s in found)
                checks.add(
                    f"curves: {label}, {phase} (rows {steps})", worst, bound, worst <= bound, f"worst at step {step}"
                )


def trained_model(checkpoint: Path, model_config: Any, seed: int) -> VRNN:
    """The CUDA run's weights (realistic magnitudes); a fresh initialisation if that run wrote none."""
    if checkpoint.is_file():
        return model_from_checkpoint(load_checkpoint(checkpoint))[0].train()
    torch.manual_seed(seed)
    return VRNN(model_config).train()


def batch_inputs(corpus: Corpus, model_config: Any, tc: Any, seed: int) -> tuple[torch.Tensor, ...]:
    """One training batch drawn on the CPU as the trainer draws it: windows, latent noise, dropout mask."""
    generator = torch.Generator().manual_seed(seed)
    tokens = sample_windows(corpus, tc.batch_size, tc.seq_len, generator)
    eps = torch.randn((tc.seq_len, tc.batch_size, model_config.latent_size), generator=generator)
    mask = None
    if tc.dropout > 0:
        width = model_config.hidden_size + (model_config.embed_size if tc.dropout_scope == "decoder-input" else 0)
        keep = 1.0 - tc.dropout
        mask = (torch.rand((tc.seq_len, tc.batch_size, width), generator=generator) < keep).float() / keep
    return tokens, eps, mask


def loss_and_grads(
    model: VRNN, inputs: tuple, device: torch.device, dtype: torch.dtype, loss_of: Callable, autograd: bool = False
) -> tuple[float, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(loss, outputs, gradients) of one forward and backward of a copy of `model` on `device` in `dtype`."""
    tokens, eps, mask = inputs
    copied = copy.deepcopy(model).to(device=device, dtype=dtype).train()
    mask = None if mask is None else mask.to(device, dtype)
    terms = copied(tokens.to(device), eps.to(device, dtype), mask, with_aux=True, autograd_recurrence=autograd)
    loss = loss_of(terms)
    loss.backward()
    outputs = {"nll": terms.nll, "kl": terms.kl, "mu_q": terms.mu_q}
    grads = {name: p.grad for name, p in copied.named_parameters() if p.grad is not None}
    as_cpu = lambda tensors: {k: v.detach().double().cpu() for k, v in tensors.items()}  # noqa: E731
    return loss.item(), as_cpu(outputs), as_cpu(grads)


def worst_of_max(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> tuple[float, str]:
    """The worst max |found - expected| / max |expected| over the named tensors, and its name."""
    scores = {}
    for name, want in expected.items():
        scale = want.abs().max().item() if want.numel() else 0.0
        diff = (found[name] - want).abs().max().item() if want.numel() else 0.0
        scores[name] = not_nan(diff / scale if scale > 0 else diff)
    name = max(scores, key=lambda n: scores[n])
    return scores[name], name


def not_nan(value: float) -> float:
    """NaN as infinity, so that max() picks it and no bound passes it."""
    return math.inf if math.isnan(value) else value


def check_step_parity(checks: Checks, model: VRNN, inputs: tuple, tc: Any, device: torch.device) -> None:
    """The training loss and its gradients on `device` against the CPU, float32, the same everything."""

    def loss_of(terms: Any) -> torch.Tensor:
        return training_loss(terms, 1.0, tc.free_bits, tc.aux_weight)[0]

    on_device = loss_and_grads(model, inputs, device, torch.float32, loss_of)
    on_cpu = loss_and_grads(model, inputs, torch.device("cpu"), torch.float32, loss_of)
    loss_diff = abs(on_device[0] - on_cpu[0]) / abs(on_cpu[0])
    checks.add(f"step parity {device.type}/cpu: loss", loss_diff, STEP_LOSS_TOLERANCE, loss_diff <= STEP_LOSS_TOLERANCE,
               f"{on_device[0]:.7f} against {on_cpu[0]:.7f}")  # fmt: skip
    worst, name = worst_of_max(on_device[2], on_cpu[2])
    checks.add(f"step parity {device.type}/cpu: gradients", worst, STEP_GRAD_TOLERANCE, worst <= STEP_GRAD_TOLERANCE,
               f"worst: {name}")  # fmt: skip


def check_fused(checks: Checks, model: VRNN, inputs: tuple, device: torch.device) -> None:
    """FusedRecurrence against the autograd loop on `device`, in float64 and float32."""
    if model.config.layers != 1:
        checks.add(
            "fused recurrence", "not used", "one GRU layer", True, f"{model.config.layers} layers: autograd only"
        )
        return

    def loss_of(terms: Any) -> torch.Tensor:  # every output of the recurrence reaches it (tests/test_model.py)
        kl = terms.kl.sum(-1).mean()
        return terms.nll.mean() + 0.7 * kl - 0.3 * terms.log_ratio.mean() + (terms.mu_q**2).mean()

    for dtype, (loss_bound, bound) in FUSED_TOLERANCES.items():
        name = dtype_name(dtype)
        fused = loss_and_grads(model, inputs, device, dtype, loss_of)
        plain = loss_and_grads(model, inputs, device, dtype, loss_of, autograd=True)
        loss_diff = abs(fused[0] - plain[0]) / abs(plain[0])
        checks.add(f"fused/autograd on {device.type}, {name}: loss", loss_diff, loss_bound, loss_diff <= loss_bound)
        worst, where = max(worst_of_max(fused[1], plain[1]), worst_of_max(fused[2], plain[2]))
        checks.add(f"fused/autograd on {device.type}, {name}: outputs, gradients", worst, bound, worst <= bound,
                   f"worst: {where}")  # fmt: skip


def check_export_and_sampling(checks: Checks, checkpoint: Path, workdir: Path, args: argparse.Namespace) -> dict:
    """vrnn-export, vrnn-run and vrnn-sample on the CUDA run's checkpoint, with CUDA hidden."""
    if not checkpoint.is_file():
        checks.add("export: the gpu run's checkpoint exists", False, True, False)
        return {}
    cell = workdir / "gpu.onnx"
    exported = run("vrnn-export", [str(checkpoint), str(cell)], cpu_only=True)
    export_log = exported.stderr.decode("utf-8", "replace").strip().splitlines()
    parity = [line for line in export_log if line.startswith("parity at batch")]
    detail = parity[-1] if exported.returncode == 0 and parity else last_line(exported.stderr)
    checks.add("vrnn-export of the gpu checkpoint (parity 1e-5) exits 0", exported.returncode, 0,
               exported.returncode == 0, detail)  # fmt: skip
    if exported.returncode != 0:
        return {"export_log": export_log}
    options = ["--length", str(args.sample_length), *SAMPLE_OPTIONS]
    options += ["--threads", str(args.threads)] if args.threads else []
    onnx = run("vrnn-run", [str(cell), *options], cpu_only=True)
    torch_text = run("vrnn-sample", [str(checkpoint), *options], cpu_only=True)
    same = onnx.returncode == torch_text.returncode == 0 and onnx.stdout == torch_text.stdout and bool(onnx.stdout)
    detail = f"{len(onnx.stdout)} bytes" if same else f"exits {onnx.returncode}, {torch_text.returncode}: "
    detail += "" if same else last_line(onnx.stderr + torch_text.stderr) or "texts differ"
    checks.add("vrnn-run text == vrnn-sample text (same seed)", same, True, same, detail)
    return {"export_log": export_log, "sample_options": options, "text": onnx.stdout.decode("utf-8", "replace")}


def time_steps(corpus: Corpus, model_config: Any, tc: Any, device: torch.device, args: argparse.Namespace,
               workdir: Path) -> dict[str, Any]:  # fmt: skip
    """Trainer.train_step on `device`: the median of --timing-steps steps after --timing-warmup."""
    trainer = Trainer(corpus, model_config, tc, OutputPaths(workdir / f"timing-{device.type}.pt"), device, log=print)
    times = []
    with flushed_denormals():  # as Trainer.run trains
        for i in range(args.timing_warmup + args.timing_steps):
            synchronize(device)
            start = time.perf_counter()
            trainer.train_step()
            synchronize(device)
            if i >= args.timing_warmup:
                times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "device": device.type,
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "steps": args.timing_steps,
        "warmup": args.timing_warmup,
        "chars_per_s": tc.batch_size * tc.seq_len / median,
        "torch_threads": torch.get_num_threads() if device.type == "cpu" else None,
    }


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine() -> dict[str, Any]:
    """What ran it: GPU, torch, CUDA and cuDNN versions, the TF32 settings, CPU, the checkout's commit."""
    cuda = torch.cuda.is_available()
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return {
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": git.stdout.strip() or None,
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def print_table(results: dict[str, Any]) -> None:
    print(f"GPU smoke on {results['gpu_device']} ({results['machine']['gpu'] or results['machine']['cpu']}), "
          f"torch {results['machine']['torch']}, CUDA {results['machine']['cuda']}, {results['date']}")  # fmt: skip
    width = max(len(c["name"]) for c in results["checks"])
    for c in results["checks"]:
        value = f"{c['value']:.2e}" if isinstance(c["value"], float) else str(c["value"])
        bound = f"{c['bound']:.0e}" if isinstance(c["bound"], float) else str(c["bound"])
        mark = "ok" if c["passed"] else "FAIL"
        print(f"  {c['name']:<{width}}  {value:>10}  (bound {bound})  {mark}  {c['detail']}")
    for role, timing in results.get("timing", {}).items():
        if isinstance(timing, dict):
            print(f"  training step on {role} ({timing['device']}): median {timing['median_s'] * 1e3:.1f} ms "
                  f"of {timing['steps']} steps, {timing['chars_per_s']:,.0f} chars/s")  # fmt: skip
    if "cpu_over_gpu" in results.get("timing", {}):
        print(f"  cpu step / gpu step: {results['timing']['cpu_over_gpu']:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
