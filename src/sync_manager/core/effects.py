"""The effects a lease algorithm yields instead of doing I/O itself.

An algorithm step is a generator: it yields an effect and is resumed with its result. A driver
carries the effects out: ``io/driver.py`` on real storage with O_DIRECT and a deadline per
I/O, ``sim/`` on fake disks and fake clocks with faults. When an I/O fails the driver throws
:class:`~sync_manager.errors.IOTimeout` or :class:`~sync_manager.errors.DiskIOError` into the
generator at the ``yield``, so the algorithm handles failures where it made the request.

Disks are named by their path (a string); offsets are absolute bytes on that disk.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Effect", "Now", "Read", "Sleep", "Step", "Write", "now", "read", "sleep", "write"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Read:
    """Read ``length`` bytes at ``offset`` of ``disk``; resumes with the bytes."""

    disk: str
    offset: int
    length: int
    timeout: float | None = None  # the driver's io_timeout when None


@dataclass(frozen=True, slots=True)
class Write:
    """Write ``data`` (whole sectors) at ``offset`` of ``disk``; resumes with None."""

    disk: str
    offset: int
    data: bytes
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Sleep:
    """Let ``seconds`` of this host's monotonic time pass; resumes with None."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Now:
    """Resumes with this host's monotonic time in seconds (a float)."""


Effect = Read | Write | Sleep | Now

# A step yields effects, is sent their results, and returns T.
Step = Generator[Effect, object, T]


def read(disk: str, offset: int, length: int, timeout: float | None = None) -> Step[bytes]:
    """``data = yield from read(...)``: a typed wrapper around the Read effect."""
    data = yield Read(disk, offset, length, timeout)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"driver resumed Read with {type(data).__name__}, not bytes")
    return bytes(data)


def write(disk: str, offset: int, data: bytes, timeout: float | None = None) -> Step[None]:
    """``yield from write(...)``: a typed wrapper around the Write effect."""
    yield Write(disk, offset, data, timeout)


def sleep(seconds: float) -> Step[None]:
    """``yield from sleep(s)``: a typed wrapper around the Sleep effect."""
    yield Sleep(seconds)


def now() -> Step[float]:
    """``t = yield from now()``: this host's monotonic time in seconds."""
    value = yield Now()
    if not isinstance(value, int | float):
        raise TypeError(f"driver resumed Now with {type(value).__name__}, not a number")
    return float(value)
