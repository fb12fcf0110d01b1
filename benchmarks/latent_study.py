"""The latent, settled: the GRU, the filtering VRNN and the smoothing VRNN, fairly regularised, several seeds.

    python benchmarks/latent_study.py CORPUS --out runs/study [--only NAME ...]   # train and score, resumable
    python benchmarks/latent_study.py CORPUS --out runs/study --table             # the tuning and final tables

Every run: the `shakespeare` preset at the bundled size with --dropout-scope decoder-input (dropout masks the
decoder's whole input, the latent's path included, so no model has a path around the regulariser), STEPS
steps for every arm, the checkpoint chosen on the first half of the validation split by -IWAE-8
(--select-on val-first-half --select-by iwae), and that checkpoint scored on the second half, which neither
training, selection nor tuning saw (vrnn-eval --split val-second-half -k 64), and apart on that half's
last 34,655 characters: the opening of The Tempest, a play of which the training split has not one line.
On both, a VRNN is also scored by the tighter SMC bound with 64 particles (vrnn-eval --estimator smc); a
GRU's bounds are all its exact NLL.
The dropout of each arm is tuned on seed 1 by the first half's score (0.3, 0.4, 0.5, widened by 0.1 while
the best is at an edge); the final table takes the chosen dropout over three seeds.

One training at a time (two would share the cores and distort each other's speed), from a frozen copy of the
package (--frozen, put first on PYTHONPATH), so that work on the tree does not change a run half-way.  Results
go to benchmarks/results-latent-study.json (one entry per run, with its command lines) and every run's
metrics to benchmarks/latent-study/; a run already scored is skipped, an interrupted one resumed.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from vrnn.runtime.splits import split_bounds

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results-latent-study.json"
METRICS = HERE / "latent-study"
STEP_TIME = HERE / "results-latent-step-time.json"  # written by latent_step_time.py
STEPS = 3000
ARMS: dict[str, list[str]] = {
    "gru": ["--latent-size", "0"],
    "filtering": ["--posterior", "filtering"],
    "smoothing": ["--posterior", "smoothing", "--backward-size", "256"],
}
COMMON = ["--preset", "shakespeare", "--steps", str(STEPS), "--dropout-scope", "decoder-input",
          "--select-on", "val-first-half", "--select-by", "iwae", "--select-samples", "8", "--quiet"]  # fmt: skip
# The dropout grid, tuned on seed 1 (0.4, the preset's, first), widened by 0.1 while an arm's best is at
# its edge; then seeds 2 and 3 at each arm's choice.
DROPOUTS = ("0.4", "0.5", "0.3")
DROPOUT_LIMITS = (0.1, 0.7)
SEEDS = ("1", "2", "3")
# The report half holds the end of The Taming of the Shrew, then the first 34,655 characters of The Tempest,
# a play of which the training split has not one line: scored apart, it is this corpus's unseen-play test.
UNSEEN_PLAY_START = "\n\nMaster:\nBoatswain!\n"


def run_name(arm: str, dropout: str, seed: str) -> str:
    return f"{arm}-d{dropout}-s{seed}"


def tuning_grid(results: dict[str, dict], arm: str) -> tuple[list[str], str | None]:
    """An arm's dropouts to try on seed 1, and its choice once they are all scored: the lowest selection score
    (-IWAE-8 on the first half: the report half plays no part).  A best at the grid's edge adds the next
    value beyond it (within DROPOUT_LIMITS), so that the choice is bracketed."""
    grid = list(DROPOUTS)
    while True:
        scored = [results.get(run_name(arm, d, "1")) for d in grid]
        if not all(scored):
            return grid, None
        best = min(scored, key=lambda r: r["select_iwae_nats"])["dropout"]
        lowest, highest = min(map(float, grid)), max(map(float, grid))
        beyond = round(best - 0.1, 1) if best == lowest else round(best + 0.1, 1) if best == highest else None
        if beyond is None or not DROPOUT_LIMITS[0] <= beyond <= DROPOUT_LIMITS[1]:
            return grid, f"{best:.1f}"
        grid.append(f"{beyond:.1f}")


def chosen_dropouts(results: dict[str, dict], explicit: dict[str, str]) -> dict[str, str]:
    """Each arm's dropout: the one named by --choose, else its tuning grid's choice once there is one."""
    chosen = dict(explicit)
    for arm in ARMS:
        choice = tuning_grid(results, arm)[1]
        if arm not in chosen and choice is not None:
            chosen[arm] = choice
    return chosen


def planned(results: dict[str, dict], chosen: dict[str, str]) -> list[tuple[str, str, str]]:
    """(arm, dropout, seed) of every run in the order they are trained: one arm complete before the next,
    its tuning grid and then its seeds; the GRU first (its runs are the shortest, and its seeds give the
    quality study its scorer early), then the filtering VRNN, so each comparison with the GRU is whole as soon
    as it can be.  An arm without a chosen dropout yet has no seed runs."""

    def seeds(arm: str) -> list[tuple[str, str, str]]:
        return [(arm, chosen[arm], s) for s in SEEDS[1:]] if arm in chosen else []

    def tuning(arm: str) -> list[tuple[str, str, str]]:
        return [(arm, d, "1") for d in tuning_grid(results, arm)[0]]

    return [run for arm in ARMS for run in tuning(arm) + seeds(arm)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus")
    parser.add_argument("--out", type=Path, default=Path("runs/study"))
    parser.add_argument("--only", nargs="*", default=None, help="run names (default: every planned run)")
    parser.add_argument("--choose", nargs="*", default=[], help="ARM=DROPOUT: instead of the tuned choice")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frozen", type=Path, default=None, help="a frozen copy of the package for PYTHONPATH")
    parser.add_argument("--table", action="store_true", help="print the results as markdown tables and stop")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    explicit = dict(item.split("=", 1) for item in args.choose)
    if args.table:
        print(tables(results, explicit))
        return
    env = dict(os.environ)
    if args.frozen is not None:  # run from there: the working directory comes first on sys.path
        env["PYTHONPATH"] = f"{args.frozen.resolve()}{os.pathsep}{env.get('PYTHONPATH', '')}"
    args.corpus, args.out = str(Path(args.corpus).resolve()), args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    METRICS.mkdir(exist_ok=True)
    unseen = unseen_play(args.corpus, args.out)
    for name in results:  # runs scored before a score existed, if their model is here
        complete_scores(args, env, results, name, unseen)
    while True:  # the plan grows as arms get their dropout chosen, so it is recomputed after every run
        chosen = chosen_dropouts(results, explicit)
        todo = [run for run in planned(results, chosen) if run_name(*run) not in results]
        todo = [run for run in todo if args.only is None or run_name(*run) in args.only]
        if not todo:
            print(f"nothing left to train; dropouts chosen: {chosen}", flush=True)
            return
        arm, dropout, seed = todo[0]
        name = run_name(arm, dropout, seed)
        print(f"{name}: training ({len(todo) - 1} more planned; chosen so far: {chosen})", flush=True)
        results[name] = train_and_score(args, env, arm, dropout, seed, name)
        save(results, args.corpus)
        complete_scores(args, env, results, name, unseen)
        r = results[name]
        print(f"{name}: select {r['select_iwae_nats']:.4f}, report -ELBO {r['elbo_nats']:.4f} -IWAE-64 "
              f"{r['iwae_nats']:.4f} KL {r['kl_nats']:.4f}, best step {r['best_step']}, "
              f"{r['train_wall_s'] / 60:.1f} min", flush=True)  # fmt: skip


def save(results: dict[str, dict], corpus: str) -> None:
    """Write every run's record to the committed results file (after each run and each score added), with no
    path of this machine in it (see `portable`; `results` is made portable in place, so what is kept in
    memory is what the file holds)."""
    digest = hashlib.sha256(Path(corpus).read_bytes()).hexdigest() if Path(corpus).is_file() else None
    for record in results.values():  # (each record updated, not replaced: callers hold them)
        record.update({**portable(record, corpus), "corpus": {"name": Path(corpus).name, "sha256": digest}})
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def portable(value: object, corpus: str) -> object:
    """`value` with its absolute paths made portable: the corpus by its file name (its sha256 is recorded
    beside), a path inside the repository relative to it, any other by its file name."""
    if isinstance(value, dict):
        return {key: portable(item, corpus) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item, corpus) for item in value]
    if isinstance(value, str) and os.path.isabs(value):
        path = Path(value)
        return str(path.relative_to(REPO)) if value != corpus and path.is_relative_to(REPO) else path.name
    return value


def unseen_play(corpus: str, out: Path) -> Path | None:
    """The report half from The Tempest's first line on, written to OUT/unseen-play.txt (None: the corpus has
    no such line, and runs get no unseen-play score)."""
    text = Path(corpus).read_text(encoding="utf-8")
    start, end = split_bounds(len(text), "val-second-half")
    at = text.find(UNSEEN_PLAY_START, start, end)
    if at < 0:
        return None
    path = out / "unseen-play.txt"
    path.write_text(text[at + 2 : end], encoding="utf-8")
    return path


def evaluate(args: argparse.Namespace, env: dict[str, str], text: str, best: Path, *options: str) -> tuple[list, dict]:
    """vrnn-eval of a best checkpoint on `text` (K = 64, 256-character windows), run from the frozen package:
    its command line as recorded, and its JSON summary."""
    score = [sys.executable, "-m", "vrnn.training.eval_cli", text, "-c", str(best), *options, "--window", "256",
             "--iwae-samples", "64", "--threads", str(args.threads), "--json"]  # fmt: skip
    done = subprocess.run(score, check=True, capture_output=True, text=True, env=env, cwd=args.frozen or HERE)
    return ["vrnn-eval", *score[3:]], json.loads(done.stdout)


def complete_scores(
    args: argparse.Namespace, env: dict[str, str], results: dict[str, dict], name: str, unseen: Path | None
) -> None:
    """Add to a scored run what it lacks and can still get, saving after each: the unseen play's -ELBO and
    -IWAE-64 and the -SMC-64 bound on the report half and on the unseen play (a VRNN's from its best
    checkpoint, if here; a GRU's bounds are all its exact NLL, scored already)."""
    r, best = results[name], args.out / f"{name}.best.pt"
    exact = r["latent_size"] == 0
    for key in ("unseen_iwae_nats", "smc_nats", "unseen_smc_nats"):
        if key in r or (key.startswith("unseen") and unseen is None):
            continue
        if exact and key != "unseen_iwae_nats":  # every bound of a GRU is its exact NLL, scored already
            if key.replace("smc", "iwae") not in r:
                continue
            r.update({key: r[key.replace("smc", "iwae")], key.replace("nats", "command"): "exact NLL"})
        elif not best.exists():
            print(f"{name}: no {best.name} here for its {key}", flush=True)
            continue
        elif key == "unseen_iwae_nats":
            r.update(score_unseen(args, env, best, unseen))
        elif key == "smc_nats":
            r.update(score_smc(args, env, best, args.corpus, "--split", "val-second-half"))
        else:
            r.update({f"unseen_{k}": value for k, value in score_smc(args, env, best, str(unseen)).items()})
        save(results, args.corpus)
        print(f"{name}: {key} {r[key]:.4f}", flush=True)


def score_unseen(args: argparse.Namespace, env: dict[str, str], best: Path, unseen: Path) -> dict:
    """A best checkpoint's scores on the unseen play (K = 64, as on the report half)."""
    command, summary = evaluate(args, env, str(unseen), best)
    return {"unseen_command": command, "unseen_elbo_nats": summary["elbo_nats"],
            "unseen_iwae_nats": summary["iwae_nats"], "unseen_kl_nats": summary["kl_nats"],
            "unseen_chars": summary["chars"]}  # fmt: skip


# vrnn-eval --estimator smc, 16 windows of 64 particles per pass (its default batch holds one window)
SMC = ("--estimator", "smc", "--batch-size", "1024")


def score_smc(args: argparse.Namespace, env: dict[str, str], best: Path, text: str, *split: str) -> dict:
    """A VRNN's best checkpoint's -SMC-64 bound on `text`."""
    command, summary = evaluate(args, env, text, best, *split, *SMC)
    return {"smc_nats": summary["smc_nats"], "smc_resampling_rate": summary["smc_resampling_rate"],
            "smc_command": command}  # fmt: skip


def train_and_score(
    args: argparse.Namespace, env: dict[str, str], arm: str, dropout: str, seed: str, name: str
) -> dict:
    """Train one run (resuming one that was interrupted), score its best checkpoint on the second half."""
    ckpt = args.out / f"{name}.pt"
    options = [*ARMS[arm], "--dropout", dropout, "--seed", seed]
    train = [sys.executable, "-m", "vrnn.training.cli", args.corpus, "-o", str(ckpt), *COMMON, *options,
             "--threads", str(args.threads)]  # fmt: skip
    if ckpt.exists():
        train.append("--resume")
    started = time.perf_counter()
    cwd = args.frozen or HERE
    subprocess.run(train, check=True, env=env, cwd=cwd)
    wall = time.perf_counter() - started
    best = ckpt.with_name(f"{name}.best.pt")
    score_command, summary = evaluate(args, env, args.corpus, best, "--split", "val-second-half")
    history = [json.loads(line) for line in ckpt.with_name(f"{name}.metrics.jsonl").read_text().splitlines()]
    (METRICS / f"{name}.metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in history))
    best_row = min(history, key=lambda row: row["val_iwae_nats"])
    return {
        "arm": arm,
        "dropout": float(dropout),
        "seed": int(seed),
        "train_command": ["vrnn-train", *train[3:]],
        "score_command": score_command,
        "select_iwae_nats": best_row["val_iwae_nats"],  # -IWAE-8 on the first half at the chosen step
        "select_elbo_nats": best_row["val_elbo_nats"],
        "best_step": best_row["step"],
        "last_step_select_iwae_nats": history[-1]["val_iwae_nats"],
        "elbo_nats": summary["elbo_nats"],  # the second half, K = 64
        "iwae_nats": summary["iwae_nats"],
        "nll_nats": summary["nll_nats"],
        "kl_nats": summary["kl_nats"],
        "active_units_kl": summary["active_units_kl"],
        "active_units_variance": summary["active_units"],
        "latent_size": summary["latent_size"],
        "chars": summary["chars"],
        "chars_per_s": statistics.median(row["chars_per_s"] for row in history),
        "train_wall_s": wall,  # this invocation only: a resumed run's is its tail
        "threads": args.threads,
        "date": datetime.date.today().isoformat(),
    }


def tables(results: dict[str, dict], explicit: dict[str, str]) -> str:
    """Every table docs/latent.md shows from the study (--table prints them): each run, the final table with
    its differences, and each VRNN against the GRU at the same dropout."""
    step_s = json.loads(STEP_TIME.read_text())["step_s"] if STEP_TIME.exists() else None
    final = final_table(results, chosen_dropouts(results, explicit), step_s)
    return f"{tuning_table(results)}\n\n{final}\n\n{same_dropout_table(results)}"


def tuning_table(results: dict[str, dict]) -> str:
    """Every run: selection score (first half), report scores (second half) and the unseen play's.  Its
    speed is the median of its logged chars/s (on the threads given: walls restart with every resume and do not
    compare; latent_step_time.py measures the arms' step times side by side)."""
    rows = [
        "| run | dropout | seed | −IWAE-8 first half (selects) | −ELBO second half | −IWAE-64 second half "
        "| −IWAE-64 unseen play | KL/char | active (KL) | best step | chars/s (median) | threads | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in sorted(results.items()):
        unseen = f"{r['unseen_iwae_nats']:.4f}" if "unseen_iwae_nats" in r else "—"
        rows.append(
            f"| {name} | {r['dropout']} | {r['seed']} | {r['select_iwae_nats']:.4f} | {r['elbo_nats']:.4f} "
            f"| {r['iwae_nats']:.4f} | {unseen} | {r['kl_nats']:.4f} | {r['active_units_kl']}/{r['latent_size']} "
            f"| {r['best_step']} | {r['chars_per_s']:,.0f} | {r['threads']} | {r['date']} |"
        )
    return "\n".join(rows)


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def show_mean_sd(values: list[float], digits: int) -> str:
    """A table cell: mean ± sd, or the one value alone (one seed has no spread to show)."""
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


SCORES = {  # the final table's columns: result key -> heading
    "select_iwae_nats": "−IWAE-8 first half (selects)",
    "elbo_nats": "−ELBO second half",
    "iwae_nats": "−IWAE-64 second half",
    "smc_nats": "−SMC-64 second half",
    "unseen_iwae_nats": "−IWAE-64 unseen play",
    "unseen_smc_nats": "−SMC-64 unseen play",
    "kl_nats": "KL/char",
}


def final_table(results: dict[str, dict], chosen: dict[str, str], step_s: dict[str, float] | None = None) -> str:
    """Each arm at its chosen dropout over its seeds (mean ± sd), with the training time to its best step at
    the step time latent_step_time.py measured for the arm in one process (`step_s`; the runs' own wall times
    do not compare: they were paused and shared the machine), then each VRNN's difference from the GRU on
    the report half and on the unseen play: the difference of the means, the sd of one seed's difference
    (the seeds' sds added in quadrature: the spread the verdict is judged by) and the standard error of the
    difference of means.  Last, as a secondary analysis declared before the VRNN seeds were in: the
    differences paired by seed (a seed fixes the batch order, the same for every arm), mean ± sd."""
    runs = {arm: sorted((r for r in results.values() if r["arm"] == arm and f"{r['dropout']:g}" == f"{float(d):g}"),
                        key=lambda r: r["seed"]) for arm, d in chosen.items()}  # fmt: skip
    rows = [f"| arm | dropout | seeds | {' | '.join(SCORES.values())} | active (KL) | best steps "
            "| minutes to best step |", "|---" * (len(SCORES) + 6) + "|"]  # fmt: skip

    def cell(arm_runs: list[dict], key: str) -> str:
        if not all(key in r for r in arm_runs):
            return "—"
        return show_mean_sd([r[key] for r in arm_runs], 4)

    for arm, arm_runs in runs.items():
        if not arm_runs:
            continue
        active = ", ".join(f"{r['active_units_kl']}/{r['latent_size']}" for r in arm_runs)
        steps = ", ".join(str(r["best_step"]) for r in arm_runs)
        seeds = ", ".join(str(r["seed"]) for r in arm_runs)
        scores = " | ".join(cell(arm_runs, key) for key in SCORES)
        minutes = "—"
        if step_s and arm in step_s:
            minutes = show_mean_sd([r["best_step"] * step_s[arm] / 60 for r in arm_runs], 0)
        rows.append(f"| {arm} | {chosen[arm]} | {seeds} | {scores} | {active} | {steps} | {minutes} |")
    gru = runs.get("gru", [])
    if len(gru) < 2:
        return "\n".join(rows)
    differences = []
    for key in ("iwae_nats", "smc_nats", "unseen_iwae_nats", "unseen_smc_nats"):
        if not all(key in r for r in gru):
            continue
        g_mean, g_sd = mean_sd([r[key] for r in gru])
        gru_by_seed = {r["seed"]: r[key] for r in gru}
        for arm, arm_runs in runs.items():
            if arm == "gru" or len(arm_runs) < 2 or not all(key in r for r in arm_runs):
                continue
            v_mean, v_sd = mean_sd([r[key] for r in arm_runs])
            diff, sd = v_mean - g_mean, (v_sd**2 + g_sd**2) ** 0.5
            se = (v_sd**2 / len(arm_runs) + g_sd**2 / len(gru)) ** 0.5
            beyond = "yes" if abs(diff) > 2 * sd else "no"
            pairs = [r[key] - gru_by_seed[r["seed"]] for r in arm_runs if r["seed"] in gru_by_seed]
            paired = "{:+.4f} ± {:.4f} ({})".format(*mean_sd(pairs), len(pairs)) if len(pairs) > 1 else "—"
            differences.append(f"| {arm} | {SCORES[key]} | {diff:+.4f} | {sd:.4f} | {se:.4f} | {beyond} | {paired} |")
    if differences:
        rows += ["", "| VRNN − GRU | on | difference of means | sd of a seed's difference | standard error "
                 "| beyond 2 sd | paired by seed: mean ± sd (pairs) |", "|---" * 7 + "|", *differences]  # fmt: skip
    return "\n".join(rows)


def same_dropout_table(results: dict[str, dict]) -> str:
    """Seed 1 of each VRNN against seed 1 of the GRU at the same dropout: the comparison with the regulariser
    held fixed, beside the final table's (each arm at its own tuned dropout)."""
    rows = ["| dropout | VRNN | VRNN − GRU, −IWAE-64 second half | VRNN − GRU, −IWAE-64 unseen play |",
            "|---|---|---|---|"]  # fmt: skip
    for d in sorted({f"{r['dropout']:.1f}" for r in results.values()}):
        gru = results.get(run_name("gru", d, "1"))
        for arm in (a for a in ARMS if a != "gru"):
            vrnn = results.get(run_name(arm, d, "1"))
            if gru is None or vrnn is None:
                continue
            unseen = (f"{vrnn['unseen_iwae_nats'] - gru['unseen_iwae_nats']:+.4f}"
                      if "unseen_iwae_nats" in vrnn and "unseen_iwae_nats" in gru else "—")  # fmt: skip
            rows.append(f"| {d} | {arm} | {vrnn['iwae_nats'] - gru['iwae_nats']:+.4f} | {unseen} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
