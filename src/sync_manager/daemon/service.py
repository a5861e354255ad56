"""The daemon's state and its operations on lockspaces and clients (protocol 2.5.10-2.5.13).

:class:`Daemon` owns the lockspaces (each with its renewal loop and its :class:`Fencer`), the
clients, the resource table, the step runner and the watchdog. The socket handlers
(``daemon/handlers.py``) are thin calls into it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from sync_manager.core import paxos
from sync_manager.core.errors import Aborted
from sync_manager.daemon.clients import Client, ClientTable
from sync_manager.daemon.fencing import Fencer, watchdog_key
from sync_manager.daemon.lockspace import Lockspace, LsState
from sync_manager.daemon.resources import ResourceTable, Token
from sync_manager.daemon.runner import Runner
from sync_manager.errors import SyncManagerError
from sync_manager.supervisor import policy
from sync_manager.supervisor.executor import Executor
from sync_manager.supervisor.policy import ForceMode
from sync_manager.supervisor.watchdog import Watchdog
from sync_manager.timeouts import DEFAULT_IO_TIMEOUT, DEFAULT_KILL_GRACE

__all__ = ["Daemon", "Settings"]

log = logging.getLogger("sync_manager.daemon")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Settings:
    """What the daemon was started with (see ``daemon/config.py`` for where each comes from)."""

    run_dir: str
    host_name: str
    io_timeout: int = DEFAULT_IO_TIMEOUT
    kill_grace: int = DEFAULT_KILL_GRACE
    workers: int = 32


class Daemon:
    """Everything one host's daemon holds."""

    def __init__(self, settings: Settings, watchdog: Watchdog) -> None:
        self.settings = settings
        self.watchdog = watchdog
        self.executor = Executor(logger=logging.getLogger("sync_manager.fencing"))
        self.runner = Runner(workers=settings.workers, io_timeout=settings.io_timeout)
        self.clients = ClientTable()
        self.resources = ResourceTable(self.runner)
        self.lockspaces: list[Lockspace] = []
        self.fencers: dict[int, Fencer] = {}
        self.stopped = asyncio.Event()
        self.shutting_down = False
        self._background: set[asyncio.Task[Any]] = set()

    def spawn(self, work: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run ``work`` in the background; the daemon keeps it referenced until it ends and
        logs it if it fails (a bug: nothing the daemon starts this way should raise)."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    # --- finding lockspaces ------------------------------------------------------------------

    def find(self, name: str, path: str, offset: int, host_id: int) -> Lockspace | None:
        """The lockspace matching as INQ/REM_LOCKSPACE match (host id 0 = any)."""
        return next((ls for ls in self.lockspaces if ls.matches(name, path, offset, host_id)), None)

    def named(self, name: str, *, active: bool = True) -> Lockspace | None:
        """The lockspace called ``name`` (only an ACTIVE one unless ``active`` is False)."""
        for ls in self.lockspaces:
            if ls.name == name and (not active or ls.state is LsState.ACTIVE):
                return ls
        return None

    # --- add, inquire, remove ----------------------------------------------------------------

    async def add_lockspace(
        self, name: str, host_id: int, path: str, offset: int, io_timeout: int, *, wait: bool
    ) -> int:
        """ADD_LOCKSPACE: 0, or sanlock's error code."""
        if not name or host_id <= 0 or not path:
            return -errno.EINVAL
        for ls in self.lockspaces:
            same_disk = ls.path == path and ls.offset == offset
            if ls.name == name and same_disk and ls.host_id == host_id:
                return {
                    LsState.ACTIVE: -errno.EEXIST,
                    LsState.ADDING: -errno.EINPROGRESS,
                    LsState.REMOVING: -errno.EAGAIN,
                }[ls.state]
            if ls.name == name or same_disk:
                return -errno.EINVAL
        if self.shutting_down:
            return -errno.ESHUTDOWN
        ls = Lockspace(
            name,
            host_id,
            path,
            offset,
            io_timeout or self.settings.io_timeout,
            self.settings.host_name,
            self.runner,
            on_change=self._changed,
            on_requests=self.examine_later,
            kill_grace=self.settings.kill_grace,
        )
        self.lockspaces.append(ls)
        joining = self.spawn(self._join(ls), f"join {name}")
        if not wait:
            return 0
        return await joining

    async def _join(self, ls: Lockspace) -> int:
        try:
            await ls.join()
        except Aborted:
            log.info("lockspace %s: join aborted by rem_lockspace", ls.name)
            self._drop(ls)
            return -1
        except SyncManagerError as err:
            log.error("lockspace %s: join failed: %s", ls.name, err)
            self._drop(ls)
            return err.code
        if ls.aborting.is_set():  # removed while the last I/O ran
            await ls.leave(release=True)
            self._drop(ls)
            return -1
        fencer = Fencer(ls, lambda: self.clients, self.watchdog, self.executor, self._end_later)
        self.fencers[ls.space_id] = fencer
        fencer.start()
        return 0

    def inq_lockspace(self, name: str, path: str, offset: int, host_id: int) -> int:
        """INQ_LOCKSPACE: 0 joined, -EINPROGRESS being added or removed, -ENOENT."""
        ls = self.find(name, path, offset, host_id)
        if ls is None:
            return -errno.ENOENT
        return 0 if ls.state is LsState.ACTIVE else -errno.EINPROGRESS

    async def rem_lockspace(
        self, name: str, path: str, offset: int, host_id: int, *, wait: bool, unused: bool
    ) -> int:
        """REM_LOCKSPACE: kill the lockspace's lease holders, then free the host id."""
        ls = self.find(name, path, offset, host_id)
        if ls is None:
            return -errno.ENOENT
        if ls.state is LsState.REMOVING:
            return -errno.EINPROGRESS
        if unused and (self.resources.in_lockspace(ls) or self._acquiring_in(ls)):
            return -errno.EBUSY
        if ls.state is LsState.ADDING:
            ls.abort_join()
        else:
            ls.state = LsState.REMOVING
            assert ls.policy is not None
            ls.policy = dataclasses.replace(ls.policy, removing=True)
            log.info("lockspace %s: removing", ls.name)
            self._changed(ls)
        if wait:
            await ls.ended.wait()
        return 0

    def _acquiring_in(self, ls: Lockspace) -> bool:
        return any(key[0] == ls.name.encode() for key in self.resources.acquiring)

    def _end_later(self, ls: Lockspace, release: bool) -> None:
        self.spawn(self.end_lockspace(ls, release), f"end {ls.name}")

    async def end_lockspace(self, ls: Lockspace, release: bool) -> None:
        """Recovery or removal is over: stop renewing, free the host id if safe, forget it."""
        self.fencers.pop(ls.space_id, None)
        self.watchdog.disarm(watchdog_key(ls))
        self.resources.forget(ls)
        await ls.leave(release=release)
        self._drop(ls)
        log.info("lockspace %s: ended (host id %s)", ls.name, "freed" if release else "kept")

    def _drop(self, ls: Lockspace) -> None:
        if ls in self.lockspaces:
            self.lockspaces.remove(ls)
        ls.ended.set()
        if self.shutting_down and not self.lockspaces:
            self.stopped.set()

    def _changed(self, ls: Lockspace) -> None:
        fencer = self.fencers.get(ls.space_id)
        if fencer is not None:
            fencer.poke()

    # --- requests from other hosts (6.9) -----------------------------------------------------

    def examine_later(self, ls: Lockspace) -> None:
        """Examine the leases held in ``ls`` for requests, in the background."""
        self.spawn(self.examine(self.resources.in_lockspace(ls)), f"examine {ls.name}")

    async def examine(self, tokens: list[Token]) -> int:
        """Read the request record of each exclusive lease in ``tokens``; act on the holder of
        each one asked for with a newer lver and a force mode. The number of holders acted on.
        """
        acted = 0
        for token in tokens:
            if token.shared or token.client.dead:
                continue
            try:
                record = await self.runner.run(
                    paxos.read_request(token.core), io_timeout=token.lockspace.io_timeout
                )
            except SyncManagerError as err:
                log.warning("examine %s: %s", token.text(), err)
                continue
            if not record.force_mode or not record.lver or record.lver <= token.lver:
                continue
            client = token.client
            decision = policy.request_action(ForceMode(record.force_mode), client.policy_state())
            log.warning(
                "%s: requested at lver %d (force mode %d): %s pid %d",
                token.text(),
                record.lver,
                record.force_mode,
                decision.action.value,
                client.peer.pid,
            )
            self.executor.carry_out_one(
                decision, client.kill_target(), lockspace=token.lockspace.name
            )
            acted += 1
        return acted

    # --- clients -----------------------------------------------------------------------------

    async def client_gone(self, client: Client) -> None:
        """A connection closed: a registered client's process is gone; release its leases."""
        client.dead = True
        spaces = {t.lockspace.space_id for t in client.tokens}
        if client.tokens:
            log.info(
                "pid %d: connection closed, releasing %d lease(s)",
                client.peer.pid,
                len(client.tokens),
            )
        await self.resources.client_exited(client)
        self.clients.remove(client)
        for space_id in spaces:
            fencer = self.fencers.get(space_id)
            if fencer is not None:
                fencer.poke()

    # --- shutdown ----------------------------------------------------------------------------

    def shutdown(self, *, force: bool) -> bool:
        """SHUTDOWN: stop now if no lockspace is joined; with ``force``, remove them all first.

        False (and nothing done) when lockspaces exist and ``force`` is not given.
        """
        if self.lockspaces and not force:
            return False
        self.shutting_down = True
        if not self.lockspaces:
            self.stopped.set()
            return True
        log.warning("forced shutdown: removing %d lockspace(s)", len(self.lockspaces))
        for ls in list(self.lockspaces):
            if ls.state is LsState.ADDING:
                ls.abort_join()
            elif ls.policy is not None:
                ls.state = LsState.REMOVING
                ls.policy = dataclasses.replace(ls.policy, shutting_down=True)
                self._changed(ls)
        return True

    async def tick_forever(self, interval: float = 1.0) -> None:
        """Feed the watchdog (when every armed lockspace allows it), reap killpath
        programs and give back idle I/O buffers, whether or not any lockspace is joined."""
        while True:
            now = time.monotonic()
            self.watchdog.tick(now)
            self.executor.reaper.reap()
            self.runner.shrink_idle_buffers(now)
            await asyncio.sleep(interval)

    def close(self) -> None:
        """Release what the process holds (storage, worker threads, the watchdog)."""
        self.runner.close()
        self.watchdog.close()
