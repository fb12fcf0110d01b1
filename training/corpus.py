"""What a corpus argument names: the files of CORPUS (a file, a directory, a glob, several of them, or the
name `tinyshakespeare`, downloaded once and checked), and the cache directory they and their token files live
in.  Torch-free; the token cache itself is vrnn.training.tokens, the torch windows vrnn.training.data."""

from __future__ import annotations

import glob
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from vrnn.runtime.atomic import atomic_write
from vrnn.runtime.errors import VrnnError

TINYSHAKESPEARE = "tinyshakespeare"
TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
MAX_DOWNLOAD_BYTES = 2 * 1024**3  # a download is held in memory until its sha256 is checked


def cache_dir() -> Path:
    """Where downloaded corpora and token files live: $VRNN_CACHE, else $XDG_CACHE_HOME/vrnn, else
    ~/.cache/vrnn."""
    if os.environ.get("VRNN_CACHE"):
        return Path(os.environ["VRNN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vrnn"


def resolve_corpus(spec: str | Sequence[str]) -> list[Path]:
    """The documents of CORPUS arguments: the name `tinyshakespeare` alone (where no such file exists) is
    the downloaded copy; otherwise see corpus_files."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    if specs == [TINYSHAKESPEARE] and not Path(TINYSHAKESPEARE).exists():
        return [fetch_tinyshakespeare()]
    return corpus_files(specs)


def corpus_name(spec: str | Sequence[str]) -> str:
    """How messages name a corpus: its one argument's file name, or the first and how many more."""
    specs = [spec] if isinstance(spec, str) else list(spec)
    first = Path(specs[0]).name
    return first if len(specs) == 1 else f"{first} and {len(specs) - 1} more"


def corpus_files(spec: str | Sequence[str]) -> list[Path]:
    """The documents of CORPUS arguments: each a file, a directory (every file below it, hidden ones
    skipped) or a glob pattern; sorted by path, each once."""
    found: set[Path] = set()
    for item in [spec] if isinstance(spec, str) else list(spec):
        path = Path(item)
        if path.is_dir():
            below = [p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path))]
            if not below:
                raise VrnnError(f"corpus directory has no files: {path}")
            found.update(below)
        elif path.is_file():
            found.add(path)
        elif path.exists():  # a FIFO or a device cannot be read twice (the two passes) or mapped
            raise VrnnError(f"corpus is not a regular file: {path}")
        elif any(c in item for c in "*?["):
            matches = [Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file()]
            if not matches:
                raise VrnnError(f"corpus pattern matches no file: {item}")
            found.update(matches)
        else:
            raise VrnnError(f"corpus not found: {path}")
    return sorted(found, key=lambda p: str(p.resolve()))


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


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
            data = response.read(MAX_DOWNLOAD_BYTES)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise VrnnError(
            f"could not download Tiny Shakespeare from {url}: {reason}; pass a local copy as CORPUS instead, "
            f"put it at {target}, or point $VRNN_TINYSHAKESPEARE_URL at a mirror"
        ) from None
    if _sha256(data) != TINYSHAKESPEARE_SHA256:
        raise VrnnError(f"download from {url} has the wrong sha256 (expected {TINYSHAKESPEARE_SHA256}); not using it")
    target.parent.mkdir(parents=True, exist_ok=True)
    # The copy is the cache's own file: whatever is in its place (a FIFO, which writing through would wait on
    # forever, or a link) is replaced, never written through.
    with atomic_write(target, follow_links=False) as handle:
        handle.write(data)
    return target


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
