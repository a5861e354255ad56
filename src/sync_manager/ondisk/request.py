"""The request record: sector 1 of a paxos lease, where other hosts ask the owner to let go.

24 bytes, no checksum (spec/sanlock-ondisk.md 4.6): magic, version, the lease version being
requested (0 = none) and the force mode (0 none, 1 FORCE, 2 GRACEFUL).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from sync_manager.errors import (
    SANLK_REQUEST_MAGIC,
    SANLK_REQUEST_VERSION,
    BadMagic,
    TruncatedArea,
    UnsupportedVersion,
)

__all__ = [
    "FORCE_MODE_FORCE",
    "FORCE_MODE_GRACEFUL",
    "FORCE_MODE_NONE",
    "REQUEST_MAGIC",
    "REQUEST_VERSION",
    "RequestRecord",
]

REQUEST_MAGIC = 0x08292011
REQUEST_VERSION = 0x00010001
_MAJOR_MASK = 0xFFFF0000

FORCE_MODE_NONE = 0
FORCE_MODE_FORCE = 1
FORCE_MODE_GRACEFUL = 2


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """A request for lease version ``lver`` with ``force_mode``; lver 0 means no request."""

    magic: int = REQUEST_MAGIC
    version: int = REQUEST_VERSION
    lver: int = 0
    force_mode: int = FORCE_MODE_NONE

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<IIQI4x")

    @classmethod
    def unpack(cls, data: bytes | memoryview, offset: int = 0) -> Self:
        """Decode the record at ``offset`` of ``data``; no validation beyond its length."""
        TruncatedArea.check(data, offset, cls.STRUCT.size, "request record")
        return cls(*cls.STRUCT.unpack_from(data, offset))

    def pack(self) -> bytes:
        """The 24 bytes of this record."""
        return self.STRUCT.pack(self.magic, self.version, self.lver, self.force_mode)

    def check(self) -> None:
        """BadMagic or UnsupportedVersion unless this is a request record we understand."""
        if self.magic != REQUEST_MAGIC:
            raise BadMagic(
                record="request record",
                expected=REQUEST_MAGIC,
                found=self.magic,
                code=SANLK_REQUEST_MAGIC,
            )
        if self.version & _MAJOR_MASK != REQUEST_VERSION & _MAJOR_MASK:
            raise UnsupportedVersion(
                record="request record",
                expected=REQUEST_VERSION & _MAJOR_MASK,
                found=self.version,
                code=SANLK_REQUEST_VERSION,
            )
