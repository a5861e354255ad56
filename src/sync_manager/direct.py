"""Lease areas read and written directly on storage, with no daemon: ``sync_manager direct``.

These are the operations of ``sanlock direct init``, ``read_leader`` and ``dump``, with the
same choices of geometry: explicit sector and align sizes when given, else what the existing
records say, else the storage's logical sector size (512 for a regular file) with the
historical align size (spec/sanlock-ondisk.md 2.2). Results are returned as data; printing is
the CLI's job.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from sync_manager.core import delta, paxos
from sync_manager.core.paxos_errors import ReleaseOwner
from sync_manager.errors import OnDiskError, SyncManagerError, UsageError
from sync_manager.io.disk import Storage
from sync_manager.io.driver import Driver
from sync_manager.leasestr import DiskLocation, LockspaceSpec, ResourceSpec
from sync_manager.ondisk.areas import (
    FIRST_HOST_SECTOR,
    bitmap_hosts,
    delta_offset,
    host_sector_offset,
    lockspace_init,
    resource_init,
)
from sync_manager.ondisk.dblock import MBLOCK_OFFSET, ModeBlock, PaxosDblock
from sync_manager.ondisk.geometry import MIB, Geometry
from sync_manager.ondisk.leader import DELTA_MAGIC, PAXOS_MAGIC, LeaderRecord
from sync_manager.ondisk.names import decode_name, encode_name
from sync_manager.ondisk.request import RequestRecord

__all__ = [
    "DEFAULT_IO_TIMEOUT",
    "WRITE_INIT_IO_TIMEOUT",
    "DumpEntry",
    "LeaderRead",
    "acquire_host_id",
    "acquire_resource",
    "choose_geometry",
    "dump",
    "existing_geometry",
    "in_use",
    "init_lockspace",
    "init_resource",
    "open_resource",
    "read_lockspace_leader",
    "read_resource_leader",
    "release_host_id",
    "release_resource",
]

DEFAULT_IO_TIMEOUT = 10
WRITE_INIT_IO_TIMEOUT = 60  # sanlock's timeout for the big init writes; not stored on disk
_PROBE_SIZE = 4096  # enough for a leader record in either sector size
_DUMP_PROBE_TRIES = 1024  # look for a record every 1 MiB, up to 1 GiB (as sanlock)


def choose_geometry(
    storage: Storage, sector_size: int | None = None, align_size: int | None = None
) -> Geometry:
    """The geometry to initialize an area with on ``storage``.

    Explicit sizes win; a missing sector size is the storage's own (512 for a file), a missing
    align size is the historical default for the sector size. A sector size below the
    device's own cannot work with O_DIRECT, so it is refused.
    """
    sector = sector_size or storage.sector_size
    geometry = Geometry(sector, align_size) if align_size else Geometry.default_for(sector)
    if geometry.sector_size < storage.sector_size:
        raise UsageError(
            f"{storage.path}: sector size {geometry.sector_size} is smaller than the device's "
            f"logical sector size {storage.sector_size}"
        )
    return geometry


def init_lockspace(
    spec: LockspaceSpec,
    *,
    io_timeout: int = DEFAULT_IO_TIMEOUT,
    sector_size: int | None = None,
    align_size: int | None = None,
) -> Geometry:
    """Write a fresh lockspace area (all host ids free), as ``sanlock direct init -s``.

    The area is written in one I/O with host 1's magic zeroed, then sector 0 alone, so that a
    crash in between leaves an area that nobody mistakes for a valid lockspace.
    """
    _validate_sizes(sector_size, align_size)
    with Storage.open(spec.disk.path, io_timeout=WRITE_INIT_IO_TIMEOUT) as storage:
        geometry = choose_geometry(storage, sector_size, align_size)
        image = lockspace_init(spec.name, geometry, io_timeout or DEFAULT_IO_TIMEOUT)
        _require_room(storage, spec.disk.offset, geometry)
        storage.write(spec.disk.offset, image.area)
        storage.write(spec.disk.offset, image.first_sector)
    return geometry


def init_resource(
    spec: ResourceSpec,
    *,
    num_hosts: int = 0,
    clear: bool = False,
    sector_size: int | None = None,
    align_size: int | None = None,
    now: int = 0,
) -> Geometry:
    """Write a fresh resource lease on every disk of ``spec``, as ``sanlock direct init -r``.

    With ``clear`` the lease is written invalid (PAXOS_CLEAR magic), as ``init -r ... -z 1``.
    """
    _validate_sizes(sector_size, align_size)
    storages: list[Storage] = []
    try:
        for disk in spec.disks:
            storages.append(Storage.open(disk.path, io_timeout=WRITE_INIT_IO_TIMEOUT))
        geometry = choose_geometry(storages[0], sector_size, align_size)
        image = resource_init(spec.lockspace, spec.name, geometry, num_hosts, clear=clear, now=now)
        for storage, disk in zip(storages, spec.disks, strict=True):
            choose_geometry(storage, geometry.sector_size, geometry.align_size)
            _require_room(storage, disk.offset, geometry)
        for storage, disk in zip(storages, spec.disks, strict=True):
            storage.write(disk.offset, image)
    finally:
        for storage in storages:
            storage.close()
    return geometry


@dataclass(frozen=True, slots=True)
class LeaderRead:
    """What ``read_leader`` found: the record (if any bytes could be read) and its verdict.

    ``error`` is None when the record is valid; otherwise the record is still given, as
    sanlock prints the fields of an invalid record too.
    """

    leader: LeaderRecord | None
    error: SyncManagerError | None = None

    @property
    def code(self) -> int:
        """sanlock's return code for this read: 0 or a negative error."""
        return 0 if self.error is None else self.error.code


