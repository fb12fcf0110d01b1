"""The checkpoint format: a plain dict of tensors and primitives, loadable with weights_only=True.

Keys (version 2):
    format         "vrnn-checkpoint"
    version        2
    model_config   ModelConfig.to_dict()
    vocab          list of one-character strings (index = token id)
    start_char     context character for unprimed generation
    model          the VRNN state_dict
    optimizer      Adam state_dict (absent in weights-only files)
    step           optimizer steps taken
    rng            {"data": uint8 tensor, "noise": uint8 tensor} generator states
    train_config   TrainConfig as a dict
    metrics        {"val_elbo_nats": ..., "val_bpc": ..., "best_<selection metric>": ..., "history": [...]}
    corpus         {"name": ..., "sha256": ...}

Older versions are read through UPGRADES, one step per version.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from vrnn.models.vrnn import VRNN
from vrnn.runtime.atomic import atomic_write
from vrnn.runtime.errors import VrnnError
from vrnn.runtime.inputs import check_input_file
from vrnn.runtime.onnx_meta import read_metadata
from vrnn.runtime.schema import CELL_FORMAT, META_FORMAT, ModelConfig
from vrnn.runtime.vocab import Vocabulary

CHECKPOINT_FORMAT = "vrnn-checkpoint"
CHECKPOINT_VERSION = 2
REQUIRED_KEYS = ("format", "version", "model_config", "vocab", "start_char", "model", "step")


def build_checkpoint(
    *,
    model: torch.nn.Module,
    config: ModelConfig,
    vocab: Vocabulary,
    start_char: str,
    step: int,
    train_config: dict[str, Any],
    metrics: dict[str, Any],
    corpus: dict[str, str],
    optimizer: torch.optim.Optimizer | None = None,
    rng: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict (the format above): with `optimizer` and `rng` a resumable one, without them the
    weights-only kind that `.best.pt` files and the bundled model are."""
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": config.to_dict(),
        "vocab": list(vocab.chars),
        "start_char": start_char,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": step,
        "train_config": train_config,
        "metrics": metrics,
        "corpus": corpus,
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if rng is not None:
        payload["rng"] = rng
    return payload


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write `payload` atomically: readers see the old file or the new one, never a torn one."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # serialise fully before touching the destination
    with atomic_write(path) as handle:
        handle.write(buffer.getbuffer())


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (recorded in exported cells to trace them to a checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _upgrade_from_1(payload: dict[str, Any]) -> None:
    """Version 1 knew one dropout scope, the state alone (version 2 adds train_config.dropout_scope)."""
    train_config = payload.get("train_config")
    if isinstance(train_config, dict):
        train_config.setdefault("dropout_scope", "state")


# version -> the step that turns a checkpoint of that version into one of the next.
UPGRADES = {1: _upgrade_from_1}


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and check a checkpoint; never unpickles code (weights_only=True)."""
    path = check_input_file(path, "checkpoint")  # a FIFO would block torch.load forever: refused unopened
    if not os.access(path, os.R_OK):
        raise VrnnError(f"checkpoint cannot be read (permission denied): {path}")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles; the one-line error says enough
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if _is_vrnn_cell(path):
            raise VrnnError(f"{path} is an ONNX cell, not a checkpoint: sample from it with vrnn-run") from None
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise VrnnError(
                f"{path} holds pickled objects that a vrnn checkpoint never has; refusing to load it"
            ) from None
        raise VrnnError(
            f"{path} is not a readable vrnn checkpoint (truncated or another format): {first[:200]}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise VrnnError(f"{path} is not a vrnn checkpoint (no '{CHECKPOINT_FORMAT}' format tag)")
    version = payload.get("version")
    if not isinstance(version, int) or version < 1:
        raise VrnnError(f"{path} has an invalid checkpoint version {version!r}")
    if version > CHECKPOINT_VERSION:
        raise VrnnError(
            f"{path} has checkpoint version {version}; this vrnn reads up to {CHECKPOINT_VERSION}: upgrade vrnn"
        )
    for step in range(version, CHECKPOINT_VERSION):
        UPGRADES[step](payload)
    payload["version"] = CHECKPOINT_VERSION
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise VrnnError(f"{path} is missing checkpoint fields: {', '.join(missing)}")
    try:
        check_fields(payload)
    except VrnnError as exc:
        raise VrnnError(f"{path}: {exc}") from None
    return payload


def _is_vrnn_cell(path: Path) -> bool:
    """Whether `path` holds an exported cell (a common mix-up with checkpoints)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(64 << 20)
        return read_metadata(data, str(path)).get(META_FORMAT) == CELL_FORMAT
    except (OSError, VrnnError):
        return False


def check_fields(payload: dict[str, Any]) -> None:
    """Check every field's type and consistency once, here, so that no tool meets a malformed one later."""

    def need(ok: bool, field: str, what: str) -> None:
        if not ok:
            raise VrnnError(f"checkpoint field {field!r} {what}")

    try:
        config = ModelConfig.from_dict(payload["model_config"])
    except (VrnnError, TypeError) as exc:
        raise VrnnError(f"checkpoint field 'model_config' is invalid ({exc})") from None
    vocab = payload["vocab"]
    need(isinstance(vocab, list), "vocab", "is not a list of characters")
    try:
        vocabulary = Vocabulary(vocab)
    except VrnnError as exc:
        raise VrnnError(f"checkpoint field 'vocab' is invalid ({exc})") from None
    need(
        len(vocabulary) == config.vocab_size,
        "vocab",
        f"has {len(vocabulary)} characters, the config {config.vocab_size}",
    )
    need(payload["start_char"] in vocabulary, "start_char", "is not a character of the checkpoint's vocabulary")
    model = payload["model"]
    need(isinstance(model, dict) and all(isinstance(k, str) for k in model), "model", "is not a dict of weights")
    need(all(isinstance(v, torch.Tensor) for v in model.values()), "model", "holds values that are not tensors")
    step = payload["step"]
    need(isinstance(step, int) and not isinstance(step, bool) and step >= 0, "step", "is not a non-negative integer")
    for field in ("optimizer", "train_config", "metrics", "corpus", "rng"):
        need(isinstance(payload.get(field, {}), dict), field, "is not a mapping")
    rng = payload.get("rng", {})
    need(all(isinstance(rng.get(k), torch.Tensor) for k in rng), "rng", "holds generator states that are not tensors")
    if "rng" in payload:
        need({"data", "noise"} <= rng.keys(), "rng", "lacks the data or noise generator state")
    train_config = payload.get("train_config", {})
    need(all(isinstance(v, (int, float, str, bool)) for v in train_config.values()), "train_config", "holds odd values")
    metrics = payload.get("metrics", {})
    history = metrics.get("history", [])
    need(isinstance(history, list) and all(isinstance(r, dict) for r in history), "metrics", "has a malformed history")
    for key in ("val_elbo_nats", "val_bpc", "best_val_elbo_nats", "best_val_iwae_nats"):
        value = metrics.get(key)
        need(value is None or isinstance(value, (int, float)), "metrics", f"has a non-numeric {key}")
    corpus = payload.get("corpus", {})
    need(all(isinstance(corpus.get(k, ""), str) for k in ("name", "sha256")), "corpus", "has a non-text name or sha256")


def model_from_checkpoint(payload: dict[str, Any]) -> tuple[VRNN, Vocabulary]:
    """Rebuild the model (in eval mode, on CPU) and its vocabulary from a loaded checkpoint (its fields checked
    by check_fields, as load_checkpoint does, so that a payload built by hand gets the same checks)."""
    check_fields(payload)
    config = ModelConfig.from_dict(payload["model_config"])
    vocab = Vocabulary(payload["vocab"])
    with torch.device("meta"):  # the shapes the config implies, before allocating anything it asks for
        expected = {name: tuple(t.shape) for name, t in VRNN(config).state_dict().items()}
    weights = payload["model"]
    found = {name: tuple(t.shape) for name, t in weights.items() if isinstance(t, torch.Tensor)}
    if found != expected or len(found) != len(weights):
        wrong = sorted(set(expected) ^ set(weights) | {n for n in expected if found.get(n, expected[n]) != expected[n]})
        raise VrnnError(f"checkpoint weights do not match its model config (first mismatch: {wrong[0]})")
    for name, tensor in weights.items():
        if tensor.dtype != torch.float32 or not torch.isfinite(tensor).all():
            raise VrnnError(f"checkpoint weight {name} is not finite float32 (NaN, infinity or another type)")
    model = VRNN(config)
    model.load_state_dict(weights)
    return model.eval(), vocab
