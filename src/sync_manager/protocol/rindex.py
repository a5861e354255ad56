"""The resource index structs, ``sanlk_rindex`` and ``sanlk_rentry`` (``sanlock_resource.h``).

Used only by the rindex commands (FORMAT/UPDATE/LOOKUP/REBUILD_RINDEX, CREATE/DELETE_RESOURCE),
which neither libvirt nor vdsm calls::

    sanlk_rindex  1104  flags u32 @0, max_resources u32 @4, unused u64 @8,
                        lockspace_name[48] @16, disk (sanlk_disk) @64
    sanlk_rentry    64  name[48] @0, offset u64 @48, flags u32 @56, unused u32 @60
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from sync_manager.errors import UsageError
from sync_manager.protocol.header import ByteData
from sync_manager.protocol.structs import NAME_LEN, NO_DISK, Disk, check_fields, need, text

__all__ = ["NO_ENTRY", "Rentry", "Rindex"]


@dataclass(frozen=True, slots=True)
class Rindex:
    """``struct sanlk_rindex``: where a resource index lives, and for which lockspace."""

    lockspace_name: bytes
    disk: Disk = NO_DISK
    flags: int = 0
    max_resources: int = 0
    unused: int = 0

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<IIQ48s")
    SIZE: ClassVar[int] = 1104

    def __post_init__(self) -> None:
        check_fields(
            self,
            {"lockspace_name": -NAME_LEN, "flags": 32, "max_resources": 32, "unused": 64},
        )
        if not isinstance(self.disk, Disk):
            raise UsageError(f"disk must be a Disk struct, not {self.disk!r}")

    @classmethod
    def unpack(cls, data: ByteData, offset: int = 0) -> Self:
        """Decode the rindex at ``offset``."""
        need(data, offset, cls.SIZE, "sanlk_rindex")
        flags, max_resources, unused, name = cls.STRUCT.unpack_from(data, offset)
        disk = Disk.unpack(data, offset + cls.STRUCT.size)
        return cls(name, disk, flags, max_resources, unused)

    def pack(self) -> bytes:
        """The 1104 bytes of this rindex."""
        head = self.STRUCT.pack(self.flags, self.max_resources, self.unused, self.lockspace_name)
        return head + self.disk.pack()

    @property
    def lockspace(self) -> str:
        """The lockspace name, decoded."""
        return text(self.lockspace_name)


@dataclass(frozen=True, slots=True)
class Rentry:
    """``struct sanlk_rentry``: one resource's name and lease offset in an index."""

    name: bytes = b""
    offset: int = 0
    flags: int = 0
    unused: int = 0

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<48sQII")
    SIZE: ClassVar[int] = 64

    def __post_init__(self) -> None:
        check_fields(self, {"name": -NAME_LEN, "offset": 64, "flags": 32, "unused": 32})

    @classmethod
    def unpack(cls, data: ByteData, offset: int = 0) -> Self:
        """Decode the entry at ``offset``."""
        need(data, offset, cls.SIZE, "sanlk_rentry")
        return cls(*cls.STRUCT.unpack_from(data, offset))

    def pack(self) -> bytes:
        """The 64 bytes of this entry."""
        return self.STRUCT.pack(self.name, self.offset, self.flags, self.unused)


NO_ENTRY = Rentry()
"""An all-zero entry."""
