"""Lease arguments of the client API, and their wire structs.

A resource is given as a :class:`~sync_manager.leasestr.ResourceSpec` (see :func:`resource`)
or as a resource string ``LS:NAME:PATH:OFFSET[:PATH:OFFSET...][:LVER|:SH]``. Release and
convert only need the two names, so there ``LS:NAME`` is enough.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import TypeAlias

from sync_manager import leasestr
from sync_manager.errors import LeaseStringError
from sync_manager.leasestr import DiskLocation, ResourceSpec
from sync_manager.protocol import Disk, Lockspace, Resource, ResourceFlag

__all__ = [
    "DiskArg",
    "ResourceLike",
    "disk_struct",
    "lockspace_struct",
    "resource",
    "to_wire",
    "with_flags",
]

ResourceLike: TypeAlias = ResourceSpec | str
"""A resource: a spec, or a resource string."""

DiskArg: TypeAlias = tuple["str | os.PathLike[str]", int]
"""A lease area: a path and a byte offset."""


def resource(
    lockspace: str,
    name: str,
    disks: Iterable[DiskArg],
    *,
    lver: int | None = None,
    shared: bool = False,
) -> ResourceSpec:
    """A resource lease: ``disks`` are ``(path, offset)`` pairs (1 to 4 replicas).

    ``lver`` makes an acquire fail unless the lease is at that version; ``shared`` asks for
    a shared lease. LeaseStringError on an invalid name, path or offset.
    """
    locations = tuple(DiskLocation(os.fspath(path), offset) for path, offset in disks)
    return ResourceSpec(lockspace, name, locations, lver=lver, shared=shared)


def _names_only(text: str) -> Resource | None:
    lockspace, sep, name = text.partition(":")
    if not sep or ":" in name or "\\" in text:
        return None
    try:
        spec = ResourceSpec(lockspace, name, (DiskLocation("-", 0),))
    except LeaseStringError:
        return None
    return Resource.make(spec.lockspace, spec.name)


def to_wire(res: ResourceLike, *, names_only: bool = False) -> Resource:
    """The ``sanlk_resource`` (and disks) of ``res``; with ``names_only`` ``LS:NAME`` is fine."""
    if isinstance(res, str):
        if names_only and (bare := _names_only(res)) is not None:
            return bare
        res = leasestr.parse_resource(res)
    if not isinstance(res, ResourceSpec):
        raise LeaseStringError(repr(res), "a resource is a ResourceSpec or a resource string")
    return Resource.make(
        res.lockspace,
        res.name,
        ((disk.path, disk.offset) for disk in res.disks),
        lver=res.lver,
        shared=res.shared,
    )


def with_flags(res: Resource, flags: int, *, num_hosts: int = 0) -> Resource:
    """``res`` with more ``SANLK_RES_*`` flags (and ``data32`` = num_hosts for NUM_HOSTS)."""
    if num_hosts:
        flags |= ResourceFlag.NUM_HOSTS
    return dataclasses.replace(res, flags=res.flags | int(flags), data32=num_hosts or res.data32)


def lockspace_struct(
    name: str,
    host_id: int = 0,
    path: str | os.PathLike[str] = "",
    offset: int = 0,
    *,
    flags: int = 0,
) -> Lockspace:
    """A ``sanlk_lockspace`` as the library fills it (name, host id, disk)."""
    return Lockspace.make(name, host_id, os.fspath(path), offset, flags=flags)


def disk_struct(path: str | os.PathLike[str], offset: int = 0) -> Disk:
    """A ``sanlk_disk``."""
    return Disk(os.fsencode(path), offset)
