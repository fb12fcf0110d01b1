"""What latent temperature buys: quality against diversity of sampled text, GRU against VRNN, judged by scorers
that are not the models being judged.

    python benchmarks/latent_quality.py CORPUS --model gru=GRU_S1.pt --model gru=GRU_S2.pt \\
        --model vrnn=VRNN_S1.pt --model vrnn=VRNN_S2.pt --scorer GRU_S3.pt [--out benchmarks/latent-quality]

CORPUS is the text the checkpoints were trained on (Tiny Shakespeare).  For every checkpoint (two or more
training seeds per arm) and every sampling setting -- temperature x top-p for the GRU, temperature x latent
temperature (0, 0.5, 1, 1.5) for the VRNN -- it continues 200 prompts from the second half of the validation
split (text that neither training nor checkpoint selection saw) by 500 characters, 4 samples per prompt
(seeds 0-3: the same noise for every setting), generated as rows of one batch by vrnn-serve's batcher.
Then, per prompt:

- quality: the negative log-likelihood per character of the continuations, given the prompt, under two
  frozen scorers fitted on the training split only -- an order-7 interpolated modified Kneser-Ney character
  model (benchmarks/ngram.py) and a separately trained model of another seed (--scorer, exact for a GRU);
- diversity: distinct 4-grams over the prompt's 4 samples (share of 4-grams that are distinct), their
  4-gram entropy, and self-similarity (the mean share of one sample's 4-grams found in another of the same
  prompt);
- memorisation: the share of 32-character spans of the samples that occur verbatim in the training text.

Each point is the mean over prompts and seeds; its band the 2.5-97.5% interval of 1,000 bootstrap
resamples, each of the training seeds and then of the prompts (the same prompts for every seed), so that
the band holds the spread between seeds too.  Two questions are then answered at matched
diversity (the reference curve interpolated at the point's distinct-4): is any VRNN setting better than
the GRU, and does latent temperature buy the VRNN more than its own temperature does (its curve at latent
temperature 1)?  "better" or "worse" only where the bands do not overlap.  Writes results.json, table.md
and quality-diversity.png into --out; `--render` rewrites the last two from results.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ngram import KneserNey

from vrnn.runtime.cell import OnnxCell
from vrnn.runtime.choice import SamplingOptions
from vrnn.runtime.scoring import log_softmax, teacher_forced_logits
from vrnn.runtime.serving.batcher import Batcher, Delivery, GenerationRequest
from vrnn.runtime.splits import split_bounds

HERE = Path(__file__).resolve().parent
PROMPTS, PROMPT_CHARS, LENGTH, SAMPLES = 200, 100, 500, 4
NGRAM_ORDER, SPAN, BOOTSTRAP = 7, 32, 1000
TEMPERATURES = (0.6, 0.8, 1.0, 1.2)
SETTINGS = {
    "gru": [{"temperature": t, "top_p": p} for p in (None, 0.9) for t in TEMPERATURES],
    "vrnn": [{"temperature": t, "latent_temperature": lt} for lt in (0.0, 0.5, 1.0, 1.5) for t in TEMPERATURES],
}


def prompts(text: str) -> list[str]:
    """PROMPTS windows of PROMPT_CHARS characters from the second half of the validation split, evenly spaced,
    each starting at a line's beginning."""
    start, end = split_bounds(len(text), "val-second-half")
    held_out = text[start:end]
    chosen = []
    for i in range(PROMPTS):
        at = i * (len(held_out) - 2 * PROMPT_CHARS) // PROMPTS
        line = held_out.find("\n", at) + 1
        chosen.append(held_out[line : line + PROMPT_CHARS])
    return chosen


def export(checkpoint: str, directory: Path) -> str:
    """The checkpoint's cell (vrnn-export), in `directory`."""
    out = directory / (Path(checkpoint).stem + ".onnx")
    subprocess.run([str(Path(sys.executable).with_name("vrnn-export")), checkpoint, str(out)], check=True,
                   capture_output=True)  # fmt: skip
    return str(out)


def generate(cell: OnnxCell, chosen: list[str], options: SamplingOptions) -> list[list[str]]:
    """SAMPLES continuations of LENGTH characters for each prompt (seeds 0..SAMPLES-1), all rows of one batch."""
    texts: dict[tuple[int, int], list[str]] = {}
    errors: list[str] = []
    finished = threading.Semaphore(0)

    def publish(deliveries: list[Delivery]) -> None:  # from the batcher's thread
        for d in deliveries:
            texts.setdefault(d.ticket.context, []).append(d.text)  # type: ignore[arg-type]
            if d.error:
                errors.append(d.error)
            if d.done:
                finished.release()

    rows = len(chosen) * SAMPLES
    batcher = Batcher(cell, publish, max_batch=rows, max_queue=0)
    for p, prompt in enumerate(chosen):
        for s in range(SAMPLES):
            request = GenerationRequest(cell.vocab.encode(prompt), LENGTH, s, options)
            batcher.submit(request, context=(p, s))
    for _ in range(rows):
        finished.acquire()
    batcher.close()
    if errors:
        raise SystemExit(f"generation failed: {errors[0]}")
    return [["".join(texts[(p, s)]) for s in range(SAMPLES)] for p in range(len(chosen))]


