"""Properties of the on-disk records (DESIGN.md, "Tests").

* every record round-trips, for all field values in range (names: any 48 bytes);
* a sealed record passes its own check;
* arbitrary bytes, of any length and at any offset, given to every unpacker and checker raise
  only our typed errors (SyncManagerError), never struct.error, IndexError, AssertionError...;
* one flipped byte in the checksummed part of a sealed leader always fails the check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from hypothesis import assume, given
from hypothesis import strategies as st

from sync_manager.errors import OnDiskError, SyncManagerError
from sync_manager.ondisk.areas import ResourceArea, bitmap_hosts
from sync_manager.ondisk.checksum import sanlock_checksum
from sync_manager.ondisk.dblock import ModeBlock, PaxosDblock
from sync_manager.ondisk.leader import (
    DELTA_MAGIC,
    DELTA_VERSION,
    LEADER_CHECKSUM_LEN,
    PAXOS_MAGIC,
    PAXOS_VERSION,
    LeaderRecord,
)
from sync_manager.ondisk.request import RequestRecord

U16 = st.integers(0, 2**16 - 1)
U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
NAMES = st.binary(min_size=48, max_size=48)
# Names as sanlock writes them: up to 48 bytes without NUL, NUL-padded.
CLEAN_NAMES = st.binary(min_size=1, max_size=48).filter(lambda b: b"\0" not in b)


def leaders(
    magic: st.SearchStrategy[int] = U32, version: st.SearchStrategy[int] = U32
) -> st.SearchStrategy[LeaderRecord]:
    return st.builds(
        LeaderRecord,
        magic=magic, version=version, flags=U32, sector_size=U32, num_hosts=U64,
        max_hosts=U64, owner_id=U64, owner_generation=U64, lver=U64, space_name=NAMES,
        resource_name=NAMES, timestamp=U64, unused1=U64, checksum=U32, unused2=U16,
        io_timeout=U16, write_id=U64, write_generation=U64, write_timestamp=U64,
    )  # fmt: skip


def _with_major(major: int) -> st.SearchStrategy[int]:
    return st.integers(0, 0xFFFF).map(lambda minor: major | minor)


DELTA_LEADERS = leaders(st.just(DELTA_MAGIC), _with_major(DELTA_VERSION & 0xFFFF0000))
PAXOS_LEADERS = leaders(st.just(PAXOS_MAGIC), _with_major(PAXOS_VERSION & 0xFFFF0000))

DBLOCKS = st.builds(
    PaxosDblock, mbal=U64, bal=U64, inp=U64, inp2=U64, inp3=U64, lver=U64, checksum=U32, flags=U32
)
MODE_BLOCKS = st.builds(ModeBlock, flags=U32, generation=U64)
REQUESTS = st.builds(RequestRecord, magic=U32, version=U32, lver=U64, force_mode=U32)

OFFSETS = st.integers(-600, 600)


# --- round trips -----------------------------------------------------------------------------


@given(leaders())
def test_leader_round_trip(record: LeaderRecord) -> None:
    raw = record.pack()
    assert len(raw) == 200
    assert LeaderRecord.unpack(raw) == record


@given(st.binary(min_size=200, max_size=200))
def test_leader_bytes_round_trip(raw: bytes) -> None:
    # the leader has no padding: any 200 bytes come back unchanged
    assert LeaderRecord.unpack(raw).pack() == raw


@given(DBLOCKS)
def test_dblock_round_trip(dblock: PaxosDblock) -> None:
    raw = dblock.pack()
    assert len(raw) == 56
    assert PaxosDblock.unpack(raw) == dblock


@given(st.binary(min_size=56, max_size=56))
def test_dblock_bytes_round_trip(raw: bytes) -> None:
    assert PaxosDblock.unpack(raw).pack() == raw


@given(MODE_BLOCKS)
def test_mode_block_round_trip(mode: ModeBlock) -> None:
    raw = mode.pack()
    assert len(raw) == 16
    assert raw[4:8] == bytes(4)
    assert ModeBlock.unpack(raw) == mode


@given(REQUESTS)
def test_request_round_trip(request: RequestRecord) -> None:
    raw = request.pack()
    assert len(raw) == 24
    assert raw[20:24] == bytes(4)
    assert RequestRecord.unpack(raw) == request


@given(st.binary(min_size=24, max_size=24))
def test_request_bytes_round_trip_but_padding(raw: bytes) -> None:
    assert RequestRecord.unpack(raw).pack() == raw[:20] + bytes(4)


@given(leaders(), st.binary(max_size=700), st.binary(max_size=300))
def test_leader_unpack_at_offset(record: LeaderRecord, before: bytes, after: bytes) -> None:
    data = before + record.pack() + after
    assert LeaderRecord.unpack(data, len(before)) == record
    assert LeaderRecord.unpack(memoryview(data), len(before)) == record


# --- sealed records pass their own check -----------------------------------------------------


@given(DELTA_LEADERS)
def test_sealed_delta_passes(record: LeaderRecord) -> None:
    sealed = record.sealed()
    assert sealed.checksum == sanlock_checksum(sealed.pack()[:168])
    sealed.check_delta(sealed.space_name)
    sealed.check_delta()


@given(PAXOS_LEADERS, st.integers(0, 2**64 - 1))
def test_sealed_paxos_passes(record: LeaderRecord, host_id: int) -> None:
    sealed = record.sealed()
    sealed.check_paxos(sealed.space_name, sealed.resource_name, min(host_id, sealed.num_hosts))
    sealed.check_paxos()


@given(DBLOCKS)
def test_sealed_dblock_passes(dblock: PaxosDblock) -> None:
    sealed = dblock.sealed()
    sealed.check()
    assert PaxosDblock.unpack(sealed.pack()) == sealed


@given(DELTA_LEADERS, st.text(min_size=1, max_size=12).filter(lambda t: "\0" not in t))
def test_sealed_delta_passes_with_clean_name(record: LeaderRecord, name: str) -> None:
    raw = name.encode()[:48]
    sealed = record.replace(space_name=raw.ljust(48, b"\0"))
    sealed.check_delta(raw)


# --- arbitrary bytes only ever raise our errors ----------------------------------------------


def _only_typed_errors(action: Callable[[], object]) -> None:
    try:
        action()
    except SyncManagerError as err:
        # typed, with a sanlock code and a message
        assert err.code < 0
        assert str(err)


@st.composite
def leader_bytes(draw: st.DrawFn) -> bytes:
    """Mostly-plausible leaders (so the checks get past the magic), or any bytes at all."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=400))
    record = draw(st.one_of(DELTA_LEADERS, PAXOS_LEADERS, leaders()))
    if draw(st.booleans()):
        record = record.sealed()
    raw = bytearray(record.pack())
    for index, value in draw(st.lists(st.tuples(st.integers(0, 199), st.integers(0, 255)))):
        raw[index] = value
    cut = draw(st.integers(0, 200))
    return bytes(raw[:cut] if draw(st.booleans()) else raw)


