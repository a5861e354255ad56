"""Mutation checks: the simulator's checker can fail (DESIGN.md, "Tests").

A checker that never fails proves nothing. Each test here breaks one rule of the lease
algorithms on purpose (a broken copy of a core function, or a wrong constant, put in place with
``monkeypatch`` where the caller looks it up), runs the simulated cluster (sim/cluster.py) on a
fixed list of seeds under a scenario built so that the broken rule matters, and asserts that
the checker (sim/invariants.py) reports a violation for at least one seed. The control tests
run the same scenarios and seeds with the unbroken code: no violation, and the faults that the
mutations need really happened.

The scenarios:

* **contention**: four hosts, one lease, short holds, half the acquires shared, conversions,
  and I/O tail latencies, so that ballots of different hosts overlap and a host often commits
  the value of another (the leader's writer is then not its owner);
* **dead owners**: four hosts, two leases held for minutes, acquires that wait for a dead
  owner, and host pauses of 60 to 200 s (a paused host's supervisor does nothing; only the
  watchdog stops its processes, 8N + 50..60 s after its last renewal);
* **twin host ids**: two pairs of machines configured with one host id each (a real
  misconfiguration, and what the delta lease exists for), with host crashes and pauses.

One rule is not caught, and the last tests say why: releasing a leader that another host wrote
(see ``test_release_of_a_leader_another_host_wrote``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from sync_manager.core import delta, paxos, paxos_ballot, paxos_owner, paxos_release, paxos_shared
from sync_manager.core.effects import Step, now, read
from sync_manager.core.paxos_ballot import _Lease, _read_blocks, _write_our_block
from sync_manager.core.paxos_errors import DblockLver, DblockRead, ReleaseLver, ReleaseOwner
from sync_manager.core.paxos_io import (
    IO_ERRORS,
    Host,
    LockspaceDisk,
    ReadPattern,
    Resource,
    ballot_read_sectors,
    majority,
    read_leader_majority,
    write_leader_majority,
)
from sync_manager.core.paxos_owner import OwnerObservation
from sync_manager.core.paxos_shared import IsAlive
from sync_manager.errors import IOTimeout, OnDiskError, StorageError
from sync_manager.ondisk.areas import FIRST_HOST_SECTOR
from sync_manager.ondisk.dblock import MBLOCK_OFFSET, ModeBlock, PaxosDblock
from sync_manager.ondisk.geometry import MIB, Geometry
from sync_manager.ondisk.leader import LFL_SHORT_HOLD, LeaderRecord
from sync_manager.sim.cluster import Cluster, ClusterConfig, ClusterReport, _Daemon
from sync_manager.sim.faults import FaultPlan
from sync_manager.timeouts import Timeouts

SEEDS = (1, 2, 3, 4)


@dataclass(frozen=True)
class Scenario:
    name: str
    config: ClusterConfig
    plan: FaultPlan


CONTENTION = Scenario(
    "contention",
    ClusterConfig(
        hosts=4,
        resources=1,
        duration=150.0,
        hold=(0.5, 3.0),
        think=(0.2, 3.0),
        nowait_probability=1.0,
        shared_probability=0.5,
        convert_probability=0.4,
    ),
    # Tails stay below io_timeout (2 s): slow I/O, never an abandoned one.
    FaultPlan(latency=(0.001, 0.05), tail_probability=0.3, tail_latency=(0.05, 1.5)),
)

DEAD_OWNERS = Scenario(
    "dead owners",
    ClusterConfig(
        hosts=4,
        resources=2,
        duration=400.0,
        hold=(200.0, 600.0),
        think=(0.5, 10.0),
        nowait_probability=0.1,
        shared_probability=0.0,
        convert_probability=0.0,
    ),
    FaultPlan(pause_mtbf=200.0, pause_duration=(60.0, 200.0)),
)

TWIN_HOST_IDS = Scenario(
    "twin host ids",
    ClusterConfig(
        hosts=4,
        resources=2,
        duration=400.0,
        hold=(100.0, 300.0),
        think=(0.2, 3.0),
        nowait_probability=0.1,
        shared_probability=0.0,
        convert_probability=0.0,
        sigterm_ignored=0.5,
        host_ids=(1, 2, 1, 2),
    ),
    FaultPlan(
        crash_mtbf=300.0, restart_delay=(5.0, 60.0), pause_mtbf=300.0, pause_duration=(20.0, 150.0)
    ),
)

SCENARIOS = (CONTENTION, DEAD_OWNERS, TWIN_HOST_IDS)


def run(scenario: Scenario, seed: int, config: ClusterConfig | None = None) -> ClusterReport:
    return Cluster(seed, config or scenario.config, scenario.plan).run()


def assert_caught(scenario: Scenario, config: ClusterConfig | None = None) -> ClusterReport:
    """Run the seeds until one shows a violation (the run stops there); fail if none does."""
    for seed in SEEDS:
        report = run(scenario, seed, config)
        if report.violations:
            return report
    pytest.fail(f"no seed of {SEEDS} in scenario {scenario.name!r} caught the broken rule")


# --- the control: the same scenarios with the real code ----------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_control_real_code_is_clean(scenario: Scenario) -> None:
    reports = [run(scenario, seed) for seed in SEEDS]
    for report in reports:
        assert report.violations == [], report.summary() + "\n" + report.trace_tail
    counts: Counter[str] = sum((r.counts for r in reports), Counter())
    faults: Counter[str] = sum((r.faults for r in reports), Counter())
    if scenario is CONTENTION:  # ballots met: values committed by others, aborts, conversions
        assert counts["acquire_error_AcquireOther"] > 0
        assert counts["acquire_error_AcquireOwned"] > 0
        assert counts["acquire_error_SharedHoldersLive"] > 0
        assert counts["convert"] > 0
        assert faults["tail_latency"] > 0
    elif scenario is DEAD_OWNERS:  # paused owners were waited out and taken over
        assert faults["pause"] > 0
        assert counts["watchdog_fire"] > 0
        assert sum(r.takeovers for r in reports) > 0
    else:  # the delta lease refused a twin, and a crashed twin's id changed hands
        assert counts["join_failed"] > 0
        assert counts["join"] > len(SEEDS) * 2
        assert faults["crash"] > 0


# --- (1) the ballot skips its phase-2 read -----------------------------------------------------


def run_ballot_without_phase2_read(
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
    """paxos_ballot.run_ballot without the read after the phase-2 write."""
    lease = _Lease(resource, geometry, host, pattern, keep_shared)
    timed_out: set[str] = set()
    ours = PaxosDblock(mbal=mbal, lver=next_lver).sealed()
    yield from _write_our_block(lease, ours, retract=False)
    best = yield from _read_blocks(
        lease, num_hosts, ours, timed_out, shared_seen=shared_seen, retract=False
    )
    if best is not None:
        value = (best.inp, best.inp2, best.inp3)
    else:
        value = (host.host_id, host.generation, int((yield from now())))
    ours = PaxosDblock(
        mbal=mbal, bal=mbal, inp=value[0], inp2=value[1], inp3=value[2], lver=next_lver
    ).sealed()
    yield from _write_our_block(lease, ours, retract=True)
    return ours  # BROKEN: a higher ballot that began phase 1 meanwhile goes unseen


def test_skipping_the_phase2_read_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paxos_ballot, "run_ballot", run_ballot_without_phase2_read)
    report = assert_caught(CONTENTION)
    assert "holds" in report.violations[0].what


# --- (2) a higher mbal does not abort the ballot -----------------------------------------------


def read_blocks_ignoring_higher_mbal(
    lease: _Lease,
    num_hosts: int,
    ours: PaxosDblock,
    timed_out: set[str],
    *,
    shared_seen: set[int] | None,
    retract: bool,
) -> Step[PaxosDblock | None]:
    """paxos_ballot._read_blocks without the DblockMbal abort (both phases use it)."""
    resource, sector_size = lease.resource, lease.geometry.sector_size
    count = ballot_read_sectors(num_hosts, lease.geometry, lease.pattern)
    best: PaxosDblock | None = None
    reads = 0
    error: StorageError | None = None
    for path, base in resource.disks:
        if path in timed_out:
            continue
        try:
            buf = yield from read(path, base, count * sector_size)
        except IO_ERRORS as err:
            if isinstance(err, IOTimeout):
                timed_out.add(path)
            error = err
            continue
        reads += 1
        for index in range(min(num_hosts, count - FIRST_HOST_SECTOR)):
            start = (FIRST_HOST_SECTOR + index) * sector_size
            block = PaxosDblock.unpack(buf, start)
            try:
                block.check()
            except OnDiskError:
                continue
            if shared_seen is not None and ModeBlock.unpack(buf, start + MBLOCK_OFFSET).shared:
                shared_seen.add(index + 1)
            if block.lver < ours.lver:
                continue
            if block.lver > ours.lver:
                raise DblockLver(f"host {index + 1} votes on lver {block.lver}", dblock=ours)
            # BROKEN: no "block.mbal > ours.mbal -> DblockMbal" here
            if block.inp and block.bal and (best is None or block.bal > best.bal):
                best = block
    if not majority(len(resource.disks), reads):
        raise DblockRead(f"dblocks read on {reads} disks", dblock=ours, retract=retract) from error
    return best


def test_ignoring_a_higher_mbal_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paxos_ballot, "_read_blocks", read_blocks_ignoring_higher_mbal)
    assert_caught(CONTENTION)


# --- (3) the wait for a dead owner is skipped --------------------------------------------------


def take_over_at_once(
    resource: Resource,
    geometry: Geometry,
    cur: LeaderRecord,
    *,
    host_id: int,
    lockspace: LockspaceDisk | None,
    observation: OwnerObservation | None,
    owner_nowait: bool,
) -> Step[bool]:
    """paxos_owner.wait_for_owner that lets the ballot run whoever holds the lease."""
    yield from ()
    return True


def test_taking_a_held_lease_at_once_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paxos_ballot, "wait_for_owner", take_over_at_once)
    assert_caught(DEAD_OWNERS)


def owner_dead_at_once(
    observation: OwnerObservation | None, record: LeaderRecord, lockspace: LockspaceDisk
) -> int:
    """host_dead_seconds 0: an owner is dead as soon as one look does not see it renew."""
    return 0


def test_owner_dead_when_not_seen_alive_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paxos_owner, "_owner_host_dead", owner_dead_at_once)
    assert_caught(DEAD_OWNERS)


# --- (4) host_dead forgets the watchdog's 60 s (takeover side only) ----------------------------


def host_dead_without_watchdog(self: Timeouts) -> int:
    """Timeouts.host_dead as 8N instead of 8N + 60."""
    return self.renewal_fail


def test_host_dead_of_8n_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # host_dead is what other hosts wait (paxos takeover, shared holders' liveness, the delta
    # lease's wait); the fencing side (supervisor at 8N, watchdog armed from watchdog_expire and
    # watchdog_fire_timeout) does not read it, so the patch breaks only the takeover side.
    monkeypatch.setattr(Timeouts, "host_dead", property(host_dead_without_watchdog))
    assert Timeouts(2).host_dead == 16 and Timeouts(2).watchdog_reset_window(0) == (66, 76)
    assert_caught(DEAD_OWNERS)


# --- (5) renewing after the fail deadline, without fencing -------------------------------------


def test_renewing_late_without_fencing_is_caught() -> None:
    # fencing=False: the supervisor never kills and the watchdog never fires, so a host whose
    # pause outlived host_dead renews as if nothing happened, its processes still running.
    assert_caught(DEAD_OWNERS, dataclasses.replace(DEAD_OWNERS.config, fencing=False))


def no_watchdog(self: _Daemon) -> None:
    """_Daemon._arm_watchdog that arms nothing (wdmd missing): only the supervisor kills."""


def test_missing_watchdog_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # The supervisor runs on the host: a paused host kills nothing until it resumes.
    monkeypatch.setattr(_Daemon, "_arm_watchdog", no_watchdog)
    assert_caught(DEAD_OWNERS)


# --- more: the value chosen, the RELEASED flag, shared holders, the delta lease ----------------


def run_ballot_proposing_own_value(
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
    """paxos_ballot.run_ballot that proposes its own value even when phase 1 saw bk_max."""
    lease = _Lease(resource, geometry, host, pattern, keep_shared)
    timed_out: set[str] = set()
    ours = PaxosDblock(mbal=mbal, lver=next_lver).sealed()
    yield from _write_our_block(lease, ours, retract=False)
    yield from _read_blocks(
        lease, num_hosts, ours, timed_out, shared_seen=shared_seen, retract=False
    )
    value = (host.host_id, host.generation, int((yield from now())))  # BROKEN: bk_max ignored
    ours = PaxosDblock(
        mbal=mbal, bal=mbal, inp=value[0], inp2=value[1], inp3=value[2], lver=next_lver
    ).sealed()
    yield from _write_our_block(lease, ours, retract=True)
    yield from _read_blocks(lease, num_hosts, ours, timed_out, shared_seen=None, retract=True)
    return ours


def test_proposing_own_value_over_bk_max_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paxos_ballot, "run_ballot", run_ballot_proposing_own_value)
    assert_caught(CONTENTION)


def owner_always_released(resource: Resource, geometry: Geometry, owner_id: int) -> Step[bool]:
    """paxos_owner._owner_released without reading the owner's dblock: always "released"."""
    yield from ()
    return True


