"""Does the latent earn its keep?  Train each posterior variant and its plain-GRU baseline on the same data
and budget, then score every best checkpoint the same way (the last 10%, 256-character windows, -IWAE-K).

    python benchmarks/latent_sweep.py CORPUS --out runs/sweep [--only NAME ...] [--steps N] [--hidden-size H]

Runs one training at a time (never two: they would share the cores and distort each other's speed).
Results go to OUT/results.json, one entry per variant, and are kept across invocations: a variant already
scored is skipped, so an interrupted sweep continues where it stopped.  The published table is in
docs/latent.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

# As modules of this interpreter, so that a sweep can run from a frozen copy of the package on PYTHONPATH
# while the working tree changes.
TRAIN = [sys.executable, "-m", "vrnn.training.cli"]
EVAL = [sys.executable, "-m", "vrnn.training.eval_cli"]

# name -> extra vrnn-train options; every variant also gets the common ones (a variant's own --steps wins:
# click takes an option's last value).
VARIANTS: dict[str, list[str]] = {
    "gru": ["--latent-size", "0"],
    "filtering": ["--posterior", "filtering"],
    "filtering-freebits": ["--posterior", "filtering", "--free-bits", "0.02"],
    "smoothing": ["--posterior", "smoothing"],
    "smoothing-aux0.5": ["--posterior", "smoothing", "--aux-weight", "0.5"],
    "smoothing-aux1": ["--posterior", "smoothing", "--aux-weight", "1"],
    "smoothing-aux1-freebits": ["--posterior", "smoothing", "--aux-weight", "1", "--free-bits", "0.02"],
    # The GRU with as much wall time as the smoothing posterior's 1500 steps take (it is twice as fast).
    "gru-2x": ["--latent-size", "0", "--steps", "3000"],
    # Free bits small enough to leave the ELBO alone (a floor of 0.16 nats/char over 32 dimensions).
    "smoothing-freebits0.005": ["--posterior", "smoothing", "--free-bits", "0.005"],
    "smoothing-aux0.05": ["--posterior", "smoothing", "--aux-weight", "0.05"],
    # The smoothing posterior with a backward GRU half as wide: cheaper (its cost grows with the width squared).
    "smoothing-backward128": ["--posterior", "smoothing", "--backward-size", "128"],
    # Fewer latent dimensions, each held above the KL-activity threshold (0.0125 > 0.01 nats) by free bits.
    "smoothing-z8-freebits0.0125": ["--posterior", "smoothing", "--latent-size", "8", "--free-bits", "0.0125"],
    # The bundled-size candidate (hidden 512): the two findings above together, the backward GRU at half width.
    "smoothing-z8-freebits0.0125-backward256": (
        ["--posterior", "smoothing", "--latent-size", "8", "--free-bits", "0.0125", "--backward-size", "256"]
    ),
    # The same without free bits, all 32 dimensions: what the smoothing posterior alone does at this size.
    "smoothing-backward256": ["--posterior", "smoothing", "--backward-size", "256"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--only", nargs="*", default=None, help="variant names (default: all)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--latent-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iwae-samples", type=int, default=64)
    parser.add_argument("--extra", default="", help="more vrnn-train options for every variant, one string")
    parser.add_argument("--table", action="store_true", help="print OUT/results.json as a markdown table and stop")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if args.table:
        print(markdown_table(results))
        return
    common = ["--preset", "shakespeare", "--steps", str(args.steps), "--hidden-size", str(args.hidden_size),
              "--threads", str(args.threads), "--quiet", *args.extra.split()]  # fmt: skip
    for name in args.only or list(VARIANTS):
        if name in results:
            print(f"{name}: done already ({results[name]['iwae_nats']:.4f})", flush=True)
            continue
        extra = VARIANTS[name]
        if "--latent-size" not in extra:
            extra = [*extra, "--latent-size", str(args.latent_size)]
        ckpt = args.out / f"{name}.pt"
        train = [*TRAIN, args.corpus, "-o", str(ckpt), *common, *extra]
        ckpt.exists() and train.append("--resume")
        started = time.perf_counter()
        subprocess.run(train, check=True)
        wall = time.perf_counter() - started
        history = json.loads(json.dumps(_history(ckpt)))
        best = ckpt.with_name(f"{name}.best.pt")
        score = subprocess.run(
            [*EVAL, args.corpus, "-c", str(best), "--split", "val", "--window", "256",
             "--iwae-samples", str(args.iwae_samples), "--threads", str(args.threads), "--json"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        summary = json.loads(score.stdout)
        results[name] = {
            "options": extra,
            "common": common,
            "elbo_nats": summary["elbo_nats"],
            "iwae_nats": summary["iwae_nats"],
            "iwae_samples": summary["iwae_samples"],
            "kl_nats": summary["kl_nats"],
            "active_units_kl": summary["active_units_kl"],
            "active_units_variance": summary["active_units"],
            "latent_size": summary["latent_size"],
            "aux_nats": summary["aux_nats"],
            "best_step": _step(best),
            "chars_per_s": statistics.median(r["chars_per_s"] for r in history),
            "train_wall_s": wall,
            "date": datetime.date.today().isoformat(),
        }
        results_path.write_text(json.dumps(results, indent=2) + "\n")
        r = results[name]
        print(f"{name}: -ELBO {r['elbo_nats']:.4f} -IWAE-{r['iwae_samples']} {r['iwae_nats']:.4f} "
              f"KL {r['kl_nats']:.4f} active {r['active_units_kl']}/{r['latent_size']} "
              f"{r['chars_per_s']:,.0f} chars/s {wall:.0f} s", flush=True)  # fmt: skip


def markdown_table(results: dict[str, dict]) -> str:
    """The sweep as docs/latent.md shows it: one row per variant, the GRU's exact NLL beside the bounds."""
    gru = results.get("gru", {}).get("iwae_nats")
    rows = [
        "| variant | −ELBO | −IWAE-K | vs GRU | KL/char | active (KL > 0.01) | active (variance) | aux | best step "
        "| chars/s | wall | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        versus = f"{r['iwae_nats'] - gru:+.4f}" if gru is not None else ""
        aux = f"{r['aux_nats']:.3f}" if r.get("aux_nats") is not None else ""
        rows.append(
            f"| {name} | {r['elbo_nats']:.4f} | {r['iwae_nats']:.4f} (K={r['iwae_samples']}) | {versus} "
            f"| {r['kl_nats']:.4f} | {r['active_units_kl']}/{r['latent_size']} "
            f"| {r['active_units_variance']}/{r['latent_size']} | {aux} | {r['best_step']} "
            f"| {r['chars_per_s']:,.0f} | {r['train_wall_s'] / 60:.1f} min | {r['date']} |"
        )
    return "\n".join(rows)


def _history(ckpt: Path) -> list[dict]:
    import torch

    return torch.load(ckpt, map_location="cpu", weights_only=True)["metrics"]["history"]


def _step(ckpt: Path) -> int:
    import torch

    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["step"])


if __name__ == "__main__":
    main()
