"""A hostile user's table for the token cache (vrnn.training.tokens): it must never train on the wrong text,
never write outside itself, and never keep garbage.  Each case failed before the cache identified sources and
token files by inode and ctime, checksummed its JSON files, replaced links instead of writing through them,
removed dead preparations' temporary files and checked the text between its two passes; those of sections 6
to 13 failed (or hung) before it checked its files without blocking, locked per corpus and said whose lock it
waited for, and read a valid read-only cache without a lock.

Everything happens in the test's own temporary folder: the victims of planted links are files made there.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TEXT, bin_path

from vrnn.runtime.errors import VrnnError
from vrnn.training import tokens as tokens_module
from vrnn.training.data import Corpus, sample_windows
from vrnn.training.tokens import prepare_tokens

OTHER_TEXT = TINY_TEXT.replace("o", "0").replace("e", "3")  # the same size, other characters


def decode(tokens) -> str:
    return "".join(tokens.vocab.chars[i] for i in np.asarray(tokens.ids))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def replace_keeping_times(path: Path, text: str) -> None:
    """What `cp -p`, `rsync -t`, `tar` and `touch -r` leave: other content, the same size and mtime."""
    before = path.stat()
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size and path.stat().st_mtime_ns == before.st_mtime_ns


def left_in(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.endswith(".tmp"))


# 1. Stale tokens ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("other", [OTHER_TEXT, TINY_TEXT[::-1]], ids=["new-characters", "same-characters"])
def test_a_source_replaced_with_the_same_size_and_mtime_is_read_again(tmp_path: Path, other: str) -> None:
    corpus, cache = tmp_path / "t.txt", tmp_path / "cache"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    prepare_tokens(str(corpus), cache=cache)
    replace_keeping_times(corpus, other)
    again = prepare_tokens(str(corpus), cache=cache)
    assert again.sha256 == sha256(other) and decode(again) == other
    assert again.vocab.chars == tuple(sorted(set(other)))


@pytest.mark.slow
def test_resume_refuses_a_corpus_whose_content_changed_behind_the_same_times(tmp_path: Path) -> None:
    corpus, ckpt = tmp_path / "t.txt", tmp_path / "run.pt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    env = {**os.environ, "VRNN_CACHE": str(tmp_path / "cache")}
    common = ["--preset", "tiny", "--threads", "1", "-q", "--seq-len", "16", "--eval-every", "2"]
    train = [bin_path("vrnn-train"), str(corpus), "-o", str(ckpt), *common]
    subprocess.run([*train, "--steps", "2"], check=True, env=env, capture_output=True)
    assert torch.load(ckpt, weights_only=True)["corpus"]["sha256"] == sha256(TINY_TEXT)
    replace_keeping_times(corpus, TINY_TEXT[::-1])  # the same characters: only the content says it changed
    result = subprocess.run([*train, "--steps", "4", "--resume"], env=env, capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "is not the text" in result.stderr and "Traceback" not in result.stderr


# 2. Token files trusted blindly -----------------------------------------------------------------------------


def _damage(kind: str, tokens, cache: Path, other) -> None:
    meta_path = tokens.path.with_suffix(".json")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    sources = [tokens_module.Source(**source) for source in meta["sources"]]
    index = cache / f"sources-{tokens_module._sources_key([s.__dict__ for s in sources])}.json"
    if kind == "0xff":
        tokens.path.write_bytes(b"\xff" * tokens.path.stat().st_size)
    elif kind == "zeros":
        tokens.path.write_bytes(b"\x00" * tokens.path.stat().st_size)
    elif kind == "replaced-by-another-corpus":
        tokens.path.unlink()
        tokens.path.write_bytes(other.path.read_bytes())
    elif kind == "linked-to-another-corpus":
        tokens.path.unlink()
        tokens.path.symlink_to(other.path)
    elif kind == "hard-linked-to-another-corpus":
        tokens.path.unlink()
        os.link(other.path, tokens.path)
    elif kind == "vocab-edited":
        meta["vocab"] = list(reversed(meta["vocab"]))
        meta_path.write_text(json.dumps(meta), encoding="utf-8")
    elif kind == "split-1":
        meta["split"] = 1
        meta_path.write_text(json.dumps(meta), encoding="utf-8")
    elif kind == "index-names-another-corpus":
        record = json.loads(index.read_text())
        index.write_text(json.dumps({**record, "sha256": other.sha256}))
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["0xff", "zeros", "replaced-by-another-corpus", "linked-to-another-corpus", "hard-linked-to-another-corpus",
     "vocab-edited", "split-1", "index-names-another-corpus"],
)  # fmt: skip
def test_a_damaged_or_foreign_token_file_is_rebuilt_not_trusted(tmp_path: Path, kind: str) -> None:
    cache = tmp_path / "cache"
    corpus, other_corpus = tmp_path / "t.txt", tmp_path / "other.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    other_corpus.write_text(OTHER_TEXT, encoding="utf-8")  # the same size: its token file too
    tokens = prepare_tokens(str(corpus), cache=cache)
    other = prepare_tokens(str(other_corpus), cache=cache)
    other_bytes = other.path.read_bytes()
    _damage(kind, tokens, cache, other)
    again = prepare_tokens(str(corpus), cache=cache)
    assert again.built_s is not None, "the damaged token file was trusted"
    assert decode(again) == TINY_TEXT and again.sha256 == sha256(TINY_TEXT) and again.split == tokens.split
    assert other.path.read_bytes() == other_bytes  # the other corpus's file was never written
    assert decode(prepare_tokens(str(other_corpus), cache=cache)) == OTHER_TEXT


@pytest.mark.slow
def test_a_token_file_overwritten_with_0xff_trains_and_scores_again(tmp_path: Path) -> None:
    """From the command line: no IndexError traceback on any later run, the file is rebuilt."""
    corpus = tmp_path / "t.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    env = {**os.environ, "VRNN_CACHE": str(tmp_path / "cache")}
    train = [bin_path("vrnn-train"), str(corpus), "--preset", "tiny", "--threads", "1", "-q", "--seq-len", "16",
             "--steps", "2", "--eval-every", "2"]  # fmt: skip
    subprocess.run([*train, "-o", str(tmp_path / "a.pt")], check=True, env=env, capture_output=True)
    token_file = next((tmp_path / "cache" / "tokens").glob("*.tokens"))
    token_file.write_bytes(b"\xff" * token_file.stat().st_size)
    for argv in (
        [*train, "-o", str(tmp_path / "b.pt")],
        [bin_path("vrnn-eval"), str(corpus), "-c", str(tmp_path / "a.pt")],
    ):
        result = subprocess.run(argv, env=env, capture_output=True, text=True)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert set(np.unique(np.fromfile(token_file, np.uint8))) <= set(range(len(set(TINY_TEXT))))


def test_a_window_with_an_id_outside_the_vocabulary_is_refused_in_one_line() -> None:
    """The last guard, for damage that no stat shows: a wrong id never reaches the model."""
    corpus = Corpus.from_text(TINY_TEXT, "t", "")
    corpus.train = corpus.train.copy()
    corpus.train[:] = 200
    with pytest.raises(VrnnError, match="outside its vocabulary"):
        sample_windows(corpus, 2, 8, torch.Generator().manual_seed(0))


# 3. Links in the cache ---------------------------------------------------------------------------------------


def cache_name(corpus: Path, text: str, name: str) -> str:
    """The name in the token cache of `corpus` (whose text is `text`) of its file `name`."""
    sha = sha256(text)
    key = tokens_module._sources_key([tokens_module.Source.of(corpus).__dict__])
    if name == "lock":  # the corpus's
        return tokens_module.lock_path(Path(), f"sources-{key}").name
    if name == "text-lock":  # the text's, while its token file is written
        return tokens_module.lock_path(Path(), sha).name
    return {"tokens": f"{sha}.tokens", "json": f"{sha}.json", "index": f"sources-{key}.json"}[name]


@pytest.mark.parametrize("name", ["tokens", "json", "index", "lock", "text-lock"])
@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-user-file", "dangling"])
def test_a_link_planted_in_the_cache_is_replaced_never_written_through(tmp_path: Path, name: str, dangling) -> None:
    corpus, cache = tmp_path / "t.txt", tmp_path / "cache"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    cache.mkdir()
    victim = tmp_path / "victim.txt"
    if not dangling:
        victim.write_text("a user's file\n", encoding="utf-8")
    link = cache_name(corpus, TINY_TEXT, name)
    (cache / link).symlink_to(victim)
    tokens = prepare_tokens(str(corpus), cache=cache)
    assert decode(tokens) == TINY_TEXT
    if dangling:
        assert not victim.exists(), "a file was created outside the cache"
    else:
        assert victim.read_text(encoding="utf-8") == "a user's file\n"
    assert not (cache / link).is_symlink()
    assert decode(prepare_tokens(str(corpus), cache=cache)) == TINY_TEXT


def test_a_json_linked_to_another_corpus_json_is_replaced_and_that_json_kept(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (tmp_path / "other.txt").write_text(OTHER_TEXT, encoding="utf-8")
    other = prepare_tokens(str(tmp_path / "other.txt"), cache=cache)
    other_json = other.path.with_suffix(".json")
    kept = other_json.read_bytes()
    (cache / f"{sha256(TINY_TEXT)}.json").symlink_to(other_json)
    (tmp_path / "t.txt").write_text(TINY_TEXT, encoding="utf-8")
    assert decode(prepare_tokens(str(tmp_path / "t.txt"), cache=cache)) == TINY_TEXT
    assert other_json.read_bytes() == kept


# 4. Temporary files of killed preparations -------------------------------------------------------------------

_PREPARE = """
import sys
from pathlib import Path
from vrnn.training.tokens import prepare_tokens
prepare_tokens(sys.argv[1], cache=Path(sys.argv[2]), chunk_bytes=4096)
"""


def test_a_killed_preparation_leaves_no_temporary_file_after_the_next_run(tmp_path: Path) -> None:
    corpus, cache = tmp_path / "big.txt", tmp_path / "cache"
    corpus.write_text(TINY_TEXT * 6000, encoding="utf-8")  # about 2 MB in 4 KiB chunks: seconds of work
    child = subprocess.Popen([sys.executable, "-c", _PREPARE, str(corpus), str(cache)])
    deadline = time.monotonic() + 120
    while not (cache.is_dir() and left_in(cache)) and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.005)
    if child.poll() is not None:
        pytest.skip("the preparation finished before it could be killed mid-write")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert left_in(cache), "the kill left no temporary file: nothing was tested"
    live = cache / f".vrnn-{os.getpid()}-0123abcd.tmp"  # a preparation still running (this process)
    live.write_bytes(b"in progress")
    assert decode(prepare_tokens(str(corpus), cache=cache))[:50] == TINY_TEXT[:50]
    assert left_in(cache) == [live.name]


# 5. A source edited between the two passes ------------------------------------------------------------------


@pytest.mark.parametrize("edit", ["new-character", "same-size"])
def test_a_source_edited_between_the_passes_is_refused_in_one_line(tmp_path: Path, monkeypatch, edit: str) -> None:
    corpus, cache = tmp_path / "t.txt", tmp_path / "cache"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    scan = tokens_module._scan

    def scan_then_edit(files, chunk_bytes):
        result = scan(files, chunk_bytes)
        corpus.write_text(TINY_TEXT + "§" if edit == "new-character" else TINY_TEXT[::-1], encoding="utf-8")
        return result

    monkeypatch.setattr(tokens_module, "_scan", scan_then_edit)
    with pytest.raises(VrnnError, match="changed while it was being read"):
        prepare_tokens(str(corpus), cache=cache)
    assert not list(cache.glob("*.tokens")) and not left_in(cache)
    monkeypatch.undo()
    assert decode(prepare_tokens(str(corpus), cache=cache)) == corpus.read_text(encoding="utf-8")


# 6. A FIFO in place of a cache file ---------------------------------------------------------------------------

TRAIN = ["--preset", "tiny", "--threads", "1", "-q", "--seq-len", "16", "--steps", "2", "--eval-every", "2"]
TIMEOUT_S = 120  # a run takes seconds; a hung one is killed by subprocess.run when this runs out


def cache_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The environment of commands using the cache tmp_path/cache, and its token cache."""
    return {**os.environ, "VRNN_CACHE": str(tmp_path / "cache")}, tmp_path / "cache" / "tokens"


