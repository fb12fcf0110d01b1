"""User-facing errors and the way every vrnn command reports them.

A command-line tool must answer bad input with one line naming the problem and a
non-zero exit status, never a traceback.  Library code raises `VrnnError` (or
`UsageError` for bad option values); `cli_errors` turns them into that line.
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import importlib.util
import signal
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

import click

EXIT_FAILURE = 1  # the input was read but is unusable, or the work failed
EXIT_USAGE = 2  # bad options or arguments (click's convention)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
# What schedulers, `timeout`, systemd and container runtimes send (SIGTERM), and a closed terminal (SIGHUP):
# handled like Ctrl-C, with the shell's exit status for each, 128 + the signal's number.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def signal_exit_code(signum: int) -> int:
    """The exit status of a command stopped by signal `signum`: 130 for SIGINT, 143 SIGTERM, 129 SIGHUP."""
    return 128 + int(signum)


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwind (removing temporary files) and exit 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# The stop signal last received by `_raise_stop`, until its command ends.  Raising from a signal handler is not
# enough on its own: the exception surfaces wherever the interpreter happens to be, and some places discard it.
# A C extension's module initialisation is one (numpy.random's, imported on first use, swallowed a SIGTERM in
# about 1 run in 30 and the command sampled on).  `raise_if_stopped` raises it again.
_stop_signal: int | None = None


def _stop_exception(signum: int) -> BaseException:
    """Ctrl-C is KeyboardInterrupt, as Python makes it (click reports it as 'interrupted'); the others Terminated."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _raise_stop(signum: int, frame: object) -> None:
    global _stop_signal
    _stop_signal = signum
    raise _stop_exception(signum)


def raise_if_stopped() -> None:
    """Raise the stop signal's exception again if Ctrl-C, SIGTERM or SIGHUP has arrived during this command, in
    case the one its handler raised was discarded on the way.  Long loops call it once per round and writers
    before they commit; outside a vrnn command (no handler installed) it does nothing."""
    if _stop_signal is not None:
        raise _stop_exception(_stop_signal)


@contextlib.contextmanager
def handling_signals(signals: tuple[int, ...], handler: Callable[[int, object], None]) -> Iterator[bool]:
    """Install `handler` for `signals` for the duration and restore the previous handlers after; yields whether
    it could (Python lets only the main thread install signal handlers).  A signal the process was started
    ignoring stays ignored: `nohup` ignores SIGHUP, and a shell's background job Ctrl-C."""
    try:
        wanted = [sig for sig in signals if signal.getsignal(sig) != signal.SIG_IGN]
        previous = {sig: signal.signal(sig, handler) for sig in wanted}
    except ValueError:  # not the main thread: leave the signals alone
        yield False
        return
    try:
        yield True
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def terminating_signals() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP raise KeyboardInterrupt or Terminated for the duration (main thread only), so
    every `with` unwinds, and are recorded for `raise_if_stopped`."""
    global _stop_signal
    # numpy.random's module initialisation discards an exception raised inside it: imported on first use, under
    # the handler, it swallowed the SIGTERM of about 1 run in 30.  So it is imported before.
    import numpy.random  # noqa: F401

    with handling_signals(STOP_SIGNALS, _raise_stop) as installed:
        if installed:  # `kill -USR1 PID` prints every thread's stack to stderr: how a stuck command is diagnosed
            with contextlib.suppress(AttributeError, ValueError, RuntimeError, OSError):
                faulthandler.register(signal.SIGUSR1, all_threads=True)
        try:
            yield
        finally:
            _stop_signal = None


class VrnnError(Exception):
    """An error whose message is fit to show a user as it is."""

    exit_code = EXIT_FAILURE


class UsageError(VrnnError):
    """An option value or combination of options that cannot work."""

    exit_code = EXIT_USAGE


F = TypeVar("F", bound=Callable[..., object])

# What each optional module is installed with.
EXTRAS = {"torch": "train", "onnx": "train", "matplotlib": "plot"}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_extra(command: str, *modules: str) -> None:
    """Refuse in one line, naming the extra to install, when `command` needs a module this install lacks
    (the base install is the runtime: numpy, onnxruntime and click)."""
    missing = [m for m in modules if not _installed(m)]
    if missing:
        extra = EXTRAS.get(missing[0], "train")
        hint = " (install a CPU build of PyTorch first: see the README)" if "torch" in missing else ""
        raise VrnnError(
            f"{command} needs {' and '.join(missing)}, which this install lacks: pip install 'vrnn[{extra}]'{hint}"
        )


def fail(message: str, exit_code: int) -> None:
    """Print `message` as one line on stderr and exit with `exit_code`."""
    click.echo(f"error: {' '.join(str(message).split())}", err=True)
    sys.exit(exit_code)


def cli_errors(func: F) -> F:
    """Decorate a click command so VrnnError, OSError and click usage errors print one line."""

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            with terminating_signals():
                try:
                    return func(*args, **kwargs)
                except BaseException:
                    # After a stop signal, any failure is its doing: an import it interrupted fails with
                    # ImportError, for one.  Report the signal.
                    raise_if_stopped()
                    raise
        except Terminated as exc:
            fail(f"terminated by {signal.Signals(exc.signum).name}", signal_exit_code(exc.signum))
        except KeyboardInterrupt:
            if sys.stderr.isatty():
                click.echo(err=True)  # past the ^C the terminal printed
            fail("interrupted", EXIT_INTERRUPTED)
        except VrnnError as exc:
            fail(str(exc), exc.exit_code)
        except OSError as exc:
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            fail(f"{exc.strerror or exc}{where}", EXIT_FAILURE)
        except MemoryError:
            fail("out of memory", EXIT_FAILURE)
        return None

    return wrapper  # type: ignore[return-value]


class _ParsingInterrupted(BaseException):
    """Ctrl-C while click parsed the command line: passed by click untouched (it prints a blank line before
    reporting a KeyboardInterrupt), and reported by OneLineCommand.main like one in the command."""


class OneLineCommand(click.Command):
    """A click command whose usage errors are one line (no usage banner) and exit 2."""

    def make_context(self, info_name, args, parent=None, **extra):  # type: ignore[override]
        """click's, with a Ctrl-C during the parsing left for `main` to report in one line."""
        try:
            return super().make_context(info_name, args, parent, **extra)
        except KeyboardInterrupt:
            raise _ParsingInterrupted from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        """Run the command; report click's own errors as one line instead of a usage banner."""
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.Abort:  # (click has printed its blank line)
            fail("interrupted", EXIT_INTERRUPTED)
        except _ParsingInterrupted:
            if sys.stderr.isatty():
                click.echo(err=True)  # past the ^C the terminal printed
            fail("interrupted", EXIT_INTERRUPTED)
        except click.UsageError as exc:
            fail(exc.format_message(), EXIT_USAGE)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else 0)
        return result
