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
- Only regular files are read, and they are checked without blocking: a FIFO, a device or a directory at one
  of the cache's names is taken for a missing file and replaced (an empty directory is removed; one with files
  in it is refused in one line naming it).

Locks are per corpus, never per cache: a builder holds an exclusive lock named by its sources (and, while it
writes the token file, one named by the text's hash, which two corpora of the same text share), so the ranks
of a torchrun (or two runs) starting on the same corpus build it once while the others wait, then map the same
file, and a preparation that hangs or is paused holds up only the runs on its own corpus.  A run that waits
says so once on stderr, naming the lock's holder (its PID, and since when).  Reading a token file that is
there and agrees with its JSON takes no lock at all, so a cache on a read-only file system (a shared dataset
cache) is used as it is; only a corpus that must be built there is refused, in one line.
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
import re
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
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
NOTE_AFTER_S = 1.0  # a wait for a lock shorter than this (a torchrun peer building a small corpus) goes unsaid
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)  # what a cache that cannot be written fails with
SHA_JSON = re.compile(r"[0-9a-f]{64}\.json")  # a token file's JSON, by name


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
    note: Callable[[str], None] | None = None,
) -> TokenFile:
    """The token file of a corpus, built on first use (see the module's docstring) and memory-mapped;
    its `built_s` says how long this call took to build it (None: it was there).  `note` receives the one
    line said while this call waits for another process's lock (default: stderr, see `note_on_stderr`)."""
    files = corpus_files(spec)
    sources = [Source.of(p).__dict__ for p in files]  # as the JSON files list them
    root = token_cache(cache)
    key = _sources_key(sources)
    index = root / f"sources-{key}.json"
    # The common case, a token file that is there and agrees with its JSON, needs neither a lock nor write
    # access: a run on another corpus, a hung preparer or a read-only cache is no obstacle to it.
    opened = _find(root, index, sources)
    if opened is not None:
        return opened
    waiting = _Waiting(_describe_corpus(files), note or note_on_stderr)
    try:
        with _locked(root, f"sources-{key}", waiting):
            return _build(files, sources, root, index, waiting, chunk_bytes)
    except _NotWritable as exc:
        return _read_only(files, sources, root, waiting.corpus, exc.reason, chunk_bytes)


def _find(root: Path, index: Path, sources: list[dict]) -> TokenFile | None:
    """The token file the index of these sources names, when the index and the file agree with them."""
    known = _read_json(index)
    if known and known.get("sources") == sources and known.get("checksum") == _checksum(known):
        return _open(root, str(known.get("sha256", "")))
    return None


def _build(
    files: list[Path], sources: list[dict], root: Path, index: Path, waiting: _Waiting, chunk_bytes: int
) -> TokenFile:
    """Under the corpus's lock: the token file, found again or built, and the index that finds it."""
    remove_stale_temp_files(root)  # of preparations that were killed (those of live processes are kept)
    opened = _find(root, index, sources)  # built by the process whose lock this one waited for
    if opened is not None:
        return opened
    started = time.perf_counter()
    sha, counts = _scan(files, chunk_bytes)
    try:
        # Two corpora of the same text (one file at two paths) write the same `<sha>` files: one at a time.
        with _locked(root, sha, waiting):
            opened = _open(root, sha)  # the same text under another name or time
            if opened is None:
                _encode(files, sha, counts, sources, root, chunk_bytes)
                opened = _open(root, sha)
                if opened is None:
                    raise VrnnError(f"the token file just written in {root} cannot be read back")
        _check_unchanged(files, sources)  # what was read is the text these stats describe
        _make_way(index)
        with atomic_write(index, "w", follow_links=False) as handle:
            json.dump(_with_checksum({"sha256": sha, "sources": sources}), handle)
    except OSError as exc:  # (the corpus's own errors are VrnnErrors already)
        if exc.errno in _NOT_WRITABLE:
            raise VrnnError(_read_only_message(waiting.corpus, root, exc.strerror or str(exc))) from None
        raise VrnnError(f"cannot write the token cache {root}: {exc.strerror or exc}") from None
    opened.built_s = time.perf_counter() - started
    return opened


def _read_only(
    files: list[Path], sources: list[dict], root: Path, corpus: str, reason: str, chunk_bytes: int
) -> TokenFile:
    """A cache this process cannot write (a shared, read-only one) whose index does not name the corpus: its
    token file may still be there under the text's hash (the same text at another path, or on the machine
    that prepared the cache), which reading the text once finds.  Anything else is refused in one line."""
    if any(SHA_JSON.fullmatch(entry.name) for entry in _entries(root)):  # else reading the text is no use
        sha, _ = _scan(files, chunk_bytes)
        opened = _open(root, sha)
        if opened is not None:
            _check_unchanged(files, sources)
            return opened
    raise VrnnError(_read_only_message(corpus, root, reason))


