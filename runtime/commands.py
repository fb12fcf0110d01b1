"""What every vrnn command shares around its work: one-line errors and exit statuses instead of tracebacks
(`cli_errors`, `OneLineCommand`), stop signals turned into exceptions for its duration, and a one-line refusal
when an optional extra is missing (`require_extra`).

A command-line tool must answer bad input with one line naming the problem and a non-zero exit status, never
a traceback.
"""

from __future__ import annotations

import functools
import importlib.util
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

import click

from vrnn.runtime.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, VrnnError
from vrnn.runtime.stop_signals import Terminated, raise_if_stopped, signal_exit_code, terminating_signals

F = TypeVar("F", bound=Callable[..., object])

# What each optional module is installed with.
EXTRAS = {
    "torch": "train",
    "onnx": "train",
    "matplotlib": "plot",
    "starlette": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def listed(names: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def install_hint(extra: str) -> str:
    """How to install `extra`, both from the package index and from a checkout of the repository."""
    return f"pip install 'vrnn[{extra}]' (from a checkout: pip install '.[{extra}]')"


def missing_extra(*modules: str) -> str | None:
    """What to install for `modules` where this install lacks some of them (None when all are there): the
    packages missing and the extra that brings them."""
    missing = [m for m in modules if not _installed(m)]
    if not missing:
        return None
    extra = EXTRAS.get(missing[0], "train")
    hint = "; install a CPU build of PyTorch first, see the README" if "torch" in missing else ""
    return f"{listed(missing)}, which this install lacks: {install_hint(extra)}{hint}"


def require_extra(command: str, *modules: str) -> None:
    """Refuse in one line, naming the extra to install, when `command` needs a module this install lacks
    (the base install is the runtime: numpy, onnxruntime and click)."""
    missing = missing_extra(*modules)
    if missing:
        raise VrnnError(f"{command} needs {missing}")


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
        except RuntimeError as exc:
            # torch.OutOfMemoryError (a RuntimeError; named, not imported: this module never imports torch)
            # is a GPU's memory running out: one line, as for the host's.  Other RuntimeErrors are bugs.
            if type(exc).__name__ != "OutOfMemoryError":
                raise
            fail(f"out of GPU memory ({str(exc).split('.')[0]}): try a smaller --batch-size", EXIT_FAILURE)
        return None

    return wrapper  # type: ignore[return-value]


class _ParsingInterrupted(BaseException):
    """Ctrl-C while click parsed the command line: passed by click untouched (it prints a blank line before
    reporting a KeyboardInterrupt), and reported by OneLineCommand.main like one in the command."""


class OneLineCommand(click.Command):
    """A click command whose usage errors are one line (no usage banner) and exit 2.  `needs`: the optional
    modules the command cannot run without; where this install lacks them, --help ends by saying what to
    install (the command itself refuses in one line, see `require_extra`)."""

    def __init__(self, *args: object, needs: tuple[str, ...] = (), **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.needs = needs

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """click's epilog, then what to install where this install lacks a module the command needs."""
        super().format_epilog(ctx, formatter)
        missing = missing_extra(*self.needs)
        if missing:
            formatter.write_paragraph()
            formatter.write_text(f"Needs {missing}.")

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