def read_lockspace_leader(
    spec: LockspaceSpec,
    *,
    sector_size: int | None = None,
    align_size: int | None = None,
    io_timeout: int = DEFAULT_IO_TIMEOUT,
) -> LeaderRead:
    """Read and validate host ``spec.host_id``'s delta lease, as ``direct read_leader -s``."""
    if spec.host_id < 1:
        return LeaderRead(None, UsageError("read_leader -s needs a host id of 1 or more"))
    path, base = spec.disk.path, spec.disk.offset
    try:
        with Storage.open(path, readonly=True, io_timeout=io_timeout) as storage:
            geometry = _existing_geometry(storage, base, sector_size, align_size)
            offset = base + delta_offset(spec.host_id, geometry)
            leader = LeaderRecord.unpack(storage.read(offset, geometry.sector_size))
    except SyncManagerError as err:
        return LeaderRead(None, _located(err, path, base))
    try:
        leader.check_delta(encode_name(spec.name, what="lockspace name"))
    except OnDiskError as err:
        return LeaderRead(leader, err.at(path, offset))
    return LeaderRead(leader)


def read_resource_leader(
    spec: ResourceSpec,
    *,
    sector_size: int | None = None,
    align_size: int | None = None,
    io_timeout: int = DEFAULT_IO_TIMEOUT,
) -> LeaderRead:
    """Read and validate a resource lease's leader (first disk), as ``read_leader -r``."""
    disk = spec.disks[0]
    try:
        with Storage.open(disk.path, readonly=True, io_timeout=io_timeout) as storage:
            geometry = _existing_geometry(storage, disk.offset, sector_size, align_size)
            leader = LeaderRecord.unpack(storage.read(disk.offset, geometry.sector_size))
    except SyncManagerError as err:
        return LeaderRead(None, _located(err, disk.path, disk.offset))
    try:
        leader.check_paxos(
            encode_name(spec.lockspace, what="lockspace name"),
            encode_name(spec.name, what="resource name"),
        )
    except OnDiskError as err:
        return LeaderRead(leader, err.at(disk.path, disk.offset))
    return LeaderRead(leader)


# --- acquire and release without a daemon ----------------------------------------------------


def acquire_resource(
    spec: ResourceSpec,
    host_id: int,
    generation: int,
    *,
    num_hosts: int = 0,
    io_timeout: int = DEFAULT_IO_TIMEOUT,
    rng: random.Random | None = None,
) -> paxos.AcquireResult:
    """Run a paxos acquire as host ``host_id`` generation ``generation``, as
    ``sanlock direct acquire``.

    There is no lockspace here, so no liveness of other hosts is known: a lease owned by
    another host fails with ACQUIRE_LOCKSPACE (-241), as with sanlock. ``spec.lver`` and
    ``spec.shared`` are honoured.
    """
    host = paxos.Host(host_id, generation)
    with Driver(io_timeout) as driver:
        resource, hint = _resource(driver, spec)
        return driver.run(
            paxos.acquire(
                resource,
                host,
                rng=rng or random.Random(),
                lver=spec.lver,
                shared=spec.shared,
                num_hosts=num_hosts or None,
                num_hosts_hint=hint,
            )
        )


