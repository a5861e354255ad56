"""Waiting for the owner of a paxos lease to die or release (spec/sanlock-ondisk.md 6.2, 8.3).

**An owner is taken over only when it cannot still be using the lease.** A paxos lease is not
renewed: it stays owned while the owner's *delta* lease keeps changing. Another host may run a
ballot when

* the owner's delta lease is free (it left the lockspace, after its processes were stopped),
* the owner's host id was re-acquired (a newer generation: the old instance is gone, and taking
  a delta lease itself takes host_dead_seconds of silence),
* the owner released (its RELEASED dblock, when the leader was written by another host), or
* its delta lease has not changed for more than host_dead_seconds (8 io + 60) measured on *our*
  monotonic clock since we last saw it change: the owner's own clock ran at least as long since
  its last renewal, so it has killed its lease holders or its watchdog has reset it (8.1).

The daemon's host_status (:class:`OwnerObservation`) gives the starting point: when we last saw
the owner's record change, and whether the last check saw a change (the owner is live).
"""

from __future__ import annotations

from dataclasses import dataclass

from sync_manager.core.effects import Step, now, read, sleep
from sync_manager.core.hosts import HostStatus
from sync_manager.core.paxos_errors import AcquireIdLive, AcquireLockspace, AcquireOwnedRetry
from sync_manager.core.paxos_io import (
    IO_ERRORS,
    LockspaceDisk,
    Resource,
    read_leader_majority,
)
from sync_manager.errors import OnDiskError
from sync_manager.ondisk.areas import delta_offset, host_sector_offset
from sync_manager.ondisk.dblock import PaxosDblock
from sync_manager.ondisk.geometry import Geometry
from sync_manager.ondisk.leader import LeaderRecord
from sync_manager.timeouts import Timeouts

__all__ = ["OwnerObservation", "wait_for_owner"]


@dataclass(frozen=True, slots=True)
class OwnerObservation:
    """The daemon's host_status of one host (spec 5.5), times on *our* monotonic clock.

    ``last_check``: when our renewal last looked at its delta record; ``last_live``: when we
    last saw its (owner_id, generation, timestamp) change; the rest is what the record held
    then. 0 means never. The acquire takes one snapshot per attempt, as sanlock does.
    """

    last_check: float
    last_live: float
    owner_id: int
    generation: int
    timestamp: int
    io_timeout: int

    @classmethod
    def of(cls, status: HostStatus) -> OwnerObservation:
        """The observation in a :class:`HostView`'s status of one host."""
        return cls(
            status.last_check or 0.0,
            status.last_live or 0.0,
            status.owner_id,
            status.generation,
            status.timestamp,
            status.io_timeout,
        )


def _owner_released(resource: Resource, geometry: Geometry, owner_id: int) -> Step[bool]:
    """Whether the owner's dblock (first disk, as sanlock) carries the RELEASED flag."""
    path, base = resource.disks[0]
    try:
        buf = yield from read(
            path, base + host_sector_offset(owner_id, geometry), geometry.sector_size
        )
    except IO_ERRORS:
        return False
    return PaxosDblock.unpack(buf).released


def _owner_host_dead(
    observation: OwnerObservation | None, record: LeaderRecord, lockspace: LockspaceDisk
) -> int:
    """host_dead_seconds of the owner.

    sanlock uses the io_timeout of its host_status (its own if 0). We also take the
    io_timeout the owner wrote in the delta record we just read, if larger: the owner's fencing
    runs on its own io_timeout, so this is never shorter than sanlock's wait.
    """
    io = observation.io_timeout if observation is not None else 0
    io = max(io or lockspace.io_timeout, record.io_timeout)
    return Timeouts(io_timeout=io).host_dead


def wait_for_owner(
    resource: Resource,
    geometry: Geometry,
    cur: LeaderRecord,
    *,
    host_id: int,
    lockspace: LockspaceDisk | None,
    observation: OwnerObservation | None,
    owner_nowait: bool,
) -> Step[bool]:
    """Decide whether the lease ``cur`` shows, held by another host, may be taken (6.2).

    Returns True when a ballot may run, False when the leader changed while we watched
    (restart the acquire). Raises AcquireIdLive (-243), AcquireOwnedRetry (-247) and, in
    direct mode (no lockspace), AcquireLockspace (-241).
    """
    if lockspace is None:
        raise AcquireLockspace(
            f"lease {resource.name} is owned by host {cur.owner_id} and lockspace "
            f"{resource.lockspace} is not joined",
            leader=cur,
        )
    owner = cur.owner_id
    obs = observation
    if (
        obs is not None
        and obs.last_check
        and obs.last_live
        and obs.owner_id == owner
        and obs.generation == cur.owner_generation
    ):
        wait_start = obs.last_live
        last_ts: int | None = obs.timestamp or None
    else:
        wait_start = yield from now()
        last_ts = None
    # "Our renewal saw it change the last time it looked" (also true right after the first
    # observation): sanlock takes it from the snapshot whether or not the snapshot matched.
    seen_live = obs is not None and bool(obs.last_live) and obs.last_check == obs.last_live
    delta_at = lockspace.offset + delta_offset(owner, lockspace.geometry)
    while True:
        buf = yield from read(lockspace.path, delta_at, lockspace.geometry.sector_size)
        record = LeaderRecord.unpack(buf)
        try:
            record.check_delta(cur.space_name)
        except OnDiskError as err:
            raise err.at(lockspace.path, delta_at) from None
        if record.timestamp == 0:
            return True  # the owner left the lockspace cleanly
        if record.owner_id != owner or record.owner_generation > cur.owner_generation:
            return True  # the host id was re-acquired: the old owner instance is gone
        if last_ts is None:
            last_ts = record.timestamp
        else:
            if record.timestamp != last_ts or seen_live:
                # A live owner may have released a lease another host committed to it.
                if cur.write_id != owner and (
                    yield from _owner_released(resource, geometry, owner)
                ):
                    return True
                raise AcquireIdLive(
                    f"lease {resource.name} is owned by live host {owner} "
                    f"(generation {cur.owner_generation})",
                    leader=cur,
                )
            elapsed = (yield from now()) - wait_start
            if elapsed > _owner_host_dead(obs, record, lockspace):
                return True  # its watchdog has fired by now
            if owner_nowait:
                raise AcquireOwnedRetry(
                    f"lease {resource.name}: owner {owner} silent for {elapsed:.0f} s",
                    leader=cur,
                )
        yield from sleep(1)
        again = yield from read_leader_majority(resource, geometry, host_id)
        if again != cur:
            return False
