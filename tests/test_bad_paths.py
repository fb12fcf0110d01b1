"""Every CLI against every bad path: missing, a directory, unreadable, not a regular file (a FIFO, a socket,
a device); outputs in missing or unwritable dirs, or behind a link into a missing one.

Each case must give exit 1 (2 for an option that cannot apply), exactly one line on stderr naming the
problem, no traceback, and no output file.  File permissions do not bind root, so when the
tests run as root the commands run without the capabilities that override them
(CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH): the refusals are real, not simulated.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, bin_path

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


@pytest.mark.slow
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


# --- inputs that are not regular files, links as outputs, options that cannot apply ---------------------

BUNDLED = {"cell": REPO / "runtime" / "bundled-cell" / "shakespeare.onnx",
           "checkpoint": REPO / "models" / "bundled-checkpoint" / "shakespeare.pt"}  # fmt: skip
WAIT = 60  # seconds a refusal may take at most (the torch commands import torch first); a FIFO opened waits forever


@pytest.fixture()
def bundled() -> dict[str, Path]:
    """The bundled cell and checkpoint: valid inputs, so that the path under test is the only problem."""
    if not all(path.is_file() for path in BUNDLED.values()):
        pytest.skip("this checkout has no bundled model")
    return BUNDLED


def special_files(folder: Path) -> dict[str, Path]:
    """A FIFO, a socket and (as root) a private character device in `folder`: inputs that are not regular files.
    The device has the numbers of a null device but is never opened: the refusal must come from stat."""
    made = {"a FIFO": folder / "fifo", "a socket": folder / "sock"}
    os.mkfifo(made["a FIFO"])
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(made["a socket"]))  # the socket file stays once it is closed
    if os.geteuid() == 0:
        os.mknod(folder / "chardev", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        made["a character device"] = folder / "chardev"
    return made


def refused_in_one_line(argv: list[str], words: str, cwd: Path, timeout: float = WAIT) -> str | None:
    """None when `argv` exits 1 within `timeout` seconds with one line on stderr holding `words` and no
    traceback; else what went wrong."""
    shown = " ".join(Path(a).name if os.sep in a else a for a in argv)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"{shown}: still running after {timeout} s"
    lines = proc.stderr.strip().splitlines()
    if proc.returncode != 1 or len(lines) != 1 or words not in proc.stderr or "Traceback" in proc.stderr:
        return f"{shown}: exit {proc.returncode}, stderr {proc.stderr!r}"
    return None


@pytest.mark.slow
def test_inputs_that_are_not_regular_files_are_refused_unopened(tmp_path: Path, bundled: dict[str, Path]) -> None:
    """A FIFO given as a cell, checkpoint or text made each command wait forever for a writer; now every kind of
    non-regular input is refused in one line that names it and the path, and nothing is written."""
    cell, ckpt, text = str(bundled["cell"]), str(bundled["checkpoint"]), tmp_path / "text.txt"
    text.write_text("ROMEO:\nBut soft, what light.\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    run, export, score, sample, ev = (bin_path(c) for c in ("vrnn-run", "vrnn-export", "vrnn-score", "vrnn-sample",
                                                            "vrnn-eval"))  # fmt: skip
    made = special_files(tmp_path)
    failures = []
    for kind, special in made.items():
        bad = str(special)
        table = [
            ([run, bad, "-n", "5", "-o", str(out / "s.txt")], "ONNX cell"),
            ([score, bad, str(text), "-k", "1"], "ONNX cell"),
            ([score, cell, bad, "-k", "1"], "text"),
            ([export, bad, str(out / "c.onnx")], "checkpoint"),
        ]
        if kind == "a FIFO":  # the torch commands are slow to start: one kind is enough to show they check
            table += [
                ([sample, bad, "-n", "5", "-o", str(out / "s.txt")], "checkpoint"),
                ([ev, str(text), "-c", bad], "checkpoint"),
            ]
        for argv, what in table:
            failures.append(refused_in_one_line(argv, f"{what} is {kind}, not a regular file: {bad}", tmp_path))
    # vrnn-eval's TEXT goes through the corpus reader, which vrnn-train shares and which refused FIFOs already.
    failures.append(
        refused_in_one_line([ev, str(made["a FIFO"]), "-c", ckpt], "corpus is not a regular file", tmp_path)
    )
    assert not any(failures), "\n".join(f for f in failures if f)
    assert list(out.iterdir()) == []
    assert {p.name for p in tmp_path.iterdir()} == {"out", "text.txt", *(p.name for p in made.values())}


def test_vrnn_serve_refuses_a_fifo_cell_at_once(tmp_path: Path) -> None:
    """vrnn-serve with a FIFO as its cell waited for a writer before it listened, saying nothing."""
    if not all(importlib.util.find_spec(m) for m in ("starlette", "uvicorn", "prometheus_client")):
        pytest.skip("vrnn-serve needs the serve extra")
    fifo = tmp_path / "cell.onnx"
    os.mkfifo(fifo)
    started = time.monotonic()
    failure = refused_in_one_line([bin_path("vrnn-serve"), str(fifo), "--port", "0"],
                                  f"ONNX cell is a FIFO, not a regular file: {fifo}", tmp_path, timeout=30)  # fmt: skip
    assert failure is None, failure
    assert time.monotonic() - started < 30
    assert [p.name for p in tmp_path.iterdir()] == ["cell.onnx"]


def test_a_dangling_link_as_output_is_followed_or_refused_naming_the_missing_folder(
    tmp_path: Path, bundled: dict[str, Path]
) -> None:
    """A link is followed (atomic.py's rules), a dangling one too: its target is created.  When the target's
    folder is missing the refusal names that folder, not the link's own, which exists."""
    into_missing = tmp_path / "link.onnx"
    into_missing.symlink_to(tmp_path / "no-such-folder" / "c.onnx")
    words = f"is a link into a folder that does not exist: {tmp_path / 'no-such-folder'}"
    failures = [
        refused_in_one_line([bin_path("vrnn-export"), str(bundled["checkpoint"]), str(into_missing)], words, tmp_path),
        refused_in_one_line(
            [bin_path("vrnn-run"), str(bundled["cell"]), "-n", "5", "-o", str(into_missing)], words, tmp_path
        ),
    ]
    assert not any(failures), "\n".join(f for f in failures if f)
    assert into_missing.is_symlink() and not (tmp_path / "no-such-folder").exists()
    # Into a folder that exists: the target is written, the link stays.
    dangling = tmp_path / "link.txt"
    dangling.symlink_to(tmp_path / "target.txt")
    proc = subprocess.run([bin_path("vrnn-run"), str(bundled["cell"]), "-n", "5", "--seed", "1", "-o", str(dangling)],
                          capture_output=True, text=True, timeout=WAIT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert dangling.is_symlink() and len((tmp_path / "target.txt").read_text(encoding="utf-8")) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.onnx", "link.txt", "target.txt"]


def test_max_kl_is_refused_for_a_float32_export(tmp_path: Path, bundled: dict[str, Path]) -> None:
    """--max-kl bounds a float16 or int8 cell's distance from the float32 one; a float32 export ignored it."""
    for weights in ([], ["--weights", "float32"]):
        argv = [bin_path("vrnn-export"), str(bundled["checkpoint"]), str(tmp_path / "c.onnx"), *weights, "--max-kl",
                "0.1"]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "--max-kl" in lines[0] and "float16 or int8" in lines[0], (
            proc.stderr
        )
    assert list(tmp_path.iterdir()) == []
