"""The simulator engine (sim/engine.py, sim/clock.py, sim/faults.py), on hand-written steps.

Each test builds a tiny simulation, forces the fault it is about with an explicit rule (a
latency, an EIO, a hang, a lost path, a crash or a pause) and checks what the steps saw and
what the disk holds at chosen true times. No test sleeps in real time; the engine's speed is
measured in bench/sim_bench.py, not here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sync_manager.core.effects import Read, Sleep, Step, now, read, sleep, write
from sync_manager.errors import DiskIOError, IOTimeout, UsageError
from sync_manager.sim.clock import HostClock
from sync_manager.sim.disk import FakeDisk
from sync_manager.sim.engine import Simulation, TaskCancelled
from sync_manager.sim.faults import FaultPlan, HostCrash, HostPause, IORule, LostPath

SECTOR = 512
MIB = 1 << 20


def sectors(*fills: int) -> bytes:
    """One sector filled with each byte value in ``fills``, concatenated."""
    return b"".join(bytes([fill]) * SECTOR for fill in fills)


def fills_of(data: bytes) -> list[int]:
    """The fill byte of each sector of ``data``; fails if a sector is not uniform (torn)."""
    out = []
    for pos in range(0, len(data), SECTOR):
        chunk = data[pos : pos + SECTOR]
        assert chunk == bytes([chunk[0]]) * SECTOR, f"sector {pos // SECTOR} is torn inside"
        out.append(chunk[0])
    return out


class Outcomes:
    """Collects on_done results as (true time, result) pairs."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.items: list[tuple[float, object]] = []

    def __call__(self, result: object) -> None:
        self.items.append((self.sim.now, result))

    @property
    def results(self) -> list[object]:
        return [result for _, result in self.items]


def make_sim(
    seed: int = 1, plan: FaultPlan | None = None, disks: tuple[str, ...] = ("lun0",)
) -> Simulation:
    sim = Simulation(seed=seed, faults=plan)
    for name in disks:
        sim.add_disk(FakeDisk(name, MIB))
    return sim


# --- determinism --------------------------------------------------------------------------


def _busy_host(name: str, slot: int, rounds: int) -> Step[int]:
    """Read the first sectors, write our slot, sleep a random-ish time; count failures."""
    failures = 0
    for i in range(rounds):
        try:
            data = yield from read("lun0", 0, 8 * SECTOR)
            yield from write("lun0", slot * SECTOR, bytes([(data[0] + i) % 256]) * SECTOR)
        except (IOTimeout, DiskIOError):
            failures += 1
        yield from sleep(0.5 + (len(name) % 3) * 0.1)
    return failures


def _chaos_run(seed: int) -> Simulation:
    plan = FaultPlan(
        latency=(0.0001, 0.05),
        tail_probability=0.05,
        tail_latency=(0.1, 20.0),
        eio_probability=0.02,
        hang_probability=0.01,
        hang_heal=(5.0, 30.0),
        pause_mtbf=60.0,
        pause_duration=(1.0, 20.0),
        crash_mtbf=200.0,
        restart_delay=(5.0, 20.0),
        lost_path_mtbf=100.0,
        lost_path_duration=(1.0, 30.0),
    )
    sim = make_sim(seed, plan)
    for slot in range(6):
        name = f"h{slot}"

        def start(host: Any, slot: int = slot) -> None:
            sim.spawn(host, _busy_host(host.name, slot, 10**6), name=f"busy{slot}")

        host = sim.add_host(name, io_timeout=2.0, on_restart=start)
        start(host)
    sim.run(until=300.0)
    return sim


def test_same_seed_same_trace_and_different_seed_different_trace() -> None:
    first = _chaos_run(7)
    second = _chaos_run(7)
    other = _chaos_run(8)
    assert len(first.trace) > 1000
    assert first.trace_digest() == second.trace_digest()
    assert first.faults.counts == second.faults.counts
    assert first.disks["lun0"].data == second.disks["lun0"].data
    assert other.trace_digest() != first.trace_digest()
    counts = first.faults.counts
    for kind in ("eio", "io_timeout", "tail_latency", "pause", "crash", "restart"):
        assert counts[kind] > 0, f"{kind} never injected: {first.summary()}"
    assert "faults:" in first.summary()


def _same_instant_order(seed: int) -> list[int]:
    sim = Simulation(seed=seed)
    seen: list[int] = []
    for i in range(5):
        sim.schedule(1.0, lambda i=i: seen.append(i))  # type: ignore[misc]
    sim.run()
    return seen


