"""Every timing of the lease protocol, derived from one io_timeout (spec/sanlock-ondisk.md 7).

sanlock's safety argument (8.3) needs these exact relations, so they live in one place: a host
renews its delta lease every ``2N`` seconds, warns at ``6N``, starts killing its lease holders at
``8N`` (fail), SIGKILLs from ``8N + kill_grace``, and its watchdog resets it before ``8N + 60``.
Another host therefore waits ``host_dead = 8N + 60`` seconds of silence before taking over.
For another host's lease, use *that host's* io_timeout (the one in its delta record).

Worked example (sanlock's own, N = 10, last good renewal at T = 40): renewals fail from 60,
warning at 100, recovery (killpath/SIGTERM) at 120, SIGKILL from 160, watchdog fires in
[170, 180), other hosts may take over from 180.
"""

from __future__ import annotations

from dataclasses import dataclass

from sync_manager.errors import UsageError

__all__ = [
    "DEFAULT_IO_TIMEOUT",
    "DEFAULT_KILL_GRACE",
    "WATCHDOG_FIRE_TIMEOUT",
    "WDMD_TEST_INTERVAL",
    "Timeouts",
]

DEFAULT_IO_TIMEOUT = 10
DEFAULT_KILL_GRACE = 40
WATCHDOG_FIRE_TIMEOUT = 60  # seconds from the last pet to the reset; wdmd must report 60
WDMD_TEST_INTERVAL = 10  # wdmd tests its clients (and pets the device) this often


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The timings of one lockspace host with io_timeout ``io_timeout`` (seconds)."""

    io_timeout: int = DEFAULT_IO_TIMEOUT
    kill_grace: int = DEFAULT_KILL_GRACE
    watchdog_fire_timeout: int = WATCHDOG_FIRE_TIMEOUT

    def __post_init__(self) -> None:
        if self.io_timeout <= 0:
            raise UsageError(f"io_timeout must be positive, not {self.io_timeout}")
        if not 0 <= self.kill_grace <= 60:
            raise UsageError(f"kill_grace must be 0..60, not {self.kill_grace}")

    @property
    def renewal(self) -> int:
        """Renew the delta lease this long after the last successful renewal (2N)."""
        return 2 * self.io_timeout

    @property
    def renewal_warn(self) -> int:
        """Warn when the last successful renewal is this old (6N)."""
        return 6 * self.io_timeout

    @property
    def renewal_fail(self) -> int:
        """Recovery starts (lease holders are killed) when the last renewal is this old (8N)."""
        return 8 * self.io_timeout

    @property
    def host_dead(self) -> int:
        """Silence after which another host may treat this host as dead (8N + watchdog)."""
        return self.renewal_fail + self.watchdog_fire_timeout

    @property
    def sigkill_after(self) -> int:
        """SIGKILL replaces killpath/SIGTERM once the last renewal is this old (8N + grace)."""
        return self.renewal_fail + self.kill_grace

    @property
    def delta_short_delay(self) -> int:
        """The wait between writing a delta lease and re-reading it on acquire (2N)."""
        return 2 * self.io_timeout

    @property
    def delta_large_delay(self) -> int:
        """The paper's D + 6d: the least wait before taking a delta lease held by another."""
        return self.renewal + 6 * self.io_timeout

    @property
    def delta_acquire_held_wait(self) -> int:
        """The wait before taking a delta lease another host may still hold (8N + 60)."""
        return max(self.host_dead, self.delta_large_delay)

    @property
    def renewal_write_timeout(self) -> int:
        """The extended deadline of the renewal write (8N + 60)."""
        return self.host_dead

    @property
    def set_bitmap(self) -> int:
        """How long a request bit stays set in our bitmap (6N)."""
        return 6 * self.io_timeout

    @property
    def watchdog_expire(self) -> int:
        """Seconds after a good renewal at which the watchdog connection expires (8N)."""
        return self.renewal_fail

    def watchdog_reset_window(self, last_renewal: float) -> tuple[float, float]:
        """When the watchdog resets a host whose last good renewal was at ``last_renewal``.

        wdmd tests every 10 s; the first test at or after ``expire - 10`` fails and closes the
        device uncleanly, which counts as a last keepalive, so the reset comes
        ``watchdog_fire_timeout`` after a moment in [expire - 10, expire): somewhere in
        [T + 8N + 50, T + 8N + 60) with the defaults, always before T + host_dead.
        """
        expire = last_renewal + self.watchdog_expire
        return (
            expire - WDMD_TEST_INTERVAL + self.watchdog_fire_timeout,
            expire + self.watchdog_fire_timeout,
        )
