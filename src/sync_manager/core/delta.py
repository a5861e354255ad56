"""Delta leases: host ids in a lockspace (spec/sanlock-ondisk.md 5, timings 7, safety 8).

This is Chockler and Malkhi's light-weight lease ("Light-Weight Leases for Storage-Centric
Coordination") as sanlock 3.8.5 runs it, with the waits stretched so that watchdog fencing
holds. Host id ``H`` of a lockspace is the leader record in sector ``H-1`` of its area (4.2);
the record's ``resource_name`` is the unique name of the host that holds it, its ``timestamp``
the holder's monotonic seconds at its last write (0 = free).

Every step here is a pure generator over the effects of :mod:`sync_manager.core.effects`: it
reads and writes only by yielding, takes time only from ``now()`` and waits only with
``sleep()``. Failures of I/O arrive as exceptions thrown in at the ``yield``.

Invariants kept (what makes two hosts never hold one host id at once):

* **Acquire is write, wait, re-read** (5.2). We write our record only after our own read showed
  it free, ours by name, or unchanged for ``8*io + 60`` seconds (the previous holder's
  host_dead time, which is longer than the paper's ``D + 6d``), where ``io`` is the io_timeout
  *found in the record*. After writing we wait ``2*io`` and re-read: any byte different means
  another host wrote in between, and we give up (:class:`HostIdBusy`). Host names are unique, so
  two writers never leave identical records.
* **A held record has a non-zero timestamp** and our generation only ever goes up by one per
  acquire, so other hosts see every acquire and every renewal as a change of the triple
  (owner_id, owner_generation, timestamp).
* **Renewal never overwrites another host's write** (5.3): before writing we re-check that the
  record still has our owner, generation and name (else :class:`RenewOwner`) and, if our last
  write is known to have landed, that it is byte-identical to it (else :class:`RenewDiff`).
  Both are "corrupt" results: the caller must fail the lockspace at once (8.2).
* **Byte compatibility with sanlock**: the host name is written C-string style over the old
  name (at most 47 bytes plus a NUL, the bytes after the NUL kept), io_timeout keeps only its
  low 8 bits, acquire and release zero-fill the sector (clearing the bitmap), renewal writes
  the bitmap at byte 256 with a deadline of host_dead seconds.
* **Liveness is judged on the observer's clock** (5.5, 8.3): :class:`HostView` notes, in local
  monotonic seconds, the last time it saw each record's triple change; timestamps of other
  hosts are compared only for equality.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from sync_manager.core.effects import Step, now, read, sleep, write
from sync_manager.core.errors import Aborted, HostIdBusy, RenewDiff, RenewOwner
from sync_manager.errors import OnDiskError, TruncatedArea, UsageError
from sync_manager.ondisk.areas import pack_delta_sector
from sync_manager.ondisk.geometry import Geometry
from sync_manager.ondisk.leader import LEADER_SIZE, LeaderRecord
from sync_manager.ondisk.names import NAME_LEN, encode_name, names_equal
from sync_manager.timeouts import Timeouts

__all__ = [
    "HOST_NAME_DISK_MAX",
    "NO_EVENT",
    "DeltaLease",
    "HostEvent",
    "Lockspace",
    "RenewResult",
    "acquire",
    "overlay_c_string",
    "read_area",
    "read_delta",
    "release",
    "renew",
    "write_renewal",
]

HOST_NAME_DISK_MAX = NAME_LEN - 1  # a host name is stored as at most 47 bytes and a NUL
_U64 = (1 << 64) - 1
_IO_TIMEOUT_DISK_MASK = 0xFF  # sanlock keeps only the low 8 bits on acquire and renewal

AbortCheck = Callable[[], bool]


# --- the lockspace and our lease -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lockspace:
    """One host's view of a lockspace: where its area is and who we are in it.

    ``disk`` names the storage for the effects, ``offset`` is where the area starts on it,
    ``host_id`` is our host id (1..max_hosts), ``host_name`` our unique name (at most 48
    bytes; only the first 47 are stored on disk) and ``io_timeout`` our I/O timeout in seconds.
    """

    name: str
    disk: str
    offset: int
    geometry: Geometry
    host_id: int
    host_name: str
    io_timeout: int

    def __post_init__(self) -> None:
        encode_name(self.name, what="lockspace name")
        encode_name(self.host_name, what="host name")
        if not 1 <= self.host_id <= self.geometry.max_hosts:
            raise UsageError(
                f"host id {self.host_id} out of range 1..{self.geometry.max_hosts} "
                f"for a {self.geometry} lockspace"
            )
        if self.offset < 0 or self.offset % self.geometry.sector_size:
            raise UsageError(
                f"lockspace offset {self.offset} is not a multiple of the sector size "
                f"{self.geometry.sector_size}"
            )
        if self.io_timeout < 1:
            raise UsageError(f"io_timeout must be at least 1 second, not {self.io_timeout}")

    @property
    def space_name(self) -> bytes:
        """The lockspace name as its 48-byte on-disk field."""
        return encode_name(self.name, what="lockspace name")

    @property
    def host_name_bytes(self) -> bytes:
        """Our host name as bytes (up to 48, not padded)."""
        return self.host_name.encode("utf-8")

    @property
    def timeouts(self) -> Timeouts:
        """Our timings, from our io_timeout."""
        return Timeouts(self.io_timeout)

    def record_offset(self, host_id: int | None = None) -> int:
        """Absolute offset on ``disk`` of host ``host_id``'s record (ours by default)."""
        host = self.host_id if host_id is None else host_id
        if not 1 <= host <= self.geometry.max_hosts:
            raise UsageError(f"host id {host} out of range 1..{self.geometry.max_hosts}")
        return self.offset + (host - 1) * self.geometry.sector_size


