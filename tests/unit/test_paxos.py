"""Paxos leases (spec/sanlock-ondisk.md 6): ballot, acquire, release, shared mode, requests.

The steps run on FakeDisks holding a lockspace (``lockspace_init``, with delta records written
here for the owners) at offset 0 and a resource lease (``resource_init``) at 1 MiB, with a
FakeClock per host. ``Run`` below drives a step effect by effect: it can throw DiskIOError into
the step for chosen disks, run a hook at each Sleep (another host renewing), and stop in the
middle (a crash); two ``Run``s ticked alternately interleave two hosts at every I/O. Expected
values are sanlock's, as observed (spec 6.3 examples, the golden images from
tests/data/make_golden.sh) and as read in its source. The last tests run the real sanlock 3.8.5
(``sanlock direct``) on the same bytes; in CI (``CI=true``) a missing sanlock fails them.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Generic, TypeVar

import pytest

from sync_manager.core.effects import Effect, Now, Read, Sleep, Step, Write
from sync_manager.core.paxos import (
    SH_RETRIES,
    AcquireResult,
    Host,
    LockspaceDisk,
    Owner,
    OwnerObservation,
    ReadPattern,
    Resource,
    acquire,
    convert_to_exclusive,
    convert_to_shared,
    read_leader,
    read_owners,
    release,
    request,
)
from sync_manager.core.paxos_ballot import next_mbal, paxos_acquire, run_ballot
from sync_manager.core.paxos_errors import (
    AcquireIdLive,
    AcquireLockspace,
    AcquireLver,
    AcquireOther,
    AcquireOwned,
    AcquireOwnedRetry,
    AcquireShRetry,
    BallotAborted,
    DblockMbal,
    DblockRead,
    DblockWrite,
    LeaderDiff,
    PaxosError,
    ReleaseLver,
    ReleaseOwner,
    RequestLver,
    RequestOld,
    SharedHoldersLive,
)
from sync_manager.core.paxos_io import lease_read_sectors
from sync_manager.errors import ChecksumMismatch, DiskIOError
from sync_manager.ondisk.areas import (
    delta_offset,
    host_sector_offset,
    lockspace_init,
    pack_delta_sector,
    resource_init,
)
from sync_manager.ondisk.dblock import (
    DBLOCK_FL_RELEASED,
    MBLOCK_OFFSET,
    MBLOCK_SHARED,
    ModeBlock,
    PaxosDblock,
    pack_host_sector,
)
from sync_manager.ondisk.geometry import MIB, Geometry
from sync_manager.ondisk.leader import LFL_SHORT_HOLD, PAXOS_MAGIC, LeaderRecord
from sync_manager.ondisk.names import encode_name
from sync_manager.ondisk.request import FORCE_MODE_FORCE, FORCE_MODE_GRACEFUL, RequestRecord
from sync_manager.sim.disk import FakeDisk
from sync_manager.sim.runner import FakeClock
from sync_manager.timeouts import Timeouts

T = TypeVar("T")

DATA = Path(__file__).resolve().parent.parent / "data"
GEOM = Geometry(512, MIB)
LS = "LS"
RES_NAME = "R"
DISK = "/dev/fake0"
RES_OFF = MIB
IO = 10
HOST_DEAD = Timeouts(IO).host_dead  # 140


# --- fixtures: disks, lockspace, hosts -------------------------------------------------------


def new_disks(*names: str, geometry: Geometry = GEOM, num_hosts: int = 0) -> dict[str, FakeDisk]:
    """Disks with a lockspace at 0 and the lease at RES_OFF."""
    disks = {}
    for name in names:
        disk = FakeDisk(name, RES_OFF + geometry.align_size)  # a file: 512-byte sectors
        init = lockspace_init(LS, geometry, IO)
        disk.write(0, init.area)
        disk.write(0, init.first_sector)
        disk.write(RES_OFF, resource_init(LS, RES_NAME, geometry, num_hosts))
        disks[name] = disk
    return disks


def resource(*names: str, geometry: Geometry = GEOM) -> Resource:
    return Resource(LS, RES_NAME, tuple((name, RES_OFF) for name in names or (DISK,)), geometry)


LOCKSPACE = LockspaceDisk(DISK, 0, GEOM, IO)


def join(
    disk: FakeDisk, host_id: int, generation: int, timestamp: int, io_timeout: int = IO
) -> None:
    """Write host ``host_id``'s delta lease as held (what its add_lockspace would write)."""
    at = delta_offset(host_id, GEOM)
    record = LeaderRecord.unpack(memoryview(disk.data), at).replace(
        owner_id=host_id,
        owner_generation=generation,
        timestamp=timestamp,
        resource_name=encode_name(f"host{host_id}"),
        io_timeout=io_timeout,
    )
    disk.write(at, pack_delta_sector(record, GEOM.sector_size))


def leave(disk: FakeDisk, host_id: int) -> None:
    at = delta_offset(host_id, GEOM)
    record = LeaderRecord.unpack(memoryview(disk.data), at).replace(timestamp=0)
    disk.write(at, pack_delta_sector(record, GEOM.sector_size))


def leader_of(disk: FakeDisk, base: int = RES_OFF) -> LeaderRecord:
    return LeaderRecord.unpack(memoryview(disk.data), base)


def dblock_of(disk: FakeDisk, host_id: int, geometry: Geometry = GEOM) -> PaxosDblock:
    return PaxosDblock.unpack(
        memoryview(disk.data), RES_OFF + host_sector_offset(host_id, geometry)
    )


def mode_of(disk: FakeDisk, host_id: int) -> ModeBlock:
    return ModeBlock.unpack(
        memoryview(disk.data), RES_OFF + host_sector_offset(host_id, GEOM) + MBLOCK_OFFSET
    )


def live(host_id: int, generation: int, timestamp: int, at: float) -> OwnerObservation:
    """A host_status whose last renewal check saw the record change (a live host)."""
    return OwnerObservation(at, at, host_id, generation, timestamp, IO)


# --- a driver that can fail, pause and interleave --------------------------------------------


