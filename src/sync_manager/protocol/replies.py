"""Replies: what the daemon sends back, and how clients read it (spec 2.1, 2.5).

A reply starts with the request's header sent back (``send_result``: magic, cmd, cmd_flags and
seq echoed; version set to ``SM_PROTO``; ``length`` = 32 + payload; ``data`` = the result;
``data2`` = 0 or a count). ``encode(request)`` builds the bytes from the request's header;
``decode(header, payload)`` reads them as a client of sanlock 3.8.5 does, and
``payload_size(header)`` says how many payload bytes follow a reply header (None: until the
daemon closes the connection). The exceptions to the echo rule, each kept here:

* VERSION: a fresh header, cmd_flags 0, seq 0, ``data2`` the version number;
* LOG_DUMP: ``length`` stays the request's, ``data`` is the text's length;
* STATUS, HOST_STATUS, RENEWAL: ``length`` 32, then records until the connection closes;
* SHUTDOWN_WAIT on success: a fresh header with cmd 0;
* REGISTER and SHUTDOWN: no reply at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self, TypeAlias

from sync_manager.errors import UsageError
from sync_manager.protocol.errors import MalformedMessage
from sync_manager.protocol.header import HEADER_SIZE, SM_PROTO, Command, Header, u32
from sync_manager.protocol.replies_lists import (
    HostsReply,
    LockspacesReply,
    OwnersReply,
    check_int,
    reply_bytes,
    reply_header,
)
from sync_manager.protocol.requests import exact
from sync_manager.protocol.rindex import NO_ENTRY, Rentry
from sync_manager.protocol.state import StateRecord, decode_records
from sync_manager.protocol.structs import NO_RESOURCE, Lockspace, Resource

__all__ = [
    "VERSION_3_8_5",
    "HostsReply",
    "InquireReply",
    "LockspacesReply",
    "LogDumpReply",
    "LvbReply",
    "NoReply",
    "OwnersReply",
    "ReadLockspaceReply",
    "ReadResourceReply",
    "RentryReply",
    "Reply",
    "Result",
    "ShutdownWaitReply",
    "StateReply",
    "VersionReply",
    "reply_bytes",
    "reply_header",
]

VERSION_3_8_5 = 0x03080500
"""``(major << 24) | (minor << 16) | (patch << 8) | build`` for sanlock 3.8.5."""


@dataclass(frozen=True, slots=True)
class NoReply:
    """REGISTER and SHUTDOWN: the daemon sends nothing back."""

    def encode(self, request: Header) -> bytes:
        """Nothing."""
        return b""

    @classmethod
    def payload_size(cls, header: Header) -> int | None:
        """Never called: there is no reply header."""
        return 0

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        """Only for symmetry."""
        return cls()


@dataclass(frozen=True, slots=True)
class Result:
    """The plain result header (``send_result``): ``data`` = result, ``data2`` = 0.

    REG_EVENT, END_EVENT and SET_CONFIG echo the request's ``data2`` instead of clearing it.
    """

    result: int = 0

    ECHO_DATA2: ClassVar[frozenset[int]] = frozenset(
        {Command.REG_EVENT, Command.END_EVENT, Command.SET_CONFIG}
    )

    def __post_init__(self) -> None:
        check_int(self.result)

    def encode(self, request: Header) -> bytes:
        """The 32-byte result header for ``request``."""
        data2 = request.data2 if request.cmd in self.ECHO_DATA2 else 0
        return reply_header(request, self.result, data2=data2).pack()

    @classmethod
    def payload_size(cls, header: Header) -> int | None:
        """No payload."""
        return 0

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        """The result (clients read only ``data``)."""
        exact(payload, 0, "result reply")
        return cls(header.result)


@dataclass(frozen=True, slots=True)
class InquireReply:
    """INQUIRE: ``count`` leases (``data2``) and their state string (None when none are held).

    The string is the held resources in ``sanlock_res_to_str`` form joined by spaces; it is sent
    with its NUL, and ``length`` = 32 + strlen + 1.
    """

    result: int = 0
    count: int = 0
    state: bytes | None = None

    def __post_init__(self) -> None:
        check_int(self.result)
        check_int(self.count, signed=False)
        if self.state is not None and (not isinstance(self.state, bytes) or b"\0" in self.state):
            raise UsageError("inquire state must be bytes without NUL")

    def encode(self, request: Header) -> bytes:
        """The header, then the state string and its NUL if there is one."""
        payload = b"" if self.state is None else self.state + b"\0"
        return reply_bytes(request, self.result, data2=self.count, payload=payload)

    @classmethod
    def payload_size(cls, header: Header) -> int | None:
        """``length`` - 32."""
        return header.payload_length

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        """As ``sanlock_inquire``: no payload means no state string."""
        if not payload:
            return cls(header.result, header.data2, None)
        if not payload.endswith(b"\0") or b"\0" in payload[:-1]:
            raise MalformedMessage(
                "inquire state string", expected="one NUL-terminated string", found=payload[-16:]
            )
        return cls(header.result, header.data2, payload[:-1])


@dataclass(frozen=True, slots=True)
class ReadLockspaceReply:
    """READ_LOCKSPACE: ``data2`` = io_timeout, then the lockspace as read from disk.

    sanlock sends the ``sanlk_lockspace`` even on failure; clients read it only on success.
    ``lockspace`` None sends none.
    """

    result: int = 0
    io_timeout: int = 0
    lockspace: Lockspace | None = None

    def __post_init__(self) -> None:
        check_int(self.result)
        check_int(self.io_timeout, signed=False)

    def encode(self, request: Header) -> bytes:
        """The header, then the lockspace."""
        payload = b"" if self.lockspace is None else self.lockspace.pack()
        return reply_bytes(request, self.result, data2=self.io_timeout, payload=payload)

    @classmethod
    def payload_size(cls, header: Header) -> int | None:
        """``length`` - 32."""
        return header.payload_length

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        """The io_timeout and the lockspace (if one was sent)."""
        if not payload:
            return cls(header.result, header.data2, None)
        exact(payload, Lockspace.SIZE, "READ_LOCKSPACE reply")
        return cls(header.result, header.data2, Lockspace.unpack(payload))


@dataclass(frozen=True, slots=True)
class ReadResourceReply:
    """READ_RESOURCE: the resource as read from disk, always sent (clients always read it)."""

    result: int = 0
    resource: Resource = NO_RESOURCE

    def __post_init__(self) -> None:
        check_int(self.result)

    def encode(self, request: Header) -> bytes:
        """The header, then the 128-byte resource (no disks)."""
        return reply_bytes(request, self.result, payload=self.resource.pack())

    @classmethod
    def payload_size(cls, header: Header) -> int | None:
        """Always one ``sanlk_resource``."""
        return Resource.SIZE

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        """The result and the resource."""
        exact(payload, Resource.SIZE, "READ_RESOURCE reply")
        return cls(header.result, Resource.unpack(payload))


@dataclass(frozen=True, slots=True)
class LvbReply:
    """GET_LVB: the lvb bytes (``length`` - 32 of them)."""

    result: int = 0
    lvb: bytes = b""

    def __post_init__(self) -> None:
        check_int(self.result)

    def encode(self, request: Header) -> bytes:
        """The header, then the lvb."""
        return reply_bytes(request, self.result, payload=self.lvb)

    @classmethod
    def payload_size(cls, header: Header) -> int | None:
        """``length`` - 32."""
        return header.payload_length

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        """The result and the bytes."""
        return cls(header.result, payload)


@dataclass(frozen=True, slots=True)
class VersionReply:
    """VERSION: a fresh header whose ``data2`` is the daemon's version, ``version`` its proto."""

    version: int = VERSION_3_8_5
    proto: int = SM_PROTO
    result: int = 0

    def __post_init__(self) -> None:
        check_int(self.result)
        check_int(self.version, signed=False)
        check_int(self.proto, signed=False)

    def encode(self, request: Header) -> bytes:
        """The header ``cmd_version`` builds (magic, version, cmd, length fixed; seq 0)."""
        return Header(
            Command.VERSION, 0, HEADER_SIZE, u32(self.result), self.version,
            magic=request.magic, version=self.proto,
        ).pack()  # fmt: skip

    @classmethod
    def payload_size(cls, header: Header) -> int | None:
        """No payload."""
        return 0

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        """As ``sanlock_version``: ``data2`` and ``version``."""
        exact(payload, 0, "VERSION reply")
        return cls(header.data2, header.version, header.result)


