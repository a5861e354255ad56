"""Differential tests: one core step, two drivers, the same I/O and the same bytes.

Every step of the core runs twice from the same initial image (``ondisk.areas``
``lockspace_init`` at 0 and ``resource_init`` one align size further): once by the real driver
(``io/driver.Driver``: O_DIRECT, O_SYNC, worker threads, deadlines) on a real file, and once by
the simulator's ``sim/runner.run_step`` on a ``FakeDisk``. Both disks carry the same name (the
file's path), so the effects of the two runs are directly comparable.

How the comparison is made fair. The core is deterministic given three inputs: the bytes its
reads return, the monotonic clock readings its ``Now`` effects return, and the ``random.Random``
passed in (seeded identically on both sides). The bytes are what is being tested. The clock is
the only input that legitimately differs between the drivers (the real one reads
``time.monotonic()``). Rather than masking clock-derived fields afterwards (leader timestamp,
write_timestamp, dblock inp3, and then every checksum over them), the *real* run goes first and
records each clock reading; the simulated run then sets its FakeClock to the same reading just
before each ``Now`` effect reaches ``run_step``. With that one input replayed, nothing is masked:

* the effect traces must be equal, event by event: the same Read (disk, offset, length,
  timeout) / Write (disk, offset, data) / Sleep / Now in the same order, every Write's data
  byte for byte (timestamps and checksums included), every Read answered with the same bytes
  and every Now with the same reading;
* each step must return equal values (or fail with the same error);
* after each step the whole real file, read back with O_DIRECT (so not from a page cache), must
  equal the FakeDisk byte for byte;
* the real driver's ``IOStats`` and the FakeDisk's counters must agree on the I/O done.

A trace check is stronger than an image check: a step that reads more or less than it should,
or writes the same bytes by a different path, leaves the same image but not the same trace.
Both are checked. A driver that shifted an offset, padded or truncated a write, returned stale
bytes from its reused O_DIRECT buffer, or dropped a write would show up as a difference. The
last tests show the comparison failing on purpose: a different read pattern (same final image),
one flipped bit in a write, and a clock replayed one second late.

The delta lease acquire really sleeps (see ``delta_scenario``); every other step here is a
handful of I/Os.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from sync_manager.core import delta, paxos
from sync_manager.core.effects import Effect, Now, Read, Sleep, Step, Write
from sync_manager.core.paxos_errors import RequestOld, SharedHoldersLive
from sync_manager.io.disk import Storage
from sync_manager.io.driver import Driver
from sync_manager.ondisk.areas import lockspace_init, resource_init
from sync_manager.ondisk.geometry import MIB, Geometry
from sync_manager.ondisk.request import FORCE_MODE_FORCE
from sync_manager.sim.disk import FakeDisk
from sync_manager.sim.runner import FakeClock, run_step

T = TypeVar("T")

LS = "LS"
RES = "R"
IO_TIMEOUT = 1  # stored in the lockspace records: delta acquire then waits 2 * 1 s
GEOMETRIES = [Geometry(512, MIB), Geometry(4096, MIB)]
FILE_SECTOR = 512  # a regular file has 512-byte sectors for O_DIRECT, so does the FakeDisk


# --- the initial image ----------------------------------------------------------------------


def initial_image(geometry: Geometry, num_hosts: int = 0) -> bytes:
    """A lockspace at 0 (all host ids free, io_timeout 1) and a resource lease after it."""
    ls = lockspace_init(LS, geometry, IO_TIMEOUT)
    area = bytearray(ls.area)
    area[: len(ls.first_sector)] = ls.first_sector
    return bytes(area) + resource_init(LS, RES, geometry, num_hosts)


def lockspace(path: str, geometry: Geometry, host_id: int = 1) -> delta.Lockspace:
    return delta.Lockspace(LS, path, 0, geometry, host_id, f"host-{host_id}", IO_TIMEOUT)


def resource(path: str, geometry: Geometry) -> paxos.Resource:
    return paxos.Resource(LS, RES, ((path, geometry.align_size),), geometry)


# --- recording a run ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One effect a step yielded and what the driver answered: the bytes of a Read, the reading
    of a Now, None for a Write or a Sleep, or the exception the driver threw in."""

    effect: Effect
    result: object


