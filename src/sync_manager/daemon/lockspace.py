"""One joined lockspace in the daemon: join, renewal loop, host liveness, leave (spec 5, 8).

A lockspace goes ADDING (the delta lease is being acquired: 2N seconds, or 8N + 60 more for a
host id another host may still hold) -> ACTIVE (renewing every 2N seconds) -> REMOVING
(rem_lockspace, or recovery after failed renewals: its lease holders are being killed) ->
gone. Its state for the fencing policy (``supervisor/policy.py``) is ``policy``: the time of
the last successful renewal and the sticky flags; ``daemon/fencing.py`` checks it.

All state lives on the event loop; the disk work runs on the runner's workers, each I/O with
its own deadline, so a hung renewal shows as a failed renewal after io_timeout and never as a
stopped clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import errno
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sync_manager import protocol as p
from sync_manager.core import delta
from sync_manager.core.errors import RenewDiff, RenewOwner
from sync_manager.core.hosts import HostMessage, HostState, HostView
from sync_manager.core.paxos_io import LockspaceDisk
from sync_manager.core.paxos_owner import OwnerObservation
from sync_manager.daemon.runner import Runner
from sync_manager.direct import existing_geometry
from sync_manager.errors import StorageError, SyncManagerError
from sync_manager.protocol.codes import SANLK_OK
from sync_manager.supervisor.policy import LockspaceState
from sync_manager.timeouts import DEFAULT_KILL_GRACE, Timeouts

__all__ = ["Lockspace", "LsState"]

log = logging.getLogger("sync_manager.lockspace")

RENEWAL = "renewal"
RETRY_AFTER_FAILURE = 1.0  # sanlock retries a failed renewal after about a second
_space_ids = itertools.count(1)


class LsState(enum.Enum):
    """Where a lockspace is in its life (sanlock's lists: add, spaces, rem)."""

    ADDING = "add"
    ACTIVE = "spaces"
    REMOVING = "rem"


@dataclass(eq=False)
class Lockspace:
    """A lockspace this daemon has joined or is joining, as host ``host_id``."""

    name: str
    host_id: int
    path: str
    offset: int
    io_timeout: int
    host_name: str
    runner: Runner
    on_change: Callable[[Lockspace], None]  # called when fencing must look again
    on_requests: Callable[[Lockspace], None] | None = None  # another host asks for a lease
    kill_grace: int = DEFAULT_KILL_GRACE
    event: delta.HostEvent = delta.NO_EVENT  # ours, written in renewals for set_bitmap seconds
    event_set_at: float = 0.0
    event_sinks: list[Callable[[bytes], None]] = field(default_factory=list)  # REG_EVENT
    space_id: int = field(default_factory=lambda: next(_space_ids))
    state: LsState = LsState.ADDING
    core: delta.Lockspace | None = None
    lease: delta.DeltaLease | None = None
    view: HostView | None = None
    policy: LockspaceState | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    aborting: threading.Event = field(default_factory=threading.Event)
    acquire_last_result: int = 0
    acquire_last_attempt: int = 0
    acquire_last_success: int = 0
    renewal_last_result: int = 0
    renewal_last_attempt: int = 0
    renew_fail: bool = False
    renewals: int = 0  # successful renewals since the join
    used_externally: bool = False
    _renewal: asyncio.Task[None] | None = None

    # --- identity --------------------------------------------------------------------------

    def matches(self, name: str, path: str, offset: int, host_id: int) -> bool:
        """sanlock's lockspace match: name, path and offset; host id unless 0."""
        return (
            self.name == name
            and self.path == path
            and self.offset == offset
            and host_id in (0, self.host_id)
        )

    @property
    def hosts_reported(self) -> bool:
        """Whether GET_HOSTS and HOST_STATUS report the other hosts yet.

        sanlock reports them from its first renewal after the join, one renewal interval
        after the join ends. Ours renews at once after the join (the acquire's 2N wait used up
        the interval; renewing early only widens the safety margin), so we report from our
        second renewal: the same moment as sanlock, as its clients expect.
        """
        return self.renewals >= 2

    @property
    def timeouts(self) -> Timeouts:
        """Our timings in this lockspace."""
        return Timeouts(self.io_timeout, kill_grace=self.kill_grace)

    @property
    def generation(self) -> int:
        """Our delta lease's generation (0 before joining)."""
        return self.lease.generation if self.lease is not None else 0

    @property
    def dead(self) -> bool:
        """In recovery or removal: no new lease may be acquired in it."""
        return self.state is not LsState.ACTIVE or (
            self.policy is not None and self.policy.recovery is not None
        )

    def disk(self) -> LockspaceDisk:
        """Where the delta leases are, for the paxos core's owner checks."""
        assert self.core is not None
        return LockspaceDisk(self.path, self.offset, self.core.geometry, self.io_timeout)

    # --- joining -----------------------------------------------------------------------------

    async def join(self) -> None:
        """Acquire our host id, then renew in the background (the first renewal at once).

        Raises what the delta lease acquire raises (HostIdBusy, on-disk and I/O errors) or
        Aborted if :meth:`abort_join` was called.
        """
        self.acquire_last_attempt = _now_seconds()
        log.info(
            "lockspace %s: joining as host %d (%s:%d), io_timeout %d; this takes %d s or more",
            self.name,
            self.host_id,
            self.path,
            self.offset,
            self.io_timeout,
            self.timeouts.delta_short_delay,
        )
        try:
            lease = await self.runner.call(self._acquire)
        except SyncManagerError as err:
            self.acquire_last_result = err.code
            raise
        self.lease = lease
        self.acquire_last_result = SANLK_OK
        self.acquire_last_success = lease.last_success
        self.policy = LockspaceState(float(lease.last_success))
        assert self.core is not None
        self.view = HostView(self.core)  # filled by the first renewal, which starts at once
        waited = time.monotonic() - lease.last_success
        if waited >= self.timeouts.renewal:
            # The acquire waited 2x the io_timeout *on disk*, which can be longer than ours
            # (sanlock's rule): our last write is already older than our renewal interval,
            # maybe than our fail deadline. Renew before the fencing clock starts from it
            # (sanlock's lockspace thread renews at once too); if this renewal fails, that
            # clock runs out and the lockspace ends, holding nothing yet.
            log.info(
                "lockspace %s: the join's write is %.0f s old (its wait follows the io_timeout "
                "on disk, not our %d s); renewing now",
                self.name,
                waited,
                self.io_timeout,
            )
            await self._renew_once(previous_ok=True)
        self.state = LsState.ACTIVE
        log.info(
            "lockspace %s: joined as host %d generation %d",
            self.name,
            self.host_id,
            lease.generation,
        )
        self._renewal = asyncio.create_task(self._renew_forever(), name=f"renew {self.name}")

    def _acquire(self) -> delta.DeltaLease:
        """On a worker: find the geometry, then run the delta lease acquire."""
        with self.runner.driver(self._purpose, self.io_timeout) as driver:
            try:
                storage = driver.storage(self.path)
            except StorageError as err:  # sanlock answers -ENODEV for any open failure
                raise StorageError(self.path, str(err), code=-errno.ENODEV) from None
            geometry = existing_geometry(storage, self.offset)
            self.core = delta.Lockspace(
                self.name,
                self.path,
                self.offset,
                geometry,
                self.host_id,
                self.host_name,
                self.io_timeout,
            )
            return driver.run(delta.acquire(self.core, abort=self.aborting.is_set))

    def abort_join(self) -> None:
        """Make a join in progress stop at its next one-second wait (raising Aborted)."""
        self.aborting.set()

    @property
    def _purpose(self) -> str:
        return f"{RENEWAL}:{self.space_id}"

    # --- renewing ----------------------------------------------------------------------------

    async def _renew_forever(self) -> None:
        """Renew every 2N seconds until :meth:`leave` (or a corrupt result); results go to
        ``policy``. Renewals go on during recovery: a success moves the watchdog's deadline."""
        previous_ok = True
        t = self.timeouts
        while self.lease is not None and self.policy is not None:
            wait = self.lease.last_success + t.renewal - time.monotonic()
            if not previous_ok:
                wait = RETRY_AFTER_FAILURE
            if wait > 0:
                await asyncio.sleep(wait)
            previous_ok = await self._renew_once(previous_ok)
            if self.policy.corrupt:
                return

    async def _renew_once(self, previous_ok: bool) -> bool:
        assert self.core is not None and self.lease is not None and self.view is not None
        assert self.policy is not None
        started = time.monotonic()
        self.renewal_last_attempt = int(started)
        if self.event != delta.NO_EVENT and started - self.event_set_at > self.timeouts.set_bitmap:
            self.event = delta.NO_EVENT
        step = delta.renew(
            self.core,
            self.lease,
            bitmap=self.view.renewal_bitmap(started),
            event=self.event,
            previous_ok=previous_ok,
        )
        try:
            result = await self.runner.run(step, purpose=self._purpose)
        except (RenewOwner, RenewDiff) as err:
            self.renewal_last_result = err.code
            log.critical("lockspace %s: our delta lease was overwritten: %s", self.name, err)
            self.policy = dataclasses.replace(self.policy, corrupt=True, last_renewal_ok=False)
            self.on_change(self)
            return False
        except SyncManagerError as err:
            self.renewal_last_result = err.code
            self.renew_fail = True
            age = time.monotonic() - self.policy.last_success
            log.error(
                "lockspace %s: renewal failed (%s); last success %.0f s ago, recovery at %d s",
                self.name,
                err,
                age,
                self.timeouts.renewal_fail,
            )
            self.policy = dataclasses.replace(self.policy, last_renewal_ok=False)
            self.on_change(self)
            return False
        self.renewal_last_result = SANLK_OK
        self.renewals += 1
        self.renew_fail = False
        self.lease = result.lease
        notices = self.view.update(result.area, time.monotonic())
        for message in notices.events:
            self._deliver(message)
        if notices.requests and self.on_requests is not None:
            log.info("lockspace %s: hosts %s ask us to examine our leases",
                     self.name, list(notices.requests))  # fmt: skip
            self.on_requests(self)
        self.policy = dataclasses.replace(
            self.policy, last_success=float(result.lease.last_success), last_renewal_ok=True
        )
        self.on_change(self)
        return True

    # --- events (protocol 2.5.17) ---------------------------------------------------------

    def set_event(self, target: int, event: p.HostEvent, *, replace: bool, all_hosts: bool) -> int:
        """SET_EVENT: send ``event`` to host ``target`` (or all) through our next renewals."""
        assert self.view is not None
        now = time.monotonic()
        fresh = now - self.event_set_at < self.timeouts.set_bitmap
        if not replace and fresh and self.event.event and event.event != self.event.event:
            return -errno.EBUSY
        self.event = delta.HostEvent(event.generation, event.event, event.data)
        self.event_set_at = now
        assert self.core is not None
        targets = range(1, self.core.geometry.max_hosts + 1) if all_hosts else (target,)
        for host_id in targets:
            if host_id != self.host_id:
                self.view.notify(host_id, now)
        return 0

    def _deliver(self, message: HostMessage) -> None:
        """Write an event another host sent us to every REG_EVENT connection."""
        he = p.HostEvent(
            self.host_id, message.event.generation, message.event.event, message.event.data
        )
        data = p.EventCallback(he, message.from_host_id, message.from_generation).pack()
        log.info("lockspace %s: event %d data %d from host %d to %d listener(s)",
                 self.name, he.event, he.data, message.from_host_id,
                 len(self.event_sinks))  # fmt: skip
        for sink in list(self.event_sinks):
            sink(data)

    # --- other hosts -------------------------------------------------------------------------

    def observations(self) -> dict[int, OwnerObservation]:
        """Our host_status of every host seen, for the paxos core's owner checks."""
        if self.view is None or self.core is None:
            return {}
        return {s.host_id: OwnerObservation.of(s) for s in self.view.known()}

    def is_alive(self, host_id: int, generation: int) -> bool:
        """May that host (generation) still hold leases? (True when we know nothing.)"""
        if self.view is None:
            return True
        return self.view.is_alive(host_id, generation, time.monotonic())

    def host_state(self, host_id: int) -> HostState:
        """The state of ``host_id`` now, as get_hosts reports it."""
        if self.view is None:
            return HostState.UNKNOWN
        return self.view.state(host_id, time.monotonic())

    # --- leaving -----------------------------------------------------------------------------

    async def leave(self, *, release: bool) -> None:
        """Stop renewing; with ``release``, write our delta lease free. Marks the end."""
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None
        if release and self.core is not None and self.lease is not None:
            try:
                await self.runner.run(delta.release(self.core, self.lease), purpose=self._purpose)
                log.info("lockspace %s: host id %d released", self.name, self.host_id)
            except SyncManagerError as err:
                log.error("lockspace %s: release of host id failed: %s", self.name, err)
        self.runner.forget(self.path, self._purpose)
        self.lease = None
        self.ended.set()


def _now_seconds() -> int:
    return int(time.monotonic())
