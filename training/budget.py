"""`vrnn-train --minutes N`: fit the step count, and with it the learning-rate schedule, to a wall-clock budget.

How a budget run goes (Trainer.run does the steps, this module the arithmetic; torch-free):

1. The run starts with its total unknown (UNFITTED_STEPS): the schedule is in its linear warm-up, or at its
   peak, and no periodic validation happens.
2. The first MEASURE_SKIPPED_STEPS steps of the process are not timed (they run slower); the next ones are,
   until enough steps and seconds are timed (`Measurement`).
3. Unless --val-chars was given, the validation is cut to what one validation should cost (`fitted_val_chars`,
   which counts a validated character as costing what a trained one does: it costs less).  One validation
   then runs, timed with everything a validation does (scoring, best file, checkpoint, metrics, plot): it is
   the run's first validation point, and the cost of each later one.
4. `fit_budget` chooses the total steps S (and, unless --eval-every was given, how often to validate) so that
   the time already spent, S - done more steps and the validations still to come fit the budget less a small
   reserve.  The cosine schedule is a function of S, so setting S re-fits it: the run ends on time with its
   learning rate at the end of the schedule, not cut halfway down it.  The fit is recorded in the checkpoint
   (its train_config holds S, its metrics the measurement), so --resume finishes the same schedule.

The budget counts from the command's start (`clock()` when vrnn-train's main began): PyTorch's import, the
corpus's preparation and model construction are in it.  The fit is made once: a machine whose speed changes
after it (other work on shared cores) makes the run end late or early, its schedule finished either way.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

UNFITTED_STEPS = 10**9  # a budget run's total until the fit: large enough never to be reached
MEASURE_SKIPPED_STEPS = 10  # a process's first steps are slower (here 0.6-0.8 s against 0.55 s): not timed
MEASURE_MIN_STEPS = 20  # timed steps at least ...
# ... over at least this long (or MEASURE_MIN_SHARE of the budget, if less): on shared cores the speed of a few
# seconds can be 20% off the run's (measured 2026-12-07), and the warm-up's schedule does not depend on the total
MEASURE_MIN_SECONDS = 30.0
MEASURE_MIN_SHARE = 0.04
MEASURE_ENOUGH_STEPS = 1000  # with this many timed steps, MEASURE_ENOUGH_SECONDS do (fast steps: a GPU)
MEASURE_ENOUGH_SECONDS = 5.0
MEASURE_MAX_SHARE = 0.05  # slow steps: stop timing after this share of the budget whatever the counts
VALIDATION_POINTS = 10  # validations after the fit (the last at the end) when --eval-every is not given
VALIDATION_SHARE = 0.15  # ... fewer when that many would take more than this share of the time left
# What a validated character costs, as a share of a trained one's cost, with the checkpoint and plot a validation
# writes (forward only, in window-sized pieces; measured 0.5 with one thread and 0.8 with two on 2 shared CPU
# cores, 2026-12-07: 1 errs on the cheap side).  Used only to choose --val-chars: the fit itself uses a
# validation's measured time.
VALIDATION_COST = 1.0
MIN_FITTED_VAL_CHARS = 16_000  # a budget's validation scores at least this many characters
RESERVE_SHARE = 0.01  # kept back for what follows the last step (and a margin): this share of the budget,
RESERVE_SECONDS = 2.0  # but at least this long (a process with PyTorch and matplotlib takes 0.5-1.5 s to exit)


def clock() -> float:
    """The budget's clock, in seconds (tests replace it)."""
    return time.perf_counter()


@dataclass(frozen=True)
class Budget:
    """A run's wall-clock budget and what the fit may change."""

    minutes: float
    started: float  # clock() at the command's start
    scale_eval: bool = True  # --eval-every was not given: fit it too
    fit_val_chars: bool = True  # --val-chars was not given: fit it too
    fit_warmup: bool = True  # --warmup-steps was not given: shorten it for a short run

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0


class Measurement:
    """Times the steps of a budget run after the first MEASURE_SKIPPED_STEPS of its process."""

    def __init__(self, budget: Budget, first_step: int) -> None:
        self.budget, self.first_step = budget, first_step
        self.start: tuple[int, float] | None = None  # (step, clock) where timing began
        self.timed: tuple[int, float] = (0, 0.0)  # (steps, seconds) timed so far

    def after_step(self, step: int, now: float) -> bool:
        """Note that `step` steps are done at time `now`; True once the step time is measured."""
        if self.start is None:
            if step - self.first_step >= MEASURE_SKIPPED_STEPS:
                self.start = (step, now)
            return False
        steps, seconds = step - self.start[0], now - self.start[1]
        self.timed = (steps, seconds)
        if steps >= 1 and seconds >= MEASURE_MAX_SHARE * self.budget.seconds:
            return True
        if steps < MEASURE_MIN_STEPS:
            return False
        enough = min(MEASURE_MIN_SECONDS, MEASURE_MIN_SHARE * self.budget.seconds)
        return seconds >= enough or (steps >= MEASURE_ENOUGH_STEPS and seconds >= MEASURE_ENOUGH_SECONDS)

    @property
    def seconds_per_step(self) -> float:
        steps, seconds = self.timed
        return seconds / steps if steps else 0.0

    @property
    def timed_steps(self) -> tuple[int, int]:
        """The first and last step timed (1-based, as the progress counts them)."""
        first = (self.start[0] if self.start else self.first_step) + 1
        return first, first + self.timed[0] - 1


