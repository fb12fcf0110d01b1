"""vrnn-train's model and training options, and how a command line resolves into the two configs.

Every field of ModelConfig (but vocab_size, which the corpus decides) and of TrainConfig (but preset, which
records --preset) is an option, named after the field (`--hidden-size` sets hidden_size): the dataclasses are
the one list.  `resolve_configs` turns a preset, the options given and, when resuming, the checkpoint's
configs into the run's ModelConfig and TrainConfig, refusing what cannot work in one line.  Torch-free, so
that `vrnn-train --help` and its tests need no PyTorch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from vrnn.runtime.errors import UsageError, VrnnError
from vrnn.runtime.schema import ModelConfig
from vrnn.training.config import PRESETS, TrainConfig

MODEL_OPTIONS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name != "vocab_size")
TRAIN_OPTIONS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "preset")
# Options that may change when a run is resumed; the rest would make it a different run.
RESUMABLE_OPTIONS = ("steps", "eval_every", "val_chars")
DEFAULT_PRESET = "default"


def option_name(field: str) -> str:
    """The command-line spelling of a config field: hidden_size -> --hidden-size."""
    return "--" + field.replace("_", "-")


def preset_value(preset: str, field: str) -> Any:
    """What `preset` sets `field` to (the dataclass default where the preset is silent)."""
    sizes, settings = PRESETS[preset]
    if field in sizes or field in settings:
        return {**sizes, **settings}[field]
    cls = ModelConfig if field in MODEL_OPTIONS else TrainConfig
    return next(f.default for f in dataclasses.fields(cls) if f.name == field)


@dataclasses.dataclass(frozen=True)
class Resumed:
    """What a checkpoint being resumed fixes: its configs and the preset it recorded (None: none)."""

    model: ModelConfig
    train: TrainConfig
    preset: str | None


def resolve_configs(
    preset: str | None,
    options: Mapping[str, Any],
    vocab_size: int,
    world_size: int = 1,
    resumed: Resumed | None = None,
) -> tuple[ModelConfig, TrainConfig]:
    """The run's (ModelConfig, TrainConfig): `preset` (None: the default one) overridden by the `options`
    given (None: not given), or, when resuming, the checkpoint's configs with only RESUMABLE_OPTIONS changed.

    --batch-size is per process: the configs record the global batch, `world_size` times it.  `options` is not
    modified."""
    unknown = set(options) - set(MODEL_OPTIONS) - set(TRAIN_OPTIONS)
    if unknown:
        raise ValueError(f"not config options: {sorted(unknown)}")
    given = {k: v for k, v in options.items() if v is not None}
    if given.get("minutes", 0) > 0 and "steps" in given:
        raise UsageError(
            "--minutes and --steps exclude each other: --minutes chooses the steps (and the schedule) to fit it"
        )
    if "batch_size" in given:
        if given["batch_size"] < 1:
            raise UsageError(f"--batch-size must be at least 1, got {given['batch_size']}")
        given["batch_size"] *= world_size
    if resumed is not None:
        return _resumed_configs(preset, given, resumed)
    preset = preset or DEFAULT_PRESET
    sizes, settings = PRESETS[preset]
    model = {**sizes, **{k: v for k, v in given.items() if k in MODEL_OPTIONS}}
    train = {**settings, **{k: v for k, v in given.items() if k in TRAIN_OPTIONS}}
    if "batch_size" not in given:
        train["batch_size"] = preset_value(preset, "batch_size") * world_size
    try:
        model_config = ModelConfig(vocab_size=vocab_size, **model)
    except VrnnError as exc:
        raise UsageError(str(exc).removeprefix("model config: ")) from None
    train_config = TrainConfig(**train, preset=preset).validate()
    if train_config.aux_weight > 0 and model_config.posterior != "smoothing":
        raise UsageError("--aux-weight needs --posterior smoothing (the auxiliary cost predicts its backward state)")
    # Only a value given on the command line: a preset's width is no choice of the user's.  0 is the default.
    if given.get("backward_size", 0) > 0 and model_config.posterior != "smoothing":
        raise UsageError("--backward-size needs --posterior smoothing (the width of that posterior's backward GRU)")
    return model_config, train_config


def _resumed_configs(preset: str | None, given: dict[str, Any], resumed: Resumed) -> tuple[ModelConfig, TrainConfig]:
    """The checkpoint's configs with the resumable options given; any other option that differs is refused
    (repeating the original command with --resume is fine, changing the run is not)."""
    saved = {**resumed.train.to_dict(), **resumed.model.to_dict()}
    changed = [k for k, v in given.items() if k not in RESUMABLE_OPTIONS and v != saved[k]]
    if changed:
        names = ", ".join(option_name(k) for k in changed)
        raise UsageError(f"{names} cannot change when resuming (the checkpoint fixes them)")
    if preset is not None and preset != resumed.preset:
        was = f"was trained with --preset {resumed.preset}" if resumed.preset else "does not record a preset"
        raise UsageError(f"--preset {preset} cannot change when resuming (the checkpoint {was}): drop --preset")
    resumable = {k: v for k, v in given.items() if k in RESUMABLE_OPTIONS}
    return resumed.model, dataclasses.replace(resumed.train, **resumable).validate()