def train(tmp_path: Path, corpus: Path, out: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A short vrnn-train run, killed if it does not finish within TIMEOUT_S (the test then fails)."""
    argv = [bin_path("vrnn-train"), str(corpus), "-o", str(tmp_path / out), *TRAIN]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["index", "json", "tokens"])
def test_a_fifo_in_place_of_a_cache_file_is_replaced_not_waited_on(tmp_path: Path, name: str) -> None:
    """Opening a FIFO to read it waits for a writer forever: vrnn-train hung with no message."""
    corpus = tmp_path / "t.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    env, cache = cache_env(tmp_path)
    prepare_tokens(str(corpus), cache=cache)
    path = cache / cache_name(corpus, TINY_TEXT, name)
    path.unlink()
    os.mkfifo(path)
    result = train(tmp_path, corpus, "a.pt", env)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert path.is_file() and not path.is_fifo()
    assert decode(prepare_tokens(str(corpus), cache=cache)) == TINY_TEXT


_FETCH = """
import hashlib, sys
from pathlib import Path
from vrnn.training import corpus
text = Path(sys.argv[1]).read_bytes()
corpus.TINYSHAKESPEARE_SHA256 = hashlib.sha256(text).hexdigest()  # a stand-in: no network in tests
print(corpus.fetch_tinyshakespeare(Path(sys.argv[1]).as_uri()).read_bytes() == text)
"""


def test_a_fifo_in_place_of_the_downloaded_corpus_is_replaced_not_written_through(tmp_path: Path) -> None:
    """Writing through a FIFO nobody reads waits forever, as reading one does."""
    source = tmp_path / "download.txt"
    source.write_text(TINY_TEXT, encoding="utf-8")
    (tmp_path / "cache").mkdir()
    os.mkfifo(tmp_path / "cache" / "tinyshakespeare.txt")
    env, _ = cache_env(tmp_path)
    result = subprocess.run([sys.executable, "-c", _FETCH, str(source)], env=env, capture_output=True, text=True,
                            timeout=TIMEOUT_S)  # fmt: skip
    assert result.stdout.strip() == "True", result.stderr
    assert (tmp_path / "cache" / "tinyshakespeare.txt").is_file()


# 7. A hung or paused preparation holds up only its own corpus ----------------------------------------------------

_HANG = """
import sys, time
from pathlib import Path
from vrnn.training import tokens
def hang(files, chunk_bytes):  # a preparation that never ends, holding its corpus's lock
    print("preparing", flush=True)
    time.sleep(600)
tokens._scan = hang
tokens.prepare_tokens(sys.argv[1], cache=Path(sys.argv[2]))
"""


def read_until(fd: int, needle: str, timeout: float) -> str:
    """What a child wrote on the pipe `fd` until `needle` (or the end, or `timeout`)."""
    seen, deadline = b"", time.monotonic() + timeout
    while needle.encode() not in seen and (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk
    return seen.decode(errors="replace")


@pytest.fixture
def hung_preparer(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path, Path]]:
    """A preparation of corpus tmp_path/a.txt in the token cache tmp_path/cache/tokens, paused (SIGSTOP)
    while it holds the corpus's lock: (the process, the corpus, the token cache).  Killed at the end."""
    corpus, cache = tmp_path / "a.txt", tmp_path / "cache" / "tokens"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    holder = subprocess.Popen([sys.executable, "-c", _HANG, str(corpus), str(cache)], stdout=subprocess.PIPE)
    try:
        assert "preparing" in read_until(holder.stdout.fileno(), "preparing", TIMEOUT_S)
        holder.send_signal(signal.SIGSTOP)
        yield holder, corpus, cache
    finally:
        holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()


@pytest.mark.slow
def test_a_paused_preparation_does_not_hold_up_another_corpus(tmp_path: Path, hung_preparer) -> None:
    """The lock was the whole cache's: every run on that cache waited, silently, for ever."""
    _, _, cache = hung_preparer
    other = tmp_path / "b.txt"
    other.write_text(OTHER_TEXT, encoding="utf-8")
    env, _ = cache_env(tmp_path)
    result = train(tmp_path, other, "b.pt", env)
    assert result.returncode == 0 and "waiting for the token cache" not in result.stderr, result.stderr
    assert decode(prepare_tokens(str(other), cache=cache)) == OTHER_TEXT


@pytest.mark.slow
def test_a_run_waiting_for_a_corpus_says_whose_lock_it_is_then_goes_on(tmp_path: Path, hung_preparer) -> None:
    holder, corpus, _ = hung_preparer
    env, _ = cache_env(tmp_path)
    argv = [bin_path("vrnn-train"), str(corpus), "-o", str(tmp_path / "a.pt"), *TRAIN]
    waiter = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        said = read_until(waiter.stderr.fileno(), "\n", TIMEOUT_S)  # (vrnn-train prints nothing else before)
        assert said.startswith(f"vrnn-train: waiting for the token cache of {corpus}, locked by PID {holder.pid} ")
        assert " since " in said and "(stopped" in said and said.count("\n") == 1, said
        holder.kill()  # the lock dies with its holder: the waiting run builds the token file itself
        holder.wait(timeout=30)
        rest = read_until(waiter.stderr.fileno(), "\0", TIMEOUT_S)  # to the end
        assert waiter.wait(timeout=TIMEOUT_S) == 0, said + rest
        assert "waiting for the token cache" not in rest
    finally:
        waiter.kill()
        waiter.wait(timeout=30)
        waiter.stderr.close()


def test_the_waiting_line_comes_within_two_seconds(hung_preparer) -> None:
    holder, corpus, cache = hung_preparer
    said: list[tuple[float, str]] = []
    done: list[object] = []
    started = time.monotonic()

    def prepare() -> None:
        try:
            done.append(prepare_tokens(str(corpus), cache=cache, note=lambda m: said.append((time.monotonic(), m))))
        except BaseException as exc:  # (the test reports it)
            done.append(exc)

    waiter = threading.Thread(target=prepare, daemon=True)  # (a daemon: a wait that never ends cannot hang pytest)
    waiter.start()
    while not said and not done and time.monotonic() - started < 10:
        time.sleep(0.01)
    assert said, done
    assert said[0][0] - started < 2.0 and f"locked by PID {holder.pid} since " in said[0][1], said
    holder.kill()
    holder.wait(timeout=30)
    waiter.join(timeout=TIMEOUT_S)
    assert len(done) == 1 and not isinstance(done[0], BaseException), done
    assert decode(done[0]) == TINY_TEXT and len(said) == 1


# 9. A directory in place of a cache file ------------------------------------------------------------------------


@pytest.mark.slow
def test_an_empty_directory_in_place_of_the_token_file_is_replaced(tmp_path: Path) -> None:
    """It gave `error: Is a directory: 7`: no path, and the file descriptor's number."""
    corpus = tmp_path / "t.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    env, cache = cache_env(tmp_path)
    tokens = prepare_tokens(str(corpus), cache=cache)
    tokens.path.unlink()
    tokens.path.mkdir()
    result = train(tmp_path, corpus, "a.pt", env)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert tokens.path.is_file()


@pytest.mark.parametrize("name", ["tokens", "json", "index", "lock", "text-lock"])
@pytest.mark.parametrize("full", [False, True], ids=["empty", "with-a-file"])
def test_a_directory_in_place_of_a_cache_file_is_replaced_or_refused_naming_it(tmp_path: Path, name, full) -> None:
    """An empty one is no file of anyone's and is replaced; one holding files is refused in one line that
    names it (never removed with them, never 'Is a directory: 7')."""
    corpus, cache = tmp_path / "t.txt", tmp_path / "cache"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    prepare_tokens(str(corpus), cache=cache)
    path = cache / cache_name(corpus, TINY_TEXT, name)
    path.unlink(missing_ok=True)  # (a lock file is gone once its preparation is done)
    (cache / f"sources-{tokens_module._sources_key([tokens_module.Source.of(corpus).__dict__])}.json").unlink(
        missing_ok=True
    )  # the index gone, the corpus is prepared again: every one of its files is used
    path.mkdir()
    if full:
        (path / "someone's.txt").write_text("kept\n", encoding="utf-8")
        with pytest.raises(VrnnError) as caught:
            prepare_tokens(str(corpus), cache=cache)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)
        assert (path / "someone's.txt").read_text(encoding="utf-8") == "kept\n"
    else:
        assert decode(prepare_tokens(str(corpus), cache=cache)) == TINY_TEXT
        assert not path.is_dir()


