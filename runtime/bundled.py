"""Where the bundled Tiny Shakespeare model lives inside the installed package.

`vrnn-run` without a CELL samples from the bundled cell; `vrnn-eval` without
--checkpoint scores with the bundled (weights-only) checkpoint.  Both files are
package data in `vrnn/runtime/bundled/`; the runtime only ever opens the cell.
"""

from __future__ import annotations

from pathlib import Path

from vrnn.runtime.errors import VrnnError

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
BUNDLED_CELL = BUNDLED_DIR / "shakespeare.onnx"
BUNDLED_CHECKPOINT = BUNDLED_DIR / "shakespeare.pt"


def bundled_file(path: Path, option: str) -> Path:
    """`path` if this install ships it, else a one-line error saying which argument to give instead."""
    if not path.is_file():
        raise VrnnError(f"this install has no bundled model ({path.name} is missing): give {option} explicitly")
    return path
