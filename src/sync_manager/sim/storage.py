"""Simulated I/O requests: their queues, their timelines, and what they do to a fake disk.

The engine (``sim/engine.py``) owns the event heap and decides *when* things happen; this
module holds the per-request arithmetic it relies on:

* :class:`Channel`: the queue of one (host incarnation, disk, channel name), with at most one
  request in flight, as the real driver keeps at most one outstanding I/O per disk;
* :class:`IORequest`: one Read or Write. When the device takes it, :meth:`IORequest.plan` turns
  its fate (``sim/faults.py``) into a *timeline*: fraction ``u`` in [0, 1) of the transfer
  happens at ``b0 + u * latency``, plus ``shift`` from ``freeze`` on (a lost path during which
  the device could make no progress). A write is cut into pieces (:meth:`IORequest.cut`) that
  land at their own points of the timeline; a read samples each sector at its own point
  (:meth:`IORequest.sample_time`, a hash of a per-read seed, so no per-sector events), and
  :meth:`IORequest.see` gives it a piece that lands before that point.
"""

from __future__ import annotations

import math
import random
from collections import deque
from typing import TYPE_CHECKING, Any

from sync_manager.sim.disk import FakeDisk
from sync_manager.sim.faults import IOFate, Op

if TYPE_CHECKING:
    from sync_manager.sim.machine import Host, Task

__all__ = ["Channel", "IORequest", "unit"]

_MASK64 = (1 << 64) - 1
_TO_UNIT = 1.0 / (1 << 53)


def unit(seed: int, index: int) -> float:
    """A deterministic pseudo-random number in [0, 1) for (seed, index): splitmix64."""
    z = (seed + (index + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return ((z ^ (z >> 31)) >> 11) * _TO_UNIT


class Channel:
    """The I/O queue of one (host incarnation, disk, channel): at most one request in flight."""

    __slots__ = ("busy", "host", "key", "queue")

    def __init__(self, host: Host, key: tuple[str, str]) -> None:
        self.host = host
        self.key = key
        self.busy: IORequest | None = None
        self.queue: deque[IORequest] = deque()


class IORequest:
    """One Read or Write on its way through a channel to a disk.

    ``state`` is ``"queued"``, ``"in_flight"``, ``"failing"`` (in flight, will fail with
    EIO), ``"done"``, ``"failed"`` or ``"dropped"`` (queued when its host crashed, or timed out
    in the queue: never issued). ``abandoned`` is set when its task stopped waiting for it
    (timeout, cancel, crash).
    """

    __slots__ = (
        "abandoned",
        "b0",
        "buffer",
        "channel",
        "cutoff",
        "data",
        "disk",
        "end",
        "freeze",
        "id",
        "landed_late",
        "latency",
        "length",
        "offset",
        "op",
        "pieces",
        "result",
        "seed",
        "shift",
        "state",
        "task",
    )

    def __init__(
        self,
        task: Task[Any],
        channel: Channel,
        disk: FakeDisk,
        *,
        ident: int,
        op: Op,
        offset: int,
        length: int,
        data: bytes | None,
    ) -> None:
        self.id = ident
        self.task = task
        self.channel = channel
        self.disk = disk
        self.op: Op = op
        self.offset = offset
        self.length = length
        self.data = data
        self.state = "queued"
        self.abandoned = False
        self.landed_late = False
        self.result: bytes | None = None
        self.buffer: bytearray | None = None
        self.pieces: list[list[Any]] = []  # [offset, bytes, landed] per piece of a write
        self.seed = 0
        self.b0 = 0.0
        self.latency = 0.0
        self.freeze = math.inf
        self.shift = 0.0
        self.end = math.inf  # completion (or failure) time
        self.cutoff = math.inf  # pieces of a failing write land only before this

    def at(self, u: float) -> float:
        """The true time at which fraction ``u`` of the transfer happens."""
        t = self.b0 + u * self.latency
        return t + self.shift if t >= self.freeze else t

    def plan(self, fate: IOFate, now: float) -> None:
        """Set the timeline and ``end`` from ``fate``, for a request the device takes now."""
        self.latency = fate.latency
        self.b0 = now + fate.stall
        lost = fate.lost_path
        if lost is not None and lost.mode == "hang":
            freeze = max(lost.start, self.b0)
            if lost.end > freeze:
                self.freeze = freeze
                self.shift = lost.end - freeze
        fail = cutoff = math.inf
        if fate.fail_at is not None:
            fail = cutoff = self.at(fate.fail_at)
        if lost is not None and lost.mode == "error":
            if lost.start > now:  # the path goes away mid-transfer
                cutoff = min(cutoff, lost.start)
                fail = min(fail, lost.start)
            else:  # no path at all: fails after the usual latency, transfers nothing
                cutoff = now
                fail = min(fail, now + fate.latency)
        done = self.at(1.0)
        if fail != math.inf and fail <= done:
            self.state = "failing"
            self.end = fail
            self.cutoff = cutoff
        else:
            self.end = done

    def cut(self, max_pieces: int, rng: random.Random) -> list[tuple[float, int]]:
        """Cut a write into pieces; return (landing time, index) of those that will land.

        One piece per sector, or ``max_pieces`` contiguous runs of sectors for long writes;
        each lands at a random point of the timeline (so in random order). A failing write
        lands the pieces whose turn comes before its cutoff.
        """
        data = self.data
        if data is None:
            raise TypeError(f"{self!r} is not a write")
        sector = self.disk.sector_size
        sectors = self.length // sector
        npieces = min(sectors, max_pieces)
        landings = []
        failing = self.state == "failing"
        for index in range(npieces):
            first = sectors * index // npieces
            last = sectors * (index + 1) // npieces
            self.pieces.append(
                [self.offset + first * sector, data[first * sector : last * sector], False]
            )
            when = self.at(rng.random())
            if (when < self.cutoff) if failing else (when <= self.end):
                landings.append((when, index))
        return landings

    def sample_time(self, sector: int) -> float:
        """When this read samples its ``sector``-th sector."""
        return self.at(unit(self.seed, sector))

    def see(self, offset: int, data: bytes, now: float) -> None:
        """A piece landed at ``now``: copy the sectors this read has yet to sample."""
        buffer = self.buffer
        if buffer is None:
            return
        lo = max(offset, self.offset)
        hi = min(offset + len(data), self.offset + self.length)
        sector = self.disk.sector_size
        for pos in range(lo, hi, sector):
            rel = pos - self.offset
            if self.sample_time(rel // sector) >= now:
                buffer[rel : rel + sector] = data[pos - offset : pos - offset + sector]

    def __repr__(self) -> str:
        return (
            f"IORequest(#{self.id} {self.op} {self.disk.name}@{self.offset}+{self.length} "
            f"{self.state})"
        )