@given(leader_bytes(), OFFSETS, NAMES | CLEAN_NAMES | st.none(), NAMES | st.none(), U64)
def test_leader_unpack_and_checks_raise_only_typed_errors(
    data: bytes, offset: int, space: bytes | None, resource: bytes | None, host_id: int
) -> None:
    def run() -> None:
        record = LeaderRecord.unpack(data, offset if offset < len(data) else 0)
        for check in (
            lambda: record.check_delta(space),
            lambda: record.check_paxos(space, resource, host_id),
            lambda: record.check_paxos(record.space_name, record.resource_name, host_id),
            lambda: record.check_delta(record.space_name),
        ):
            _only_typed_errors(check)

    _only_typed_errors(run)
    _only_typed_errors(lambda: LeaderRecord.unpack(data, offset))
    _only_typed_errors(lambda: LeaderRecord.unpack(memoryview(data), offset))


@given(st.binary(max_size=200), OFFSETS)
def test_dblock_unpack_and_check_raise_only_typed_errors(data: bytes, offset: int) -> None:
    _only_typed_errors(lambda: PaxosDblock.unpack(data, offset).check())
    _only_typed_errors(lambda: PaxosDblock.unpack(data).check())


@given(st.binary(max_size=200), OFFSETS)
def test_mode_block_unpack_raises_only_typed_errors(data: bytes, offset: int) -> None:
    _only_typed_errors(lambda: ModeBlock.unpack(data, offset).shared)
    _only_typed_errors(lambda: ModeBlock.unpack(data))


@given(st.binary(max_size=100), OFFSETS)
def test_request_unpack_and_check_raise_only_typed_errors(data: bytes, offset: int) -> None:
    _only_typed_errors(lambda: RequestRecord.unpack(data, offset).check())
    _only_typed_errors(lambda: RequestRecord.unpack(data).check())


@given(st.binary(max_size=1024))
def test_bitmap_raises_only_typed_errors(data: bytes) -> None:
    _only_typed_errors(lambda: bitmap_hosts(data))


