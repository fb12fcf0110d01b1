"""The errors vrnn raises and the exit status of each.

Library code raises `VrnnError` (or `UsageError` for bad option values) with a message fit to show a user
as it is; commands turn them into one line and the exit status (vrnn.runtime.commands).
"""

from __future__ import annotations

EXIT_FAILURE = 1  # the input was read but is unusable, or the work failed
EXIT_USAGE = 2  # bad options or arguments (click's convention)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


class VrnnError(Exception):
    """An error whose message is fit to show a user as it is."""

    exit_code = EXIT_FAILURE


class UsageError(VrnnError):
    """An option value or combination of options that cannot work."""

    exit_code = EXIT_USAGE