@dataclass(frozen=True, slots=True)
class StepRecord:
    """Everything observable about one step run by one driver."""

    events: tuple[Event, ...]
    value: object
    error: str | None  # "Type: message" if the step raised
    image: bytes  # the whole disk afterwards
    io: tuple[int, int, int, int]  # the driver's own count: reads, bytes read, writes, written


def tap(
    step: Step[T], events: list[Event], before: Callable[[Effect], None] | None = None
) -> Step[T]:
    """``step`` unchanged, with each effect and its answer appended to ``events``.

    ``before`` sees each effect just before the driver does (the replayed clock uses it).
    Exceptions the driver throws in are recorded and passed on to ``step``.
    """
    answer: object = None
    error: Exception | None = None
    while True:
        try:
            effect = step.throw(error) if error is not None else step.send(answer)
        except StopIteration as stop:
            value: T = stop.value
            return value
        if before is not None:
            before(effect)
        try:
            answer = yield effect
        except Exception as exc:
            events.append(Event(effect, exc))
            answer, error = None, exc
            continue
        error = None
        events.append(Event(effect, answer))


def describe_error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


class Runs(Protocol):
    """What a scenario needs: run a step to its end, return its value or raise its error."""

    def run(self, step: Step[T]) -> T: ...


class Runner(ABC):
    """Runs the steps of one scenario on one kind of disk and records each of them."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.records: list[StepRecord] = []
        # Called with each effect before the driver carries it out (the replayed clock).
        self.before_effect: Callable[[Effect], None] | None = None

    def run(self, step: Step[T]) -> T:
        """Run ``step`` to its end, record it, return its value or raise its error."""
        events: list[Event] = []
        before = self.counts()
        try:
            value = self.drive(tap(step, events, self.before_effect))
        except Exception as err:
            self.records.append(self.record(events, None, describe_error(err), before))
            raise
        self.records.append(self.record(events, value, None, before))
        return value

    def record(
        self, events: list[Event], value: object, error: str | None, before: tuple[int, ...]
    ) -> StepRecord:
        after = self.counts()
        io = tuple(a - b for a, b in zip(after, before, strict=True))
        return StepRecord(tuple(events), value, error, self.image(), (io[0], io[1], io[2], io[3]))

    @abstractmethod
    def drive(self, step: Step[T]) -> T: ...

    @abstractmethod
    def image(self) -> bytes: ...

    @abstractmethod
    def counts(self) -> tuple[int, int, int, int]: ...


class RealRunner(Runner):
    """The real driver on a real file, opened once for the whole scenario."""

    def __init__(self, path: Path, image: bytes) -> None:
        super().__init__(str(path))
        path.write_bytes(image)
        self.size = len(image)
        self.driver = Driver(io_timeout=10)

    def drive(self, step: Step[T]) -> T:
        return self.driver.run(step)

    def image(self) -> bytes:
        with Storage.open(self.path, readonly=True) as storage:  # O_DIRECT: what is on disk
            return storage.read(0, self.size)

    def counts(self) -> tuple[int, int, int, int]:
        stats = self.driver.stats
        return stats.reads, stats.bytes_read, stats.writes, stats.bytes_written

    def close(self) -> None:
        self.driver.close()


class SimRunner(Runner):
    """``run_step`` on a FakeDisk named like the real file, replaying the real clock readings.

    ``clock_shift`` is added to every replayed reading (only the failing-on-purpose test sets
    it). A step that asks for more readings than the real one did sees the clock unchanged:
    the trace comparison reports that anyway.
    """

    def __init__(
        self, path: Path, image: bytes, real: list[StepRecord], clock_shift: float = 0.0
    ) -> None:
        super().__init__(str(path))
        self.disk = FakeDisk(self.path, len(image), FILE_SECTOR)
        self.disk.write(0, image)
        self.clock = FakeClock()
        self.real = real
        self.shift = clock_shift
        self.readings: Iterator[float] = iter(())
        self.before_effect = self.replay_clock

    def drive(self, step: Step[T]) -> T:
        index = len(self.records)
        real = self.real[index].events if index < len(self.real) else ()
        readings: list[float] = []
        for event in real:
            if isinstance(event.effect, Now) and isinstance(event.result, int | float):
                readings.append(float(event.result))
        self.readings = iter(readings)
        return run_step(step, {self.path: self.disk}, self.clock)

    def replay_clock(self, effect: Effect) -> None:
        if isinstance(effect, Now):
            reading = next(self.readings, None)
            if reading is not None:
                self.clock.time = reading + self.shift

    def image(self) -> bytes:
        return bytes(self.disk.data)

    def counts(self) -> tuple[int, int, int, int]:
        d = self.disk
        return d.reads, d.bytes_read, d.writes, d.bytes_written


# --- comparing two runs ---------------------------------------------------------------------


def first_difference(a: bytes, b: bytes, base: int = 0) -> str:
    """Where two byte strings first differ, as an absolute offset and a sector-relative one."""
    if len(a) != len(b):
        return f"lengths differ: {len(a)} != {len(b)}"
    at = next(i for i in range(len(a)) if a[i] != b[i])
    count = sum(1 for x, y in zip(a, b, strict=True) if x != y)
    where = base + at
    return (
        f"{count} byte(s) differ, first at offset {where} (byte {where % FILE_SECTOR} of its "
        f"512-byte sector): {a[at]:#04x} != {b[at]:#04x}"
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


def _effect_key(effect: Effect) -> tuple[object, ...]:
    """The effect without its data (compared separately, to say where it differs)."""
    if isinstance(effect, Write):
        return ("Write", effect.disk, effect.offset, len(effect.data), effect.timeout)
    if isinstance(effect, Read):
        return ("Read", effect.disk, effect.offset, effect.length, effect.timeout)
    if isinstance(effect, Sleep):
        return ("Sleep", effect.seconds)
    return ("Now",)


def _event_differences(where: str, real: Event, sim: Event) -> list[str]:
    if _effect_key(real.effect) != _effect_key(sim.effect):
        return [f"{where}: real {_effect_key(real.effect)} != sim {_effect_key(sim.effect)}"]
    out: list[str] = []
    if isinstance(real.effect, Write) and isinstance(sim.effect, Write):
        if real.effect.data != sim.effect.data:
            what = first_difference(real.effect.data, sim.effect.data, real.effect.offset)
            out.append(f"{where}: data of {_effect_key(real.effect)}: {what}")
    elif isinstance(real.result, bytes) and isinstance(sim.result, bytes):
        if real.result != sim.result:
            base = real.effect.offset if isinstance(real.effect, Read) else 0
            what = first_difference(real.result, sim.result, base)
            out.append(f"{where}: bytes read by {_effect_key(real.effect)}: {what}")
    elif isinstance(real.result, BaseException) or isinstance(sim.result, BaseException):
        r, s = _as_text(real.result), _as_text(sim.result)
        if r != s:
            out.append(f"{where}: driver answered {r} != {s}")
    elif real.result != sim.result:
        out.append(f"{where}: answer {_short(real.result)} != {_short(sim.result)}")
    return out


def _as_text(value: object) -> str:
    return describe_error(value) if isinstance(value, BaseException) else _short(value)


def differences(real: list[StepRecord], sim: list[StepRecord]) -> list[str]:
    """Every way the simulated run differs from the real one (empty: identical)."""
    out: list[str] = []
    if len(real) != len(sim):
        out.append(f"{len(real)} steps ran for real, {len(sim)} in the simulator")
    for index, (r, s) in enumerate(zip(real, sim, strict=False)):
        step = f"step {index}"
        if len(r.events) != len(s.events):
            out.append(f"{step}: {len(r.events)} effects for real, {len(s.events)} simulated")
        for number, (re, se) in enumerate(zip(r.events, s.events, strict=False)):
            out.extend(_event_differences(f"{step} effect {number}", re, se))
        if r.error != s.error:
            out.append(f"{step}: error {r.error!r} != {s.error!r}")
        if r.value != s.value:
            out.append(f"{step}: value {_short(r.value)} != {_short(s.value)}")
        if r.image != s.image:
            out.append(f"{step}: disk afterwards: {first_difference(r.image, s.image)}")
        if r.io != s.io:
            out.append(f"{step}: I/O counts (reads, bytes, writes, bytes) {r.io} != {s.io}")
    return out


def io_of(records: list[StepRecord]) -> tuple[int, int, int, int]:
    """What the effects of a run add up to, to check the drivers' own counters against."""
    reads = [e.effect for r in records for e in r.events if isinstance(e.effect, Read)]
    writes = [e.effect for r in records for e in r.events if isinstance(e.effect, Write)]
    return (
        len(reads),
        sum(e.length for e in reads),
        len(writes),
        sum(len(e.data) for e in writes),
    )


