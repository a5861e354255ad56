"""What a host sees of the other hosts in a lockspace: liveness and request bitmaps.

Spec/sanlock-ondisk.md 5.5 and 5.6. After every renewal read, :class:`HostView` notes in *local*
monotonic seconds when each host's record (owner_id, owner_generation, timestamp) last changed;
timestamps written by other hosts are compared only for equality, never against our clock.
From that it derives each host's state (UNKNOWN / FREE / LIVE / FAIL / DEAD) and answers
"is host H with generation G still alive?" for shared-lease cleanup. The bitmap helpers read
and write the per-host request bits at byte 256 of each delta-lease sector.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum

from sync_manager.core.delta import HostEvent, Lockspace
from sync_manager.errors import TruncatedArea, UsageError
from sync_manager.ondisk.areas import BITMAP_OFFSET, BITMAP_SIZE
from sync_manager.ondisk.geometry import Geometry
from sync_manager.ondisk.leader import DELTA_MAGIC, LeaderRecord
from sync_manager.ondisk.names import NAME_LEN, decode_name, names_equal
from sync_manager.timeouts import Timeouts

__all__ = [
    "HostMessage",
    "HostState",
    "HostStatus",
    "HostView",
    "Notices",
    "bit_is_set",
    "make_bitmap",
    "requesting_hosts",
]


# --- bitmaps (4.2, 5.6) ----------------------------------------------------------------------


def make_bitmap(host_ids: Iterable[int]) -> bytes:
    """A 256-byte request bitmap with the bits of ``host_ids`` set (bit H-1, LSB first)."""
    bits = bytearray(BITMAP_SIZE)
    for host in host_ids:
        if not 1 <= host <= BITMAP_SIZE * 8:
            raise UsageError(f"host id {host} out of range 1..{BITMAP_SIZE * 8}")
        bits[(host - 1) // 8] |= 1 << ((host - 1) % 8)
    return bytes(bits)


def bit_is_set(bitmap: bytes, host_id: int) -> bool:
    """Whether ``host_id``'s bit is set in a 256-byte bitmap."""
    index = (host_id - 1) // 8
    return index < len(bitmap) and bool(bitmap[index] >> ((host_id - 1) % 8) & 1)


def _sector_bitmap(area: bytes, start: int) -> bytes:
    return area[start + BITMAP_OFFSET : start + BITMAP_OFFSET + BITMAP_SIZE]


def requesting_hosts(area: bytes, geometry: Geometry, host_id: int) -> list[int]:
    """Other hosts whose record in ``area`` has ``host_id``'s bit set (a snapshot; the
    "triple changed" rule of 5.6 is :meth:`HostView.update`'s)."""
    return [
        other
        for other in range(1, geometry.max_hosts + 1)
        if other != host_id
        and bit_is_set(_sector_bitmap(area, (other - 1) * geometry.sector_size), host_id)
    ]


# --- observing other hosts (5.5, 5.6) --------------------------------------------------------


class HostState(IntEnum):
    """A host's state as ``sanlock client host_status`` reports it (SANLK_HOST_*)."""

    UNKNOWN = 1
    FREE = 2
    LIVE = 3
    FAIL = 4
    DEAD = 5


@dataclass(frozen=True, slots=True)
class HostStatus:
    """What we know of one host id, times in our local monotonic seconds (None = never).

    ``first_check``/``last_check`` are our first and latest looks at its record; ``last_live``
    the last time its (owner_id, generation, timestamp) changed; the other fields are copied
    from its record at that change.
    """

    host_id: int
    first_check: float | None = None
    last_check: float | None = None
    last_live: float | None = None
    owner_id: int = 0
    generation: int = 0
    timestamp: int = 0
    io_timeout: int = 0
    name: str = ""


@dataclass(frozen=True, slots=True)
class HostMessage:
    """An event another host sent us through its bitmap and its record's write_* fields."""

    from_host_id: int
    from_generation: int
    event: HostEvent


@dataclass(frozen=True, slots=True)
class Notices:
    """What one :meth:`HostView.update` found addressed to us.

    ``events``: events to deliver to registered applications. ``requests``: hosts whose bit for
    us means "examine your resource leases for requests" (at most once per set_bitmap seconds
    per host); examine them when this is not empty.
    """

    events: tuple[HostMessage, ...] = ()
    requests: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class _Seen:
    """Per-host state kept between updates (sanlock's host_status minus the view-wide times)."""

    owner_id: int = 0
    generation: int = 0
    timestamp: int = 0
    io_timeout: int = 0
    name: bytes = bytes(NAME_LEN)
    last_live: float | None = None
    last_req: float | None = None
    set_bit_time: float | None = None
    lease_bad: bool = False