class Run(Generic[T]):
    """Drive one step on fake disks, one effect per tick.

    ``failing`` disks answer every I/O with DiskIOError (thrown into the step, as the real
    driver does); ``on_sleep`` runs before each Sleep is carried out (another host's renewal).
    Every effect carried out is kept in ``log``.
    """

    def __init__(
        self,
        step: Step[T],
        disks: dict[str, FakeDisk],
        clock: FakeClock | None = None,
        *,
        failing: Iterable[str] = (),
        on_sleep: Callable[[], None] | None = None,
    ) -> None:
        self.step = step
        self.disks = disks
        self.clock = clock or FakeClock()
        self.failing = set(failing)
        self.on_sleep = on_sleep
        self.log: list[Effect] = []
        self._send: object = None
        self._throw: BaseException | None = None
        self._effect: Effect | None = None
        self.done = False
        self.value: T | None = None
        self.error: BaseException | None = None

    def peek(self) -> Effect | None:
        """The next effect the step asks for (not yet carried out); None when it is done."""
        if self._effect is None and not self.done:
            try:
                if self._throw is not None:
                    error, self._throw = self._throw, None
                    self._effect = self.step.throw(error)
                else:
                    self._effect = self.step.send(self._send)
            except StopIteration as stop:
                self.done, self.value = True, stop.value
            except Exception as error:  # the step failed: keep it for the test to look at
                self.done, self.error = True, error
        return self._effect

    def tick(self) -> bool:
        """Carry out one effect; False once the step has finished."""
        effect = self.peek()
        if effect is None:
            return False
        self._effect = None
        self._send = None
        self.log.append(effect)
        if isinstance(effect, Read | Write) and effect.disk in self.failing:
            self._throw = DiskIOError(effect.disk, "injected EIO", err=5)
        elif isinstance(effect, Read):
            self._send = self.disks[effect.disk].read(effect.offset, effect.length)
        elif isinstance(effect, Write):
            self.disks[effect.disk].write(effect.offset, effect.data)
        elif isinstance(effect, Sleep):
            if self.on_sleep is not None:
                self.on_sleep()
            self.clock.advance(effect.seconds)
        elif isinstance(effect, Now):
            self._send = self.clock.time
        return True

    def finish(self) -> T:
        """Run to the end; the step's value, or its exception raised."""
        while self.tick():
            pass
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]

    def reads(self) -> list[Read]:
        return [e for e in self.log if isinstance(e, Read)]

    def writes(self) -> list[Write]:
        return [e for e in self.log if isinstance(e, Write)]


def run(step: Step[T], disks: dict[str, FakeDisk], clock: FakeClock | None = None) -> T:
    return Run(step, disks, clock).finish()


def take(
    disks: dict[str, FakeDisk],
    host: Host,
    *,
    res: Resource | None = None,
    clock: FakeClock | None = None,
    seed: int = 0,
    **options: object,
) -> AcquireResult:
    """Acquire the lease (direct mode unless a lockspace is given)."""
    step = acquire(res or resource(), host, rng=random.Random(seed), **options)  # type: ignore[arg-type]
    return run(step, disks, clock)


# --- ballot numbers --------------------------------------------------------------------------


def test_next_mbal_is_congruent_to_host_id() -> None:
    assert next_mbal(0, 2000, 1) == 1
    assert next_mbal(1, 2000, 1) == 2001
    assert next_mbal(1, 2000, 2) == 2002
    assert next_mbal(2001, 2000, 2) == 4002
    assert next_mbal(4002, 2000, 7) == 6007
    for max_mbal in (0, 1, 1999, 2000, 2001, 123456):
        for host_id in (1, 2, 1999, 2000):
            mbal = next_mbal(max_mbal, 2000, host_id)
            assert mbal % 2000 == host_id % 2000
            assert mbal > max_mbal


def test_spec_mbal_sequence_1_2001_2002_4002() -> None:
    """Spec 6.3 [verified]: 1, then 2001 (same host again), 2002 (host 2 after mbal 1), 4002
    (host 2 after max 2001)."""
    h1, h2 = Host(1, 1), Host(2, 1)
    disks = new_disks(DISK)
    got = take(disks, h1)
    assert dblock_of(disks[DISK], 1).mbal == 1
    run(release(resource(), h1, got.leader, got.dblock), disks)
    got = take(disks, h1)
    assert dblock_of(disks[DISK], 1).mbal == 2001
    run(release(resource(), h1, got.leader, got.dblock), disks)
    take(disks, h2)
    assert dblock_of(disks[DISK], 2).mbal == 4002

    disks = new_disks(DISK)
    got = take(disks, h1)
    run(release(resource(), h1, got.leader, got.dblock), disks)
    take(disks, h2)
    assert dblock_of(disks[DISK], 2).mbal == 2002


# --- uncontended acquire ---------------------------------------------------------------------


def test_uncontended_acquire_writes_sanlocks_ballot() -> None:
    disks = new_disks(DISK)
    clock = FakeClock(500.75)
    got = take(disks, Host(1, 3), clock=clock)
    disk = disks[DISK]
    ts = 500
    assert dblock_of(disk, 1) == PaxosDblock(1, 1, 1, 3, ts, 1).sealed()
    assert mode_of(disk, 1) == ModeBlock()
    leader = leader_of(disk)
    assert leader == got.leader
    assert (leader.lver, leader.owner_id, leader.owner_generation) == (1, 1, 3)
    assert leader.timestamp == ts
    assert (leader.write_id, leader.write_generation, leader.write_timestamp) == (1, 3, ts)
    assert leader.flags & LFL_SHORT_HOLD == 0
    assert leader.checksum == leader.computed_checksum()
    assert got.dblock == dblock_of(disk, 1)
    assert got.lver == 1 and not got.shared
    assert clock.time == 500.75  # no waiting


@pytest.mark.parametrize(
    ("image", "host"),
    [("resource_512_1M_acquired_h1", Host(1, 1)), ("resource_512_1M_acquired_h2", Host(2, 3))],
)
def test_acquire_is_byte_identical_to_sanlock(image: str, host: Host) -> None:
    """Our acquire on sanlock's init image, at the second sanlock's clock read, writes the
    very bytes `sanlock direct acquire` wrote (tests/data/make_golden.sh)."""
    golden = (DATA / f"{image}.head.bin").read_bytes()
    stamp = LeaderRecord.unpack(golden).timestamp
    disk = FakeDisk(DISK, MIB)
    disk.write(0, resource_init(LS, "R1", GEOM))
    res = Resource(LS, "R1", ((DISK, 0),), GEOM)
    run(acquire(res, host, rng=random.Random(0)), {DISK: disk}, FakeClock(stamp + 0.5))
    assert disk.data[: len(golden)] == golden
    assert not any(disk.data[len(golden) :])


def test_acquire_io_patterns() -> None:
    """sanlock: 1 MiB read, then per phase a 512 B write and a roundup_pow2(num_hosts + 2)
    sector read, then the leader write. COMPACT reads num_hosts + 2 sectors; same disk result."""
    results = {}
    for pattern in ReadPattern:
        disks = new_disks(DISK)
        step = acquire(resource(), Host(1, 1), rng=random.Random(0), read_pattern=pattern)
        runner = Run(step, disks)
        runner.finish()
        results[pattern] = (runner, bytes(disks[DISK].data))
        assert [type(e).__name__ for e in runner.log if isinstance(e, Read | Write)] == [
            "Read", "Write", "Read", "Write", "Read", "Write",
        ]  # fmt: skip
        assert [len(w.data) for w in runner.writes()] == [512, 512, 512]
    sanlock_reads = [r.length for r in results[ReadPattern.SANLOCK][0].reads()]
    compact_reads = [r.length for r in results[ReadPattern.COMPACT][0].reads()]
    minimal_reads = [r.length for r in results[ReadPattern.MINIMAL][0].reads()]
    assert sanlock_reads == [MIB, 2048 * 512, 2048 * 512]
    assert compact_reads == [2002 * 512] * 3
    assert minimal_reads == [4096, 2002 * 512, 2002 * 512]  # leader and our block, 2 phases
    assert results[ReadPattern.SANLOCK][1] == results[ReadPattern.COMPACT][1]
    assert results[ReadPattern.MINIMAL][1] == results[ReadPattern.COMPACT][1]


