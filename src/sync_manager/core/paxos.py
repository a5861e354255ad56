"""Paxos (resource) leases: acquire, release, shared mode, conversion, requests (spec 6).

A resource lease is decided by Disk Paxos (Gafni and Lamport, 2002), one instance per lease
version. The parts, in the core (all pure):

* ``paxos_io``: the lease and host types, the majority-of-disks reads and writes (spec 1, 4.11);
* ``paxos_ballot``: the ballot and the commit, i.e. sanlock's paxos_lease_acquire (6.1-6.5);
* ``paxos_owner``: waiting for another host's lease to become takeable (6.2);
* ``paxos_release``: release (6.6) and the undo of a half-done acquire;
* ``paxos_shared``: shared mode and conversion (6.7, 6.8);
* this module: what a daemon (or ``direct``) calls, i.e. sanlock's acquire_token,
  request_token and read_resource_owners (6.9), with the rest re-exported.

Invariants (they hold across every function here):

* **At most one value is chosen per lver** (Disk Paxos; see paxos_ballot): two hosts never both
  commit themselves as owners of the same lease version, and a host that completes a ballot
  whose value is another host's commits that value (ACQUIRE_OTHER), never its own.
* **mbal is congruent to host_id modulo max_hosts**: no two hosts ever use the same ballot.
* **lver never decreases**: each commit writes ``lver + 1`` of the leader it started from;
  release and shared mode leave lver alone.
* **An owner is taken over only when it cannot still be using the lease** (6.2, 8.3): its
  delta lease is free or belongs to a newer generation, it released (leader free, or its
  RELEASED dblock when another host wrote the leader), or its delta lease has not changed for
  host_dead_seconds of *our* clock, by when its watchdog has reset it.
* **Exclusive excludes shared**: an exclusive acquire that counted SHARED mode blocks keeps the
  lease only if every such holder is dead (its block is then cleared); otherwise it releases
  again and fails with -EAGAIN (6.7).

Every function is a pure step: it yields Read/Write/Sleep/Now effects (core/effects.py) and
never touches a disk or a clock itself; randomness comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from sync_manager.core.effects import Step, read, sleep, write
from sync_manager.core.paxos_ballot import OwnerObservation, paxos_acquire
from sync_manager.core.paxos_errors import (
    AcquireIdLive,
    AcquireOther,
    AcquireOwned,
    AcquireShRetry,
    PaxosError,
    RequestLver,
    RequestOld,
    SharedHoldersLive,
)
from sync_manager.core.paxos_io import (
    Host,
    LockspaceDisk,
    ReadPattern,
    Resource,
    leader_geometry,
    read_area,
    read_leader_majority,
)
from sync_manager.core.paxos_release import FAILURES, release, undo_acquire
from sync_manager.core.paxos_shared import (
    AcquireResult,
    IsAlive,
    LockspaceArg,
    clear_dead_shared,
    convert_to_exclusive,
    convert_to_shared,
    hold_shared,
    lockspace_disk,
)
from sync_manager.errors import OnDiskError
from sync_manager.ondisk.areas import FIRST_HOST_SECTOR, REQUEST_SECTOR, written_hosts
from sync_manager.ondisk.dblock import MBLOCK_OFFSET, ModeBlock, PaxosDblock
from sync_manager.ondisk.geometry import Geometry
from sync_manager.ondisk.leader import LFL_SHORT_HOLD, LeaderRecord
from sync_manager.ondisk.request import REQUEST_VERSION, RequestRecord

__all__ = [
    "SH_RETRIES",
    "AcquireResult",
    "Host",
    "LockspaceDisk",
    "Owner",
    "OwnerObservation",
    "ReadPattern",
    "RequestResult",
    "Resource",
    "acquire",
    "convert_to_exclusive",
    "convert_to_shared",
    "owners_in",
    "read_leader",
    "read_owners",
    "read_request",
    "release",
    "request",
]

SH_RETRIES = 8  # sanlock's sh_retries: shared acquires retried while the lease is briefly held


class Owner(NamedTuple):
    """A holder of a lease: the leader's owner (``shared`` False) or a SHARED mode block."""

    host_id: int
    generation: int
    shared: bool