@dataclass(frozen=True, slots=True)
class StateReply:
    """STATUS, HOST_STATUS, RENEWAL: a header (``length`` 32) and records until EOF.

    ``data2`` is the lockspace's io_timeout for RENEWAL, else 0. Only STATUS records carry the
    binary trailers (LOCKSPACE: a lockspace; RESOURCE: a resource and its disks).
    """

    result: int = 0
    records: tuple[StateRecord, ...] = ()
    data2: int = 0

    def __post_init__(self) -> None:
        check_int(self.result)
        check_int(self.data2, signed=False)
        object.__setattr__(self, "records", tuple(self.records))

    def encode(self, request: Header) -> bytes:
        """The header and every record (the daemon then closes the connection)."""
        trailers = request.cmd == Command.STATUS
        head = Header(
            request.cmd, request.cmd_flags, HEADER_SIZE, u32(self.result), self.data2,
            magic=request.magic, seq=request.seq,
        ).pack()  # fmt: skip
        return head + b"".join(r.pack(with_trailer=trailers) for r in self.records)

    @classmethod
    def payload_size(cls, header: Header) -> int | None:
        """Until the daemon closes the connection."""
        return None

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        """The records (with trailers only for STATUS, as the CLI reads them)."""
        records = decode_records(payload, with_trailers=header.cmd == Command.STATUS)
        return cls(header.result, records, header.data2)