def test_minimal_head_leaves_a_higher_ballot_to_phase_1() -> None:
    """MINIMAL does not see another host's higher mbal before its ballot: phase 1 does, aborts,
    and the retry wins with a ballot number above it, still on the first lease version."""
    disks = new_disks(DISK)
    run(acquire(resource(), Host(2, 1), rng=random.Random(0)), disks)  # lver 1, host 2's mbal 2
    run(release(resource(), Host(2, 1), leader_of(disks[DISK]), dblock_of(disks[DISK], 2)), disks)
    # Host 3 voted (mbal 4003) for lver 2 and vanished before committing.
    stale = PaxosDblock(mbal=4003, lver=2).sealed()
    disks[DISK].data[RES_OFF + 4 * 512 : RES_OFF + 4 * 512 + 56] = stale.pack()
    step = acquire(resource(), Host(1, 1), rng=random.Random(0), read_pattern=ReadPattern.MINIMAL)
    runner = Run(step, disks)
    got = runner.finish()
    assert (got.leader.owner_id, got.lver) == (1, 2)
    assert dblock_of(disks[DISK], 1).mbal > 4003
    # The first ballot (mbal 1) is aborted by host 3's 4003; the retry re-reads the leader and
    # goes straight above it (6001), not one max_hosts step at a time.
    assert [r.length for r in runner.reads()] == [4096, 2002 * 512, 512, 2002 * 512, 2002 * 512]
    assert dblock_of(disks[DISK], 1).mbal == 6001


def test_compact_reads_with_few_hosts() -> None:
    geometry = Geometry(4096, MIB)
    res = resource(geometry=geometry)
    for hint, first in ((None, [252 * 4096, 0]), (10, [12 * 4096]), (5, [7 * 4096, 5 * 4096])):
        disks = new_disks(DISK, geometry=geometry, num_hosts=10)
        step = acquire(res, Host(3, 1), rng=random.Random(0), num_hosts_hint=hint)
        runner = Run(step, disks)
        got = runner.finish()
        lengths = [r.length for r in runner.reads()]
        assert lengths[: len(first) - (first[-1] == 0)] == [n for n in first if n]
        assert lengths[-2:] == [12 * 4096, 12 * 4096]
        assert got.leader.owner_id == 3
    assert lease_read_sectors(geometry, ReadPattern.SANLOCK) == 256


def test_acquire_switches_to_the_leases_geometry() -> None:
    """Assumed 512/1M (e.g. from the lockspace) but the lease is 4096/1M with 10 hosts."""
    geometry = Geometry(4096, MIB)
    disks = new_disks(DISK, geometry=geometry, num_hosts=10)
    got = take(disks, Host(2, 1), res=resource(geometry=GEOM))
    assert got.geometry == geometry
    assert dblock_of(disks[DISK], 2, geometry).mbal == 2
    run(release(resource(geometry=GEOM), Host(2, 1), got.leader, got.dblock), disks)
    assert leader_of(disks[DISK]).timestamp == 0


def test_acquire_checks_lver() -> None:
    disks = new_disks(DISK)
    with pytest.raises(AcquireLver) as info:
        take(disks, Host(1, 1), lver=3)
    assert info.value.code == -240
    assert not any(disks[DISK].data[RES_OFF + 1024 : RES_OFF + 2048])  # nothing written
    got = take(disks, Host(1, 1), lver=0)
    run(release(resource(), Host(1, 1), got.leader, got.dblock), disks)
    assert take(disks, Host(2, 1), lver=1).lver == 2  # migration: RES:1 still current


def test_acquire_own_lease_again() -> None:
    """Owned by us, same or older generation: a ballot runs (6.1 step 4)."""
    disks = new_disks(DISK)
    take(disks, Host(1, 1))
    again = take(disks, Host(1, 1))
    assert (again.lver, dblock_of(disks[DISK], 1).mbal) == (2, 2001)
    newer = take(disks, Host(1, 2))
    assert (newer.lver, newer.leader.owner_generation) == (3, 2)
    with pytest.raises(AcquireLockspace):  # an older generation of ours is someone else
        take(disks, Host(1, 1))


def test_corrupt_dblock_fails_the_initial_read() -> None:
    disks = new_disks(DISK)
    at = RES_OFF + host_sector_offset(5, GEOM)
    disks[DISK].write(at, pack_host_sector(PaxosDblock(mbal=7, lver=1, checksum=1), 512))
    with pytest.raises(ChecksumMismatch) as info:
        take(disks, Host(1, 1))
    assert (info.value.code, info.value.offset) == (-214, at)


# --- the owner liveness check (6.2) ----------------------------------------------------------


def held_by(owner: Host, *, stamp: int = 100) -> dict[str, FakeDisk]:
    """Disks where ``owner`` holds the lease and has joined the lockspace."""
    disks = new_disks(DISK)
    join(disks[DISK], owner.host_id, owner.generation, stamp)
    take(disks, owner)
    return disks


def test_direct_mode_cannot_wait_for_an_owner() -> None:
    disks = held_by(Host(2, 1))
    with pytest.raises(AcquireLockspace) as info:
        take(disks, Host(1, 1))
    assert info.value.code == -241
    assert info.value.leader is not None and info.value.leader.owner_id == 2


def test_live_owner_by_host_status() -> None:
    disks = held_by(Host(2, 1))
    clock = FakeClock(5000.0)
    observations = {2: live(2, 1, 100, at=4990.0)}
    with pytest.raises(AcquireIdLive) as info:
        take(disks, Host(1, 1), clock=clock, lockspace=LOCKSPACE, owner_observations=observations)
    assert info.value.code == -243
    assert clock.time == 5000.0  # decided on the first look
    assert dblock_of(disks[DISK], 1) == PaxosDblock()


def test_live_owner_seen_renewing() -> None:
    """No host_status, but the owner's delta timestamp changes while we watch."""
    disks = held_by(Host(2, 1))
    stamps = iter(range(101, 200))
    runner = Run(
        acquire(resource(), Host(1, 1), rng=random.Random(0), lockspace=LOCKSPACE),
        disks,
        FakeClock(5000.0),
        on_sleep=lambda: join(disks[DISK], 2, 1, next(stamps)),
    )
    with pytest.raises(AcquireIdLive):
        runner.finish()
    assert runner.clock.time == 5001.0


