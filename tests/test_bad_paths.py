"""Every CLI against every bad path: missing, a directory, unreadable; outputs in missing or unwritable dirs.

Each case must give exit 1, exactly one line on stderr naming the problem, no
traceback, and no output file.  File permissions do not bind root, so when the
tests run as root the commands run without the capabilities that override them
(CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH): the refusals are real, not simulated.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import bin_path

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def _obey_file_permissions() -> None:
    """In the child before exec: drop root's permission-override capabilities from the bounding set."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _permissions_bind(path: Path) -> bool:
    """True when a command run by run_unprivileged really cannot read `path` (mode 000)."""
    probe = run_unprivileged(["python3", "-c", f"open({str(path)!r}).read()"], path.parent)
    return probe.returncode != 0 and "PermissionError" in probe.stderr


@pytest.fixture(scope="module")
def arena(trained: dict[str, Path], tiny_corpus: Path) -> Iterator[Path]:
    """A directory every user can enter, holding readable inputs and the unreadable/unwritable ones."""
    root = Path(tempfile.mkdtemp(prefix="vrnn-paths-"))
    try:
        root.chmod(0o755)
        for name, source in (("ckpt.pt", trained["checkpoint"]), ("cell.onnx", trained["cell"]),
                             ("corpus.txt", tiny_corpus)):  # fmt: skip
            shutil.copy(source, root / name)
            (root / name).chmod(0o644)
            shutil.copy(source, root / f"locked-{name}")
            (root / f"locked-{name}").chmod(0o000)
        (root / "a-directory").mkdir(mode=0o755)
        (root / "readonly").mkdir()
        (root / "readonly").chmod(0o555)
        (root / "out").mkdir()
        (root / "out").chmod(0o777)
        if not _permissions_bind(root / "locked-corpus.txt"):
            pytest.skip("cannot make file permissions bind here (root without CAP_SETPCAP)")
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_unprivileged(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run `command` so that file permissions apply to it, even when the tests run as root."""
    preexec = _obey_file_permissions if os.geteuid() == 0 else None
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd, preexec_fn=preexec)


def cases(a: Path) -> list[tuple[str, list[str], str]]:
    """(command, arguments, expected message) for every CLI and every kind of bad path."""
    corpus, ckpt, cell, out = a / "corpus.txt", a / "ckpt.pt", a / "cell.onnx", a / "out"
    missing, directory = a / "missing", a / "a-directory"
    no_dir, readonly = a / "no-such-dir", a / "readonly"
    tiny = ["--preset", "tiny", "--steps", "2", "--seq-len", "8", "-q"]
    run = ["--length", "5", "--seed", "1"]
    return [
        # vrnn-train: the corpus, the checkpoint path
        ("vrnn-train", [str(missing), "-o", str(out / "t.pt"), *tiny], "corpus not found"),
        ("vrnn-train", [str(directory), "-o", str(out / "t.pt"), *tiny], "corpus directory has no files"),
        ("vrnn-train", [str(a / "locked-corpus.txt"), "-o", str(out / "t.pt"), *tiny], "permission denied"),
        ("vrnn-train", [str(corpus), "-o", str(no_dir / "t.pt"), *tiny], "output directory does not exist"),
        ("vrnn-train", [str(corpus), "-o", str(readonly / "t.pt"), *tiny], "output directory is not writable"),
        ("vrnn-train", [str(corpus), "-o", str(directory), *tiny], "output path is a directory"),
        # vrnn-export: the checkpoint, the cell path
        ("vrnn-export", [str(missing), str(out / "c.onnx")], "checkpoint not found"),
        ("vrnn-export", [str(directory), str(out / "c.onnx")], "checkpoint is a directory"),
        ("vrnn-export", [str(a / "locked-ckpt.pt"), str(out / "c.onnx")], "permission denied"),
        ("vrnn-export", [str(ckpt), str(no_dir / "c.onnx")], "output directory does not exist"),
        ("vrnn-export", [str(ckpt), str(readonly / "c.onnx")], "output directory is not writable"),
        # vrnn-run: the cell, -o
        ("vrnn-run", [str(missing), *run], "not found"),
        ("vrnn-run", [str(directory), *run], "directory"),
        ("vrnn-run", [str(a / "locked-cell.onnx"), *run], "permission denied"),
        ("vrnn-run", [str(cell), *run, "-o", str(no_dir / "s.txt")], "output directory does not exist"),
        ("vrnn-run", [str(cell), *run, "-o", str(readonly / "s.txt")], "output directory is not writable"),
        # vrnn-sample: the checkpoint, -o
        ("vrnn-sample", [str(missing), *run], "checkpoint not found"),
        ("vrnn-sample", [str(directory), *run], "checkpoint is a directory"),
        ("vrnn-sample", [str(a / "locked-ckpt.pt"), *run], "permission denied"),
        ("vrnn-sample", [str(ckpt), *run, "-o", str(no_dir / "s.txt")], "output directory does not exist"),
        ("vrnn-sample", [str(ckpt), *run, "-o", str(readonly / "s.txt")], "output directory is not writable"),
        # vrnn-eval: the text, the checkpoint, --plot
        ("vrnn-eval", [str(missing), "-c", str(ckpt)], "corpus not found"),
        ("vrnn-eval", [str(directory), "-c", str(ckpt)], "corpus is a directory"),
        ("vrnn-eval", [str(a / "locked-corpus.txt"), "-c", str(ckpt)], "permission denied"),
        ("vrnn-eval", [str(corpus), "-c", str(missing)], "checkpoint not found"),
        ("vrnn-eval", [str(corpus), "-c", str(a / "locked-ckpt.pt")], "permission denied"),
        ("vrnn-eval", [str(corpus), "-c", str(ckpt), "--plot", str(no_dir / "p.png")], "output directory does not"),
        ("vrnn-eval", [str(corpus), "-c", str(ckpt), "--plot", str(readonly / "p.png")], "output directory is not"),
    ]


def test_every_cli_refuses_every_bad_path_cleanly(arena: Path) -> None:
    failures = []
    for command, args, message in cases(arena):
        proc = run_unprivileged([bin_path(command), *args], arena)
        lines = proc.stderr.strip().splitlines()
        if proc.returncode != 1 or len(lines) != 1 or message not in proc.stderr or "Traceback" in proc.stderr:
            failures.append(f"{command} {' '.join(args)}: exit {proc.returncode}, stderr {proc.stderr!r}")
    assert not failures, "\n".join(failures)
    # Nothing was written anywhere: no outputs, no temporary files.
    assert list((arena / "out").iterdir()) == []
    assert list((arena / "readonly").iterdir()) == []
