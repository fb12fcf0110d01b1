"""vrnn-train --minutes: the fit of the steps and schedule to a wall-clock budget (vrnn.training.budget), with a
fake clock so that nothing here depends on how fast the machine is; and the validation lines printed above the
progress bar in a terminal."""

from __future__ import annotations

import io
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import bin_path

from vrnn.models.checkpoint import load_checkpoint
from vrnn.training import budget
from vrnn.training.budget import (
    MEASURE_MIN_STEPS,
    MEASURE_SKIPPED_STEPS,
    MIN_FITTED_VAL_CHARS,
    RESERVE_SECONDS,
    VALIDATION_COST,
    VALIDATION_POINTS,
    Budget,
    Measurement,
    fit_budget,
    fitted_val_chars,
    validations_after,
)
from vrnn.training.cli import main as train_main
from vrnn.training.config import TrainConfig
from vrnn.training.trainer import Trainer, learning_rate

# The fake machine: every step takes STEP_S, every validation (with its checkpoint and plot) VALIDATION_S.
STEP_S, VALIDATION_S = 0.125, 2.0
COMMON = ["--preset", "tiny", "--seq-len", "16", "--seed", "3", "--threads", "1"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_machine(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """budget.clock() reads a clock that only the steps and validations move."""
    clock = FakeClock()
    monkeypatch.setattr(budget, "clock", clock)
    real_step, real_record = Trainer.train_step, Trainer._record

    def step(self: Trainer):
        result = real_step(self)
        clock.now += STEP_S
        return result

    def record(self: Trainer, *args, **kwargs):
        row = real_record(self, *args, **kwargs)
        clock.now += VALIDATION_S
        return row

    monkeypatch.setattr(Trainer, "train_step", step)
    monkeypatch.setattr(Trainer, "_record", record)
    return clock


def train(*args: str) -> None:
    train_main([*args, "--quiet"], standalone_mode=False)


def interrupted_at(step: int, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Run vrnn-train with `args`, sending it Ctrl-C right after optimizer step `step`: its exit status."""
    real = Trainer.train_step

    def interrupting(self: Trainer) -> object:
        result = real(self)
        if self.step == step:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_step", interrupting)
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with pytest.raises(SystemExit) as exit_info:
                train(*args)
        finally:
            signal.signal(signal.SIGINT, previous)
    return int(exit_info.value.code)


def run_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([bin_path("vrnn-train"), *args], capture_output=True, text=True, timeout=600)


# --- the arithmetic --------------------------------------------------------------------------------------------


def test_validations_after_counts_the_multiples_and_the_end() -> None:
    assert validations_after(23, 400, 134) == 3  # 134, 268 and the end
    assert validations_after(23, 402, 134) == 3  # 134, 268, 402: the end is a multiple
    assert validations_after(0, 100, 10) == 10
    assert validations_after(100, 100, 10) == 0  # nothing after the end


@pytest.mark.parametrize(("budget_s", "elapsed", "done"), [(600.0, 5.0, 23), (600.0, 37.5, 45), (600.0, 120.0, 23),
                                                           (120.0, 20.0, 100)])  # fmt: skip
def test_a_fitted_run_fills_the_budget_with_its_validations(budget_s: float, elapsed: float, done: int) -> None:
    """The steps and validations after the fit take what the budget leaves, less the reserve, to within a
    step and a validation; never more."""
    fit = fit_budget(budget_s, elapsed, 0.21, 3.5, done=done)
    left = budget_s - elapsed - max(RESERVE_SECONDS, 0.01 * budget_s)
    assert fit.validations == validations_after(done, fit.steps, fit.eval_every) <= VALIDATION_POINTS
    spent = (fit.steps - done) * 0.21 + fit.validations * 3.5
    assert left - 0.21 - 3.5 < spent <= left
    assert fit.expected_s == pytest.approx(elapsed + spent)
    points = min(VALIDATION_POINTS, math.floor(0.15 * left / 3.5))  # at most 15% of the time left validates
    assert fit.eval_every == math.ceil(fit.steps / points)


def test_validations_are_fewer_when_they_would_cost_much_of_the_time() -> None:
    fit = fit_budget(600.0, 10.0, 0.2, 30.0, done=23)  # ten of them would be half the budget
    assert fit.validations == math.floor(0.15 * (600 - 10 - 6) / 30) == 2
    assert fit.validations * 30 <= 0.15 * 600


def test_an_eval_every_given_is_kept_and_its_validations_are_counted() -> None:
    fit = fit_budget(600.0, 20.0, 0.2, 4.0, done=30, eval_every=100)
    left = 600.0 - 20.0 - 6.0
    assert fit.eval_every == 100

    def cost(total: int) -> float:
        return (total - 30) * 0.2 + validations_after(30, total, 100) * 4.0

    assert cost(fit.steps) <= left < cost(fit.steps + 1)  # the most steps that fit


def test_a_budget_spent_by_the_measurement_stops_where_it_is() -> None:
    fit = fit_budget(60.0, 75.0, 0.5, 3.0, done=23)
    assert fit.steps == 23 and fit.validations == 0
    assert "spent" in fit.describe(1.0, 100) and "--minutes" in fit.describe(1.0, 100)


def test_a_short_run_gets_a_shorter_warmup_unless_it_was_given() -> None:
    short = fit_budget(60.0, 5.0, 0.25, 1.0, done=23, warmup_steps=100, fit_warmup=True)
    assert short.steps < 400 and short.warmup_steps == max(short.steps // 4, 23) < 100
    assert "warm-up" in short.describe(1.0, 100)
    given = fit_budget(60.0, 5.0, 0.25, 1.0, done=23, warmup_steps=100, fit_warmup=False)
    assert given.warmup_steps == 100
    long = fit_budget(600.0, 5.0, 0.25, 1.0, done=23, warmup_steps=100, fit_warmup=True)
    assert long.warmup_steps == 100 and "warm-up" not in long.describe(10.0, 100)


def test_a_budget_validation_scores_what_a_share_of_the_budget_allows() -> None:
    # 0.25 s for 4,096 characters, a validated one costing VALIDATION_COST of a trained one; 1.5% of 10 minutes
    # is 9 s, that many characters (in thousands)
    chars = math.floor(9.0 / (0.25 / 4096 * VALIDATION_COST) / 1000) * 1000
    assert 100_000 < fitted_val_chars(600.0, 0.25, 4096, 1_000_000) == chars < 1_000_000
    assert fitted_val_chars(600.0, 0.25, 4096, 100_000) == 100_000  # never more than --val-chars allows
    assert fitted_val_chars(600.0, 0.25, 4096, 0) == chars  # 0: the whole split, which the budget bounds
    assert fitted_val_chars(600.0, 0.001, 4096, 1_000_000) == 1_000_000  # a fast machine: unchanged
    assert fitted_val_chars(60.0, 20.0, 4096, 1_000_000) == MIN_FITTED_VAL_CHARS


def measured_at(measuring: Measurement, step_s: float, first_s: float = 5.0) -> int:
    """The step where `measuring` has timed enough steps of `step_s` (the untimed first ones take `first_s`)."""
    now = 0.0
    for step in range(measuring.first_step + 1, measuring.first_step + 100_000):
        now += first_s if step <= measuring.first_step + MEASURE_SKIPPED_STEPS else step_s
        if measuring.after_step(step, now):
            return step
    raise AssertionError("never measured")


def test_the_measurement_skips_the_first_steps_and_times_enough_of_them() -> None:
    measuring = Measurement(Budget(10.0, started=0.0), first_step=0)
    # 4% of 10 minutes (less than 30 s): 24 s, 96 steps of 0.25 s, the slow first ones not counted
    assert measured_at(measuring, 0.25) == MEASURE_SKIPPED_STEPS + 96
    assert measuring.seconds_per_step == pytest.approx(0.25)
    assert measuring.timed_steps == (MEASURE_SKIPPED_STEPS + 1, MEASURE_SKIPPED_STEPS + 96)
    # fast steps: 1,000 of them and 5 s are enough; a short budget: MEASURE_MIN_STEPS steps at least
    assert measured_at(Measurement(Budget(10.0, started=0.0), 0), 1 / 256) == MEASURE_SKIPPED_STEPS + 1280
    # 20 steps of 1/16 s: 1.25 s, more than 4% of 30 s
    assert measured_at(Measurement(Budget(0.5, started=0.0), 0), 1 / 16) == MEASURE_SKIPPED_STEPS + MEASURE_MIN_STEPS


def test_slow_steps_are_timed_for_at_most_a_twentieth_of_the_budget() -> None:
    measuring = Measurement(Budget(1.0, started=0.0), first_step=40)  # a resumed run: its own first steps
    assert measured_at(measuring, 2.0) == 40 + MEASURE_SKIPPED_STEPS + 2  # 2 steps of 2 s: 4 s > 5% of 60 s
    assert measuring.seconds_per_step == pytest.approx(2.0)


# --- the trainer, on a fake clock -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_budget_run_ends_on_time_with_its_schedule_finished(
    tmp_path: Path, tiny_corpus: Path, fake_machine: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    start = fake_machine.now
    out = tmp_path / "b.pt"
    train(str(tiny_corpus), "-o", str(out), *COMMON, "--minutes", "1")
    payload = load_checkpoint(out)
    fit, tc = payload["metrics"]["budget"], TrainConfig.from_dict(payload["train_config"])
    # The fit is made from the fake machine's figures, after the skipped and timed steps and one validation.
    assert fit["seconds_per_step"] == STEP_S and fit["seconds_per_validation"] == VALIDATION_S
    assert fit["at_step"] == MEASURE_SKIPPED_STEPS + MEASURE_MIN_STEPS
    expected = fit_budget(60.0, fit["elapsed_s"], STEP_S, VALIDATION_S, fit["at_step"], None, 10, True)
    assert fit["elapsed_s"] == pytest.approx(fit["at_step"] * STEP_S + VALIDATION_S)
    assert (tc.steps, tc.eval_every, tc.minutes) == (expected.steps, expected.eval_every, 1.0)
    assert payload["step"] == tc.steps and tc.steps > 300
    # The run took what was predicted, within the budget and close to it.
    took = fake_machine.now - start
    assert took == pytest.approx(fit["expected_s"]) and 0.95 * 60 <= took <= 60
    # Every validation it promised, the measuring one first; the last at the end, with the schedule finished.
    steps = [row["step"] for row in payload["metrics"]["history"]]
    assert steps == [fit["at_step"], *range(tc.eval_every, tc.steps, tc.eval_every), tc.steps]
    assert learning_rate(tc.steps - 1, tc) == pytest.approx(tc.lr * tc.min_lr_ratio, rel=1e-3)
    assert learning_rate(tc.steps // 2, tc) < 0.8 * tc.lr  # on its way down mid-run, not still at the peak
    err = capsys.readouterr().err
    assert f"budget 1 min: {STEP_S:.3g} s/step and {VALIDATION_S:.3g} s per validation of " in err
    assert f"{tc.steps:,} steps (schedule re-fitted)" in err and f"step {fit['at_step']}/{tc.steps}:" in err


@pytest.mark.slow
def test_a_resumed_budget_run_finishes_the_same_schedule(
    tmp_path: Path, tiny_corpus: Path, fake_machine: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted after its fit and resumed with the same command, the run ends as the straight one did, bit for
    bit: the checkpoint holds the fitted steps, and the resumed run does not fit again."""
    straight, split = tmp_path / "straight.pt", tmp_path / "split.pt"
    train(str(tiny_corpus), "-o", str(straight), *COMMON, "--minutes", "1")
    assert interrupted_at(100, monkeypatch, str(tiny_corpus), "-o", str(split), *COMMON, "--minutes", "1") == 130
    assert load_checkpoint(split)["step"] == 100
    fake_machine.now += 1e6  # long after: a resumed run finishes its schedule, it does not fit a new one
    train(str(tiny_corpus), "-o", str(split), *COMMON, "--minutes", "1", "--resume")
    a, b = load_checkpoint(straight), load_checkpoint(split)
    assert a["metrics"]["budget"] == b["metrics"]["budget"] and b["step"] == a["step"] == a["train_config"]["steps"]
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name


@pytest.mark.slow
def test_a_run_stopped_before_its_fit_fits_when_resumed(
    tmp_path: Path, tiny_corpus: Path, fake_machine: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "early.pt"
    assert interrupted_at(10, monkeypatch, str(tiny_corpus), "-o", str(out), *COMMON, "--minutes", "1") == 130
    assert "budget" not in load_checkpoint(out)["metrics"]
    stepped = tmp_path / "stepped.pt"  # resumed with --steps instead: the budget is dropped, --steps decides
    shutil.copy(out, stepped)
    train(str(tiny_corpus), "-o", str(stepped), *COMMON, "--steps", "40", "--resume")
    replaced = load_checkpoint(stepped)
    assert replaced["step"] == replaced["train_config"]["steps"] == 40 and replaced["train_config"]["minutes"] == 0
    train(str(tiny_corpus), "-o", str(out), *COMMON, "--minutes", "1", "--resume")
    payload = load_checkpoint(out)
    fit = payload["metrics"]["budget"]
    assert fit["at_step"] == 10 + MEASURE_SKIPPED_STEPS + MEASURE_MIN_STEPS
    assert payload["step"] == payload["train_config"]["steps"] == fit["steps"]


@pytest.mark.slow
def test_minutes_and_steps_exclude_each_other_and_minutes_is_fixed_on_resume(tmp_path: Path, tiny_corpus: Path) -> None:
    both = run_train(str(tiny_corpus), "-o", str(tmp_path / "c.pt"), "--minutes", "1", "--steps", "50")
    assert both.returncode == 2 and len(both.stderr.strip().splitlines()) == 1
    assert "--minutes and --steps exclude each other" in both.stderr
    negative = run_train(str(tiny_corpus), "-o", str(tmp_path / "c.pt"), "--minutes", "-1")
    assert negative.returncode == 2 and "--minutes must be in [0, 1e+06]" in negative.stderr
    out = tmp_path / "s.pt"
    train(str(tiny_corpus), "-o", str(out), *COMMON, "--steps", "10", "--eval-every", "10")
    changed = run_train(str(tiny_corpus), "-o", str(out), *COMMON, "--minutes", "1", "--resume")
    assert changed.returncode == 2 and "--minutes cannot change when resuming" in changed.stderr


# --- validation lines above the progress bar ---------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_validation_lines_are_printed_above_the_bar_in_a_terminal(
    tmp_path: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    out = tmp_path / "t.pt"
    train_main([str(tiny_corpus), "-o", str(out), *COMMON, "--steps", "30", "--eval-every", "10"],
               standalone_mode=False)  # fmt: skip
    text = terminal.getvalue()
    for step in (10, 20, 30):
        line = f"step {step}/30: train loss "
        assert text.count(line) == 1, text  # each once, while the bar runs: not only the last, at the end
        at = text.index(line)
        assert text.rfind("\r", 0, at) == at - 1  # drawn from the start of the line the bar was on ...
        assert "training" in text[at:].split("\n", 1)[1]  # ... and the bar drawn again below it
    assert text.index("step 10/30:") < text.index("20/30") < text.index("step 20/30:")  # the bar went on between