def test_events_at_the_same_instant_are_ordered_by_the_seed() -> None:
    orders = {tuple(_same_instant_order(seed)) for seed in range(8)}
    assert len(orders) > 1  # the tie-break depends on the seed...
    assert _same_instant_order(3) == _same_instant_order(3)  # ...and only on the seed


# --- clocks -------------------------------------------------------------------------------


def test_host_clocks_drift_within_bounds() -> None:
    sim = Simulation(seed=5, max_drift=1e-4)
    hosts = [sim.add_host(f"h{i}") for i in range(50)]
    starts = [host.clock_now() for host in hosts]
    sim.run(until=10_000.0)
    rates = [
        (host.clock_now() - start) / 10_000.0 for host, start in zip(hosts, starts, strict=True)
    ]
    assert all(abs(rate - 1.0) <= 1e-4 + 1e-12 for rate in rates)
    assert len({round(rate, 9) for rate in rates}) > 40  # they really differ
    assert len({host.clock.offset for host in hosts}) == 50  # no shared origin
    with pytest.raises(UsageError):
        sim.add_host("fast", drift=2e-4)
    with pytest.raises(UsageError):
        HostClock(0.0, -0.01, max_drift=1e-3)


def test_clock_true_at_never_wakes_early() -> None:
    clock = HostClock(12345.678, 9.9e-5)
    for host_time in (12345.678, 12346.0, 20000.123456789, 1e6 + 0.1):
        assert clock.at(clock.true_at(host_time)) >= host_time
        assert clock.true_at(host_time) - (host_time - 12345.678) / (1 + 9.9e-5) < 1e-6


def test_sleep_wakes_when_the_host_clock_has_advanced() -> None:
    sim = Simulation(seed=1, max_drift=1e-3)
    fast = sim.add_host("fast", drift=1e-3, offset=500.0)
    slow = sim.add_host("slow", drift=-1e-3, offset=7000.0)

    def nap() -> Step[tuple[float, float, float]]:
        before = yield from now()
        yield Sleep(100.0)
        after = yield from now()
        return before, after, sim.now

    outcomes = Outcomes(sim)
    sim.spawn(fast, nap(), outcomes)
    sim.spawn(slow, nap(), outcomes)
    sim.run(until=200.0)
    by_host = dict(zip(("fast", "slow"), outcomes.results, strict=True))
    if outcomes.items[0][1] != by_host["fast"]:  # the slow clock wakes later
        by_host = {"fast": outcomes.results[1], "slow": outcomes.results[0]}
    for name, drift in (("fast", 1e-3), ("slow", -1e-3)):
        result = by_host[name]
        assert isinstance(result, tuple)
        before, after, woke = result
        assert before == 500.0 if name == "fast" else before == 7000.0
        assert 100.0 <= after - before < 100.0 + 1e-9
        assert woke == pytest.approx(100.0 / (1 + drift), abs=1e-9)
    assert outcomes.items[0][0] < outcomes.items[1][0]


# --- I/O ----------------------------------------------------------------------------------


def test_torn_multi_sector_write_is_visible_to_concurrent_reads() -> None:
    # h1's 8-sector write takes 1 s; h2 reads quickly every 0.1 s meanwhile.
    plan = FaultPlan(rules=(IORule(host="h1", op="write", latency=1.0),))
    sim = make_sim(3, plan)
    h1 = sim.add_host("h1", drift=0.0)
    h2 = sim.add_host("h2", drift=0.0)
    sim.spawn(h1, write("lun0", 0, sectors(*range(1, 9))))
    outcomes = Outcomes(sim)
    for i in range(1, 12):
        sim.spawn(h2, read("lun0", 0, 8 * SECTOR), outcomes, delay=0.1 * i, channel=str(i))
    sim.run(until=5.0)
    seen = [fills_of(result) for result in outcomes.results if isinstance(result, bytes)]
    assert len(seen) == 11
    news = [sum(1 for index, fill in enumerate(row) if fill == index + 1) for row in seen]
    for row in seen:  # each sector is wholly old (0) or wholly new
        assert all(fill in (0, index + 1) for index, fill in enumerate(row))
    assert news == sorted(news)  # a landed sector stays landed
    assert any(0 < n < 8 for n in news), news  # some read saw a torn write
    assert news[-1] == 8