Scenario = Callable[[Runs], None]


def run_both(
    tmp: Path,
    image: bytes,
    scenario: Scenario,
    sim_scenario: Scenario | None = None,
    clock_shift: float = 0.0,
) -> tuple[list[StepRecord], list[StepRecord]]:
    """Run ``scenario`` for real on ``tmp``/leases, then in the simulator (``sim_scenario``
    if given: the failing-on-purpose tests run a different one there)."""
    path = tmp / "leases"
    real = RealRunner(path, image)
    try:
        scenario(real)
    finally:
        real.close()
    sim = SimRunner(path, image, real.records, clock_shift)
    # A simulated run that diverges may fail a step the real run passed: its records (the
    # failing step included) are compared all the same, which says more than a traceback.
    with contextlib.suppress(Exception):
        (sim_scenario or scenario)(sim)
    return real.records, sim.records


def assert_same(real: list[StepRecord], sim: list[StepRecord]) -> None:
    assert real, "the scenario ran no step"
    diffs = differences(real, sim)
    assert not diffs, "\n".join(diffs[:20])
    # The real driver's IOStats count exactly the I/O of the effects (the FakeDisk's counters
    # were compared step by step above).
    counted = tuple(sum(r.io[i] for r in real) for i in range(4))
    assert counted == io_of(real)


