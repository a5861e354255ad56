"""The watchdog over real descriptors: a FIFO standing in for /dev/watchdog, a fake wdmd.

The real wdmd (Debian's sanlock 3.8.5 ships /usr/sbin/wdmd) cannot run here: it needs a
watchdog device answering WDIOC_GETTIMEOUT, and loading softdog would reset the machine. So the
wdmd side is a small socket server that behaves as wdmd/main.c does (only STATUS is answered,
with the request echoed and test_interval 10, fire_timeout 60, last_keepalive set) and records
every 176-byte header, which the tests check field by field.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sync_manager.supervisor.errors import WatchdogUnavailable
from sync_manager.supervisor.watchdog import MAGIC_CLOSE, PET_BYTE, DeviceWatchdog
from sync_manager.supervisor.wdmd import (
    CMD_REFCOUNT_CLEAR,
    CMD_REFCOUNT_SET,
    CMD_REGISTER,
    CMD_STATUS,
    CMD_TEST_LIVE,
    HEADER,
    WdmdHeader,
    WdmdWatchdog,
)

LOGGER = "sync_manager.supervisor"
WAIT = 10.0  # bound on waiting for the fake wdmd; reached only on failure


def test_device_watchdog_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "watchdog"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a writer needs a reader to open
    try:
        wd = DeviceWatchdog(str(fifo), 60, allow_non_device=True)
        assert not wd.is_device
        wd.arm("ls:1", 100.0)
        assert wd.tick(1.0)
        assert os.read(reader, 16) == PET_BYTE
        assert not wd.tick(100.0)
        with pytest.raises(BlockingIOError):
            os.read(reader, 16)  # nothing written once expired
        wd.disarm("ls:1")
        wd.close()
        assert os.read(reader, 16) == MAGIC_CLOSE
        assert os.read(reader, 16) == b""  # closed
    finally:
        os.close(reader)


def test_a_path_that_cannot_be_written_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(WatchdogUnavailable, match=str(tmp_path)):
        DeviceWatchdog(str(tmp_path), 60, allow_non_device=True)  # a directory: EISDIR


@dataclass
class FakeWdmd:
    """wdmd's socket side (wdmd/main.c ``process_connection``), recording what it receives."""

    path: str
    fire_timeout: int = 60
    received: list[tuple[int, WdmdHeader]] = field(default_factory=list)  # (connection, header)
    closed: list[int] = field(default_factory=list)  # connections closed by the client
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(8)
        self.threads: list[threading.Thread] = []
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self) -> None:
        n = 0
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn, n), daemon=True)
            self.threads.append(t)
            t.start()
            n += 1

    def _serve(self, conn: socket.socket, n: int) -> None:
        with conn:
            while True:
                data = conn.recv(HEADER.size, socket.MSG_WAITALL)
                if len(data) < HEADER.size:
                    with self.changed:
                        self.closed.append(n)
                        self.changed.notify_all()
                    return
                h = WdmdHeader.unpack(data)
                with self.changed:
                    self.received.append((n, h))
                    self.changed.notify_all()
                if h.cmd == CMD_STATUS:
                    reply = WdmdHeader(
                        h.cmd,
                        test_interval=10,
                        fire_timeout=self.fire_timeout,
                        last_keepalive=12345,
                        renewal_time=h.renewal_time,
                        expire_time=h.expire_time,
                        name=h.name,
                    )
                    conn.sendall(reply.pack())

    def wait_closed(self, n: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: n in self.closed, WAIT)

    def messages(self, n: int) -> list[WdmdHeader]:
        with self.lock:
            return [h for c, h in self.received if c == n]

    def stop(self) -> None:
        self.listener.close()


@pytest.fixture
def wdmd(tmp_path: Path) -> Iterator[FakeWdmd]:
    server = FakeWdmd(str(tmp_path / "wdmd.sock"))
    try:
        yield server
    finally:
        server.stop()


def cmds(headers: list[WdmdHeader]) -> list[int]:
    return [h.cmd for h in headers]


def test_wdmd_sequence_like_sanlock(wdmd: FakeWdmd, caplog: pytest.LogCaptureFixture) -> None:
    wd = WdmdWatchdog(wdmd.path)
    assert wd.test_interval == 10
    wdmd.wait_closed(0)  # the probe connection: one STATUS, then closed
    assert cmds(wdmd.messages(0)) == [CMD_STATUS]

    wd.arm("ls:1", 180.7, renewal_at=100.2)
    wd.arm("ls:1", 180.9, renewal_at=100.9)  # same whole seconds: nothing sent
    wd.arm("ls:1", 200.0, renewal_at=120.0)
    assert wd.tick(150.0)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        wd.disarm("ls:1")
    wdmd.wait_closed(1)
    msgs = wdmd.messages(1)
    assert cmds(msgs) == [
        CMD_REGISTER,
        CMD_REFCOUNT_SET,
        CMD_STATUS,
        CMD_TEST_LIVE,
        CMD_TEST_LIVE,
        CMD_TEST_LIVE,
        CMD_REFCOUNT_CLEAR,
    ]
    assert msgs[0].name == b"sanlock_ls:1"
    assert [(h.renewal_time, h.expire_time) for h in msgs[3:6]] == [(100, 180), (120, 200), (0, 0)]
    assert all(h.magic == 0 and h.len == 0 and h.flags == 0 for h in msgs)
    wd.close()


def test_wdmd_lockspaces_have_their_own_connections(wdmd: FakeWdmd) -> None:
    wd = WdmdWatchdog(wdmd.path)
    wd.arm("a:1", 50.0)
    wd.arm("b:2", 60.0)
    assert not wd.tick(55.0)  # a's expiry passed: wdmd stops feeding (logged here)
    wd.disarm("a:1")
    wdmd.wait_closed(1)
    assert cmds(wdmd.messages(1))[-2:] == [CMD_TEST_LIVE, CMD_REFCOUNT_CLEAR]
    assert wdmd.messages(2)[0].name == b"sanlock_b:2"
    assert 2 not in wdmd.closed
    wd.close()


def test_wdmd_close_while_armed_leaves_the_expiry_set(
    wdmd: FakeWdmd, caplog: pytest.LogCaptureFixture
) -> None:
    wd = WdmdWatchdog(wdmd.path)
    wd.arm("ls:1", 80.0)
    with caplog.at_level(logging.CRITICAL, logger=LOGGER):
        wd.close()
    wdmd.wait_closed(1)
    # No TEST_LIVE(0, 0): wdmd keeps testing the dead connection and resets the host.
    last = wdmd.messages(1)[-1]
    assert (last.cmd, last.expire_time) == (CMD_TEST_LIVE, 80)
    assert "will reset this host" in caplog.records[-1].getMessage()


def test_wdmd_with_another_fire_timeout_is_refused(tmp_path: Path) -> None:
    server = FakeWdmd(str(tmp_path / "wdmd.sock"), fire_timeout=30)
    try:
        with pytest.raises(WatchdogUnavailable, match="fire_timeout is 30, not 60"):
            WdmdWatchdog(server.path)
    finally:
        server.stop()


def test_no_wdmd_names_the_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "wdmd.sock")
    with pytest.raises(WatchdogUnavailable) as e:
        WdmdWatchdog(path)
    assert path in str(e.value)
    assert "is wdmd running?" in str(e.value)
    assert "-w 0" in str(e.value)