def test_slow_read_samples_each_sector_at_its_own_instant() -> None:
    # h2's read of 8 sectors takes 1 s; h1 writes the sectors one by one meanwhile.
    plan = FaultPlan(rules=(IORule(host="h2", op="read", latency=1.0),), latency=(0.001, 0.001))
    sim = make_sim(4, plan)
    h1 = sim.add_host("h1")
    h2 = sim.add_host("h2")

    def writer() -> Step[None]:
        for index in range(8):
            yield from write("lun0", index * SECTOR, sectors(0xAA))
            yield from sleep(0.1)

    outcomes = Outcomes(sim)
    sim.spawn(h2, read("lun0", 0, 8 * SECTOR), outcomes)
    sim.spawn(h1, writer(), delay=0.05)
    sim.run(until=5.0)
    (data,) = outcomes.results
    assert isinstance(data, bytes)
    row = fills_of(data)
    assert set(row) == {0, 0xAA}  # some sectors before their write, some after


def test_write_that_times_out_lands_later() -> None:
    plan = FaultPlan(rules=(IORule(host="h1", op="write", outcome="hang", heal_after=30.0),))
    sim = make_sim(1, plan)
    h1 = sim.add_host("h1", io_timeout=10.0, drift=0.0)
    disk = sim.disks["lun0"]

    def writer() -> Step[str]:
        try:
            yield from write("lun0", 0, sectors(7, 7))
        except IOTimeout:
            return "timeout"
        return "written"

    outcomes = Outcomes(sim)
    sim.spawn(h1, writer(), outcomes)
    sim.run(until=20.0)
    assert [result for _, result in outcomes.items] == ["timeout"]
    assert outcomes.items[0][0] == pytest.approx(10.0)
    assert disk.read(0, 2 * SECTOR) == bytes(2 * SECTOR)  # not landed yet
    sim.run(until=40.0)
    assert disk.read(0, 2 * SECTOR) == sectors(7, 7)  # the abandoned write landed
    assert sim.faults.counts["io_timeout"] == 1
    assert sim.faults.counts["late_write"] == 1
    assert sim.faults.counts["hang"] == 1
    kinds = [entry[2] for entry in sim.trace]
    assert kinds.index("io_timeout") < kinds.index("late_write")


def test_one_outstanding_io_per_host_and_disk() -> None:
    plan = FaultPlan(rules=(IORule(host="h1", op="write", outcome="hang", heal_after=30.0),))
    sim = make_sim(1, plan, disks=("lun0", "lun1"))
    h1 = sim.add_host("h1", io_timeout=10.0, drift=0.0)
    disk = sim.disks["lun0"]
    log: list[tuple[str, float]] = []

    def step() -> Step[None]:
        try:
            yield from write("lun0", 0, sectors(9))
        except IOTimeout:
            log.append(("write timeout", sim.now))
        try:  # waits behind the abandoned write, which lands at 30: times out at 20
            yield Read("lun0", 0, SECTOR, timeout=10.0)
        except IOTimeout:
            log.append(("read1 timeout", sim.now))
        data = yield Read("lun0", 0, SECTOR, timeout=60.0)  # issued once the write is done
        assert isinstance(data, bytes)
        log.append((f"read2 {data[0]}", sim.now))

    def other_disk() -> Step[None]:
        yield from sleep(12.0)
        yield from read("lun1", 0, SECTOR)  # another disk: not held up
        log.append(("lun1 read", sim.now))

    def other_channel() -> Step[None]:
        yield from sleep(13.0)
        yield from read("lun0", SECTOR, SECTOR)  # same disk, another channel: not held up
        log.append(("channel read", sim.now))

    sim.spawn(h1, step())
    sim.spawn(h1, other_disk())
    sim.spawn(h1, other_channel(), channel="resources")
    sim.run(until=100.0)
    names = [name for name, _ in log]
    times = dict(log)
    assert names == ["write timeout", "lun1 read", "channel read", "read1 timeout", "read2 9"]
    assert times["write timeout"] == pytest.approx(10.0)
    assert times["read1 timeout"] == pytest.approx(20.0)
    assert 30.0 < times["read2 9"] < 30.1
    assert times["lun1 read"] < 12.1 and times["channel read"] < 13.1
    assert any(entry[2] == "io_queued" for entry in sim.trace)
    timeouts = [entry[3] for entry in sim.trace if entry[2] == "io_timeout"]
    assert [state for _, state in timeouts] == ["in_flight", "dropped"]  # read1 never issued
    assert disk.reads == 2  # read2 and the other channel's read