def fitted_val_chars(budget_s: float, step_s: float, chars_per_step: int, val_chars: int) -> int:
    """The validation characters (--val-chars) that make one validation cost VALIDATION_SHARE / VALIDATION_POINTS
    of the budget at `step_s` seconds a step of `chars_per_step` characters, in thousands, at least
    MIN_FITTED_VAL_CHARS and at most `val_chars` (0: the whole split, no bound)."""
    per_char = max(step_s, 1e-9) / chars_per_step * VALIDATION_COST
    chars = math.floor(VALIDATION_SHARE / VALIDATION_POINTS * budget_s / per_char / 1000) * 1000
    chars = max(MIN_FITTED_VAL_CHARS, chars)
    return min(chars, val_chars) if val_chars else chars


def validations_after(done: int, total: int, eval_every: int) -> int:
    """Validations a run makes after step `done` up to `total`: every eval_every steps, and at the end."""
    if total <= done:
        return 0
    return total // eval_every - done // eval_every + (1 if total % eval_every else 0)


@dataclass(frozen=True)
class Fit:
    """What fit_budget chose, and what it was chosen from."""

    steps: int  # the run's total
    eval_every: int
    warmup_steps: int
    at_step: int  # steps done when it was fitted
    seconds_per_step: float
    seconds_per_validation: float  # one validation with its checkpoint, metrics and plot
    elapsed_s: float  # since the command's start, at the fit
    expected_s: float  # the whole command's predicted wall time
    validations: int  # after the fit, the one at the end included

    def record(self, minutes: float) -> dict[str, Any]:
        """The checkpoint's record of the fit (metrics["budget"])."""
        return {
            "minutes": minutes,
            "steps": self.steps,
            "eval_every": self.eval_every,
            "warmup_steps": self.warmup_steps,
            "at_step": self.at_step,
            "seconds_per_step": self.seconds_per_step,
            "seconds_per_validation": self.seconds_per_validation,
            "elapsed_s": self.elapsed_s,
            "expected_s": self.expected_s,
        }

    def describe(self, minutes: float, warmup_before: int, val_chars: int | None = None) -> str:
        """The line vrnn-train prints about the fit (`val_chars`: what validations score, when it was fitted)."""
        scored = f" of {val_chars:,} characters" if val_chars else ""
        head = (
            f"budget {minutes:g} min: {self.seconds_per_step:.3g} s/step and {self.seconds_per_validation:.3g} s "
            f"per validation{scored} measured"
        )
        if self.steps <= self.at_step:
            return (
                f"{head}; the budget is spent by step {self.at_step:,}, where the run stops with its schedule "
                "unfinished (give more --minutes)"
            )
        warmup = f", warm-up {self.warmup_steps:,} steps" if self.warmup_steps != warmup_before else ""
        return (
            f"{head}; fitting {self.steps:,} steps (schedule re-fitted{warmup}), validating every "
            f"{self.eval_every:,}: about {_duration(self.expected_s)} in all"
        )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def fit_budget(
    budget_s: float,
    elapsed_s: float,
    step_s: float,
    validation_s: float,
    done: int,
    eval_every: int | None = None,
    warmup_steps: int = 0,
    fit_warmup: bool = False,
) -> Fit:
    """The total steps that fit `budget_s` seconds, `elapsed_s` of which are spent, with `done` steps done.

    Each further step costs `step_s` and each validation `validation_s`; RESERVE_SHARE of the budget (at
    least RESERVE_SECONDS) is kept back.  With `eval_every` None, it is fitted too: VALIDATION_POINTS
    validations spread over the run (fewer when they would take more than VALIDATION_SHARE of the time left),
    the last at the end; given, the validations it makes are counted.  With `fit_warmup`, a run too short for
    its `warmup_steps` gets a warm-up of a quarter of its steps (never fewer than those done).  Never fewer steps
    than `done`: a budget spent by the measurement stops the run there."""
    step_s, validation_s = max(step_s, 1e-9), max(validation_s, 0.0)
    available = budget_s - elapsed_s - max(RESERVE_SECONDS, RESERVE_SHARE * budget_s)

    def cost(total: int, every: int) -> float:
        return (total - done) * step_s + validations_after(done, total, every) * validation_s

    def most(validations: int) -> int:  # the total when that many validations are to come
        more = max(0, math.floor((available - validations * validation_s) / step_s))
        return done + min(more, UNFITTED_STEPS - 1 - done)

    if eval_every is None:
        by_share = math.floor(VALIDATION_SHARE * available / validation_s) if validation_s > 0 else VALIDATION_POINTS
        points = min(VALIDATION_POINTS, max(1, by_share))

        def spread(total: int) -> int:  # `points` validations over the whole run, the last at the end
            return max(1, math.ceil(total / points))

        steps = most(points)  # fits: at most `points` validations come after `done` (fewer when done is large)
        for _ in range(4):  # time for the validations that will not come goes to steps, while it still fits
            longer = most(validations_after(done, steps, spread(steps)))
            if longer <= steps or cost(longer, spread(longer)) > available:
                break
            steps = longer
        every = spread(steps)
    else:
        every = eval_every
        low, high = done, most(0)
        while low < high:  # the largest total that fits: cost grows with the total
            middle = (low + high + 1) // 2
            low, high = (middle, high) if cost(middle, every) <= available else (low, middle - 1)
        steps = low
    warmup = warmup_steps
    if fit_warmup and steps < 4 * warmup_steps:
        warmup = min(warmup_steps, max(steps // 4, done))
    count = validations_after(done, steps, every)
    expected = elapsed_s + (steps - done) * step_s + count * validation_s
    return Fit(steps, every, warmup, done, step_s, validation_s, elapsed_s, expected, count)
