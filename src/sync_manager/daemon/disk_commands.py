"""The daemon's direct-disk commands: ALIGN, WRITE/READ_LOCKSPACE, WRITE/READ_RESOURCE and
READ_RESOURCE_OWNERS (protocol 2.5.18-2.5.23).

Each runs the same code as ``sync_manager direct`` on a worker thread; the handler only
translates between the wire structs and ``direct``'s arguments and results.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sync_manager import direct
from sync_manager import protocol as p
from sync_manager.core import paxos
from sync_manager.core.paxos_io import read_area
from sync_manager.errors import (
    BadMagic,
    OnDiskError,
    SyncManagerError,
    WrongLockspace,
    WrongResource,
)
from sync_manager.io.disk import Storage
from sync_manager.leasestr import DiskLocation, LockspaceSpec, ResourceSpec
from sync_manager.ondisk.geometry import MIB, Geometry
from sync_manager.ondisk.leader import DELTA_MAGIC, PAXOS_MAGIC, LeaderRecord
from sync_manager.protocol.flags import (
    ResourceFlag,
    WriteResourceFlag,
    align_flag,
    align_from_flags,
    sector_flag,
    sector_from_flags,
)

if TYPE_CHECKING:
    from sync_manager.daemon.handlers import Context

__all__ = ["register"]

log = logging.getLogger("sync_manager.handlers")

_GEOMETRY_FLAGS = 0x3F0  # the ALIGN* and SECTOR* bits of a resource's or lockspace's flags


def register(handles: Callable[[type[p.Request]], Callable[[Any], Any]]) -> None:
    """Add this module's handlers to the handler table (``handlers._handles``)."""
    handles(p.Align)(_align)
    handles(p.WriteLockspace)(_write_lockspace)
    handles(p.ReadLockspace)(_read_lockspace)
    handles(p.WriteResource)(_write_resource)
    handles(p.ReadResource)(_read_resource)
    handles(p.ReadResourceOwners)(_read_resource_owners)


def _sizes(flags: int) -> tuple[int | None, int | None]:
    return sector_from_flags(flags) or None, align_from_flags(flags) or None


def _area_size(sector_size: int | None, align_size: int | None) -> int:
    """The bytes a write of a lockspace or lease area with these sizes covers: the align size
    given, else the default for the sector size given (512 when none is: on a 4 KiB-sector
    device ``direct.init_*`` would then write 8 MiB, of which this checks the first 1 MiB)."""
    return align_size or Geometry.default_for(sector_size or 512).align_size


def _live_area_at(ctx: Context, path: str, offset: int, size: int) -> str | None:
    """Why ``size`` bytes at ``path:offset`` must not be written now, or None.

    Beyond sanlock, which writes them: a lockspace this host has joined (every host's delta
    lease there would be erased) or a lease one of its processes holds (it would be free on
    disk while held: two writers). The paths are compared as given, as sanlock matches them.
    """

    def overlaps(at: int, length: int) -> bool:
        return at < offset + size and offset < at + length

    for ls in ctx.daemon.lockspaces:
        length = ls.core.geometry.align_size if ls.core is not None else MIB
        if ls.path == path and overlaps(ls.offset, length):
            return (
                f"{path}:{offset} is within lockspace {ls.name}, which this host has joined; "
                "writing it would erase every host's delta lease (rem_lockspace first)"
            )
    for tokens in ctx.daemon.resources.held.values():
        for token in tokens:
            length = token.core.geometry.align_size
            if any(where == path and overlaps(at, length) for where, at in token.core.disks):
                return (
                    f"{path}:{offset} is within lease {token.text()}, held here by pid "
                    f"{token.client.peer.pid}; writing it would free it on disk while it is "
                    "held (release it first)"
                )
    return None


def _geometry_flags(sector_size: int, align_size: int) -> int:
    return sector_flag(sector_size) | align_flag(align_size)


async def _align(ctx: Context, req: p.Align) -> p.Reply:
    path = req.disk.path_str
    if not path:
        return p.Result(-errno.ENODEV)

    def probe() -> int:
        with Storage.open(path, readonly=True) as storage:
            return MIB if storage.sector_size == 512 else 8 * MIB

    try:
        return p.Result(await ctx.daemon.runner.call(probe))
    except SyncManagerError:
        return p.Result(-errno.ENODEV)


async def _write_lockspace(ctx: Context, req: p.WriteLockspace) -> p.Reply:
    ls = req.lockspace
    sector, align = _sizes(ls.flags)
    busy = _live_area_at(ctx, ls.disk.path_str, ls.disk.offset, _area_size(sector, align))
    if busy is not None:
        log.warning("write_lockspace %s refused: %s", ls.lockspace, busy)
        return p.Result(-errno.EBUSY)
    spec = LockspaceSpec(ls.lockspace, 0, DiskLocation(ls.disk.path_str, ls.disk.offset))
    await ctx.daemon.runner.call(
        lambda: direct.init_lockspace(
            spec, io_timeout=req.io_timeout or 10, sector_size=sector, align_size=align
        )
    )
    return p.Result(0)


