"""Nothing a user made is destroyed: device nodes, FIFOs, links and inputs as outputs; signals mid-write;
stale temporary files; two runs on one checkpoint.  Device nodes are made here with mknod (never the
machine's own /dev/null or /dev/full); signals go to child processes this test starts."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import bin_path, default_stop_signals

from vrnn.models.checkpoint import load_checkpoint
from vrnn.runtime.atomic import atomic_write, remove_stale_temp_files

TRAIN = ["--preset", "tiny", "--seq-len", "16", "--threads", "1", "-q"]
LONG_TRAIN = [*TRAIN, "--steps", "100000", "--eval-every", "3"]


def run(command: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([bin_path(command), *map(str, args)], capture_output=True, text=True, timeout=300, **kwargs)


def one_line_failure(result: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def stop_message(sig: signal.Signals) -> str:
    """What a command prints when `sig` stops it."""
    return "error: terminated by SIGTERM\n" if sig == signal.SIGTERM else "error: interrupted\n"


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def wait_for(proc: subprocess.Popen, path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture()
def nodes(tmp_path: Path) -> dict[str, Path]:
    """A private null and full device, a FIFO, and a link to a regular file."""
    if os.geteuid() != 0:
        pytest.skip("mknod of character devices needs root")
    made = {"null": tmp_path / "null", "full": tmp_path / "full"}
    os.mknod(made["null"], stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(made["full"], stat.S_IFCHR | 0o666, os.makedev(1, 7))
    made["fifo"] = tmp_path / "fifo"
    os.mkfifo(made["fifo"])
    made["target"] = tmp_path / "target.txt"
    made["target"].write_text("old\n")
    made["link"] = tmp_path / "link.txt"
    made["link"].symlink_to(made["target"])
    return made


@pytest.mark.slow
def test_device_nodes_fifos_and_links_are_never_replaced(nodes: dict[str, Path], trained: dict[str, Path]) -> None:
    cell, ckpt, corpus = trained["cell"], trained["checkpoint"], trained["dir"].parent
    null, full = nodes["null"], nodes["full"]
    assert run("vrnn-run", cell, "-n", "20", "-o", null).returncode == 0  # written through: discarded
    assert run("vrnn-export", ckpt, null).returncode == 0
    one_line_failure(run("vrnn-run", cell, "-n", "20", "-o", full), 1, "No space left")
    one_line_failure(run("vrnn-sample", ckpt, "-n", "20", "-o", full), 1, "No space left")
    # A checkpoint must be a file: training refuses a device rather than writing beside it in its directory.
    text = next(p for p in corpus.rglob("tiny.txt"))
    one_line_failure(run("vrnn-train", text, "-o", null, *TRAIN, "--steps", "2"), 1, "character device")
    for name in ("null", "full"):
        assert stat.S_ISCHR(os.lstat(nodes[name]).st_mode), name
    # A FIFO is written through to its reader.
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(nodes["fifo"].read_bytes()))
    reader.start()
    result = run("vrnn-run", cell, "-n", "30", "--seed", "1", "-o", nodes["fifo"])
    reader.join(timeout=60)
    assert result.returncode == 0 and len(received[0].decode()) == 31, result.stderr
    assert stat.S_ISFIFO(os.lstat(nodes["fifo"]).st_mode)
    # A link is followed: the target gets the text, the link stays a link.
    assert run("vrnn-run", cell, "-n", "30", "-o", nodes["link"]).returncode == 0
    assert nodes["link"].is_symlink() and len(nodes["target"].read_text()) == 31
    assert temp_files(nodes["null"].parent) == []


@pytest.mark.slow
@pytest.mark.parametrize("how", ["same path", "symlink", "hard link"])
def test_an_output_that_is_an_input_is_refused(
    tmp_path: Path, trained: dict[str, Path], tiny_corpus: Path, how: str
) -> None:
    copies = {}
    for name, source in (("ck.pt", trained["checkpoint"]), ("cell.onnx", trained["cell"]), ("c.txt", tiny_corpus)):
        copies[name] = tmp_path / name
        copies[name].write_bytes(source.read_bytes())

    def alias(path: Path) -> Path:
        if how == "same path":
            return path
        other = tmp_path / f"alias-{path.name}"
        other.unlink(missing_ok=True)
        other.symlink_to(path) if how == "symlink" else os.link(path, other)
        return other

    ck, cell, text = copies["ck.pt"], copies["cell.onnx"], copies["c.txt"]
    before = {p: p.read_bytes() for p in copies.values()}
    cases = [
        ("vrnn-export", ck, alias(ck)),
        ("vrnn-run", cell, "-n", "5", "-o", alias(cell)),
        ("vrnn-sample", ck, "-n", "5", "-o", alias(ck)),
        ("vrnn-eval", text, "-c", ck, "--plot", alias(ck)),
        ("vrnn-eval", text, "-c", ck, "--plot", alias(text)),
        ("vrnn-train", text, "-o", alias(text), "--force", *TRAIN),
    ]
    for command, *args in cases:
        one_line_failure(run(command, *args), 2, "same file")
    assert {p: p.read_bytes() for p in copies.values()} == before
    assert temp_files(tmp_path) == []


@pytest.mark.slow
def test_long_output_names_work_up_to_the_filesystems_limit(tmp_path: Path, trained: dict[str, Path]) -> None:
    longest = tmp_path / ("x" * 245 + ".onnx")  # 250 bytes: legal, and temporary names no longer grow with it
    assert run("vrnn-export", trained["checkpoint"], longest).returncode == 0
    text = tmp_path / ("y" * 246 + ".txt")
    assert run("vrnn-run", longest, "-n", "10", "-o", text).returncode == 0 and text.is_file()
    # vrnn-train's metrics file adds 11 bytes to the name: refused up front, in one line.
    one_line_failure(run("vrnn-train", trained["dir"].parent, "-o", tmp_path / ("z" * 247 + ".pt"), *TRAIN), 1)
    assert temp_files(tmp_path) == []


@pytest.mark.slow
def test_sigterm_and_sighup_save_the_training_and_exit_143_and_129(tmp_path: Path, tiny_corpus: Path) -> None:
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        ckpt = tmp_path / f"{sig.name}.pt"
        proc = subprocess.Popen([bin_path("vrnn-train"), str(tiny_corpus), "-o", str(ckpt), *LONG_TRAIN],
                                stderr=subprocess.PIPE, text=True, preexec_fn=default_stop_signals)  # fmt: skip
        wait_for(proc, ckpt)
        time.sleep(0.3)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == code, err
        errors = [line for line in err.splitlines() if line.startswith("error:")]  # -q logs each validation
        assert len(errors) == 1 and sig.name in errors[0] and "--resume" in errors[0] and "Traceback" not in err
        saved = load_checkpoint(ckpt)
        assert saved["step"] >= 3 and saved["metrics"]["history"]
        assert temp_files(tmp_path) == []


def ignoring_sighup() -> None:
    default_stop_signals()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # what `nohup` does before it starts the command


@pytest.mark.slow
@pytest.mark.parametrize("command", ["vrnn-train", "vrnn-run"])
def test_a_command_started_under_nohup_keeps_running_when_the_terminal_closes(
    tmp_path: Path, tiny_corpus: Path, trained: dict[str, Path], command: str
) -> None:
    out = tmp_path / "out"
    args = [str(tiny_corpus), "-o", str(out), *LONG_TRAIN] if command == "vrnn-train" else [
        str(trained["cell"]), "-n", "10000000", "-o", str(out)]  # fmt: skip
    proc = subprocess.Popen([bin_path(command), *args], stderr=subprocess.PIPE, text=True, preexec_fn=ignoring_sighup)
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() or temp_files(tmp_path)):  # working
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143 and "SIGTERM" in err, err
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("command", ["vrnn-run", "vrnn-sample"])
def test_a_stop_signal_mid_write_leaves_neither_output_nor_temp_file(
    tmp_path: Path, trained: dict[str, Path], command: str, sig: signal.Signals
) -> None:
    source = trained["cell"] if command == "vrnn-run" else trained["checkpoint"]
    out = tmp_path / "out.txt"
    out.write_text("a file the user made\n")
    proc = subprocess.Popen([bin_path(command), str(source), "-n", "10000000", "-o", str(out)],
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_stop_signals)  # fmt: skip
    deadline = time.monotonic() + 60
    while not temp_files(tmp_path):  # writing has begun
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # stuck: every command dumps its stacks on SIGUSR1
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        proc.kill()
        raise AssertionError(f"{command} did not stop on {sig.name}; its stacks:\n{proc.communicate()[1]}") from None
    assert (proc.returncode, err) == (128 + sig, stop_message(sig))
    assert out.read_text() == "a file the user made\n" and temp_files(tmp_path) == []


CONFORMANCE_CELL = Path(__file__).parent / "conformance" / "cell.onnx"

# A child process that makes every module import after the command's signal handlers are installed fail its
# test: an extension module can discard the exception a signal handler raises inside its initialisation, as
# numpy.random's did (the SIGTERM of about 1 vrnn-run in 30 was lost and the command sampled on).
LATE_IMPORTS = """
import contextlib, sys
from vrnn.runtime import commands
installed = commands.terminating_signals
@contextlib.contextmanager
def watched():
    with installed():
        before = set(sys.modules)
        yield
        late = sorted(set(sys.modules) - before)
        assert not late, f"imported under the handler: {late}"
