"""The watchdog's deadline logic, on a regular file standing in for the device; wdmd's layout.

Time here is the ``now`` passed to ``tick``, never the wall clock: the file shows each feed
(one NUL byte) and the magic "V" written on a clean close.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from sync_manager.errors import UsageError
from sync_manager.supervisor import policy
from sync_manager.supervisor.errors import WatchdogUnavailable
from sync_manager.supervisor.policy import LockspaceState, WatchdogAction
from sync_manager.supervisor.watchdog import (
    MAGIC_CLOSE,
    NO_WATCHDOG_WARNING,
    PET_BYTE,
    DeviceWatchdog,
    NoWatchdog,
    apply_watchdog,
    open_watchdog,
)
from sync_manager.supervisor.wdmd import CMD_TEST_LIVE, HEADER, WdmdHeader
from sync_manager.timeouts import Timeouts

LOGGER = "sync_manager.supervisor"


@pytest.fixture
def devfile(tmp_path: Path) -> Path:
    path = tmp_path / "watchdog"
    path.write_bytes(b"")
    return path


def fake_device(path: Path) -> DeviceWatchdog:
    return DeviceWatchdog(str(path), 60, allow_non_device=True)


def test_feeds_only_while_every_lockspace_is_before_its_deadline(devfile: Path) -> None:
    wd = fake_device(devfile)
    assert wd.tick(0.0)  # nothing armed: kept alive
    wd.arm("a:1", 100.0)
    wd.arm("b:2", 50.0)
    assert wd.tick(49.9)
    assert not wd.tick(50.0)  # b's deadline reached: no feed, though a is fine
    assert not wd.tick(60.0)
    assert devfile.read_bytes() == PET_BYTE * 2
    assert (wd.pets, wd.last_pet) == (2, 49.9)

    wd.arm("b:2", 70.0)  # b renewed: fed again
    assert wd.tick(60.5)
    wd.disarm("b:2")
    assert wd.tick(99.0)
    assert not wd.tick(100.0)
    assert devfile.read_bytes() == PET_BYTE * 4
    assert wd.deadlines == {"a:1": 100.0}


def test_a_lockspace_ending_cleanly_after_expiry_resumes_feeding(devfile: Path) -> None:
    wd = fake_device(devfile)
    wd.arm("a:1", 10.0)
    assert not wd.tick(11.0)
    wd.disarm("a:1")  # every holder died in time: no reset
    assert wd.tick(12.0)
    assert devfile.read_bytes() == PET_BYTE


def test_expiry_is_logged_once_per_deadline(
    devfile: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wd = fake_device(devfile)
    wd.arm("a:1", 10.0)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        wd.tick(10.0)
        wd.tick(11.0)
        wd.arm("a:1", 20.0)
        wd.tick(21.0)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(lines) == 2
    assert "a:1 expired at 10.0" in lines[0]
    assert "a:1 expired at 20.0" in lines[1]


def test_clean_close_writes_the_magic_v(devfile: Path) -> None:
    wd = fake_device(devfile)
    wd.arm("a:1", 10.0)
    wd.tick(1.0)
    wd.disarm("a:1")
    wd.close()
    assert devfile.read_bytes() == PET_BYTE + MAGIC_CLOSE
    wd.close()  # idempotent
    with pytest.raises(UsageError):
        wd.tick(2.0)


def test_close_while_armed_does_not_disarm(devfile: Path, caplog: pytest.LogCaptureFixture) -> None:
    wd = fake_device(devfile)
    wd.arm("a:1", 10.0)
    wd.tick(1.0)
    with caplog.at_level(logging.CRITICAL, logger=LOGGER):
        wd.close()
    assert devfile.read_bytes() == PET_BYTE  # no "V": the device keeps counting down
    assert any("NOT disarmed" in r.getMessage() for r in caplog.records)


def test_a_plain_file_is_refused_unless_allowed(devfile: Path) -> None:
    with pytest.raises(WatchdogUnavailable) as e:
        DeviceWatchdog(str(devfile))
    assert str(devfile) in str(e.value)
    assert "-w 0" in str(e.value)


def test_missing_device_names_the_path_and_the_way_out(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowatchdog")
    with pytest.raises(WatchdogUnavailable) as e:
        open_watchdog(missing)
    assert missing in str(e.value)
    assert "no such device" in str(e.value)
    assert "-w 0" in str(e.value)


def test_open_watchdog_modes(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        wd = open_watchdog("none")
    assert isinstance(wd, NoWatchdog)
    assert not wd.fences
    with pytest.raises(UsageError):
        open_watchdog("watchdog")


def test_no_watchdog_is_loud(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        wd = NoWatchdog()
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert caplog.records[0].getMessage() == NO_WATCHDOG_WARNING
    caplog.clear()
    wd.arm("a:1", 10.0)
    wd.arm("b:2", 20.0)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert wd.tick(5.0)
        assert not wd.tick(10.0)
        assert not wd.tick(15.0)  # same deadline: not logged again
        assert not wd.tick(20.0)
    assert wd.unfenced_events == 2
    assert wd.unfenced == [("a:1", 10.0), ("b:2", 20.0)]
    assert [r.levelno for r in caplog.records] == [logging.CRITICAL] * 2
    assert "NO WATCHDOG" in caplog.records[0].getMessage()


def test_apply_watchdog_follows_the_policy(devfile: Path) -> None:
    wd = fake_device(devfile)
    apply_watchdog(wd, "a:1", WatchdogAction.PET, 10.0)
    apply_watchdog(wd, "a:1", WatchdogAction.EXPIRE, 99.0)  # does not move the deadline
    assert wd.deadlines == {"a:1": 10.0}
    apply_watchdog(wd, "a:1", WatchdogAction.DISARM, 0.0)
    assert wd.deadlines == {}


def test_policy_driven_device_is_last_fed_before_t_plus_8n(devfile: Path) -> None:
    """sanlock's timeline (N = 10, T = 40): fed until just before 120, never after."""
    timeouts = Timeouts(io_timeout=10)
    wd = fake_device(devfile)
    ls = LockspaceState(last_success=40.0)
    client = policy.ClientState(pid=1234)
    now, fed_at = 40.0, []
    while now < 200.0:
        d = policy.decide(now, ls, [client], timeouts, use_watchdog=wd.fences)
        ls = d.lockspace
        client = d.clients[0].state
        apply_watchdog(wd, "ls:1", d.watchdog, policy.watchdog_expire_at(ls.last_success, timeouts))
        if wd.tick(now):
            fed_at.append(now)
        now = d.next_check
    assert fed_at[-1] < 120.0 <= fed_at[-1] + 1.0
    assert devfile.read_bytes() == PET_BYTE * len(fed_at)
    # the reset comes 60 s after the last feed: before T + host_dead = 180
    assert fed_at[-1] + wd.fire_timeout < 40.0 + timeouts.host_dead


