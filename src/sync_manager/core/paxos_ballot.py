"""The paxos lease ballot and acquire (spec/sanlock-ondisk.md 6.1-6.5), after Disk Paxos.

Gafni and Lamport's Disk Paxos: each host ("processor" p) owns one block per disk, its dblock,
and reads everyone's. sanlock runs one consensus *instance* per lease version: instance
``lver = L + 1`` decides who owns the lease after version L. The value decided is
(owner host_id, owner generation, owner's monotonic time) = (inp, inp2, inp3); the leader
record caches the last decided instance.

Invariants kept here:

* **At most one value is chosen per lver.** A ballot writes its block with ballot number mbal
  (phase 1), reads every block of a majority of disks, and aborts if any block of the same
  instance carries a higher mbal; otherwise it adopts the value of the highest ``bal`` seen
  (or its own input if none), writes it with ``bal = mbal`` (phase 2) and re-reads, aborting
  again on a higher mbal. Any two majorities of disks intersect, so a later ballot that passes
  phase 1 sees the value of an earlier one that passed phase 2, and proposes it (the paper's
  Lemma: "a value chosen is the value of every later ballot").
* **mbal is congruent to host_id modulo max_hosts**, so the ballots of two hosts never share a
  number: the first is ``host_id`` (or the next multiple of max_hosts above the largest mbal
  read, plus host_id), each retry adds max_hosts.
* **lver never decreases.** The instance is always ``leader.lver + 1`` of the leader read at the
  start; blocks of older instances are ignored, a block of a newer one aborts the ballot, and
  a leader with a higher lver restarts the whole acquire.

An acquire (6.1) reads the whole lease, decides whether it may run a ballot (free, ours, or its
owner is dead: 6.2), runs ballots until one completes or another host commits the instance,
and commits the chosen value to the leader (6.5).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from sync_manager.core.effects import Step, now, read, sleep
from sync_manager.core.paxos_errors import (
    AcquireLver,
    AcquireOther,
    AcquireOwned,
    BallotAborted,
    DblockLver,
    DblockMbal,
    DblockRead,
    DblockWrite,
    LeaderWrite,
    PaxosError,
)
from sync_manager.core.paxos_io import (
    IO_ERRORS,
    Host,
    LockspaceDisk,
    ReadPattern,
    Resource,
    ballot_read_sectors,
    majority,
    read_leader_majority,
    read_lease_head,
    write_each,
    write_leader_majority,
)
from sync_manager.core.paxos_owner import OwnerObservation, wait_for_owner
from sync_manager.errors import CorruptRecord, IOTimeout, OnDiskError, StorageError
from sync_manager.ondisk.areas import FIRST_HOST_SECTOR, host_sector_offset, written_hosts
from sync_manager.ondisk.dblock import (
    MBLOCK_OFFSET,
    MBLOCK_SHARED,
    ModeBlock,
    PaxosDblock,
    pack_host_sector,
)
from sync_manager.ondisk.geometry import Geometry
from sync_manager.ondisk.leader import LFL_SHORT_HOLD, LeaderRecord

__all__ = [
    "Acquired",
    "OwnerObservation",
    "next_mbal",
    "paxos_acquire",
    "run_ballot",
]


@dataclass(frozen=True, slots=True)
class Acquired:
    """A committed acquire: the leader as it now is on disk, our last ballot block, the lease's
    geometry, and the hosts whose mode block was SHARED when phase 1 read them."""

    leader: LeaderRecord
    dblock: PaxosDblock
    geometry: Geometry
    shared_seen: frozenset[int]


def next_mbal(max_mbal: int, max_hosts: int, host_id: int) -> int:
    """Our first ballot number after reading ``max_mbal`` (6.3)."""
    if max_mbal == 0:
        return host_id
    return max_mbal - max_mbal % max_hosts + max_hosts + host_id


@dataclass(frozen=True, slots=True)
class _Lease:
    """What the steps of one acquire share: the lease, its real geometry, us, how to read."""

    resource: Resource
    geometry: Geometry
    host: Host
    pattern: ReadPattern
    keep_shared: bool  # write our SHARED mode block along with each dblock (sh -> ex)


# --- one ballot ------------------------------------------------------------------------------


def _write_our_block(lease: _Lease, dblock: PaxosDblock, *, retract: bool) -> Step[None]:
    resource, geometry, host = lease.resource, lease.geometry, lease.host
    mode = ModeBlock(MBLOCK_SHARED, host.generation) if lease.keep_shared else None
    sector = pack_host_sector(dblock, geometry.sector_size, mode)
    ok, error = yield from write_each(resource, host_sector_offset(host.host_id, geometry), sector)
    if not majority(len(resource.disks), ok):
        raise DblockWrite(
            f"ballot {dblock.lver}: dblock written on {ok} of {len(resource.disks)} disks",
            dblock=dblock,
            retract=retract,
        ) from error


def _read_blocks(
    lease: _Lease,
    num_hosts: int,
    ours: PaxosDblock,
    timed_out: set[str],
    *,
    shared_seen: set[int] | None,
    retract: bool,
) -> Step[PaxosDblock | None]:
    """Read every host's block on each disk; abort on a newer instance or a higher ballot.

    Returns the accepted block with the highest bal (phase 1's "bk_max"), None if none.
    """
    resource, sector_size = lease.resource, lease.geometry.sector_size
    count = ballot_read_sectors(num_hosts, lease.geometry, lease.pattern)
    best: PaxosDblock | None = None
    reads = 0
    error: StorageError | None = None
    for path, base in resource.disks:
        if path in timed_out:  # sanlock abandons a timed-out disk for the rest of the ballot
            continue
        try:
            buf = yield from read(path, base, count * sector_size)
        except IO_ERRORS as err:
            if isinstance(err, IOTimeout):
                timed_out.add(path)
            error = err
            continue
        reads += 1
        # Never-written sectors hold blank blocks, which change nothing below: skip them.
        for index in written_hosts(buf, lease.geometry, min(num_hosts, count - FIRST_HOST_SECTOR)):
            start = (FIRST_HOST_SECTOR + index) * sector_size
            block = PaxosDblock.unpack(buf, start)
            try:
                block.check()
            except OnDiskError:
                continue  # a torn or corrupt block takes no part in the ballot
            if shared_seen is not None and ModeBlock.unpack(buf, start + MBLOCK_OFFSET).shared:
                shared_seen.add(index + 1)
            if block.lver < ours.lver:
                continue
            if block.lver > ours.lver:
                raise DblockLver(
                    f"ballot {ours.lver}: host {index + 1} votes on lver {block.lver}",
                    dblock=ours,
                )
            if block.mbal > ours.mbal:
                aborted = DblockMbal(
                    f"ballot {ours.lver}: host {index + 1} has mbal {block.mbal} > {ours.mbal}",
                    dblock=ours,
                )
                aborted.seen_mbal = block.mbal
                raise aborted
            # A block with a value but bal 0 is malformed; sanlock logs and ignores it.
            if block.inp and block.bal and (best is None or block.bal > best.bal):
                best = block
    if not majority(len(resource.disks), reads):
        raise DblockRead(
            f"ballot {ours.lver}: dblocks read on {reads} of {len(resource.disks)} disks",
            dblock=ours,
            retract=retract,
        ) from error
    return best


def run_ballot(
    resource: Resource,
    geometry: Geometry,
    host: Host,
    *,
    num_hosts: int,
    next_lver: int,
    mbal: int,
    pattern: ReadPattern = ReadPattern.COMPACT,
    keep_shared: bool = False,
    shared_seen: set[int] | None = None,
) -> Step[PaxosDblock]:
    """One Disk Paxos ballot with ballot number ``mbal`` for instance ``next_lver`` (6.4).

    Returns our phase-2 block, whose (inp, inp2, inp3) is the value chosen. Raises DblockMbal
    or DblockLver (both BallotAborted) when a newer ballot exists, DblockWrite or DblockRead
    when a majority of disks failed; those two carry ``retract`` once phase 2 began. Hosts
    whose mode block is SHARED in phase 1 are added to ``shared_seen``. ``keep_shared``
    writes our SHARED mode block with each dblock (sh -> ex conversion, 6.8).
    """
    lease = _Lease(resource, geometry, host, pattern, keep_shared)
    timed_out: set[str] = set()
    # Phase 1 (prepare). Like sanlock (and unlike the paper) we start from a fresh block.
    ours = PaxosDblock(mbal=mbal, lver=next_lver).sealed()
    yield from _write_our_block(lease, ours, retract=False)
    best = yield from _read_blocks(
        lease, num_hosts, ours, timed_out, shared_seen=shared_seen, retract=False
    )
    # Choose the value: the one accepted with the highest bal, else our own input.
    if best is not None:
        value = (best.inp, best.inp2, best.inp3)
    else:
        value = (host.host_id, host.generation, int((yield from now())))
    ours = PaxosDblock(
        mbal=mbal, bal=mbal, inp=value[0], inp2=value[1], inp3=value[2], lver=next_lver
    ).sealed()
    # Phase 2 (accept). From here another host may commit our value even if we fail.
    yield from _write_our_block(lease, ours, retract=True)
    yield from _read_blocks(lease, num_hosts, ours, timed_out, shared_seen=None, retract=True)
    return ours


# --- acquire ---------------------------------------------------------------------------------


def _ballots(
    lease: _Lease,
    cur: LeaderRecord,
    max_mbal: int,
    *,
    reuse_first_read: bool,
    rng: random.Random,
    shared_seen: set[int],
) -> Step[tuple[PaxosDblock, LeaderRecord | None] | None]:
    """Run ballots for instance ``cur.lver + 1``.

    Returns (our block, None) when a ballot completed and its value must be committed,
    (our last block, the leader) when another host already committed our value for this
    instance, None when the leader moved on (restart the acquire).
    """
    resource, geometry, host = lease.resource, lease.geometry, lease.host
    if cur.max_hosts < host.host_id:
        raise CorruptRecord(
            record="paxos leader", expected=f"max_hosts >= {host.host_id}", found=cur.max_hosts
        )
    next_lver = cur.lver + 1  # from the first read, never from a re-read (6.3)
    mbal = next_mbal(max_mbal, cur.max_hosts, host.host_id)
    dblock = PaxosDblock()
    while True:
        if reuse_first_read:
            tmp, reuse_first_read = cur, False
        else:
            tmp = yield from read_leader_majority(resource, geometry, host.host_id)
        if tmp.lver == next_lver:
            if (tmp.owner_id, tmp.owner_generation) == (host.host_id, host.generation):
                return dblock, tmp  # another host committed our value
            raise AcquireOwned(
                f"lease {resource.name} lver {next_lver} was committed to host {tmp.owner_id}",
                leader=tmp,
            )
        if tmp.lver > next_lver or tmp != cur:
            return None
        try:
            dblock = yield from run_ballot(
                resource,
                geometry,
                host,
                num_hosts=cur.num_hosts,
                next_lver=next_lver,
                mbal=mbal,
                pattern=lease.pattern,
                keep_shared=lease.keep_shared,
                shared_seen=shared_seen,
            )
        except BallotAborted as err:
            if err.dblock is not None:
                dblock = err.dblock
            yield from sleep(rng.random())  # 0..1 s, so contenders fall out of step
            mbal += cur.max_hosts
            if isinstance(err, DblockMbal) and err.seen_mbal >= mbal:
                # Straight above the ballot that beat us, not one max_hosts step at a time:
                # a MINIMAL read starts from our own block's mbal, which may be far below.
                mbal = next_mbal(err.seen_mbal, cur.max_hosts, host.host_id)
            continue
        return dblock, None


def paxos_acquire(
    resource: Resource,
    host: Host,
    *,
    lockspace: LockspaceDisk | None,
    owner_observations: Mapping[int, OwnerObservation],
    rng: random.Random,
    lver: int = 0,
    shared: bool = False,
    owner_nowait: bool = False,
    num_hosts: int = 0,
    pattern: ReadPattern = ReadPattern.COMPACT,
    num_hosts_hint: int | None = None,
    keep_shared: bool = False,
) -> Step[Acquired]:
    """sanlock's ``paxos_lease_acquire``: 6.1 to 6.5, no shared-mode bookkeeping.

    ``lver`` (non-zero) must be the leader's lver (else ACQUIRE_LVER); ``shared`` sets
    LFL_SHORT_HOLD in the committed leader; ``num_hosts`` (non-zero) replaces the leader's.
    """
    shared_seen: set[int] = set()
    while True:
        head = yield from read_lease_head(
            resource, host.host_id, pattern=pattern, num_hosts_hint=num_hosts_hint
        )
        cur, geometry = head.leader, head.geometry
        lease = _Lease(resource, geometry, host, pattern, keep_shared)
        if lver and cur.lver != lver:
            raise AcquireLver(
                f"lease {resource.name} is at lver {cur.lver}, not {lver}", leader=cur
            )
        reuse = cur.timestamp == 0 or (
            cur.owner_id == host.host_id and cur.owner_generation <= host.generation
        )
        if not reuse:
            run = yield from wait_for_owner(
                resource,
                geometry,
                cur,
                host_id=host.host_id,
                lockspace=lockspace,
                observation=owner_observations.get(cur.owner_id),
                owner_nowait=owner_nowait,
            )
            if not run:
                continue
        try:
            outcome = yield from _ballots(
                lease, cur, head.max_mbal, reuse_first_read=reuse, rng=rng, shared_seen=shared_seen
            )
            if outcome is None:
                continue
            dblock, committed = outcome
            if committed is not None:  # another host committed this instance, to us
                return Acquired(committed, dblock, geometry, frozenset(shared_seen))
            leader = yield from _commit(lease, cur, dblock, shared=shared, num_hosts=num_hosts)
        except PaxosError as err:
            err.geometry = geometry  # for the caller's undo, at the lease's real sector size
            raise
        return Acquired(leader, dblock, geometry, frozenset(shared_seen))


def _commit(
    lease: _Lease, cur: LeaderRecord, dblock: PaxosDblock, *, shared: bool, num_hosts: int
) -> Step[LeaderRecord]:
    """Write the chosen value as the new leader (6.5)."""
    resource, geometry, host = lease.resource, lease.geometry, lease.host
    flags = cur.flags
    if dblock.inp == host.host_id:  # SHORT_HOLD is a hint about our own hold only
        flags = flags | LFL_SHORT_HOLD if shared else flags & ~LFL_SHORT_HOLD
    leader = cur.replace(
        lver=dblock.lver,
        owner_id=dblock.inp,
        owner_generation=dblock.inp2,
        timestamp=dblock.inp3,
        write_id=host.host_id,
        write_generation=host.generation,
        write_timestamp=int((yield from now())),
        num_hosts=num_hosts or cur.num_hosts,
        flags=flags,
    )
    try:
        yield from write_leader_majority(resource, geometry, leader, "commit")
    except LeaderWrite as err:
        err.dblock, err.retract = dblock, True
        raise
    if (leader.owner_id, leader.owner_generation) != (host.host_id, host.generation):
        # sanlock compares only the host id; a value of an older generation of ours is not
        # ours either (other hosts would see the newer delta generation and take over).
        raise AcquireOther(
            f"ballot {leader.lver} chose host {leader.owner_id} "
            f"(generation {leader.owner_generation}); the lease is theirs",
            leader=leader,
            dblock=dblock,
        )
    return leader