def test_trusting_released_without_reading_it_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # A live owner of a leader another host wrote is taken over without its RELEASED flag.
    monkeypatch.setattr(paxos_owner, "_owner_released", owner_always_released)
    assert_caught(CONTENTION)


_REAL_CLEAR_DEAD_SHARED = paxos_shared.clear_dead_shared


def clear_live_shared_too(
    resource: Resource, geometry: Geometry, hosts: list[int], is_alive: IsAlive | None
) -> Step[int]:
    """paxos_shared.clear_dead_shared that takes every SHARED holder for dead."""

    def dead(host_id: int, generation: int) -> bool:
        return False

    return (yield from _REAL_CLEAR_DEAD_SHARED(resource, geometry, hosts, dead))


def test_exclusive_over_live_shared_holders_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paxos, "clear_dead_shared", clear_live_shared_too)  # acquire
    monkeypatch.setattr(paxos_shared, "clear_dead_shared", clear_live_shared_too)  # sh -> ex
    report = assert_caught(CONTENTION)
    assert "'SH'" in report.violations[0].what


def take_host_id_at_once(
    ls: delta.Lockspace,
    found: LeaderRecord,
    other: Timeouts,
    abort: Callable[[], bool] | None,
) -> Step[LeaderRecord]:
    """delta._wait_for_holder without the 8N + 60 s wait and re-read: a held id is taken."""
    yield from ()
    return found


