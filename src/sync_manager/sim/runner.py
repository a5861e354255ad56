"""Run one algorithm step to completion on fake disks and a fake clock, with no faults.

The simplest driver: each effect is carried out at once, Sleep advances the clock. Unit tests
of the core use it; the simulator's event loop interleaves many hosts' steps instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from sync_manager.core.effects import Now, Read, Sleep, Step, Write
from sync_manager.errors import DiskIOError
from sync_manager.sim.disk import FakeDisk

__all__ = ["FakeClock", "run_step"]

T = TypeVar("T")


class FakeClock:
    """A host's monotonic clock: starts at ``start`` seconds and moves only when told."""

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass."""
        self.time += seconds


def run_step(step: Step[T], disks: Mapping[str, FakeDisk], clock: FakeClock) -> T:
    """Drive ``step`` until it returns; its return value is returned."""
    result: object = None
    while True:
        try:
            effect = step.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value
        if isinstance(effect, Read):
            result = _disk(disks, effect.disk).read(effect.offset, effect.length)
        elif isinstance(effect, Write):
            _disk(disks, effect.disk).write(effect.offset, effect.data)
            result = None
        elif isinstance(effect, Sleep):
            clock.advance(effect.seconds)
            result = None
        elif isinstance(effect, Now):
            result = clock.time
        else:  # pragma: no cover - Effect is a closed union
            raise TypeError(f"unknown effect {effect!r}")


def _disk(disks: Mapping[str, FakeDisk], name: str) -> FakeDisk:
    try:
        return disks[name]
    except KeyError:
        raise DiskIOError(name, "no such disk in the simulation") from None
