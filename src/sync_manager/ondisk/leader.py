"""The leader record: the 200-byte head of every delta lease and every paxos lease.

Layout (spec/sanlock-ondisk.md 4.1), little-endian, no padding::

    0 magic  4 version  8 flags  12 sector_size  16 num_hosts  24 max_hosts  32 owner_id
    40 owner_generation  48 lver  56 space_name[48]  104 resource_name[48]  152 timestamp
    160 unused1  168 checksum  172 unused2  174 io_timeout  176 write_id
    184 write_generation  192 write_timestamp

The checksum covers bytes 0..167. In a delta lease ``resource_name`` is the host's name and
``write_*`` are the "extra" event fields. Validation follows sanlock's order (4.11), so a
record that is wrong in several ways reports the same error sanlock would.
"""

from __future__ import annotations

import dataclasses
import operator
import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from sync_manager.errors import (
    SANLK_LEADER_NUMHOSTS,
    BadMagic,
    ChecksumMismatch,
    CorruptRecord,
    TruncatedArea,
    UnsupportedVersion,
    WrongLockspace,
    WrongResource,
)
from sync_manager.ondisk.checksum import sanlock_checksum
from sync_manager.ondisk.names import decode_name, names_equal

__all__ = [
    "DELTA_MAGIC",
    "DELTA_VERSION",
    "LEADER_CHECKSUM_LEN",
    "LEADER_COMPARE_LEN",
    "LEADER_SIZE",
    "LFL_SHORT_HOLD",
    "PAXOS_CLEAR_MAGIC",
    "PAXOS_MAGIC",
    "PAXOS_VERSION",
    "LeaderRecord",
]

DELTA_MAGIC = 0x12212010
PAXOS_MAGIC = 0x06152010
PAXOS_CLEAR_MAGIC = 0x11282016
DELTA_VERSION = 0x00030004
PAXOS_VERSION = 0x00060004
_MAJOR_MASK = 0xFFFF0000

LFL_SHORT_HOLD = 0x1

LEADER_SIZE = 200
LEADER_CHECKSUM_LEN = 168
LEADER_COMPARE_LEN = 152  # bytes before `timestamp`: what "leaders match" compares


@dataclass(frozen=True, slots=True)
class LeaderRecord:
    """One leader record, field for field as on disk.

    Names are the raw 48-byte fields (bytes after a NUL are kept, as sanlock keeps them).
    ``pack()`` writes the fields as they are; use :meth:`sealed` to get a copy whose checksum
    matches its contents.
    """

    magic: int
    version: int
    flags: int
    sector_size: int
    num_hosts: int
    max_hosts: int
    owner_id: int
    owner_generation: int
    lver: int
    space_name: bytes
    resource_name: bytes
    timestamp: int
    unused1: int = 0
    checksum: int = 0
    unused2: int = 0
    io_timeout: int = 0
    write_id: int = 0
    write_generation: int = 0
    write_timestamp: int = 0

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<IIIIQQQQQ48s48sQQIHHQQQ")

    @classmethod
    def unpack(cls, data: bytes | memoryview, offset: int = 0) -> Self:
        """Decode the record at ``offset`` of ``data``; no validation beyond its length."""
        TruncatedArea.check(data, offset, LEADER_SIZE, "leader record")
        return cls(*cls.STRUCT.unpack_from(data, offset))

    def pack(self) -> bytes:
        """The 200 bytes of this record, exactly as its fields say."""
        return self.STRUCT.pack(*_FIELD_VALUES(self))

    def computed_checksum(self) -> int:
        """The checksum that this record's contents call for."""
        return sanlock_checksum(self.pack()[:LEADER_CHECKSUM_LEN])

    def sealed(self) -> Self:
        """A copy with the checksum recomputed."""
        return dataclasses.replace(self, checksum=self.computed_checksum())

    def replace(self, **changes: object) -> Self:
        """A copy with ``changes`` applied and the checksum recomputed."""
        return dataclasses.replace(self, **changes).sealed()  # type: ignore[arg-type]

    # --- names, decoded ----------------------------------------------------------------------

    @property
    def space(self) -> str:
        """The lockspace name, decoded."""
        return decode_name(self.space_name)

    @property
    def resource(self) -> str:
        """The resource name (a paxos lease) or host name (a delta lease), decoded."""
        return decode_name(self.resource_name)

    @property
    def is_free(self) -> bool:
        """A lease is free when its timestamp is 0."""
        return self.timestamp == 0

    # --- validation (spec 4.11) --------------------------------------------------------------

    def check_delta(self, space_name: bytes | None = None) -> None:
        """Validate as host ``owner``'s delta lease in lockspace ``space_name``.

        Raises BadMagic, UnsupportedVersion, WrongLockspace or ChecksumMismatch.
        """
        self._check_magic(DELTA_MAGIC, "delta lease")
        self._check_version(DELTA_VERSION, "delta lease")
        self._check_space(space_name, "delta lease")
        self._check_checksum("delta lease")

    def check_paxos(
        self,
        space_name: bytes | None = None,
        resource_name: bytes | None = None,
        host_id: int = 0,
    ) -> None:
        """Validate as the leader of resource ``resource_name`` in ``space_name``.

        ``host_id`` (if given) must fit in the lease's ``num_hosts``. Raises BadMagic (also for
        a lease cleared with ``init -z 1``), UnsupportedVersion, WrongLockspace, WrongResource,
        CorruptRecord (num_hosts) or ChecksumMismatch.
        """
        if self.magic == PAXOS_CLEAR_MAGIC:
            raise BadMagic(
                record="paxos leader",
                expected=PAXOS_MAGIC,
                found=self.magic,
            )
        self._check_magic(PAXOS_MAGIC, "paxos leader")
        self._check_version(PAXOS_VERSION, "paxos leader")
        self._check_space(space_name, "paxos leader")
        if resource_name is not None and not names_equal(self.resource_name, resource_name):
            raise WrongResource(
                record="paxos leader", expected=resource_name, found=self.resource_name
            )
        if host_id and self.num_hosts < host_id:
            raise CorruptRecord(
                record="paxos leader",
                expected=f"num_hosts >= host id {host_id}",
                found=self.num_hosts,
                code=SANLK_LEADER_NUMHOSTS,
            )
        self._check_checksum("paxos leader")

    def _check_magic(self, magic: int, record: str) -> None:
        if self.magic != magic:
            raise BadMagic(record=record, expected=magic, found=self.magic)

    def _check_version(self, version: int, record: str) -> None:
        if self.version & _MAJOR_MASK != version & _MAJOR_MASK:
            raise UnsupportedVersion(
                record=record, expected=version & _MAJOR_MASK, found=self.version
            )

    def _check_space(self, space_name: bytes | None, record: str) -> None:
        if space_name is not None and not names_equal(self.space_name, space_name):
            raise WrongLockspace(record=record, expected=space_name, found=self.space_name)

    def _check_checksum(self, record: str) -> None:
        if self.checksum != self.computed_checksum():
            raise ChecksumMismatch(
                record=record, expected=self.computed_checksum(), found=self.checksum
            )


# Not dataclasses.astuple in pack(): it deep-copies every field (a hot spot when acquiring).
_FIELD_VALUES = operator.attrgetter(*(f.name for f in dataclasses.fields(LeaderRecord)))
