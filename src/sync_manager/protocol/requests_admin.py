"""Requests about lockspaces, events and the daemon (spec 2.5.10-2.5.17, 2.5.25-2.5.29).

Same conventions as :mod:`sync_manager.protocol.requests`. Two quirks of sanlock's clients are
kept so that our encoder sends their exact bytes: HOST_STATUS and RENEWAL (``sanlock client``)
announce ``length`` = 32 and then send a ``sanlk_lockspace`` anyway; the daemon reads it
because it reads fixed sizes and never looks at ``length``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from sync_manager.protocol.header import HEADER_SIZE, Command, Header
from sync_manager.protocol.requests import Request
from sync_manager.protocol.structs import NO_EVENT, HostEvent, Lockspace

__all__ = [
    "AddLockspace",
    "EndEvent",
    "GetHosts",
    "GetLockspaces",
    "HostStatus",
    "InqLockspace",
    "LogDump",
    "RegEvent",
    "RemLockspace",
    "Renewal",
    "SetConfig",
    "SetEvent",
    "Shutdown",
    "ShutdownWait",
    "Status",
    "Version",
]


@dataclass(frozen=True, slots=True)
class _LockspaceRequest(Request):
    """A request whose payload is one ``sanlk_lockspace`` and whose ``data`` means nothing."""

    lockspace: Lockspace
    flags: int = 0

    PAYLOAD_SIZE: ClassVar[int] = Lockspace.SIZE

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, 0, 0

    def payload(self) -> bytes:
        return self.lockspace.pack()

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        return cls(Lockspace.unpack(payload), header.cmd_flags)


@dataclass(frozen=True, slots=True)
class AddLockspace(Request):
    """ADD_LOCKSPACE (2): join a lockspace; ``io_timeout`` 0 means the daemon's default."""

    lockspace: Lockspace
    flags: int = 0
    io_timeout: int = 0

    COMMAND: ClassVar[Command] = Command.ADD_LOCKSPACE
    PAYLOAD_SIZE: ClassVar[int] = Lockspace.SIZE

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, self.io_timeout, 0

    def payload(self) -> bytes:
        return self.lockspace.pack()

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        return cls(Lockspace.unpack(payload), header.cmd_flags, header.data)


@dataclass(frozen=True, slots=True)
class InqLockspace(_LockspaceRequest):
    """INQ_LOCKSPACE (16): is this lockspace joined (0), being joined/left, or unknown?"""

    COMMAND: ClassVar[Command] = Command.INQ_LOCKSPACE


@dataclass(frozen=True, slots=True)
class RemLockspace(_LockspaceRequest):
    """REM_LOCKSPACE (3): leave a lockspace (flags ``REM_ASYNC``, ``REM_UNUSED``)."""

    COMMAND: ClassVar[Command] = Command.REM_LOCKSPACE


@dataclass(frozen=True, slots=True)
class GetHosts(_LockspaceRequest):
    """GET_HOSTS (23): hosts of a lockspace (``host_id`` 0: all with a timestamp)."""

    COMMAND: ClassVar[Command] = Command.GET_HOSTS


@dataclass(frozen=True, slots=True)
class EndEvent(_LockspaceRequest):
    """END_EVENT (31): drop the event connections of a lockspace that have been ended."""

    COMMAND: ClassVar[Command] = Command.END_EVENT


@dataclass(frozen=True, slots=True)
class HostStatus(_LockspaceRequest):
    """HOST_STATUS (15): the daemon's view of every host of a lockspace (a record stream)."""

    COMMAND: ClassVar[Command] = Command.HOST_STATUS

    def wire_length(self, payload: bytes) -> int:
        return HEADER_SIZE  # sanlock client: send_command() then the lockspace, length 32


@dataclass(frozen=True, slots=True)
class Renewal(_LockspaceRequest):
    """RENEWAL (34): the renewal history of a lockspace (a record stream)."""

    COMMAND: ClassVar[Command] = Command.RENEWAL

    def wire_length(self, payload: bytes) -> int:
        return HEADER_SIZE  # as HOST_STATUS


@dataclass(frozen=True, slots=True)
class SetConfig(Request):
    """SET_CONFIG (33): ``cmd`` (``data``) is a ``SANLK_CONFIG_*`` value."""

    lockspace: Lockspace
    cmd: int = 0
    flags: int = 0

    COMMAND: ClassVar[Command] = Command.SET_CONFIG
    PAYLOAD_SIZE: ClassVar[int] = Lockspace.SIZE

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, self.cmd, 0

    def payload(self) -> bytes:
        return self.lockspace.pack()

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        return cls(Lockspace.unpack(payload), header.data, header.cmd_flags)


@dataclass(frozen=True, slots=True)
class _EventRequest(Request):
    """A lockspace (by name) and a ``sanlk_host_event``."""

    lockspace: Lockspace
    event: HostEvent = NO_EVENT
    flags: int = 0

    PAYLOAD_SIZE: ClassVar[int] = Lockspace.SIZE + HostEvent.SIZE

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, 0, 0

    def payload(self) -> bytes:
        return self.lockspace.pack() + self.event.pack()

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        event = HostEvent.unpack(payload, Lockspace.SIZE)
        return cls(Lockspace.unpack(payload), event, header.cmd_flags)


@dataclass(frozen=True, slots=True)
class RegEvent(_EventRequest):
    """REG_EVENT (30): keep this connection to receive the lockspace's events (event unused)."""

    COMMAND: ClassVar[Command] = Command.REG_EVENT


@dataclass(frozen=True, slots=True)
class SetEvent(_EventRequest):
    """SET_EVENT (32): publish an event for a host (flags ``SANLK_SETEV_*``)."""

    COMMAND: ClassVar[Command] = Command.SET_EVENT


@dataclass(frozen=True, slots=True)
class _DataOnly(Request):
    """A header-only request whose ``data`` is its argument."""

    data: int = 0
    flags: int = 0

    def header_fields(self) -> tuple[int, int, int]:
        return self.flags, self.data, 0

    @classmethod
    def _decode(cls, header: Header, payload: bytes) -> Self:
        return cls(header.data, header.cmd_flags)


@dataclass(frozen=True, slots=True)
class Status(_DataOnly):
    """STATUS (5): the daemon's state; ``data`` filters (0 all, else a ``StateType``)."""

    COMMAND: ClassVar[Command] = Command.STATUS


@dataclass(frozen=True, slots=True)
class Shutdown(_DataOnly):
    """SHUTDOWN (4): stop the daemon (``data`` 1 forces it). No reply."""

    COMMAND: ClassVar[Command] = Command.SHUTDOWN


@dataclass(frozen=True, slots=True)
class ShutdownWait(_DataOnly):
    """SHUTDOWN_WAIT (29): as SHUTDOWN, answered when the daemon has stopped."""

    COMMAND: ClassVar[Command] = Command.SHUTDOWN_WAIT


@dataclass(frozen=True, slots=True)
class LogDump(_DataOnly):
    """LOG_DUMP (6): the daemon's in-memory log."""

    COMMAND: ClassVar[Command] = Command.LOG_DUMP


@dataclass(frozen=True, slots=True)
class GetLockspaces(_DataOnly):
    """GET_LOCKSPACES (22): every lockspace, joined, leaving or joining."""

    COMMAND: ClassVar[Command] = Command.GET_LOCKSPACES


@dataclass(frozen=True, slots=True)
class Version(_DataOnly):
    """VERSION (28): the daemon's version; its header's version check is skipped."""

    COMMAND: ClassVar[Command] = Command.VERSION