@pytest.mark.parametrize("io_timeout", [10, 20])
def test_silent_owner_is_taken_over_after_host_dead_seconds(io_timeout: int) -> None:
    """The owner's delta lease never changes: we wait host_dead_seconds (8 io + 60) of our own
    clock, from when we started watching, then run a ballot (spec 6.2 step 6, 8.3 (d)). io is
    the owner's, from its delta record (sanlock would use its own 10 here: we never wait less)."""
    disks = new_disks(DISK)
    join(disks[DISK], 2, 1, 100, io_timeout=io_timeout)
    take(disks, Host(2, 1))
    start = 7000.0
    clock = FakeClock(start)
    got = take(disks, Host(1, 1), clock=clock, lockspace=LOCKSPACE)
    dead = Timeouts(io_timeout).host_dead
    assert clock.time - start > dead
    assert clock.time - start == dead + 1  # checked once a second
    assert (got.leader.owner_id, got.lver) == (1, 2)
    assert dblock_of(disks[DISK], 1).mbal == 2001


def test_silent_owner_wait_counts_from_last_live() -> None:
    """With a matching host_status the wait starts at its last_live, not now."""
    disks = held_by(Host(2, 1))
    clock = FakeClock(7000.0)
    # last seen changing 100 s ago, checked (without change) 5 s ago
    obs = {2: OwnerObservation(6995.0, 6900.0, 2, 1, 100, IO)}
    take(disks, Host(1, 1), clock=clock, lockspace=LOCKSPACE, owner_observations=obs)
    assert clock.time - 6900.0 == HOST_DEAD + 1


def test_host_status_of_another_generation_is_not_a_starting_point() -> None:
    disks = held_by(Host(2, 1))
    clock = FakeClock(7000.0)
    stale = {2: OwnerObservation(6995.0, 6900.0, 2, 7, 100, IO)}  # a later generation's view
    take(disks, Host(1, 1), clock=clock, lockspace=LOCKSPACE, owner_observations=stale)
    assert clock.time - 7000.0 == HOST_DEAD + 1


def test_silent_owner_with_owner_nowait() -> None:
    disks = held_by(Host(2, 1))
    clock = FakeClock(7000.0)
    with pytest.raises(AcquireOwnedRetry) as info:
        take(disks, Host(1, 1), clock=clock, lockspace=LOCKSPACE, owner_nowait=True)
    assert info.value.code == -247
    assert clock.time == 7001.0


@pytest.mark.parametrize("how", ["left", "rejoined"])
def test_owner_delta_free_or_newer_is_taken_at_once(how: str) -> None:
    disks = held_by(Host(2, 1))
    if how == "left":
        leave(disks[DISK], 2)
    else:
        join(disks[DISK], 2, 2, 300)
    clock = FakeClock(7000.0)
    got = take(disks, Host(1, 1), clock=clock, lockspace=LOCKSPACE)
    assert clock.time == 7000.0
    assert (got.leader.owner_id, got.lver) == (1, 2)


def committed_by_other(released: bool) -> dict[str, FakeDisk]:
    """Host 2 owns lver 1, but the leader was written by host 3 (write_id 3)."""
    disks = new_disks(DISK)
    join(disks[DISK], 2, 1, 100)
    leader = leader_of(disks[DISK]).replace(
        lver=1, owner_id=2, owner_generation=1, timestamp=90,
        write_id=3, write_generation=1, write_timestamp=95,
    )  # fmt: skip
    disks[DISK].write(RES_OFF, leader.pack().ljust(512, b"\0"))
    mine = PaxosDblock(2, 2, 2, 1, 90, 1).sealed()
    if released:
        mine = dataclasses.replace(mine, flags=DBLOCK_FL_RELEASED)
    disks[DISK].write(RES_OFF + host_sector_offset(2, GEOM), pack_host_sector(mine, 512))
    theirs = PaxosDblock(2003, 2003, 2, 1, 90, 1).sealed()
    disks[DISK].write(RES_OFF + host_sector_offset(3, GEOM), pack_host_sector(theirs, 512))
    return disks


@pytest.mark.parametrize("released", [False, True])
def test_live_owner_that_released_a_lease_another_host_committed(released: bool) -> None:
    disks = committed_by_other(released)
    obs = {2: live(2, 1, 100, at=4990.0)}
    step = acquire(
        resource(), Host(1, 1), rng=random.Random(0), lockspace=LOCKSPACE, owner_observations=obs
    )
    if not released:
        with pytest.raises(AcquireIdLive):
            run(step, disks, FakeClock(5000.0))
        return
    got = run(step, disks, FakeClock(5000.0))
    assert (got.leader.owner_id, got.lver) == (1, 2)
    assert dblock_of(disks[DISK], 1).mbal == 4001  # above host 3's 2003


# --- release ---------------------------------------------------------------------------------


def test_release_then_reacquire() -> None:
    disks = new_disks(DISK)
    host = Host(1, 1)
    got = take(disks, host, clock=FakeClock(600.0))
    run(release(resource(), host, got.leader, got.dblock), disks, FakeClock(700.0))
    leader = leader_of(disks[DISK])
    assert leader.timestamp == 0
    assert (leader.owner_id, leader.owner_generation, leader.lver) == (1, 1, 1)
    assert (leader.write_id, leader.write_generation, leader.write_timestamp) == (1, 1, 700)
    assert leader.checksum == leader.computed_checksum()
    block = dblock_of(disks[DISK], 1)
    assert block.flags == DBLOCK_FL_RELEASED
    assert block.checksum == got.dblock.checksum  # the flag is outside the checksum
    again = take(disks, Host(2, 1))
    assert (again.lver, again.leader.owner_id) == (2, 2)


def test_release_of_a_never_committed_lease_writes_nothing() -> None:
    disks = new_disks(DISK)
    before = bytes(disks[DISK].data)
    empty = leader_of(disks[DISK])
    run(release(resource(), Host(1, 1), empty, PaxosDblock()), disks)
    assert bytes(disks[DISK].data) == before


def test_release_checks_the_leader() -> None:
    disks = new_disks(DISK)
    host = Host(1, 1)
    got = take(disks, host)
    with pytest.raises(ReleaseLver) as lver_info:
        stale = got.leader.replace(lver=7)
        run(release(resource(), host, stale, got.dblock), disks)
    assert lver_info.value.code == -250
    with pytest.raises(ReleaseOwner) as owner_info:
        run(release(resource(), Host(1, 2), got.leader, got.dblock), disks)
    assert owner_info.value.code == -251
    run(release(resource(), host, got.leader, got.dblock), disks)
    with pytest.raises(ReleaseOwner):  # already free
        run(release(resource(), host, got.leader, got.dblock), disks)


def test_release_skips_a_leader_written_by_another_host() -> None:
    disks = committed_by_other(released=False)
    before = leader_of(disks[DISK])
    mine = dblock_of(disks[DISK], 2)
    run(release(resource(), Host(2, 1), before, mine), disks)
    assert leader_of(disks[DISK]) == before
    assert dblock_of(disks[DISK], 2).flags == DBLOCK_FL_RELEASED


# --- contention ------------------------------------------------------------------------------


