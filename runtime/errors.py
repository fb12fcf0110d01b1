"""User-facing errors and the way every vrnn command reports them.

A command-line tool must answer bad input with one line naming the problem and a
non-zero exit status, never a traceback.  Library code raises `VrnnError` (or
`UsageError` for bad option values); `cli_errors` turns them into that line.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

import click

EXIT_FAILURE = 1  # the input was read but is unusable, or the work failed
EXIT_USAGE = 2  # bad options or arguments (click's convention)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


class VrnnError(Exception):
    """An error whose message is fit to show a user as it is."""

    exit_code = EXIT_FAILURE


class UsageError(VrnnError):
    """An option value or combination of options that cannot work."""

    exit_code = EXIT_USAGE


F = TypeVar("F", bound=Callable[..., object])


def fail(message: str, exit_code: int) -> None:
    """Print `message` as one line on stderr and exit with `exit_code`."""
    click.echo(f"error: {' '.join(str(message).split())}", err=True)
    sys.exit(exit_code)


def cli_errors(func: F) -> F:
    """Decorate a click command so VrnnError, OSError and click usage errors print one line."""

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return func(*args, **kwargs)
        except VrnnError as exc:
            fail(str(exc), exc.exit_code)
        except OSError as exc:
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            fail(f"{exc.strerror or exc}{where}", EXIT_FAILURE)
        except MemoryError:
            fail("out of memory", EXIT_FAILURE)
        return None

    return wrapper  # type: ignore[return-value]


class OneLineCommand(click.Command):
    """A click command whose usage errors are one line (no usage banner) and exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        """Run the command; report click's own errors as one line instead of a usage banner."""
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.Abort:
            fail("interrupted", EXIT_INTERRUPTED)
        except click.UsageError as exc:
            fail(exc.format_message(), EXIT_USAGE)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else 0)
        return result
