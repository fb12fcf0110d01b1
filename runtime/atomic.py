"""Write files so that a crash never leaves a half-written one behind, and nothing a user made is destroyed.

Rules every vrnn output follows:
- A regular file (new or existing) is written to a temporary file beside it and renamed over it: readers see
  the old file or the complete new one.
- A symbolic link is followed: its target is replaced that way, the link itself stays.  A dangling link's
  target is created the same way; a link into a folder that does not exist is refused, naming that folder.
  Files a command owns (the token cache) are written with `follow_links=False`: whatever is at the path, a
  link included, is replaced, and nothing outside the directory is ever written.
- An existing character device or FIFO (`/dev/null`, `/dev/stdout`, a named pipe) is written through, never
  replaced; commands whose outputs must be files (checkpoints) refuse them instead.  Block devices, sockets
  and directories are refused.
- An output that is the same file as one of the command's inputs is refused.
- Temporary names are short (`.vrnn-PID-RANDOM.tmp`, whatever the output's name) and carry the writer's
  process id, so that a later run can remove those of writers that died (`remove_stale_temp_files`).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from vrnn.runtime.errors import UsageError, VrnnError
from vrnn.runtime.inputs import file_kind
from vrnn.runtime.stop_signals import STOP_SIGNALS, raise_if_stopped

TEMP_PATTERN = re.compile(r"^\.vrnn-(\d+)-[0-9a-f]{8}\.tmp$")


def _streamable(mode: int) -> bool:
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def check_writable_destination(path: str | os.PathLike[str], files_only: bool = False) -> Path:
    """Refuse an output path that cannot be written safely; return it.

    Missing or unwritable directories, directories, block devices and sockets are refused; so are character
    devices and FIFOs when `files_only` (outputs that must be regular files, such as checkpoints).  An empty
    path is a usage error: Path("") would be the working directory.
    """
    if os.fspath(path) == "":
        raise UsageError("output path is empty: name a file")
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # follows symbolic links: the target is what would be written
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise VrnnError(f"output path cannot be used ({exc.strerror}): {path}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise VrnnError(f"output path is a directory: {path}")
    if mode is not None and not stat.S_ISREG(mode) and (files_only or not _streamable(mode)):
        raise VrnnError(f"output path is {file_kind(mode)}, not a regular file; refusing to replace it: {path}")
    if mode is not None and _streamable(mode):
        if not os.access(path, os.W_OK):
            raise VrnnError(f"output path is not writable: {path}")
        return path
    target = Path(os.path.realpath(path))
    parent = target.parent
    if not Path(path).parent.is_dir():
        raise VrnnError(f"output directory does not exist: {Path(path).parent}")
    if not parent.is_dir():  # the path's own folder exists, so the path is a link: its target's folder is missing
        raise VrnnError(f"output path {path} is a link into a folder that does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise VrnnError(f"output directory is not writable: {parent}")
    try:
        limit = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    size = len(target.name.encode("utf-8", "surrogateescape"))
    if size > limit:
        raise VrnnError(f"output file name is {size} bytes, longer than this filesystem's limit of {limit}: {path}")
    return path


def refuse_overwriting_inputs(
    outputs: Mapping[str, str | os.PathLike[str] | None], inputs: Mapping[str, object]
) -> None:
    """Refuse (usage error) when any output is the same file as any input, through links or other spellings.

    `outputs` and `inputs` map a name for the message (e.g. "-o", "CHECKPOINT") to a path or None."""
    for out_name, out in outputs.items():
        if out is None:
            continue
        for in_name, source in inputs.items():
            if not isinstance(source, (str, os.PathLike)):
                continue
            if _same_file(Path(out), Path(source)):
                raise UsageError(f"{out_name} {out} is the same file as {in_name}: refusing to overwrite an input")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): compare where each would be
        return os.path.realpath(a) == os.path.realpath(b)


def temp_name() -> str:
    """A temporary file's name: short whatever the output's name, and naming this process."""
    return f".vrnn-{os.getpid()}-{secrets.token_hex(4)}.tmp"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's live process
        return True
    return True


def remove_stale_temp_files(directory: str | os.PathLike[str]) -> int:
    """Remove the temporary files that vrnn writers which are no longer running left in `directory`
    (killed mid-write).  Those of live processes, and every other file, are left alone.  Returns the count."""
    removed = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            match = TEMP_PATTERN.match(entry.name)
            if match and entry.is_file(follow_symlinks=False) and not _alive(int(match.group(1))):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", follow_links: bool = True) -> Iterator[IO]:
    """Open `path` for writing so that a failure or a kill never leaves it half-written (see the module rules).

    A regular file or a new path gets a temporary file beside its (link-resolved) target, fsynced and renamed
    over it on success and removed on any exception; an existing character device or FIFO is written through.
    With `follow_links` False the temporary file goes beside `path` itself and is renamed over whatever is
    there (a link, a FIFO), which is replaced, never written through; only a directory is refused.
    """
    encoding = {} if "b" in mode else {"encoding": "utf-8"}
    if follow_links:
        path = check_writable_destination(path)
        with contextlib.suppress(FileNotFoundError):
            if _streamable(os.stat(path).st_mode):
                with open(path, mode, **encoding) as handle:
                    yield handle
                return
        target = Path(os.path.realpath(path))
    else:
        target = Path(os.path.abspath(path))
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.lstat(target).st_mode):
                raise VrnnError(f"cannot write {target}: a directory is in the way")
    tmp = target.parent / temp_name()
    # Ctrl-C, SIGTERM and SIGHUP become exceptions between two bytecodes: one arriving while the temporary file
    # is being created would be raised before the cleanup below is in place and leave the file behind.  They
    # are held back until it is, then raised inside it.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    created = False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any new file
        created = True
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        with os.fdopen(fd, mode, **encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        raise_if_stopped()  # a stop signal whose exception was discarded on the way: never commit after one
        os.replace(tmp, target)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # (already restored unless the creation failed)
        if created:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    # Make the rename itself durable.
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