async def _write_resource(ctx: Context, req: p.WriteResource) -> p.Reply:
    sector, align = _sizes(req.resource.flags)
    size = _area_size(sector, align)
    for disk in req.resource.disks:
        busy = _live_area_at(ctx, disk.path_str, disk.offset, size)
        if busy is not None:
            name = f"{req.resource.lockspace}:{req.resource.resource}"
            log.warning("write_resource %s refused: %s", name, busy)
            return p.Result(-errno.EBUSY)
    spec = _resource_spec(req.resource)
    await ctx.daemon.runner.call(
        lambda: direct.init_resource(
            spec,
            num_hosts=req.num_hosts,
            clear=bool(req.flags & WriteResourceFlag.CLEAR),
            sector_size=sector,
            align_size=align,
        )
    )
    return p.Result(0)


def _resource_spec(res: p.Resource) -> ResourceSpec:
    disks = tuple(DiskLocation(d.path_str, d.offset) for d in res.disks)
    return ResourceSpec(res.lockspace, res.resource, disks)


def _read_leader(path: str, offset: int, flags: int, host_id: int = 0) -> LeaderRecord:
    """On a worker: the leader at ``offset`` (host ``host_id``'s delta record if given)."""
    with Storage.open(path, readonly=True) as storage:
        geometry = direct.existing_geometry(storage, offset)
        sector, align = _sizes(flags)
        if sector and align:
            geometry = Geometry(sector, align)
        at = offset + max(host_id - 1, 0) * geometry.sector_size
        return LeaderRecord.unpack(storage.read(at, geometry.sector_size))


async def _read_lockspace(ctx: Context, req: p.ReadLockspace) -> p.Reply:
    ls = req.lockspace
    path, offset = ls.disk.path_str, ls.disk.offset
    if not path:
        return p.ReadLockspaceReply(-errno.ENODEV, 0, ls)
    host_id = ls.host_id or 1
    leader = await ctx.daemon.runner.call(lambda: _read_leader(path, offset, ls.flags, host_id))
    if leader.magic != DELTA_MAGIC:
        return p.ReadLockspaceReply(BadMagic.code, 0, ls)
    flags = (ls.flags & ~_GEOMETRY_FLAGS) | _geometry_flags(leader.sector_size, _align_size(leader))
    found = p.Lockspace(leader.space_name.rstrip(b"\0"), ls.host_id, flags, disk=ls.disk)
    return p.ReadLockspaceReply(0, leader.io_timeout, found)


def _align_size(leader: LeaderRecord) -> int:
    try:
        return Geometry.from_leader_fields(leader.sector_size, leader.flags).align_size
    except SyncManagerError:
        return 0


def _check_names(res: p.Resource, leader: LeaderRecord) -> int:
    """sanlock's READ_RESOURCE result: names given must match the leader's."""
    if leader.magic != PAXOS_MAGIC:
        return BadMagic.code
    lockspace, name = res.lockspace_name.rstrip(b"\0"), res.name.rstrip(b"\0")
    if lockspace and lockspace != leader.space_name.rstrip(b"\0"):
        return WrongLockspace.code
    if name and name != leader.resource_name.rstrip(b"\0"):
        return WrongResource.code
    return 0


def _from_leader(res: p.Resource, leader: LeaderRecord, *, shared: bool = False) -> p.Resource:
    flags = (res.flags & ~_GEOMETRY_FLAGS) | _geometry_flags(
        leader.sector_size, _align_size(leader)
    )
    if shared:
        flags |= ResourceFlag.SHARED
    return p.Resource(
        leader.space_name.rstrip(b"\0"),
        leader.resource_name.rstrip(b"\0"),
        lver=leader.lver,
        flags=flags,
        num_disks=res.num_disks,
    )


async def _read_resource(ctx: Context, req: p.ReadResource) -> p.Reply:
    res = req.resource
    if not res.disks:
        return p.ReadResourceReply(-errno.EINVAL, res.without_disks())
    disk = res.disks[0]
    try:
        leader = await ctx.daemon.runner.call(
            lambda: _read_leader(disk.path_str, disk.offset, res.flags)
        )
    except OnDiskError as err:
        return p.ReadResourceReply(err.code, res.without_disks())
    code = _check_names(res, leader)
    if code:
        return p.ReadResourceReply(code, res.without_disks())
    return p.ReadResourceReply(0, _from_leader(res, leader))


async def _read_resource_owners(ctx: Context, req: p.ReadResourceOwners) -> p.Reply:
    res = req.resource
    if not res.disks:
        return p.OwnersReply(-errno.EINVAL, res.without_disks())
    spec = _resource_spec(res)

    def read() -> tuple[LeaderRecord, list[paxos.Owner]]:
        disks = tuple((d.path, d.offset) for d in spec.disks)
        with ctx.daemon.runner.driver() as driver:
            core, hint = direct.open_resource(driver, spec.lockspace, spec.name, disks)
            buf, leader, geometry = driver.run(read_area(core, num_hosts_hint=hint))
            return leader, paxos.owners_in(buf, leader, geometry)

    leader, owners = await ctx.daemon.runner.call(read)
    hosts = tuple(
        p.Host(o.host_id, o.generation, 0 if o.shared else leader.timestamp) for o in owners
    )
    shared = any(o.shared for o in owners)
    return p.OwnersReply(0, _from_leader(res, leader, shared=shared), hosts)
