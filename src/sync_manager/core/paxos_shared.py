"""Shared (SH) mode of a paxos lease and conversion ex <-> sh (spec 6.7, 6.8).

A shared holder holds no leader: it wins a normal ballot (with LFL_SHORT_HOLD in the leader, a
hint that the hold is brief), writes its SHARED mode block (with its lockspace generation)
and a RELEASED dblock, then frees the leader. Several hosts may do so.

**Exclusive excludes shared**: every exclusive ballot reads all mode blocks in phase 1; after
winning, each SHARED holder is re-read and, if dead (the daemon's ``is_alive``, spec 5.5), its
whole sector is zeroed; if any is alive the exclusive holder frees the leader again and fails
-EAGAIN. A SHARED block written to a majority of disks is seen by every phase 1 (any two
majorities intersect), which is why the mode block writes and re-reads use majorities.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sync_manager.core.effects import Step, read
from sync_manager.core.paxos_ballot import Acquired, OwnerObservation, paxos_acquire
from sync_manager.core.paxos_errors import DblockRead, PaxosError, SharedHoldersLive
from sync_manager.core.paxos_io import (
    IO_ERRORS,
    Host,
    LockspaceDisk,
    ReadPattern,
    Resource,
    leader_geometry,
    majority,
)
from sync_manager.core.paxos_release import (
    FAILURES,
    release_leader,
    released_block,
    undo_acquire,
    write_host_block,
)
from sync_manager.errors import StorageError
from sync_manager.ondisk.areas import host_sector_offset
from sync_manager.ondisk.dblock import MBLOCK_OFFSET, MBLOCK_SHARED, ModeBlock, PaxosDblock
from sync_manager.ondisk.geometry import Geometry
from sync_manager.ondisk.leader import LeaderRecord

__all__ = [
    "AcquireResult",
    "IsAlive",
    "LockspaceArg",
    "clear_dead_shared",
    "convert_to_exclusive",
    "convert_to_shared",
    "hold_shared",
    "lockspace_disk",
    "read_mode_block",
]

IsAlive = Callable[[int, int], bool]
LockspaceArg = LockspaceDisk | tuple[str, int, Geometry]


@dataclass(frozen=True, slots=True)
class AcquireResult:
    """A lease we hold: the leader as we last wrote or saw it, our ballot block (needed to
    release), the lease's geometry, and whether we hold it shared."""

    leader: LeaderRecord
    dblock: PaxosDblock
    geometry: Geometry
    shared: bool

    @property
    def lver(self) -> int:
        """The lease version we hold (``RES:LVER`` in sanlock's inquire string)."""
        return self.leader.lver


def lockspace_disk(lockspace: LockspaceArg | None) -> LockspaceDisk | None:
    """A lockspace given as (path, offset, geometry) as a LockspaceDisk (our io_timeout 10)."""
    if lockspace is None or isinstance(lockspace, LockspaceDisk):
        return lockspace
    return LockspaceDisk(*lockspace)


def read_mode_block(resource: Resource, geometry: Geometry, host_id: int) -> Step[ModeBlock]:
    """Host ``host_id``'s mode block: SHARED if any disk of a majority read says so.

    sanlock reads the first disk only; with majority writes, a SHARED block may be missing
    from one disk, so we look at every disk that answers and need a majority of them.
    """
    found = ModeBlock()
    reads = 0
    error: StorageError | None = None
    for path, base in resource.disks:
        try:
            buf = yield from read(
                path, base + host_sector_offset(host_id, geometry), geometry.sector_size
            )
        except IO_ERRORS as err:
            error = err
            continue
        reads += 1
        mode = ModeBlock.unpack(buf, MBLOCK_OFFSET)
        if mode.shared and not found.shared:
            found = mode
    if not majority(len(resource.disks), reads):
        raise DblockRead(f"mode block of host {host_id} unreadable") from error
    return found