def four_grams(text: str) -> list[str]:
    return [text[i : i + 4] for i in range(len(text) - 3)]


def per_prompt(samples: list[list[str]], chosen: list[str], ngram: KneserNey, scorer: OnnxCell,
               spans: set[str]) -> dict[str, np.ndarray]:  # fmt: skip
    """Each metric for each prompt (over its SAMPLES continuations)."""
    out: dict[str, list[float]] = {k: [] for k in ("ngram_nll", "model_nll", "distinct4", "entropy4",
                                                   "self_similarity", "memorised")}  # fmt: skip
    model_nll = scorer_nll(scorer, samples, chosen)
    for p, (prompt, group) in enumerate(zip(chosen, samples, strict=True)):
        out["ngram_nll"].append(float(np.mean([ngram.nll(t, history=prompt) for t in group])))
        out["model_nll"].append(float(model_nll[p]))
        grams = [four_grams(t) for t in group]
        pooled = Counter(g for gs in grams for g in gs)
        total = sum(pooled.values())
        out["distinct4"].append(len(pooled) / total)
        out["entropy4"].append(-sum(c / total * math.log(c / total) for c in pooled.values()))
        sets = [set(gs) for gs in grams]
        overlaps = [len(sets[i] & sets[j]) / len(sets[i]) for i in range(len(sets)) for j in range(len(sets)) if i != j]
        out["self_similarity"].append(float(np.mean(overlaps)))
        windows = [t[i : i + SPAN] for t in group for i in range(len(t) - SPAN + 1)]
        out["memorised"].append(sum(w in spans for w in windows) / len(windows))
    return {k: np.array(v) for k, v in out.items()}


def scorer_nll(scorer: OnnxCell, samples: list[list[str]], chosen: list[str]) -> np.ndarray:
    """Per prompt: the scorer's NLL per character of the continuations given the prompt (teacher forcing from
    the start character; for a GRU scorer exact, for a VRNN one the latent's prior mean)."""
    vocab = scorer.vocab
    start = vocab.encode(scorer.start_char)
    sequences = [np.concatenate([start, vocab.encode(prompt + text)]) for prompt, group in zip(chosen, samples,
                 strict=True) for text in group]  # fmt: skip
    ids = np.stack(sequences)  # every prompt has PROMPT_CHARS characters: one length
    nll = np.zeros(len(ids))
    for first in range(0, len(ids), 256):
        batch = ids[first : first + 256]
        eps = np.zeros((batch.shape[1] - 1, len(batch), scorer.config.latent_size), np.float32)
        logp = log_softmax(teacher_forced_logits(scorer, batch[:, :-1], eps))  # [T, B, V]
        targets = batch[:, 1:].T
        picked = np.take_along_axis(logp, targets[..., None], axis=2)[..., 0]  # [T, B]
        nll[first : first + len(batch)] = -picked[PROMPT_CHARS:].mean(axis=0)  # the continuation only
    return nll.reshape(len(chosen), SAMPLES).mean(axis=1)


def bootstrap(values: list[np.ndarray], rng: np.random.Generator) -> tuple[float, float, float]:
    """Mean over seeds of the mean over prompts, and its 2.5-97.5% bootstrap interval.  Two levels: each
    resample draws the training seeds with replacement, then the prompts (the same ones for every seed), so
    the band holds the spread between seeds as well as between prompts: two seeds that disagree widen it."""
    stacked = np.stack(values)  # [seeds, prompts]
    seeds, prompts = stacked.shape
    seed_draws = rng.integers(0, seeds, (BOOTSTRAP, seeds))
    prompt_draws = rng.integers(0, prompts, (BOOTSTRAP, prompts))
    means = stacked[seed_draws[:, :, None], prompt_draws[:, None, :]].mean(axis=(1, 2))
    low, high = np.percentile(means, [2.5, 97.5])
    return float(stacked.mean()), float(low), float(high)