def interleave(runs: list[Run[T]], schedule: Callable[[int], int], limit: int = 5000) -> None:
    """Tick the runs in the order ``schedule(i)`` gives until all are done.

    Sleeps take one tick here, whatever their length, so the random back-off cannot separate
    the contenders; ``limit`` turns a livelock into a failure instead of a hang.
    """
    for i in range(limit):
        for r in runs:
            r.peek()  # a step only knows it is done once asked for its next effect
        live_runs = [r for r in runs if not r.done]
        if not live_runs:
            return
        live_runs[schedule(i) % len(live_runs)].tick()
    pytest.fail(f"no outcome after {limit} effects: livelock")


def contenders(
    disks: dict[str, FakeDisk], hosts: list[Host], seed: int
) -> list[Run[AcquireResult]]:
    observations = {h.host_id: live(h.host_id, h.generation, 100, at=999.0) for h in hosts}
    return [
        Run(
            acquire(
                resource(),
                host,
                rng=random.Random(seed * 100 + host.host_id),
                lockspace=LOCKSPACE,
                owner_observations=observations,
            ),
            disks,
            FakeClock(1000.0 + host.host_id),
        )
        for host in hosts
    ]


@pytest.mark.parametrize("seed", range(40))
def test_concurrent_acquires_have_one_winner(seed: int) -> None:
    disks = new_disks(DISK)
    hosts = [Host(1, 1), Host(2, 1), Host(3, 1)][: 2 + seed % 2]
    for host in hosts:
        join(disks[DISK], host.host_id, host.generation, 100)
    runs = contenders(disks, hosts, seed)
    if seed == 0:
        interleave(runs, lambda i: i)  # strictly alternating at every effect
    else:
        rng = random.Random(seed)
        interleave(runs, lambda i: rng.randrange(len(hosts)))
    winners = [r for r in runs if r.error is None]
    assert len(winners) == 1, [r.error for r in runs]
    for loser in runs:
        if loser.error is not None:
            assert isinstance(loser.error, AcquireOwned | AcquireOther | AcquireIdLive)
    leader = leader_of(disks[DISK])
    won = winners[0].value
    assert won is not None
    assert leader.lver == won.lver == 1
    assert (leader.owner_id, leader.owner_generation) == (
        won.leader.owner_id,
        won.leader.owner_generation,
    )
    assert leader.timestamp != 0


def test_alternating_acquires_exact_outcome() -> None:
    """Two hosts alternating at every effect. Host 1 (mbal 1) aborts on host 2's mbal 2, retries
    with 2001, adopts host 2's accepted value and commits it: ACQUIRE_OTHER. Host 2 aborts on
    2001, re-reads the leader before host 1's commit lands, runs ballot 2002, which adopts the
    same value, and commits it again (the "two hosts finish the same ballot" case of sanlock's
    paxos_lease_release): one owner, two writers, the second one on disk."""
    disks = new_disks(DISK)
    h1, h2 = Host(1, 1), Host(2, 1)
    runs = contenders(disks, [h1, h2], seed=0)
    interleave(runs, lambda i: i)
    assert isinstance(runs[0].error, AcquireOther)
    assert runs[0].error.code == -245
    assert runs[1].error is None and runs[1].value is not None
    assert runs[0].error.leader is not None and runs[0].error.leader.write_id == 1
    assert runs[1].value.leader == leader_of(disks[DISK])
    assert (leader_of(disks[DISK]).owner_id, leader_of(disks[DISK]).write_id) == (2, 2)
    assert [dblock_of(disks[DISK], h).mbal for h in (1, 2)] == [2001, 2002]
    assert {dblock_of(disks[DISK], h).inp for h in (1, 2)} == {2}


@pytest.mark.parametrize("seed", range(60))
def test_ballots_choose_one_value_per_lver(seed: int) -> None:
    """Disk Paxos itself: every ballot that completes for an instance chose the same value,
    whatever the interleaving and the ballots that abort (DBLOCK_MBAL) in between."""
    disks = new_disks(DISK)
    rng = random.Random(seed)
    hosts = [Host(h, 1) for h in range(1, 2 + seed % 3 + 1)]
    chosen: list[tuple[int, int, int]] = []
    aborted: list[BaseException] = []

    def ballots(host: Host) -> Step[None]:
        mbal = host.host_id
        for _ in range(4):
            try:
                block = yield from run_ballot(
                    resource(), GEOM, host, num_hosts=2000, next_lver=1, mbal=mbal
                )
            except BallotAborted as err:
                aborted.append(err)
                mbal += 2000
                continue
            chosen.append((block.inp, block.inp2, block.inp3))
            return

    runs = [Run(ballots(h), disks, FakeClock(1000.0 + h.host_id)) for h in hosts]
    interleave(runs, lambda i: rng.randrange(len(hosts)))
    for r in runs:
        assert r.error is None
    assert len(set(chosen)) <= 1
    assert all(isinstance(e, DblockMbal) for e in aborted)
    if seed == 0:
        assert chosen and aborted


def test_ballot_aborts_on_a_later_lver() -> None:
    disks = new_disks(DISK)
    later = PaxosDblock(mbal=5, lver=2).sealed()
    disks[DISK].write(RES_OFF + host_sector_offset(5, GEOM), pack_host_sector(later, 512))
    step = run_ballot(resource(), GEOM, Host(1, 1), num_hosts=2000, next_lver=1, mbal=2001)
    with pytest.raises(BallotAborted) as info:
        run(step, disks)
    assert info.value.code == -212


def test_changed_leader_after_an_aborted_ballot_restarts_the_acquire() -> None:
    """After an abort the leader is re-read; if it changed at all, the acquire starts over
    with a whole-lease read (6.4 "On abort")."""
    disks = new_disks(DISK)
    runner = Run(
        acquire(resource(), Host(1, 1), rng=random.Random(0)),
        disks,
        on_sleep=lambda: disks[DISK].write(
            RES_OFF, leader_of(disks[DISK]).replace(write_timestamp=77).pack().ljust(512, b"\0")
        ),
    )
    runner.tick()  # the initial read; then host 5 starts a higher ballot
    higher = PaxosDblock(mbal=5, lver=1).sealed()
    disks[DISK].write(RES_OFF + host_sector_offset(5, GEOM), pack_host_sector(higher, 512))
    got = runner.finish()
    io = [(type(e).__name__, getattr(e, "length", None)) for e in runner.log]
    after = io[io.index(("Sleep", None)) + 1 :]
    assert after[:3] == [("Read", 512), ("Read", 2002 * 512), ("Write", None)]
    assert got.dblock.mbal == 2001 and got.lver == 1


def test_commit_can_set_num_hosts() -> None:
    disks = new_disks(DISK)
    got = take(disks, Host(1, 1), num_hosts=10)
    assert leader_of(disks[DISK]).num_hosts == 10 == got.leader.num_hosts


