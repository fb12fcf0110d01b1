"""Shared fixtures: a small corpus, a briefly trained checkpoint and its exported cell."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

import pytest

from vrnn.runtime.stop_signals import STOP_SIGNALS

REPO = Path(__file__).resolve().parent.parent

# Token files and downloads go to a cache of the test session's own, never the user's ~/.cache/vrnn
# (commands run by the tests inherit it).
os.environ["VRNN_CACHE"] = tempfile.mkdtemp(prefix="vrnn-test-cache-")

# A few hundred characters with structure worth learning (speaker lines, repeated words).
TINY_TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\n"
    "It is the east, and Juliet is the sun.\n\n"
    "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n"
    "Deny thy father and refuse thy name.\n\n"
) * 3


def default_stop_signals() -> None:
    """A child's `preexec_fn`: Ctrl-C, SIGTERM and SIGHUP as a terminal would deliver them.  The test runner may
    ignore some (a background job ignores SIGINT, `nohup` SIGHUP), its children inherit that, and the commands
    keep a signal they were started ignoring ignored: a test that sends one must not depend on the runner."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def bin_path(name: str) -> str:
    """The console script `name` of the environment running the tests."""
    return str(Path(sys.executable).with_name(name))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def shakespeare() -> Path:
    """Tiny Shakespeare, given by .ci/run through $VRNN_TEST_CORPUS (tests needing it skip otherwise)."""
    path = os.environ.get("VRNN_TEST_CORPUS")
    if not path or not Path(path).is_file():
        pytest.skip("set VRNN_TEST_CORPUS to tinyshakespeare.txt to run real-data tests")
    return Path(path)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> dict[str, Path]:
    """A tiny model trained for a few hundred steps (2-layer GRU, so export covers stacking) and its cell."""
    from vrnn.export.cli import export_cell
    from vrnn.training.cli import main as train_main

    out = tmp_path_factory.mktemp("trained")
    ckpt = out / "ckpt.pt"
    args = [str(tiny_corpus), "-o", str(ckpt), "--preset", "tiny", "--steps", "300", "--seq-len", "24",
            "--layers", "2", "--eval-every", "100", "--quiet", "--threads", "1"]  # fmt: skip
    train_main(args, standalone_mode=False)
    cell = out / "cell.onnx"
    export_cell(str(ckpt), str(cell))
    return {"checkpoint": ckpt, "cell": cell, "dir": out}
