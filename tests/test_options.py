"""vrnn-train's options (vrnn.training.options): one per config field, and how a preset, the options given
and a resumed checkpoint resolve into the run's configs.  No PyTorch needed."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from vrnn.runtime.errors import UsageError
from vrnn.runtime.schema import ModelConfig
from vrnn.training.cli import main
from vrnn.training.config import PRESETS, TrainConfig
from vrnn.training.options import MODEL_OPTIONS, TRAIN_OPTIONS, Resumed, option_name, resolve_configs


def test_every_config_field_is_an_option_of_vrnn_train() -> None:
    """The dataclasses are the one list: a new field becomes an option (with its help) or the import fails."""
    help_text = CliRunner().invoke(main, ["--help"], terminal_width=200).output
    fields = [f.name for f in dataclasses.fields(ModelConfig) if f.name != "vocab_size"]
    fields += [f.name for f in dataclasses.fields(TrainConfig) if f.name != "preset"]
    assert list(MODEL_OPTIONS) + list(TRAIN_OPTIONS) == fields
    for name in fields:
        assert option_name(name) + " " in help_text, name
    assert "--warmup-steps" in help_text and "--lr-schedule [constant|cosine]" in help_text


def test_a_preset_is_overridden_by_the_options_given_and_options_are_not_modified() -> None:
    options = {"hidden_size": 48, "lr": None, "batch_size": 8, "dropout": 0.2}
    model, train = resolve_configs("tiny", options, vocab_size=10, world_size=3)
    assert options == {"hidden_size": 48, "lr": None, "batch_size": 8, "dropout": 0.2}  # the caller's dict
    assert (model.hidden_size, model.embed_size) == (48, PRESETS["tiny"][0]["embed_size"])
    assert train.batch_size == 24  # per process, times the processes: the configs record the global batch
    assert train.steps == PRESETS["tiny"][1]["steps"] and train.dropout == 0.2 and train.preset == "tiny"
    assert train.warmup_steps == PRESETS["tiny"][1]["warmup_steps"]
    _, default = resolve_configs(None, {}, vocab_size=10, world_size=2)
    assert default.preset == "default" and default.batch_size == 2 * TrainConfig.batch_size


def test_warmup_steps_and_lr_schedule_are_options_like_the_others() -> None:
    _, train = resolve_configs("default", {"warmup_steps": 7, "lr_schedule": "constant"}, vocab_size=10)
    assert (train.warmup_steps, train.lr_schedule) == (7, "constant")


@pytest.mark.parametrize(
    ("preset", "options", "message"),
    [
        ("tiny", {"batch_size": 0}, "--batch-size must be at least 1"),
        ("tiny", {"aux_weight": 1.0}, "--aux-weight needs --posterior smoothing"),
        ("tiny", {"backward_size": 8}, "--backward-size needs --posterior smoothing"),
        ("tiny", {"hidden_size": 0}, "hidden_size must be an integer"),
        ("tiny", {"lr_schedule": "linear"}, "--lr-schedule must be"),
    ],
)
def test_options_that_cannot_work_are_refused_in_one_line(preset: str, options: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        resolve_configs(preset, options, vocab_size=10)


def resumed_run() -> Resumed:
    model, train = resolve_configs("tiny", {}, vocab_size=10)
    return Resumed(model, train, "tiny")


def test_resuming_changes_only_the_resumable_options() -> None:
    run = resumed_run()
    model, train = resolve_configs(None, {"steps": 999, "eval_every": 7, "val_chars": 0}, 10, resumed=run)
    assert model == run.model and (train.steps, train.eval_every, train.val_chars) == (999, 7, 0)
    # repeating the original command is fine
    same = {"hidden_size": run.model.hidden_size, "batch_size": run.train.batch_size, "lr": run.train.lr}
    assert resolve_configs("tiny", same, 10, resumed=run)[1].lr == run.train.lr
    with pytest.raises(UsageError, match="--hidden-size, --lr cannot change when resuming"):
        resolve_configs(None, {"hidden_size": 99, "lr": 0.5}, 10, resumed=run)
    with pytest.raises(UsageError, match="--preset default cannot change when resuming"):
        resolve_configs("default", {}, 10, resumed=run)
    with pytest.raises(UsageError, match="--steps must be at least 1"):
        resolve_configs(None, {"steps": 0}, 10, resumed=run)


def test_the_batch_of_a_resumed_run_is_compared_as_the_global_batch() -> None:
    model, train = resolve_configs("tiny", {"batch_size": 4}, vocab_size=10, world_size=2)
    run = Resumed(model, train, "tiny")
    assert resolve_configs(None, {"batch_size": 4}, 10, world_size=2, resumed=run)[1].batch_size == 8
    with pytest.raises(UsageError, match="--batch-size cannot change"):
        resolve_configs(None, {"batch_size": 4}, 10, world_size=1, resumed=run)
