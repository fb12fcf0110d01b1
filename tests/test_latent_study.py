"""The latent study's protocol (benchmarks/latent_study.py): which runs it plans and in what order, how each
arm's dropout is chosen (seed 1, the first half's score only, bracketed by widening the grid), the final
table's arithmetic, and which missing scores a relaunch adds (a GRU's bounds are its exact NLL; a VRNN without
its checkpoint is left as it is)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import latent_study
from latent_study import chosen_dropouts, complete_scores, final_table, planned, tuning_grid


def run(arm: str, dropout: str, seed: str, select: float, report: float = 1.5, unseen: float = 1.6) -> dict:
    latent = 0 if arm == "gru" else 32
    return {"arm": arm, "dropout": float(dropout), "seed": int(seed), "select_iwae_nats": select,
            "iwae_nats": report, "elbo_nats": report + 0.01 * bool(latent), "kl_nats": 0.02 * bool(latent),
            "unseen_iwae_nats": unseen, "active_units_kl": 0, "latent_size": latent, "best_step": 2000}  # fmt: skip


def results_of(*runs: dict) -> dict[str, dict]:
    return {f"{r['arm']}-d{r['dropout']:.1f}-s{r['seed']}": r for r in runs}


def test_the_grid_starts_at_0_4_0_5_0_3_and_chooses_by_the_first_half_only():
    assert tuning_grid({}, "gru") == (["0.4", "0.5", "0.3"], None)
    # 0.3 has the worst report half but the best first half: the report half plays no part
    results = results_of(run("gru", "0.4", "1", 1.42, 1.50), run("gru", "0.5", "1", 1.43, 1.50),
                         run("gru", "0.3", "1", 1.41, 1.60), run("gru", "0.2", "1", 1.415, 1.40))  # fmt: skip
    assert tuning_grid(results, "gru") == (["0.4", "0.5", "0.3", "0.2"], "0.3")


def test_a_best_at_the_edge_widens_the_grid_until_bracketed_or_at_the_limit():
    results = results_of(run("filtering", "0.4", "1", 1.43), run("filtering", "0.5", "1", 1.42),
                         run("filtering", "0.3", "1", 1.44))  # fmt: skip
    assert tuning_grid(results, "filtering") == (["0.4", "0.5", "0.3", "0.6"], None)
    results |= results_of(run("filtering", "0.6", "1", 1.41))
    assert tuning_grid(results, "filtering") == (["0.4", "0.5", "0.3", "0.6", "0.7"], None)
    results |= results_of(run("filtering", "0.7", "1", 1.40))  # best at 0.7, the limit: chosen there
    assert tuning_grid(results, "filtering") == (["0.4", "0.5", "0.3", "0.6", "0.7"], "0.7")


def test_the_plan_completes_each_arm_grid_then_seeds_the_gru_first():
    assert planned({}, {})[:3] == [("gru", "0.4", "1"), ("gru", "0.5", "1"), ("gru", "0.3", "1")]
    grid = (("0.4", 1.40), ("0.5", 1.41), ("0.3", 1.41))  # seed 1 of each arm: 0.4 chosen
    results = results_of(*(run(arm, d, "1", s) for arm in ("gru", "filtering", "smoothing") for d, s in grid))
    chosen = chosen_dropouts(results, {"smoothing": "0.5"})  # --choose overrides the tuned choice
    assert chosen == {"gru": "0.4", "filtering": "0.4", "smoothing": "0.5"}
    todo = [r for r in planned(results, chosen) if latent_study.run_name(*r) not in results]
    assert todo == [("gru", "0.4", "2"), ("gru", "0.4", "3"), ("filtering", "0.4", "2"), ("filtering", "0.4", "3"),
                    ("smoothing", "0.5", "2"), ("smoothing", "0.5", "3")]  # fmt: skip
    # an arm's seeds come before the next arm's grid: the filtering comparison is whole first
    grids = [run(arm, d, "1", s) for arm in ("gru", "filtering") for d, s in grid]
    results = results_of(*grids, run("smoothing", "0.4", "1", 1.40))
    todo = [r for r in planned(results, chosen_dropouts(results, {})) if latent_study.run_name(*r) not in results]
    assert todo == [("gru", "0.4", "2"), ("gru", "0.4", "3"), ("filtering", "0.4", "2"), ("filtering", "0.4", "3"),
                    ("smoothing", "0.5", "1"), ("smoothing", "0.3", "1")]  # fmt: skip


def test_the_final_table_differences_and_their_spread():
    results = results_of(run("gru", "0.3", "1", 1.41, 1.50), run("gru", "0.3", "2", 1.41, 1.52),
                         run("filtering", "0.5", "1", 1.42, 1.53), run("filtering", "0.5", "2", 1.42, 1.57),
                         run("filtering", "0.3", "1", 1.43, 1.40))  # fmt: skip
    table = final_table(results, {"gru": "0.3", "filtering": "0.5"})
    row = next(line for line in table.splitlines() if line.startswith("| filtering | −IWAE-64 second half"))
    # means 1.55 and 1.51; sds 0.02*sqrt(2) and 0.01*sqrt(2): a seed's difference sd sqrt(0.0008 + 0.0002)
    cells = [cell.strip() for cell in row.split("|")[1:-1]]
    assert cells[2:] == ["+0.0400", "0.0316", "0.0224", "no", "+0.0400 ± 0.0141 (2)"]  # pairs: 0.03, 0.05
    assert "| filtering | 0.5 | 1, 2 | 1.4200 ± 0.0000 |" in table  # the d0.3 run is not at the choice


def test_the_final_table_gives_minutes_to_the_best_step_at_the_measured_step_time():
    gru = [run("gru", "0.3", seed, 1.41) for seed in ("1", "2")]
    gru[1]["best_step"] = 2600  # 2000 and 2600 steps of 0.6 s: 20 and 26 minutes
    table = final_table(results_of(*gru), {"gru": "0.3"}, {"gru": 0.6})
    assert table.splitlines()[2].endswith("| 2000, 2600 | 23 ± 4 |")
    assert final_table(results_of(*gru), {"gru": "0.3"}).splitlines()[2].endswith("| 2000, 2600 | — |")


def test_an_arm_with_one_seed_shows_its_values_without_a_spread():
    table = final_table(results_of(run("smoothing", "0.1", "1", 1.40, 1.53)), {"smoothing": "0.1"}, {"smoothing": 1.2})
    row = table.splitlines()[2]
    assert row.startswith("| smoothing | 0.1 | 1 | 1.4000 | ") and "nan" not in row and "±" not in row


@pytest.fixture
def study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(latent_study, "RESULTS", tmp_path / "results.json")
    calls = []

    def evaluate(args, env, text, best, *options):
        calls.append((Path(text).name, best.name, options))
        summary = {"elbo_nats": 1.7, "iwae_nats": 1.65, "kl_nats": 0.02, "chars": 100, "smc_nats": 1.64,
                   "smc_resampling_rate": 0.3}  # fmt: skip
        return ["vrnn-eval", text, *options], summary

    monkeypatch.setattr(latent_study, "evaluate", evaluate)
    args = argparse.Namespace(out=tmp_path, corpus=str(tmp_path / "corpus.txt"), threads=1, frozen=None)
    return args, calls


def test_a_relaunch_adds_a_vrnns_missing_bounds_once_and_saves_each(study):
    args, calls = study
    (args.out / "filtering-d0.5-s1.best.pt").write_bytes(b"")
    results = results_of(run("filtering", "0.5", "1", 1.42))
    del results["filtering-d0.5-s1"]["unseen_iwae_nats"]
    complete_scores(args, {}, results, "filtering-d0.5-s1", args.out / "unseen-play.txt")
    r = results["filtering-d0.5-s1"]
    assert (r["unseen_iwae_nats"], r["smc_nats"], r["unseen_smc_nats"]) == (1.65, 1.64, 1.64)
    assert [(text, options) for text, _, options in calls] == [
        ("unseen-play.txt", ()),
        ("corpus.txt", ("--split", "val-second-half", *latent_study.SMC)),
        ("unseen-play.txt", latent_study.SMC),
    ]
    assert json.loads(latent_study.RESULTS.read_text()) == results
    complete_scores(args, {}, results, "filtering-d0.5-s1", args.out / "unseen-play.txt")
    assert len(calls) == 3  # nothing left to add


def test_a_grus_bounds_are_its_exact_nll_and_a_lost_checkpoint_is_left_alone(study):
    args, calls = study
    results = results_of(run("gru", "0.3", "1", 1.41, 1.52, 1.63), run("filtering", "0.4", "1", 1.43))
    complete_scores(args, {}, results, "gru-d0.3-s1", args.out / "unseen-play.txt")
    gru = results["gru-d0.3-s1"]
    assert (gru["smc_nats"], gru["unseen_smc_nats"], gru["smc_command"]) == (1.52, 1.63, "exact NLL")
    complete_scores(args, {}, results, "filtering-d0.4-s1", args.out / "unseen-play.txt")  # no best.pt here
    assert "smc_nats" not in results["filtering-d0.4-s1"]
    assert calls == []
