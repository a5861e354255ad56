"""Replies that carry a counted list of structs, and the reply-header helpers (spec 2.5.13,
2.5.14, 2.5.23).

``data2`` is the count. GET_LOCKSPACES and GET_HOSTS send ``count`` structs, or fewer with
``-ENOSPC`` when the daemon's 1 MiB buffer is full (``count`` stays the total; sanlock's client
then fails its short read). READ_RESOURCE_OWNERS sends the ``sanlk_resource`` first, even on
failure, then the hosts: an exclusive owner first, then shared owners (timestamp 0).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Self

from sync_manager.errors import UsageError
from sync_manager.protocol.errors import MalformedMessage
from sync_manager.protocol.header import SM_PROTO, Header, u32
from sync_manager.protocol.structs import Host, Lockspace, Resource

__all__ = [
    "HostsReply",
    "LockspacesReply",
    "OwnersReply",
    "check_int",
    "reply_bytes",
    "reply_header",
]


def check_int(value: int, *, signed: bool = True) -> None:
    """UsageError unless ``value`` fits a C ``int`` (or, unsigned, a ``uint32``)."""
    low, high = (-(1 << 31), 1 << 31) if signed else (0, 1 << 32)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < high:
        raise UsageError(f"{value!r} does not fit a 32-bit {'int' if signed else 'uint32'}")


def reply_header(request: Header, result: int, *, data2: int = 0, payload_len: int = 0) -> Header:
    """``send_result``'s header: the request's, version 1, the result, ``data2``, the length."""
    return request.replace(
        version=SM_PROTO, length=Header.SIZE + payload_len, data=u32(result), data2=data2
    )


def reply_bytes(request: Header, result: int, *, data2: int = 0, payload: bytes = b"") -> bytes:
    """A reply header for ``payload``, then ``payload``."""
    head = reply_header(request, result, data2=data2, payload_len=len(payload))
    return head.pack() + payload


def _count(count: int, sent: int) -> int:
    count = sent if count == -1 else count
    check_int(count, signed=False)
    if count < sent:
        raise UsageError(f"count {count} is less than the {sent} structs sent")
    return count


def _structs(payload: bytes, size: int, what: str) -> int:
    if len(payload) % size:
        raise MalformedMessage(what, expected=f"a multiple of {size} bytes", found=len(payload))
    return len(payload) // size


def _check_count(header: Header, sent: int, what: str) -> None:
    """All ``count`` structs must be there, unless the result is an error (-ENOSPC: fewer)."""
    if sent > header.data2 or (header.result >= 0 and sent != header.data2):
        raise MalformedMessage(what, expected=f"{header.data2} structs", found=sent)


@dataclass(frozen=True, slots=True)
class LockspacesReply:
    """GET_LOCKSPACES: joined, then leaving (``LSF_REM``), then joining (``LSF_ADD``)."""

    result: int = 0
    lockspaces: tuple[Lockspace, ...] = ()
    count: int = -1

    def __post_init__(self) -> None:
        check_int(self.result)
        object.__setattr__(self, "lockspaces", tuple(self.lockspaces))
        object.__setattr__(self, "count", _count(self.count, len(self.lockspaces)))

    def encode(self, request: Header) -> bytes:
        """The header (``data2`` = count) and the lockspaces."""
        payload = b"".join(ls.pack() for ls in self.lockspaces)
        return reply_bytes(request, self.result, data2=self.count, payload=payload)

    @classmethod
    def payload_size(cls, header: Header) -> int | None:
        """``length`` - 32."""
        return header.payload_length

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        """The lockspaces (all ``count`` of them unless the result is an error)."""
        n = _structs(payload, Lockspace.SIZE, "GET_LOCKSPACES reply")
        _check_count(header, n, "GET_LOCKSPACES reply")
        lockspaces = tuple(Lockspace.unpack(payload, i * Lockspace.SIZE) for i in range(n))
        return cls(header.result, lockspaces, header.data2)


@dataclass(frozen=True, slots=True)
class HostsReply:
    """GET_HOSTS: the hosts of a lockspace (flags & 0xF = ``HostState``)."""

    result: int = 0
    hosts: tuple[Host, ...] = ()
    count: int = -1

    def __post_init__(self) -> None:
        check_int(self.result)
        object.__setattr__(self, "hosts", tuple(self.hosts))
        object.__setattr__(self, "count", _count(self.count, len(self.hosts)))

    def encode(self, request: Header) -> bytes:
        """The header (``data2`` = count) and the hosts."""
        payload = b"".join(host.pack() for host in self.hosts)
        return reply_bytes(request, self.result, data2=self.count, payload=payload)

    @classmethod
    def payload_size(cls, header: Header) -> int | None:
        """``length`` - 32."""
        return header.payload_length

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        """The hosts (all ``count`` of them unless the result is an error)."""
        n = _structs(payload, Host.SIZE, "GET_HOSTS reply")
        _check_count(header, n, "GET_HOSTS reply")
        hosts = tuple(Host.unpack(payload, i * Host.SIZE) for i in range(n))
        return cls(header.result, hosts, header.data2)


@dataclass(frozen=True, slots=True)
class OwnersReply:
    """READ_RESOURCE_OWNERS: the resource as read (lver, SHARED), then its owners.

    sanlock always sends the resource; ``resource`` None sends none (clients read it only on
    success).
    """

    result: int = 0
    resource: Resource | None = None
    hosts: tuple[Host, ...] = ()
    count: int = -1

    def __post_init__(self) -> None:
        check_int(self.result)
        object.__setattr__(self, "hosts", tuple(self.hosts))
        object.__setattr__(self, "count", _count(self.count, len(self.hosts)))
        if self.resource is None and self.hosts:
            raise UsageError("owners are sent after the resource")

    def encode(self, request: Header) -> bytes:
        """The header (``data2`` = count), the resource, the hosts."""
        payload = b"" if self.resource is None else self.resource.pack()
        payload += b"".join(host.pack() for host in self.hosts)
        return reply_bytes(request, self.result, data2=self.count, payload=payload)

    @classmethod
    def payload_size(cls, header: Header) -> int | None:
        """``length`` - 32."""
        return header.payload_length

    @classmethod
    def decode(cls, header: Header, payload: bytes) -> Self:
        """The resource and the owners."""
        if not payload:
            if header.result >= 0:
                raise MalformedMessage("READ_RESOURCE_OWNERS reply", expected="a resource",
                                       found="no payload", code=-errno.ENOTCONN)  # fmt: skip
            return cls(header.result, None, (), header.data2)
        resource = Resource.unpack(payload)
        rest = payload[Resource.SIZE :]
        n = _structs(rest, Host.SIZE, "READ_RESOURCE_OWNERS reply")
        _check_count(header, n, "READ_RESOURCE_OWNERS reply")
        hosts = tuple(Host.unpack(rest, i * Host.SIZE) for i in range(n))
        return cls(header.result, resource, hosts, header.data2)
