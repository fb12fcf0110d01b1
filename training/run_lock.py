"""One training run per checkpoint path: an exclusive lock that dies with its process."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from vrnn.runtime.errors import VrnnError


def lock_path(checkpoint: Path) -> Path:
    """The lock file of a checkpoint: beside it, named by a hash so that it stays short for any name."""
    target = Path(os.path.realpath(checkpoint))
    digest = hashlib.sha256(target.name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return target.parent / f".vrnn-lock-{digest}"


@contextlib.contextmanager
def exclusive_run(checkpoint: Path) -> Iterator[None]:
    """Hold an exclusive flock on the checkpoint's lock file for the run, or refuse in one line.

    flock is released by the kernel when its process dies, so a lock left by a killed run is never in the
    way.  The lock file is removed on exit; a run that opened it just before is detected by comparing inodes
    after locking, and retries on the new file."""
    path = lock_path(checkpoint)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise VrnnError(
                f"another vrnn-train is writing {checkpoint} (its lock {path.name} is held): "
                "wait for it to finish or choose another -o"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed this file as we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)