@st.composite
def resource_area_bytes(draw: st.DrawFn, sector_size: int) -> bytes:
    """Any length up to 6 sectors; often a leader with a small num_hosts, random patches."""
    size = draw(st.integers(0, 6 * sector_size + 100))
    data = bytearray(size)
    if size >= 200 and draw(st.booleans()):
        record = draw(leaders(magic=st.sampled_from([PAXOS_MAGIC, draw(U32)])))
        num_hosts = draw(st.one_of(st.integers(0, 8), U64))
        data[:200] = dataclasses.replace(record, num_hosts=num_hosts).pack()
    for start, chunk in draw(st.lists(st.tuples(st.integers(0, size), st.binary(max_size=64)))):
        data[start : start + len(chunk)] = chunk
    return bytes(data[:size])


def _check_area(data: bytes, sector_size: int) -> None:
    def run() -> None:
        area = ResourceArea.unpack(data, sector_size)
        assert len(area.dblocks) == len(area.modes) <= area.leader.num_hosts
        assert len(area.dblocks) <= max(len(data) // sector_size - 2, 0)
        _only_typed_errors(lambda: area.leader.check_paxos(b"LS", b"R1", 1))
        _only_typed_errors(area.request.check)
        for dblock in area.dblocks:
            _only_typed_errors(dblock.check)
        list(area.shared_holders())

    _only_typed_errors(run)


@given(resource_area_bytes(512))
def test_resource_area_512_raises_only_typed_errors(data: bytes) -> None:
    _check_area(data, 512)


@given(resource_area_bytes(4096))
def test_resource_area_4096_raises_only_typed_errors(data: bytes) -> None:
    _check_area(data, 4096)


# --- one flipped byte is always caught -------------------------------------------------------


def _caught(check: Callable[[], None]) -> bool:
    """Whether ``check`` refused the record with one of our on-disk errors."""
    try:
        check()
    except OnDiskError:
        return True
    return False


def _flip(record: LeaderRecord, index: int, mask: int) -> LeaderRecord:
    raw = bytearray(record.pack())
    raw[index] ^= mask
    return LeaderRecord.unpack(bytes(raw))


@given(DELTA_LEADERS, st.integers(0, LEADER_CHECKSUM_LEN - 1), st.integers(1, 255))
def test_flipped_byte_fails_check_delta(record: LeaderRecord, index: int, mask: int) -> None:
    sealed = record.sealed()
    flipped = _flip(sealed, index, mask)
    assert _caught(lambda: flipped.check_delta(sealed.space_name)), f"byte {index} ^ {mask:#x}"
    assert _caught(flipped.check_delta), f"byte {index} ^ {mask:#x}"


@given(PAXOS_LEADERS, st.integers(0, LEADER_CHECKSUM_LEN - 1), st.integers(1, 255), U64)
def test_flipped_byte_fails_check_paxos(
    record: LeaderRecord, index: int, mask: int, host_id: int
) -> None:
    sealed = record.sealed()
    host_id = min(host_id, sealed.num_hosts)
    flipped = _flip(sealed, index, mask)
    assert _caught(lambda: flipped.check_paxos(sealed.space_name, sealed.resource_name, host_id)), (
        f"byte {index} ^ {mask:#x}"
    )
    assert _caught(flipped.check_paxos), f"byte {index} ^ {mask:#x}"


@given(PAXOS_LEADERS, st.integers(172, 199), st.integers(1, 255))
def test_flipped_byte_after_the_checksum_is_not_covered(
    record: LeaderRecord, index: int, mask: int
) -> None:
    # unused2, io_timeout and write_* are outside the checksum (spec 3): still valid
    sealed = record.sealed()
    _flip(sealed, index, mask).check_paxos(sealed.space_name, sealed.resource_name)


@given(DBLOCKS, st.integers(0, 47), st.integers(1, 255))
def test_flipped_byte_fails_dblock_check(dblock: PaxosDblock, index: int, mask: int) -> None:
    sealed = dblock.sealed()
    raw = bytearray(sealed.pack())
    raw[index] ^= mask
    flipped = PaxosDblock.unpack(bytes(raw))
    assume(not flipped.is_blank)  # a block flipped to all-zero fields reads as never written
    assert _caught(flipped.check), f"byte {index} ^ {mask:#x}"


# --- the checksum is CRC-32C with sanlock's seed ---------------------------------------------


def _reference(data: bytes) -> int:
    """Bitwise CRC-32C update loop, seed ~1, no final XOR (spec 3), independent of the table."""
    crc = 0xFFFFFFFE
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc


@given(st.binary(max_size=300))
def test_checksum_matches_bitwise_reference(data: bytes) -> None:
    assert sanlock_checksum(data) == _reference(data)