# --- scenarios ------------------------------------------------------------------------------


def delta_scenario(geometry: Geometry, path: str) -> Scenario:
    """Host id 1: acquire, renew (with a bitmap and an event), release."""

    def scenario(r: Runs) -> None:
        ls = lockspace(path, geometry)
        # For real this sleeps 2 s: acquire waits 2 * io_timeout between its write and its
        # re-read (spec 5.2), with the io_timeout found in the record, 1 here (the least).
        lease = r.run(delta.acquire(ls))
        renewed = r.run(delta.renew(ls, lease, bitmap=b"\x06", event=delta.HostEvent(7, 1, 42)))
        r.run(delta.release(ls, renewed.lease))

    return scenario


def exclusive_scenario(
    geometry: Geometry,
    path: str,
    pattern: paxos.ReadPattern = paxos.ReadPattern.COMPACT,
    hint: int | None = None,
) -> Scenario:
    """Host 1 acquires EX and releases; host 2 acquires the released lease and releases."""

    def scenario(r: Runs) -> None:
        rng = random.Random(1)
        res = resource(path, geometry)
        h1, h2 = paxos.Host(1, 1), paxos.Host(2, 5)
        got = r.run(paxos.acquire(res, h1, rng=rng, read_pattern=pattern, num_hosts_hint=hint))
        r.run(paxos.release(res, h1, got.leader, got.dblock))
        got = r.run(paxos.acquire(res, h2, rng=rng, read_pattern=pattern, num_hosts_hint=hint))
        r.run(paxos.read_owners(res, read_pattern=pattern, num_hosts_hint=hint))
        r.run(paxos.release(res, h2, got.leader, got.dblock))

    return scenario


