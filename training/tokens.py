"""Token files: a corpus encoded once, streaming, into a compact file of ids that every later run memory-maps.

A corpus is one UTF-8 file, or several (a directory's files, several paths, a glob): its *documents*,
concatenated in sorted path order with DOCUMENT_SEPARATOR between two documents (a single file is taken
exactly as it is).  The validation split is the last VALIDATION_FRACTION of the whole concatenation, as for a
single file.

The first use reads the corpus twice in chunks of CHUNK_BYTES (bounded memory whatever its size):
    1. check and count: UTF-8 decoded incrementally (a character split across two chunks is decoded whole),
       NUL bytes and bad UTF-8 refused with the file and byte offset, the sha256 of the concatenation, and
       how often each character occurs (the vocabulary: the distinct characters in code-point order);
    2. encode: each chunk's characters become ids (uint8 when the vocabulary has at most 256 characters,
       uint16 otherwise) appended to `<sha256>.tokens`, described by `<sha256>.json` (format, version,
       vocabulary, counts, sizes, split point, the sources).
Both are written atomically into the cache ($VRNN_CACHE/tokens, see corpus.cache_dir), named by content, so
the same text at two paths shares one file.  A small `sources-<key>.json`, keyed by the sources' paths,
finds it again without reading the corpus: a later run only stats the files.

What the cache trusts, and why it is cheap (nothing is read but a few small JSON files and the stats):
- A source is the same text when its size, modification time, inode and change time (ctime) are the same.
  Size and mtime alone are not enough: `touch -r`, `cp -p`, `rsync -t` and `tar` give another text the old
  ones.  No user tool can set a ctime back, and a file replaced by another (`cp`, `mv`, `rsync`) has another
  inode, so any change of content changes one of the four.  A changed source is read again.
- A token file is the one that was written when its JSON records its inode, size, mtime and ctime, which any
  write to it, replacement or link changes; each JSON file carries a checksum of its own fields, so an edited
  vocabulary, split or hash is caught; the index's hash must name a JSON that agrees with it.  Anything that
  does not agree is rebuilt (or, when the cache cannot be written, refused in one line).  Windows are still
  checked against the vocabulary when they are read, so no damage can reach the model as a wrong id.
- The cache writes only inside itself: a link planted at one of its names is replaced, never written through.
  Temporary files of preparations that were killed are removed; those of running ones are left alone.
- The text read must be the text the stats describe: the sources are stat'ed again after reading, and the
  second pass checks the first pass's hash, so a file edited during preparation is refused in one line.
An exclusive lock on the cache serialises builders: the ranks of a torchrun (or two runs) starting on the
same corpus build it once; the others wait, then map the same file.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import fcntl
import hashlib
import json
import mmap
import os
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from vrnn.runtime.atomic import atomic_write, remove_stale_temp_files
from vrnn.runtime.errors import VrnnError
from vrnn.runtime.schema import VALIDATION_FRACTION
from vrnn.runtime.splits import split_point
from vrnn.runtime.vocab import Vocabulary
from vrnn.training.corpus import cache_dir, corpus_files

TOKEN_FORMAT = "vrnn-tokens"
TOKEN_VERSION = 2  # 2: sources and the token file identified by inode and ctime too; checksummed JSON
CHUNK_BYTES = 1 << 24  # 16 MiB read at a time: a few times that in memory while encoding
SLICE = 1 << 20  # code points counted or looked up at a time (numpy makes an int64 copy of each slice)
DOCUMENT_SEPARATOR = "\n"  # between two documents of a multi-file corpus (a single file is unchanged)
MAX_CODE_POINT = 0x10FFFF


@dataclass(frozen=True)
class Source:
    """One document of a corpus, as found on disk when the corpus was prepared (see the module's docstring
    for why these four numbers identify its content)."""

    path: str  # absolute
    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int

    @classmethod
    def of(cls, path: Path) -> Source:
        try:
            found = path.stat()
        except OSError as exc:
            raise VrnnError(f"corpus cannot be read: {path}: {exc.strerror or exc}") from None
        return cls(str(path.resolve()), found.st_size, found.st_mtime_ns, found.st_ino, found.st_ctime_ns)


def _identity(found: os.stat_result) -> dict[str, int]:
    """What a token file's JSON records of it: any write, replacement or new link changes one of these."""
    return {"inode": found.st_ino, "size": found.st_size, "mtime_ns": found.st_mtime_ns, "ctime_ns": found.st_ctime_ns}