def _entries(root: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(root) as found:
            return list(found)
    except OSError:
        return []


def _read_only_message(corpus: str, root: Path, reason: str) -> str:
    return (
        f"the token file of {corpus} must be built, but the token cache {root} is not writable ({reason}): "
        "set $VRNN_CACHE to a writable folder"
    )


class _NotWritable(Exception):
    """The cache cannot be written (read-only file system, no permission): raised before anything is done."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Waiting:
    """What a preparation says while it waits for a lock, once whichever locks it waits for."""

    corpus: str  # how the message names the corpus
    note: Callable[[str], None]
    said: bool = False


def note_on_stderr(message: str) -> None:
    """Say `message` on stderr as one line, after the running command's name (`vrnn-train: ...`)."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    print(f"{name if name.startswith('vrnn') else 'vrnn'}: {message}", file=sys.stderr, flush=True)


def _describe_corpus(files: list[Path]) -> str:
    """How the waiting message and refusals name a corpus: its file, or its first file and how many more."""
    more = len(files) - 1
    return str(files[0]) if not more else f"{files[0]} and {more} more file{'s' if more > 1 else ''}"


def lock_path(root: Path, name: str) -> Path:
    """The lock file of `name` (a corpus's `sources-<key>`, or a text's sha256) in the cache `root`."""
    return root / f".lock-{name}"


@contextlib.contextmanager
def _locked(root: Path, name: str, waiting: _Waiting) -> Iterator[None]:
    """Hold the exclusive lock `name` in the cache (released when the file is closed, or when the process
    dies), saying once through `waiting` whose it is if it is held for more than NOTE_AFTER_S.  Raises
    _NotWritable when the cache cannot be written.

    The lock file records its holder (PID and time) for that message, and is removed when the lock is
    released, so that locks do not pile up, one per corpus ever prepared; a process that opened it just
    before is detected by comparing inodes once it holds the lock, and locks the new file instead (as
    vrnn.training.run_lock does)."""
    path = lock_path(root, name)
    while True:
        fd = _open_lock(root, path)
        try:
            _wait_for(fd, waiting)
            try:
                same = os.lstat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)  # the holder removed this file as this process opened it: lock the one there now
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {time.time():.0f}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _open_lock(root: Path, path: Path) -> int:
    """The lock file `path`, opened for writing without following a link: whatever is there and is not a
    regular file (a link, a FIFO, a device, an empty directory) is replaced, never opened, so this never
    blocks and never writes outside the cache."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        for _ in range(10):  # (another process may put something there between two of these steps)
            _make_way(path, special_too=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return fd
            os.close(fd)
    except OSError as exc:
        if exc.errno in _NOT_WRITABLE:
            raise _NotWritable(exc.strerror or str(exc)) from None
        raise VrnnError(f"cannot use the token cache {root}: {exc.strerror or exc}") from None
    raise VrnnError(f"cannot use the token cache {root}: something keeps replacing its lock file {path.name}")


def _wait_for(fd: int, waiting: _Waiting) -> None:
    """Take the exclusive lock of `fd`, waiting as long as another process holds it, and saying once (after
    NOTE_AFTER_S) whose lock it is: a paused or hung holder would otherwise look like a silent hang."""
    deadline = time.monotonic() + NOTE_AFTER_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if waiting.said or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if not waiting.said:
        waiting.said = True
        waiting.note(f"waiting for the token cache of {waiting.corpus}, {_holder(fd)}")
    fcntl.flock(fd, fcntl.LOCK_EX)


def _holder(fd: int) -> str:
    """Who holds the lock of `fd`, from what the holder wrote in it: 'locked by PID 1234 since 10:49:02'."""
    try:
        pid_text, since_text = os.pread(fd, 64, 0).decode("ascii").split()
        pid, since = int(pid_text), float(since_text)
    except (OSError, ValueError):
        return "locked by another process"
    when = time.localtime(since)
    shown = time.strftime("%H:%M:%S" if when[:3] == time.localtime()[:3] else "%Y-%m-%d %H:%M:%S", when)
    try:  # a paused preparer (Ctrl-Z, SIGSTOP) waits for someone to resume it: say so
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        state = ""
    paused = f" (stopped: `kill -CONT {pid}` resumes it)" if state in ("T", "t") else ""
    return f"locked by PID {pid} since {shown}{paused}"


def _make_way(path: Path, special_too: bool = False) -> None:
    """Clear one of the cache's names before it is written: an empty directory there is removed (it is no
    file of the cache's); one with files in it is refused in one line naming it (they may be someone's).  A
    link, FIFO or device is left to the write, which replaces it, unless `special_too` (the lock file, which
    is opened in place rather than replaced): then it is removed here."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        try:
            os.rmdir(path)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise VrnnError(
                    f"a directory with files in it is where the token cache keeps a file: {path}; remove it"
                ) from None
            raise
    elif special_too and not stat.S_ISREG(mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


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
    not a regular file (the cache trusts only files it wrote itself).  Never blocks: opening a FIFO for
    reading would wait for a writer forever, so it is opened non-blocking and checked before it is read (the
    flag changes nothing for a regular file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode):  # (before fdopen, which refuses a directory naming only the fd)
        os.close(fd)
        return None
    return os.fdopen(fd, "rb"), found


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
    _make_way(tokens)
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
    _make_way(root / f"{sha}.json")
    with atomic_write(root / f"{sha}.json", "w", follow_links=False) as handle:
        json.dump(_with_checksum(meta), handle, ensure_ascii=False)