def shared_scenario(
    geometry: Geometry,
    path: str,
    pattern: paxos.ReadPattern = paxos.ReadPattern.COMPACT,
    hint: int | None = None,
) -> Scenario:
    """Hosts 1 and 2 acquire SH; host 2's convert to EX fails while host 1 holds SH; host 1
    releases; host 2 converts to EX, back to SH, and releases."""

    def scenario(r: Runs) -> None:
        rng = random.Random(2)
        res = resource(path, geometry)
        h1, h2 = paxos.Host(1, 3), paxos.Host(2, 4)

        def get_shared(host: paxos.Host) -> paxos.AcquireResult:
            return r.run(
                paxos.acquire(
                    res, host, rng=rng, shared=True, read_pattern=pattern, num_hosts_hint=hint
                )
            )

        def to_exclusive() -> paxos.AcquireResult:
            return r.run(
                paxos.convert_to_exclusive(
                    res, h2, rng=rng, read_pattern=pattern, num_hosts_hint=hint
                )
            )

        sh1 = get_shared(h1)
        sh2 = get_shared(h2)
        r.run(paxos.read_owners(res, read_pattern=pattern, num_hosts_hint=hint))
        with pytest.raises(SharedHoldersLive):
            to_exclusive()
        r.run(paxos.release(res, h1, sh1.leader, sh1.dblock, shared=True))
        ex = to_exclusive()
        assert not ex.shared
        sh = r.run(paxos.convert_to_shared(res, h2, ex.leader, ex.dblock))
        r.run(paxos.release(res, h2, sh.leader, sh2.dblock, shared=True))
        r.run(paxos.read_owners(res, read_pattern=pattern, num_hosts_hint=hint))

    return scenario


def request_scenario(
    geometry: Geometry,
    path: str,
    pattern: paxos.ReadPattern = paxos.ReadPattern.COMPACT,
    hint: int | None = None,
) -> Scenario:
    """Host 1 holds the lease EX; host 2 requests it (forced), asks again for an old lver
    (REQUEST_OLD), and clears its request."""

    def scenario(r: Runs) -> None:
        rng = random.Random(3)
        res = resource(path, geometry)
        h1 = paxos.Host(1, 1)
        got = r.run(paxos.acquire(res, h1, rng=rng, read_pattern=pattern, num_hosts_hint=hint))
        r.run(paxos.request(res, got.lver + 1, FORCE_MODE_FORCE))
        with pytest.raises(RequestOld):
            r.run(paxos.request(res, got.lver, FORCE_MODE_FORCE))
        r.run(paxos.request(res, 0, 0))
        r.run(paxos.release(res, h1, got.leader, got.dblock))

    return scenario


# --- the tests ------------------------------------------------------------------------------

geometries = pytest.mark.parametrize(
    "geometry", GEOMETRIES, ids=[f"{g.sector_size}-{g.align_size // MIB}M" for g in GEOMETRIES]
)

# (read pattern, num_hosts_hint, num_hosts written by init): sanlock's whole-area reads; the
# compact reads with no hint; a hint below the lease's num_hosts, which makes the compact read
# fetch the missing sectors in a second read.
READS = pytest.mark.parametrize(
    ("pattern", "hint", "num_hosts"),
    [
        (paxos.ReadPattern.SANLOCK, None, 0),
        (paxos.ReadPattern.COMPACT, None, 0),
        (paxos.ReadPattern.COMPACT, 8, 16),
    ],
    ids=["sanlock", "compact", "compact-short-hint"],
)

PaxosScenario = Callable[[Geometry, str, paxos.ReadPattern, int | None], Scenario]


@geometries
def test_delta_acquire_renew_release(tmp_path: Path, geometry: Geometry) -> None:
    scenario = delta_scenario(geometry, str(tmp_path / "leases"))
    real, sim = run_both(tmp_path, initial_image(geometry), scenario)
    assert_same(real, sim)
    assert [type(e.effect).__name__ for e in real[0].events] == [
        "Read",
        "Now",
        "Write",
        "Sleep",
        "Read",
    ]
    assert real[0].events[3].effect == Sleep(2 * IO_TIMEOUT)


