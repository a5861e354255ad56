"""Requests that read or write lease areas through the daemon (spec 2.5.18-2.5.23, 2.5.30).

Same conventions as :mod:`sync_manager.protocol.requests`. LOOKUP_RINDEX keeps its client's
quirk: ``length`` announces a ``sanlk_resource`` (32 + 1104 + 128) but a 64-byte
``sanlk_rentry`` is sent, and read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from sync_manager.protocol.header import HEADER_SIZE, Command, Header
from sync_manager.protocol.requests import Request, exact, resources_size
from sync_manager.protocol.rindex import NO_ENTRY, Rentry, Rindex
from sync_manager.protocol.structs import Disk, Lockspace, Resource

__all__ = [
    "Align",
    "CreateResource",
    "DeleteResource",
    "FormatRindex",
    "LookupRindex",
    "ReadLockspace",
    "ReadResource",
    "ReadResourceOwners",
    "RebuildRindex",
    "UpdateRindex",
    "WriteLockspace",
    "WriteResource",
]


@dataclass(frozen=True, slots=True)
class Align(Request):
    """ALIGN (12): the alignment the daemon would use for a disk (the result is the size)."""

    disk: Disk
    flags: int = 0

    COMMAND: ClassVar[Command] = Command.ALIGN
    PAYLOAD_SIZE: ClassVar[int] = Disk.SIZE

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, 0, 0

    def payload(self) -> bytes:
        return self.disk.pack()

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        return cls(Disk.unpack(payload), header.cmd_flags)


@dataclass(frozen=True, slots=True)
class WriteLockspace(Request):
    """WRITE_LOCKSPACE (18): initialize a lockspace area (``max_hosts`` is ignored)."""

    lockspace: Lockspace
    max_hosts: int = 0
    io_timeout: int = 0
    flags: int = 0

    COMMAND: ClassVar[Command] = Command.WRITE_LOCKSPACE
    PAYLOAD_SIZE: ClassVar[int] = Lockspace.SIZE

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, self.max_hosts, self.io_timeout

    def payload(self) -> bytes:
        return self.lockspace.pack()

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        return cls(Lockspace.unpack(payload), header.data, header.data2, header.cmd_flags)


@dataclass(frozen=True, slots=True)
class ReadLockspace(Request):
    """READ_LOCKSPACE (20): read a host's delta lease (name and io_timeout come back)."""

    lockspace: Lockspace
    flags: int = 0

    COMMAND: ClassVar[Command] = Command.READ_LOCKSPACE
    PAYLOAD_SIZE: ClassVar[int] = Lockspace.SIZE

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, 0, 0

    def payload(self) -> bytes:
        return self.lockspace.pack()

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        return cls(Lockspace.unpack(payload), header.cmd_flags)


@dataclass(frozen=True, slots=True)
class _ResourceWithDisks(Request):
    """A request whose payload is one resource and its 1..4 disks."""

    resource: Resource
    flags: int = 0

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, 0, 0

    def payload(self) -> bytes:
        return self.resource.pack_with_disks()

    @classmethod
    def payload_size(cls, header: Header, prefix: bytes) -> int:
        return resources_size(prefix, 1, cls.COMMAND.name)

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        exact(payload, cls.payload_size(header, payload), cls.COMMAND.name)
        return cls._decode(header, payload)

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        return cls(Resource.unpack_with_disks(payload)[0], header.cmd_flags)


@dataclass(frozen=True, slots=True)
class ReadResource(_ResourceWithDisks):
    """READ_RESOURCE (21): read a paxos lease's leader (names, lver, sizes come back)."""

    COMMAND: ClassVar[Command] = Command.READ_RESOURCE


@dataclass(frozen=True, slots=True)
class ReadResourceOwners(_ResourceWithDisks):
    """READ_RESOURCE_OWNERS (24): the hosts that hold a paxos lease."""

    COMMAND: ClassVar[Command] = Command.READ_RESOURCE_OWNERS