def release_resource(
    spec: ResourceSpec, host_id: int, generation: int, *, io_timeout: int = DEFAULT_IO_TIMEOUT
) -> None:
    """Release a lease held by host ``host_id`` generation ``generation``.

    Unlike ``sanlock direct release`` (a no-op in 3.8.5: it never learns the host id), this
    really releases: our dblock is marked RELEASED and the leader freed if we wrote it. A lease
    whose leader names another owner fails with RELEASE_OWNER (-251) and writes nothing.
    """
    host = paxos.Host(host_id, generation)
    with Driver(io_timeout) as driver:
        resource, _ = _resource(driver, spec)
        leader = driver.run(paxos.read_leader(resource))
        if spec.shared:
            dblock = _our_dblock(driver, resource, host_id)
            driver.run(paxos.release(resource, host, leader, dblock, shared=True))
            return
        if leader.is_free or (leader.owner_id, leader.owner_generation) != (
            host_id,
            generation,
        ):
            raise ReleaseOwner(
                f"{spec.name}: held by host {leader.owner_id} generation "
                f"{leader.owner_generation}{' (free)' if leader.is_free else ''}, "
                f"not by host {host_id} generation {generation}"
            )
        dblock = _our_dblock(driver, resource, host_id)
        driver.run(paxos.release(resource, host, leader, dblock))


def acquire_host_id(
    spec: LockspaceSpec, host_name: str, *, io_timeout: int = DEFAULT_IO_TIMEOUT
) -> delta.DeltaLease:
    """Acquire host id ``spec.host_id`` with ``host_name``, as ``sanlock direct acquire_id``.

    Takes 2 * io_timeout seconds for a free id or one last held under the same name, and
    8 * io_timeout + 60 more for an id another host may still hold.
    """
    with Driver(io_timeout) as driver:
        ls = _lockspace(driver, spec, host_name, io_timeout)
        return driver.run(delta.acquire(ls))


def release_host_id(spec: LockspaceSpec, *, io_timeout: int = DEFAULT_IO_TIMEOUT) -> None:
    """Free host id ``spec.host_id`` (timestamp 0), as ``sanlock direct release_id``."""
    with Driver(io_timeout) as driver:
        ls = _lockspace(driver, spec, "", io_timeout)
        record = driver.run(delta.read_delta(ls))
        if record.is_free:
            return
        ls = dataclasses.replace(ls, host_name=record.resource or "-")
        driver.run(delta.release(ls, delta.DeltaLease(record)))


def _lockspace(
    driver: Driver, spec: LockspaceSpec, host_name: str, io_timeout: int
) -> delta.Lockspace:
    if spec.host_id < 1:
        raise UsageError("a host id of 1 or more is needed: LS:HOST_ID:PATH:OFFSET")
    geometry = _existing_geometry(driver.storage(spec.disk.path), spec.disk.offset, None, None)
    return delta.Lockspace(
        spec.name,
        spec.disk.path,
        spec.disk.offset,
        geometry,
        spec.host_id,
        host_name or "-",
        io_timeout,
    )


def _resource(driver: Driver, spec: ResourceSpec) -> tuple[paxos.Resource, int | None]:
    disks = tuple((d.path, d.offset) for d in spec.disks)
    return open_resource(driver, spec.lockspace, spec.name, disks)


def open_resource(
    driver: Driver, lockspace: str, name: str, disks: tuple[tuple[str, int], ...]
) -> tuple[paxos.Resource, int | None]:
    """The lease ``lockspace:name`` on ``disks`` (path, offset), with the geometry and the
    num_hosts its leader on the first disk records (None if there is no leader there)."""
    path, offset = disks[0]
    head = _read_head(driver.storage(path), offset)
    geometry = _declared_geometry(head) or Geometry.default_for(driver.storage(path).sector_size)
    hint = LeaderRecord.unpack(head).num_hosts if _magic(head) == PAXOS_MAGIC else None
    return paxos.Resource(lockspace, name, disks, geometry), hint or None