def test_crashed_winner_is_committed_by_the_next_ballot() -> None:
    """Host 1 completes phase 2 and crashes before writing the leader; host 2's ballot for the
    same lver adopts host 1's value and commits it: ACQUIRE_OTHER (spec 6.5)."""
    disks = new_disks(DISK)
    join(disks[DISK], 1, 1, 100)
    join(disks[DISK], 2, 1, 100)
    crashed = Run(acquire(resource(), Host(1, 1), rng=random.Random(1)), disks, FakeClock(400.0))
    while not (isinstance(e := crashed.peek(), Write) and e.offset == RES_OFF):
        crashed.tick()
    crashed.step.close()
    assert leader_of(disks[DISK]).lver == 0
    with pytest.raises(AcquireOther) as info:
        take(disks, Host(2, 1), clock=FakeClock(900.0), lockspace=LOCKSPACE)
    leader = info.value.leader
    assert leader is not None
    assert (leader.owner_id, leader.owner_generation, leader.timestamp) == (1, 1, 400)
    assert (leader.lver, leader.write_id) == (1, 2)
    assert leader_of(disks[DISK]) == leader
    assert dblock_of(disks[DISK], 2).inp == 1
    # host 1 (alive after all) releases: it did not write the leader, so only its dblock
    host1 = dblock_of(disks[DISK], 1)
    run(release(resource(), Host(1, 1), None, host1), disks)
    assert leader_of(disks[DISK]) == leader
    obs = {1: live(1, 1, 100, at=999.0)}
    got = take(
        disks, Host(2, 1), clock=FakeClock(1000.0), lockspace=LOCKSPACE, owner_observations=obs
    )
    assert (got.leader.owner_id, got.lver) == (2, 2)


# --- shared mode -----------------------------------------------------------------------------


def shared_pair() -> dict[str, FakeDisk]:
    disks = new_disks(DISK)
    for host_id in (1, 2, 3):
        join(disks[DISK], host_id, 1, 100)
    take(disks, Host(1, 1), shared=True)
    take(disks, Host(2, 1), shared=True)
    return disks


def test_two_shared_holders() -> None:
    disks = shared_pair()
    disk = disks[DISK]
    leader = leader_of(disk)
    assert leader.timestamp == 0 and leader.flags & LFL_SHORT_HOLD == 0
    assert (leader.owner_id, leader.lver) == (2, 2)  # the last short exclusive hold
    for host_id in (1, 2):
        assert mode_of(disk, host_id) == ModeBlock(MBLOCK_SHARED, 1)
        assert dblock_of(disk, host_id).flags == DBLOCK_FL_RELEASED
    assert disk.data[RES_OFF + 1024 + 128 : RES_OFF + 1024 + 144] == bytes.fromhex(
        "01000000000000000100000000000000"
    )
    assert run(read_owners(resource()), disks) == [Owner(1, 1, True), Owner(2, 1, True)]


def test_exclusive_refused_while_shared_holders_live() -> None:
    disks = shared_pair()
    obs = {h: live(h, 1, 100, at=999.0) for h in (1, 2)}
    with pytest.raises(SharedHoldersLive) as info:
        take(disks, Host(3, 1), lockspace=LOCKSPACE, owner_observations=obs,
             is_alive=lambda host_id, gen: True)  # fmt: skip
    assert info.value.code == -11
    disk = disks[DISK]
    assert leader_of(disk).timestamp == 0  # our brief exclusive hold was released again
    assert (leader_of(disk).owner_id, leader_of(disk).lver) == (3, 3)
    assert dblock_of(disk, 3).flags == DBLOCK_FL_RELEASED
    assert [mode_of(disk, h).shared for h in (1, 2, 3)] == [True, True, False]
    # host 2 dies, host 1 is still there: still refused, and host 2's block is cleared
    with pytest.raises(SharedHoldersLive):
        take(disks, Host(3, 1), lockspace=LOCKSPACE, is_alive=lambda host_id, gen: host_id == 1)
    assert disk.data[RES_OFF + 1536 : RES_OFF + 2048] == bytes(512)
    # host 1 releases its shared lease: the exclusive acquire succeeds
    run(release(resource(), Host(1, 1), None, dblock_of(disk, 1), shared=True), disks)
    assert mode_of(disk, 1) == ModeBlock() and dblock_of(disk, 1).released
    got = take(disks, Host(3, 1), lockspace=LOCKSPACE, is_alive=lambda host_id, gen: True)
    assert (got.leader.owner_id, got.leader.timestamp != 0, got.lver) == (3, True, 5)
    assert run(read_owners(resource()), disks) == [Owner(3, 1, False)]


def test_shared_holders_count_as_alive_without_knowledge() -> None:
    """No ``is_alive``: nothing is known of the holders, so they are alive (as sanlock)."""
    disks = shared_pair()
    with pytest.raises(SharedHoldersLive):
        take(disks, Host(3, 1), lockspace=LOCKSPACE)
    assert [mode_of(disks[DISK], h).shared for h in (1, 2)] == [True, True]


def test_exclusive_clears_dead_shared_holders() -> None:
    disks = shared_pair()
    got = take(disks, Host(3, 1), lockspace=LOCKSPACE, is_alive=lambda host_id, gen: False)
    assert got.leader.owner_id == 3
    for host_id in (1, 2):
        start = RES_OFF + host_sector_offset(host_id, GEOM)
        assert disks[DISK].data[start : start + 512] == bytes(512)


def test_shared_acquire_retries_short_holds() -> None:
    """A live host holds the lease exclusively with SHORT_HOLD (acquiring shared): a shared
    acquire retries sh_retries times, a random 0..1 s apart, then fails -246."""
    disks = new_disks(DISK)
    join(disks[DISK], 2, 1, 100)
    # host 2 is between its commit and its release: the ballot alone, with the shared flag
    brief = paxos_acquire(
        resource(), Host(2, 1), lockspace=None, owner_observations={}, rng=random.Random(0),
        shared=True,
    )  # fmt: skip
    run(brief, disks)
    leader = leader_of(disks[DISK])
    assert leader.flags & LFL_SHORT_HOLD and leader.owner_id == 2 and leader.timestamp
    obs = {2: live(2, 1, 100, at=999.0)}
    runner = Run(
        acquire(resource(), Host(1, 1), rng=random.Random(0), lockspace=LOCKSPACE,
                owner_observations=obs, shared=True),
        disks,
        FakeClock(1000.0),
    )  # fmt: skip
    with pytest.raises(AcquireShRetry) as info:
        runner.finish()
    assert info.value.code == -246
    attempts = [r for r in runner.reads() if r.length == 2002 * 512]
    assert len(attempts) == SH_RETRIES + 1
    assert 0 < runner.clock.time - 1000.0 < SH_RETRIES
    with pytest.raises(AcquireIdLive):  # exclusive acquires do not retry
        take(disks, Host(1, 1), lockspace=LOCKSPACE, owner_observations=obs)


