"""Where the bundled Tiny Shakespeare checkpoint (weights only) lives: package data of the torch side.

`vrnn-eval` without --checkpoint scores with it; the runtime's bundled cell was exported from it."""

from __future__ import annotations

from pathlib import Path

BUNDLED_CHECKPOINT = Path(__file__).resolve().parent / "bundled-checkpoint" / "shakespeare.pt"