# 13. A read-only cache -----------------------------------------------------------------------------------------


def refuse_writes_in(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every attempt to write in `cache` fail as on a read-only file system (EROFS).  The tests run as
    root, whom `chmod a-w` does not stop: this is what a read-only mount does to the calls the cache makes."""
    inside = str(cache.resolve())

    def within(path) -> bool:
        return os.path.abspath(os.fspath(path)).startswith(inside)

    def erofs(path) -> OSError:
        return OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    real_open = os.open

    def open_(path, flags, *args, **kwargs):
        if within(path) and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            raise erofs(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    for name in ("mkdir", "unlink", "rmdir", "replace", "rename"):
        real = getattr(os, name)

        def refused(path, *args, _real=real, **kwargs):
            if within(path):
                raise erofs(path)
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(os, name, refused)


def test_a_read_only_cache_with_valid_token_files_is_used_without_its_lock(tmp_path: Path, monkeypatch) -> None:
    """Taking the lock needed write access: a shared read-only cache was refused ('Read-only file system')."""
    corpus, cache = tmp_path / "t.txt", tmp_path / "cache"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    prepare_tokens(str(corpus), cache=cache)
    copy = tmp_path / "copy.txt"  # the same text at another path: the index does not know it
    copy.write_text(TINY_TEXT, encoding="utf-8")
    refuse_writes_in(cache, monkeypatch)
    again = prepare_tokens(str(corpus), cache=cache)
    assert again.built_s is None and decode(again) == TINY_TEXT
    assert decode(prepare_tokens(str(copy), cache=cache)) == TINY_TEXT  # found by the text's hash


def test_a_read_only_cache_that_must_build_is_refused_in_one_line(tmp_path: Path, monkeypatch) -> None:
    corpus, cache = tmp_path / "t.txt", tmp_path / "cache"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    prepare_tokens(str(corpus), cache=cache)
    other = tmp_path / "other.txt"
    other.write_text(OTHER_TEXT, encoding="utf-8")
    refuse_writes_in(cache, monkeypatch)
    with pytest.raises(VrnnError) as caught:
        prepare_tokens(str(other), cache=cache)
    message = str(caught.value)
    assert f"token cache {cache} is not writable" in message and "set $VRNN_CACHE to a writable folder" in message
    assert str(other) in message and "\n" not in message


def read_only_mount(cache: Path) -> list[str]:
    """The command prefix that runs a command with `cache` mounted read-only (in a mount namespace of its own,
    which unprivileged user namespaces allow); skips the test where it cannot."""
    prefix = ["unshare", "-rm", "sh", "-c", 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"',
              str(cache)]  # fmt: skip
    try:
        probe = subprocess.run([*prefix, "touch", str(cache / "probe")], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("no unshare here to mount the cache read-only")
    if "Read-only file system" not in probe.stderr:
        pytest.skip(f"cannot mount the cache read-only here: {probe.stderr.strip()}")
    return prefix


@pytest.mark.slow
def test_vrnn_train_uses_a_read_only_mounted_cache(tmp_path: Path) -> None:
    """The real thing: a cache on a read-only mount, where even root cannot write."""
    corpus, other = tmp_path / "t.txt", tmp_path / "other.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    other.write_text(OTHER_TEXT, encoding="utf-8")
    env, cache = cache_env(tmp_path)
    prepare_tokens(str(corpus), cache=cache)
    prefix = read_only_mount(tmp_path / "cache")
    run = [*prefix, bin_path("vrnn-train"), *TRAIN]
    result = subprocess.run([*run, str(corpus), "-o", str(tmp_path / "a.pt")], env=env, capture_output=True,
                            text=True, timeout=TIMEOUT_S)  # fmt: skip
    assert result.returncode == 0, result.stderr
    result = subprocess.run([*run, str(other), "-o", str(tmp_path / "b.pt")], env=env, capture_output=True,
                            text=True, timeout=TIMEOUT_S)  # fmt: skip
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert f"{cache} is not writable (Read-only file system)" in result.stderr and "$VRNN_CACHE" in result.stderr
