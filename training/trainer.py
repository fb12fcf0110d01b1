"""The training loop: windows, ELBO, Adam, validation, checkpoints, metrics, plot."""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import math
import signal
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import torch
from torch.nn.parallel import DistributedDataParallel

from vrnn.models.checkpoint import build_checkpoint, save_checkpoint
from vrnn.models.vrnn import VRNN
from vrnn.runtime.atomic import atomic_write, remove_stale_temp_files
from vrnn.runtime.errors import EXIT_INTERRUPTED, VrnnError
from vrnn.runtime.schema import DEFAULT_START_CHAR, ModelConfig
from vrnn.runtime.stop_signals import STOP_SIGNALS, handling_signals, raise_if_stopped, signal_exit_code
from vrnn.training import budget as budgets
from vrnn.training.allocator import keep_freed_memory
from vrnn.training.budget import UNFITTED_STEPS, Budget, Measurement, fit_budget
from vrnn.training.config import TrainConfig
from vrnn.training.data import Corpus, sample_windows, validation_subset
from vrnn.training.distributed import Distribution
from vrnn.training.evaluation import Evaluation, evaluate
from vrnn.training.objective import kl_weight, training_loss
from vrnn.training.plot import draw_curves, load_pyplot, matplotlib_available
from vrnn.training.torch_settings import flushed_denormals

PROGRESS_SECONDS = 60.0  # without a terminal, a progress line this often