def test_shared_release_after_a_failed_conversion_keeps_the_newer_ballot() -> None:
    """A failed sh -> ex conversion commits and frees lver 3 with our vote (host 2's shared
    acquire decided lver 2); the shared holder still has its lver-1 block. Its release must
    mark the newer block RELEASED, not bring the lver-1 block back: that would erase instance
    3's only trace in our sector."""
    disks = new_disks(DISK)
    join(disks[DISK], 1, 1, 100)
    join(disks[DISK], 2, 1, 100)
    host = Host(1, 1)
    got = take(disks, host)
    sh = run(convert_to_shared(resource(), host, got.leader, got.dblock), disks)
    take(disks, Host(2, 1), shared=True, lockspace=LOCKSPACE)
    with pytest.raises(SharedHoldersLive):
        step = convert_to_exclusive(
            resource(), host, rng=random.Random(0), is_alive=lambda h, g: True
        )
        run(step, disks)
    newer = dblock_of(disks[DISK], 1)
    assert (newer.lver, sh.dblock.lver) == (3, 1) and newer.bal  # it voted for lver 3
    run(release(resource(), host, sh.leader, sh.dblock, shared=True), disks)
    after = dblock_of(disks[DISK], 1)
    assert (after.lver, after.mbal, after.bal, after.inp) == (3, newer.mbal, newer.bal, 1)
    assert after.released and mode_of(disks[DISK], 1) == ModeBlock()


def test_convert_exclusive_to_shared_and_back() -> None:
    disks = new_disks(DISK)
    join(disks[DISK], 1, 1, 100)
    join(disks[DISK], 2, 1, 100)
    host = Host(1, 1)
    got = take(disks, host)
    sh = run(convert_to_shared(resource(), host, got.leader, got.dblock), disks)
    assert sh.shared and leader_of(disks[DISK]).timestamp == 0
    assert mode_of(disks[DISK], 1) == ModeBlock(MBLOCK_SHARED, 1)
    assert run(read_owners(resource()), disks) == [Owner(1, 1, True)]

    ex = run(convert_to_exclusive(resource(), host, rng=random.Random(0)), disks)
    assert not ex.shared and (ex.leader.owner_id, ex.lver) == (1, 2)
    assert mode_of(disks[DISK], 1) == ModeBlock()
    assert dblock_of(disks[DISK], 1) == ex.dblock and not ex.dblock.released
    assert run(read_owners(resource()), disks) == [Owner(1, 1, False)]

    # back to shared; host 2 joins shared; converting to exclusive fails, keeping shared
    sh = run(convert_to_shared(resource(), host, ex.leader, ex.dblock), disks)
    take(disks, Host(2, 1), shared=True, lockspace=LOCKSPACE)
    with pytest.raises(SharedHoldersLive):
        run(
            convert_to_exclusive(
                resource(), host, rng=random.Random(0), is_alive=lambda host_id, gen: True
            ),
            disks,
        )
    assert mode_of(disks[DISK], 1) == ModeBlock(MBLOCK_SHARED, 1)
    assert leader_of(disks[DISK]).timestamp == 0
    assert run(read_owners(resource()), disks) == [Owner(1, 1, True), Owner(2, 1, True)]
    # host 2 dies: the conversion clears it and succeeds
    ex = run(
        convert_to_exclusive(resource(), host, rng=random.Random(0), is_alive=lambda h, g: False),
        disks,
    )
    assert run(read_owners(resource()), disks) == [Owner(1, 1, False)]


def test_ballot_keeps_our_shared_block_while_converting() -> None:
    """During sh -> ex every dblock write carries our SHARED mode block (6.8)."""
    disks = new_disks(DISK)
    host = Host(1, 4)
    got = take(disks, host, shared=True)
    runner = Run(convert_to_exclusive(resource(), host, rng=random.Random(0)), disks)
    runner.finish()
    ours = [w for w in runner.writes() if w.offset == RES_OFF + host_sector_offset(1, GEOM)]
    assert [ModeBlock.unpack(w.data, MBLOCK_OFFSET).shared for w in ours] == [True, True, False]
    assert got.shared


# --- requests --------------------------------------------------------------------------------


def request_record(disk: FakeDisk) -> RequestRecord:
    return RequestRecord.unpack(memoryview(disk.data), RES_OFF + 512)


def test_request_records() -> None:
    disks = new_disks(DISK)
    disk = disks[DISK]
    before = bytes(disk.data)
    assert run(request(resource(), 1, FORCE_MODE_FORCE), disks).written is None  # free
    assert bytes(disk.data) == before
    take(disks, Host(2, 1))
    with pytest.raises(RequestOld) as old:
        run(request(resource(), 1, FORCE_MODE_FORCE), disks)
    assert old.value.code == -272
    result = run(request(resource(), 0, FORCE_MODE_GRACEFUL, next_lver=True), disks)
    assert result.owner_id == 2
    assert request_record(disk) == RequestRecord(lver=2, force_mode=FORCE_MODE_GRACEFUL)
    assert disk.data[RES_OFF + 512 : RES_OFF + 536] == bytes.fromhex(
        "11202908 01000100 0200000000000000 02000000 00000000"
    )
    assert not any(disk.data[RES_OFF + 536 : RES_OFF + 1024])
    run(request(resource(), 2, FORCE_MODE_FORCE), disks)  # same lver again: allowed
    assert request_record(disk).force_mode == FORCE_MODE_FORCE
    run(request(resource(), 5, FORCE_MODE_FORCE), disks)
    with pytest.raises(RequestLver) as newer:
        run(request(resource(), 3, FORCE_MODE_FORCE), disks)
    assert newer.value.code == -273
    run(request(resource(), 0, 0), disks)  # clear
    assert request_record(disk) == RequestRecord()


# --- several disks ---------------------------------------------------------------------------

THREE = ("/dev/fake0", "/dev/fake1", "/dev/fake2")


def test_three_disks_one_failing() -> None:
    disks = new_disks(*THREE)
    res = resource(*THREE)
    runner = Run(acquire(res, Host(1, 1), rng=random.Random(0)), disks, failing={THREE[1]})
    got = runner.finish()
    assert got.leader.owner_id == 1
    for name in (THREE[0], THREE[2]):
        assert leader_of(disks[name]) == got.leader
        assert dblock_of(disks[name], 1) == got.dblock
    assert leader_of(disks[THREE[1]]).lver == 0
    assert run(read_leader(res), disks) == got.leader
    # the failed disk is back, stale: the majority still decides
    run(release(res, Host(1, 1), got.leader, got.dblock), disks)
    got2 = take(disks, Host(2, 1), res=res)
    assert got2.lver == 2 and dblock_of(disks[THREE[1]], 2).mbal == got2.dblock.mbal


def test_three_disks_two_failing() -> None:
    disks = new_disks(*THREE)
    runner = Run(
        acquire(resource(*THREE), Host(1, 1), rng=random.Random(0)),
        disks,
        failing={THREE[0], THREE[2]},
    )
    with pytest.raises(LeaderDiff):
        runner.finish()
    assert runner.writes() == []