@dataclass(frozen=True, slots=True)
class WriteResource(Request):
    """WRITE_RESOURCE (19): initialize (or with ``WRITE_CLEAR`` clear) a paxos lease.

    Fields are named as clients send them: ``sanlock_write_resource(res, max_hosts, num_hosts,
    flags)`` puts ``max_hosts`` in ``data`` and ``num_hosts`` in ``data2``. sanlock's daemon
    reads ``data`` as num_hosts and ignores ``data2``, so a client's num_hosts never reaches
    the disk there (``max_hosts``, normally 0, means "as many as the geometry allows").
    """

    resource: Resource
    max_hosts: int = 0
    num_hosts: int = 0
    flags: int = 0

    COMMAND: ClassVar[Command] = Command.WRITE_RESOURCE

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, self.max_hosts, self.num_hosts

    def payload(self) -> bytes:
        return self.resource.pack_with_disks()

    @classmethod
    def payload_size(cls, header: Header, prefix: bytes) -> int:
        return resources_size(prefix, 1, "WRITE_RESOURCE")

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        exact(payload, cls.payload_size(header, payload), "WRITE_RESOURCE")
        resource = Resource.unpack_with_disks(payload)[0]
        return cls(resource, header.data, header.data2, header.cmd_flags)


@dataclass(frozen=True, slots=True)
class _RindexOnly(Request):
    """A request whose payload is one ``sanlk_rindex``."""

    rindex: Rindex
    flags: int = 0

    PAYLOAD_SIZE: ClassVar[int] = Rindex.SIZE

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, 0, 0

    def payload(self) -> bytes:
        return self.rindex.pack()

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        return cls(Rindex.unpack(payload), header.cmd_flags)


@dataclass(frozen=True, slots=True)
class FormatRindex(_RindexOnly):
    """FORMAT_RINDEX (35): write an empty resource index."""

    COMMAND: ClassVar[Command] = Command.FORMAT_RINDEX


@dataclass(frozen=True, slots=True)
class RebuildRindex(_RindexOnly):
    """REBUILD_RINDEX (40): rebuild a resource index from the leases on disk."""

    COMMAND: ClassVar[Command] = Command.REBUILD_RINDEX


@dataclass(frozen=True, slots=True)
class _RindexEntry(Request):
    """A request whose payload is a ``sanlk_rindex`` and a ``sanlk_rentry``."""

    rindex: Rindex
    entry: Rentry = NO_ENTRY
    flags: int = 0

    PAYLOAD_SIZE: ClassVar[int] = Rindex.SIZE + Rentry.SIZE

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, 0, 0

    def payload(self) -> bytes:
        return self.rindex.pack() + self.entry.pack()

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        return cls(Rindex.unpack(payload), Rentry.unpack(payload, Rindex.SIZE), header.cmd_flags)


@dataclass(frozen=True, slots=True)
class UpdateRindex(_RindexEntry):
    """UPDATE_RINDEX (36): add (``RXUP_ADD``) or remove (``RXUP_REM``) an index entry."""

    COMMAND: ClassVar[Command] = Command.UPDATE_RINDEX


@dataclass(frozen=True, slots=True)
class LookupRindex(_RindexEntry):
    """LOOKUP_RINDEX (37): find an entry by name or offset."""

    COMMAND: ClassVar[Command] = Command.LOOKUP_RINDEX

    def wire_length(self, payload: bytes) -> int:
        return HEADER_SIZE + Rindex.SIZE + Resource.SIZE  # sanlock_lookup_rindex's quirk


@dataclass(frozen=True, slots=True)
class DeleteResource(_RindexEntry):
    """DELETE_RESOURCE (39): clear a resource lease and its index entry."""

    COMMAND: ClassVar[Command] = Command.DELETE_RESOURCE


@dataclass(frozen=True, slots=True)
class CreateResource(Request):
    """CREATE_RESOURCE (38): make a resource lease and its index entry."""

    rindex: Rindex
    entry: Rentry = NO_ENTRY
    max_hosts: int = 0
    num_hosts: int = 0
    flags: int = 0

    COMMAND: ClassVar[Command] = Command.CREATE_RESOURCE
    PAYLOAD_SIZE: ClassVar[int] = Rindex.SIZE + Rentry.SIZE

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, self.max_hosts, self.num_hosts

    def payload(self) -> bytes:
        return self.rindex.pack() + self.entry.pack()

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        entry = Rentry.unpack(payload, Rindex.SIZE)
        return cls(Rindex.unpack(payload), entry, header.data, header.data2, header.cmd_flags)
