"""Layouts of the two kinds of lease area: a lockspace and a resource (paxos) lease.

Lockspace (spec/sanlock-ondisk.md 4.2): host id ``N``'s delta lease is the leader record at
sector ``N-1``; bytes 256..511 of that sector are the host's request bitmap (one bit per host).

Resource (4.3): sector 0 leader, sector 1 request record, sector ``2 + (H-1)`` host ``H``'s
dblock and mode block, sector 2002 the LVB.

The init images are byte-for-byte what ``sanlock direct init`` writes (4.10), including the
crash-safe two-step write of a lockspace: the whole area first with host 1's magic zeroed, then
sector 0 alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sync_manager.errors import (
    SANLK_LEADER_SECTORSIZE,
    CorruptRecord,
    TruncatedArea,
    UsageError,
)
from sync_manager.ondisk.dblock import MBLOCK_OFFSET, ModeBlock, PaxosDblock
from sync_manager.ondisk.geometry import Geometry
from sync_manager.ondisk.leader import (
    DELTA_MAGIC,
    DELTA_VERSION,
    LEADER_SIZE,
    PAXOS_CLEAR_MAGIC,
    PAXOS_MAGIC,
    PAXOS_VERSION,
    LeaderRecord,
)
from sync_manager.ondisk.names import NAME_LEN, encode_name
from sync_manager.ondisk.request import RequestRecord

__all__ = [
    "BITMAP_OFFSET",
    "BITMAP_SIZE",
    "FIRST_HOST_SECTOR",
    "LVB_SECTOR",
    "REQUEST_SECTOR",
    "LockspaceInit",
    "ResourceArea",
    "bitmap_hosts",
    "dblock_read_sectors",
    "delta_offset",
    "host_sector_offset",
    "lockspace_init",
    "pack_delta_sector",
    "resource_init",
    "written_hosts",
]

BITMAP_OFFSET = 256
BITMAP_SIZE = 256
LVB_SECTOR = 2002
REQUEST_SECTOR = 1
FIRST_HOST_SECTOR = 2


# --- lockspace -------------------------------------------------------------------------------


def delta_offset(host_id: int, geometry: Geometry) -> int:
    """Byte offset of host ``host_id``'s delta lease from the lockspace start."""
    _check_host_id(host_id, geometry.max_hosts)
    return (host_id - 1) * geometry.sector_size


def pack_delta_sector(leader: LeaderRecord, sector_size: int, bitmap: bytes = b"") -> bytes:
    """A whole delta-lease sector: the record, zeros, the bitmap at byte 256, zeros."""
    if len(bitmap) > BITMAP_SIZE:
        raise UsageError(f"bitmap is {len(bitmap)} bytes, at most {BITMAP_SIZE} fit")
    sector = bytearray(sector_size)
    sector[:LEADER_SIZE] = leader.pack()
    sector[BITMAP_OFFSET : BITMAP_OFFSET + len(bitmap)] = bitmap
    return bytes(sector)


def bitmap_hosts(sector: bytes | memoryview) -> list[int]:
    """Host ids whose bit is set in a delta-lease sector's bitmap (bit ``H-1``, LSB first)."""
    if len(sector) < BITMAP_OFFSET + BITMAP_SIZE:
        raise TruncatedArea(
            offset=BITMAP_OFFSET,
            expected=BITMAP_OFFSET + BITMAP_SIZE,
            found=len(sector),
            record="delta lease bitmap",
        )
    bits = sector[BITMAP_OFFSET : BITMAP_OFFSET + BITMAP_SIZE]
    return [i * 8 + b + 1 for i, byte in enumerate(bits) if byte for b in range(8) if byte >> b & 1]


@dataclass(frozen=True, slots=True)
class LockspaceInit:
    """The two writes that initialize a lockspace, in order (crash-safe commit)."""

    area: bytes  # the whole area, host 1's magic zeroed
    first_sector: bytes  # then sector 0 alone, with the real magic


def lockspace_init(name: str, geometry: Geometry, io_timeout: int) -> LockspaceInit:
    """The image ``sanlock direct init -s NAME:0:PATH:OFF -o io_timeout`` writes."""
    if not 0 <= io_timeout <= 0xFFFF:
        raise UsageError(f"io_timeout {io_timeout} out of range 0..65535")
    record = LeaderRecord(
        magic=DELTA_MAGIC,
        version=DELTA_VERSION,
        flags=geometry.align_flag,
        sector_size=geometry.sector_size,
        num_hosts=0,
        max_hosts=1,  # historical: delta leases record 1 here
        owner_id=0,
        owner_generation=0,
        lver=0,
        space_name=encode_name(name, what="lockspace name"),
        resource_name=bytes(NAME_LEN),
        timestamp=0,
        io_timeout=io_timeout,
    ).sealed()
    sector = pack_delta_sector(record, geometry.sector_size)
    area = bytearray(geometry.align_size)
    for host in range(geometry.max_hosts):
        start = host * geometry.sector_size
        area[start : start + geometry.sector_size] = sector
    area[0:4] = bytes(4)  # invalid until the final write of sector 0
    return LockspaceInit(area=bytes(area), first_sector=sector)


# --- resource --------------------------------------------------------------------------------


