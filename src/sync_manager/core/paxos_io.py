"""What a paxos lease is made of, and how it is read and written over one to four disks.

A resource lease may be replicated on up to 4 disks (spec/sanlock-ondisk.md 1, 4.3). Gafni and
Lamport's Disk Paxos tolerates the failure of any minority of them: every read and every write of
the algorithm must succeed on a *majority* of the disks (1 of 1, 2 of 2, 2 of 3, 3 of 4; an even
split is not a majority). An I/O error (``DiskIOError``) or timeout (``IOTimeout``) that the
driver throws into the step on a minority of disks is tolerated; on a majority, the operation
fails with the error sanlock reports there.

With one disk, errors pass through unchanged (an I/O error stays an I/O error, a bad leader
stays ``LEADER_MAGIC`` and so on), as in sanlock, whose single-disk paths return the first error.

Read patterns (``ReadPattern``): sanlock reads the whole align-size area at the start of an
acquire and ``roundup_pow2(num_hosts + 2)`` sectors in each ballot phase; ``COMPACT`` reads only
the ``num_hosts + 2`` sectors that the algorithm looks at. See :func:`lease_read_sectors` for
why the two are equivalent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from sync_manager.core.effects import Step, read, write
from sync_manager.core.paxos_errors import (
    SANLK_LEADER_WRITE,
    DblockRead,
    LeaderDiff,
    LeaderRead,
    LeaderWrite,
)
from sync_manager.errors import (
    SANLK_LEADER_NUMHOSTS,
    BadGeometry,
    CorruptRecord,
    DiskIOError,
    IOTimeout,
    OnDiskError,
    StorageError,
    UsageError,
)
from sync_manager.ondisk.areas import (
    FIRST_HOST_SECTOR,
    dblock_read_sectors,
    host_sector_offset,
    written_hosts,
)
from sync_manager.ondisk.dblock import DBLOCK_SIZE, PaxosDblock
from sync_manager.ondisk.geometry import Geometry
from sync_manager.ondisk.leader import LEADER_COMPARE_LEN, LeaderRecord
from sync_manager.ondisk.names import encode_name
from sync_manager.timeouts import DEFAULT_IO_TIMEOUT

__all__ = [
    "IO_ERRORS",
    "MAX_DISKS",
    "Host",
    "LeaseHead",
    "LockspaceDisk",
    "ReadPattern",
    "Resource",
    "ballot_read_sectors",
    "check_leader",
    "leader_geometry",
    "lease_read_sectors",
    "majority",
    "read_area",
    "read_leader_majority",
    "read_lease_head",
    "write_each",
    "write_leader_majority",
]

MAX_DISKS = 4  # SANLK_MAX_DISKS

# What the driver throws into a step when one I/O fails; tolerated on a minority of disks.
IO_ERRORS: tuple[type[StorageError], ...] = (DiskIOError, IOTimeout)
# What makes one disk's copy of a lease unusable: I/O failure or invalid records.
_DISK_ERRORS: tuple[type[Exception], ...] = (DiskIOError, IOTimeout, OnDiskError)


@dataclass(frozen=True, slots=True)
class Resource:
    """A paxos lease: its lockspace and name, its disks as (path, offset), the assumed geometry.

    The geometry is where reading starts; if the leader on disk records another sector or
    align size, the lease's own values are used (6.1 step 2).
    """

    lockspace: str
    name: str
    disks: tuple[tuple[str, int], ...]
    geometry: Geometry

    def __post_init__(self) -> None:
        if not 1 <= len(self.disks) <= MAX_DISKS:
            raise UsageError(f"a lease has 1..{MAX_DISKS} disks, not {len(self.disks)}")
        encode_name(self.lockspace, what="lockspace name")
        encode_name(self.name, what="resource name")

    @property
    def space_name(self) -> bytes:
        """The lockspace name as its 48-byte on-disk field."""
        return encode_name(self.lockspace, what="lockspace name")

    @property
    def resource_name(self) -> bytes:
        """The resource name as its 48-byte on-disk field."""
        return encode_name(self.name, what="resource name")


@dataclass(frozen=True, slots=True)
class Host:
    """Us: our host id in the lockspace and the generation of our delta lease."""

    host_id: int
    generation: int

    def __post_init__(self) -> None:
        if self.host_id < 1:
            raise UsageError(f"host id must be at least 1, not {self.host_id}")


class LockspaceDisk(NamedTuple):
    """Where the lease's lockspace (the owners' delta leases) is, and our io_timeout there."""

    path: str
    offset: int
    geometry: Geometry
    io_timeout: int = DEFAULT_IO_TIMEOUT


class ReadPattern(enum.Enum):
    """How much of the lease area an acquire reads (see :func:`lease_read_sectors`)."""

    SANLOCK = "sanlock"  # the whole area first, then roundup_pow2(num_hosts + 2) sectors
    COMPACT = "compact"  # num_hosts + 2 sectors every time
    MINIMAL = "minimal"  # first the leader and our own block only; then as COMPACT


def majority(num_disks: int, ok: int) -> bool:
    """More than half of the disks (sanlock's ``majority_disks``)."""
    return 2 * ok > num_disks


def leader_geometry(leader: LeaderRecord) -> Geometry:
    """The geometry a (validated) leader records: its sector size and align flag."""
    return Geometry.from_leader_fields(leader.sector_size, leader.flags)


def check_leader(
    leader: LeaderRecord, resource: Resource, host_id: int, path: str, base: int
) -> None:
    """Validate a paxos leader as sanlock's ``verify_leader`` (spec 4.11), located on disk.

    ``host_id`` 0 skips the num_hosts check (readers that are not contenders).
    """
    try:
        leader.check_paxos(resource.space_name, resource.resource_name, host_id)
    except OnDiskError as err:
        raise err.at(path, base) from None


# --- read sizes ------------------------------------------------------------------------------


_MINIMAL_HEAD_BYTES = 4096  # MINIMAL's first read: the leader, and our block if it is in here


def lease_read_sectors(
    geometry: Geometry, pattern: ReadPattern, num_hosts_hint: int | None = None
) -> int:
    """Sectors read at the start of an acquire (before num_hosts is known).

    sanlock reads the whole area. Of it, the algorithm only ever looks at sector 0 (the
    leader) and the sectors ``2 .. num_hosts + 1`` (the dblocks and mode blocks of hosts
    ``1 .. num_hosts``, which include our own: the leader check guarantees
    ``host_id <= num_hosts``). Sectors past them are never examined, by sanlock or by us, so
    reading ``num_hosts + 2`` sectors yields exactly the bytes the decision depends on.
    ``COMPACT`` reads ``num_hosts_hint + 2`` sectors (the geometry's max_hosts when there is no
    hint) and, if the leader then shows a larger num_hosts, the missing sectors in a second
    read. Splitting one read in two at a sector boundary adds no behaviour: storage only makes
    single sectors atomic, so a long read may already see each sector at a different instant.
    """
    if pattern is ReadPattern.SANLOCK:
        return geometry.sectors
    if pattern is ReadPattern.MINIMAL:
        return min(geometry.sectors, max(_MINIMAL_HEAD_BYTES // geometry.sector_size, 1))
    hosts = num_hosts_hint if num_hosts_hint else geometry.max_hosts
    return min(geometry.sectors, max(hosts, 1) + FIRST_HOST_SECTOR)


def ballot_read_sectors(num_hosts: int, geometry: Geometry, pattern: ReadPattern) -> int:
    """Sectors each ballot phase reads per disk.

    sanlock reads ``roundup_pow2(num_hosts + 2)`` sectors but only examines the first
    ``num_hosts + 2`` (leader, request record, one sector per host); ``COMPACT`` reads just those.
    """
    if pattern is ReadPattern.SANLOCK:
        return min(dblock_read_sectors(num_hosts), geometry.sectors)
    return min(num_hosts + FIRST_HOST_SECTOR, geometry.sectors)


# --- the initial read of a whole lease -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseHead:
    """What an acquire learns from its first read (6.1): the leader, the geometry the lease
    really has, the highest ballot number of any host, and our own dblock."""

    leader: LeaderRecord
    geometry: Geometry
    max_mbal: int
    our_dblock: PaxosDblock


@dataclass(frozen=True, slots=True)
class _OtherGeometry:
    geometry: Geometry


def _read_area_one(
    path: str,
    base: int,
    resource: Resource,
    host_id: int,
    geometry: Geometry,
    *,
    pattern: ReadPattern,
    num_hosts_hint: int | None,
) -> Step[tuple[bytes, LeaderRecord] | _OtherGeometry]:
    """Read the lease's used sectors on one disk and validate its leader.

    Returns the bytes (at least ``num_hosts + 2`` sectors) and the leader, or the geometry the
    leader records if it is not the one assumed. sanlock notices another geometry only after
    validating every dblock at the assumed sector size, which can fail on a lease of the other
    size; we switch as soon as the leader tells us.
    """
    sector_size = geometry.sector_size
    count = lease_read_sectors(geometry, pattern, num_hosts_hint)
    buf = yield from read(path, base, count * sector_size)
    leader = LeaderRecord.unpack(buf)
    check_leader(leader, resource, host_id, path, base)
    try:
        actual = leader_geometry(leader)
    except BadGeometry as err:
        raise CorruptRecord(
            disk=path, offset=base, record="paxos leader", expected="valid sizes", found=str(err)
        ) from None
    if actual != geometry:
        return _OtherGeometry(actual)
    need = leader.num_hosts + FIRST_HOST_SECTOR
    if need > geometry.sectors:
        raise CorruptRecord(
            disk=path,
            offset=base,
            record="paxos leader",
            expected=f"num_hosts <= {geometry.sectors - FIRST_HOST_SECTOR}",
            found=leader.num_hosts,
            code=SANLK_LEADER_NUMHOSTS,
        )
    if need > count and pattern is not ReadPattern.MINIMAL:
        # COMPACT guessed too few hosts: read the rest (see lease_read_sectors)
        rest = yield from read(path, base + count * sector_size, (need - count) * sector_size)
        buf += rest
    return buf, leader


def read_area(
    resource: Resource,
    *,
    pattern: ReadPattern = ReadPattern.COMPACT,
    num_hosts_hint: int | None = None,
) -> Step[tuple[bytes, LeaderRecord, Geometry]]:
    """Read the lease on its first disk for a reader (no host id): bytes, leader, geometry."""
    if pattern is ReadPattern.MINIMAL:  # a reader wants every host's block
        pattern = ReadPattern.COMPACT
    path, base = resource.disks[0]
    geometry = resource.geometry
    while True:
        got = yield from _read_area_one(
            path, base, resource, 0, geometry, pattern=pattern, num_hosts_hint=num_hosts_hint
        )
        if isinstance(got, _OtherGeometry):
            geometry = got.geometry
            continue
        return got[0], got[1], geometry


def _read_head_one(
    path: str,
    base: int,
    resource: Resource,
    host_id: int,
    geometry: Geometry,
    *,
    pattern: ReadPattern,
    num_hosts_hint: int | None,
) -> Step[LeaseHead | _OtherGeometry]:
    got = yield from _read_area_one(
        path, base, resource, host_id, geometry, pattern=pattern, num_hosts_hint=num_hosts_hint
    )
    if isinstance(got, _OtherGeometry):
        return got
    buf, leader = got
    if pattern is ReadPattern.MINIMAL:
        return (
            yield from _head_from_own_block(buf, leader, geometry, host_id, path=path, base=base)
        )
    max_mbal = 0
    for index in written_hosts(buf, geometry, leader.num_hosts):  # blank blocks: mbal 0
        start = (FIRST_HOST_SECTOR + index) * geometry.sector_size
        dblock = PaxosDblock.unpack(buf, start)
        try:
            dblock.check()
        except OnDiskError as err:
            raise err.at(path, base + start) from None
        max_mbal = max(max_mbal, dblock.mbal)
    ours = PaxosDblock.unpack(buf, host_sector_offset(host_id, geometry))
    return LeaseHead(leader, geometry, max_mbal, ours)


def _head_from_own_block(
    buf: bytes, leader: LeaderRecord, geometry: Geometry, host_id: int, *, path: str, base: int
) -> Step[LeaseHead]:
    """The lease head of a MINIMAL read: the leader and our own block, no other host's.

    Why this is safe (issue 3's "read less where it is provably safe"): the other hosts'
    blocks are used here only to pick a ballot number above theirs (max_mbal), which is for
    progress, not for safety: Disk Paxos is safe for any ballot number, and phase 1 reads
    every block anyway and aborts (DblockMbal, then a retry with a higher number) if a block
    of this instance has a higher mbal. Blocks of older instances (lower lver) are ignored by
    both phases. The leader, which decides who owns the lease and which instance is next, is
    read and validated exactly as before.
    """
    at = host_sector_offset(host_id, geometry)
    if len(buf) >= at + DBLOCK_SIZE:
        sector = buf[at : at + DBLOCK_SIZE]
    else:
        sector = yield from read(path, base + at, geometry.sector_size)
    ours = PaxosDblock.unpack(sector)
    try:
        ours.check()
    except OnDiskError as err:
        raise err.at(path, base + at) from None
    return LeaseHead(leader, geometry, ours.mbal, ours)


def read_lease_head(
    resource: Resource,
    host_id: int,
    *,
    pattern: ReadPattern = ReadPattern.COMPACT,
    num_hosts_hint: int | None = None,
) -> Step[LeaseHead]:
    """Read and validate the lease on every disk (6.1 step 1, sanlock's ``paxos_lease_read``).

    One disk: any error is raised as is (I/O error, bad leader, ``DBLOCK_CHECKSUM``). Several:
    a disk whose read or validation fails is skipped; none left -> DBLOCK_READ; no leader equal
    (first 152 bytes) on a majority of disks -> LEADER_DIFF. max_mbal is the highest over all
    disks read, our dblock the one from the disk with that maximum.
    """
    geometry = resource.geometry
    single = len(resource.disks) == 1
    while True:
        heads: list[LeaseHead] = []
        switch: Geometry | None = None
        last: Exception | None = None
        for path, base in resource.disks:
            try:
                got = yield from _read_head_one(
                    path,
                    base,
                    resource,
                    host_id,
                    geometry,
                    pattern=pattern,
                    num_hosts_hint=num_hosts_hint,
                )
            except _DISK_ERRORS as err:
                if single:
                    raise
                last = err
                continue
            if isinstance(got, _OtherGeometry):
                switch = got.geometry
                break
            heads.append(got)
        if switch is not None:
            geometry = switch
            continue
        if not heads:
            raise DblockRead(f"cannot read lease {resource.name} on any disk: {last}") from last
        best = max(heads, key=lambda head: head.max_mbal)
        leader = _majority_leader([head.leader for head in heads], len(resource.disks))
        return LeaseHead(leader, geometry, best.max_mbal, best.our_dblock)


def _majority_leader(leaders: list[LeaderRecord], num_disks: int) -> LeaderRecord:
    """The first leader whose first 152 bytes repeat on a majority of the disks."""
    keys = [leader.pack()[:LEADER_COMPARE_LEN] for leader in leaders]
    for leader, key in zip(leaders, keys, strict=True):
        if majority(num_disks, keys.count(key)):
            return leader
    raise LeaderDiff(f"leaders differ: none is the same on a majority of {num_disks} disks")


# --- the leader alone ------------------------------------------------------------------------


def read_leader_majority(
    resource: Resource, geometry: Geometry, host_id: int = 0
) -> Step[LeaderRecord]:
    """Read and validate the leader sector on every disk (``paxos_lease_leader_read``).

    One disk: errors are raised as is. Several: a majority must read and validate
    (else LEADER_READ) and agree on their first 152 bytes (else LEADER_DIFF).
    """
    leaders: list[LeaderRecord] = []
    last: Exception | None = None
    for path, base in resource.disks:
        try:
            buf = yield from read(path, base, geometry.sector_size)
            leader = LeaderRecord.unpack(buf)
            check_leader(leader, resource, host_id, path, base)
        except _DISK_ERRORS as err:
            if len(resource.disks) == 1:
                raise
            last = err
            continue
        leaders.append(leader)
    if not majority(len(resource.disks), len(leaders)):
        raise LeaderRead(
            f"leader of {resource.name} read on {len(leaders)} of {len(resource.disks)} "
            f"disks: {last}"
        ) from last
    return _majority_leader(leaders, len(resource.disks))


# --- writes ----------------------------------------------------------------------------------


def write_each(
    resource: Resource, relative: int, data: bytes
) -> Step[tuple[int, StorageError | None]]:
    """Write ``data`` at ``relative`` bytes into the lease on every disk, in order.

    Returns how many writes succeeded and the last I/O error (an IOTimeout if any timed out).
    """
    ok = 0
    error: StorageError | None = None
    for path, base in resource.disks:
        try:
            yield from write(path, base + relative, data)
        except IO_ERRORS as err:
            if not isinstance(error, IOTimeout):
                error = err
            continue
        ok += 1
    return ok, error


def write_leader_majority(
    resource: Resource, geometry: Geometry, leader: LeaderRecord, what: str
) -> Step[None]:
    """Write the leader sector (zero-filled) to every disk; a majority must succeed.

    The error code is sanlock's: AIO_TIMEOUT if a write timed out, else the I/O error's.
    """
    sector = leader.pack().ljust(geometry.sector_size, b"\0")
    ok, error = yield from write_each(resource, 0, sector)
    if not majority(len(resource.disks), ok):
        code = error.code if error is not None else SANLK_LEADER_WRITE
        raise LeaderWrite(
            f"{what}: leader of {resource.name} written on {ok} of {len(resource.disks)} disks",
            leader=leader,
            code=code,
        ) from error
