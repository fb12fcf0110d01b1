"""The character vocabulary: the sorted set of a corpus's characters."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from vrnn.runtime.errors import VrnnError

MAX_SHOWN = 10  # unknown characters named in an error message


def describe_chars(chars: Iterable[str]) -> str:
    """Render characters for an error message, escaping invisible ones (e.g. '\\t')."""
    shown = sorted(set(chars))
    text = ", ".join(repr(c) for c in shown[:MAX_SHOWN])
    return text + (f" and {len(shown) - MAX_SHOWN} more" if len(shown) > MAX_SHOWN else "")


def describe_unknown(unknown: Iterable[str], share: float | None) -> tuple[str, str]:
    """How a refusal names the characters of a text that a model lacks: how many ('3 characters') and which,
    with the share of the text they make up where it is known ("'\\t', '§' and '@'; 9.5% of the text")."""
    shown = set(unknown)
    kinds = f"{len(shown)} character{'s' if len(shown) > 1 else ''}"
    which = describe_chars(shown)
    if share is not None:
        which += f"; {share:.1%} of the text" if share >= 0.001 else "; under 0.1% of the text"
    return kinds, which


def first_outside(ids: np.ndarray, size: int) -> int | None:
    """The first of `ids` outside [0, size), or None when all are inside: the check every decoder of picks
    makes before an id becomes a character."""
    if ids.size and (ids.min() < 0 or ids.max() >= size):
        return int(ids[(ids < 0) | (ids >= size)].flat[0])
    return None


class Vocabulary:
    """Maps characters to token ids (their index in sorted order) and back."""

    def __init__(self, chars: Sequence[str]) -> None:
        chars = list(chars)
        if not chars:
            raise VrnnError("vocabulary is empty")
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise VrnnError("vocabulary entries must be single characters")
        if len(set(chars)) != len(chars):
            raise VrnnError("vocabulary has duplicate characters")
        surrogates = [c for c in chars if "\ud800" <= c <= "\udfff"]
        if surrogates:  # no UTF-8 text can hold one, and printing it fails mid-output
            raise VrnnError(f"vocabulary holds a lone surrogate (U+{ord(surrogates[0]):04X}), which is not a character")
        self.chars: tuple[str, ...] = tuple(chars)
        self._index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        """The vocabulary of a corpus: its distinct characters in code-point order."""
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: object) -> bool:
        return char in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.chars == other.chars

    def __hash__(self) -> int:
        return hash(self.chars)

    def unknown(self, text: str) -> set[str]:
        """Characters of `text` that the vocabulary lacks."""
        return set(text) - self._index.keys()

    def encode(self, text: str, what: str = "text") -> np.ndarray:
        """Token ids of `text` as int64; refuses characters outside the vocabulary."""
        missing = self.unknown(text)
        if missing:
            raise VrnnError(f"{what} has characters outside the model's vocabulary: {describe_chars(missing)}")
        lookup = self._index
        return np.fromiter((lookup[c] for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids: Iterable[int]) -> str:
        """The text of a sequence of token ids; refuses an id outside the vocabulary (a negative one would
        otherwise index from the end, and decode silently)."""
        picked = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64)
        bad = first_outside(picked, len(self.chars))
        if bad is not None:
            raise VrnnError(f"character id {bad} is outside the vocabulary of {len(self.chars)} characters")
        chars = self.chars
        return "".join(chars[i] for i in picked.tolist())

    def start_char(self, preferred: str) -> str:
        """The context character for unprimed text: `preferred` if known, else the first character."""
        return preferred if preferred in self._index else self.chars[0]
