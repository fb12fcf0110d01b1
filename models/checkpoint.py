"""The checkpoint format: a plain dict of tensors and primitives, loadable with weights_only=True.

Keys (version 1):
    format         "vrnn-checkpoint"
    version        1
    model_config   ModelConfig.to_dict()
    vocab          list of one-character strings (index = token id)
    start_char     context character for unprimed generation
    model          the VRNN state_dict
    optimizer      Adam state_dict (absent in weights-only files)
    step           optimizer steps taken
    rng            {"data": uint8 tensor, "noise": uint8 tensor} generator states
    train_config   TrainConfig as a dict
    metrics        {"val_elbo_nats": ..., "val_bpc": ..., "best_val_elbo_nats": ..., ...}
    corpus         {"name": ..., "sha256": ..., "chars": ...}
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
from vrnn.runtime.schema import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, ModelConfig
from vrnn.runtime.vocab import Vocabulary

REQUIRED_KEYS = ("format", "version", "model_config", "vocab", "start_char", "model", "step")


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


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and check a checkpoint; never unpickles code (weights_only=True)."""
    path = Path(path)
    if not path.exists():
        raise VrnnError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise VrnnError(f"checkpoint is a directory, not a file: {path}")
    if not os.access(path, os.R_OK):
        raise VrnnError(f"checkpoint cannot be read (permission denied): {path}")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles; the one-line error says enough
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise VrnnError(f"{path} is missing checkpoint fields: {', '.join(missing)}")
    return payload


def model_from_checkpoint(payload: dict[str, Any]) -> tuple[VRNN, Vocabulary]:
    """Rebuild the model (in eval mode, on CPU) and its vocabulary from a loaded checkpoint."""
    config = ModelConfig.from_dict(payload["model_config"])
    vocab = Vocabulary(payload["vocab"])
    if len(vocab) != config.vocab_size:
        raise VrnnError(f"checkpoint vocabulary has {len(vocab)} characters but the config says {config.vocab_size}")
    model = VRNN(config)
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, TypeError) as exc:
        raise VrnnError(f"checkpoint weights do not match its model config: {str(exc).splitlines()[0]}") from None
    return model.eval(), vocab