def test_wdmd_header_matches_the_c_layout() -> None:
    """struct wdmd_header (wdmd/wdmd_sock.h), offsets as gcc lays it out on x86_64."""
    assert HEADER.size == 176
    h = WdmdHeader(
        CMD_TEST_LIVE,
        test_interval=10,
        fire_timeout=60,
        last_keepalive=0x1111,
        renewal_time=0x2222,
        expire_time=0x3333,
        name=b"sanlock_ls:1",
    )
    raw = h.pack()
    le = sys.byteorder  # host order, as wdmd uses
    assert int.from_bytes(raw[0:4], le) == 0  # magic: never set
    assert int.from_bytes(raw[4:8], le) == CMD_TEST_LIVE
    assert int.from_bytes(raw[16:20], le) == 10  # test_interval
    assert int.from_bytes(raw[20:24], le) == 60  # fire_timeout
    assert int.from_bytes(raw[24:32], le) == 0x1111  # last_keepalive
    assert int.from_bytes(raw[32:40], le) == 0x2222  # renewal_time
    assert int.from_bytes(raw[40:48], le) == 0x3333  # expire_time
    assert raw[48:60] == b"sanlock_ls:1" and raw[60:] == bytes(116)
    assert WdmdHeader.unpack(raw) == h
    assert len(WdmdHeader(1, name=b"x" * 200).pack()) == 176  # name cut to 127 + NUL