def at_matched_diversity(points: list[dict], curves: dict[str, list[dict]], quality: str) -> list[dict]:
    """Each point against reference curves at the same diversity: on each curve (its points in order of
    distinct-4) whose distinct-4 range holds the point's, the curve's mean and band interpolated linearly at
    that distinct-4; the best (lowest) curve there is the one compared.  The verdict is "better" or "worse"
    only where the point's band and the curve's interpolated band do not overlap."""
    out = []
    for r in points:
        x = r["distinct4"][0]
        candidates = []
        for key, curve in curves.items():
            curve = sorted(curve, key=lambda p: p["distinct4"][0])
            xs = [p["distinct4"][0] for p in curve]
            if xs[0] <= x <= xs[-1]:
                band = [float(np.interp(x, xs, [p[quality][i] for p in curve])) for i in range(3)]
                candidates.append((band[0], key, band))
        row = {"setting": r["setting"], "distinct4": x, "value": r[quality], "reference": None, "curve": None,
               "verdict": "outside the reference's diversity range"}  # fmt: skip
        if candidates:
            _, key, band = min(candidates, key=lambda c: c[0])
            row.update(reference=band, curve=key)
            row["verdict"] = ("better" if r[quality][2] < band[1] else "worse" if r[quality][1] > band[2] else
                              "within the bands")  # fmt: skip
        out.append(row)
    return out


def comparisons(results: list[dict], quality: str) -> dict[str, list[dict]]:
    """The two questions at matched diversity: is any VRNN setting better than the GRU (its curves with and
    without top-p), and does latent temperature buy the VRNN more than its own temperature does (its
    latent-temperature-1 curve, where only the ordinary temperature moves)?"""
    gru: dict[str, list[dict]] = {}
    for r in results:
        if r["arm"] == "gru":
            gru.setdefault(f"GRU, top-p {r['setting'].get('top_p') or 'none'}", []).append(r)
    vrnn = [r for r in results if r["arm"] == "vrnn"]
    own = {"VRNN, latent T 1.0": [r for r in vrnn if r["setting"]["latent_temperature"] == 1.0]}
    latent = [r for r in vrnn if r["setting"]["latent_temperature"] != 1.0]
    return {"vrnn_vs_gru": at_matched_diversity(vrnn, gru, quality),
            "latent_vs_temperature": at_matched_diversity(latent, own, quality)}  # fmt: skip


def knob(arm: str, setting: dict) -> str:
    """The setting's knob besides the temperature: top-p for the GRU, latent temperature for the VRNN."""
    if arm == "vrnn":
        return f"latent T {setting['latent_temperature']}"
    return f"top-p {setting['top_p']}" if setting.get("top_p") else "top-p none"


def curve_name(arm: str, setting: dict) -> str:
    """The setting's curve in the figure: every knob but the temperature, which runs along it."""
    return f"{arm}, {knob(arm, setting)}"