def test_taking_a_held_host_id_at_once_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without twin ids the model never exercises this: a host that rejoins its own id after a
    # reset is the only contender, and its old incarnation is already dead.
    monkeypatch.setattr(delta, "_wait_for_holder", take_host_id_at_once)
    assert_caught(TWIN_HOST_IDS)


# --- (6) releasing a leader that another host wrote: NOT caught, and why ------------------------
#
# release_leader writes the freed leader only if we were its last writer (6.6 step 3). Broken,
# a host frees a leader that another host committed for it. The danger is a race: once our
# RELEASED dblock is on disk, a third host may take the lease over (6.2 step 5) and commit
# lver + 1 between our read of the leader and our write, which then lands a *free* leader of
# the old lver over the new one. Disk Paxos makes that harmless to mutual exclusion: every later
# ballot for the regressed instance reads the new holder's dblock (same lver, accepted) and
# adopts its value (ACQUIRE_OTHER for everyone else), and a ballot for an older instance aborts
# on its higher lver. What is lost is the leader as a cache (lver seen going down on disk, the
# history of versions) and, if the stale write lands after two more commits, liveness (every
# ballot for the old instance aborts with DBLOCK_LVER until the holder runs a ballot again).
# The real code has the same race, only narrower: another host's late commit of the same value
# can change write_id between our read and our write. In this scenario, seed 8, host 1 reads
# the leader of lver 23 it wrote, host 4's slow commit of host 1's value lands (write_id 4),
# host 2 sees host 1's RELEASED flag, takes the lease and commits lver 24, and then host 1's
# free leader of lver 23 lands. So "lver never goes down on disk" is not an invariant the
# checker could add. The first test shows that the broken rule really fires here, the last one
# that the real code lands a stale free leader too, with no violation either.