class HostEvent(NamedTuple):
    """A host event (sanlk_host_event without the target): carried in a renewal's write_*."""

    generation: int
    event: int
    data: int


NO_EVENT = HostEvent(0, 0, 0)


@dataclass(frozen=True, slots=True)
class DeltaLease:
    """Our delta lease: the record we last wrote (and, after acquire, read back)."""

    record: LeaderRecord

    @property
    def host_id(self) -> int:
        """The host id this lease is for."""
        return self.record.owner_id

    @property
    def generation(self) -> int:
        """Our generation in the lockspace: incremented by every acquire."""
        return self.record.owner_generation

    @property
    def last_success(self) -> int:
        """Our monotonic seconds at the last successful write (acquire or renewal)."""
        return self.record.timestamp


@dataclass(frozen=True, slots=True)
class RenewResult:
    """What a renewal gives back: the new lease state and the whole area it read."""

    lease: DeltaLease
    area: bytes


# --- steps: reading --------------------------------------------------------------------------


def read_delta(ls: Lockspace, host_id: int | None = None) -> Step[LeaderRecord]:
    """Read and validate host ``host_id``'s record (ours by default); one sector, one I/O.

    Raises the typed errors of 4.11 (BadMagic, UnsupportedVersion, WrongLockspace,
    ChecksumMismatch), located at the record's disk and offset.
    """
    offset = ls.record_offset(host_id)
    data = yield from read(ls.disk, offset, ls.geometry.sector_size, timeout=ls.io_timeout)
    return _validated(ls, data, 0, offset)


def read_area(ls: Lockspace) -> Step[bytes]:
    """Read the whole lockspace area (align size bytes) in one I/O, as a renewal does."""
    area = yield from read(ls.disk, ls.offset, ls.geometry.align_size, timeout=ls.io_timeout)
    if len(area) < ls.geometry.align_size:
        raise TruncatedArea(
            disk=ls.disk,
            offset=ls.offset,
            expected=ls.geometry.align_size,
            found=len(area),
            record="lockspace area",
        )
    return area


def _validated(ls: Lockspace, data: bytes, start: int, absolute: int) -> LeaderRecord:
    """The delta record at ``data[start:]``, validated; errors located at ``absolute``."""
    try:
        record = LeaderRecord.unpack(data[start : start + LEADER_SIZE])
        record.check_delta(ls.space_name)
    except OnDiskError as err:
        err.at(ls.disk, absolute)
        raise
    return record


# --- steps: acquire (5.2) --------------------------------------------------------------------


def acquire(ls: Lockspace, *, abort: AbortCheck | None = None) -> Step[DeltaLease]:
    """Acquire our host id (join the lockspace), exactly as sanlock's delta_lease_acquire.

    Read our record; if it is neither free nor ours by name, wait ``8*io + 60`` seconds and
    re-read (it must be unchanged or free, else HostIdBusy). Write the new record (generation
    + 1, our name, timestamp now), wait ``2*io``, re-read: any byte changed -> HostIdBusy.
    ``io`` is the io_timeout found in the record (ours if 0). ``abort`` is checked before each
    second of the waits; when it returns True the step raises :class:`Aborted`.
    """
    found = yield from read_delta(ls)
    other = Timeouts(found.io_timeout or ls.io_timeout)
    if not found.is_free and not names_equal(found.resource_name, ls.host_name_bytes):
        found = yield from _wait_for_holder(ls, found, other, abort)
    written = yield from _write_acquire(ls, found)
    yield from _wait(other.delta_short_delay, abort, f"acquire of {ls.name}:{ls.host_id}")
    check = yield from read_delta(ls)
    if check != written:
        raise HostIdBusy(ls.name, ls.host_id, check)
    return DeltaLease(check)


def _wait_for_holder(
    ls: Lockspace, found: LeaderRecord, other: Timeouts, abort: AbortCheck | None
) -> Step[LeaderRecord]:
    """Wait out a possible holder; return the record to build on, or raise HostIdBusy."""
    yield from _wait(other.delta_acquire_held_wait, abort, f"acquire of {ls.name}:{ls.host_id}")
    again = yield from read_delta(ls)
    if again != found and not again.is_free:
        raise HostIdBusy(ls.name, ls.host_id, again)
    return again


