""":class:`Client`: the daemon's commands as Python calls (spec 2.5, python3-sanlock's API).

Each admin call opens a connection, sends one request, reads one reply and closes, as
libsanlock does. :meth:`Client.register` opens the one connection that stays: see
:class:`~sync_manager.client.registration.Registration`. Every failure raises a
:class:`~sync_manager.client.errors.SanlockError` carrying sanlock's code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable, Iterator

from sync_manager import protocol
from sync_manager.client.connection import Connection, socket_path
from sync_manager.client.errors import SanlockError
from sync_manager.client.leases import (
    acquire_request,
    check,
    convert_request,
    held_leases,
    release_request,
)
from sync_manager.client.registration import Registration
from sync_manager.client.resources import (
    DiskArg,
    ResourceLike,
    disk_struct,
    lockspace_struct,
    to_wire,
)
from sync_manager.client.results import (
    DaemonVersion,
    HeldLease,
    HostInfo,
    HostStatus,
    LockspaceInfo,
    LockspaceLeader,
    ResourceInfo,
    ResourceOwners,
    Status,
    host_info,
)
from sync_manager.protocol import (
    AddLockspace,
    AddLockspaceFlag,
    Align,
    Code,
    Command,
    ForceMode,
    GetHosts,
    GetLockspaces,
    HostsReply,
    InqLockspace,
    InqLockspaceFlag,
    Inquire,
    LockspacesReply,
    LogDump,
    LogDumpReply,
    NoReply,
    OwnersReply,
    ReadLockspace,
    ReadLockspaceReply,
    ReadResource,
    ReadResourceOwners,
    ReadResourceReply,
    RemLockspace,
    RemLockspaceFlag,
    Reply,
    Request,
    RequestFlag,
    RequestLease,
    Resource,
    ResourceFlag,
    Shutdown,
    ShutdownWait,
    StateReply,
    StateType,
    Version,
    VersionReply,
    WriteLockspace,
    WriteResource,
    WriteResourceFlag,
    align_flag,
    align_from_flags,
    sector_flag,
    sector_from_flags,
)

__all__ = ["Client"]

Path = str | os.PathLike[str]


def _sizes(sector_size: int, align_size: int) -> int:
    return sector_flag(sector_size) | align_flag(align_size)


def _expect(command: str, reply: Reply, kind: type[object]) -> None:
    if not isinstance(reply, kind):  # (cannot happen: the parser decodes by command)
        raise SanlockError(command, -1, f"unexpected reply {type(reply).__name__}")


class Client:
    """A client of the lease daemon at ``run_dir``/sanlock.sock.

    ``run_dir`` defaults to ``$SANLOCK_RUN_DIR``, else /run/sanlock. ``timeout`` bounds each
    wait for the daemon, in seconds; None (the default) waits as long as the daemon takes,
    as libsanlock does (joining a lockspace takes 20 s or more with the default io_timeout).
    """

    def __init__(self, run_dir: Path | None = None, timeout: float | None = None) -> None:
        self.path = socket_path(run_dir)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Client({self.path!r}, timeout={self.timeout!r})"

    # --- plumbing -----------------------------------------------------------------------------

    def connect(self, command: Command) -> Connection:
        """A new connection to the daemon (``command`` names the caller in errors)."""
        return Connection(self.path, self.timeout, command)

    def call(self, request: Request) -> Reply:
        """Send ``request`` on a new connection and return the daemon's reply, unchecked."""
        conn = self.connect(request.COMMAND)
        try:
            if request.COMMAND in (Command.SHUTDOWN, Command.REGISTER):
                conn.send(request)
                return NoReply()  # the daemon answers nothing to these
            return conn.call(request)
        finally:
            conn.close()

    def _result(self, request: Request) -> int:
        return check(request.COMMAND.name.lower(), self.call(request))

    # --- the daemon ---------------------------------------------------------------------------

    def version(self) -> DaemonVersion:
        """The daemon's version (``str()`` gives ``3.8.5``) and socket protocol."""
        reply = self.call(Version())
        _expect("version", reply, VersionReply)
        check("version", reply)
        assert isinstance(reply, VersionReply)
        return DaemonVersion(reply.version, reply.proto)

    def status(self) -> Status:
        """The daemon's state: its connections, lockspaces and leases."""
        reply = self.call(protocol.Status())
        check("status", reply)
        assert isinstance(reply, StateReply)
        return Status.from_records(reply.records)

    def lockspace_names(self) -> list[str]:
        """Names of every lockspace in STATUS (as ``sanlock client host_status`` lists them)."""
        reply = self.call(protocol.Status(int(StateType.LOCKSPACE)))
        check("status", reply)
        assert isinstance(reply, StateReply)
        return [
            rec.lockspace.lockspace
            for rec in reply.records
            if rec.type == StateType.LOCKSPACE and rec.lockspace is not None
        ]

    def host_status(self, lockspace: str) -> list[HostStatus]:
        """The daemon's view of each host of ``lockspace`` (-ENOSPC if it is not joined)."""
        reply = self.call(protocol.HostStatus(lockspace_struct(lockspace)))
        check("host_status", reply)
        assert isinstance(reply, StateReply)
        return [
            HostStatus(rec.data32, rec.data64, rec.pairs, rec)
            for rec in reply.records
            if rec.type == StateType.HOST
        ]

    def log_dump(self) -> str:
        """The daemon's in-memory log."""
        reply = self.call(LogDump())
        assert isinstance(reply, LogDumpReply)
        return reply.text.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")

    def shutdown(self, *, force: bool = False, wait: bool = False) -> None:
        """Stop the daemon; without ``force`` it refuses while lockspaces exist.

        Without ``wait`` the daemon answers nothing (it ignores the request if it refuses);
        with it, the call returns when the daemon has stopped, or raises -EBUSY.
        """
        if wait:
            self._result(ShutdownWait(int(force)))
        else:
            self.call(Shutdown(int(force)))

    # --- lockspaces ---------------------------------------------------------------------------

    def add_lockspace(
        self,
        lockspace: str,
        host_id: int,
        path: Path,
        offset: int = 0,
        *,
        io_timeout: int = 0,
        wait: bool = True,
    ) -> None:
        """Join ``lockspace`` as ``host_id`` (its delta lease at ``path``:``offset``).

        ``io_timeout`` 0 is the daemon's default. ``wait`` False returns once the join has
        started. -EEXIST if already joined, -EINPROGRESS while joining.
        """
        flags = 0 if wait else AddLockspaceFlag.ASYNC
        ls = lockspace_struct(lockspace, host_id, path, offset)
        self._result(AddLockspace(ls, int(flags), io_timeout))

    def inq_lockspace(
        self, lockspace: str, host_id: int, path: Path, offset: int = 0, *, wait: bool = False
    ) -> bool | None:
        """True if joined, False if not, None while being joined or left (``wait``: until
        that settles). ``host_id`` 0 matches any host id."""
        flags = InqLockspaceFlag.WAIT if wait else 0
        reply = self.call(InqLockspace(lockspace_struct(lockspace, host_id, path, offset), flags))
        result = getattr(reply, "result", -1)
        if result == Code.ENOENT:
            return False
        if result == Code.EINPROGRESS:
            return None
        check("inq_lockspace", reply)
        return True

    def rem_lockspace(
        self,
        lockspace: str,
        host_id: int,
        path: Path,
        offset: int = 0,
        *,
        wait: bool = True,
        unused: bool = False,
    ) -> None:
        """Leave ``lockspace`` (its lease holders are killed first); ``unused``: only if no
        lease of it is held (else -EBUSY)."""
        flags = (0 if wait else RemLockspaceFlag.ASYNC) | (RemLockspaceFlag.UNUSED if unused else 0)
        self._result(RemLockspace(lockspace_struct(lockspace, host_id, path, offset), int(flags)))

    def get_lockspaces(self) -> list[LockspaceInfo]:
        """Every lockspace: joined, then being removed, then being added."""
        reply = self.call(GetLockspaces())
        check("get_lockspaces", reply)
        assert isinstance(reply, LockspacesReply)
        return [LockspaceInfo.from_struct(ls) for ls in reply.lockspaces]

    def get_hosts(self, lockspace: str, host_id: int = 0) -> list[HostInfo]:
        """Hosts of a joined lockspace with a timestamp (``host_id``: that one only).

        -EAGAIN until the daemon has checked the hosts once after joining.
        """
        reply = self.call(GetHosts(lockspace_struct(lockspace, host_id)))
        check("get_hosts", reply)
        assert isinstance(reply, HostsReply)
        return [host_info(host) for host in reply.hosts]

    # --- lease areas --------------------------------------------------------------------------

    def write_lockspace(
        self,
        lockspace: str,
        path: Path,
        offset: int = 0,
        *,
        max_hosts: int = 0,
        io_timeout: int = 0,
        sector_size: int = 0,
        align_size: int = 0,
    ) -> None:
        """Initialize a lockspace area (``io_timeout`` 0: 10 s; sizes 0: the device's)."""
        ls = lockspace_struct(lockspace, 0, path, offset, flags=_sizes(sector_size, align_size))
        self._result(WriteLockspace(ls, max_hosts, io_timeout))

    def read_lockspace(
        self,
        path: Path,
        offset: int = 0,
        *,
        host_id: int = 0,
        sector_size: int = 0,
        align_size: int = 0,
    ) -> LockspaceLeader:
        """Read host ``host_id``'s delta lease (0: host 1): the lockspace name, io_timeout."""
        ls = lockspace_struct("", host_id, path, offset, flags=_sizes(sector_size, align_size))
        reply = self.call(ReadLockspace(ls))
        check("read_lockspace", reply)
        assert isinstance(reply, ReadLockspaceReply)
        got = reply.lockspace or ls
        return LockspaceLeader(
            got.lockspace,
            got.host_id,
            got.disk.path_str,
            got.disk.offset,
            reply.io_timeout,
            sector_from_flags(got.flags),
            align_from_flags(got.flags),
        )

    def write_resource(
        self,
        res: ResourceLike,
        *,
        max_hosts: int = 0,
        num_hosts: int = 0,
        clear: bool = False,
        sector_size: int = 0,
        align_size: int = 0,
    ) -> None:
        """Initialize a resource lease area (``clear``: write it invalid).

        As in sanlock, the daemon reads ``max_hosts`` as the lease's host count.
        """
        wire = self._sized(to_wire(res), sector_size, align_size)
        flags = WriteResourceFlag.CLEAR if clear else 0
        self._result(WriteResource(wire, max_hosts, num_hosts, int(flags)))

    def read_resource(
        self,
        path: Path,
        offset: int = 0,
        *,
        lockspace: str = "",
        name: str = "",
        sector_size: int = 0,
        align_size: int = 0,
    ) -> ResourceInfo:
        """Read a resource lease's leader; non-empty names must match what is on disk."""
        area = self._area(path, offset, lockspace, name, sector=sector_size, align=align_size)
        reply = self.call(ReadResource(area))
        check("read_resource", reply)
        assert isinstance(reply, ReadResourceReply)
        return ResourceInfo.from_struct(reply.resource)

    def read_resource_owners(
        self,
        lockspace: str,
        name: str,
        path: Path,
        offset: int = 0,
        *,
        sector_size: int = 0,
        align_size: int = 0,
    ) -> ResourceOwners:
        """A resource lease and the hosts that own it (exclusive owner first).

        The names must match the lease's (else SANLK_LEADER_LOCKSPACE/RESOURCE).
        """
        area = self._area(path, offset, lockspace, name, sector=sector_size, align=align_size)
        reply = self.call(ReadResourceOwners(area))
        check("read_resource_owners", reply)
        assert isinstance(reply, OwnersReply)
        res = reply.resource or area
        return ResourceOwners(
            ResourceInfo.from_struct(res),
            res.shared,
            tuple(host_info(host) for host in reply.hosts),
        )

    def align(self, path: Path, offset: int = 0) -> int:
        """The alignment (area size, bytes) the daemon uses for the disk at ``path``."""
        return self._result(Align(disk_struct(path, offset)))

    @staticmethod
    def _sized(res: Resource, sector_size: int, align_size: int) -> Resource:
        return dataclasses.replace(res, flags=res.flags | _sizes(sector_size, align_size))

    def _area(
        self, path: Path, offset: int, lockspace: str, name: str, *, sector: int, align: int
    ) -> Resource:
        res = Resource.make(lockspace, name, [(os.fspath(path), offset)])
        return self._sized(res, sector, align)

    # --- leases -------------------------------------------------------------------------------

    def request(
        self,
        res: ResourceLike,
        mode: ForceMode | int = ForceMode.NONE,
        *,
        next_lver: bool | None = None,
    ) -> None:
        """Ask the holder of a lease to give it up (``mode`` FORCE: kill it; GRACEFUL: its
        killpath). The request targets the resource string's lver, or with ``next_lver``
        (the default when there is none) whatever the next version will be."""
        wire = to_wire(res)
        if next_lver is None:
            next_lver = not wire.flags & ResourceFlag.LVER
        flags = RequestFlag.NEXT_LVER if next_lver else 0
        self._result(RequestLease(wire, int(flags), int(mode)))

    def register(self) -> Registration:
        """Register this process: a connection whose leases are this process's."""
        return Registration(self.connect(Command.REGISTER))

    @contextlib.contextmanager
    def lease(
        self,
        lockspace: str,
        name: str,
        disks: Iterable[DiskArg],
        *,
        shared: bool = False,
        lver: int | None = None,
        **options: bool | int | str,
    ) -> Iterator[HeldLease]:
        """Hold one lease for the ``with`` block, on a registration of its own."""
        with (
            self.register() as reg,
            reg.lease(lockspace, name, disks, shared=shared, lver=lver, **options) as held,
        ):
            yield held

    def acquire(
        self,
        pid: int,
        resources: ResourceLike | Iterable[ResourceLike],
        *,
        lvb: bool = False,
        orphan: bool = False,
        orphan_only: bool = False,
        owner_nowait: bool = False,
        persistent: bool = False,
        num_hosts: int = 0,
        owner_name: str = "",
    ) -> None:
        """Acquire leases for another registered process ``pid`` (see
        :meth:`Registration.acquire`). -ESRCH if ``pid`` is not registered."""
        self._result(
            acquire_request(
                resources,
                pid,
                lvb=lvb,
                orphan=orphan,
                orphan_only=orphan_only,
                owner_nowait=owner_nowait,
                persistent=persistent,
                num_hosts=num_hosts,
                owner_name=owner_name,
            )
        )

    def release(
        self,
        pid: int,
        resources: ResourceLike | Iterable[ResourceLike] = (),
        *,
        all: bool = False,
        orphan: bool = False,
    ) -> int:
        """Release leases of ``pid``; ``all``: every one; ``orphan``: orphaned leases (a
        lockspace name alone: all of its orphans). Returns the orphans released, else 0."""
        return self._result(release_request(resources, pid, all=all, orphan=orphan))

    def inquire(self, pid: int) -> list[HeldLease]:
        """The leases ``pid`` holds (-ESRCH if it is not registered)."""
        return held_leases("inquire", self.call(Inquire(target=pid)))

    def convert(
        self,
        pid: int,
        res: ResourceLike,
        *,
        shared: bool | None = None,
        owner_nowait: bool = False,
    ) -> None:
        """Switch a lease ``pid`` holds to shared or exclusive."""
        self._result(convert_request(res, pid, shared=shared, owner_nowait=owner_nowait))
