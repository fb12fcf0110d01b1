"""The console scripts' entry points (pyproject.toml's [project.scripts]): each imports its command, then runs it.

Importing a command takes a few tenths of a second (numpy and onnxruntime, which vrnn.runtime loads), and
until the command runs none of its signal handling is in place: Ctrl-C in that time was Python's
KeyboardInterrupt traceback.  This module imports only the standard library, so it runs
before the slow imports begin, and answers a Ctrl-C during them as the commands answer one later
(vrnn.runtime.commands.cli_errors): the line `error: interrupted`, exit status 130.
"""

from __future__ import annotations

import importlib
import signal
import sys
from types import FrameType

# vrnn.runtime.errors.EXIT_INTERRUPTED, and the message vrnn.runtime.commands.fail prints: importing either would
# run vrnn.runtime's __init__, which imports numpy and onnxruntime, the very imports to be guarded.
EXIT_INTERRUPTED = 130
INTERRUPTED = "error: interrupted"


def _report_interrupted() -> None:
    """Print the one line a Ctrl-C gets and exit 130, ignoring a second Ctrl-C meanwhile."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.stderr is not None:
        if sys.stderr.isatty():
            print(file=sys.stderr)  # past the ^C the terminal printed
        print(INTERRUPTED, file=sys.stderr, flush=True)
    sys.exit(EXIT_INTERRUPTED)


def launch(module: str) -> object:
    """Import `module`'s click command `main` and run it, with Ctrl-C reported in one line from the start.
    For console scripts, which exit after it: Ctrl-C is left ignored."""
    interrupted = False

    def record(signum: int, frame: FrameType | None) -> None:
        # Only recorded while modules are imported: raised there, a KeyboardInterrupt is printed as "Exception
        # ignored" from inside importlib, or turned into ImportError, or dropped by an extension module's
        # initialisation.  The imports take a few tenths of a second; the Ctrl-C is answered when they end.
        nonlocal interrupted
        interrupted = True

    def interrupt(signum: int, frame: FrameType | None) -> None:
        record(signum, frame)
        raise KeyboardInterrupt

    # Only Python's own handler is replaced: a Ctrl-C the process was started ignoring (a shell's background
    # job) stays ignored.  The command installs its handlers over `interrupt`, and puts it back when done.
    guarded = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if guarded:
        signal.signal(signal.SIGINT, record)
    try:
        try:
            command = importlib.import_module(module).main
            # What the command's handling imports before its handlers (terminating_signals), imported here.
            importlib.import_module("numpy.random")
            if guarded:
                signal.signal(signal.SIGINT, interrupt)  # before the check: a Ctrl-C after it raises
            if interrupted:
                raise KeyboardInterrupt
            return command()
        except SystemExit:  # the command's own exit, an interruption it reported included
            raise
        except BaseException:
            # Outside the command's own handling, after a Ctrl-C, any failure is its doing.
            if interrupted:
                raise KeyboardInterrupt from None
            raise
    except KeyboardInterrupt:
        _report_interrupted()
    finally:
        # The command is over and the process exits: a Ctrl-C now could only kill it in Python's finalisation
        # (which gives a handler of Python's own the default action back), its work done and nothing reported.
        if guarded:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return None


def train() -> object:
    """`vrnn-train`."""
    return launch("vrnn.training.cli")


def export() -> object:
    """`vrnn-export`."""
    return launch("vrnn.export.cli")


def sample() -> object:
    """`vrnn-sample`."""
    return launch("vrnn.export.sample_cli")


def run() -> object:
    """`vrnn-run`."""
    return launch("vrnn.runtime.cli")


def evaluate() -> object:
    """`vrnn-eval`."""
    return launch("vrnn.training.eval_cli")


def score() -> object:
    """`vrnn-score`."""
    return launch("vrnn.runtime.score_cli")


def serve() -> object:
    """`vrnn-serve`."""
    return launch("vrnn.runtime.serving.cli")
