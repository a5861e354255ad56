"""Timings derived from io_timeout, pinned by sanlock's own worked example (spec 7, 8.2)."""

from __future__ import annotations

import pytest

from sync_manager.errors import UsageError
from sync_manager.timeouts import Timeouts


@pytest.mark.parametrize(
    ("io", "renewal", "warn", "fail", "host_dead", "sigkill"),
    [(5, 10, 30, 40, 100, 80), (10, 20, 60, 80, 140, 120), (20, 40, 120, 160, 220, 200)],
)
def test_table(io: int, renewal: int, warn: int, fail: int, host_dead: int, sigkill: int) -> None:
    t = Timeouts(io)
    assert (t.renewal, t.renewal_warn, t.renewal_fail, t.host_dead, t.sigkill_after) == (
        renewal,
        warn,
        fail,
        host_dead,
        sigkill,
    )
    assert t.delta_short_delay == 2 * io
    assert t.delta_large_delay == 8 * io
    assert t.delta_acquire_held_wait == host_dead
    assert t.renewal_write_timeout == host_dead
    assert t.set_bitmap == 6 * io


def test_sanlocks_worked_timeline() -> None:
    """io 10, last good renewal at 40: warn 100, recovery 120, SIGKILL 160, reset in
    [170, 180), takeover from 180."""
    t, last = Timeouts(10), 40
    assert last + t.renewal == 60  # the next renewal is due (and fails from here on)
    assert last + t.renewal_warn == 100
    assert last + t.renewal_fail == 120
    assert last + t.sigkill_after == 160
    assert t.watchdog_reset_window(last) == (170, 180)
    assert last + t.host_dead == 180


@pytest.mark.parametrize("io", [1, 2, 10, 60])
@pytest.mark.parametrize("grace", [0, 40, 59])
def test_fencing_always_ends_before_takeover(io: int, grace: int) -> None:
    """The safety margin of spec 8.3: SIGKILL and the watchdog both act before host_dead."""
    t = Timeouts(io, kill_grace=grace)
    _, latest_reset = t.watchdog_reset_window(0)
    assert t.sigkill_after < t.host_dead
    assert latest_reset <= t.host_dead


@pytest.mark.parametrize(("io", "grace"), [(0, 40), (-1, 40), (10, 61), (10, -1)])
def test_invalid(io: int, grace: int) -> None:
    with pytest.raises(UsageError, match="must be"):
        Timeouts(io, kill_grace=grace)
