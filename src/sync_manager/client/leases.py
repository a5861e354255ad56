"""The lease commands both ways of targeting a process share (spec 1.3, 1.4, 2.5.1-2.5.7).

ACQUIRE, RELEASE, INQUIRE and CONVERT go either on the process's own registered connection
(``target`` = :data:`~sync_manager.protocol.SELF`) or on a fresh connection naming another
registered pid. The builders here make the request for either; :func:`check` turns a reply
into its result or a :class:`~sync_manager.client.errors.SanlockError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from sync_manager.client.errors import SanlockError
from sync_manager.client.resources import ResourceLike, to_wire, with_flags
from sync_manager.client.results import HeldLease
from sync_manager.errors import UsageError
from sync_manager.protocol import (
    MAX_RESOURCES,
    Acquire,
    AcquireFlag,
    Convert,
    ConvertFlag,
    InquireReply,
    MalformedMessage,
    Options,
    Release,
    ReleaseFlag,
    Reply,
    Resource,
    ResourceFlag,
    parse_state,
)

__all__ = [
    "acquire_request",
    "check",
    "convert_request",
    "held_leases",
    "release_request",
]


def check(command: str, reply: Reply) -> int:
    """The reply's result (0 or a count); SanlockError when it is negative."""
    result = getattr(reply, "result", 0)
    if not isinstance(result, int):
        raise SanlockError(command, -1, "the daemon sent no result")
    if result < 0:
        raise SanlockError(command, result)
    return result


def _many(resources: ResourceLike | Iterable[ResourceLike]) -> list[ResourceLike]:
    if isinstance(resources, str) or not isinstance(resources, Iterable):
        return [resources]
    return list(resources)


def acquire_request(
    resources: ResourceLike | Iterable[ResourceLike],
    target: int,
    *,
    lvb: bool = False,
    orphan: bool = False,
    orphan_only: bool = False,
    owner_nowait: bool = False,
    persistent: bool = False,
    num_hosts: int = 0,
    owner_name: str = "",
) -> Acquire:
    """ACQUIRE of 1 to 8 resources for ``target`` (see the :class:`Client` methods)."""
    wire = [to_wire(res) for res in _many(resources)]
    if not 1 <= len(wire) <= MAX_RESOURCES:
        raise UsageError(f"acquire takes 1 to {MAX_RESOURCES} resources, not {len(wire)}")
    extra = ResourceFlag.PERSISTENT if persistent else 0
    wire = [with_flags(res, extra, num_hosts=num_hosts) for res in wire]
    flags = (
        (AcquireFlag.LVB if lvb else 0)
        | (AcquireFlag.ORPHAN if orphan else 0)
        | (AcquireFlag.ORPHAN_ONLY if orphan_only else 0)
        | (AcquireFlag.OWNER_NOWAIT if owner_nowait else 0)
    )
    options = Options(owner_name.encode("utf-8", "surrogateescape"))
    return Acquire(tuple(wire), options, int(flags), target)


def release_request(
    resources: ResourceLike | Iterable[ResourceLike],
    target: int,
    *,
    all: bool = False,
    orphan: bool = False,
) -> Release:
    """RELEASE of named resources, of every lease (``all``), or of orphans (``orphan``).

    With ``orphan`` a resource string ``LS`` alone (no name) means every orphan of LS.
    """
    if all:
        return Release((), ReleaseFlag.ALL, target)
    listed = _many(resources)
    if orphan and len(listed) == 1 and isinstance(listed[0], str) and ":" not in listed[0]:
        wire = [Resource.make(listed[0], b"")]
    else:
        wire = [to_wire(res, names_only=True) for res in listed]
    if not 1 <= len(wire) <= MAX_RESOURCES:
        raise UsageError(f"release takes 1 to {MAX_RESOURCES} resources, not {len(wire)}")
    if orphan and len(wire) != 1:
        raise UsageError("release of orphans takes one resource (or one lockspace)")
    return Release(tuple(wire), ReleaseFlag.ORPHAN if orphan else 0, target)


def convert_request(
    res: ResourceLike, target: int, *, shared: bool | None = None, owner_nowait: bool = False
) -> Convert:
    """CONVERT a held lease to shared (``shared`` True) or exclusive (False).

    ``shared`` None takes the mode from a resource string's ``:SH`` suffix.
    """
    wire = to_wire(res, names_only=True)
    if shared is not None:
        mode = ResourceFlag.SHARED if shared else 0
        wire = dataclasses.replace(wire, flags=int(wire.flags & ~ResourceFlag.SHARED | mode))
    return Convert(wire, ConvertFlag.OWNER_NOWAIT if owner_nowait else 0, target)


def held_leases(command: str, reply: Reply) -> list[HeldLease]:
    """The leases an INQUIRE reply lists (SanlockError on a failure or a bad state string)."""
    check(command, reply)
    if not isinstance(reply, InquireReply) or reply.state is None:
        return []
    try:
        return [HeldLease.from_struct(res) for res in parse_state(reply.state)]
    except MalformedMessage as err:
        raise SanlockError(command, err.code, f"unreadable lease list: {err}") from None