@dataclass(frozen=True, slots=True)
class RequestResult:
    """What a request did: the owner seen (0 if the lease is free or was not read) and the
    request record written (None when the lease is free: nothing is written then)."""

    owner_id: int
    written: RequestRecord | None


def acquire(
    resource: Resource,
    host: Host,
    *,
    rng: random.Random,
    lockspace: LockspaceArg | None = None,
    owner_observations: Mapping[int, OwnerObservation] | None = None,
    lver: int | None = None,
    shared: bool = False,
    owner_nowait: bool = False,
    num_hosts: int | None = None,
    is_alive: IsAlive | None = None,
    read_pattern: ReadPattern = ReadPattern.COMPACT,
    num_hosts_hint: int | None = None,
) -> Step[AcquireResult]:
    """Acquire ``resource`` for ``host``, exclusive or ``shared`` (sanlock's acquire_token).

    ``lockspace`` is where the owners' delta leases are (path, offset, geometry[, io_timeout]);
    None is direct mode: a lease held by another host fails ACQUIRE_LOCKSPACE (-241), like
    ``sanlock direct acquire``. ``owner_observations`` is the daemon's host_status snapshot by
    host id. ``lver`` (if given and non-zero) must be the current lease version (else -240).
    ``num_hosts`` replaces the leader's num_hosts when we commit. ``is_alive`` decides whether
    a SHARED holder still lives (none: all alive). ``read_pattern``/``num_hosts_hint`` choose
    how much of the lease is read (paxos_io.lease_read_sectors).

    Errors: AcquireIdLive (-243), AcquireOwned (-244), AcquireOther (-245), AcquireOwnedRetry
    (-247), AcquireShRetry (-246, shared only), SharedHoldersLive (-EAGAIN), the ballot's
    Dblock*/Leader* errors and the records' validation errors. After a failure that may still
    make us the owner (``retract``), the lease is released again before the error is raised.
    """
    observations = owner_observations or {}
    retries = 0
    while True:
        try:
            got = yield from paxos_acquire(
                resource,
                host,
                lockspace=lockspace_disk(lockspace),
                owner_observations=observations,
                rng=rng,
                lver=lver or 0,
                shared=shared,
                owner_nowait=owner_nowait,
                num_hosts=num_hosts or 0,
                pattern=read_pattern,
                num_hosts_hint=num_hosts_hint,
            )
        except (AcquireIdLive, AcquireOwned, AcquireOther) as err:
            # A shared acquire meeting a brief exclusive hold (another host acquiring shared)
            # retries: that hold ends in a moment.
            if shared and err.leader is not None and err.leader.flags & LFL_SHORT_HOLD:
                if retries < SH_RETRIES:
                    retries += 1
                    yield from sleep(rng.random())
                    continue
                raise AcquireShRetry(
                    f"shared acquire of {resource.name}: still held after {retries} retries",
                    leader=err.leader,
                ) from err
            raise
        except PaxosError as err:
            if err.retract:
                # We may own the lease on disk (another host may commit our value): erase our
                # vote and free the leader if it is ours (sanlock's R_ERASE_ALL).
                last = err.leader if err.leader is not None and err.leader.lver else None
                geometry = err.geometry or resource.geometry
                yield from undo_acquire(
                    err, resource, geometry, host=host, leader=last, dblock=PaxosDblock()
                )
            raise
        break
    if shared:
        return (yield from hold_shared(resource, host, got))
    others = sorted(got.shared_seen - {host.host_id})
    if others:
        try:
            live = yield from clear_dead_shared(resource, got.geometry, others, is_alive)
        except FAILURES as err:
            yield from undo_acquire(
                err, resource, got.geometry, host=host, leader=got.leader, dblock=got.dblock
            )
            raise
        if live:
            yield from release(resource, host, got.leader, got.dblock)
            raise SharedHoldersLive(
                f"lease {resource.name} is held shared by {live} live host(s)", leader=got.leader
            )
    return AcquireResult(got.leader, got.dblock, got.geometry, shared=False)