commands.terminating_signals = watched
from {module} import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("module", ["vrnn.runtime.cli", "vrnn.runtime.score_cli"])
def test_the_runtime_commands_import_nothing_once_their_signal_handlers_are_installed(
    tmp_path: Path, module: str
) -> None:
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be.\n" * 20)
    args = ["-n", "300", "--seed", "1"] if module.endswith(".cli") else [str(text)]
    script = LATE_IMPORTS.replace("{module}", module)
    result = subprocess.run([sys.executable, "-c", script, str(CONFORMANCE_CELL), *args],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0 and "imported under" not in result.stderr, result.stderr


# A stop signal arrives in a child process, and the exception its handler raises is discarded (as an extension
# module's initialisation did): the command must stop all the same, at the next round of its loop, without
# committing its output, and report the signal, also when what comes out is some other exception.
DISCARDED_STOP = """
import os, signal, sys, time
import click
from vrnn.runtime.atomic import atomic_write
from vrnn.runtime.stop_signals import Terminated
from vrnn.runtime.commands import cli_errors
from vrnn.runtime.sampler import Sampler

def discarded_stop():
    try:
        os.kill(os.getpid(), getattr(signal, sys.argv[4]))
        time.sleep(5)  # the handler runs here, and raises...
    except (Terminated, KeyboardInterrupt):
        pass  # ...and the exception is lost

@click.command()
@click.argument("case")
@cli_errors
def main(case):
    sampler = Sampler.from_onnx(sys.argv[1], threads=1)
    if case == "import":
        discarded_stop()
        raise ImportError("an import the signal interrupted")
    if case == "train":
        discarded_stop()  # while torch was imported, say
        from vrnn.training.trainer import deferred_stop_signals
        with deferred_stop_signals():
            with open(sys.argv[2], "w") as out:
                out.write("trained after SIGTERM")
    with atomic_write(sys.argv[2], "w") as out:
        if case == "commit":
            discarded_stop()
            out.write("written after the signal")
            return
        for i, char in enumerate(sampler.stream(1_000_000, seed=0)):
            if i == 10:
                discarded_stop()
            out.write(char)
            assert i < 10_000, "sampled on after SIGTERM"

main(sys.argv[3:4])
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("case", ["sample", "commit", "import", "train"])
def test_a_stop_signal_whose_exception_was_discarded_still_stops_the_command(
    tmp_path: Path, case: str, sig: signal.Signals
) -> None:
    out = tmp_path / "out.txt"
    out.write_text("a file the user made\n")
    result = subprocess.run([sys.executable, "-c", DISCARDED_STOP, str(CONFORMANCE_CELL), str(out), case, sig.name],
                            capture_output=True, text=True, timeout=120, preexec_fn=default_stop_signals)  # fmt: skip
    assert (result.returncode, result.stderr) == (128 + sig, stop_message(sig))
    assert out.read_text() == "a file the user made\n" and temp_files(tmp_path) == []


@pytest.mark.slow
def test_stale_temp_files_of_dead_writers_are_removed_on_start(tmp_path: Path, tiny_corpus: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        stale = tmp_path / f".vrnn-{dead.pid}-0123abcd.tmp"
        live = tmp_path / f".vrnn-{alive.pid}-0123abcd.tmp"
        legacy = tmp_path / ".ckpt.pt.k2j4h5g6.tmp"  # named by an older vrnn after its output
        unrelated = tmp_path / ".notes.tmp"
        for path in (stale, live, legacy, unrelated):
            path.write_bytes(b"x" * 100)
        result = run("vrnn-train", tiny_corpus, "-o", tmp_path / "ckpt.pt", *TRAIN, "--steps", "2")
        assert result.returncode == 0, result.stderr
        assert not stale.exists() and not legacy.exists()
        assert live.exists() and unrelated.exists()
        assert remove_stale_temp_files(tmp_path) == 0
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.slow
def test_two_runs_on_one_checkpoint_the_second_is_refused(tmp_path: Path, tiny_corpus: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    first = subprocess.Popen([bin_path("vrnn-train"), str(tiny_corpus), "-o", str(ckpt), *LONG_TRAIN],
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(first, ckpt)
        second = run("vrnn-train", tiny_corpus, "-o", ckpt, *LONG_TRAIN, "--force")
        one_line_failure(second, 1, "another vrnn-train")
        resumed = run("vrnn-train", tiny_corpus, "-o", tmp_path / "." / "ckpt.pt", *LONG_TRAIN, "--resume")
        one_line_failure(resumed, 1, "another vrnn-train")  # another spelling of the same path
        assert first.poll() is None
    finally:
        first.kill()
        first.wait()
    # A killed run's lock is no lock: the kernel released it with the process.
    result = run("vrnn-train", tiny_corpus, "-o", ckpt, *TRAIN, "--steps", str(load_checkpoint(ckpt)["step"] + 3),
                 "--eval-every", "3", "--resume")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".vrnn-lock")] == []


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "file.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(path, "w") as handle:
        handle.write("half")
        raise RuntimeError
    assert path.read_text() == "old" and temp_files(tmp_path) == []


def test_a_gpu_out_of_memory_is_one_line_and_other_runtime_errors_stay_bugs(capsys: pytest.CaptureFixture) -> None:
    """torch.OutOfMemoryError (a RuntimeError, recognised by name: the runtime never imports torch) gets one line
    and exit 1, like the host's MemoryError; any other RuntimeError is a bug and keeps its traceback."""
    from vrnn.runtime.commands import cli_errors

    class OutOfMemoryError(RuntimeError):  # torch's name and base
        pass

    @cli_errors
    def command(error: BaseException) -> None:
        raise error

    with pytest.raises(SystemExit) as exited:
        command(OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)"))
    assert exited.value.code == 1
    assert capsys.readouterr().err == ("error: out of GPU memory (CUDA out of memory): try a smaller --batch-size\n")
    with pytest.raises(RuntimeError, match="a bug"):
        command(RuntimeError("a bug"))