def test_eio_is_thrown_into_the_step() -> None:
    plan = FaultPlan(rules=(IORule(host="h1", op="read", outcome="eio", count=2),))
    sim = make_sim(1, plan)
    h1 = sim.add_host("h1")

    def careful() -> Step[str]:
        try:
            yield from read("lun0", 0, SECTOR)
        except DiskIOError as error:
            return f"caught {error.errno}"
        return "read"

    outcomes = Outcomes(sim)
    sim.spawn(h1, careful(), outcomes)
    careless = sim.spawn(h1, read("lun0", 0, SECTOR), outcomes, delay=1.0)
    third = sim.spawn(h1, careful(), outcomes, delay=2.0)  # the rule is used up
    sim.run(until=10.0)
    first, second, last = outcomes.results
    assert first == "caught 5"
    assert isinstance(second, DiskIOError) and careless.state == "failed"
    assert last == "read" and third.result == "read"
    assert sim.faults.counts["eio"] == 2


def test_failing_write_lands_a_prefix_of_its_pieces() -> None:
    plan = FaultPlan(eio_probability=1.0, latency=(1.0, 1.0))
    partial = 0
    for seed in range(20):
        sim = make_sim(seed, plan)
        host = sim.add_host("h1")
        outcomes = Outcomes(sim)
        sim.spawn(host, write("lun0", 0, sectors(*([1] * 16))), outcomes)
        sim.run(until=5.0)
        assert isinstance(outcomes.results[0], DiskIOError)
        landed = fills_of(sim.disks["lun0"].read(0, 16 * SECTOR)).count(1)
        partial += 0 < landed < 16
    assert partial > 5


def test_invalid_io_is_thrown_into_the_step() -> None:
    sim = make_sim()
    host = sim.add_host("h1")
    outcomes = Outcomes(sim)
    sim.spawn(host, read("nope", 0, SECTOR), outcomes)
    sim.spawn(host, read("lun0", 3, SECTOR), outcomes)
    sim.spawn(host, write("lun0", MIB, sectors(1)), outcomes)
    sim.run(until=1.0)
    kinds = sorted(type(result).__name__ for result in outcomes.results)
    assert kinds == ["DeviceTooSmall", "DiskIOError", "UsageError"]


# --- host faults --------------------------------------------------------------------------


def _ticker(counter: list[int], cleanup: list[str]) -> Step[None]:
    try:
        while True:
            yield from sleep(1.0)
            yield from write("lun0", 0, sectors(len(counter) % 256))
            counter.append(1)
    finally:
        cleanup.append("finally ran")


def test_crash_stops_tasks_but_in_flight_writes_land() -> None:
    # The write issued at ~11 sits in the device until ~13.
    plan = FaultPlan(
        rules=(IORule(host="h1", op="write", start=10.5, outcome="hang", heal_after=2.0),)
    )
    sim = make_sim(1, plan)
    h1 = sim.add_host("h1", drift=0.0)
    counter: list[int] = []
    cleanup: list[str] = []
    outcomes = Outcomes(sim)
    task = sim.spawn(h1, _ticker(counter, cleanup), outcomes)
    sim.crash(h1, at=11.5)
    sim.run(until=100.0)
    assert len(counter) == 10  # the write issued at ~11 never completed for the task
    assert task.state == "crashed" and not outcomes.items
    assert cleanup == []  # no code of a crashed host runs, finally blocks included
    assert sim.disks["lun0"].read(0, SECTOR) == sectors(10)  # but its write landed at ~12
    assert sim.faults.counts["crash"] == 1 and sim.faults.counts["late_write"] == 1
    with pytest.raises(UsageError):
        sim.spawn(h1, sleep(1.0))


def test_restart_runs_new_tasks_on_the_same_clock() -> None:
    sim = make_sim()
    restarted: list[float] = []

    def on_restart(host: Any) -> None:
        restarted.append(host.clock_now())
        sim.spawn(host, now(), outcomes)

    h1 = sim.add_host("h1", on_restart=on_restart)
    outcomes = Outcomes(sim)
    sim.spawn(h1, sleep(1000.0), outcomes)
    plan_crash = HostCrash("h1", at=5.0, restart_after=20.0)
    sim.crash(h1, at=plan_crash.at, restart_after=plan_crash.restart_after)
    sim.run(until=100.0)
    assert h1.incarnation == 1 and h1.alive
    assert len(outcomes.results) == 1
    (clock_at_restart,) = restarted
    assert outcomes.results[0] == pytest.approx(clock_at_restart)
    assert clock_at_restart == pytest.approx(h1.clock.at(25.0))