class HostView:
    """Our picture of every host in a lockspace, fed by each renewal's area (5.5).

    Pure: no clock; every method takes our monotonic ``now``. Update it with the area of every
    renewal whose read succeeded, then ask :meth:`state` and :meth:`is_alive`.
    """

    def __init__(self, ls: Lockspace, *, set_bitmap_seconds: int | None = None) -> None:
        self.ls = ls
        self.set_bitmap_seconds = (
            ls.timeouts.set_bitmap if set_bitmap_seconds is None else set_bitmap_seconds
        )
        self.first_check: float | None = None
        self.last_check: float | None = None
        self._seen = [_Seen() for _ in range(ls.geometry.max_hosts)]
        self._known: set[int] = set()  # indexes of hosts whose record was ever seen non-blank
        self._last_area = b""  # the area of the previous update

    # --- feeding -------------------------------------------------------------------------

    def update(self, area: bytes, now: float) -> Notices:
        """Look at every record of ``area`` (read at our time ``now``); return what is for us.

        A record whose triple changed since the last look is a sign of life (``last_live =
        now``). A record with a bad magic or another lockspace's name still counts as alive
        when it changes, but its owner fields are not copied (as sanlock).
        """
        geometry = self.ls.geometry
        if len(area) < geometry.max_hosts * geometry.sector_size:
            raise TruncatedArea(
                disk=self.ls.disk,
                offset=self.ls.offset,
                expected=geometry.max_hosts * geometry.sector_size,
                found=len(area),
                record="lockspace area",
            )
        if self.first_check is None:
            self.first_check = now
        self.last_check = now
        events: list[HostMessage] = []
        requests: list[int] = []
        area, last = bytes(area), self._last_area
        for index in _changed_sectors(area, last, geometry.sector_size, geometry.max_hosts):
            message, request = self._look(index, area, index * geometry.sector_size, now)
            if message is not None:
                events.append(message)
            if request:
                requests.append(index + 1)
        self._last_area = area
        return Notices(tuple(events), tuple(requests))

    def _look(
        self, index: int, area: bytes, start: int, now: float
    ) -> tuple[HostMessage | None, bool]:
        record = LeaderRecord.unpack(area, start)
        seen, changed = _observe(self._seen[index], record, self.ls.space_name, now)
        self._seen[index] = seen
        if seen.timestamp or seen.owner_id or seen.last_live is not None:
            self._known.add(index)
        if not changed or index + 1 == self.ls.host_id:
            return None, False
        if not bit_is_set(_sector_bitmap(area, start), self.ls.host_id):
            return None, False
        message = None
        if record.write_generation:
            event = HostEvent(record.write_id, record.write_generation, record.write_timestamp)
            message = HostMessage(seen.owner_id, seen.generation, event)
        if seen.last_req is not None and now - seen.last_req < self.set_bitmap_seconds:
            return message, False
        self._seen[index] = dataclasses.replace(seen, last_req=now)
        return message, True

    # --- our own notifications -----------------------------------------------------------

    def notify(self, host_id: int, now: float) -> None:
        """Set ``host_id``'s bit in our renewals for the next set_bitmap seconds."""
        self._check_host(host_id)
        index = host_id - 1
        self._seen[index] = dataclasses.replace(self._seen[index], set_bit_time=now)

    def renewal_bitmap(self, now: float) -> bytes:
        """The bitmap for our next renewal; bits older than set_bitmap seconds are dropped."""
        hosts = []
        for index, seen in enumerate(self._seen):
            if seen.set_bit_time is None or index + 1 == self.ls.host_id:
                continue
            if now - seen.set_bit_time > self.set_bitmap_seconds:
                self._seen[index] = dataclasses.replace(seen, set_bit_time=None)
            else:
                hosts.append(index + 1)
        return make_bitmap(hosts)

    # --- questions -----------------------------------------------------------------------

    def status(self, host_id: int) -> HostStatus:
        """What we know of ``host_id``."""
        self._check_host(host_id)
        seen = self._seen[host_id - 1]
        return HostStatus(
            host_id=host_id,
            first_check=self.first_check,
            last_check=self.last_check,
            last_live=seen.last_live,
            owner_id=seen.owner_id,
            generation=seen.generation,
            timestamp=seen.timestamp,
            io_timeout=seen.io_timeout,
            name=decode_name(seen.name),
        )

    def known(self) -> list[HostStatus]:
        """The status of every host whose record we have seen held or changing, in host id
        order (the others are all-default: never seen)."""
        return [self.status(index + 1) for index in sorted(self._known)]

    def state(self, host_id: int, now: float) -> HostState:
        """``host_id``'s state at our time ``now`` (the table of 5.5).

        FREE if its timestamp is 0; LIVE if it is us; then, with ``last`` the last change seen
        (or our first look) and ``io`` its io_timeout (ours if 0): within ``8*io`` LIVE if we
        have seen it change since our first look, else UNKNOWN; beyond ``8*io + 60`` DEAD;
        in between FAIL. UNKNOWN too before our first look.
        """
        st = self.status(host_id)
        if st.first_check is None:
            return HostState.UNKNOWN
        if st.timestamp == 0:
            return HostState.FREE
        if st.owner_id == self.ls.host_id:
            return HostState.LIVE
        last = st.first_check if st.last_live is None else st.last_live
        limits = Timeouts(st.io_timeout or self.ls.io_timeout)
        if now - last <= limits.renewal_fail:
            changed = st.last_live is not None and st.last_live != st.first_check
            return HostState.LIVE if changed else HostState.UNKNOWN
        if now - last > limits.host_dead:
            return HostState.DEAD
        return HostState.FAIL

    def is_alive(self, host_id: int, generation: int, now: float) -> bool:
        """May host ``host_id`` with ``generation`` still be alive (5.5, last paragraph)?

        True unless we know better: its record is free, it was re-acquired with a newer
        generation, or we have seen no change for more than its host_dead seconds.
        """
        if not 1 <= host_id <= self.ls.geometry.max_hosts or self.last_check is None:
            return True
        st = self.status(host_id)
        if st.timestamp == 0 or st.generation > generation:
            return False
        dead = Timeouts(st.io_timeout or self.ls.io_timeout).host_dead
        since = st.first_check if st.last_live is None else st.last_live
        return since is None or now - since <= dead

    def _check_host(self, host_id: int) -> None:
        if not 1 <= host_id <= self.ls.geometry.max_hosts:
            raise UsageError(f"host id {host_id} out of range 1..{self.ls.geometry.max_hosts}")


