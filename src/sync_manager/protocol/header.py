"""The message header, ``struct sm_header`` (spec/sanlock-protocol.md 2.1, 2.2).

Every request and every reply starts with these 32 bytes: eight ``uint32`` in host order
(little-endian on x86_64, the only order sanlock's clients use here)::

    0 magic  4 version  8 cmd  12 cmd_flags  16 length  20 seq  24 data  28 data2

In a request ``data`` and ``data2`` are command arguments (``data2`` = ``0xFFFFFFFF`` means "the
registered connection itself", any other value is a target pid where the command takes one).
In a reply ``data`` is the result, a signed ``int32`` stored as ``uint32``: 0 or a positive
count on success, ``-errno`` or a ``SANLK_*`` code on failure.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, Self, TypeAlias

from sync_manager.errors import UsageError
from sync_manager.protocol.errors import TruncatedMessage

__all__ = [
    "HEADER_SIZE",
    "MAX_CLIENT_MSG",
    "SELF",
    "SM_CB_GET_EVENT",
    "SM_CB_PROTO",
    "SM_MAGIC",
    "SM_PROTO",
    "SM_PROTO_MAJOR_MASK",
    "ByteData",
    "Command",
    "Header",
    "check_uint",
    "s32",
    "u32",
]

SM_MAGIC = 0x04282010
SM_PROTO = 0x00000001
SM_PROTO_MAJOR_MASK = 0xFFFF0000
SM_CB_PROTO = 0x00000001
SM_CB_GET_EVENT = 1

MAX_CLIENT_MSG = 1024 * 1024
"""``MAX_CLIENT_MSG``: sanlock defines it but never checks it; we refuse longer messages."""

HEADER_SIZE = 32

ByteData: TypeAlias = bytes | bytearray | memoryview
"""What the decoders read from."""

SELF = -1
"""``data2`` of a registered-class request that targets the sending connection (0xFFFFFFFF)."""


class Command(IntEnum):
    """``SM_CMD_*``: the command numbers of ``sanlock_sock.h``."""

    REGISTER = 1
    ADD_LOCKSPACE = 2
    REM_LOCKSPACE = 3
    SHUTDOWN = 4
    STATUS = 5
    LOG_DUMP = 6
    ACQUIRE = 7
    RELEASE = 8
    INQUIRE = 9
    RESTRICT = 10
    REQUEST = 11
    ALIGN = 12
    EXAMINE_LOCKSPACE = 13
    EXAMINE_RESOURCE = 14
    HOST_STATUS = 15
    INQ_LOCKSPACE = 16
    KILLPATH = 17
    WRITE_LOCKSPACE = 18
    WRITE_RESOURCE = 19
    READ_LOCKSPACE = 20
    READ_RESOURCE = 21
    GET_LOCKSPACES = 22
    GET_HOSTS = 23
    READ_RESOURCE_OWNERS = 24
    SET_LVB = 25
    GET_LVB = 26
    CONVERT = 27
    VERSION = 28
    SHUTDOWN_WAIT = 29
    REG_EVENT = 30
    END_EVENT = 31
    SET_EVENT = 32
    SET_CONFIG = 33
    RENEWAL = 34
    FORMAT_RINDEX = 35
    UPDATE_RINDEX = 36
    LOOKUP_RINDEX = 37
    CREATE_RESOURCE = 38
    DELETE_RESOURCE = 39
    REBUILD_RINDEX = 40


def check_uint(value: int, bits: int, what: str) -> None:
    """UsageError unless ``value`` fits an unsigned field of ``bits`` bits."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise UsageError(f"{what} must be an integer in 0..2**{bits}-1, not {value!r}")


def u32(value: int, what: str = "value") -> int:
    """A signed or unsigned 32-bit value as the ``uint32`` on the wire (-1 -> 0xFFFFFFFF)."""
    if isinstance(value, bool) or not isinstance(value, int) or not -(1 << 31) <= value < 1 << 32:
        raise UsageError(f"{what} must fit 32 bits, not {value!r}")
    return value & 0xFFFFFFFF


def s32(value: int) -> int:
    """A wire ``uint32`` read as the C ``int`` it carries (0xFFFFFFFF -> -1)."""
    return value - (1 << 32) if value & 0x80000000 else value


@dataclass(frozen=True, slots=True)
class Header:
    """One ``sm_header``, field for field, every field an unsigned 32-bit value."""

    cmd: int
    cmd_flags: int = 0
    length: int = HEADER_SIZE
    data: int = 0
    data2: int = 0
    magic: int = SM_MAGIC
    version: int = SM_PROTO
    seq: int = 0

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<8I")
    SIZE: ClassVar[int] = HEADER_SIZE

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            check_uint(getattr(self, field.name), 32, f"header {field.name}")

    @classmethod
    def unpack(cls, data: ByteData, offset: int = 0) -> Self:
        """Decode the header at ``offset``; TruncatedMessage if fewer than 32 bytes remain."""
        if offset < 0 or len(data) - offset < HEADER_SIZE:
            raise TruncatedMessage(
                "message header", expected=HEADER_SIZE, found=max(len(data) - offset, 0)
            )
        magic, version, cmd, cmd_flags, length, seq, data_, data2 = cls.STRUCT.unpack_from(
            data, offset
        )
        return cls(cmd, cmd_flags, length, data_, data2, magic, version, seq)

    def pack(self) -> bytes:
        """The 32 bytes of this header."""
        return self.STRUCT.pack(
            self.magic,
            self.version,
            self.cmd,
            self.cmd_flags,
            self.length,
            self.seq,
            self.data,
            self.data2,
        )

    @property
    def command(self) -> Command | None:
        """``cmd`` as a :class:`Command`, or None for a number sanlock does not know."""
        try:
            return Command(self.cmd)
        except ValueError:
            return None

    @property
    def result(self) -> int:
        """``data`` read as a reply's signed result."""
        return s32(self.data)

    @property
    def target(self) -> int:
        """``data2`` read as a signed pid: -1 (:data:`SELF`) or the target process."""
        return s32(self.data2)

    @property
    def payload_length(self) -> int:
        """What ``length`` claims follows the header (may be negative when ``length`` < 32)."""
        return self.length - HEADER_SIZE

    def replace(self, **changes: int) -> Self:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)
