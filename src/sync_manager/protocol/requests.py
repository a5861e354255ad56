"""Requests about leases: what clients send, and how the daemon reads it (spec 2.5.1-2.5.9).

Each request is a frozen dataclass named for its command, holding the header arguments under
their meaning (``flags`` is always the header's ``cmd_flags``) and the decoded payload.
``encode()`` gives the bytes a sanlock 3.8.5 client sends for it; ``decode(header, payload)``
reads them back the way the daemon does, with sanlock's error codes: fewer payload bytes than
the command needs is ``-ENOTCONN``, more than 8 resources ``-E2BIG``, a resource with 0 or more
than 4 disks ``-ERANGE``. ``payload_size(header, prefix)`` tells a framer how many payload
bytes the daemon reads for this header, given the first bytes of the payload.

``target`` is ``data2`` of the registered-class commands: -1 (:data:`SELF`) for the connection
that sends it, else the pid of another registered process.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import ClassVar, Self

from sync_manager.errors import UsageError
from sync_manager.protocol.errors import MalformedMessage, TruncatedMessage
from sync_manager.protocol.flags import ReleaseFlag
from sync_manager.protocol.header import HEADER_SIZE, SELF, Command, Header, u32
from sync_manager.protocol.structs import (
    MAX_DISKS,
    MAX_RESOURCES,
    NO_OPTIONS,
    Disk,
    Lockspace,
    Options,
    Resource,
    check_fields,
)

__all__ = [
    "HELPER_ARGS_LEN",
    "HELPER_PATH_LEN",
    "LVB_MAX",
    "Acquire",
    "Convert",
    "ExamineLockspace",
    "ExamineResource",
    "GetLvb",
    "Inquire",
    "Killpath",
    "Register",
    "Release",
    "Request",
    "RequestLease",
    "Restrict",
    "SetLvb",
    "exact",
    "resources_size",
]

HELPER_PATH_LEN = 128
HELPER_ARGS_LEN = 128
LVB_MAX = 4096
"""Largest lvb SET_LVB accepts (the largest sector size)."""


def exact(payload: bytes, size: int, what: str) -> None:
    """TruncatedMessage if ``payload`` is short of ``size``, MalformedMessage if longer."""
    if len(payload) < size:
        raise TruncatedMessage(what, expected=size, found=len(payload))
    if len(payload) > size:
        raise MalformedMessage(what, expected=f"{size} payload bytes", found=len(payload))


class Request:
    """Base of every request: the header it goes with, its payload, and how both decode."""

    __slots__ = ()

    COMMAND: ClassVar[Command]
    PAYLOAD_SIZE: ClassVar[int] = 0

    def header_fields(self) -> tuple[int, int, int]:
        """``(cmd_flags, data, data2)`` as the client sends them."""
        return 0, 0, 0

    def payload(self) -> bytes:
        """The bytes after the header."""
        return b""

    def wire_length(self, payload: bytes) -> int:
        """The header's ``length``: 32 + payload, except where sanlock's client says otherwise."""
        return HEADER_SIZE + len(payload)

    def header(self, payload: bytes = b"", *, seq: int = 0) -> Header:
        """The header sent before ``payload``."""
        cmd_flags, data, data2 = self.header_fields()
        return Header(self.COMMAND, cmd_flags, self.wire_length(payload), data, data2, seq=seq)

    def encode(self, *, seq: int = 0) -> bytes:
        """The whole message: header and payload."""
        payload = self.payload()
        return self.header(payload, seq=seq).pack() + payload

    @classmethod
    def payload_size(cls, header: Header, prefix: bytes) -> int:
        """Payload bytes the daemon reads for ``header``, knowing the first ``prefix`` bytes.

        If the answer depends on bytes not yet seen, it is at least ``len(prefix) + 1``; call
        again with more. A payload whose structure is invalid makes this raise MalformedMessage.
        """
        return cls.PAYLOAD_SIZE

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        """The request these bytes carry (``payload`` must be exactly the command's)."""
        exact(payload, cls.PAYLOAD_SIZE, cls.COMMAND.name)
        return cls._decode(header, payload)

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        raise NotImplementedError


def resources_size(prefix: bytes, count: int, what: str) -> int:
    """Size of ``count`` resources, each followed by its disks (as far as ``prefix`` shows).

    MalformedMessage with ``-E2BIG`` for more than 8 resources, ``-ERANGE`` for a resource
    whose ``num_disks`` is not 1..4 (sanlock's checks, made as soon as the bytes are there).
    """
    if count > MAX_RESOURCES:
        raise MalformedMessage(
            f"{what} resource count", expected=f"<= {MAX_RESOURCES}", found=count,
            code=-errno.E2BIG,
        )  # fmt: skip
    pos = 0
    for _ in range(count):
        if len(prefix) < pos + Resource.SIZE:
            return pos + Resource.SIZE
        head = Resource.unpack(prefix, pos)
        if not 1 <= head.num_disks <= MAX_DISKS:
            raise MalformedMessage(
                f"{what} num_disks", expected=f"1..{MAX_DISKS}", found=head.num_disks,
                code=-errno.ERANGE,
            )  # fmt: skip
        pos += Resource.SIZE + head.num_disks * Disk.SIZE
    return pos


def _resources_with_disks(payload: bytes, count: int) -> tuple[tuple[Resource, ...], int]:
    resources = []
    pos = 0
    for _ in range(count):
        resource, pos = Resource.unpack_with_disks(payload, pos)
        resources.append(resource)
    return tuple(resources), pos


@dataclass(frozen=True, slots=True)
class Register(Request):
    """REGISTER (1): make this connection the lease owner for the sending pid. No reply."""

    COMMAND: ClassVar[Command] = Command.REGISTER

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        return cls()


@dataclass(frozen=True, slots=True)
class Restrict(Request):
    """RESTRICT (10): set the connection's ``SANLK_RESTRICT_*`` flags (replacing them)."""

    flags: int = 0
    target: int = SELF

    COMMAND: ClassVar[Command] = Command.RESTRICT

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, 0, u32(self.target, "target")

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        return cls(header.cmd_flags, header.target)


@dataclass(frozen=True, slots=True)
class Killpath(Request):
    """KILLPATH (17): the program (and its arguments) to run when the leases must go.

    ``path`` and ``args`` are the two 128-byte NUL-padded fields; the client fits at most 126
    bytes in each (``snprintf`` with size 127) and the daemon forces a NUL in the last byte.
    """

    path: bytes
    args: bytes = b""
    flags: int = 0
    target: int = SELF

    COMMAND: ClassVar[Command] = Command.KILLPATH
    PAYLOAD_SIZE: ClassVar[int] = HELPER_PATH_LEN + HELPER_ARGS_LEN

    def __post_init__(self) -> None:
        check_fields(self, {"path": -HELPER_PATH_LEN, "args": -HELPER_ARGS_LEN, "flags": 32})

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, 0, u32(self.target, "target")

    def payload(self) -> bytes:
        return self.path.ljust(HELPER_PATH_LEN, b"\0") + self.args.ljust(HELPER_ARGS_LEN, b"\0")

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        path, args = payload[:HELPER_PATH_LEN], payload[HELPER_PATH_LEN:]
        return cls(path, args, header.cmd_flags, header.target)


@dataclass(frozen=True, slots=True)
class Acquire(Request):
    """ACQUIRE (7): acquire up to 8 resources (each with its 1..4 disks), then the options.

    ``resources`` may be empty (a count-0 acquire sends only the options).
    """

    resources: tuple[Resource, ...] = ()
    options: Options = NO_OPTIONS
    flags: int = 0
    target: int = SELF

    COMMAND: ClassVar[Command] = Command.ACQUIRE

    def __post_init__(self) -> None:
        object.__setattr__(self, "resources", tuple(self.resources))
        if len(self.resources) > MAX_RESOURCES:
            raise UsageError(f"at most {MAX_RESOURCES} resources per acquire")
        if any(r.num_disks > MAX_DISKS for r in self.resources):
            raise UsageError(f"at most {MAX_DISKS} disks per resource")
        check_fields(self, {"flags": 32})

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, len(self.resources), u32(self.target, "target")

    def payload(self) -> bytes:
        body = b"".join(r.pack_with_disks() for r in self.resources)
        return body + self.options.pack()

    @classmethod
    def payload_size(cls, header: Header, prefix: bytes) -> int:
        size = resources_size(prefix, header.data, "acquire")
        return size if len(prefix) < size else size + Options.SIZE

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        size = resources_size(payload, header.data, "acquire")
        exact(payload, size + Options.SIZE, "ACQUIRE")
        resources, pos = _resources_with_disks(payload, header.data)
        return cls(resources, Options.unpack(payload, pos), header.cmd_flags, header.target)


@dataclass(frozen=True, slots=True)
class Release(Request):
    """RELEASE (8): release resources, sent without their disks (matched by the two names).

    With ``REL_ALL`` the daemon reads no resource, with ``REL_ORPHAN`` one, with ``REL_RENAME``
    two (the lease, then one carrying the new name), else one per count in ``data``.
    """

    resources: tuple[Resource, ...] = ()
    flags: int = 0
    target: int = SELF

    COMMAND: ClassVar[Command] = Command.RELEASE

    def __post_init__(self) -> None:
        object.__setattr__(self, "resources", tuple(r.without_disks() for r in self.resources))
        check_fields(self, {"flags": 32})

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, len(self.resources), u32(self.target, "target")

    def payload(self) -> bytes:
        return b"".join(r.pack() for r in self.resources)

    @classmethod
    def payload_size(cls, header: Header, prefix: bytes) -> int:
        flags = header.cmd_flags
        if flags & ReleaseFlag.ALL:
            return 0
        if flags & ReleaseFlag.ORPHAN:
            return Resource.SIZE
        if flags & ReleaseFlag.RENAME:
            return 2 * Resource.SIZE
        if header.data > MAX_RESOURCES:
            raise MalformedMessage(
                "release resource count", expected=f"<= {MAX_RESOURCES}", found=header.data,
                code=-errno.E2BIG,
            )  # fmt: skip
        return header.data * Resource.SIZE

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        size = cls.payload_size(header, payload)
        exact(payload, size, "RELEASE")
        count = size // Resource.SIZE
        resources = tuple(Resource.unpack(payload, i * Resource.SIZE) for i in range(count))
        return cls(resources, header.cmd_flags, header.target)


@dataclass(frozen=True, slots=True)
class Inquire(Request):
    """INQUIRE (9): which leases does the target hold? (Also probes whether a pid is known.)"""

    flags: int = 0
    target: int = SELF

    COMMAND: ClassVar[Command] = Command.INQUIRE

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, 0, u32(self.target, "target")

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        return cls(header.cmd_flags, header.target)


@dataclass(frozen=True, slots=True)
class Convert(Request):
    """CONVERT (27): switch a held lease between shared and exclusive (``RES_SHARED``)."""

    resource: Resource
    flags: int = 0
    target: int = SELF

    COMMAND: ClassVar[Command] = Command.CONVERT
    PAYLOAD_SIZE: ClassVar[int] = Resource.SIZE

    def __post_init__(self) -> None:
        object.__setattr__(self, "resource", self.resource.without_disks())

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, 0, u32(self.target, "target")

    def payload(self) -> bytes:
        return self.resource.pack()

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        return cls(Resource.unpack(payload), header.cmd_flags, header.target)


@dataclass(frozen=True, slots=True)
class RequestLease(Request):
    """REQUEST (11): ask the owner of a lease to release it (``force_mode`` in ``data``)."""

    resource: Resource
    flags: int = 0
    force_mode: int = 0

    COMMAND: ClassVar[Command] = Command.REQUEST

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, self.force_mode, 0

    def payload(self) -> bytes:
        return self.resource.pack_with_disks()

    @classmethod
    def payload_size(cls, header: Header, prefix: bytes) -> int:
        return resources_size(prefix, 1, "request")

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        exact(payload, cls.payload_size(header, payload), "REQUEST")
        return cls(Resource.unpack_with_disks(payload)[0], header.cmd_flags, header.data)


@dataclass(frozen=True, slots=True)
class ExamineResource(Request):
    """EXAMINE_RESOURCE (14): look at the request records of a held resource (no disks)."""

    resource: Resource
    flags: int = 0

    COMMAND: ClassVar[Command] = Command.EXAMINE_RESOURCE
    PAYLOAD_SIZE: ClassVar[int] = Resource.SIZE

    def __post_init__(self) -> None:
        object.__setattr__(self, "resource", self.resource.without_disks())

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, 0, 0

    def payload(self) -> bytes:
        return self.resource.pack()

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        return cls(Resource.unpack(payload), header.cmd_flags)


@dataclass(frozen=True, slots=True)
class ExamineLockspace(Request):
    """EXAMINE_LOCKSPACE (13): the same for every held resource of a lockspace."""

    lockspace: Lockspace
    flags: int = 0

    COMMAND: ClassVar[Command] = Command.EXAMINE_LOCKSPACE
    PAYLOAD_SIZE: ClassVar[int] = Lockspace.SIZE

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, 0, 0

    def payload(self) -> bytes:
        return self.lockspace.pack()

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        return cls(Lockspace.unpack(payload), header.cmd_flags)


@dataclass(frozen=True, slots=True)
class SetLvb(Request):
    """SET_LVB (25): the lock value block of a held resource; its size comes from ``length``."""

    resource: Resource
    lvb: bytes
    flags: int = 0

    COMMAND: ClassVar[Command] = Command.SET_LVB

    def __post_init__(self) -> None:
        object.__setattr__(self, "resource", self.resource.without_disks())
        if not isinstance(self.lvb, bytes):
            raise UsageError("lvb must be bytes")

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, 0, 0

    def payload(self) -> bytes:
        return self.resource.pack() + self.lvb

    @classmethod
    def payload_size(cls, header: Header, prefix: bytes) -> int:
        lvblen = header.length - HEADER_SIZE - Resource.SIZE
        if lvblen > LVB_MAX:
            raise MalformedMessage("SET_LVB lvb length", expected=f"<= {LVB_MAX}",
                                   found=lvblen, code=-errno.E2BIG)  # fmt: skip
        if lvblen < 0:
            raise MalformedMessage("SET_LVB length", expected=f">= {HEADER_SIZE + Resource.SIZE}",
                                   found=header.length, code=-errno.EINVAL)  # fmt: skip
        return Resource.SIZE + lvblen

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        exact(payload, cls.payload_size(header, payload), "SET_LVB")
        return cls(Resource.unpack(payload), payload[Resource.SIZE :], header.cmd_flags)


@dataclass(frozen=True, slots=True)
class GetLvb(Request):
    """GET_LVB (26): read a held resource's lvb; ``length`` 0 means one sector (``data2``)."""

    resource: Resource
    length: int = 0
    flags: int = 0

    COMMAND: ClassVar[Command] = Command.GET_LVB
    PAYLOAD_SIZE: ClassVar[int] = Resource.SIZE

    def __post_init__(self) -> None:
        object.__setattr__(self, "resource", self.resource.without_disks())

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, 0, self.length

    def payload(self) -> bytes:
        return self.resource.pack()

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        return cls(Resource.unpack(payload), header.data2, header.cmd_flags)
