"""Running core steps for the daemon: on worker threads, on storage shared by every command.

The daemon's event loop never does disk I/O. A command hands its work, a plain function that
drives core steps through a :class:`~sync_manager.io.driver.Driver`, to :meth:`Runner.call`,
which runs it on a worker thread and awaits it. Each I/O has its own deadline (``io/disk.py``),
so a hung device makes a worker raise :class:`~sync_manager.errors.IOTimeout` after the
io_timeout; it never blocks the loop, where the fencing clock runs.

Storage is opened once per (path, purpose): each lockspace's renewals get storage of their own
("renewal:<id>"), so a resource command waiting on a slow disk never delays a renewal behind
it in the same storage's queue; each lease always uses the storage of its stripe
(:func:`lease_purpose`).
"""

from __future__ import annotations

import asyncio
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sync_manager.core.effects import Step
from sync_manager.io.disk import Storage
from sync_manager.io.driver import Driver

__all__ = ["LEASE_STRIPES", "RESOURCES", "Runner", "lease_purpose"]

T = TypeVar("T")

RESOURCES = "resources"
LEASE_STRIPES = 8  # leases whose I/O runs in parallel: at most this many storages per file
# A storage that read 1 MiB (a lease with 2000 hosts, a renewal) keeps that buffer while busy;
# after this many idle seconds it is given back, so a burst of work leaves no memory behind.
BUFFER_IDLE = 10.0


class _SharedDriver(Driver):
    """A Driver over the runner's storage of ``purpose`` (it closes nothing itself)."""

    def __init__(self, runner: Runner, purpose: str, io_timeout: float) -> None:
        super().__init__(io_timeout)
        self._runner = runner
        self._purpose = purpose

    def storage(self, path: str) -> Storage:
        return self._runner.storage(path, self._purpose)

    def close(self) -> None:
        """Nothing to close: the storage belongs to the runner."""


def lease_purpose(lockspace: str, name: str) -> str:
    """The storage purpose of one lease: one of :data:`LEASE_STRIPES` stripes, always the same
    for a given lease.

    A storage runs one I/O at a time, and an I/O abandoned at its deadline holds back the next
    one until it ends: so a lease's writes, all made through the same storage, can never be
    overtaken on disk by an older write of ours that was left hanging (which could bring back
    a block of an earlier ballot over a newer one). Leases of other stripes do their I/O in
    parallel, as sanlock's worker threads do.
    """
    stripe = zlib.crc32(f"{lockspace}:{name}".encode()) % LEASE_STRIPES
    return f"{RESOURCES}:{stripe}"


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
        """A driver over the runner's storage of ``purpose`` (for use on a worker thread)."""
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

    def shrink_idle_buffers(self, now: float, idle: float = BUFFER_IDLE) -> int:
        """Give back the large I/O buffers of storage idle for ``idle`` seconds (never waits;
        for the event loop). How many were given back."""
        with self._lock:
            storages = list(self._storage.values())
        return sum(s.shrink_buffer() for s in storages if now - s.last_io_end >= idle)

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