def _our_dblock(driver: Driver, resource: paxos.Resource, host_id: int) -> PaxosDblock:
    """Our dblock on the first disk: one sector, where our last ballot left it."""
    path, base = resource.disks[0]
    geometry = resource.geometry
    sector = driver.storage(path).read(
        base + host_sector_offset(host_id, geometry), geometry.sector_size
    )
    return PaxosDblock.unpack(sector)


# --- dump ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DumpEntry:
    """One line of ``direct dump``: a delta lease that was ever acquired, or a resource lease.

    For a resource, ``request`` is its request record, ``dblocks`` the written dblocks as
    (host id, dblock) and ``shared`` the shared holders as (host id, generation). For a delta
    lease, ``bitmap`` lists the hosts its owner is notifying.
    """

    kind: str  # "delta" or "paxos"
    offset: int
    leader: LeaderRecord
    bitmap: tuple[int, ...] = ()
    request: RequestRecord | None = None
    dblocks: tuple[tuple[int, PaxosDblock], ...] = ()
    shared: tuple[tuple[int, int], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class DumpResult:
    """Everything ``dump`` found, and the geometry it read with."""

    geometry: Geometry
    entries: tuple[DumpEntry, ...]


def dump(
    location: DiskLocation,
    size: int = 0,
    *,
    sector_size: int | None = None,
    align_size: int | None = None,
    io_timeout: int = DEFAULT_IO_TIMEOUT,
) -> DumpResult:
    """Walk lease areas from ``location`` as ``sanlock direct dump PATH:OFFSET:SIZE``.

    Areas are read one align size at a time. Without ``size`` the walk stops at the first area
    that is neither a lockspace nor a resource, or at the end of the storage; with ``size`` it
    skips such areas and stops after ``size`` bytes.
    """
    with Storage.open(location.path, readonly=True, io_timeout=io_timeout) as storage:
        if sector_size and align_size:
            geometry = Geometry(sector_size, align_size)
        else:
            geometry = _probe_dump_geometry(storage, location.offset, size)
        entries: list[DumpEntry] = []
        end = location.offset + size if size else storage.size
        offset = location.offset
        while offset + geometry.sector_size <= min(end, storage.size):
            length = min(geometry.align_size, storage.size - offset)
            length -= length % geometry.sector_size
            area = storage.read(offset, length)
            found = list(_dump_area(area, offset, geometry))
            if not found and not size and _magic(area) not in (DELTA_MAGIC, PAXOS_MAGIC):
                break
            entries.extend(found)
            offset += geometry.align_size
    return DumpResult(geometry, tuple(entries))


def in_use(
    location: DiskLocation, *, sector_size: int | None = None, align_size: int | None = None
) -> str | None:
    """Why an init at ``location`` would do harm, or None: host ids held in a lockspace there
    (joined, or left without releasing), or a lease held there (exclusive or shared). The
    area is the one an init with these sizes would write."""
    with Storage.open(location.path, readonly=True) as storage:
        geometry = choose_geometry(storage, sector_size, align_size)
    found = dump(
        location,
        geometry.align_size,
        sector_size=geometry.sector_size,
        align_size=geometry.align_size,
    )
    at = f"{location.path}:{location.offset}"
    hosts = [
        str(e.leader.owner_id) for e in found.entries if e.kind == "delta" and e.leader.timestamp
    ]
    if hosts:
        many = len(hosts) > 1
        return (
            f"{at} holds a lockspace whose host id{'s' if many else ''} {', '.join(hosts)} "
            f"{'are' if many else 'is'} in use (joined, or left without releasing); init would "
            "erase them while those hosts may run: remove the lockspace everywhere first"
        )
    for e in found.entries:
        holders = [f"host {e.leader.owner_id} (lver {e.leader.lver})"] if e.leader.timestamp else []
        holders += [f"host {host} (shared)" for host, _ in e.shared]
        if e.kind == "paxos" and holders:
            name = f"{decode_name(e.leader.space_name)}:{decode_name(e.leader.resource_name)}"
            return (
                f"{at} holds lease {name}, held by {', '.join(holders)}; init would free it on "
                "disk while it may be in use: release it first"
            )
    return None


def _dump_area(area: bytes, offset: int, geometry: Geometry) -> Iterator[DumpEntry]:
    magic = _magic(area)
    sector = geometry.sector_size
    if magic == DELTA_MAGIC:
        for index in range(len(area) // sector):
            start = index * sector
            leader = LeaderRecord.unpack(area, start)
            if not leader.magic or not (leader.owner_id or leader.owner_generation):
                continue  # never acquired
            hosts = bitmap_hosts(area[start : start + sector])
            yield DumpEntry("delta", offset + start, leader, bitmap=tuple(hosts))
    elif magic == PAXOS_MAGIC:
        leader = LeaderRecord.unpack(area)
        request = RequestRecord.unpack(area, sector) if len(area) >= 2 * sector else None
        dblocks: list[tuple[int, PaxosDblock]] = []
        shared: list[tuple[int, int]] = []
        room = len(area) // sector - FIRST_HOST_SECTOR
        for index in range(min(leader.num_hosts, room)):
            start = (FIRST_HOST_SECTOR + index) * sector
            dblock = PaxosDblock.unpack(area, start)
            if dblock.mbal or dblock.inp or dblock.lver:
                dblocks.append((index + 1, dblock))
            mode = ModeBlock.unpack(area, start + MBLOCK_OFFSET)
            if mode.shared:
                shared.append((index + 1, mode.generation))
        yield DumpEntry(
            "paxos",
            offset,
            leader,
            request=request,
            dblocks=tuple(dblocks),
            shared=tuple(shared),
        )


def _probe_dump_geometry(storage: Storage, start: int, size: int) -> Geometry:
    offset = start
    for _ in range(_DUMP_PROBE_TRIES):
        if offset + _PROBE_SIZE > storage.size or (size and offset >= start + size):
            break
        geometry = _declared_geometry(storage.read(offset, _PROBE_SIZE))
        if geometry is not None:
            return geometry
        offset += MIB
    raise UsageError(f"{storage.path}: cannot find sector_size and align_size, set with -A and -Z")


# --- helpers ---------------------------------------------------------------------------------


def _magic(data: bytes) -> int:
    return int.from_bytes(data[:4], "little") if len(data) >= 4 else 0


def _declared_geometry(data: bytes) -> Geometry | None:
    """The geometry a lockspace or resource leader at the start of ``data`` declares."""
    if _magic(data) not in (DELTA_MAGIC, PAXOS_MAGIC):
        return None
    leader = LeaderRecord.unpack(data)
    try:
        return Geometry.from_leader_fields(leader.sector_size, leader.flags)
    except UsageError:
        return None


def existing_geometry(storage: Storage, offset: int) -> Geometry:
    """The geometry of the lockspace or resource area at ``offset``: what its first record
    declares, else the storage's default."""
    return _existing_geometry(storage, offset, None, None)


def _existing_geometry(
    storage: Storage, offset: int, sector_size: int | None, align_size: int | None
) -> Geometry:
    """The geometry of an existing area: explicit sizes, else what its first record says."""
    if sector_size and align_size:
        return Geometry(sector_size, align_size)
    geometry = _declared_geometry(_read_head(storage, offset))
    if geometry is not None:
        return geometry
    return Geometry.default_for(sector_size or storage.sector_size)


def _read_head(storage: Storage, offset: int) -> bytes:
    """The first bytes of an area: enough for a leader record in either sector size."""
    probe = max(_PROBE_SIZE, storage.sector_size)
    if offset + probe > storage.size:
        probe = storage.sector_size
    return storage.read(offset, probe)


def _validate_sizes(sector_size: int | None, align_size: int | None) -> None:
    """Refuse an invalid explicit pair before touching storage."""
    if sector_size and align_size:
        Geometry(sector_size, align_size)


def _require_room(storage: Storage, offset: int, geometry: Geometry) -> None:
    if offset % geometry.sector_size:
        raise UsageError(
            f"{storage.path}: offset {offset} is not a multiple of the sector size "
            f"{geometry.sector_size}"
        )
    if storage.is_block_device:
        storage.require_size(offset + geometry.align_size)


def _located(err: SyncManagerError, path: str, offset: int) -> SyncManagerError:
    return err.at(path, offset) if isinstance(err, OnDiskError) else err
