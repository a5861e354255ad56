"""The payload structs of the client API (spec/sanlock-protocol.md 2.3, ``sanlock.h``).

Raw C structs in host order (little-endian), natural x86_64 alignment::

    sanlk_disk       1040  path[1024] @0, offset u64 @1024, pad1 u32 @1032, pad2 u32 @1036
    sanlk_resource    128  lockspace_name[48] @0, name[48] @48, lver u64 @96, data64 u64 @104,
                           data32 u32 @112, unused u32 @116, flags u32 @120, num_disks u32 @124
                           (followed by num_disks sanlk_disk in the commands that send disks)
    sanlk_options      56  owner_name[48] @0, flags u32 @48, len u32 @52
    sanlk_lockspace  1104  name[48] @0, host_id u64 @48, flags u32 @56, pad @60, disk @64
    sanlk_host         32  host_id @0, generation @8, timestamp @16 (u64), io_timeout @24,
                           flags @28 (u32)
    sanlk_host_event   32  host_id, generation, event, data (u64 each)

Fixed-size char fields (names, paths) are kept as ``bytes`` without their trailing NULs; bytes
after an embedded NUL are kept too, so every struct round-trips byte for byte. Padding fields
are kept for the same reason (clients zero them, and so do we). ``unpack`` never validates
more than the length; it raises :class:`TruncatedMessage` when bytes are missing.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Self

from sync_manager.errors import UsageError
from sync_manager.protocol.errors import MalformedMessage, TruncatedMessage
from sync_manager.protocol.flags import HOST_STATE_MASK, ResourceFlag
from sync_manager.protocol.header import ByteData, check_uint

__all__ = [
    "MAX_DISKS",
    "MAX_RESOURCES",
    "NAME_LEN",
    "NO_DISK",
    "NO_EVENT",
    "NO_OPTIONS",
    "NO_RESOURCE",
    "PATH_LEN",
    "Disk",
    "Host",
    "HostEvent",
    "Lockspace",
    "Options",
    "Resource",
    "as_bytes",
    "check_fields",
    "need",
    "text",
]

NAME_LEN = 48
PATH_LEN = 1024
MAX_DISKS = 4
MAX_RESOURCES = 8

_ERANGE = -34  # -ERANGE: what sanlock answers for a resource with 0 or > 4 disks


def as_bytes(value: str | bytes) -> bytes:
    """A name or path as bytes (``str`` encoded like a file name: UTF-8, surrogateescape)."""
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def text(field: bytes) -> str:
    """A char field as C reads it (up to the first NUL), for display."""
    end = field.find(b"\0")
    return (field if end < 0 else field[:end]).decode("utf-8", "backslashreplace")


def need(data: ByteData, offset: int, size: int, what: str) -> None:
    """TruncatedMessage unless ``size`` bytes of ``what`` are there at ``offset``."""
    if offset < 0 or len(data) - offset < size:
        raise TruncatedMessage(what, expected=size, found=max(len(data) - offset, 0))


def check_fields(obj: object, widths: dict[str, int]) -> None:
    """UsageError unless each named field fits: ``bits`` for ints, ``-size`` for char fields.

    Char fields (``bytes`` of at most ``size``) are stored without trailing NULs.
    """
    for name, width in widths.items():
        value = getattr(obj, name)
        if width > 0:
            check_uint(value, width, name)
            continue
        if not isinstance(value, bytes) or len(value) > -width:
            raise UsageError(f"{name} must be at most {-width} bytes, not {value!r}")
        object.__setattr__(obj, name, value.rstrip(b"\0"))


@dataclass(frozen=True, slots=True)
class Disk:
    """``struct sanlk_disk``: a path and a byte offset on it."""

    path: bytes
    offset: int = 0
    pad1: int = 0
    pad2: int = 0

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<1024sQII")
    SIZE: ClassVar[int] = 1040

    def __post_init__(self) -> None:
        check_fields(self, {"path": -PATH_LEN, "offset": 64, "pad1": 32, "pad2": 32})

    @classmethod
    def unpack(cls, data: ByteData, offset: int = 0) -> Self:
        """Decode the disk at ``offset``."""
        need(data, offset, cls.SIZE, "sanlk_disk")
        path, off, pad1, pad2 = cls.STRUCT.unpack_from(data, offset)
        return cls(path, off, pad1, pad2)

    def pack(self) -> bytes:
        """The 1040 bytes of this disk."""
        return self.STRUCT.pack(self.path, self.offset, self.pad1, self.pad2)

    @property
    def path_str(self) -> str:
        """The path, decoded up to its first NUL."""
        return text(self.path)


NO_DISK = Disk(b"")
"""An all-zero disk."""


@dataclass(frozen=True, slots=True)
class Resource:
    """``struct sanlk_resource`` and, where the command sends them, its disks.

    ``num_disks`` is the struct's field; ``disks`` are the structs that followed it on the wire
    (none for RELEASE, CONVERT, EXAMINE, SET_LVB, GET_LVB and replies, whatever ``num_disks``
    says). Left at -1, ``num_disks`` becomes ``len(disks)``.
    """

    lockspace_name: bytes
    name: bytes
    lver: int = 0
    data64: int = 0
    data32: int = 0
    unused: int = 0
    flags: int = 0
    num_disks: int = -1
    disks: tuple[Disk, ...] = ()

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<48s48sQQIIII")
    SIZE: ClassVar[int] = 128

    def __post_init__(self) -> None:
        if self.num_disks == -1:
            object.__setattr__(self, "num_disks", len(self.disks))
        object.__setattr__(self, "disks", tuple(self.disks))
        check_fields(
            self,
            {
                "lockspace_name": -NAME_LEN,
                "name": -NAME_LEN,
                "lver": 64,
                "data64": 64,
                "data32": 32,
                "unused": 32,
                "flags": 32,
                "num_disks": 32,
            },
        )
        if not all(isinstance(disk, Disk) for disk in self.disks):
            raise UsageError(f"disks must be Disk structs, not {self.disks!r}")

    @classmethod
    def make(
        cls,
        lockspace: str | bytes,
        name: str | bytes,
        disks: Iterable[tuple[str | bytes, int]] = (),
        *,
        lver: int | None = None,
        shared: bool = False,
        flags: int = 0,
    ) -> Self:
        """A resource as clients build it: ``lver`` sets ``RES_LVER``, ``shared`` ``RES_SHARED``."""
        if lver is not None:
            flags |= ResourceFlag.LVER
        if shared:
            flags |= ResourceFlag.SHARED
        return cls(
            as_bytes(lockspace),
            as_bytes(name),
            lver=lver or 0,
            flags=int(flags),
            disks=tuple(Disk(as_bytes(path), offset) for path, offset in disks),
        )

    @classmethod
    def unpack(cls, data: ByteData, offset: int = 0) -> Self:
        """Decode the 128-byte struct at ``offset`` (no disks read, whatever ``num_disks``)."""
        need(data, offset, cls.SIZE, "sanlk_resource")
        return cls(*cls.STRUCT.unpack_from(data, offset))

    @classmethod
    def unpack_with_disks(cls, data: ByteData, offset: int = 0) -> tuple[Self, int]:
        """Decode the struct and the ``num_disks`` disks after it; returns it and the end.

        ``num_disks`` must be 1..4 (MalformedMessage with sanlock's ``-ERANGE`` otherwise).
        """
        head = cls.unpack(data, offset)
        if not 1 <= head.num_disks <= MAX_DISKS:
            raise MalformedMessage(
                "sanlk_resource num_disks", expected=f"1..{MAX_DISKS}", found=head.num_disks,
                code=_ERANGE,
            )  # fmt: skip
        pos = offset + cls.SIZE
        need(data, pos, head.num_disks * Disk.SIZE, "sanlk_resource disks")
        disks = tuple(Disk.unpack(data, pos + i * Disk.SIZE) for i in range(head.num_disks))
        return dataclasses.replace(head, disks=disks), pos + head.num_disks * Disk.SIZE

    def pack(self) -> bytes:
        """The 128-byte struct alone."""
        return self.STRUCT.pack(
            self.lockspace_name,
            self.name,
            self.lver,
            self.data64,
            self.data32,
            self.unused,
            self.flags,
            self.num_disks,
        )

    def pack_with_disks(self) -> bytes:
        """The struct followed by its disks; UsageError unless there are ``num_disks`` of them."""
        if len(self.disks) != self.num_disks:
            raise UsageError(
                f"resource has num_disks {self.num_disks} but {len(self.disks)} disks to send"
            )
        return self.pack() + b"".join(disk.pack() for disk in self.disks)

    def without_disks(self) -> Self:
        """A copy with no disks to send (``num_disks`` unchanged), as RELEASE sends it."""
        return dataclasses.replace(self, disks=())

    @property
    def lockspace(self) -> str:
        """The lockspace name, decoded."""
        return text(self.lockspace_name)

    @property
    def resource(self) -> str:
        """The resource name, decoded."""
        return text(self.name)

    @property
    def shared(self) -> bool:
        """True when ``RES_SHARED`` is set."""
        return bool(self.flags & ResourceFlag.SHARED)


NO_RESOURCE = Resource(b"", b"")
"""An all-zero resource."""


@dataclass(frozen=True, slots=True)
class Options:
    """``struct sanlk_options``; ``len`` is ignored (3.8.5 sends and reads no trailing bytes)."""

    owner_name: bytes = b""
    flags: int = 0
    len: int = 0

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<48sII")
    SIZE: ClassVar[int] = 56

    def __post_init__(self) -> None:
        check_fields(self, {"owner_name": -NAME_LEN, "flags": 32, "len": 32})

    @classmethod
    def unpack(cls, data: ByteData, offset: int = 0) -> Self:
        """Decode the options at ``offset``."""
        need(data, offset, cls.SIZE, "sanlk_options")
        return cls(*cls.STRUCT.unpack_from(data, offset))

    def pack(self) -> bytes:
        """The 56 bytes of these options."""
        return self.STRUCT.pack(self.owner_name, self.flags, self.len)


NO_OPTIONS = Options()
"""All-zero options, what clients send when the caller gives none."""


@dataclass(frozen=True, slots=True)
class Lockspace:
    """``struct sanlk_lockspace``: name, host id, flags and the host id lease's disk."""

    name: bytes
    host_id: int = 0
    flags: int = 0
    pad: int = 0
    disk: Disk = NO_DISK

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<48sQII")
    SIZE: ClassVar[int] = 1104

    def __post_init__(self) -> None:
        check_fields(self, {"name": -NAME_LEN, "host_id": 64, "flags": 32, "pad": 32})
        if not isinstance(self.disk, Disk):
            raise UsageError(f"disk must be a Disk struct, not {self.disk!r}")

    @classmethod
    def make(
        cls,
        name: str | bytes,
        host_id: int = 0,
        path: str | bytes = b"",
        offset: int = 0,
        *,
        flags: int = 0,
    ) -> Self:
        """A lockspace as clients build one."""
        return cls(as_bytes(name), host_id, int(flags), disk=Disk(as_bytes(path), offset))

    @classmethod
    def unpack(cls, data: ByteData, offset: int = 0) -> Self:
        """Decode the lockspace at ``offset``."""
        need(data, offset, cls.SIZE, "sanlk_lockspace")
        name, host_id, flags, pad = cls.STRUCT.unpack_from(data, offset)
        return cls(name, host_id, flags, pad, Disk.unpack(data, offset + cls.STRUCT.size))

    def pack(self) -> bytes:
        """The 1104 bytes of this lockspace."""
        return self.STRUCT.pack(self.name, self.host_id, self.flags, self.pad) + self.disk.pack()

    @property
    def lockspace(self) -> str:
        """The lockspace name, decoded."""
        return text(self.name)


@dataclass(frozen=True, slots=True)
class Host:
    """``struct sanlk_host``: one host of a lockspace as GET_HOSTS and owners report it."""

    host_id: int
    generation: int = 0
    timestamp: int = 0
    io_timeout: int = 0
    flags: int = 0

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<QQQII")
    SIZE: ClassVar[int] = 32

    def __post_init__(self) -> None:
        check_fields(
            self,
            {"host_id": 64, "generation": 64, "timestamp": 64, "io_timeout": 32, "flags": 32},
        )

    @classmethod
    def unpack(cls, data: ByteData, offset: int = 0) -> Self:
        """Decode the host at ``offset``."""
        need(data, offset, cls.SIZE, "sanlk_host")
        return cls(*cls.STRUCT.unpack_from(data, offset))

    def pack(self) -> bytes:
        """The 32 bytes of this host."""
        return self.STRUCT.pack(
            self.host_id, self.generation, self.timestamp, self.io_timeout, self.flags
        )

    @property
    def state(self) -> int:
        """``flags & SANLK_HOST_MASK``: a :class:`~sync_manager.protocol.flags.HostState`."""
        return self.flags & HOST_STATE_MASK


@dataclass(frozen=True, slots=True)
class HostEvent:
    """``struct sanlk_host_event``: an event for (or from) a host."""

    host_id: int = 0
    generation: int = 0
    event: int = 0
    data: int = 0

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<QQQQ")
    SIZE: ClassVar[int] = 32

    def __post_init__(self) -> None:
        check_fields(self, {"host_id": 64, "generation": 64, "event": 64, "data": 64})

    @classmethod
    def unpack(cls, data: ByteData, offset: int = 0) -> Self:
        """Decode the event at ``offset``."""
        need(data, offset, cls.SIZE, "sanlk_host_event")
        return cls(*cls.STRUCT.unpack_from(data, offset))

    def pack(self) -> bytes:
        """The 32 bytes of this event."""
        return self.STRUCT.pack(self.host_id, self.generation, self.event, self.data)


NO_EVENT = HostEvent()
"""An all-zero event, what REG_EVENT clients send."""