def request(
    resource: Resource, lver: int, force_mode: int, *, next_lver: bool = False
) -> Step[RequestResult]:
    """Ask the owner of ``resource`` to give it up (6.9, requester side).

    ``lver`` 0 with ``force_mode`` 0 clears the request record. Otherwise: a free lease is
    left alone; ``next_lver`` with ``lver`` 0 asks for the current lver + 1; an lver not above
    the current one fails REQUEST_OLD (-272), one below the record's REQUEST_LVER (-273).
    The caller then sets the owner's bit in its delta-lease bitmap (5.6).
    """
    geometry = resource.geometry
    owner_id = 0
    if lver or force_mode:
        leader = yield from read_leader_majority(resource, geometry)
        geometry = leader_geometry(leader)
        if leader.timestamp == 0:
            return RequestResult(0, None)
        owner_id = leader.owner_id
        if not lver and next_lver:
            lver = leader.lver + 1
        if leader.lver >= lver:
            raise RequestOld(
                f"request {resource.name}: lver {lver} is not above {leader.lver}", leader=leader
            )
    current = yield from read_request(resource, geometry)
    if (lver or force_mode) and current.lver > lver:
        raise RequestLver(f"request {resource.name}: lver {current.lver} already requested")
    new = RequestRecord(current.magic, REQUEST_VERSION, lver, force_mode)
    path, base = resource.disks[0]
    at = base + REQUEST_SECTOR * geometry.sector_size
    yield from write(path, at, new.pack().ljust(geometry.sector_size, b"\0"))
    return RequestResult(owner_id, new)


def read_request(resource: Resource, geometry: Geometry | None = None) -> Step[RequestRecord]:
    """The lease's request record (first disk), validated (6.9): what an owner examines."""
    geometry = geometry or resource.geometry
    path, base = resource.disks[0]
    at = base + REQUEST_SECTOR * geometry.sector_size
    record = RequestRecord.unpack((yield from read(path, at, geometry.sector_size)))
    try:
        record.check()
    except OnDiskError as err:
        raise err.at(path, at) from None
    return record


def read_leader(resource: Resource) -> Step[LeaderRecord]:
    """The lease's leader, validated, agreed on by a majority of its disks."""
    return (yield from read_leader_majority(resource, resource.geometry))


def read_owners(
    resource: Resource,
    *,
    read_pattern: ReadPattern = ReadPattern.COMPACT,
    num_hosts_hint: int | None = None,
) -> Step[list[Owner]]:
    """Who holds the lease (sanlock's read_resource_owners, first disk).

    The leader's owner if the leader is held, then every host whose mode block is SHARED
    (with the mode block's generation), the leader's owner not twice.
    """
    buf, leader, geometry = yield from read_area(
        resource, pattern=read_pattern, num_hosts_hint=num_hosts_hint
    )
    return owners_in(buf, leader, geometry)


def owners_in(buf: bytes, leader: LeaderRecord, geometry: Geometry) -> list[Owner]:
    """The owners :func:`read_owners` reports, from a lease area read with
    :func:`~sync_manager.core.paxos_io.read_area`."""
    owners: list[Owner] = []
    held = bool(leader.timestamp and leader.owner_id)
    if held:
        owners.append(Owner(leader.owner_id, leader.owner_generation, False))
    for index in written_hosts(buf, geometry, leader.num_hosts):  # blank: not SHARED
        start = (FIRST_HOST_SECTOR + index) * geometry.sector_size
        mode = ModeBlock.unpack(buf, start + MBLOCK_OFFSET)
        if mode.shared and not (held and index + 1 == leader.owner_id):
            owners.append(Owner(index + 1, mode.generation, True))
    return owners