@geometries
@READS
@pytest.mark.parametrize(
    "make",
    [exclusive_scenario, shared_scenario, request_scenario],
    ids=["exclusive", "shared-convert", "request"],
)
def test_paxos(
    tmp_path: Path,
    geometry: Geometry,
    pattern: paxos.ReadPattern,
    hint: int | None,
    num_hosts: int,
    make: PaxosScenario,
) -> None:
    scenario = make(geometry, str(tmp_path / "leases"), pattern, hint)
    real, sim = run_both(tmp_path, initial_image(geometry, num_hosts), scenario)
    assert_same(real, sim)


def test_exclusive_on_tmpfs(tmp_path: Path) -> None:
    """The same on tmpfs (/dev/shm), which takes O_DIRECT by another code path than ext4."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    geometry = GEOMETRIES[0]
    where = shm / f"sync_manager-differential-{tmp_path.name}"
    where.mkdir()
    try:
        scenario = exclusive_scenario(geometry, str(where / "leases"))
        real, sim = run_both(where, initial_image(geometry), scenario)
        assert_same(real, sim)
    finally:
        (where / "leases").unlink(missing_ok=True)
        where.rmdir()


# --- the comparison fails when it should ----------------------------------------------------


def _flip_first_write(step: Step[T]) -> Step[T]:
    """``step`` with one bit of its first write's data flipped (a broken driver or step)."""
    answer: object = None
    flipped = False
    while True:
        try:
            effect = step.send(answer)
        except StopIteration as stop:
            value: T = stop.value
            return value
        if isinstance(effect, Write) and not flipped:
            data = bytearray(effect.data)
            data[40] ^= 0x01  # lver, in a dblock (owner_generation, in a leader)
            effect = dataclasses.replace(effect, data=bytes(data))
            flipped = True
        answer = yield effect


class _Flipping:
    """Runs each step on ``inner`` with its first write corrupted."""

    def __init__(self, inner: Runs) -> None:
        self.inner = inner

    def run(self, step: Step[T]) -> T:
        return self.inner.run(_flip_first_write(step))


def test_a_different_read_pattern_is_caught_though_the_disk_ends_the_same(
    tmp_path: Path,
) -> None:
    geometry = GEOMETRIES[0]
    path = str(tmp_path / "leases")
    real, sim = run_both(
        tmp_path,
        initial_image(geometry),
        exclusive_scenario(geometry, path, paxos.ReadPattern.COMPACT),
        sim_scenario=exclusive_scenario(geometry, path, paxos.ReadPattern.SANLOCK),
    )
    diffs = differences(real, sim)
    assert diffs
    assert diffs[0].startswith("step 0 effect 0: real ('Read'")
    assert all("disk afterwards" not in d for d in diffs), "the images are the same"
    assert any("I/O counts" in d for d in diffs)


def test_a_flipped_bit_in_a_write_is_caught(tmp_path: Path) -> None:
    geometry = GEOMETRIES[0]
    path = str(tmp_path / "leases")
    scenario = exclusive_scenario(geometry, path)

    def broken(r: Runs) -> None:
        scenario(_Flipping(r))

    real, sim = run_both(tmp_path, initial_image(geometry), scenario, sim_scenario=broken)
    diffs = [d for d in differences(real, sim) if d.startswith("step 0")]
    assert diffs
    # The phase-1 dblock, then the phase-1 read that sees it. Phase 2 rewrites the sector, so
    # the disk after step 0 is the same: only the trace shows the bad write.
    assert diffs[0].startswith("step 0 effect 1: data of ('Write'"), diffs[0]
    assert diffs[1].startswith("step 0 effect 2: bytes read by ('Read'"), diffs[1]
    assert not any(d.startswith("step 0: disk afterwards") for d in diffs), diffs


def test_a_clock_one_second_off_is_caught(tmp_path: Path) -> None:
    geometry = GEOMETRIES[0]
    scenario = exclusive_scenario(geometry, str(tmp_path / "leases"))
    real, sim = run_both(tmp_path, initial_image(geometry), scenario, clock_shift=1.0)
    diffs = differences(real, sim)
    assert any("answer" in d for d in diffs)  # the Now readings themselves
    # inp3 of host 1's phase 2 dblock (its time) and the checksum over it
    assert any(d.startswith("step 0 effect") and "data of ('Write'" in d for d in diffs)
    assert any("disk afterwards" in d for d in diffs)
