"""Who holds a lease, in words a user can act on: host id, host name, pid, since when.

The wrapper asks when an acquire fails because the lease is taken. Everything comes from the
daemon, over the ordinary client calls (so it works against sanlock's daemon too):

* READ_RESOURCE_OWNERS: the lease's owner host ids, its lver and the leader's timestamp, which
  is the owner host's monotonic clock (seconds) when it acquired the lease;
* STATUS: on this host, the pid that holds it and the owner name its acquire gave (a VM id);
* HOST_STATUS: for another host, its name (the delta lease's resource name), the timestamp of
  its last renewal (its own clock) and when this daemon last saw it renew (our clock). It lists
  hosts only once the daemon has renewed once after joining; before that the name is read
  from the host's delta lease on disk (when this process may read it).

Clocks: timestamps are each host's ``CLOCK_MONOTONIC`` in seconds, so on this host they compare
with ``time.monotonic()``; for another host the age of the lease is estimated as (our clock
since we saw its last renewal) + (its clock from the acquire to that renewal).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from sync_manager import direct
from sync_manager.client import Client, SanlockError, Status
from sync_manager.errors import SyncManagerError
from sync_manager.leasestr import DiskLocation, LockspaceSpec, ResourceSpec, format_resource

__all__ = ["Holder", "find_holder", "holder_text"]


@dataclass(frozen=True, slots=True)
class Holder:
    """One holder of a lease, as far as this host can tell (None fields: unknown)."""

    host_id: int
    host_name: str | None = None
    local: bool = False  # the holder is a process on this host
    pid: int | None = None
    owner_name: str | None = None  # the acquire's owner name (the VM id of a wrapper)
    lver: int | None = None
    held_for: float | None = None  # seconds since it acquired the lease (estimate)
    renewed_ago: float | None = None  # seconds since its host last renewed its host lease
    shared: bool = False


def find_holder(client: Client, spec: ResourceSpec) -> Holder | None:
    """The holder of ``spec`` (the exclusive owner, else a shared one; None if none found)."""
    disk = spec.disks[0]
    owners = None
    with contextlib.suppress(SanlockError):
        owners = client.read_resource_owners(spec.lockspace, spec.name, disk.path, disk.offset)
    status = None
    with contextlib.suppress(SanlockError):
        status = client.status()
    our_id, our_name = _our_host(status, spec.lockspace)
    pid, owner_name = _local_process(status, spec)
    if owners is None or not owners.owners:
        if pid is None:
            return None
        return Holder(our_id or 0, our_name, local=True, pid=pid, owner_name=owner_name)
    owner = owners.owners[0]
    if owner.host_id == our_id or (our_id is None and pid is not None):
        held_for = time.monotonic() - owner.timestamp if owner.timestamp else -1.0
        return Holder(
            owner.host_id,
            our_name,
            local=True,
            pid=pid,
            owner_name=owner_name,
            lver=owners.info.lver,
            held_for=held_for if held_for >= 0 else None,
            shared=owners.shared,
        )
    name, renewed_ago, renewal_ts = _remote_host(client, spec.lockspace, owner.host_id)
    if name is None:  # HOST_STATUS lists hosts only after our first renewal: read its lease
        name = _name_on_disk(status, spec.lockspace, owner.host_id)
    remote_for = None
    if renewed_ago is not None and renewal_ts and owner.timestamp:
        remote_for = renewed_ago + max(0, renewal_ts - owner.timestamp)
    return Holder(
        owner.host_id,
        name,
        lver=owners.info.lver,
        held_for=remote_for,
        renewed_ago=renewed_ago,
        shared=owners.shared,
    )


def _our_host(status: Status | None, lockspace: str) -> tuple[int | None, str | None]:
    """Our host id in ``lockspace`` and our host name (None when unknown)."""
    if status is None:
        return None, None
    host_id = next((ls.info.host_id for ls in status.lockspaces if ls.info.name == lockspace), None)
    return host_id, status.daemon.host_name if status.daemon is not None else None


def _local_process(status: Status | None, spec: ResourceSpec) -> tuple[int | None, str | None]:
    """The pid of this host that holds ``spec`` and its owner name, from STATUS."""
    if status is None:
        return None, None
    key = (spec.lockspace, spec.name)
    pids = [r.pid for r in status.resources if (r.lockspace, r.name) == key and r.pid > 0]
    pid = pids[0] if pids else None
    if pid is None:
        return None, None
    return pid, next((c.name for c in status.clients if c.pid == pid), None)


def _remote_host(
    client: Client, lockspace: str, host_id: int
) -> tuple[str | None, float | None, int]:
    """Another host's name, seconds since we saw it renew, and its last renewal timestamp."""
    try:
        hosts = client.host_status(lockspace)
    except SanlockError:
        return None, None, 0
    for host in hosts:
        if host.host_id != host_id:
            continue
        name = host.fields.get("owner_name") or None
        last_live = _number(host.fields.get("last_live"))
        renewed_ago = time.monotonic() - last_live if last_live else None
        return name, renewed_ago, host.timestamp
    return None, None, 0


def _name_on_disk(status: Status | None, lockspace: str, host_id: int) -> str | None:
    """The name in host ``host_id``'s delta lease, read from the lockspace's disk."""
    where = [ls.info for ls in status.lockspaces if ls.info.name == lockspace] if status else []
    if not where:
        return None
    try:
        disk = DiskLocation(where[0].path, where[0].offset)
        read = direct.read_lockspace_leader(LockspaceSpec(lockspace, host_id, disk))
    except SyncManagerError:
        return None
    if read.leader is None or read.error is not None:
        return None
    return read.leader.resource or None


def _number(text: str | None) -> int:
    try:
        return int(text or "0")
    except ValueError:
        return 0


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.0f} min"


def holder_text(spec: ResourceSpec, holder: Holder | None) -> tuple[str, str]:
    """Two lines for stderr: who holds ``spec``, and what the user can do about it."""
    res = format_resource(spec)
    if holder is None:
        return (
            f"lease {spec.name} ({res}) is busy (its holder could not be read)",
            "the command was not run; try again later",
        )
    who = f"host {holder.host_id}"
    name = f", {holder.host_name}" if holder.host_name else ""
    if holder.local:
        who += f" (this host{name})"
    elif holder.host_name:
        who += f" ({holder.host_name})"
    if holder.pid is not None:
        who += f", pid {holder.pid}"
        if holder.owner_name and holder.owner_name != str(holder.pid):
            who += f" ({holder.owner_name})"
    first = f"lease {spec.name} ({res}) is held by {who}"
    if holder.held_for is not None:
        first += f" for {'' if holder.local else 'about '}{_seconds(holder.held_for)}"
    extra = [f"lver {holder.lver}"] if holder.lver is not None else []
    extra += ["shared"] if holder.shared else []
    first += f" ({', '.join(extra)})" if extra else ""
    if holder.renewed_ago is not None:
        ago = _seconds(holder.renewed_ago)
        first += f"; host {holder.host_id} last renewed its host lease {ago} ago"
    if holder.local:
        if holder.pid is None:
            return first, "the command was not run; wait until it is released and try again"
        return first, (
            f"the command was not run; wait until pid {holder.pid} exits and try again, "
            f"or stop it (kill {holder.pid}: the lease is freed when it exits)"
        )
    lver = (holder.lver or 0) + 1
    request = f"sync_manager client request -r {res}:{lver} -f 2"
    return first, (
        f"the command was not run; wait until host {holder.host_id} releases it and try again, "
        f"or ask the holder to give it up: {request} (its killpath or SIGTERM; -f 1: SIGKILL)"
    )