@dataclass(frozen=True, slots=True)
class LogDumpReply:
    """LOG_DUMP: the request header back with ``data`` = text length, then the text."""

    text: bytes = b""

    def encode(self, request: Header) -> bytes:
        """The echoed header (``length`` unchanged) and the text."""
        head = request.replace(version=SM_PROTO, data=len(self.text))
        return head.pack() + self.text

    @classmethod
    def payload_size(cls, header: Header) -> int | None:
        """``data`` bytes (none when it is not positive)."""
        return max(header.result, 0)

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        """The text."""
        return cls(payload)


@dataclass(frozen=True, slots=True)
class ShutdownWaitReply:
    """SHUTDOWN_WAIT: on success a fresh header (cmd 0, data 0) when the daemon has stopped."""

    result: int = 0

    def __post_init__(self) -> None:
        check_int(self.result)

    def encode(self, request: Header) -> bytes:
        """``daemon_shutdown_reply``'s header, or a result header for a refusal."""
        if self.result == 0:
            return Header(0, magic=request.magic).pack()
        return reply_header(request, self.result).pack()

    @classmethod
    def payload_size(cls, header: Header) -> int | None:
        """No payload."""
        return 0

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        """The result."""
        exact(payload, 0, "SHUTDOWN_WAIT reply")
        return cls(header.result)


@dataclass(frozen=True, slots=True)
class RentryReply:
    """UPDATE/LOOKUP_RINDEX, CREATE/DELETE_RESOURCE: the resulting entry, always sent."""

    result: int = 0
    entry: Rentry = NO_ENTRY

    def __post_init__(self) -> None:
        check_int(self.result)

    def encode(self, request: Header) -> bytes:
        """The header, then the 64-byte entry."""
        return reply_bytes(request, self.result, payload=self.entry.pack())

    @classmethod
    def payload_size(cls, header: Header) -> int | None:
        """``length`` - 32 (64)."""
        return header.payload_length

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        """The result and the entry."""
        exact(payload, Rentry.SIZE, "rindex reply")
        return cls(header.result, Rentry.unpack(payload))


Reply: TypeAlias = (
    NoReply
    | Result
    | InquireReply
    | LockspacesReply
    | HostsReply
    | ReadLockspaceReply
    | ReadResourceReply
    | OwnersReply
    | LvbReply
    | VersionReply
    | StateReply
    | LogDumpReply
    | ShutdownWaitReply
    | RentryReply
)
"""Any reply."""
