"""Check an input path before anything opens it: a regular file, or one line saying what it is instead.

Every command's inputs (cells, checkpoints, texts) must be regular files.  Opening a FIFO blocks until a
writer comes, forever if none does; a character device such as /dev/zero never ends; a socket cannot be
opened at all; a directory is not a file.  So the check is `os.stat`, which never blocks, made before the
first `open`.  Standard library only: the runtime, the exporter and the trainer all use it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from vrnn.runtime.errors import VrnnError


def file_kind(mode: int) -> str | None:
    """What kind of non-regular file `mode` (an st_mode) is, as a message says it, or None for a regular file."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return None


def check_input_file(path: str | os.PathLike[str], what: str) -> Path:
    """Refuse an input that is missing, unreachable or not a regular file, in one line naming `what` (such as
    "checkpoint") and the path; return the path.  A symbolic link is followed: its target is what is read."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # never opens the file: a FIFO cannot block this
    except (FileNotFoundError, NotADirectoryError):  # a dangling link included
        raise VrnnError(f"{what} not found: {path}") from None
    except PermissionError:
        raise VrnnError(f"{what} cannot be read (permission denied): {path}") from None
    except OSError as exc:  # a loop of links, a name too long
        raise VrnnError(f"{what} cannot be read ({exc.strerror or exc}): {path}") from None
    if stat.S_ISDIR(mode):
        raise VrnnError(f"{what} is a directory, not a file: {path}")
    kind = file_kind(mode)
    if kind is not None:
        raise VrnnError(f"{what} is {kind}, not a regular file: {path}")
    return path
