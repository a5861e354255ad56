"""Running core steps for the daemon: on worker threads, on storage shared by every command.

The daemon's event loop never does disk I/O. A command hands its work, a plain function that
drives core steps through a :class:`~sync_manager.io.driver.Driver`, to :meth:`Runner.call`,
which runs it on a worker thread and awaits it. Each I/O has its own deadline (``io/disk.py``),
so a hung device makes a worker raise :class:`~sync_manager.errors.IOTimeout` after the
io_timeout; it never blocks the loop, where the fencing clock runs.

Storage is kept per (path, purpose): each lockspace's renewals get storage of their own
("renewal:<id>"), so a resource command waiting on a slow disk never delays a renewal behind
it in the same storage's queue; resource commands check out storage per command.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from sync_manager.core.effects import Step
from sync_manager.io.disk import Storage
from sync_manager.io.driver import Driver

__all__ = ["Runner"]

T = TypeVar("T")

RESOURCES = "resources"


class _PooledDriver(Driver):
    """A Driver over the runner's storage: it checks out one storage per path on first use
    and gives them back when closed (use it as a context manager, on one worker thread)."""

    def __init__(self, runner: Runner, purpose: str, io_timeout: float) -> None:
        super().__init__(io_timeout)
        self._runner = runner
        self._purpose = purpose
        self._held: dict[str, Storage] = {}

    def storage(self, path: str) -> Storage:
        storage = self._held.get(path)
        if storage is None:
            storage = self._runner.checkout(path, self._purpose)
            self._held[path] = storage
        return storage

    def close(self) -> None:
        """Give the storage back to the runner."""
        held, self._held = self._held, {}
        for path, storage in held.items():
            self._runner.checkin(path, self._purpose, storage)


@dataclass
class _Pool:
    """The open storage of one (path, purpose): those not in use, and how many exist."""

    free: list[Storage] = field(default_factory=list)
    opened: int = 0
    closed: bool = False


class Runner:
    """Worker threads and open storage for the daemon's disk work.

    Each command's driver checks out its own storage of a path, so commands on leases in one
    file (vdsm's xleases volume, a libvirt lease file) do their I/O in parallel, as sanlock's
    worker threads do; a storage runs one I/O at a time. Storage is opened on demand, at most
    one per command running on that path, and kept open for the next commands.
    """

    def __init__(self, *, workers: int = 32, io_timeout: float = 10) -> None:
        # Workers block in I/O for up to an io_timeout each (a hung device), and acquires sleep
        # while they wait for a silent owner: a generous pool keeps other commands going.
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sm-io")
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, str], _Pool] = {}
        self.io_timeout = io_timeout

    def checkout(self, path: str, purpose: str = RESOURCES) -> Storage:
        """A storage of ``path`` for ``purpose`` that no one else is using (thread-safe)."""
        with self._lock:
            pool = self._pools.setdefault((path, purpose), _Pool())
            if pool.free:
                return pool.free.pop()
            pool.opened += 1
        try:
            return Storage.open(path, io_timeout=self.io_timeout)
        except BaseException:
            with self._lock:
                pool.opened -= 1
            raise

    def checkin(self, path: str, purpose: str, storage: Storage) -> None:
        """Give back a storage from :meth:`checkout` (closed if its pool was forgotten)."""
        with self._lock:
            pool = self._pools.get((path, purpose))
            if pool is not None and not pool.closed:
                pool.free.append(storage)
                return
        _close_later(storage)

    def driver(self, purpose: str = RESOURCES, io_timeout: float | None = None) -> Driver:
        """A driver over the runner's storage; close it (``with``) on the worker thread."""
        return _PooledDriver(self, purpose, io_timeout or self.io_timeout)

    async def call(self, func: Callable[[], T]) -> T:
        """Run ``func`` on a worker thread; its result or its exception."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, func)

    async def run(
        self, step: Step[T], *, purpose: str = RESOURCES, io_timeout: float | None = None
    ) -> T:
        """Drive one core ``step`` on a worker thread."""

        def work() -> T:
            with self.driver(purpose, io_timeout) as driver:
                return driver.run(step)

        return await self.call(work)

    def forget(self, path: str, purpose: str) -> None:
        """Close the storage of ``path`` for ``purpose`` (a lockspace that ended), without
        waiting for it (see :func:`_close_later`); storage in use is closed when given back."""
        with self._lock:
            pool = self._pools.pop((path, purpose), None)
            if pool is not None:
                pool.closed = True
        for storage in pool.free if pool is not None else ():
            _close_later(storage)

    def close(self) -> None:
        """Close all storage; do not wait for hung workers (they end at their deadline)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
            for pool in pools:
                pool.closed = True
        for pool in pools:
            for storage in pool.free:
                _close_later(storage)


def _close_later(storage: Storage) -> None:
    """Close ``storage`` on a thread of its own.

    ``Storage.close`` takes the storage's lock, which a worker stuck in a hung I/O holds until
    that I/O's deadline (8N + 60 for a renewal write); the event loop, which calls this, must
    never wait for a disk: it runs the fencing checks and serves the socket.
    """
    closer = threading.Thread(target=storage.close, name="sm-close", daemon=True)
    closer.start()
