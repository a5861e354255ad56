"""Per-host monotonic clocks for the simulator: true time, scaled by a drift, plus an offset.

The simulation has one *true* time (seconds from the start of the run, the time of the event
heap). Each host reads its own monotonic clock, as ``CLOCK_MONOTONIC`` on a real machine::

    host_time = offset + true_time * (1 + drift)

The offset is arbitrary (hosts booted at different times, so their monotonic clocks share no
origin), and the drift is the rate error of the host's oscillator, bounded by ``max_drift``
(1e-4 = 100 ppm by default, generous for real crystals). The rate is constant for a host's
whole run, crashes and restarts included (a restarted daemon on the same machine keeps reading
the same clock). sanlock's safety argument (spec/sanlock-ondisk.md 8.3) assumes equal rates; the
simulator lets them differ a little, to check that the margins absorb it.

A clock never goes backwards and never stops: pausing a host stops its tasks, not its clock.
"""

from __future__ import annotations

import math

from sync_manager.errors import UsageError

__all__ = ["DEFAULT_MAX_DRIFT", "HostClock"]

DEFAULT_MAX_DRIFT = 1e-4


class HostClock:
    """A host's monotonic clock as a function of the simulation's true time."""

    __slots__ = ("drift", "offset", "rate")

    def __init__(
        self, offset: float, drift: float, *, max_drift: float = DEFAULT_MAX_DRIFT
    ) -> None:
        if not math.isfinite(offset) or offset < 0:
            raise UsageError(f"clock offset must be finite and non-negative, not {offset}")
        if not abs(drift) <= max_drift:
            raise UsageError(f"clock drift {drift} is outside [-{max_drift}, {max_drift}]")
        self.offset = float(offset)
        self.drift = float(drift)
        self.rate = 1.0 + self.drift

    def at(self, true_time: float) -> float:
        """The host's clock reading at ``true_time``."""
        return self.offset + true_time * self.rate

    def true_at(self, host_time: float) -> float:
        """The earliest true time at which the clock reads at least ``host_time``.

        Floating point rounding could make ``at(true_at(h))`` fall a hair short of ``h``; the
        result is nudged up until it does not, so a Sleep never wakes early on its host's clock.
        """
        if host_time == math.inf:
            return math.inf
        true_time = (host_time - self.offset) / self.rate
        while self.at(true_time) < host_time:
            true_time = math.nextafter(true_time, math.inf)
        return true_time

    def __repr__(self) -> str:
        return f"HostClock(offset={self.offset!r}, drift={self.drift!r})"