WRITE_ID_GAP = (
    "the write_id rule of release_leader protects the leader cache, not mutual exclusion: "
    "a stale free leader is harmless to holders under Disk Paxos, and the real code can write "
    "one too (see the comment above)"
)


def release_leader_whoever_wrote_it(
    taken: Counter[str],
    resource: Resource,
    geometry: Geometry,
    host: Host,
    last: LeaderRecord | None,
) -> Step[LeaderRecord | None]:
    """paxos_release.release_leader without the write_id check; counts what it did."""
    leader = yield from read_leader_majority(resource, geometry, host.host_id)
    if last is None:
        last = leader
    # BROKEN: no "leader.write_id != host.host_id -> do not write" here
    if leader.lver != last.lver:
        raise ReleaseLver(f"lver on disk {leader.lver}, ours {last.lver}", leader=leader)
    if (
        leader.timestamp == 0
        or (leader.owner_id, leader.owner_generation) != (host.host_id, host.generation)
        or leader != last
    ):
        raise ReleaseOwner("the leader on disk is not the one we hold", leader=leader)
    if leader.write_id != host.host_id:
        taken["freed a leader another host wrote"] += 1
    freed = leader.replace(
        timestamp=0,
        write_id=host.host_id,
        write_generation=host.generation,
        write_timestamp=int((yield from now())),
        flags=leader.flags & ~LFL_SHORT_HOLD,
    )
    yield from write_leader_majority(resource, geometry, freed, "release")
    return freed


