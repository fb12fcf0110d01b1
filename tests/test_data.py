"""Corpus loading: Tiny Shakespeare's checked download (from a server on 127.0.0.1) and the split."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vrnn.runtime.errors import VrnnError
from vrnn.training import corpus as data
from vrnn.training.data import Corpus
from vrnn.training.tokens import prepare_tokens


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving files from a temporary directory."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()


def test_download_checks_sha256_and_caches(
    server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = server
    monkeypatch.setenv("VRNN_CACHE", str(tmp_path / "cache"))
    payload = b"not shakespeare\n"
    (root / "bad.txt").write_bytes(payload)
    with pytest.raises(VrnnError, match="wrong sha256"):
        data.fetch_tinyshakespeare(f"{url}/bad.txt")
    assert not (tmp_path / "cache" / "tinyshakespeare.txt").exists()
    with pytest.raises(VrnnError, match="could not download"):
        data.fetch_tinyshakespeare(f"{url}/missing.txt")

    # The real check with a file whose hash we control: patch the expected digest.
    monkeypatch.setattr(data, "TINYSHAKESPEARE_SHA256", hashlib.sha256(payload).hexdigest())
    (root / "good.txt").write_bytes(payload)
    path = data.fetch_tinyshakespeare(f"{url}/good.txt")
    assert path.read_bytes() == payload
    (root / "good.txt").unlink()  # a second call must not need the server
    assert data.fetch_tinyshakespeare(f"{url}/good.txt") == path


def test_real_tinyshakespeare_through_the_download_path(
    server: tuple[str, Path], shakespeare: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = server
    (root / "input.txt").write_bytes(shakespeare.read_bytes())
    monkeypatch.setenv("VRNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VRNN_TINYSHAKESPEARE_URL", f"{url}/input.txt")
    monkeypatch.chdir(tmp_path)
    tokens = prepare_tokens(data.resolve_corpus("tinyshakespeare"))
    assert tokens.sha256 == data.TINYSHAKESPEARE_SHA256
    corpus = Corpus.from_tokens(tokens, "tinyshakespeare")
    assert len(corpus.vocab) == 65
    assert len(corpus.train) == 1_003_854 and len(corpus.val) == 111_540  # nanoGPT's split
