"""Corpora: reading UTF-8 text, the train/validation split, Tiny Shakespeare's download, windows."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from vrnn.runtime.atomic import atomic_write
from vrnn.runtime.errors import VrnnError
from vrnn.runtime.schema import VALIDATION_FRACTION
from vrnn.runtime.vocab import Vocabulary

TINYSHAKESPEARE = "tinyshakespeare"
TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
MAX_CORPUS_BYTES = 2 * 1024**3


def cache_dir() -> Path:
    """Where downloaded corpora live: $VRNN_CACHE, else $XDG_CACHE_HOME/vrnn, else ~/.cache/vrnn."""
    if os.environ.get("VRNN_CACHE"):
        return Path(os.environ["VRNN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vrnn"


def fetch_tinyshakespeare(url: str | None = None, timeout: float = 60.0) -> Path:
    """Download Tiny Shakespeare once into the cache, check its sha256, and return its path.

    $VRNN_TINYSHAKESPEARE_URL overrides the source (a mirror, or a local server in tests).
    """
    target = cache_dir() / "tinyshakespeare.txt"
    if target.is_file() and _sha256(target.read_bytes()) == TINYSHAKESPEARE_SHA256:
        return target
    url = url or os.environ.get("VRNN_TINYSHAKESPEARE_URL") or TINYSHAKESPEARE_URL
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read(MAX_CORPUS_BYTES)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise VrnnError(
            f"could not download Tiny Shakespeare from {url}: {reason}; pass a local copy as CORPUS instead, "
            f"put it at {target}, or point $VRNN_TINYSHAKESPEARE_URL at a mirror"
        ) from None
    if _sha256(data) != TINYSHAKESPEARE_SHA256:
        raise VrnnError(f"download from {url} has the wrong sha256 (expected {TINYSHAKESPEARE_SHA256}); not using it")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as handle:
        handle.write(data)
    return target


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_corpus(source: str) -> tuple[str, str]:
    """Return (text, sha256 of its bytes) for a UTF-8 file, or for the name 'tinyshakespeare'."""
    path = fetch_tinyshakespeare() if source == TINYSHAKESPEARE and not Path(source).exists() else Path(source)
    if not path.exists():
        raise VrnnError(f"corpus not found: {path}")
    if path.is_dir():
        raise VrnnError(f"corpus is a directory, not a file: {path}")
    try:
        if path.stat().st_size > MAX_CORPUS_BYTES:
            raise VrnnError(f"corpus is larger than {MAX_CORPUS_BYTES >> 30} GiB: {path}")
        data = path.read_bytes()
    except PermissionError:
        raise VrnnError(f"corpus cannot be read (permission denied): {path}") from None
    if not data:
        raise VrnnError(f"corpus is empty: {path}")
    if b"\x00" in data:
        raise VrnnError(f"corpus looks binary (contains NUL bytes), not text: {path}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VrnnError(f"corpus is not UTF-8 text (bad byte at offset {exc.start}): {path}") from None
    return text, _sha256(data)


@dataclass
class Corpus:
    """A text as token ids, with its vocabulary and the 90/10 train/validation split."""

    vocab: Vocabulary
    train: torch.Tensor  # int64 [N_train]
    val: torch.Tensor  # int64 [N_val]
    sha256: str
    name: str

    @classmethod
    def from_text(cls, text: str, name: str, sha256: str, vocab: Vocabulary | None = None) -> Corpus:
        """Encode `text` (with its own vocabulary unless one is given) and split it."""
        vocab = vocab or Vocabulary.from_text(text)
        ids = torch.from_numpy(vocab.encode(text, what=f"corpus {name}"))
        split = int(len(ids) * (1 - VALIDATION_FRACTION))
        return cls(vocab, ids[:split], ids[split:], sha256, name)

    def check_window(self, seq_len: int) -> None:
        """Refuse a corpus whose splits cannot hold one window of seq_len + 1 characters."""
        need = seq_len + 1
        if len(self.train) < need or len(self.val) < 2:
            total = len(self.train) + len(self.val)
            raise VrnnError(
                f"corpus {self.name} is too short: {total} characters, but one training window needs "
                f"{need} in the first 90% (use a smaller --seq-len or a longer text)"
            )


def sample_windows(ids: torch.Tensor, batch: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """`batch` random windows of seq_len + 1 consecutive ids ([B, T+1]): a context character and T targets."""
    starts = torch.randint(0, len(ids) - seq_len, (batch,), generator=generator)
    return torch.stack([ids[s : s + seq_len + 1] for s in starts.tolist()])


def validation_windows(ids: torch.Tensor, seq_len: int) -> list[torch.Tensor]:
    """Cut a split into consecutive windows [T+1] that overlap by one character.

    Each window's first character is context; the others are predicted, so every
    character after the split's first is predicted exactly once.  The last window
    may be shorter.
    """
    windows = []
    for start in range(0, len(ids) - 1, seq_len):
        windows.append(ids[start : start + seq_len + 1])
    return windows
