"""The train/validation split of a text, and the parts of it that the commands score.

One rule for every corpus and command: the first 90% of the characters (of a single file, or of the
concatenation of several) is the training split, the last 10% the validation split.  The validation split
has two halves, so that a run can choose its checkpoint on the first and be reported on the second, which
neither training nor checkpoint selection has seen (`vrnn-train --select-on val-first-half`).
"""

from __future__ import annotations

from vrnn.runtime.schema import VALIDATION_FRACTION

# --split of vrnn-eval and vrnn-score: which characters are scored.
SPLITS = ("all", "train", "val", "val-first-half", "val-second-half")


def split_point(count: int) -> int:
    """The number of characters in the training split of a text of `count` characters."""
    return int(count * (1 - VALIDATION_FRACTION))


def split_bounds(count: int, split: str) -> tuple[int, int]:
    """[start, end) of the characters of `split` (one of SPLITS) in a text of `count` characters."""
    train_end = split_point(count)
    middle = train_end + (count - train_end) // 2
    bounds = {
        "all": (0, count),
        "train": (0, train_end),
        "val": (train_end, count),
        "val-first-half": (train_end, middle),
        "val-second-half": (middle, count),
    }
    if split not in bounds:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return bounds[split]
