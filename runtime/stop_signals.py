"""Ctrl-C, SIGTERM and SIGHUP during a vrnn command: raised as exceptions so that every open output unwinds,
and recorded so that a place that discards the exception cannot make the command carry on."""

from __future__ import annotations

import contextlib
import faulthandler
import signal
from collections.abc import Callable, Iterator

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
