"""A hostile user's table for the token cache (vrnn.training.tokens): it must never train on the wrong text,
never write outside itself, and never keep garbage.  Each case failed before the cache identified sources and
token files by inode and ctime, checksummed its JSON files, replaced links instead of writing through them,
removed dead preparations' temporary files and checked the text between its two passes.

Everything happens in the test's own temporary folder: the victims of planted links are files made there.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
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


@pytest.mark.parametrize("name", ["tokens", "json", "index", "lock"])
@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-user-file", "dangling"])
def test_a_link_planted_in_the_cache_is_replaced_never_written_through(tmp_path: Path, name: str, dangling) -> None:
    corpus, cache = tmp_path / "t.txt", tmp_path / "cache"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    cache.mkdir()
    victim = tmp_path / "victim.txt"
    if not dangling:
        victim.write_text("a user's file\n", encoding="utf-8")
    sha = sha256(TINY_TEXT)
    key = tokens_module._sources_key([tokens_module.Source.of(corpus).__dict__])
    link = {"tokens": f"{sha}.tokens", "json": f"{sha}.json", "index": f"sources-{key}.json", "lock": ".lock"}[name]
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
