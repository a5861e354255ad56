"""The simulator's event loop: true time, an event heap in (time, seeded tie-break, sequence)
order, and the trace of what happened. :class:`~sync_manager.sim.engine.Simulation` builds
hosts, tasks and I/O on it."""

from __future__ import annotations

import hashlib
import heapq
import math
from collections import deque
from collections.abc import Callable
from typing import Any

from sync_manager.errors import UsageError

__all__ = ["EventLoop", "TraceEntry", "format_trace_entry", "record_event"]

TraceEntry = tuple[float, str, str, tuple[object, ...]]
"""One trace event: (true time, host name or "" for the simulation, kind, details)."""

_Event = tuple[float, int, int, Callable[[Any], None], Any]


class EventLoop:
    """True time and the events to come; ``tie`` breaks ties between events at one instant
    (seeded, so a run replays exactly); ``trace=False`` records nothing, ``trace_limit`` keeps
    only that many of the last entries."""

    def __init__(
        self, *, tie: Callable[[int], int], trace: bool = True, trace_limit: int | None = None
    ) -> None:
        self.now = 0.0
        self.events = 0  # events processed so far
        self.tracing = trace
        self.trace: deque[TraceEntry] = deque(maxlen=trace_limit)
        self._heap: list[_Event] = []
        self._seq = 0
        self._tie = tie
        self._stopped = False

    # --- scheduling -----------------------------------------------------------------------

    def _push(self, when: float, fn: Callable[[Any], None], arg: Any) -> None:
        if when == math.inf:  # never happens: not worth a heap slot
            return
        self._seq += 1
        heapq.heappush(self._heap, (when, self._tie(32), self._seq, fn, arg))

    def schedule(self, at: float, fn: Callable[[], None]) -> None:
        """Call ``fn()`` at true time ``at`` (not in the past)."""
        if at < self.now or math.isnan(at):
            raise UsageError(f"cannot schedule at {at}: the simulation is at {self.now}")
        if at != math.inf:
            self._push(at, _call, fn)

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Call ``fn()`` after ``delay`` true seconds."""
        self.schedule(self.now + delay, fn)

    def _when(self, at: float | None) -> float:
        if at is None:
            return self.now
        if at < self.now or math.isnan(at):
            raise UsageError(f"cannot schedule at {at}: the simulation is at {self.now}")
        return at

    # --- running --------------------------------------------------------------------------

    def run(self, until: float | None = None, *, max_events: int | None = None) -> int:
        """Process events up to true time ``until`` (inclusive), or until none are left.

        Stops early after ``max_events`` events or when :meth:`stop` is called. Returns the
        number of events processed. When it runs to ``until``, ``now`` becomes ``until``.
        """
        heap = self._heap
        pop = heapq.heappop
        limit = math.inf if until is None else until
        budget = -1 if max_events is None else max_events
        self._stopped = False
        count = 0
        while heap and count != budget:
            when = heap[0][0]
            if when > limit:
                break
            _, _, _, fn, arg = pop(heap)
            self.now = when
            fn(arg)
            count += 1
            if self._stopped:
                break
        self.events += count
        if until is not None and not self._stopped and count != budget and until > self.now:
            self.now = float(until)
        return count

    def stop(self) -> None:
        """Make :meth:`run` return after the current event (e.g. on an invariant violation)."""
        self._stopped = True

    @property
    def pending(self) -> int:
        """Events still in the heap (stale wake-ups included)."""
        return len(self._heap)

    # --- trace -----------------------------------------------------------------------------

    def _record(self, host: str, kind: str, detail: tuple[object, ...]) -> None:
        if self.tracing:
            self.trace.append((self.now, host, kind, detail))

    def trace_digest(self) -> str:
        """A SHA-256 of the trace: equal for two runs exactly when their traces are equal."""
        digest = hashlib.sha256()
        for entry in self.trace:
            digest.update(repr(entry).encode())
            digest.update(b"\n")
        return digest.hexdigest()

    def format_trace(self, last: int | None = None) -> str:
        """The trace (or its ``last`` entries), one event a line."""
        entries = list(self.trace)
        if last is not None:
            entries = entries[-last:]
        return "\n".join(format_trace_entry(entry) for entry in entries)


def format_trace_entry(entry: TraceEntry) -> str:
    """``   12.345678 h1       sleep      t3 20.0``."""
    when, host, kind, detail = entry
    return f"{when:12.6f} {host or '-':<8} {kind:<10} {' '.join(map(str, detail))}"


def _call(fn: Callable[[], None]) -> None:
    fn()


def record_event(arg: tuple[EventLoop, str, str, tuple[object, ...]]) -> None:
    sim, host, kind, detail = arg
    sim._record(host, kind, detail)
