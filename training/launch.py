"""What `vrnn-train` does once its options are parsed: outputs checked, corpus read, run locked, trained.

Kept apart from the option parsing (vrnn.training.cli) so that `vrnn-train --help` works, and a missing
PyTorch is one line, on the runtime-only install.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import click
import torch

from vrnn.models.checkpoint import load_checkpoint
from vrnn.runtime.atomic import check_writable_destination, refuse_overwriting_inputs
from vrnn.runtime.errors import UsageError, VrnnError
from vrnn.runtime.limits import check_memory
from vrnn.runtime.schema import ModelConfig
from vrnn.runtime.vocab import Vocabulary, describe_chars
from vrnn.training.budget import Budget, clock
from vrnn.training.config import TrainConfig
from vrnn.training.corpus import corpus_name, resolve_corpus
from vrnn.training.data import Corpus
from vrnn.training.distributed import Distribution, init_distribution, shutdown_distribution
from vrnn.training.options import Resumed, resolve_configs
from vrnn.training.run_lock import exclusive_run
from vrnn.training.tokens import TokenFile, prepare_tokens
from vrnn.training.torch_settings import set_torch_threads
from vrnn.training.trainer import OutputPaths, Trainer, estimate_training_bytes, resolve_device


def _log(message: str) -> None:
    click.echo(message, err=True)


def _silent(message: str) -> None:
    """The log of processes other than rank 0 under torchrun."""


def train_from_cli(
    corpus: str | tuple[str, ...],
    out: str,
    preset: str | None,
    device: str,
    threads: int | None,
    flags: tuple[bool, bool, bool],
    quiet: bool,
    options: dict[str, Any],
    started: float | None = None,
) -> None:
    """Run `vrnn-train` with its parsed options; `flags` are (--resume, --force, --allow-corpus-change);
    `started` is budget.clock() at the command's start, where --minutes counts from (None: now)."""
    started = clock() if started is None else started
    set_torch_threads(threads)
    # -o before the names derived from it: '', '.' and '/' have no file name to derive them from
    check_writable_destination(out, files_only=True)
    paths = OutputPaths(Path(out))
    for output in paths.named().values():
        check_writable_destination(output, files_only=True)
    files = resolve_corpus(corpus)
    refuse_overwriting_inputs(paths.named(), {f"CORPUS file {f}": str(f) for f in files})
    # Every rank of a torchrun prepares: the first to take the corpus's lock builds the token file, the
    # others wait for it and map the same file.
    tokens = prepare_tokens(files)
    name = corpus_name(corpus)
    distribution, torch_device = init_distribution(resolve_device(device))
    try:
        # Rank 0 writes every file, so it alone takes the lock; its peers follow it.
        with exclusive_run(paths.checkpoint) if distribution.is_main else contextlib.nullcontext():
            if distribution.is_main:
                paths.remove_stale_temp_files()
            _train(name, tokens, paths, preset, flags, quiet, distribution, torch_device, options, started)
    except BaseException:
        shutdown_distribution(wait_for_peers=False)
        raise
    shutdown_distribution(wait_for_peers=True)


def check_same_corpus(
    corpus: str, tokens: TokenFile, vocab: Vocabulary, trained_on: str | None, paths: OutputPaths, allow_change: bool
) -> None:
    """Refuse to resume on a text without the checkpoint's vocabulary, or (unless `allow_change`) on a text
    other than the one it was trained on (`trained_on`, its sha256)."""
    found = tokens.vocab
    if found != vocab:
        extra, missing = set(found.chars) - set(vocab.chars), set(vocab.chars) - set(found.chars)
        detail = f"new characters {describe_chars(extra)}" if extra else f"lacks {describe_chars(missing)}"
        raise VrnnError(f"{corpus} does not have the checkpoint's vocabulary ({detail}): resume with the same corpus")
    if trained_on and trained_on != tokens.sha256 and not allow_change:
        raise VrnnError(
            f"{corpus} is not the text {paths.checkpoint} was trained on (its sha256 differs): resume with "
            "the same corpus, or pass --allow-corpus-change to continue training on this one"
        )


def _train(
    corpus: str,
    tokens: TokenFile,
    paths: OutputPaths,
    preset: str | None,
    flags: tuple[bool, bool, bool],
    quiet: bool,
    distribution: Distribution,
    torch_device: torch.device,
    options: dict[str, Any],
    started: float,
) -> None:
    log = _log if distribution.is_main else _silent
    resume, force, allow_corpus_change = flags
    if resume:
        payload = load_checkpoint(paths.checkpoint)
        # from_dict gives a field the checkpoint lacks its default (formats are upgraded by checkpoint.UPGRADES)
        resumed = Resumed(ModelConfig.from_dict(payload["model_config"]),
                          TrainConfig.from_dict(payload.get("train_config", {})),
                          payload.get("train_config", {}).get("preset"))  # fmt: skip
        vocab = Vocabulary(payload["vocab"])
        check_same_corpus(
            corpus, tokens, vocab, (payload.get("corpus") or {}).get("sha256"), paths, allow_corpus_change
        )
    else:
        if paths.checkpoint.exists() and not force:
            raise UsageError(f"{paths.checkpoint} exists: pass --resume to continue it or --force to overwrite it")
        payload, resumed, vocab = None, None, tokens.vocab
        if force and distribution.is_main:
            # --force starts over: the metrics of the run it replaces would otherwise be appended to
            paths.metrics.unlink(missing_ok=True)
    model_config, train_config = resolve_configs(preset, options, len(vocab), distribution.world_size, resumed)
    budget = None
    if train_config.minutes > 0 and not (payload or {}).get("metrics", {}).get("budget"):
        if options.get("steps") is not None:  # a resume, stopped before its budget was fitted
            train_config = dataclasses.replace(train_config, minutes=0.0)
            log(f"--steps {train_config.steps} replaces the budget of {paths.checkpoint}, stopped before it was fitted")
        else:
            budget = Budget(train_config.minutes, started, options.get("eval_every") is None,
                            options.get("val_chars") is None, options.get("warmup_steps") is None)  # fmt: skip

    check_memory(
        estimate_training_bytes(model_config, train_config),
        f"training a {model_config.hidden_size}-unit model on batches of {train_config.batch_size} x "
        f"{train_config.seq_len} characters",
        "reduce --batch-size, --seq-len or the model's sizes",
    )
    data = Corpus.from_tokens(tokens, corpus)
    data.check_window(train_config.seq_len)
    if tokens.built_s is not None and not quiet:
        log(f"prepared the token file {tokens.path} ({len(tokens.ids):,} characters) in {tokens.built_s:.1f} s; "
            "later runs map it")  # fmt: skip
    trainer = Trainer(data, model_config, train_config, paths, torch_device, log, payload, distribution, budget)
    if not quiet:
        processes = f", {distribution.world_size} processes" if distribution.enabled else ""
        log(
            f"vrnn: {trainer.model.num_parameters():,} parameters, vocabulary {len(vocab)}, "
            f"{len(data.train):,} training / {len(data.val):,} validation characters, device {torch_device}"
            f"{processes}, global batch {train_config.batch_size}"
        )
    trainer.run(quiet=quiet)
    log(f"saved {paths.checkpoint} (best: {paths.best}, metrics: {paths.metrics})")
