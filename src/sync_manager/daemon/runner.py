"""Running core steps for the daemon: on worker threads, on storage shared by every command.

The daemon's event loop never does disk I/O. A command hands its work, a plain function that
drives core steps through a :class:`~sync_manager.io.driver.Driver`, to :meth:`Runner.call`,
which runs it on a worker thread and awaits it. Each I/O has its own deadline (``io/disk.py``),
so a hung device makes a worker raise :class:`~sync_manager.errors.IOTimeout` after the
io_timeout; it never blocks the loop, where the fencing clock runs.

Storage is opened once per (path, purpose): each lockspace's renewals get storage of their own
("renewal"), so a resource command waiting on a slow disk never delays a renewal behind it in
the same storage's queue; resources share one storage per path ("resources").
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sync_manager.core.effects import Step
from sync_manager.io.disk import Storage
from sync_manager.io.driver import Driver

__all__ = ["Runner"]

T = TypeVar("T")

RESOURCES = "resources"


class _SharedDriver(Driver):
    """A Driver that takes its storage from the daemon's table instead of opening its own."""

    def __init__(self, runner: Runner, purpose: str, io_timeout: float) -> None:
        super().__init__(io_timeout)
        self._runner = runner
        self._purpose = purpose

    def storage(self, path: str) -> Storage:
        return self._runner.storage(path, self._purpose)

    def close(self) -> None:
        """Nothing to close: the storage belongs to the runner."""


class Runner:
    """Worker threads and open storage for the daemon's disk work."""

    def __init__(self, *, workers: int = 32, io_timeout: float = 10) -> None:
        # Workers block in I/O for up to an io_timeout each (a hung device), and acquires sleep
        # while they wait for a silent owner: a generous pool keeps other commands going.
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sm-io")
        self._lock = threading.Lock()
        self._storage: dict[tuple[str, str], Storage] = {}
        self.io_timeout = io_timeout

    def storage(self, path: str, purpose: str = RESOURCES) -> Storage:
        """The open storage of ``path`` for ``purpose`` (opened on first use; thread-safe)."""
        key = (path, purpose)
        with self._lock:
            storage = self._storage.get(key)
            if storage is None:
                storage = Storage.open(path, io_timeout=self.io_timeout)
                self._storage[key] = storage
            return storage

    def driver(self, purpose: str = RESOURCES, io_timeout: float | None = None) -> Driver:
        """A driver over the shared storage (for use on a worker thread)."""
        return _SharedDriver(self, purpose, io_timeout or self.io_timeout)

    async def call(self, func: Callable[[], T]) -> T:
        """Run ``func`` on a worker thread; its result or its exception."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, func)

    async def run(
        self, step: Step[T], *, purpose: str = RESOURCES, io_timeout: float | None = None
    ) -> T:
        """Drive one core ``step`` on a worker thread."""
        driver = self.driver(purpose, io_timeout)
        return await self.call(lambda: driver.run(step))

    def forget(self, path: str, purpose: str) -> None:
        """Close the storage of ``path`` for ``purpose`` (a lockspace that ended), without
        waiting for it (see :func:`_close_later`)."""
        with self._lock:
            storage = self._storage.pop((path, purpose), None)
        if storage is not None:
            _close_later(storage)

    def close(self) -> None:
        """Close all storage; do not wait for hung workers (they end at their deadline)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            storages, self._storage = list(self._storage.values()), {}
        for storage in storages:
            _close_later(storage)


def _close_later(storage: Storage) -> None:
    """Close ``storage`` on a thread of its own.

    ``Storage.close`` takes the storage's lock, which a worker stuck in a hung I/O holds until
    that I/O's deadline (8N + 60 for a renewal write); the event loop, which calls this, must
    never wait for a disk: it runs the fencing checks and serves the socket.
    """
    closer = threading.Thread(target=storage.close, name="sm-close", daemon=True)
    closer.start()