@functools.cache
def runs_releasing_foreign_leaders() -> tuple[list[ClusterReport], Counter[str]]:
    """CONTENTION on every seed with the broken release; what it did and what it caused."""
    seen: Counter[str] = Counter()
    broken = functools.partial(release_leader_whoever_wrote_it, seen)
    reports = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(paxos_release, "release_leader", broken)  # release, undo_acquire
        patch.setattr(paxos_shared, "release_leader", broken)  # shared mode, conversions
        for seed in SEEDS:
            cluster = Cluster(seed, CONTENTION.config, CONTENTION.plan)
            watch_leader_lver(cluster, seen)
            reports.append(cluster.run())
    return reports, seen


def watch_leader_lver(cluster: Cluster, seen: Counter[str]) -> None:
    """Count free leaders landing on disk with an lver below one the leader already had."""
    disk = cluster.disk
    highest: dict[int, int] = {}
    write_sector = disk.write_sector

    def watched(offset: int, data: bytes) -> None:
        write_sector(offset, data)
        if offset % MIB == 0 and offset:  # a resource's leader sector (lease r at (r+1) MiB)
            leader = LeaderRecord.unpack(bytes(disk.data[offset : offset + 512]))
            if leader.timestamp == 0 and leader.lver < highest.get(offset, 0):
                seen["free leader landed over a newer lver"] += 1
            highest[offset] = max(highest.get(offset, 0), leader.lver)

    disk.write_sector = watched  # type: ignore[method-assign]


def test_release_of_a_leader_another_host_wrote_really_happens() -> None:
    _, seen = runs_releasing_foreign_leaders()
    assert seen["freed a leader another host wrote"] > 0
    assert seen["free leader landed over a newer lver"] > 0


@pytest.mark.xfail(strict=True, reason=WRITE_ID_GAP)
def test_release_of_a_leader_another_host_wrote() -> None:
    reports, _ = runs_releasing_foreign_leaders()
    assert any(report.violations for report in reports)


def test_real_code_can_land_a_stale_free_leader_too() -> None:
    # If this fails, the race described above is closed in the core: good news, update the
    # comment (the write_id rule may then deserve an invariant of its own).
    # The race needs a rare interleaving: look for it over seeds (the first hit is seed 12 with
    # the MINIMAL read pattern; it was seed 8 with COMPACT), never seeing a violation.
    seen: Counter[str] = Counter()
    for seed in range(1, 41):
        cluster = Cluster(seed, CONTENTION.config, CONTENTION.plan)
        watch_leader_lver(cluster, seen)
        report = cluster.run()
        assert report.violations == [], f"seed {seed}"
        if seen["free leader landed over a newer lver"]:
            break
    assert seen["free leader landed over a newer lver"] > 0
