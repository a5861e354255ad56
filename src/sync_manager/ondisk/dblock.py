"""Per-host blocks of a paxos lease: the paxos dblock and the mode block.

Host ``H``'s sector in a resource area holds its dblock at byte 0 (56 bytes, checksum over the
first 48) and its mode block at byte 128 (16 bytes, no checksum) (spec/sanlock-ondisk.md 4.4,
4.5). Writing a dblock writes the whole sector, so it zeroes the mode block unless the caller
packs both together (:func:`pack_host_sector`).
"""

from __future__ import annotations

import dataclasses
import operator
import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from sync_manager.errors import SANLK_DBLOCK_CHECKSUM, ChecksumMismatch, TruncatedArea
from sync_manager.ondisk.checksum import sanlock_checksum

__all__ = [
    "DBLOCK_CHECKSUM_LEN",
    "DBLOCK_FL_RELEASED",
    "DBLOCK_SIZE",
    "MBLOCK_OFFSET",
    "MBLOCK_SHARED",
    "ModeBlock",
    "PaxosDblock",
    "pack_host_sector",
]

DBLOCK_SIZE = 56
DBLOCK_CHECKSUM_LEN = 48
DBLOCK_FL_RELEASED = 0x1
MBLOCK_OFFSET = 128
MBLOCK_SHARED = 0x1


@dataclass(frozen=True, slots=True)
class PaxosDblock:
    """A host's paxos ballot state for one lease version (Disk Paxos's per-processor block).

    ``inp``, ``inp2``, ``inp3`` are the proposed value: owner host id, owner generation and the
    owner's monotonic time when it chose itself. ``flags`` is not covered by the checksum.
    """

    mbal: int = 0
    bal: int = 0
    inp: int = 0
    inp2: int = 0
    inp3: int = 0
    lver: int = 0
    checksum: int = 0
    flags: int = 0

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<QQQQQQII")

    @classmethod
    def unpack(cls, data: bytes | memoryview, offset: int = 0) -> Self:
        """Decode the dblock at ``offset`` of ``data``; no validation beyond its length."""
        TruncatedArea.check(data, offset, DBLOCK_SIZE, "paxos dblock")
        return cls(*cls.STRUCT.unpack_from(data, offset))

    def pack(self) -> bytes:
        """The 56 bytes of this dblock, exactly as its fields say."""
        return self.STRUCT.pack(*_FIELD_VALUES(self))

    def computed_checksum(self) -> int:
        """The checksum that this dblock's contents call for."""
        return sanlock_checksum(self.pack()[:DBLOCK_CHECKSUM_LEN])

    def sealed(self) -> Self:
        """A copy with the checksum recomputed."""
        return dataclasses.replace(self, checksum=self.computed_checksum())

    @property
    def is_blank(self) -> bool:
        """Never written: sanlock accepts an all-zero dblock without a checksum."""
        return not (self.checksum or self.mbal or self.bal or self.inp or self.lver)

    @property
    def released(self) -> bool:
        """The holder released the lease it won with this ballot."""
        return bool(self.flags & DBLOCK_FL_RELEASED)

    def check(self) -> None:
        """ChecksumMismatch unless the dblock is blank or its checksum matches."""
        if not self.is_blank and self.checksum != self.computed_checksum():
            raise ChecksumMismatch(
                record="paxos dblock",
                expected=self.computed_checksum(),
                found=self.checksum,
                code=SANLK_DBLOCK_CHECKSUM,
            )


# Not dataclasses.astuple in pack(): it deep-copies every field (a hot spot when acquiring).
_FIELD_VALUES = operator.attrgetter(*(f.name for f in dataclasses.fields(PaxosDblock)))


@dataclass(frozen=True, slots=True)
class ModeBlock:
    """A host's lease mode: SHARED with the holder's lockspace generation, or nothing."""

    flags: int = 0
    generation: int = 0

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<I4xQ")

    @classmethod
    def unpack(cls, data: bytes | memoryview, offset: int = 0) -> Self:
        """Decode the mode block at ``offset`` of ``data`` (16 bytes)."""
        TruncatedArea.check(data, offset, cls.STRUCT.size, "mode block")
        return cls(*cls.STRUCT.unpack_from(data, offset))

    def pack(self) -> bytes:
        """The 16 bytes of this mode block."""
        return self.STRUCT.pack(self.flags, self.generation)

    @property
    def shared(self) -> bool:
        """The host holds the lease in shared mode."""
        return bool(self.flags & MBLOCK_SHARED)


def pack_host_sector(dblock: PaxosDblock, sector_size: int, mode: ModeBlock | None = None) -> bytes:
    """A host's whole sector: dblock, then the mode block (zero if None), zero-filled."""
    sector = bytearray(sector_size)
    sector[:DBLOCK_SIZE] = dblock.pack()
    if mode is not None:
        sector[MBLOCK_OFFSET : MBLOCK_OFFSET + ModeBlock.STRUCT.size] = mode.pack()
    return bytes(sector)