def host_sector_offset(host_id: int, geometry: Geometry) -> int:
    """Byte offset of host ``host_id``'s dblock sector from the resource lease start."""
    _check_host_id(host_id, geometry.max_hosts)
    return (FIRST_HOST_SECTOR + host_id - 1) * geometry.sector_size


def dblock_read_sectors(num_hosts: int) -> int:
    """Sectors a ballot reads: ``num_hosts + 2`` rounded up to a power of two, as sanlock."""
    need = num_hosts + FIRST_HOST_SECTOR
    return 1 << (need - 1).bit_length()


def resource_init(
    space: str,
    name: str,
    geometry: Geometry,
    num_hosts: int = 0,
    *,
    clear: bool = False,
    now: int = 0,
) -> bytes:
    """The image ``sanlock direct init -r SPACE:NAME:PATH:OFF [-n num_hosts] [-z 1]`` writes.

    ``num_hosts`` 0 or above the geometry's max means max_hosts. With ``clear`` the leader gets
    the PAXOS_CLEAR magic and ``write_timestamp = now``, which makes the lease unusable.
    """
    if num_hosts <= 0 or num_hosts > geometry.max_hosts:
        num_hosts = geometry.max_hosts
    leader = LeaderRecord(
        magic=PAXOS_CLEAR_MAGIC if clear else PAXOS_MAGIC,
        version=PAXOS_VERSION,
        flags=geometry.align_flag,
        sector_size=geometry.sector_size,
        num_hosts=num_hosts,
        max_hosts=geometry.max_hosts,
        owner_id=0,
        owner_generation=0,
        lver=0,
        space_name=encode_name(space, what="lockspace name"),
        resource_name=encode_name(name, what="resource name"),
        timestamp=0,
        write_timestamp=now if clear else 0,
    ).sealed()
    area = bytearray(geometry.align_size)
    area[:LEADER_SIZE] = leader.pack()
    request = RequestRecord().pack()
    start = REQUEST_SECTOR * geometry.sector_size
    area[start : start + len(request)] = request
    return bytes(area)


@dataclass(frozen=True, slots=True)
class ResourceArea:
    """A decoded resource lease: leader, request record and each host's blocks.

    ``dblocks[i]`` and ``modes[i]`` belong to host id ``i + 1``; only the hosts covered by the
    bytes given (at most ``leader.num_hosts``) are decoded.
    """

    leader: LeaderRecord
    request: RequestRecord
    dblocks: tuple[PaxosDblock, ...]
    modes: tuple[ModeBlock, ...]

    @classmethod
    def unpack(cls, data: bytes | memoryview, sector_size: int) -> ResourceArea:
        """Decode a resource area read from its start (at least two sectors)."""
        if sector_size not in (512, 4096):
            raise CorruptRecord(
                record="resource lease",
                expected="sector size 512 or 4096",
                found=sector_size,
                code=SANLK_LEADER_SECTORSIZE,
            )
        if len(data) < FIRST_HOST_SECTOR * sector_size:
            raise TruncatedArea(
                offset=0,
                expected=FIRST_HOST_SECTOR * sector_size,
                found=len(data),
                record="resource lease",
            )
        leader = LeaderRecord.unpack(data)
        request = RequestRecord.unpack(data, REQUEST_SECTOR * sector_size)
        room = len(data) // sector_size - FIRST_HOST_SECTOR
        hosts = min(leader.num_hosts, room)
        dblocks = []
        modes = []
        for index in range(hosts):
            start = (FIRST_HOST_SECTOR + index) * sector_size
            dblocks.append(PaxosDblock.unpack(data, start))
            modes.append(ModeBlock.unpack(data, start + MBLOCK_OFFSET))
        return cls(leader, request, tuple(dblocks), tuple(modes))

    def shared_holders(self) -> Iterator[tuple[int, ModeBlock]]:
        """(host id, mode block) of every host holding the lease in shared mode."""
        for index, mode in enumerate(self.modes):
            if mode.shared:
                yield index + 1, mode


def _check_host_id(host_id: int, max_hosts: int) -> None:
    if not 1 <= host_id <= max_hosts:
        raise UsageError(f"host id {host_id} out of range 1..{max_hosts}")


_CHUNK_SECTORS = 64  # blank runs are skipped this many sectors at a time


def written_hosts(area: bytes, geometry: Geometry, count: int) -> Iterator[int]:
    """The host indexes (0-based) among the first ``count`` host sectors of a paxos lease
    ``area`` whose sector holds any non-zero byte, in order.

    A sector that was never written is all zeros: a blank dblock and mode block, which no
    reader acts on. Skipping blank runs with C-speed comparisons instead of decoding 2000
    blocks is what makes reading a lease with few active hosts cheap.
    """
    size = geometry.sector_size
    first = FIRST_HOST_SECTOR * size
    count = max(0, min(count, (len(area) - first) // size))
    chunk = _CHUNK_SECTORS * size
    blank_chunk, blank_sector = bytes(chunk), bytes(size)
    for base in range(0, count, _CHUNK_SECTORS):
        at = first + base * size
        n = min(_CHUNK_SECTORS, count - base)
        if area[at : at + n * size] == blank_chunk[: n * size]:
            continue
        for index in range(base, base + n):
            start = first + index * size
            if area[start : start + size] != blank_sector:
                yield index
