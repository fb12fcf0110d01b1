"""Stop sequences: end a text just before the first stop string it generates, as OpenAI's `stop` does.

A text ends at the first position where some stop string has been generated whole; if several end there,
before the one that starts earliest.  The stop string is not part of the text, the prime is never searched,
and a stopped text is a prefix of the text the same seed and options give without `stop`.  While it
streams, characters that could still begin a stop string are held back until they cannot.  Standard
library only: the runtime, the server and the PyTorch path share it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from vrnn.runtime.errors import UsageError

MAX_STOPS = 4  # OpenAI's bound
MAX_STOP_CHARS = 256  # characters of one stop string: past any sensible end marker


def check_stops(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """The stop strings of `stop` (one string, a list of them, or None for none), refused in one line when
    there are more than MAX_STOPS, or one is empty, longer than MAX_STOP_CHARS or not a string."""
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) for s in stops):
        raise UsageError("--stop must be a string or a list of strings")
    if len(stops) > MAX_STOPS:
        raise UsageError(f"--stop may be given at most {MAX_STOPS} times, got {len(stops)}")
    for s in stops:
        if not 1 <= len(s) <= MAX_STOP_CHARS:
            raise UsageError(f"each --stop must be 1 to {MAX_STOP_CHARS} characters, got {len(s)}")
    return tuple(stops)


class StopMatcher:
    """Feed a text's new characters one at a time; `feed` returns the characters now safe to emit, and
    `stopped` turns True once a stop string has been generated (what follows is not part of the text)."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.longest = max((len(s) for s in self.stops), default=0)
        self.pending = ""  # characters that may still begin a stop string
        self.stopped = False

    def feed(self, char: str) -> str:
        """Take one character; return the characters that can no longer be part of a stop string."""
        if self.stopped:
            return ""
        self.pending += char
        ends = [len(self.pending) - len(s) for s in self.stops if self.pending.endswith(s)]
        if ends:  # a stop string just ended: the text ends before the earliest-starting one
            self.stopped = True
            out, self.pending = self.pending[: min(ends)], ""
            return out
        keep = self._open_prefix()
        out, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep :]
        return out

    def _open_prefix(self) -> int:
        """The length of the longest end of `pending` that begins some stop string (and may yet complete it)."""
        for n in range(min(len(self.pending), self.longest - 1), 0, -1):
            tail = self.pending[-n:]
            if any(s.startswith(tail) for s in self.stops):
                return n
        return 0

    def flush(self) -> str:
        """The characters held back, once the text has ended without a stop."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def stopped_stream(chars: Iterable[str], stops: Sequence[str]) -> Iterator[str]:
    """`chars` up to (not including) the first stop string; characters come out as soon as they are safe."""
    if not stops:
        yield from chars
        return
    matcher = StopMatcher(stops)
    for char in chars:
        yield from matcher.feed(char)  # one character at a time, as they are released
        if matcher.stopped:
            return
    yield from matcher.flush()


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the first stop string (StopMatcher's rule), and whether one was found."""
    matcher = StopMatcher(stops)
    out = []
    for char in text:
        out.append(matcher.feed(char))
        if matcher.stopped:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False