def clear_dead_shared(
    resource: Resource, geometry: Geometry, hosts: list[int], is_alive: IsAlive | None
) -> Step[int]:
    """Zero the sector of every SHARED holder in ``hosts`` that is dead; count the live ones.

    ``is_alive(host_id, generation)`` is the daemon's "is host alive" (spec 5.5); without it
    every holder counts as alive, as sanlock does when it knows nothing of a host.
    """
    live = 0
    for host_id in hosts:
        mode = yield from read_mode_block(resource, geometry, host_id)
        if not mode.shared or not mode.generation:
            continue  # dropped its shared lease since phase 1 (or malformed: ignored)
        if is_alive is None or is_alive(host_id, mode.generation):
            live += 1
            continue
        yield from write_host_block(resource, geometry, host_id, None)
    return live


def hold_shared(resource: Resource, host: Host, got: Acquired) -> Step[AcquireResult]:
    """Turn a just-committed exclusive hold into a shared one (6.7): SHARED mode block with a
    RELEASED dblock, then free the leader. On failure, undo everything (R_UNDO_SHARED)."""
    mode = ModeBlock(MBLOCK_SHARED, host.generation)
    try:
        yield from write_host_block(
            resource, got.geometry, host.host_id, released_block(got.dblock), mode
        )
        freed = yield from release_leader(resource, got.geometry, host, got.leader)
    except FAILURES as err:
        yield from undo_acquire(
            err, resource, got.geometry, host=host, leader=got.leader, dblock=got.dblock
        )
        raise
    return AcquireResult(freed or got.leader, got.dblock, got.geometry, shared=True)


def convert_to_shared(
    resource: Resource, host: Host, leader: LeaderRecord, dblock: PaxosDblock
) -> Step[AcquireResult]:
    """ex -> sh (6.8): our block becomes RELEASED + SHARED, then the leader is freed."""
    geometry = leader_geometry(leader)
    mode = ModeBlock(MBLOCK_SHARED, host.generation)
    yield from write_host_block(resource, geometry, host.host_id, released_block(dblock), mode)
    freed = yield from release_leader(resource, geometry, host, leader)
    return AcquireResult(freed or leader, dblock, geometry, shared=True)


def convert_to_exclusive(
    resource: Resource,
    host: Host,
    *,
    rng: random.Random,
    lockspace: LockspaceArg | None = None,
    owner_observations: Mapping[int, OwnerObservation] | None = None,
    owner_nowait: bool = False,
    is_alive: IsAlive | None = None,
    read_pattern: ReadPattern = ReadPattern.COMPACT,
    num_hosts_hint: int | None = None,
) -> Step[AcquireResult]:
    """sh -> ex (6.8): a ballot that keeps our SHARED mode block in every write, so a failure
    leaves us holding the lease shared.

    Other SHARED holders found by the ballot are checked with ``is_alive``; dead ones are
    cleared. If live ones remain, the leader is freed again and SharedHoldersLive (-EAGAIN) is
    raised; we still hold the lease shared. On success our mode block is cleared.
    """
    try:
        got = yield from paxos_acquire(
            resource,
            host,
            lockspace=lockspace_disk(lockspace),
            owner_observations=owner_observations or {},
            rng=rng,
            owner_nowait=owner_nowait,
            pattern=read_pattern,
            num_hosts_hint=num_hosts_hint,
            keep_shared=True,
        )
    except PaxosError as err:
        if err.retract:  # free the leader we may own; keep our SHARED block
            last = err.leader if err.leader is not None and err.leader.lver else None
            geometry = err.geometry or resource.geometry
            try:
                yield from release_leader(resource, geometry, host, last)
            except FAILURES as failure:
                err.cleanup_error = failure
        raise
    others = sorted(got.shared_seen - {host.host_id})
    if others:
        try:
            live = yield from clear_dead_shared(resource, got.geometry, others, is_alive)
        except FAILURES as err:
            try:
                yield from release_leader(resource, got.geometry, host, got.leader)
            except FAILURES as failure:
                if isinstance(err, PaxosError):
                    err.cleanup_error = failure
            raise
        if live:
            yield from release_leader(resource, got.geometry, host, got.leader)
            raise SharedHoldersLive(
                f"lease {resource.name} is held shared by {live} other live host(s)",
                leader=got.leader,
            )
    with contextlib.suppress(PaxosError):  # we hold it exclusive; release clears it anyway
        yield from write_host_block(resource, got.geometry, host.host_id, got.dblock, None)
    return AcquireResult(got.leader, got.dblock, got.geometry, shared=False)