def test_plan_crashes_and_pauses_are_scheduled_with_the_host() -> None:
    plan = FaultPlan(crashes=(HostCrash("h1", at=3.0),), pauses=(HostPause("h2", 1.0, 10.0),))
    sim = make_sim(1, plan)
    h1 = sim.add_host("h1", drift=0.0)
    h2 = sim.add_host("h2", drift=0.0)
    outcomes = Outcomes(sim)
    sim.spawn(h1, sleep(5.0), outcomes)
    sim.spawn(h2, sleep(5.0), outcomes)
    sim.run(until=30.0)
    assert not h1.alive
    assert [when for when, _ in outcomes.items] == [pytest.approx(11.0)]


def test_pause_delays_a_sleep_wakeup_by_the_pause() -> None:
    sim = make_sim()
    h1 = sim.add_host("h1", drift=0.0)
    h2 = sim.add_host("h2", drift=0.0)
    outcomes = Outcomes(sim)

    def nap(seconds: float) -> Step[float]:
        yield from sleep(seconds)
        return sim.now

    sim.spawn(h1, nap(10.0), outcomes)
    sim.spawn(h2, nap(10.0), outcomes)  # not paused
    sim.pause(h1, at=5.0, duration=20.0)
    sim.run(until=100.0)
    assert sorted(when for when, _ in outcomes.items) == [
        pytest.approx(10.0),
        pytest.approx(25.0),  # woke at 10 on its clock, but could only run at 25
    ]
    assert sim.faults.counts["pause"] == 1


def test_io_completes_during_a_pause_and_is_seen_after_it() -> None:
    plan = FaultPlan(
        rules=(
            IORule(host="h1", op="write", latency=3.0),
            IORule(host="h2", op="read", latency=8.0),
        )
    )
    sim = make_sim(1, plan)
    h1 = sim.add_host("h1", io_timeout=5.0, drift=0.0)
    h2 = sim.add_host("h2", io_timeout=5.0, drift=0.0)
    outcomes = Outcomes(sim)
    sim.spawn(h1, write("lun0", 0, sectors(4)), outcomes)
    sim.spawn(h2, read("lun0", SECTOR, SECTOR), outcomes)
    sim.pause(h1, at=1.0, duration=10.0)
    sim.pause(h2, at=1.0, duration=10.0)
    sim.run(until=2.5)
    sim.run(until=3.5)
    assert sim.disks["lun0"].read(0, SECTOR) == sectors(4)  # landed during the pause
    sim.run(until=30.0)
    # Both I/Os finished during the pause; the read even after its deadline (5). After the
    # pause the tasks find them complete, as io_getevents would.
    assert [(round(when, 6), result) for when, result in outcomes.items] == [
        (11.0, None),
        (11.0, sectors(0)),
    ] or [(round(when, 6), result) for when, result in outcomes.items] == [
        (11.0, sectors(0)),
        (11.0, None),
    ]


def test_lost_path_to_one_disk() -> None:
    plan = FaultPlan(lost_paths=(LostPath("h1", "lun1", start=5.0, end=50.0),))
    sim = make_sim(1, plan, disks=("lun0", "lun1"))
    h1 = sim.add_host("h1", io_timeout=10.0, drift=0.0)
    h2 = sim.add_host("h2", io_timeout=10.0, drift=0.0)
    sim.lose_path(h2, "lun1", at=5.0, duration=20.0, mode="error")
    log: list[tuple[str, str, str, float]] = []

    def poll(host: str, disk: str) -> Step[None]:
        for _ in range(60):
            try:
                yield from read(disk, 0, SECTOR)
                log.append((host, disk, "ok", sim.now))
            except IOTimeout:
                log.append((host, disk, "timeout", sim.now))
            except DiskIOError:
                log.append((host, disk, "eio", sim.now))
            yield from sleep(1.0)

    for host in (h1, h2):
        for disk in ("lun0", "lun1"):
            sim.spawn(host, poll(host.name, disk))
    sim.run(until=120.0)

    def results(host: str, disk: str, start: float, end: float) -> set[str]:
        return {r for h, d, r, t in log if h == host and d == disk and start <= t < end}

    assert results("h1", "lun0", 0, 120) == {"ok"}  # the other disk is unaffected
    assert results("h1", "lun1", 0, 5) == {"ok"}
    assert results("h1", "lun1", 5, 50) == {"timeout"}  # hung behind the stuck read
    assert results("h1", "lun1", 52, 120) == {"ok"}
    assert results("h2", "lun1", 5.01, 25) == {"eio"}  # error mode: fails fast
    assert results("h2", "lun1", 25.01, 120) == {"ok"}
    assert results("h2", "lun0", 0, 120) == {"ok"}
    assert sim.faults.counts["lost_path"] == 2
    assert sim.faults.counts["lost_path_hang"] >= 1
    assert sim.faults.counts["lost_path_error"] >= 15
    assert [e[2] for e in sim.trace].count("path_lost") == 2


