"""Where the bundled Tiny Shakespeare model lives inside the installed package.

`vrnn-run` without a CELL samples from the bundled cell, package data of the runtime in
`vrnn/runtime/bundled-cell/`.  The checkpoint it was exported from lives with the torch side
(vrnn.models.bundled), which `vrnn-eval` and `vrnn-sample` use.
"""

from __future__ import annotations

from pathlib import Path

from vrnn.runtime.errors import VrnnError

BUNDLED_CELL = Path(__file__).resolve().parent / "bundled-cell" / "shakespeare.onnx"


def bundled_file(path: Path, option: str) -> Path:
    """`path` if this install ships it, else a one-line error saying which argument to give instead."""
    if not path.is_file():
        raise VrnnError(f"this install has no bundled model ({path.name} is missing): give {option} explicitly")
    return path