def test_two_disks_need_both() -> None:
    disks = new_disks(*THREE[:2])
    with pytest.raises(PaxosError):
        Run(
            acquire(resource(*THREE[:2]), Host(1, 1), rng=random.Random(0)),
            disks,
            failing={THREE[1]},
        ).finish()


@pytest.mark.parametrize("phase", [1, 2])
def test_ballot_write_failure_on_majority(phase: int) -> None:
    """A disk dies during the ballot. Phase 1: DBLOCK_WRITE, nothing to undo. Phase 2 (value
    already proposed): the error is marked retract and the acquire erases our vote."""
    disks = new_disks(*THREE)
    runner = Run(acquire(resource(*THREE), Host(1, 1), rng=random.Random(0)), disks)
    while len(runner.writes()) < 3 * (phase - 1) or not isinstance(runner.peek(), Write):
        runner.tick()
    runner.failing = {THREE[1], THREE[2]}
    with pytest.raises(DblockWrite) as info:
        runner.finish()
    assert info.value.code == -211
    assert info.value.retract == (phase == 2)
    block = dblock_of(disks[THREE[0]], 1)
    if phase == 2:
        assert block.is_blank and block.released  # vote erased (sanlock's R_ERASE_ALL)
        assert isinstance(info.value.cleanup_error, DblockWrite)  # only 1 of 3 disks took it
    else:
        assert block.mbal == 1
        assert info.value.cleanup_error is None


def test_undo_uses_the_leases_geometry() -> None:
    """The lease is 4096/1M though 512/1M was assumed: the undo after a failed phase 2 writes
    our sector where it is on a 4096 lease, and nothing at the 512 offset."""
    geometry = Geometry(4096, MIB)
    disks = new_disks(*THREE, geometry=geometry, num_hosts=10)
    runner = Run(acquire(resource(*THREE), Host(1, 1), rng=random.Random(0)), disks)
    while len(runner.writes()) < 3 or not isinstance(runner.peek(), Write):
        runner.tick()
    runner.failing = {THREE[2]}  # phase 2 write lands on disks 0 and 1 only
    runner.tick()
    runner.tick()
    runner.failing = {THREE[0], THREE[1]}  # and now the phase 2 reads fail
    with pytest.raises(DblockRead) as info:
        runner.finish()
    assert info.value.retract and info.value.geometry == geometry
    for name in THREE[:2]:
        block = dblock_of(disks[name], 1, geometry)
        assert block.mbal == 1 and block.inp == 1  # the undo could not reach disks 0 and 1
    block = dblock_of(disks[THREE[2]], 1, geometry)
    assert block.is_blank and block.released  # but did reach disk 2, at the 4096 offset
    assert not any(disks[THREE[2]].data[RES_OFF + 1024 : RES_OFF + 1536])


def test_ballot_read_failure_is_dblock_read() -> None:
    disks = new_disks(*THREE)
    runner = Run(acquire(resource(*THREE), Host(1, 1), rng=random.Random(0)), disks)
    while len(runner.writes()) < 3:  # the three phase-1 writes succeed
        runner.tick()
    runner.failing = {THREE[0], THREE[1]}
    with pytest.raises(DblockRead) as info:
        runner.finish()
    assert info.value.code == -210


# --- against the real sanlock 3.8.5 ----------------------------------------------------------


def sanlock(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``sanlock ARGS``. Fails in CI, skips elsewhere, when sanlock is not installed."""
    path = shutil.which("sanlock") or (
        "/usr/sbin/sanlock" if Path("/usr/sbin/sanlock").exists() else None
    )
    if path is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail("sanlock is not installed (apt-get install sanlock)")
        pytest.skip("sanlock is not installed")
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=60, check=False)


def sanlock_file(tmp_path: Path) -> Path:
    path = tmp_path / "leases.img"
    with path.open("wb") as f:
        f.truncate(2 * MIB)
    assert sanlock("direct", "init", "-s", f"LS:0:{path}:0").returncode == 0
    assert sanlock("direct", "init", "-r", f"LS:R:{path}:{RES_OFF}").returncode == 0
    return path


def load(path: Path) -> dict[str, FakeDisk]:
    disk = FakeDisk(str(path), path.stat().st_size)
    disk.write(0, path.read_bytes())
    return {str(path): disk}


def test_interop_sanlock_owner_then_ours(tmp_path: Path) -> None:
    path = sanlock_file(tmp_path)
    done = sanlock("direct", "acquire", "-r", f"LS:R:{path}:{RES_OFF}", "-i", "2", "-g", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    disks = load(path)
    res = Resource(LS, RES_NAME, ((str(path), RES_OFF),), GEOM)
    with pytest.raises(AcquireLockspace) as info:
        run(acquire(res, Host(1, 1), rng=random.Random(0)), disks)
    assert info.value.code == -241
    got = run(acquire(res, Host(2, 2), rng=random.Random(0)), disks)
    assert got.dblock.mbal == 2002  # host 2's next ballot after sanlock's mbal 2
    assert (got.lver, got.leader.owner_id, got.leader.owner_generation) == (2, 2, 2)
    path.write_bytes(bytes(disks[str(path)].data))
    out = sanlock("direct", "dump", f"{path}:{RES_OFF}", "-f", "2").stdout
    assert "dblock[0001] mbal 2002 bal 2002 inp 2 inp2 2" in out
    leader = sanlock("direct", "read_leader", "-r", f"LS:R:{path}:{RES_OFF}")
    assert "read_leader done 0" in leader.stdout
    assert "owner_id 2\n" in leader.stdout and "lver 2\n" in leader.stdout


def test_interop_ours_owner_then_sanlock(tmp_path: Path) -> None:
    path = sanlock_file(tmp_path)
    disks = load(path)
    res = Resource(LS, RES_NAME, ((str(path), RES_OFF),), GEOM)
    got = run(acquire(res, Host(1, 1), rng=random.Random(0)), disks)
    path.write_bytes(bytes(disks[str(path)].data))
    resource_arg = f"LS:R:{path}:{RES_OFF}"
    other = sanlock("direct", "acquire", "-r", resource_arg, "-i", "2", "-g", "1")
    assert other.returncode == 1 and "acquire done -241" in other.stdout
    # released by us, sanlock takes it: lver 2, mbal 2002 after our mbal 1
    disks = load(path)
    run(release(res, Host(1, 1), got.leader, got.dblock), disks)
    path.write_bytes(bytes(disks[str(path)].data))
    taken = sanlock("direct", "acquire", "-r", resource_arg, "-i", "2", "-g", "1")
    assert taken.returncode == 0, taken.stdout
    disks = load(path)
    leader = leader_of(disks[str(path)])
    assert (leader.magic, leader.lver, leader.owner_id) == (PAXOS_MAGIC, 2, 2)
    assert dblock_of(disks[str(path)], 2).mbal == 2002
    assert dblock_of(disks[str(path)], 1).released