def test_cancel_runs_finally_and_reports_cancelled() -> None:
    sim = make_sim()
    h1 = sim.add_host("h1")
    counter: list[int] = []
    cleanup: list[str] = []
    outcomes = Outcomes(sim)
    task = sim.spawn(h1, _ticker(counter, cleanup), outcomes)
    sim.schedule(5.5, task.cancel)
    sim.run(until=50.0)
    assert len(counter) == 5
    assert cleanup == ["finally ran"]
    assert task.state == "cancelled"
    assert len(outcomes.results) == 1 and isinstance(outcomes.results[0], TaskCancelled)


def test_step_that_yields_a_non_effect_fails() -> None:
    sim = make_sim()
    host = sim.add_host("h1")

    def bad() -> Step[None]:
        yield "hello"  # type: ignore[misc]

    outcomes = Outcomes(sim)
    sim.spawn(host, bad(), outcomes)
    sim.run()
    assert isinstance(outcomes.results[0], TypeError)


def test_schedule_in_the_past_is_refused() -> None:
    sim = make_sim()
    sim.run(until=10.0)
    with pytest.raises(UsageError):
        sim.schedule(5.0, lambda: None)
    with pytest.raises(UsageError):
        sim.crash(sim.add_host("h1"), at=1.0)


def test_io_hung_forever_blocks_its_channel_forever() -> None:
    plan = FaultPlan(rules=(IORule(host="h1", op="read", outcome="hang", count=1),))
    sim = make_sim(1, plan)
    h1 = sim.add_host("h1", io_timeout=10.0, drift=0.0)
    log: list[tuple[str, float]] = []

    def step() -> Step[None]:
        for _ in range(5):
            try:
                yield from read("lun0", 0, SECTOR)
                log.append(("ok", sim.now))
            except IOTimeout:
                log.append(("timeout", sim.now))

    sim.spawn(h1, step())
    sim.run(until=1000.0)
    assert [(what, round(when)) for what, when in log] == [
        ("timeout", 10),
        ("timeout", 20),
        ("timeout", 30),
        ("timeout", 40),
        ("timeout", 50),
    ]
    assert sim.pending == 0  # nothing scheduled at infinity


def test_no_path_error_mode_transfers_nothing() -> None:
    plan = FaultPlan(lost_paths=(LostPath("h1", "lun0", start=0.0, end=10.0, mode="error"),))
    sim = make_sim(1, plan)
    h1 = sim.add_host("h1")
    outcomes = Outcomes(sim)
    sim.spawn(h1, write("lun0", 0, sectors(*range(1, 65))), outcomes)
    sim.spawn(h1, write("lun0", 0, sectors(*range(1, 65))), outcomes, delay=10.0)
    sim.run(until=5.0)
    assert isinstance(outcomes.results[0], DiskIOError)
    assert sim.disks["lun0"].read(0, 64 * SECTOR) == bytes(64 * SECTOR)
    sim.run(until=20.0)
    assert outcomes.results[1] is None
    assert fills_of(sim.disks["lun0"].read(0, 64 * SECTOR)) == list(range(1, 65))


_DIGEST_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_engine import _chaos_run
print(_chaos_run(11).trace_digest())
"""


def test_trace_does_not_depend_on_string_hashing() -> None:
    # Two interpreters with different PYTHONHASHSEED: set or hash() order would show here.
    script = _DIGEST_SCRIPT.format(tests=str(Path(__file__).parent))
    digests = set()
    for hashseed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        digests.add(out.stdout.strip())
    assert digests == {_chaos_run(11).trace_digest()}
