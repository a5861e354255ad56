"""The real driver: runs a core step on real storage, with the host's monotonic clock.

Each Read/Write effect becomes an aligned O_DIRECT I/O on :class:`~sync_manager.io.disk.Storage`
with a deadline (the effect's own timeout, else the driver's io_timeout). When an I/O fails the
error (:class:`~sync_manager.errors.IOTimeout`, :class:`~sync_manager.errors.DiskIOError`, ...)
is thrown into the step at its ``yield``, exactly as the simulator does, so the step decides
what a failure means. Sleep and Now use ``time.monotonic``.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Self, TypeVar

from sync_manager.core.effects import Now, Read, Sleep, Step, Write
from sync_manager.errors import SyncManagerError
from sync_manager.io.disk import DEFAULT_IO_TIMEOUT, Storage

__all__ = ["Driver", "IOStats"]

T = TypeVar("T")


class IOStats:
    """Counts of the I/O a driver did (for benchmarks and the renewal history)."""

    def __init__(self) -> None:
        self.reads = 0
        self.writes = 0
        self.bytes_read = 0
        self.bytes_written = 0

    def __repr__(self) -> str:
        return (
            f"IOStats(reads={self.reads}, bytes_read={self.bytes_read}, "
            f"writes={self.writes}, bytes_written={self.bytes_written})"
        )


class Driver:
    """Runs steps on real disks, opening each path once and keeping it open until closed."""

    def __init__(self, io_timeout: float = DEFAULT_IO_TIMEOUT) -> None:
        self.io_timeout = io_timeout
        self.stats = IOStats()
        self._storages: dict[str, Storage] = {}

    def storage(self, path: str) -> Storage:
        """The open storage for ``path`` (opened read-write on first use)."""
        storage = self._storages.get(path)
        if storage is None:
            storage = Storage.open(path, io_timeout=self.io_timeout)
            self._storages[path] = storage
        return storage

    def run(self, step: Step[T]) -> T:
        """Drive ``step`` to its end and return its value (or raise what it raises)."""
        result: object = None
        error: SyncManagerError | None = None
        while True:
            try:
                effect = step.throw(error) if error is not None else step.send(result)
            except StopIteration as stop:
                value: T = stop.value
                return value
            result, error = None, None
            try:
                result = self._perform(effect)
            except SyncManagerError as err:
                error = err

    def _perform(self, effect: object) -> object:
        if isinstance(effect, Read):
            data = self.storage(effect.disk).read(
                effect.offset, effect.length, timeout=effect.timeout
            )
            self.stats.reads += 1
            self.stats.bytes_read += effect.length
            return data
        if isinstance(effect, Write):
            self.storage(effect.disk).write(effect.offset, effect.data, timeout=effect.timeout)
            self.stats.writes += 1
            self.stats.bytes_written += len(effect.data)
            return None
        if isinstance(effect, Sleep):
            time.sleep(max(effect.seconds, 0.0))
            return None
        if isinstance(effect, Now):
            return time.monotonic()
        raise TypeError(f"unknown effect {effect!r}")

    def close(self) -> None:
        """Close every storage this driver opened."""
        storages, self._storages = self._storages, {}
        for storage in storages.values():
            storage.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