def label(arm: str, setting: dict) -> str:
    """The setting's name in the tables: arm, temperature, then its other knob."""
    return f"{arm}, T {setting['temperature']}, {knob(arm, setting)}"


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, quality in zip(axes, ("ngram_nll", "model_nll"), strict=True):
        curves: dict[str, list[dict]] = {}
        for r in results:
            curves.setdefault(curve_name(r["arm"], r["setting"]), []).append(r)
        for key, points in curves.items():
            points.sort(key=lambda r: r["setting"]["temperature"])
            x = [p["distinct4"][0] for p in points]
            y = [p[quality][0] for p in points]
            xerr = [[p["distinct4"][0] - p["distinct4"][1] for p in points],
                    [p["distinct4"][2] - p["distinct4"][0] for p in points]]  # fmt: skip
            yerr = [[p[quality][0] - p[quality][1] for p in points], [p[quality][2] - p[quality][0] for p in points]]
            style = "-" if key.startswith("gru") else "--"
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o" + style, capsize=2, label=key, markersize=3)
        ax.set_xlabel("diversity: distinct 4-grams over a prompt's 4 samples (higher: more diverse)")
        ax.set_ylabel(f"quality: {'7-gram Kneser-Ney' if quality == 'ngram_nll' else 'other-seed model'} "
                      "NLL, nats/char (lower: better)")  # fmt: skip
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle("Quality against diversity; points: temperature 0.6, 0.8, 1.0, 1.2; bands: 95% bootstrap")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_outputs(report: dict, out: Path) -> None:
    """results.json, table.md (every setting, then the VRNN against the GRU at matched diversity) and
    quality-diversity.png in `out`, from the report (main's, or results.json read back with --render)."""
    report["matched_diversity"] = {q: comparisons(report["results"], q) for q in ("ngram_nll", "model_nll")}
    (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = ["| setting | seeds | 7-gram NLL | other-seed NLL | distinct-4 | 4-gram entropy | self-similarity | "
             "memorised 32-char spans |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["results"]:
        cells = [f"{r[m][0]:.3f} [{r[m][1]:.3f}, {r[m][2]:.3f}]" for m in ("ngram_nll", "model_nll", "distinct4",
                 "entropy4", "self_similarity")]  # fmt: skip
        mem = r["memorised"]
        cells.append(f"{100 * mem[0]:.2f}% [{100 * mem[1]:.2f}, {100 * mem[2]:.2f}]")
        lines.append(f"| {label(r['arm'], r['setting'])} | {r['seeds']} | " + " | ".join(cells) + " |")
    titles = {
        "vrnn_vs_gru": "The VRNN against the GRU",
        "latent_vs_temperature": "Latent temperature against the VRNN's own temperature (latent T 1)",
    }
    for quality, tables in report["matched_diversity"].items():
        for question, rows in tables.items():
            lines += ["", f"{titles[question]}, at the same distinct-4 ({quality}, lower is better):", "",
                      "| setting | distinct-4 | its NLL | reference, interpolated | reference | verdict |",
                      "|---|---|---|---|---|---|"]  # fmt: skip
            for m in rows:
                ref = m["reference"]
                ref_text = f"{ref[0]:.3f} [{ref[1]:.3f}, {ref[2]:.3f}]" if ref else "—"
                value = f"{m['value'][0]:.3f} [{m['value'][1]:.3f}, {m['value'][2]:.3f}]"
                lines.append(f"| {label('vrnn', m['setting'])} | {m['distinct4']:.3f} | {value} | {ref_text} "
                             f"| {m['curve'] or '—'} | {m['verdict']} |")  # fmt: skip
    (out / "table.md").write_text("\n".join(lines) + "\n")
    plot(report["results"], out / "quality-diversity.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--model", action="append", default=[], help="ARM=CHECKPOINT (arm: gru or vrnn)")
    parser.add_argument("--scorer", help="a checkpoint of another seed: the second scorer")
    parser.add_argument("--out", type=Path, default=HERE / "latent-quality")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--render", action="store_true", help="rewrite table and figure from --out's results.json")
    args = parser.parse_args()
    if args.render:
        write_outputs(json.loads((args.out / "results.json").read_text()), args.out)
        return
    if not args.model or not args.scorer:
        parser.error("--model (at least one) and --scorer are needed unless --render")
    text = args.corpus.read_text(encoding="utf-8")
    train = text[: split_bounds(len(text), "train")[1]]
    started = time.time()
    ngram = KneserNey.fit(train, order=NGRAM_ORDER)
    spans = {train[i : i + SPAN] for i in range(len(train) - SPAN + 1)}
    chosen = prompts(text)
    measured: dict[tuple[str, int], list[np.ndarray]] = {}
    arms = {}
    with tempfile.TemporaryDirectory() as scratch:
        scorer = OnnxCell(export(args.scorer, Path(scratch)), threads=args.threads, batch=256)
        for entry in args.model:
            arm, checkpoint = entry.split("=", 1)
            cell = OnnxCell(export(checkpoint, Path(scratch)), threads=args.threads, batch=PROMPTS * SAMPLES)
            arms.setdefault(arm, []).append(checkpoint)
            for i, setting in enumerate(SETTINGS[arm]):
                options = SamplingOptions(**setting)
                samples = generate(cell, chosen, options)
                metrics = per_prompt(samples, chosen, ngram, scorer, spans)
                measured.setdefault((arm, i), []).append(metrics)
                print(f"{Path(checkpoint).name} {label(arm, setting)}: n-gram NLL {metrics['ngram_nll'].mean():.3f}, "
                      f"model NLL {metrics['model_nll'].mean():.3f}, distinct-4 {metrics['distinct4'].mean():.3f}, "
                      f"memorised {100 * metrics['memorised'].mean():.2f}%", flush=True)  # fmt: skip
    rng = np.random.default_rng(0)
    results = []
    for (arm, i), per_seed in measured.items():
        row = {"arm": arm, "setting": SETTINGS[arm][i], "seeds": len(per_seed)}
        for metric in per_seed[0]:
            row[metric] = bootstrap([m[metric] for m in per_seed], rng)
        results.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"date": datetime.date.today().isoformat(), "corpus": args.corpus.name, "models": arms,
              "scorer": args.scorer, "prompts": PROMPTS, "prompt_chars": PROMPT_CHARS, "length": LENGTH,
              "samples_per_prompt": SAMPLES, "ngram_order": NGRAM_ORDER, "span": SPAN, "bootstrap": BOOTSTRAP,
              "minutes": (time.time() - started) / 60, "results": results}  # fmt: skip
    write_outputs(report, args.out)
    print(f"wrote {args.out}/results.json, table.md, quality-diversity.png")


if __name__ == "__main__":
    main()
