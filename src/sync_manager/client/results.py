"""What the client's calls return: small frozen dataclasses, built from the wire structs.

Names and paths are ``str`` (decoded up to their NUL, undecodable bytes shown escaped).
"""

from __future__ import annotations

from dataclasses import dataclass

from sync_manager.protocol import (
    HOST_STATE_MASK,
    Host,
    HostState,
    Lockspace,
    LockspaceFlag,
    Resource,
    ResourceFlag,
    StateRecord,
    StateType,
    align_from_flags,
    sector_from_flags,
)
from sync_manager.protocol.structs import text

__all__ = [
    "ClientState",
    "DaemonState",
    "DaemonVersion",
    "HeldLease",
    "HostInfo",
    "HostStatus",
    "LockspaceInfo",
    "LockspaceLeader",
    "LockspaceState",
    "ResourceInfo",
    "ResourceOwners",
    "ResourceState",
    "Status",
    "host_info",
]


def _state(flags: int) -> HostState | None:
    try:
        return HostState(flags & HOST_STATE_MASK)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class HostInfo:
    """A host of a lockspace (GET_HOSTS) or an owner of a resource (READ_RESOURCE_OWNERS).

    ``state`` is None when the daemon sent no known ``SANLK_HOST_*`` value (owners carry
    none); ``timestamp`` is 0 for shared owners.
    """

    host_id: int
    generation: int
    timestamp: int
    io_timeout: int
    state: HostState | None
    flags: int = 0


def host_info(host: Host) -> HostInfo:
    """The :class:`HostInfo` of a wire ``sanlk_host``."""
    return HostInfo(
        host.host_id,
        host.generation,
        host.timestamp,
        host.io_timeout,
        _state(host.flags),
        host.flags,
    )


@dataclass(frozen=True, slots=True)
class LockspaceInfo:
    """A lockspace the daemon knows (GET_LOCKSPACES): joined, or being added or removed."""

    name: str
    host_id: int
    path: str
    offset: int
    adding: bool = False
    removing: bool = False

    @classmethod
    def from_struct(cls, ls: Lockspace) -> LockspaceInfo:
        """From a wire ``sanlk_lockspace``."""
        return cls(
            ls.lockspace,
            ls.host_id,
            ls.disk.path_str,
            ls.disk.offset,
            bool(ls.flags & LockspaceFlag.ADD),
            bool(ls.flags & LockspaceFlag.REM),
        )


@dataclass(frozen=True, slots=True)
class LockspaceLeader:
    """What READ_LOCKSPACE found: a host's delta lease's lockspace name and sizes."""

    name: str
    host_id: int
    path: str
    offset: int
    io_timeout: int
    sector_size: int
    align_size: int


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """What READ_RESOURCE found: a paxos lease's names, lver and sizes."""

    lockspace: str
    name: str
    lver: int
    sector_size: int
    align_size: int
    resource: Resource

    @classmethod
    def from_struct(cls, res: Resource) -> ResourceInfo:
        """From the ``sanlk_resource`` the daemon sent back."""
        return cls(
            res.lockspace,
            res.resource,
            res.lver,
            sector_from_flags(res.flags),
            align_from_flags(res.flags),
            res,
        )


@dataclass(frozen=True, slots=True)
class ResourceOwners:
    """READ_RESOURCE_OWNERS: the lease (``shared`` if any shared owner) and its owners."""

    info: ResourceInfo
    shared: bool
    owners: tuple[HostInfo, ...]


@dataclass(frozen=True, slots=True)
class HeldLease:
    """A lease a process holds, as INQUIRE reports it: ``lver`` None for a shared one."""

    lockspace: str
    name: str
    disks: tuple[tuple[str, int], ...]
    lver: int | None
    shared: bool

    @classmethod
    def from_struct(cls, res: Resource) -> HeldLease:
        """From a resource parsed out of the INQUIRE state string."""
        shared = bool(res.flags & ResourceFlag.SHARED)
        return cls(
            res.lockspace,
            res.resource,
            tuple((d.path_str, d.offset) for d in res.disks),
            None if shared else res.lver,
            shared,
        )


@dataclass(frozen=True, slots=True)
class DaemonVersion:
    """VERSION: the daemon's version number and its socket protocol."""

    number: int
    proto: int

    @property
    def release(self) -> tuple[int, int, int]:
        """``(major, minor, patch)``."""
        return (self.number >> 24) & 0xFF, (self.number >> 16) & 0xFF, (self.number >> 8) & 0xFF

    def __str__(self) -> str:
        major, minor, patch = self.release
        return f"{major}.{minor}.{patch}"


# --- STATUS ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DaemonState:
    """The DAEMON record: our host name and the daemon's settings (``key=value`` pairs)."""

    host_name: str
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class ClientState:
    """A CLIENT record: a connection slot, its pid (-1 for the daemon's own) and name."""

    pid: int
    name: str
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class LockspaceState:
    """A LOCKSPACE record; ``list`` is ``spaces`` (joined), ``add`` or ``rem``."""

    info: LockspaceInfo
    list: str
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class ResourceState:
    """A RESOURCE record: a token (``pid`` holds it) on ``list`` held/add/rem/orphan."""

    lockspace: str
    name: str
    disks: tuple[tuple[str, int], ...]
    lver: int
    shared: bool
    pid: int
    list: str
    fields: dict[str, str]


@dataclass(frozen=True, slots=True)
class Status:
    """STATUS: the daemon, its connections, lockspaces and leases; ``records`` as received."""

    daemon: DaemonState | None
    clients: tuple[ClientState, ...]
    lockspaces: tuple[LockspaceState, ...]
    resources: tuple[ResourceState, ...]
    records: tuple[StateRecord, ...]

    @classmethod
    def from_records(cls, records: tuple[StateRecord, ...]) -> Status:
        """Sort a STATUS stream into its kinds."""
        daemon = None
        clients, spaces, resources = [], [], []
        for rec in records:
            fields = rec.pairs
            if rec.type == StateType.DAEMON:
                daemon = DaemonState(_name(rec), fields)
            elif rec.type == StateType.CLIENT:
                clients.append(ClientState(rec.pid, _name(rec), fields))
            elif rec.type == StateType.LOCKSPACE and rec.lockspace is not None:
                info = LockspaceInfo.from_struct(rec.lockspace)
                spaces.append(LockspaceState(info, fields.get("list", ""), fields))
            elif rec.type == StateType.RESOURCE and rec.resource is not None:
                res = rec.resource
                resources.append(
                    ResourceState(
                        res.lockspace,
                        res.resource,
                        tuple((d.path_str, d.offset) for d in res.disks),
                        rec.data64,
                        res.shared,
                        rec.pid,
                        fields.get("list", ""),
                        fields,
                    )
                )
        return cls(daemon, tuple(clients), tuple(spaces), tuple(resources), records)


@dataclass(frozen=True, slots=True)
class HostStatus:
    """A HOST record of HOST_STATUS: the daemon's view of one host of a lockspace."""

    host_id: int
    timestamp: int
    fields: dict[str, str]
    record: StateRecord


def _name(rec: StateRecord) -> str:
    return text(rec.name)