_CHUNK_SECTORS = 64


def _changed_sectors(area: bytes, last: bytes, size: int, count: int) -> Iterator[int]:
    """The indexes of the first ``count`` sectors of ``area`` that differ from ``last``.

    Unchanged sectors need no second look (the same bytes change nothing), and most sectors
    never change: runs of them are compared a chunk at a time at C speed, so a renewal of a
    2000-host lockspace costs microseconds, not milliseconds, of the event loop.
    """
    chunk = _CHUNK_SECTORS * size
    for base in range(0, count * size, chunk):
        end = min(base + chunk, count * size)
        if area[base:end] == last[base:end]:
            continue
        for start in range(base, end, size):
            if area[start : start + size] != last[start : start + size]:
                yield start // size


def _observe(
    seen: _Seen, record: LeaderRecord, space_name: bytes, now: float
) -> tuple[_Seen, bool]:
    """``seen`` after one look at ``record``, and whether its triple changed (sanlock's
    check_other_leases, for one host)."""
    bad = record.magic != DELTA_MAGIC or not names_equal(record.space_name, space_name)
    if bad != seen.lease_bad:
        seen = dataclasses.replace(seen, lease_bad=bad)
    if not bad and (
        not names_equal(seen.name, record.resource_name)
        or seen.generation != record.owner_generation
    ):
        seen = dataclasses.replace(seen, name=record.resource_name)
    triple = (record.owner_id, record.owner_generation, record.timestamp)
    if triple == (seen.owner_id, seen.generation, seen.timestamp):
        return seen, False
    if bad:
        return dataclasses.replace(seen, timestamp=record.timestamp, last_live=now), True
    updated = dataclasses.replace(
        seen,
        owner_id=record.owner_id,
        generation=record.owner_generation,
        timestamp=record.timestamp,
        io_timeout=record.io_timeout,
        name=record.resource_name,
        last_live=now,
    )
    return updated, True
