"""Bounds on what a command may be asked to do, checked before any work: a clear refusal beats a crash.

Shared by every command (the torch side imports it too); standard library only.
"""

from __future__ import annotations

import math
import os

from vrnn.runtime.errors import UsageError, VrnnError

MAX_THREADS = 1024  # more threads than any machine has cores; 10**5 made onnxruntime and torch crash or stall
MAX_SEED = 2**63 - 1  # numpy's SeedSequence takes any size, torch's generators 64 bits: one range for both
GIB = 1 << 30


def check_threads(threads: object, name: str = "--threads") -> None:
    """Refuse a thread count outside 1..MAX_THREADS (None means: the command's default)."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise UsageError(f"{name} must be an integer from 1 to {MAX_THREADS}, got {threads!r}")


def check_seed(seed: object, name: str = "--seed") -> None:
    """Refuse a seed outside 0..2**63-1 (None means: fresh entropy)."""
    if seed is None:
        return
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UsageError(f"{name} must be an integer from 0 to 2**63-1, got {seed!r}")


def check_float(
    value: object, name: str, low: float, high: float, low_open: bool = False, high_open: bool = False
) -> float:
    """Refuse a non-finite number, or one outside [low, high] (an end excluded when low_open or high_open),
    naming the option."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value!r}")
    if value < low or (low_open and value == low) or value > high or (high_open and value == high):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise UsageError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def available_memory() -> int:
    """Bytes of memory this process could still get: MemAvailable, capped by a cgroup limit if one is set."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return 1 << 62  # unknown: do not refuse
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(limit_file, encoding="ascii") as handle:
                text = handle.read().strip()
            if text.isdigit():
                available = min(available, int(text))
        except OSError:
            continue
    return available


def check_memory(needed: float, what: str, advice: str) -> None:
    """Refuse in one line when `needed` bytes cannot fit in the memory still available."""
    available = available_memory()
    if needed > available:
        raise VrnnError(
            f"{what} needs about {needed / GIB:,.1f} GiB but {available / GIB:,.1f} GiB are available: {advice}"
        )