class Interrupted(VrnnError):
    """Ctrl-C, SIGTERM or SIGHUP: the checkpoint was saved; exit 130, 143 or 129."""

    def __init__(self, message: str, exit_code: int = EXIT_INTERRUPTED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class OutputPaths:
    """The files a run writes, all derived from -o: ckpt.pt, ckpt.best.pt, ckpt.metrics.jsonl, ckpt.png."""

    checkpoint: Path
    best: Path = field(init=False)
    metrics: Path = field(init=False)
    plot: Path = field(init=False)

    def __post_init__(self) -> None:
        stem = self.checkpoint.with_suffix("")
        self.best = stem.with_name(stem.name + ".best.pt")
        self.metrics = stem.with_name(stem.name + ".metrics.jsonl")
        self.plot = stem.with_name(stem.name + ".png")

    def named(self) -> dict[str, Path]:
        """Every file a run writes, by the name its messages give it."""
        return {"-o": self.checkpoint, "its best file": self.best, "its metrics": self.metrics, "its plot": self.plot}

    def remove_stale_temp_files(self) -> None:
        """Remove what killed writes left beside these outputs: temporary files of dead vrnn processes, and
        any named after an output (`.ckpt.pt.XXXXXXXX.tmp`, vrnn 0.1's form), which only a run of this
        checkpoint, now locked by this one, can have written."""
        directory = self.checkpoint.parent
        remove_stale_temp_files(directory)
        for output in self.named().values():
            for leftover in directory.glob(f".{glob.escape(output.name)}.????????.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()


def learning_rate(step: int, tc: TrainConfig) -> float:
    """Learning rate for the optimizer step with index `step` (0-based)."""
    if tc.lr_schedule == "constant":
        return tc.lr
    if step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    progress = (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return tc.lr * (tc.min_lr_ratio + (1.0 - tc.min_lr_ratio) * cosine)


def estimate_training_bytes(config: ModelConfig, tc: TrainConfig) -> float:
    """A generous estimate of a run's peak memory: weights, gradients and Adam's two moments, plus what one
    step keeps per position (the recurrence's saved gates and states, logits and their gradients)."""
    with torch.device("meta"):  # shapes only: nothing is allocated
        params = VRNN(config).num_parameters()
    H, E, Z, V = config.hidden_size, config.embed_size, config.latent_size, config.vocab_size
    backward = 8 * config.backward_width if config.posterior == "smoothing" else 0
    per_position = 16 * H * config.layers + 8 * E + 8 * Z + 6 * V + backward
    return 4.0 * (4 * params + tc.seq_len * tc.batch_size * per_position)


def make_optimizer(model: torch.nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    """Adam; with weight decay, AdamW-style decoupled decay of the matrices and the embedding only
    (decaying biases and the like only pulls them off their useful values)."""
    if tc.weight_decay == 0:
        return torch.optim.Adam(model.parameters(), lr=tc.lr)  # one parameter group, as checkpoints expect
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": tc.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.Adam(groups, lr=tc.lr, decoupled_weight_decay=True)


def resolve_device(name: str) -> torch.device:
    """'auto' means CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VrnnError("--device cuda was requested but no CUDA device is available")
    return torch.device(name)


@contextmanager
def deferred_stop_signals() -> Any:
    """Turn Ctrl-C, SIGTERM and SIGHUP into a flag checked between steps, so that the run saves its checkpoint
    and exits with the signal's status instead of dying mid-update or without a save."""
    raise_if_stopped()  # one that came earlier, while torch was imported, say, and whose exception was discarded
    flag: dict[str, int | None] = {"signal": None}

    def handler(signum: int, frame: object) -> None:
        flag["signal"] = signum

    with handling_signals(STOP_SIGNALS, handler):
        yield flag


class Trainer:
    """Owns the model, optimizer, generators and history of one run (fresh or resumed)."""

    def __init__(
        self,
        corpus: Corpus,
        model_config: ModelConfig,
        train_config: TrainConfig,
        paths: OutputPaths,
        device: torch.device,
        log: Callable[[str], None],
        resume: dict[str, Any] | None = None,
        distribution: Distribution | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.corpus, self.config, self.tc, self.paths, self.device, self.log = (
            corpus,
            model_config,
            train_config,
            paths,
            device,
            log,
        )
        keep_freed_memory()  # no page faults for the blocks each step frees and allocates again
        torch.manual_seed(train_config.seed)  # parameter initialisation
        self.model = VRNN(model_config).to(device)
        self.optimizer = make_optimizer(self.model, train_config)
        self.data_rng = torch.Generator(device="cpu").manual_seed(train_config.seed)
        self.noise_rng = torch.Generator(device=device).manual_seed(train_config.seed + 1)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best_score = math.inf  # of tc.select_metric, the score OUT.best.pt was chosen by
        # A budget to fit (--minutes): the total is unknown until it is measured and fitted (vrnn.training.budget);
        # budget_fit is the fit's record, saved in the checkpoint's metrics (None: none made).
        self.budget = budget
        self.budget_fit: dict[str, Any] | None = None
        if resume is not None:
            self._restore(resume)
        if budget is not None:
            self.tc = dataclasses.replace(self.tc, steps=UNFITTED_STEPS)
        self.distribution = distribution or Distribution()
        if self.tc.batch_size % self.distribution.world_size:
            raise VrnnError(
                f"the global batch of {self.tc.batch_size} windows does not split evenly over "
                f"{self.distribution.world_size} processes"
            )
        # What the training step calls: the model itself, or its DistributedDataParallel wrapper
        # (which averages gradients over processes during backward).
        self.network: torch.nn.Module = self.model
        if self.distribution.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=ids)

    # --- checkpoints --------------------------------------------------------
    def _restore(self, payload: dict[str, Any]) -> None:
        self.model.load_state_dict(payload["model"])
        if "optimizer" not in payload or "rng" not in payload:
            raise VrnnError("checkpoint holds weights only (no optimizer or RNG state): it cannot be resumed")
        self.optimizer.load_state_dict(payload["optimizer"])
        self.data_rng.set_state(payload["rng"]["data"])
        saved, here = payload["rng"]["noise"], self.noise_rng.get_state()
        if saved.numel() != here.numel():
            # A CPU generator's state (5,056 bytes) and a CUDA one's (16) cannot stand in for each other, and the
            # run would not continue the same noise: refused, naming the device that can resume it.
            trained_on = "cuda" if saved.numel() < here.numel() else "cpu"
            raise VrnnError(
                f"this checkpoint was trained with --device {trained_on}, whose noise generator cannot continue on "
                f"{self.device.type}: resume it with --device {trained_on}"
            )
        self.noise_rng.set_state(saved.to(here.device))
        self.step = int(payload["step"])
        metrics = payload.get("metrics", {})
        self.history = list(metrics.get("history", []))
        # The best of the recorded history and the recorded best (a history row is written with its checkpoint).
        key = self.tc.select_metric
        scores = [row[key] for row in self.history if row.get(key) is not None]
        recorded = metrics.get(f"best_{key}")
        self.best_score = min([*scores, *([float(recorded)] if recorded is not None else [])], default=math.inf)
        self.budget_fit = metrics.get("budget") or None

    def payload(self, resumable: bool = True) -> dict[str, Any]:
        """The checkpoint dict of the current state (vrnn.models.checkpoint); `resumable` False leaves out
        the optimizer and generator states, as `.best.pt` files do."""
        last = self.history[-1] if self.history else {}
        return build_checkpoint(
            model=self.model,
            config=self.config,
            vocab=self.corpus.vocab,
            start_char=self.corpus.vocab.start_char(DEFAULT_START_CHAR),
            step=self.step,
            train_config=self.tc.to_dict(),
            metrics={
                "val_elbo_nats": last.get("val_elbo_nats"),
                "val_bpc": last.get("val_bpc"),
                f"best_{self.tc.select_metric}": self.best_score if math.isfinite(self.best_score) else None,
                "history": self.history,
                **({"budget": self.budget_fit} if self.budget_fit else {}),
            },
            corpus={"name": self.corpus.name, "sha256": self.corpus.sha256},
            optimizer=self.optimizer if resumable else None,
            rng={"data": self.data_rng.get_state(), "noise": self.noise_rng.get_state().cpu()} if resumable else None,
        )

    def save(self) -> None:
        """Write the resumable checkpoint (-o) atomically."""
        save_checkpoint(self.paths.checkpoint, self.payload())

    def write_metrics(self) -> None:
        """Rewrite OUT.metrics.jsonl from the history (atomically): after a resume it matches the checkpoint."""
        with atomic_write(self.paths.metrics, "w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in self.history)

    # --- validation -----------------------------------------------------------
    def validate(self) -> Evaluation:
        """Negative ELBO (and IWAE-K when it selects) on tc.select_on (at most val_chars of it:
        data.validation_subset)."""
        tc = self.tc
        pieces = validation_subset(self.corpus, tc.val_chars, tc.select_on)
        # Without a latent both bounds are the exact NLL: one trajectory per window is enough.
        samples = tc.select_samples if tc.select_by == "iwae" and self.config.latent_size > 0 else 1
        result = evaluate(self.model, pieces, tc.seq_len, tc.batch_size, seed=0, samples=samples)
        if tc.select_by == "iwae" and result.iwae is None:
            result.iwae = result.elbo
        return result

    def _record(self, train_stats: dict[str, float], elapsed: float, chars_per_s: float) -> dict[str, Any]:
        result = self.validate()
        row = {
            "step": self.step,
            **train_stats,
            "val_nll": result.nll,
            "val_kl": result.kl,
            "val_elbo_nats": result.elbo,
            "val_bpc": result.bpc,
            "val_active_units_kl": result.active_units_kl,
            **({"val_iwae_nats": result.iwae} if result.iwae is not None else {}),
            **({"val_aux": result.aux} if result.aux is not None else {}),
            "lr": learning_rate(max(self.step - 1, 0), self.tc),
            "kl_weight": kl_weight(self.step, self.tc.effective_kl_anneal_steps),
            "chars_per_s": chars_per_s,
            "elapsed_s": elapsed,
        }
        self.history.append(row)
        # Order matters for a kill at any moment: the best-so-far is updated before anything is written, so
        # every checkpoint records the best it has seen; best.pt goes first (a kill before the checkpoint
        # replays this validation on resume and rewrites the same file); the metrics file is rewritten from
        # the history after the checkpoint, so it never holds a row the checkpoint does not.
        if row[self.tc.select_metric] < self.best_score:
            self.best_score = row[self.tc.select_metric]
            save_checkpoint(self.paths.best, self.payload(resumable=False))  # for export and sampling
        self.save()
        self.write_metrics()
        if matplotlib_available():
            draw_curves(self.history, self.paths.plot, f"vrnn on {self.corpus.name}")
        return row

    # --- the loop -------------------------------------------------------------
    def train_step(self) -> tuple[float, float, float, float]:
        """One optimizer step on a random batch; returns (loss, nll, kl, aux) per character."""
        tc, z = self.tc, self.config.latent_size
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, tc)
        # The whole global batch is drawn on every process, which keeps its slice (see distributed.py).
        mine = self.distribution.local_slice(tc.batch_size)
        tokens = sample_windows(self.corpus, tc.batch_size, tc.seq_len, self.data_rng)[mine].to(self.device)
        eps = torch.randn((tc.seq_len, tc.batch_size, z), generator=self.noise_rng, device=self.device)[:, mine]
        mask = None
        if tc.dropout > 0:
            keep = 1.0 - tc.dropout
            width = self.config.hidden_size + (self.config.embed_size if tc.dropout_scope == "decoder-input" else 0)
            shape = (tc.seq_len, tc.batch_size, width)  # time-major, like the model's internals
            mask = (torch.rand(shape, generator=self.noise_rng, device=self.device)[:, mine] < keep).float() / keep
        terms = self.network(tokens, eps, mask, tc.aux_weight > 0)
        beta = kl_weight(self.step, tc.effective_kl_anneal_steps)
        loss, nll, kl, aux = training_loss(terms, beta, tc.free_bits, tc.aux_weight)
        # The global mean, identical on every process, so that all of them stop together.
        loss_all, nll_all, kl_all, aux_all = self.distribution.mean(torch.stack([loss, nll, kl, aux]).detach()).tolist()
        if not math.isfinite(loss_all):
            raise VrnnError(
                f"non-finite loss at step {self.step + 1}: training stopped; "
                f"the last good checkpoint ({self.paths.checkpoint}) is kept"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.clip if tc.clip > 0 else math.inf)
        if not torch.isfinite(norm):
            raise VrnnError(
                f"non-finite gradient at step {self.step + 1}: training stopped; "
                f"the last good checkpoint ({self.paths.checkpoint}) is kept"
            )
        self.optimizer.step()
        self.step += 1
        return loss_all, nll_all, kl_all, aux_all

    def run(self, quiet: bool) -> dict[str, Any] | None:
        """Train up to tc.steps, validating and checkpointing every eval_every steps; with a budget to fit, first
        measure the step time and one validation, and fit tc.steps to the budget (vrnn.training.budget)."""
        if self.step >= self.tc.steps:
            more = "continue it with --steps N, without --minutes" if self.tc.minutes > 0 else "raise --steps"
            self.log(f"checkpoint is already at step {self.step} of {self.tc.steps}: nothing to do ({more})")
            return self.history[-1] if self.history else None
        main = self.distribution.is_main  # the only process that writes files and progress
        if main and self.history:
            self.write_metrics()  # a kill between checkpoint and metrics may have left the file a row short
        if main and not matplotlib_available():
            self.log("matplotlib is not installed: no loss plot will be drawn (pip install 'vrnn[plot]')")
        if self.budget_fit and not quiet:
            fit = self.budget_fit
            then = f"budget {fit['minutes']:g} min, fitted at step {fit['at_step']:,} to {fit['steps']:,} steps"
            now = "to finish that schedule" if fit["steps"] == self.tc.steps else f"to --steps {self.tc.steps:,}"
            self.log(f"{then}: resuming at step {self.step:,} {now}")
        measuring = Measurement(self.budget, self.step) if self.budget is not None else None
        if measuring and main and matplotlib_available():
            load_pyplot()
        chars_per_step = self.tc.batch_size * self.tc.seq_len
        sums = {"train_loss": 0.0, "train_nll": 0.0, "train_kl": 0.0, "train_aux": 0.0}
        count, window_start, run_start = 0, time.perf_counter(), time.perf_counter()
        status = {"text": ""}
        total = None if measuring else self.tc.steps
        # In a terminal, a progress bar with each validation's line printed above it; without one (a log file,
        # a scheduler) a progress bar draws nothing: a line per validation and one every PROGRESS_SECONDS.
        bar: _TerminalBar | _PeriodicLog | _NullBar
        if quiet or not main:
            bar = _NullBar(self.log)
        elif sys.stderr.isatty():
            bar = _TerminalBar(total, lambda: status["text"])
        else:
            bar = _PeriodicLog(self.log, total, lambda: status["text"])
        row = None
        with deferred_stop_signals() as stop, bar, flushed_denormals():
            bar.update(self.step)
            while self.step < self.tc.steps:
                loss, nll, kl, aux = self.train_step()
                for key, value in zip(sums, (loss, nll, kl, aux), strict=True):
                    sums[key] += value
                count += 1
                elapsed = time.perf_counter() - window_start
                speed = count * chars_per_step / max(elapsed, 1e-9)
                status["text"] = f"loss {loss:.3f} kl {kl:.3f} {speed:,.0f} chars/s"
                bar.update(1)
                if measuring is not None:  # a budget run's first validation comes when its steps are timed
                    validate = self._measured(measuring)
                else:
                    validate = main and (self.step % self.tc.eval_every == 0 or self.step == self.tc.steps)
                if validate:
                    stats = {k: v / count for k, v in sums.items()}
                    if measuring is not None:
                        step_s = self._agreed([measuring.seconds_per_step])[0]
                        val_chars = self._fit_val_chars(step_s)
                    started = budgets.clock()
                    row = self._record(stats, time.perf_counter() - run_start, speed) if main else None
                    if measuring is not None:
                        self._fit(step_s, budgets.clock() - started, val_chars, bar)
                        measuring = None
                    if main:
                        bar.write(self._validation_line(stats, row, speed))
                    sums = dict.fromkeys(sums, 0.0)
                    count, window_start = 0, time.perf_counter()
                if self.distribution.any(stop["signal"] is not None, self.device):
                    if main:
                        self.save()
                    signum = stop["signal"] or signal.SIGINT  # a peer's signal stops this process too
                    what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
                    raise Interrupted(
                        f"{what} at step {self.step}: checkpoint saved to {self.paths.checkpoint}; "
                        f"continue with: vrnn-train ... -o {self.paths.checkpoint} --resume",
                        signal_exit_code(signum),
                    )
        return row

    def _validation_line(self, stats: dict[str, float], row: dict[str, Any], speed: float) -> str:
        return (
            f"step {self.step}/{self.tc.steps}: train loss {stats['train_loss']:.4f} "
            f"(nll {stats['train_nll']:.4f}, kl {stats['train_kl']:.4f}) | val -ELBO "
            f"{row['val_elbo_nats']:.4f} nats/char = {row['val_bpc']:.4f} bits/char "
            f"(kl {row['val_kl']:.4f}) | {speed:,.0f} chars/s"
        )

    # --- the budget (--minutes) ---------------------------------------------------
    def _measured(self, measuring: Measurement) -> bool:
        """Whether the step time is measured, as the main process says (every process then fits the same way)."""
        done = measuring.after_step(self.step, budgets.clock())
        return self.distribution.any(done and self.distribution.is_main, self.device)

    def _agreed(self, values: list[float]) -> list[float]:
        """The main process's `values` on every process (the others contribute zeros to the mean)."""
        share = float(self.distribution.world_size) if self.distribution.is_main else 0.0
        mine = torch.tensor(values, dtype=torch.float64, device=self.device) * share
        return self.distribution.mean(mine).tolist()

    def _fit_val_chars(self, step_s: float) -> int | None:
        """Unless --val-chars was given, cut the validation to what one validation of a budget run should cost
        (budget.fitted_val_chars); the characters a validation scores now, or None when unchanged."""
        assert self.budget is not None
        if not self.budget.fit_val_chars:
            return None
        chars = budgets.fitted_val_chars(
            self.budget.seconds, step_s, self.tc.batch_size * self.tc.seq_len, self.tc.val_chars
        )
        self.tc = dataclasses.replace(self.tc, val_chars=chars)
        return min(chars, len(self.corpus.validation_part(self.tc.select_on)) - 1)

    def _fit(
        self, step_s: float, validation_s: float, val_chars: int | None, bar: _TerminalBar | _PeriodicLog | _NullBar
    ) -> None:
        """Fit tc.steps (and eval_every, and a short run's warm-up) to the budget from what the main process
        measured, record the fit in the checkpoint and say what it is."""
        assert self.budget is not None
        validation_s, elapsed = self._agreed([validation_s, budgets.clock() - self.budget.started])
        before = self.tc
        fit = fit_budget(
            self.budget.seconds,
            elapsed,
            step_s,
            validation_s,
            self.step,
            None if self.budget.scale_eval else before.eval_every,
            before.warmup_steps,
            self.budget.fit_warmup and before.lr_schedule == "cosine",
        )
        self.tc = dataclasses.replace(before, steps=fit.steps, eval_every=fit.eval_every, warmup_steps=fit.warmup_steps)
        self.budget_fit = fit.record(self.budget.minutes)
        self.budget = None
        bar.set_total(fit.steps)
        if self.distribution.is_main:
            self.save()  # the validation's checkpoint had no total yet: this one records the fit
            bar.write(fit.describe(self.budget_fit["minutes"], before.warmup_steps, val_chars))


class _TerminalBar:
    """The progress bar in a terminal (click's), with lines printed above it."""

    def __init__(self, total: int | None, status: Callable[[], str]) -> None:
        self.bar = click.progressbar(
            length=total or 1,
            label="training",
            show_eta=True,
            show_percent=False,
            show_pos=True,
            item_show_func=lambda _: status(),
            file=sys.stderr,
        )
        self.set_total(total)

    def __enter__(self) -> _TerminalBar:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def update(self, n: int) -> None:
        self.bar.update(n)

    def set_total(self, total: int | None) -> None:
        """The steps in all (None: not known yet, while a budget run measures)."""
        self.bar.length = total

    def write(self, message: str) -> None:
        """Print `message` on a line of its own above the bar, and draw the bar again below it."""
        handle = self.bar.file
        handle.write("\r" + " " * (self.bar.max_width or 0) + "\r")
        click.echo(message, file=handle)
        self.bar._last_line = None  # what it last drew is gone: draw it again
        self.bar.render_progress()


class _PeriodicLog:
    """Stands in for the progress bar without a terminal: a line after every PROGRESS_SECONDS without one."""

    def __init__(self, log: Callable[[str], None], total: int | None, status: Callable[[], str]) -> None:
        self.log, self.total, self.status = log, total, status
        self.position, self.last = 0, time.monotonic()

    def __enter__(self) -> _PeriodicLog:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        self.position += n
        if time.monotonic() - self.last >= PROGRESS_SECONDS:
            self.last = time.monotonic()
            total = f"/{self.total}" if self.total is not None else ""
            self.log(f"step {self.position}{total}: {self.status()}")

    def set_total(self, total: int | None) -> None:
        self.total = total

    def write(self, message: str) -> None:
        self.log(message)
        self.last = time.monotonic()  # a progress line a minute after any line, not right after this one


class _NullBar:
    """Stands in for the progress bar under --quiet (and in processes other than the main one)."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log

    def __enter__(self) -> _NullBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None

    def set_total(self, total: int | None) -> None:
        return None

    def write(self, message: str) -> None:
        self.log(message)
