"""Releasing a paxos lease, and writing a host's own sector (spec/sanlock-ondisk.md 6.6).

An exclusive holder releases in two writes: its per-host sector (its last ballot block with the
RELEASED flag, which the checksum does not cover, and a zero mode block), then the leader with
timestamp 0. The leader is written only if we were its last writer: when another host
committed us as owner, a leader write of ours could overwrite a newer leader, so the RELEASED
flag alone tells the others (6.2 step 5). owner_id, owner_generation and lver stay in the freed
leader: **lver never decreases**.

The same sector writes serve shared mode (6.7) and the undo of a half-done acquire (sanlock's
R_ERASE_ALL / R_UNDO_SHARED). Every write here needs a majority of the lease's disks.
"""

from __future__ import annotations

import contextlib

from sync_manager.core.effects import Step, now, read
from sync_manager.core.paxos_errors import DblockWrite, PaxosError, ReleaseLver, ReleaseOwner
from sync_manager.core.paxos_io import (
    IO_ERRORS,
    Host,
    Resource,
    leader_geometry,
    majority,
    read_leader_majority,
    write_each,
    write_leader_majority,
)
from sync_manager.errors import DiskIOError, IOTimeout, OnDiskError
from sync_manager.ondisk.areas import host_sector_offset
from sync_manager.ondisk.dblock import DBLOCK_FL_RELEASED, ModeBlock, PaxosDblock, pack_host_sector
from sync_manager.ondisk.geometry import Geometry
from sync_manager.ondisk.leader import LFL_SHORT_HOLD, LeaderRecord

__all__ = [
    "FAILURES",
    "release",
    "release_leader",
    "released_block",
    "undo_acquire",
    "write_host_block",
]

# Everything a lease step can fail with on purpose (cleanup paths catch these, nothing else).
FAILURES: tuple[type[Exception], ...] = (PaxosError, OnDiskError, DiskIOError, IOTimeout)


def write_host_block(
    resource: Resource,
    geometry: Geometry,
    host_id: int,
    dblock: PaxosDblock | None,
    mode: ModeBlock | None = None,
) -> Step[None]:
    """Write host ``host_id``'s whole sector (dblock, mode block, zeros) on every disk.

    sanlock's ``write_host_block`` stops at the first failing disk; we require a majority, as
    for every other paxos write, so that a reader of any majority sees the mode block.
    """
    sector = pack_host_sector(dblock or PaxosDblock(), geometry.sector_size, mode)
    ok, error = yield from write_each(resource, host_sector_offset(host_id, geometry), sector)
    if not majority(len(resource.disks), ok):
        raise DblockWrite(
            f"host {host_id} block of {resource.name} written on {ok} of "
            f"{len(resource.disks)} disks",
            dblock=dblock,
            code=error.code if error is not None else None,
        ) from error


def released_block(dblock: PaxosDblock) -> PaxosDblock:
    """``dblock`` with the RELEASED flag (outside the checksum: the vote itself is unchanged).

    sanlock blanks a block whose value is another host's before flagging it (with an
    uninitialised buffer, a bug); we keep every block's vote as it is, which never removes an
    accepted value from the disk.
    """
    return PaxosDblock(
        dblock.mbal,
        dblock.bal,
        dblock.inp,
        dblock.inp2,
        dblock.inp3,
        dblock.lver,
        dblock.checksum,
        DBLOCK_FL_RELEASED,
    )