def _checksum(record: dict[str, Any]) -> str:
    """The checksum a cache JSON file carries of its other fields."""
    body = {k: v for k, v in record.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _with_checksum(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "checksum": _checksum(record)}


@dataclass
class TokenFile:
    """A prepared corpus: its ids memory-mapped (read-only) and what the token file's JSON says."""

    ids: np.ndarray  # uint8 or uint16 [N], a read-only memory map
    vocab: Vocabulary
    sha256: str  # of the concatenated text's UTF-8 bytes (a single file: of the file)
    split: int  # ids[:split] is the training split, ids[split:] the validation split
    meta: dict[str, Any]
    path: Path
    built_s: float | None = None  # seconds this process spent building it; None when it was reused

    @property
    def train(self) -> np.ndarray:
        return self.ids[: self.split]

    @property
    def val(self) -> np.ndarray:
        return self.ids[self.split :]


def token_cache(cache: Path | None = None) -> Path:
    """Where token files live: `cache`, else cache_dir()/tokens."""
    return cache if cache is not None else cache_dir() / "tokens"


def prepare_tokens(
    spec: str | Sequence[str],
    cache: Path | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> TokenFile:
    """The token file of a corpus, built on first use (see the module's docstring) and memory-mapped;
    its `built_s` says how long this call took to build it (None: it was there)."""
    files = corpus_files(spec)
    sources = [Source.of(p).__dict__ for p in files]  # as the JSON files list them
    root = token_cache(cache)
    with _locked(root):
        remove_stale_temp_files(root)  # of preparations that were killed (a running one holds the lock)
        index = root / f"sources-{_sources_key(sources)}.json"
        known = _read_json(index)
        if known and known.get("sources") == sources and known.get("checksum") == _checksum(known):
            opened = _open(root, str(known.get("sha256", "")))
            if opened is not None:
                return opened
        started = time.perf_counter()
        sha, counts = _scan(files, chunk_bytes)
        opened = _open(root, sha)  # the same text under another name or time
        if opened is None:
            _encode(files, sha, counts, sources, root, chunk_bytes)
            opened = _open(root, sha)
            if opened is None:
                raise VrnnError(f"the token file just written in {root} cannot be read back")
        _check_unchanged(files, sources)  # what was read is the text these stats describe
        with atomic_write(index, "w", follow_links=False) as handle:
            json.dump(_with_checksum({"sha256": sha, "sources": sources}), handle)
        opened.built_s = time.perf_counter() - started
        return opened


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold the cache's exclusive lock (released when the file is closed, or when the process dies).  The lock
    file is opened without following a link: a link planted there is replaced, never created through."""
    path = root / ".lock"
    try:
        root.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            os.unlink(path)  # a symbolic link where the lock belongs
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        raise VrnnError(f"cannot use the token cache {root}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _check_unchanged(files: list[Path], sources: list[dict]) -> None:
    """Refuse when a source changed while it was read (its stats differ from those taken before)."""
    for path, before in zip(files, sources, strict=True):
        if Source.of(path).__dict__ != before:
            raise VrnnError(f"corpus changed while it was being read: {path}; run again once it is written")


def _sources_key(sources: list[dict]) -> str:
    """The index file's name: the sources' paths alone, so that a changed source finds (and replaces) it."""
    return hashlib.sha256(json.dumps([s["path"] for s in sources]).encode()).hexdigest()[:32]


def _open_regular(path: Path) -> tuple[BinaryIO, os.stat_result] | None:
    """`path` opened for reading without following a link, and its stat; None when it is missing, a link or
    not a regular file (the cache trusts only files it wrote itself)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    handle = os.fdopen(fd, "rb")
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode):
        handle.close()
        return None
    return handle, found


def _read_json(path: Path) -> dict | None:
    """A cache JSON file's object, or None when it is missing, a link, not a regular file or not JSON."""
    opened = _open_regular(path)
    if opened is None:
        return None
    try:
        with opened[0] as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _open(root: Path, sha: str) -> TokenFile | None:
    """The token file named `sha`, or None when it is missing or does not agree with its JSON (then it is
    rebuilt): see the module's docstring for what is checked."""
    if not sha or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        return None
    meta = _read_json(root / f"{sha}.json")
    tokens = root / f"{sha}.tokens"
    try:
        if not meta or meta.get("format") != TOKEN_FORMAT or meta.get("version") != TOKEN_VERSION:
            return None
        if meta.get("checksum") != _checksum(meta) or meta["sha256"] != sha:
            return None
        vocab = Vocabulary(meta["vocab"])
        dtype = np.dtype(meta["dtype"])
        count, split, counts = int(meta["count"]), int(meta["split"]), meta["counts"]
        if dtype not in (np.uint8, np.uint16) or len(vocab) > np.iinfo(dtype).max + 1:
            return None
        if split != split_point(count) or not 0 < split < count or len(counts) != len(vocab) or sum(counts) != count:
            return None
    except (KeyError, TypeError, ValueError, VrnnError):
        return None
    opened = _open_regular(tokens)
    if opened is None:
        return None
    handle, found = opened
    with handle:
        if found.st_size != count * dtype.itemsize:
            return None
        if meta.get("file") != _identity(found):
            return None
        ids = np.memmap(handle, dtype=dtype, mode="r", shape=(count,))
    # Training reads short windows at random places: without this hint every window's page fault would
    # read ahead (and map) 128 KiB or more around it, and a few thousand windows would map most of a 1 GB
    # file into the process (file-backed, reclaimable, but counted in its RSS).
    with contextlib.suppress(AttributeError, OSError, ValueError):
        ids._mmap.madvise(mmap.MADV_RANDOM)
    return TokenFile(ids, vocab, sha, split, meta, tokens)


def _chunks(path: Path, chunk_bytes: int) -> Iterator[tuple[int, bytes, bool]]:
    """(offset, chunk, last chunk of the file) of one file; refuses what cannot be read, and an empty file."""
    try:
        with open(path, "rb") as handle:
            offset, chunk = 0, handle.read(chunk_bytes)
            if not chunk:
                raise VrnnError(f"corpus is empty: {path}")
            while chunk:
                following = handle.read(chunk_bytes)
                yield offset, chunk, not following
                offset += len(chunk)
                chunk = following
    except PermissionError:
        raise VrnnError(f"corpus cannot be read (permission denied): {path}") from None
    except IsADirectoryError:
        raise VrnnError(f"corpus is a directory, not a file: {path}") from None
    except OSError as exc:
        raise VrnnError(f"corpus cannot be read: {path}: {exc.strerror or exc}") from None


def _code_points(files: list[Path], chunk_bytes: int, check: bool) -> Iterator[tuple[bytes, np.ndarray]]:
    """The concatenated corpus chunk by chunk: (its UTF-8 bytes, its characters' code points).  With
    `check`, refuses NUL bytes and bad UTF-8, naming the file and the byte offset."""
    separator = DOCUMENT_SEPARATOR.encode()
    for number, path in enumerate(files):
        if number:
            yield separator, np.frombuffer(separator, np.uint8)
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        for offset, chunk, last in _chunks(path, chunk_bytes):
            if check and b"\x00" in chunk:
                at = offset + chunk.index(b"\x00")
                raise VrnnError(f"corpus looks binary (a NUL byte at offset {at}), not text: {path}")
            if chunk.isascii() and not decoder.getstate()[0]:
                yield chunk, np.frombuffer(chunk, np.uint8)  # ASCII: the bytes are the code points
                continue
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(chunk, final=last)
            except UnicodeDecodeError as exc:
                at = offset - pending + exc.start
                raise VrnnError(f"corpus is not UTF-8 text (bad byte at offset {at}): {path}") from None
            yield chunk, np.frombuffer(text.encode("utf-32-le"), np.uint32)


def _scan(files: list[Path], chunk_bytes: int) -> tuple[str, np.ndarray]:
    """Pass 1: the sha256 of the concatenation and each code point's count (checks every byte)."""
    digest = hashlib.sha256()
    counts = np.zeros(128, np.int64)
    for chunk, points in _code_points(files, chunk_bytes, check=True):
        digest.update(chunk)
        for start in range(0, len(points), SLICE):  # bincount copies its input as int64: a slice at a time
            found = np.bincount(points[start : start + SLICE], minlength=len(counts))
            if len(found) > len(counts):
                counts = np.concatenate([counts, np.zeros(len(found) - len(counts), np.int64)])
            counts[: len(found)] += found
    return digest.hexdigest(), counts


def _encode(files: list[Path], sha: str, counts: np.ndarray, sources: list[dict], root: Path, chunk_bytes: int) -> None:
    """Pass 2: write `<sha>.tokens` and `<sha>.json` (atomically, the tokens first), refusing a corpus whose
    text is no longer the one pass 1 read."""
    points = np.flatnonzero(counts)
    vocab = Vocabulary([chr(p) for p in points])
    dtype = np.uint8 if len(points) <= 256 else np.uint16
    if len(points) > np.iinfo(np.uint16).max + 1:
        raise VrnnError(f"corpus has {len(points):,} distinct characters; token files hold at most 65,536")
    known = np.zeros(int(points[-1]) + 1, bool)
    known[points] = True
    table = np.zeros(int(points[-1]) + 1, dtype)
    table[points] = np.arange(len(points), dtype=dtype)
    count = int(counts.sum())
    split = split_point(count)
    if count < 2 or not 0 < split < count:
        raise VrnnError(f"corpus is too short to split: {count} characters")
    changed = VrnnError(f"corpus changed while it was being read: {', '.join(map(str, files))}; run again")
    digest = hashlib.sha256()
    tokens = root / f"{sha}.tokens"
    with atomic_write(tokens, follow_links=False) as handle:
        for chunk, chunk_points in _code_points(files, chunk_bytes, check=True):
            digest.update(chunk)
            for start in range(0, len(chunk_points), SLICE):  # (indexing copies the indices as int64)
                part = chunk_points[start : start + SLICE]
                if int(part.max(initial=0)) >= len(known) or not known[part].all():
                    raise changed  # a character pass 1 did not see
                handle.write(table[part].tobytes())
        if digest.hexdigest() != sha:
            raise changed
    meta = {
        "format": TOKEN_FORMAT,
        "version": TOKEN_VERSION,
        "sha256": sha,
        "dtype": np.dtype(dtype).name,
        "count": count,
        "split": split,
        "validation_fraction": VALIDATION_FRACTION,
        "vocab": list(vocab.chars),
        "counts": [int(counts[p]) for p in points],
        "document_separator": DOCUMENT_SEPARATOR,
        "sources": sources,
        "file": _identity(os.lstat(tokens)),
    }
    with atomic_write(root / f"{sha}.json", "w", follow_links=False) as handle:
        json.dump(_with_checksum(meta), handle, ensure_ascii=False)