def _write_acquire(ls: Lockspace, base: LeaderRecord) -> Step[LeaderRecord]:
    """Write our claim over ``base`` (one zero-filled sector) and return what we wrote."""
    timestamp = _seconds((yield from now()))
    new = base.replace(
        timestamp=timestamp,
        io_timeout=ls.io_timeout & _IO_TIMEOUT_DISK_MASK,
        owner_id=ls.host_id,
        owner_generation=(base.owner_generation + 1) & _U64,
        resource_name=overlay_c_string(base.resource_name, ls.host_name_bytes),
    )
    sector = pack_delta_sector(new, ls.geometry.sector_size)
    yield from write(ls.disk, ls.record_offset(), sector, timeout=ls.io_timeout)
    return new


def overlay_c_string(field: bytes, name: bytes) -> bytes:
    """``snprintf(field, 48, "%s", name)``: at most 47 bytes and a NUL; the rest of ``field``
    is kept (so stale bytes of a longer previous name survive after the NUL)."""
    used = min(len(name), HOST_NAME_DISK_MAX)
    return name[:used] + b"\0" + field[used + 1 : NAME_LEN]


def _wait(seconds: int, abort: AbortCheck | None, what: str) -> Step[None]:
    """Sleep ``seconds``; with an abort check, in 1 s slices checked before each one."""
    if abort is None:
        yield from sleep(seconds)
        return
    for _ in range(seconds):
        if abort():
            raise Aborted(what)
        yield from sleep(1)


def _seconds(monotonic: float) -> int:
    """A monotonic time as an on-disk timestamp: whole seconds, never 0 (0 means free)."""
    return max(int(monotonic), 1)


# --- steps: renewal (5.3) and release (5.4) --------------------------------------------------


def renew(
    ls: Lockspace,
    lease: DeltaLease,
    *,
    bitmap: bytes = b"",
    event: HostEvent | None = NO_EVENT,
    previous_ok: bool = True,
) -> Step[RenewResult]:
    """One renewal: read the whole area, check our record, write it with a new timestamp.

    ``bitmap`` (at most 256 bytes) is written at byte 256 of our sector: the hosts we notify.
    ``event`` goes to write_id/write_generation/write_timestamp (None keeps what is on disk,
    as ``sanlock direct renew_id`` does). ``previous_ok`` says our last write (acquire or
    renewal) is known to have succeeded; only then must the record be byte-identical to it.
    The area read is returned for :meth:`HostView.update`.
    """
    area = yield from read_area(ls)
    renewed = yield from write_renewal(
        ls, lease, area, bitmap=bitmap, event=event, previous_ok=previous_ok
    )
    return RenewResult(renewed, area)


def write_renewal(
    ls: Lockspace,
    lease: DeltaLease,
    area: bytes,
    *,
    bitmap: bytes = b"",
    event: HostEvent | None = NO_EVENT,
    previous_ok: bool = True,
) -> Step[DeltaLease]:
    """The second half of :func:`renew`, given the area it read.

    For callers that want the area even when the check or the write fails (sanlock still
    updates its host view from a renewal whose write failed).
    """
    _check_lease(ls, lease)
    start = ls.record_offset() - ls.offset
    found = _validated(ls, area, start, ls.record_offset())
    _check_still_ours(ls, lease.record, found, previous_ok=previous_ok)
    io_timeout = found.io_timeout
    if io_timeout != ls.io_timeout:
        io_timeout = ls.io_timeout & _IO_TIMEOUT_DISK_MASK
    timestamp = _seconds((yield from now()))
    changes: dict[str, object] = {"timestamp": timestamp, "io_timeout": io_timeout}
    if event is not None:
        changes.update(
            write_id=event.generation, write_generation=event.event, write_timestamp=event.data
        )
    new = found.replace(**changes)
    sector = pack_delta_sector(new, ls.geometry.sector_size, bitmap)
    deadline = ls.timeouts.renewal_write_timeout
    yield from write(ls.disk, ls.record_offset(), sector, timeout=deadline)
    return DeltaLease(new)


def _check_still_ours(
    ls: Lockspace, last: LeaderRecord, found: LeaderRecord, *, previous_ok: bool
) -> None:
    """RenewOwner if owner/generation/name changed; RenewDiff if any byte changed."""
    if (
        found.owner_id != last.owner_id
        or found.owner_generation != last.owner_generation
        or found.resource_name != last.resource_name
    ):
        raise RenewOwner(ls.name, ls.host_id, found)
    if previous_ok and found != last:
        raise RenewDiff(ls.name, ls.host_id, found)


def release(ls: Lockspace, lease: DeltaLease) -> Step[None]:
    """Free our host id: our last record with timestamp 0, one zero-filled sector, no wait.

    Only call it once every process using the lockspace is gone, and not after a failed
    renewal (8.2, 8.3).
    """
    _check_lease(ls, lease)
    freed = lease.record.replace(timestamp=0)
    sector = pack_delta_sector(freed, ls.geometry.sector_size)
    yield from write(ls.disk, ls.record_offset(), sector, timeout=ls.io_timeout)


def _check_lease(ls: Lockspace, lease: DeltaLease) -> None:
    if lease.host_id != ls.host_id:
        raise UsageError(
            f"lease of host id {lease.host_id} used with lockspace {ls.name} host id {ls.host_id}"
        )
