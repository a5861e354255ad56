"""Delta leases (spec/sanlock-ondisk.md 5): acquire, renew, release and the host view.

The steps run on a FakeDisk holding a lockspace made by ``lockspace_init`` and a FakeClock,
through ``run_step`` or, where another host must act between two effects, through ``drive``
below, which runs the generator by hand and calls a hook before each effect. Expected records
are built field by field. The last tests use the real sanlock 3.8.5 (``sanlock direct``): what
it writes we accept, and what we write it accepts. In CI (``CI=true``) a missing sanlock fails
them instead of skipping.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from sync_manager.core.delta import (
    NO_EVENT,
    DeltaLease,
    HostEvent,
    Lockspace,
    acquire,
    overlay_c_string,
    read_area,
    read_delta,
    release,
    renew,
    write_renewal,
)
from sync_manager.core.effects import Effect, Now, Read, Sleep, Step, Write
from sync_manager.core.errors import (
    SANLK_HOSTID_BUSY,
    SANLK_RENEW_DIFF,
    SANLK_RENEW_OWNER,
    Aborted,
    HostIdBusy,
    RenewDiff,
    RenewOwner,
)
from sync_manager.core.hosts import (
    HostMessage,
    HostState,
    HostView,
    Notices,
    bit_is_set,
    make_bitmap,
    requesting_hosts,
)
from sync_manager.errors import (
    SANLK_LEADER_CHECKSUM,
    BadMagic,
    ChecksumMismatch,
    UsageError,
    WrongLockspace,
)
from sync_manager.ondisk.areas import lockspace_init, pack_delta_sector
from sync_manager.ondisk.geometry import MIB, Geometry
from sync_manager.ondisk.leader import LeaderRecord
from sync_manager.sim.disk import FakeDisk
from sync_manager.sim.runner import FakeClock, run_step

T = TypeVar("T")

DISK = "/dev/mapper/lockspace"
G512 = Geometry(512, MIB)
G4K = Geometry(4096, MIB)
DATA = Path(__file__).parent.parent / "data"


# --- helpers ---------------------------------------------------------------------------------


def make_disk(
    geometry: Geometry = G512, io_timeout: int = 10, name: str = "LS", offset: int = 0
) -> FakeDisk:
    """A disk holding a freshly initialized lockspace at ``offset`` (sanlock's two writes)."""
    init = lockspace_init(name, geometry, io_timeout)
    disk = FakeDisk(DISK, offset + geometry.align_size, geometry.sector_size)
    disk.write(offset, init.area)
    disk.write(offset, init.first_sector)
    return disk


def space(
    *,
    host_id: int = 1,
    host_name: str = "hostA",
    io_timeout: int = 10,
    geometry: Geometry = G512,
    offset: int = 0,
    name: str = "LS",
) -> Lockspace:
    return Lockspace(
        name=name,
        disk=DISK,
        offset=offset,
        geometry=geometry,
        host_id=host_id,
        host_name=host_name,
        io_timeout=io_timeout,
    )


def field(name: bytes) -> bytes:
    """A 48-byte name field."""
    return name.ljust(48, b"\0")


def expected(
    *,
    owner_id: int,
    generation: int,
    name: bytes,
    timestamp: int,
    io_timeout: int = 10,
    geometry: Geometry = G512,
    write: tuple[int, int, int] = (0, 0, 0),
) -> LeaderRecord:
    """A delta lease record built field by field as sanlock writes it."""
    return LeaderRecord(
        magic=0x12212010,
        version=0x00030004,
        flags=0x10,  # LFL_ALIGN_1M
        sector_size=geometry.sector_size,
        num_hosts=0,
        max_hosts=1,
        owner_id=owner_id,
        owner_generation=generation,
        lver=0,
        space_name=field(b"LS"),
        resource_name=field(name),
        timestamp=timestamp,
        unused1=0,
        unused2=0,
        io_timeout=io_timeout,
        write_id=write[0],
        write_generation=write[1],
        write_timestamp=write[2],
    ).sealed()


def sector_of(disk: FakeDisk, host_id: int, geometry: Geometry = G512, offset: int = 0) -> bytes:
    start = offset + (host_id - 1) * geometry.sector_size
    return bytes(disk.data[start : start + geometry.sector_size])


def record_of(disk: FakeDisk, host_id: int, geometry: Geometry = G512) -> LeaderRecord:
    return LeaderRecord.unpack(sector_of(disk, host_id, geometry))


def put_record(disk: FakeDisk, host_id: int, record: LeaderRecord, bitmap: bytes = b"") -> None:
    """Another host (or a hand) writes ``record`` to host ``host_id``'s sector."""
    start = (host_id - 1) * disk.sector_size
    disk.write(start, pack_delta_sector(record, disk.sector_size, bitmap))


def drive(
    step: Step[T],
    disk: FakeDisk,
    clock: FakeClock,
    hook: Callable[[Effect], None] | None = None,
) -> tuple[T, list[Effect]]:
    """Run ``step`` by hand on one disk; ``hook`` runs before each effect is carried out."""
    effects: list[Effect] = []
    result: object = None
    while True:
        try:
            effect = step.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value, effects
        effects.append(effect)
        if hook is not None:
            hook(effect)
        result = None
        if isinstance(effect, Read):
            assert effect.disk == disk.name
            result = disk.read(effect.offset, effect.length)
        elif isinstance(effect, Write):
            assert effect.disk == disk.name
            disk.write(effect.offset, effect.data)
        elif isinstance(effect, Sleep):
            clock.advance(effect.seconds)
        elif isinstance(effect, Now):
            result = clock.time


def sleeps(effects: list[Effect]) -> list[float]:
    return [e.seconds for e in effects if isinstance(e, Sleep)]


def joined(ls: Lockspace, disk: FakeDisk, clock: FakeClock) -> DeltaLease:
    return run_step(acquire(ls), {DISK: disk}, clock)


# --- acquire ---------------------------------------------------------------------------------


def test_acquire_free_id_writes_what_sanlock_writes() -> None:
    disk, clock = make_disk(), FakeClock(1000.0)
    before_host2 = sector_of(disk, 2)
    ls = space()
    lease, effects = drive(acquire(ls), disk, clock)

    want = expected(owner_id=1, generation=1, name=b"hostA", timestamp=1000)
    assert sector_of(disk, 1) == want.pack() + bytes(512 - 200)
    assert lease.record == want
    assert (lease.host_id, lease.generation, lease.last_success) == (1, 1, 1000)
    assert sleeps(effects) == [20]  # free: only the short delay, 2 * io
    assert clock.time == 1020.0
    assert sector_of(disk, 2) == before_host2
    reads = [e for e in effects if isinstance(e, Read)]
    writes = [e for e in effects if isinstance(e, Write)]
    assert [(r.offset, r.length, r.timeout) for r in reads] == [(0, 512, 10), (0, 512, 10)]
    assert [(w.offset, len(w.data), w.timeout) for w in writes] == [(0, 512, 10)]
    # read, (no wait), now, write, wait, re-read: in this order
    assert [type(e) for e in effects] == [Read, Now, Write, Sleep, Read]


def test_acquire_reproduces_sanlocks_golden_record() -> None:
    """tests/data: sanlock's ``direct acquire_id -s LS:1:F:0 -e somehostname`` on 512/1M."""
    golden = (DATA / "lockspace_512_1M_acquired_h1.head.bin").read_bytes()
    stamp = LeaderRecord.unpack(golden).timestamp
    disk, clock = make_disk(), FakeClock(stamp + 0.9)  # whole seconds, truncated
    joined(space(host_name="somehostname"), disk, clock)
    assert sector_of(disk, 1) == golden


def test_acquire_other_geometry_and_offset() -> None:
    offset = 3 * MIB
    disk, clock = make_disk(G4K, offset=offset), FakeClock(50.0)
    ls = space(host_id=7, geometry=G4K, offset=offset)
    joined(ls, disk, clock)
    want = expected(owner_id=7, generation=1, name=b"hostA", timestamp=50, geometry=G4K)
    assert sector_of(disk, 7, G4K, offset) == want.pack() + bytes(4096 - 200)
    assert LeaderRecord.unpack(sector_of(disk, 6, G4K, offset)).owner_id == 0


def test_fast_reacquire_by_same_name_waits_only_short_delay() -> None:
    disk, clock = make_disk(), FakeClock()
    ls = space()
    first = joined(ls, disk, clock)
    clock.advance(500)  # never released: a restart of the same daemon
    start = clock.time
    again = joined(ls, disk, clock)
    assert clock.time - start == 20
    assert again.generation == first.generation + 1 == 2
    assert again.last_success == int(start)


def test_takeover_of_abandoned_id_waits_host_dead_then_short_delay() -> None:
    disk, clock = make_disk(), FakeClock(1000.0)
    joined(space(host_name="hostA"), disk, clock)  # hostA then dies
    start = clock.time
    lease, effects = drive(acquire(space(host_name="hostB")), disk, clock)
    assert sleeps(effects) == [8 * 10 + 60, 2 * 10]
    assert clock.time - start == 160
    assert lease.record == expected(
        owner_id=1, generation=2, name=b"hostB", timestamp=int(start) + 140
    )
    assert record_of(disk, 1) == lease.record


def test_waits_use_io_timeout_found_in_record() -> None:
    disk, clock = make_disk(io_timeout=5), FakeClock()
    joined(space(host_name="hostA", io_timeout=5), disk, clock)
    lease, effects = drive(acquire(space(host_name="hostB", io_timeout=10)), disk, clock)
    assert sleeps(effects) == [8 * 5 + 60, 2 * 5]
    assert lease.record.io_timeout == 10


def test_record_io_timeout_zero_means_ours() -> None:
    disk, clock = make_disk(), FakeClock()
    joined(space(host_name="hostA"), disk, clock)
    put_record(disk, 1, record_of(disk, 1).replace(io_timeout=0))
    _, effects = drive(acquire(space(host_name="hostB", io_timeout=3)), disk, clock)
    assert sleeps(effects) == [8 * 3 + 60, 2 * 3]


def test_acquire_fails_when_holder_renews_during_long_wait() -> None:
    disk, clock = make_disk(), FakeClock()
    held = joined(space(host_name="hostA"), disk, clock).record

    def holder_renews(effect: Effect) -> None:
        if isinstance(effect, Sleep) and effect.seconds == 140:
            put_record(disk, 1, held.replace(timestamp=held.timestamp + 20))

    with pytest.raises(HostIdBusy) as info:
        drive(acquire(space(host_name="hostB")), disk, clock, holder_renews)
    assert info.value.code == SANLK_HOSTID_BUSY == -262
    assert info.value.found is not None
    assert info.value.found.timestamp == held.timestamp + 20
    assert record_of(disk, 1).resource_name == field(b"hostA")  # we never wrote


def test_acquire_goes_on_when_holder_releases_during_long_wait() -> None:
    disk, clock = make_disk(), FakeClock()
    ls_a = space(host_name="hostA")
    lease_a = joined(ls_a, disk, clock)

    def holder_leaves(effect: Effect) -> None:
        if isinstance(effect, Sleep) and effect.seconds == 140:
            run_step(release(ls_a, lease_a), {DISK: disk}, clock)

    lease, _ = drive(acquire(space(host_name="hostB")), disk, clock, holder_leaves)
    assert (lease.generation, lease.record.resource_name) == (2, field(b"hostB"))


def test_acquire_fails_when_another_host_writes_during_short_wait() -> None:
    disk, clock = make_disk(), FakeClock()
    rival = expected(owner_id=1, generation=1, name=b"hostB", timestamp=999)

    def rival_writes(effect: Effect) -> None:
        if isinstance(effect, Sleep):  # the 2*io wait after our write
            put_record(disk, 1, rival)

    with pytest.raises(HostIdBusy) as info:
        drive(acquire(space(host_name="hostA")), disk, clock, rival_writes)
    assert info.value.found == rival
    assert "hostB" in str(info.value)


def test_acquire_fails_on_a_single_changed_byte_after_the_wait() -> None:
    disk, clock = make_disk(), FakeClock()

    def one_byte(effect: Effect) -> None:
        if isinstance(effect, Sleep):
            mine = record_of(disk, 1)
            put_record(disk, 1, mine.replace(write_timestamp=1))  # outside the checksum too

    with pytest.raises(HostIdBusy):
        drive(acquire(space()), disk, clock, one_byte)


def test_acquire_abort_checked_every_second() -> None:
    disk, clock = make_disk(), FakeClock()
    joined(space(host_name="hostA"), disk, clock)
    calls = 0

    def abort() -> bool:
        nonlocal calls
        calls += 1
        return calls > 5

    start = clock.time
    with pytest.raises(Aborted):
        run_step(acquire(space(host_name="hostB"), abort=abort), {DISK: disk}, clock)
    assert clock.time - start == 5


def test_acquire_with_abort_hook_sleeps_in_one_second_slices() -> None:
    disk, clock = make_disk(), FakeClock()
    lease, effects = drive(acquire(space(), abort=lambda: False), disk, clock)
    assert sleeps(effects) == [1] * 20
    assert lease.generation == 1


def test_acquire_validates_record() -> None:
    disk, clock = make_disk(name="OTHER"), FakeClock()
    with pytest.raises(WrongLockspace) as info:
        joined(space(host_id=3), disk, clock)
    assert (info.value.disk, info.value.offset) == (DISK, 2 * 512)
    blank = FakeDisk(DISK, MIB)
    with pytest.raises(BadMagic):
        joined(space(), blank, clock)


def test_host_name_written_as_c_string_over_stale_bytes() -> None:
    """The quirk seen on sanlock 3.8.5: a shorter name leaves the old name's tail."""
    disk, clock = make_disk(), FakeClock()
    long_ls = space(host_name="averyveryverylonghostname")
    run_step(release(long_ls, joined(long_ls, disk, clock)), {DISK: disk}, clock)
    lease = joined(space(host_name="hB"), disk, clock)
    assert lease.record.resource_name == field(b"hB\0ryveryverylonghostname")
    assert lease.record.resource == "hB"
    assert record_of(disk, 1).resource_name == field(b"hB\0ryveryverylonghostname")


def test_host_name_truncated_to_47_bytes() -> None:
    name = "x" * 44 + "abcd"  # 48 bytes: fits the field, but only 47 are stored
    disk, clock = make_disk(), FakeClock()
    ls = space(host_name=name)
    lease = joined(ls, disk, clock)
    assert lease.record.resource_name == b"x" * 44 + b"abc\0"
    # sanlock compares the stored 47 with the full 48: no fast reacquire for such names
    start = clock.time
    joined(ls, disk, clock)
    assert clock.time - start == 140 + 20
    with pytest.raises(UsageError):
        space(host_name=name + "y")


def test_overlay_c_string() -> None:
    old = field(b"0123456789")
    assert overlay_c_string(old, b"ab") == b"ab\0" + b"3456789" + bytes(38)
    assert overlay_c_string(old, b"") == b"\0" + old[1:]
    assert overlay_c_string(bytes(48), b"z" * 60) == b"z" * 47 + b"\0"


def test_io_timeout_keeps_low_8_bits() -> None:
    disk, clock = make_disk(), FakeClock()
    ls = space(io_timeout=300)
    start = clock.time
    lease = joined(ls, disk, clock)
    assert lease.record.io_timeout == 300 & 0xFF == 44
    assert clock.time - start == 2 * 10  # the record's io_timeout (from init), not ours
    start = clock.time
    joined(ls, disk, clock)  # now the record says 44
    assert clock.time - start == 2 * 44
    renewed = run_step(renew(ls, DeltaLease(record_of(disk, 1))), {DISK: disk}, clock)
    assert renewed.lease.record.io_timeout == 44


def test_timestamp_is_whole_seconds_of_monotonic_time() -> None:
    disk, clock = make_disk(), FakeClock(1234.99)
    assert joined(space(), disk, clock).last_success == 1234


def test_lockspace_validation() -> None:
    with pytest.raises(UsageError):
        space(host_id=0)
    with pytest.raises(UsageError):
        space(host_id=251, geometry=G4K)
    with pytest.raises(UsageError):
        space(io_timeout=0)
    with pytest.raises(UsageError):
        space(offset=100)
    with pytest.raises(UsageError):
        space(host_name="")
    with pytest.raises(UsageError):
        space(name="n" * 49)


# --- renew -----------------------------------------------------------------------------------


def test_renew_reads_whole_area_and_writes_sector_with_bitmap() -> None:
    disk, clock = make_disk(), FakeClock(1000.0)
    ls = space(host_id=2)
    lease = joined(ls, disk, clock)
    clock.advance(20)
    before = bytes(disk.data)
    bitmap = make_bitmap([1, 9, 2000])
    result, effects = drive(renew(ls, lease, bitmap=bitmap), disk, clock)

    assert [type(e) for e in effects] == [Read, Now, Write]
    read_effect, _, write_effect = effects
    assert isinstance(read_effect, Read) and isinstance(write_effect, Write)
    assert (read_effect.offset, read_effect.length, read_effect.timeout) == (0, MIB, 10)
    assert (write_effect.offset, len(write_effect.data)) == (512, 512)
    assert write_effect.timeout == 8 * 10 + 60  # host_dead_seconds
    assert result.area == before
    want = expected(owner_id=2, generation=1, name=b"hostA", timestamp=1040)
    assert sector_of(disk, 2) == want.pack() + bytes(56) + bitmap
    assert result.lease.record == want
    assert result.lease.last_success == 1040
    # the next renewal accepts what this one wrote
    clock.advance(20)
    again = run_step(renew(ls, result.lease), {DISK: disk}, clock)
    assert again.lease.last_success == 1060
    assert sector_of(disk, 2)[256:] == bytes(256)


def test_renew_writes_event_fields() -> None:
    disk, clock = make_disk(), FakeClock()
    ls = space()
    lease = joined(ls, disk, clock)
    with_event = run_step(renew(ls, lease, event=HostEvent(7, 3, 99)), {DISK: disk}, clock)
    rec = record_of(disk, 1)
    assert (rec.write_id, rec.write_generation, rec.write_timestamp) == (7, 3, 99)
    kept = run_step(renew(ls, with_event.lease, event=None), {DISK: disk}, clock)
    assert kept.lease.record.write_generation == 3
    cleared = run_step(renew(ls, kept.lease, event=NO_EVENT), {DISK: disk}, clock)
    assert cleared.lease.record.write_generation == 0


def test_renew_rejects_record_changed_by_another_host() -> None:
    disk, clock = make_disk(), FakeClock()
    ls = space()
    lease = joined(ls, disk, clock)
    put_record(disk, 1, lease.record.replace(timestamp=lease.record.timestamp + 5))
    with pytest.raises(RenewDiff) as info:
        run_step(renew(ls, lease), {DISK: disk}, clock)
    assert info.value.code == SANLK_RENEW_DIFF == -261
    # after a failed write we cannot know what landed: only ownership is checked
    result = run_step(renew(ls, lease, previous_ok=False), {DISK: disk}, clock)
    assert result.lease.generation == lease.generation


def test_renew_rejects_new_owner() -> None:
    disk, clock = make_disk(), FakeClock()
    ls = space(host_name="hostA")
    lease = joined(ls, disk, clock)
    clock.advance(1000)
    joined(space(host_name="hostB"), disk, clock)  # took over
    with pytest.raises(RenewOwner) as info:
        run_step(renew(ls, lease, previous_ok=False), {DISK: disk}, clock)
    assert info.value.code == SANLK_RENEW_OWNER == -260
    assert info.value.found is not None and info.value.found.resource == "hostB"


def test_renew_owner_check_covers_all_48_name_bytes() -> None:
    disk, clock = make_disk(), FakeClock()
    ls = space()
    lease = joined(ls, disk, clock)
    stale = lease.record.replace(resource_name=field(b"hostA\0x"))
    put_record(disk, 1, stale)
    with pytest.raises(RenewOwner):
        run_step(renew(ls, lease, previous_ok=False), {DISK: disk}, clock)


def test_renew_rejects_generation_change() -> None:
    disk, clock = make_disk(), FakeClock()
    ls = space()
    lease = joined(ls, disk, clock)
    put_record(disk, 1, lease.record.replace(owner_generation=5))
    with pytest.raises(RenewOwner):
        run_step(renew(ls, lease, previous_ok=False), {DISK: disk}, clock)


def test_renew_replaces_changed_io_timeout() -> None:
    disk, clock = make_disk(), FakeClock()
    ls = space(io_timeout=10)
    lease = joined(ls, disk, clock)
    put_record(disk, 1, lease.record.replace(io_timeout=20))
    result = run_step(renew(ls, lease, previous_ok=False), {DISK: disk}, clock)
    assert result.lease.record.io_timeout == 10


def test_renew_reports_corrupt_record_where_it_is() -> None:
    disk, clock = make_disk(), FakeClock()
    ls = space(host_id=3)
    lease = joined(ls, disk, clock)
    disk.data[3 * 512 - 512 + 130] ^= 0xFF  # a byte of the host name
    with pytest.raises(ChecksumMismatch) as info:
        run_step(renew(ls, lease), {DISK: disk}, clock)
    assert info.value.code == SANLK_LEADER_CHECKSUM
    assert (info.value.disk, info.value.offset) == (DISK, 1024)


def test_write_renewal_from_area_read_separately() -> None:
    disk, clock = make_disk(), FakeClock()
    ls = space()
    lease = joined(ls, disk, clock)
    area = run_step(read_area(ls), {DISK: disk}, clock)
    assert len(area) == MIB
    renewed = run_step(write_renewal(ls, lease, area), {DISK: disk}, clock)
    assert renewed.last_success == int(clock.time)


def test_lease_must_match_lockspace_host_id() -> None:
    disk, clock = make_disk(), FakeClock()
    lease = joined(space(host_id=1), disk, clock)
    with pytest.raises(UsageError):
        run_step(renew(space(host_id=2), lease), {DISK: disk}, clock)
    with pytest.raises(UsageError):
        run_step(release(space(host_id=2), lease), {DISK: disk}, clock)


# --- release ---------------------------------------------------------------------------------


def test_release_writes_timestamp_zero_and_keeps_the_rest() -> None:
    disk, clock = make_disk(), FakeClock(1000.0)
    ls = space()
    lease = joined(ls, disk, clock)
    clock.advance(20)
    lease = run_step(
        renew(ls, lease, bitmap=make_bitmap([2]), event=HostEvent(1, 2, 3)), {DISK: disk}, clock
    ).lease
    start = clock.time
    _, effects = drive(release(ls, lease), disk, clock)
    assert [type(e) for e in effects] == [Write]
    assert clock.time == start
    want = expected(owner_id=1, generation=1, name=b"hostA", timestamp=0, write=(1, 2, 3))
    assert sector_of(disk, 1) == want.pack() + bytes(312)  # bitmap cleared
    # free: the next host joins after the short delay only
    start = clock.time
    other = joined(space(host_name="hostB"), disk, clock)
    assert clock.time - start == 20
    assert other.generation == 2


# --- bitmaps ---------------------------------------------------------------------------------


def test_bitmap_helpers() -> None:
    bitmap = make_bitmap([1, 9, 2000])
    assert len(bitmap) == 256
    assert bitmap[0] == 0x01 and bitmap[1] == 0x01 and bitmap[249] == 0x80
    assert [h for h in range(1, 2049) if bit_is_set(bitmap, h)] == [1, 9, 2000]
    with pytest.raises(UsageError):
        make_bitmap([0])


def test_requesting_hosts_snapshot() -> None:
    disk, clock = make_disk(), FakeClock()
    for host, bits in ((2, [1]), (3, [4]), (5, [1, 3])):
        ls = space(host_id=host, host_name=f"h{host}")
        run_step(renew(ls, joined(ls, disk, clock), bitmap=make_bitmap(bits)), {DISK: disk}, clock)
    area = bytes(disk.data)
    assert requesting_hosts(area, G512, 1) == [2, 5]
    assert requesting_hosts(area, G512, 4) == [3]


# --- host view -------------------------------------------------------------------------------


class Host:
    """Another host in the lockspace, with its own clock, driving its own steps."""

    def __init__(self, disk: FakeDisk, host_id: int, start: float) -> None:
        self.disk = disk
        self.clock = FakeClock(start)
        self.ls = space(host_id=host_id, host_name=f"host{host_id}")
        self.lease = run_step(acquire(self.ls), {DISK: disk}, self.clock)

    def renew(self, bitmap: bytes = b"", event: HostEvent = NO_EVENT) -> None:
        self.clock.advance(20)
        step = renew(self.ls, self.lease, bitmap=bitmap, event=event)
        self.lease = run_step(step, {DISK: self.disk}, self.clock).lease

    def release(self) -> None:
        run_step(release(self.ls, self.lease), {DISK: self.disk}, self.clock)


def test_host_states_over_time_io_10() -> None:
    disk = make_disk()
    me = Host(disk, 1, 100.0)
    live = Host(disk, 2, 7000.0)  # clocks differ: timestamps are only compared for equality
    Host(disk, 3, 300.0)  # joined, then never renews
    view = HostView(me.ls)
    assert view.state(2, 0) == HostState.UNKNOWN  # never looked

    view.update(bytes(disk.data), 1000)
    assert [s.host_id for s in view.known()] == [1, 2, 3]  # the hosts with a record
    assert [s.generation for s in view.known()] == [view.status(i).generation for i in (1, 2, 3)]
    assert view.state(1, 1000) == HostState.LIVE  # us
    assert view.state(2, 1000) == HostState.UNKNOWN  # no change seen yet
    assert view.state(4, 1000) == HostState.FREE
    live.renew()
    view.update(bytes(disk.data), 1020)
    assert view.state(2, 1020) == HostState.LIVE
    assert view.state(3, 1020) == HostState.UNKNOWN

    # host 2 goes silent after its change at 1020: LIVE up to 80 s, FAIL to 140 s, then DEAD
    for t in range(1040, 1300, 20):
        view.update(bytes(disk.data), t)
    assert view.state(2, 1100) == HostState.LIVE
    assert view.state(2, 1101) == HostState.FAIL
    assert view.state(2, 1160) == HostState.FAIL
    assert view.state(2, 1161) == HostState.DEAD
    # host 3, silent since our first look at 1000: UNKNOWN for 80 s, FAIL for 60, then DEAD
    assert view.state(3, 1080) == HostState.UNKNOWN
    assert view.state(3, 1081) == HostState.FAIL
    assert view.state(3, 1140) == HostState.FAIL
    assert view.state(3, 1141) == HostState.DEAD

    live.renew()  # it comes back
    view.update(bytes(disk.data), 1300)
    assert view.state(2, 1300) == HostState.LIVE
    live.release()
    view.update(bytes(disk.data), 1320)
    assert view.state(2, 1320) == HostState.FREE

    st = view.status(2)
    assert (st.first_check, st.last_check, st.last_live) == (1000, 1320, 1320)
    assert (st.owner_id, st.generation, st.timestamp, st.name) == (2, 1, 0, "host2")
    assert st.io_timeout == 10


def test_host_state_uses_that_hosts_io_timeout() -> None:
    disk = make_disk()
    me = Host(disk, 1, 0.0)
    other = Host(disk, 2, 0.0)
    put_record(disk, 2, other.lease.record.replace(io_timeout=5))
    view = HostView(me.ls)
    view.update(bytes(disk.data), 10)
    assert view.state(2, 10 + 40) == HostState.UNKNOWN
    assert view.state(2, 10 + 41) == HostState.FAIL
    assert view.state(2, 10 + 101) == HostState.DEAD


def test_is_alive() -> None:
    disk = make_disk()
    me = Host(disk, 1, 0.0)
    other = Host(disk, 2, 0.0)
    view = HostView(me.ls)
    assert view.is_alive(2, 1, 10**6)  # never checked: assume alive
    assert view.is_alive(9999, 1, 0)  # no such host: assume alive
    view.update(bytes(disk.data), 100)
    assert view.is_alive(2, 1, 240)
    assert not view.is_alive(2, 1, 241)  # no change seen for > host_dead (140)
    other.renew()
    view.update(bytes(disk.data), 300)
    assert view.is_alive(2, 1, 440)
    assert not view.is_alive(2, 1, 441)
    assert not view.is_alive(2, 0, 300)  # it holds a newer generation than asked about
    other.release()
    view.update(bytes(disk.data), 320)
    assert not view.is_alive(2, 1, 320)  # free


def test_bad_record_still_counts_as_alive_when_it_changes() -> None:
    disk = make_disk()
    me = Host(disk, 1, 0.0)
    other = Host(disk, 2, 0.0)
    view = HostView(me.ls)
    view.update(bytes(disk.data), 10)
    bad = dataclasses.replace(other.lease.record, space_name=field(b"ELSEWHERE"), timestamp=77)
    put_record(disk, 2, bad)
    view.update(bytes(disk.data), 30)
    st = view.status(2)
    assert (st.timestamp, st.last_live, st.name) == (77, 30, "host2")
    assert view.state(2, 30) == HostState.LIVE


def test_notices_follow_the_triple_changed_rule() -> None:
    disk = make_disk()
    me = Host(disk, 1, 0.0)
    sender = Host(disk, 2, 500.0)
    bystander = Host(disk, 3, 0.0)
    view = HostView(me.ls)  # set_bitmap_seconds = 6 * 10
    view.update(bytes(disk.data), 0)

    sender.renew(bitmap=make_bitmap([1]), event=HostEvent(4, 5, 6))
    bystander.renew(bitmap=make_bitmap([2]))
    notices = view.update(bytes(disk.data), 20)
    message = HostMessage(from_host_id=2, from_generation=1, event=HostEvent(4, 5, 6))
    assert notices == Notices(events=(message,), requests=(2,))
    # no change of sender's record: nothing new, although the bit is still set
    assert view.update(bytes(disk.data), 40) == Notices()
    # changed again within set_bitmap_seconds: the event again, the request not
    sender.renew(bitmap=make_bitmap([1]), event=HostEvent(4, 5, 6))
    assert view.update(bytes(disk.data), 60) == Notices(events=(message,))
    sender.renew(bitmap=make_bitmap([1]))
    assert view.update(bytes(disk.data), 81) == Notices(requests=(2,))
    sender.renew()
    assert view.update(bytes(disk.data), 200) == Notices()


def test_our_notification_bits_expire() -> None:
    view = HostView(space(), set_bitmap_seconds=60)
    view.notify(5, now=100)
    view.notify(1, now=100)  # ourselves: never set
    assert view.renewal_bitmap(160) == make_bitmap([5])
    assert view.renewal_bitmap(161) == make_bitmap([])
    view.notify(5, now=170)
    assert view.renewal_bitmap(171) == make_bitmap([5])
    with pytest.raises(UsageError):
        view.notify(2001, now=0)


# --- the real sanlock ------------------------------------------------------------------------

SANLOCK = shutil.which("sanlock") or (
    "/usr/sbin/sanlock" if Path("/usr/sbin/sanlock").exists() else None
)


def sanlock(*args: str) -> str:
    """Run ``sanlock ARGS``; its stdout. Fails (in CI) or skips when sanlock is missing."""
    if SANLOCK is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail("sanlock is not installed (apt-get install sanlock)")
        pytest.skip("sanlock is not installed")
    done = subprocess.run(
        [SANLOCK, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"sanlock {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def disk_from_file(path: Path) -> FakeDisk:
    disk = FakeDisk(DISK, MIB)
    disk.write(0, path.read_bytes()[:MIB])
    return disk


def sanlock_lockspace(tmp_path: Path) -> Path:
    path = tmp_path / "lockspace.img"
    with path.open("wb") as f:
        f.truncate(MIB)
    # -o 1: sanlock really sleeps 2 * io_timeout in acquire_id; keep it to 2 s
    sanlock("direct", "init", "-s", f"LS:0:{path}:0", "-o", "1")
    return path


@pytest.mark.interop
def test_sanlock_written_lease_is_accepted(tmp_path: Path) -> None:
    path = sanlock_lockspace(tmp_path)
    sanlock("direct", "acquire_id", "-s", f"LS:1:{path}:0", "-e", "hostA", "-o", "1")
    ls = space(host_id=1, host_name="hostA", io_timeout=1)

    disk, clock = disk_from_file(path), FakeClock(10_000.0)
    record = run_step(read_delta(ls), {DISK: disk}, clock)
    assert (record.owner_id, record.owner_generation, record.resource, record.io_timeout) == (
        1,
        1,
        "hostA",
        1,
    )
    renewed = run_step(renew(ls, DeltaLease(record)), {DISK: disk}, clock)
    assert renewed.lease.last_success == 10_000
    run_step(release(ls, renewed.lease), {DISK: disk}, clock)
    assert record_of(disk, 1) == record.replace(timestamp=0)

    disk = disk_from_file(path)  # sanlock's record, still held: fast reacquire by name
    lease = run_step(acquire(ls), {DISK: disk}, clock)
    assert clock.time == 10_000 + 2 * 1
    assert lease.generation == 2


@pytest.mark.interop
def test_our_lease_is_accepted_by_sanlock(tmp_path: Path) -> None:
    path = sanlock_lockspace(tmp_path)
    ls = space(host_id=1, host_name="hostA", io_timeout=1)
    disk, clock = disk_from_file(path), FakeClock(1234.0)
    lease = run_step(acquire(ls), {DISK: disk}, clock)
    lease = run_step(renew(ls, lease), {DISK: disk}, clock).lease
    path.write_bytes(bytes(disk.data))

    out = sanlock("direct", "read_leader", "-s", f"LS:1:{path}:0")
    assert "read_leader done 0" in out
    fields = dict(line.split(" ", 1) for line in out.splitlines()[1:])
    assert fields["owner_id"] == "1" and fields["owner_generation"] == "1"
    assert fields["resource_name"] == "hostA" and fields["timestamp"] == "1236"
    # sic: sanlock 3.8.5 prints "rewew_id done 0"
    assert "_id done 0" in sanlock("direct", "renew_id", "-s", f"LS:1:{path}:0", "-o", "1")
    assert "release_id done 0" in sanlock("direct", "release_id", "-s", f"LS:1:{path}:0")
    freed = record_of(disk_from_file(path), 1)
    assert (freed.timestamp, freed.owner_generation, freed.resource) == (0, 1, "hostA")


@pytest.mark.interop
def test_name_quirk_matches_sanlock(tmp_path: Path) -> None:
    path = sanlock_lockspace(tmp_path)
    spec = f"LS:1:{path}:0"
    sanlock("direct", "acquire_id", "-s", spec, "-e", "averyveryverylonghostname", "-o", "1")
    sanlock("direct", "release_id", "-s", spec)
    before = disk_from_file(path)
    sanlock("direct", "acquire_id", "-s", spec, "-e", "hB", "-o", "1")
    theirs = record_of(disk_from_file(path), 1)

    ours = run_step(acquire(space(host_name="hB", io_timeout=1)), {DISK: before}, FakeClock())
    assert ours.record.resource_name == theirs.resource_name == field(b"hB\0ryveryverylonghostname")
    assert ours.record.owner_generation == theirs.owner_generation == 2
