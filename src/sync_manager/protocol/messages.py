"""Every command's request and reply types, and the four conversions between them and bytes.

For the daemon: :func:`decode_request` (a header and its payload to a typed request) and
:func:`encode_reply` (a typed reply to the bytes sent back, from the request's header); for a
client: :func:`encode_request` and :func:`decode_reply`. :func:`error_reply` builds the reply a
client of sanlock expects when a command fails, including the structs some clients read even
then (READ_RESOURCE always reads its ``sanlk_resource``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TypeAlias

from sync_manager.errors import UsageError
from sync_manager.protocol.errors import MalformedMessage, UnknownCommand
from sync_manager.protocol.header import HEADER_SIZE, Command, Header
from sync_manager.protocol.replies import (
    HostsReply,
    InquireReply,
    LockspacesReply,
    LogDumpReply,
    LvbReply,
    NoReply,
    OwnersReply,
    ReadLockspaceReply,
    ReadResourceReply,
    RentryReply,
    Reply,
    Result,
    ShutdownWaitReply,
    StateReply,
    VersionReply,
)
from sync_manager.protocol.requests import (
    Acquire,
    Convert,
    ExamineLockspace,
    ExamineResource,
    GetLvb,
    Inquire,
    Killpath,
    Register,
    Release,
    Request,
    RequestLease,
    Restrict,
    SetLvb,
)
from sync_manager.protocol.requests_admin import (
    AddLockspace,
    EndEvent,
    GetHosts,
    GetLockspaces,
    HostStatus,
    InqLockspace,
    LogDump,
    RegEvent,
    RemLockspace,
    Renewal,
    SetConfig,
    SetEvent,
    Shutdown,
    ShutdownWait,
    Status,
    Version,
)
from sync_manager.protocol.requests_disk import (
    Align,
    CreateResource,
    DeleteResource,
    FormatRindex,
    LookupRindex,
    ReadLockspace,
    ReadResource,
    ReadResourceOwners,
    RebuildRindex,
    UpdateRindex,
    WriteLockspace,
    WriteResource,
)
from sync_manager.protocol.structs import Resource

__all__ = [
    "REPLY_TYPES",
    "REQUEST_TYPES",
    "ReplyType",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
    "error_reply",
    "request_payload_size",
]

_REQUESTS: tuple[type[Request], ...] = (
    Register, Restrict, Killpath, Acquire, Release, Inquire, Convert, RequestLease,
    ExamineResource, ExamineLockspace, SetLvb, GetLvb,
    AddLockspace, InqLockspace, RemLockspace, GetHosts, EndEvent, HostStatus, Renewal,
    SetConfig, RegEvent, SetEvent, Status, Shutdown, ShutdownWait, LogDump, GetLockspaces,
    Version,
    Align, WriteLockspace, ReadLockspace, ReadResource, ReadResourceOwners, WriteResource,
    FormatRindex, RebuildRindex, UpdateRindex, LookupRindex, DeleteResource, CreateResource,
)  # fmt: skip

REQUEST_TYPES: Mapping[Command, type[Request]] = MappingProxyType(
    {cls.COMMAND: cls for cls in _REQUESTS}
)
"""The request class of each command."""

ReplyType: TypeAlias = (
    type[NoReply] | type[Result] | type[InquireReply] | type[LockspacesReply]
    | type[HostsReply] | type[ReadLockspaceReply] | type[ReadResourceReply]
    | type[OwnersReply] | type[LvbReply] | type[VersionReply] | type[StateReply]
    | type[LogDumpReply] | type[ShutdownWaitReply] | type[RentryReply]
)  # fmt: skip

_SPECIAL_REPLIES: dict[Command, ReplyType] = {
    Command.REGISTER: NoReply,
    Command.SHUTDOWN: NoReply,
    Command.INQUIRE: InquireReply,
    Command.GET_LOCKSPACES: LockspacesReply,
    Command.GET_HOSTS: HostsReply,
    Command.READ_LOCKSPACE: ReadLockspaceReply,
    Command.READ_RESOURCE: ReadResourceReply,
    Command.READ_RESOURCE_OWNERS: OwnersReply,
    Command.GET_LVB: LvbReply,
    Command.VERSION: VersionReply,
    Command.STATUS: StateReply,
    Command.HOST_STATUS: StateReply,
    Command.RENEWAL: StateReply,
    Command.LOG_DUMP: LogDumpReply,
    Command.SHUTDOWN_WAIT: ShutdownWaitReply,
    Command.UPDATE_RINDEX: RentryReply,
    Command.LOOKUP_RINDEX: RentryReply,
    Command.CREATE_RESOURCE: RentryReply,
    Command.DELETE_RESOURCE: RentryReply,
}

REPLY_TYPES: Mapping[Command, ReplyType] = MappingProxyType(
    {command: _SPECIAL_REPLIES.get(command, Result) for command in Command}
)
"""The reply class of each command (``Result``, the bare result header, for most)."""


def _request_type(header: Header) -> type[Request]:
    command = header.command
    if command is None:
        raise UnknownCommand("message header", expected="a command 1..40", found=header.cmd)
    return REQUEST_TYPES[command]


def request_payload_size(header: Header, prefix: bytes = b"") -> int:
    """Payload bytes the daemon reads after ``header`` (see :meth:`Request.payload_size`).

    0 for a command number sanlock does not know (it reads only the header).
    """
    if header.command is None:
        return 0
    return _request_type(header).payload_size(header, prefix)


def decode_request(header: Header, payload: bytes) -> Request:
    """The typed request of ``header`` and its whole ``payload``.

    Raises UnknownCommand, or MalformedMessage (TruncatedMessage) carrying the code sanlock
    would answer.
    """
    return _request_type(header).decode(header, bytes(payload))


def encode_request(request: Request, *, seq: int = 0) -> bytes:
    """The bytes a sanlock client sends for ``request``."""
    return request.encode(seq=seq)


def encode_reply(request: Header, reply: Reply) -> bytes:
    """The bytes the daemon sends for ``reply`` to the request with header ``request``.

    UsageError if ``reply`` is not the kind the command's clients read (a ``Result`` is
    accepted for any command with no special reply and for INQUIRE, whose error reply is a
    plain result header).
    """
    command = request.command
    expected = REPLY_TYPES.get(command) if command is not None else Result
    allowed = {expected, Result} if command == Command.INQUIRE else {expected}
    if type(reply) not in allowed:
        raise UsageError(f"{type(reply).__name__} is not a reply to command {request.cmd}")
    return reply.encode(request)


def decode_reply(command: Command, data: bytes) -> Reply:
    """The reply in ``data`` (its header and all its payload) to a ``command`` request.

    For STATUS, HOST_STATUS and RENEWAL ``data`` is everything up to the connection's end.
    """
    header = Header.unpack(data)
    cls = REPLY_TYPES[command]
    size = cls.payload_size(header)
    payload = bytes(data[HEADER_SIZE:])
    if size is not None and size != len(payload):
        raise MalformedMessage(
            f"{command.name} reply", expected=f"{size} payload bytes", found=len(payload)
        )
    return cls.decode(header, payload)


def error_reply(command: Command, code: int, *, resource: Resource | None = None) -> Reply:
    """The reply sanlock sends when ``command`` fails with ``code`` early (bad request).

    READ_RESOURCE clients always read a resource: ``resource`` (the request's, if known) or an
    empty one is sent. Commands without a reply get :class:`NoReply`.
    """
    cls = REPLY_TYPES[command]
    if cls is NoReply:
        return NoReply()
    if cls is ReadResourceReply:
        return ReadResourceReply(code, resource or Resource(b"", b""))
    if cls is ReadLockspaceReply:
        return ReadLockspaceReply(code)
    if cls is LogDumpReply:
        return LogDumpReply()
    if cls is VersionReply:
        return VersionReply(result=code)
    if cls is OwnersReply:
        return OwnersReply(code, resource)
    if cls is RentryReply:
        return RentryReply(code)
    if cls is StateReply:
        return StateReply(code)
    if cls is InquireReply:
        return InquireReply(code)
    if cls is LockspacesReply:
        return LockspacesReply(code)
    if cls is HostsReply:
        return HostsReply(code)
    if cls is LvbReply:
        return LvbReply(code)
    if cls is ShutdownWaitReply:
        return ShutdownWaitReply(code)
    return Result(code)
