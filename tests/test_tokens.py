"""Token files (vrnn.training.tokens): streaming encoding, multi-file corpora, the cache, and training from a
memory map."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TEXT, bin_path

from vrnn.runtime.errors import VrnnError
from vrnn.training.corpus import corpus_files
from vrnn.training.data import Corpus, sample_windows, validation_subset
from vrnn.training.tokens import DOCUMENT_SEPARATOR, prepare_tokens

MIXED = "Ωmega — naïve café, 日本語 and emoji 🎭🎭; plain ASCII too.\n" * 40


def decode(tokens) -> str:
    return "".join(tokens.vocab.chars[i] for i in np.asarray(tokens.ids))


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 7, 64, 1 << 20])
def test_streaming_encoding_splits_no_character(tmp_path: Path, chunk_bytes: int) -> None:
    """Multi-byte characters (2, 3 and 4 bytes) cut by chunk boundaries anywhere decode whole."""
    corpus = tmp_path / "mixed.txt"
    corpus.write_text(MIXED, encoding="utf-8")
    tokens = prepare_tokens(str(corpus), cache=tmp_path / "cache", chunk_bytes=chunk_bytes)
    assert decode(tokens) == MIXED
    assert tokens.vocab.chars == tuple(sorted(set(MIXED)))
    assert tokens.ids.dtype == np.uint8 and len(tokens.ids) == len(MIXED)
    meta = tokens.meta
    assert meta["counts"] == [MIXED.count(c) for c in tokens.vocab.chars]
    assert tokens.split == int(len(MIXED) * 0.9)
    import hashlib

    assert tokens.sha256 == hashlib.sha256(MIXED.encode()).hexdigest()


def test_a_large_vocabulary_takes_uint16(tmp_path: Path) -> None:
    text = "".join(chr(0x4E00 + i) for i in range(300)) * 3
    (tmp_path / "han.txt").write_text(text, encoding="utf-8")
    tokens = prepare_tokens(str(tmp_path / "han.txt"), cache=tmp_path / "cache", chunk_bytes=10)
    assert tokens.ids.dtype == np.uint16 and decode(tokens) == text


def test_the_same_text_gives_the_same_split_and_windows_as_in_memory(tmp_path: Path) -> None:
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    mapped = Corpus.from_tokens(prepare_tokens(str(corpus), cache=tmp_path / "cache"), "tiny")
    memory = Corpus.from_text(TINY_TEXT, "tiny", "")
    np.testing.assert_array_equal(np.asarray(mapped.train), memory.train)
    np.testing.assert_array_equal(np.asarray(mapped.val), memory.val)
    a = sample_windows(mapped, 8, 16, torch.Generator().manual_seed(3))
    b = sample_windows(memory, 8, 16, torch.Generator().manual_seed(3))
    assert a.dtype == torch.int64 and torch.equal(a, b)


def test_a_directory_is_its_files_in_sorted_order(tmp_path: Path) -> None:
    books = tmp_path / "books"
    (books / "b").mkdir(parents=True)
    (books / "a.txt").write_text("first\n", encoding="utf-8")
    (books / "b" / "c.txt").write_text("third", encoding="utf-8")
    (books / "b.txt").write_text("second\n", encoding="utf-8")
    (books / ".hidden").write_text("never\n", encoding="utf-8")
    files = corpus_files(str(books))
    assert [f.name for f in files] == ["a.txt", "b.txt", "c.txt"]  # by path: books/b.txt < books/b/c.txt
    tokens = prepare_tokens(str(books), cache=tmp_path / "cache")
    assert decode(tokens) == DOCUMENT_SEPARATOR.join(["first\n", "second\n", "third"])
    # several paths and a glob give the same corpus
    paths = [str(books / "b.txt"), str(books / "a.txt"), str(books / "b" / "c.txt")]
    same = prepare_tokens(paths, cache=tmp_path / "c2")
    assert same.sha256 == tokens.sha256
    assert [f.name for f in corpus_files(str(books / "*.txt"))] == ["a.txt", "b.txt"]


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("nul.txt", b"abc\x00def", "a NUL byte at offset 3"),
        ("latin1.txt", "caf\u00e9 ok".encode("latin-1"), "bad byte at offset 3"),
        ("cut.txt", "abc\u00e9".encode()[:-1], "bad byte at offset 3"),
        ("empty.txt", b"", "is empty"),
    ],
)
def test_refusals_name_the_file_and_offset_inside_a_directory(tmp_path: Path, name: str, data, message) -> None:
    books = tmp_path / "books"
    books.mkdir()
    (books / "good.txt").write_text("fine text\n" * 20, encoding="utf-8")
    (books / name).write_bytes(data)
    with pytest.raises(VrnnError, match=message) as caught:
        prepare_tokens(str(books), cache=tmp_path / "cache", chunk_bytes=2)
    assert str(books / name) in str(caught.value)
    assert not list((tmp_path / "cache").glob("*.tokens"))


def test_missing_paths_and_empty_directories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(VrnnError, match="corpus not found"):
        corpus_files(str(tmp_path / "nope.txt"))
    with pytest.raises(VrnnError, match="matches no file"):
        corpus_files(str(tmp_path / "*.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(VrnnError, match="has no files"):
        corpus_files(str(tmp_path / "empty"))
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(VrnnError, match="not a regular file"):
        corpus_files(str(tmp_path / "fifo"))


def test_the_cache_is_reused_and_rebuilt_when_the_source_changes(tmp_path: Path) -> None:
    corpus, cache = tmp_path / "t.txt", tmp_path / "cache"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    first = prepare_tokens(str(corpus), cache=cache)
    assert first.built_s is not None
    again = prepare_tokens(str(corpus), cache=cache)
    assert again.built_s is None and again.path == first.path  # reused without reading the text
    # the same text elsewhere shares the token file (named by content)
    (tmp_path / "copy.txt").write_text(TINY_TEXT, encoding="utf-8")
    assert prepare_tokens(str(tmp_path / "copy.txt"), cache=cache).path == first.path
    corpus.write_text(TINY_TEXT + "more\n", encoding="utf-8")
    changed = prepare_tokens(str(corpus), cache=cache)
    assert changed.built_s is not None and changed.sha256 != first.sha256
    assert decode(changed) == TINY_TEXT + "more\n"


@pytest.mark.parametrize("damage", ["truncate", "json", "foreign", "delete"])
def test_a_damaged_token_file_is_rebuilt(tmp_path: Path, damage: str) -> None:
    corpus, cache = tmp_path / "t.txt", tmp_path / "cache"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    tokens = prepare_tokens(str(corpus), cache=cache)
    meta_path = tokens.path.with_suffix(".json")
    if damage == "truncate":
        tokens.path.write_bytes(tokens.path.read_bytes()[:-10])
    elif damage == "json":
        meta_path.write_text("{not json")
    elif damage == "foreign":
        meta_path.write_text(json.dumps({**tokens.meta, "format": "something-else"}))
    else:
        tokens.path.unlink()
    rebuilt = prepare_tokens(str(corpus), cache=cache)
    assert rebuilt.built_s is not None and decode(rebuilt) == TINY_TEXT


_RACE = """
import sys
from vrnn.training.tokens import prepare_tokens
tokens = prepare_tokens(sys.argv[1], cache=__import__("pathlib").Path(sys.argv[2]), chunk_bytes=1 << 16)
print(int(tokens.built_s is not None), tokens.path)
"""


def test_concurrent_preparations_build_once_and_share_the_file(tmp_path: Path) -> None:
    """What the ranks of a torchrun do: all prepare at once, one builds, all map the same file."""
    corpus = tmp_path / "big.txt"
    corpus.write_text(MIXED * 200, encoding="utf-8")
    procs = [
        subprocess.Popen([sys.executable, "-c", _RACE, str(corpus), str(tmp_path / "cache")], stdout=subprocess.PIPE,
                         text=True)
        for _ in range(3)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(int(built) for built, _ in outputs) == [0, 0, 1]
    assert len({path for _, path in outputs}) == 1


def test_validation_subset_is_fixed_and_bounded(tmp_path: Path) -> None:
    text = (TINY_TEXT * 40)[:20000]
    corpus = Corpus.from_text(text, "t", "")
    whole = validation_subset(corpus, 0)
    assert len(whole) == 1 and len(whole[0]) == len(corpus.val)
    assert len(validation_subset(corpus, len(corpus.val))[0]) == len(corpus.val)  # fits: all of it
    pieces = validation_subset(corpus, 800, pieces=4)
    assert len(pieces) == 4 and all(len(p) == 201 for p in pieces)
    assert pieces[0][0] == corpus.val[0] and pieces[-1][-1] == corpus.val[-1]  # spread to both ends
    again = validation_subset(corpus, 800, pieces=4)
    assert all(torch.equal(a, b) for a, b in zip(pieces, again, strict=True))


@pytest.mark.slow
def test_training_from_a_directory_and_bit_identical_resume(tmp_path: Path) -> None:
    """vrnn-train on a directory corpus (memory-mapped); a run stopped and resumed ends with the same
    weights as one that was not."""
    books = tmp_path / "books"
    books.mkdir()
    for i in range(3):
        (books / f"part{i}.txt").write_text(TINY_TEXT[i * 100 :] + TINY_TEXT, encoding="utf-8")
    env = {**os.environ, "VRNN_CACHE": str(tmp_path / "cache")}
    common = [
        "--preset",
        "tiny",
        "--threads",
        "1",
        "-q",
        "--seq-len",
        "24",
        "--eval-every",
        "20",
        "--val-chars",
        "60",
        "--lr-schedule",
        "constant",
        "--kl-anneal-steps",
        "0",
    ]  # nothing depends on --steps (test_resume)
    straight, split = tmp_path / "straight.pt", tmp_path / "split.pt"
    run = [bin_path("vrnn-train"), str(books)]
    subprocess.run([*run, "-o", str(straight), *common, "--steps", "40"], check=True, env=env, capture_output=True)
    subprocess.run([*run, "-o", str(split), *common, "--steps", "20"], check=True, env=env, capture_output=True)
    subprocess.run([*run, "-o", str(split), *common, "--steps", "40", "--resume"], check=True, env=env,
                   capture_output=True)  # fmt: skip
    a = torch.load(straight, weights_only=True)
    b = torch.load(split, weights_only=True)
    assert a["step"] == b["step"] == 40
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["metrics"]["history"][-1]["val_elbo_nats"] == b["metrics"]["history"][-1]["val_elbo_nats"]
    assert a["corpus"]["name"] == "books" and len(list((tmp_path / "cache" / "tokens").glob("*.tokens"))) == 1