def release_leader(
    resource: Resource, geometry: Geometry, host: Host, last: LeaderRecord | None
) -> Step[LeaderRecord | None]:
    """sanlock's ``paxos_lease_release`` (6.6 steps 3-4); returns the freed leader, or None
    when another host wrote the current leader (we must not write it then)."""
    leader = yield from read_leader_majority(resource, geometry, host.host_id)
    if last is None:  # "make sure we are not the owner", whoever the owner is
        last = leader
    if leader.write_id != host.host_id:
        # Another host committed us (or someone else) after us; writing could clobber a newer
        # leader. Our RELEASED dblock tells the others (6.2 step 5).
        return None
    if leader.lver != last.lver:
        raise ReleaseLver(
            f"release {resource.name}: lver on disk {leader.lver}, ours {last.lver}",
            leader=leader,
        )
    if (
        leader.timestamp == 0
        or (leader.owner_id, leader.owner_generation) != (host.host_id, host.generation)
        or leader != last
    ):
        raise ReleaseOwner(
            f"release {resource.name}: leader on disk (owner {leader.owner_id} generation "
            f"{leader.owner_generation} timestamp {leader.timestamp}) is not the one we wrote",
            leader=leader,
        )
    freed = leader.replace(
        timestamp=0,
        write_id=host.host_id,
        write_generation=host.generation,
        write_timestamp=int((yield from now())),
        flags=leader.flags & ~LFL_SHORT_HOLD,
    )
    yield from write_leader_majority(resource, geometry, freed, "release")
    return freed


def release(
    resource: Resource,
    host: Host,
    leader_we_committed: LeaderRecord | None,
    dblock_we_wrote: PaxosDblock,
    *,
    shared: bool = False,
) -> Step[None]:
    """Release a lease we hold (6.6; 6.7 for ``shared``).

    Exclusive: nothing to do if our leader has lver 0 (nothing was committed); else write our
    ballot block with the RELEASED flag and a zero mode block (a failure there is ignored), then
    free the leader unless another host wrote it. ``leader_we_committed`` None means "we may
    own it, we do not know": compare with the leader on disk (sanlock's release without a
    last leader). Shared: write the RELEASED block with a zero mode block; the leader is not
    touched. Raises ReleaseLver / ReleaseOwner when the leader on disk is not ours.
    """
    geometry = (
        leader_geometry(leader_we_committed)
        if leader_we_committed is not None
        else resource.geometry
    )
    if shared:
        newest = yield from _newest_own_block(resource, geometry, host.host_id, dblock_we_wrote)
        yield from write_host_block(resource, geometry, host.host_id, released_block(newest), None)
        return
    if leader_we_committed is not None and leader_we_committed.lver == 0:
        return
    with contextlib.suppress(PaxosError):  # as sanlock: the leader write is what frees it
        yield from write_host_block(
            resource, geometry, host.host_id, released_block(dblock_we_wrote), None
        )
    yield from release_leader(resource, geometry, host, leader_we_committed)


_UNREADABLE: tuple[type[Exception], ...] = (*IO_ERRORS, OnDiskError)


def _newest_own_block(
    resource: Resource, geometry: Geometry, host_id: int, known: PaxosDblock
) -> Step[PaxosDblock]:
    """Our block as the disks have it, when it is newer than ``known``.

    A shared holder's block can be newer than the one it acquired with: a failed sh -> ex
    conversion ran ballots, and may even have committed and freed a newer lease version,
    without the holder learning of them. Writing the older block back at release would erase
    the only trace of that decision in our sector, and a host that read the leader before it
    could decide the same version again (found by the simulator). Only we write our sector,
    so the newest valid block on the disks is our last write.
    """
    newest = known
    at = host_sector_offset(host_id, geometry)
    for path, base in resource.disks:
        try:
            block = PaxosDblock.unpack((yield from read(path, base + at, geometry.sector_size)))
            block.check()
        except _UNREADABLE:
            continue
        if (block.lver, block.mbal) > (newest.lver, newest.mbal):
            newest = block
    return newest


def undo_acquire(
    error: Exception,
    resource: Resource,
    geometry: Geometry,
    *,
    host: Host,
    leader: LeaderRecord | None,
    dblock: PaxosDblock,
) -> Step[None]:
    """Best-effort release after ``error`` failed an acquire half way: our block RELEASED
    (with ``dblock``'s vote) and a zero mode block, then the leader freed if it is ours.

    The first failure here is recorded in ``error.cleanup_error`` (the daemon retries).
    """
    failure: Exception | None = None
    try:
        yield from write_host_block(resource, geometry, host.host_id, released_block(dblock), None)
    except FAILURES as err:
        failure = err
    try:
        yield from release_leader(resource, geometry, host, leader)
    except FAILURES as err:
        failure = failure or err
    if failure is not None and isinstance(error, PaxosError):
        error.cleanup_error = failure
