"""A client of wdmd, the watchdog multiplexer sanlock uses (wdmd/wdmd_sock.h, src/watchdog.c).

**Wire format** (sanlock 3.8.5's wdmd; read from its source, reimplemented): a stream socket at
``/run/wdmd/wdmd.sock`` (fixed in wdmd, not configurable); every message either way is one
176-byte ``struct wdmd_header`` in host byte order: six ``uint32`` (``magic``, ``cmd``,
``len``, ``flags``, ``test_interval``, ``fire_timeout``), three ``uint64`` (``last_keepalive``,
``renewal_time``, ``expire_time``; seconds on ``CLOCK_MONOTONIC``, which is Python's
``time.monotonic()`` on Linux) and ``name[128]``. ``magic``, ``len`` and ``flags`` are sent as
0 and never checked. Commands: REGISTER 1, REFCOUNT_SET 2, REFCOUNT_CLEAR 3, TEST_LIVE 4,
STATUS 5, DUMP_DEBUG 6 (7, OPEN_WATCHDOG, exists only after 3.8.5). Only STATUS is answered:
the request header echoed with ``test_interval``, ``fire_timeout`` and ``last_keepalive`` set.

**Per lockspace**, as sanlock: one connection; REGISTER with the name
``sanlock_<lockspace>:<host_id>``, REFCOUNT_SET (wdmd will not exit while it is set), STATUS
(``fire_timeout`` must be 60, else give up), TEST_LIVE(renewal, expire = renewal + 8N); then
TEST_LIVE after each successful renewal. Ending cleanly: TEST_LIVE(0, 0) (disabled; sanlock
retries once), REFCOUNT_CLEAR, close. A connection closed while its expire is set is kept by
wdmd and still tested: **closing without TEST_LIVE(0, 0) resets the host.**

**wdmd's test**, every 10 s (every 1 s after a failure): a connection fails when
``now >= expire - 10``; any failure closes the device without the magic close (which feeds it
one last time) and stops feeding it, so the reset comes 60 s later: in
``[expire + 50, expire + 60)``. Integer seconds: we floor ``expire``, which only makes it earlier.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import socket
import struct
from dataclasses import dataclass

from sync_manager.errors import UsageError
from sync_manager.supervisor.errors import WatchdogUnavailable, WdmdError
from sync_manager.supervisor.watchdog import Watchdog
from sync_manager.timeouts import WATCHDOG_FIRE_TIMEOUT

__all__ = [
    "CMD_DUMP_DEBUG",
    "CMD_REFCOUNT_CLEAR",
    "CMD_REFCOUNT_SET",
    "CMD_REGISTER",
    "CMD_STATUS",
    "CMD_TEST_LIVE",
    "HEADER",
    "WDMD_NAME_SIZE",
    "WDMD_SOCKET_PATH",
    "WdmdHeader",
    "WdmdWatchdog",
]

WDMD_SOCKET_PATH = "/run/wdmd/wdmd.sock"
WDMD_NAME_SIZE = 128

CMD_REGISTER = 1
CMD_REFCOUNT_SET = 2
CMD_REFCOUNT_CLEAR = 3
CMD_TEST_LIVE = 4
CMD_STATUS = 5
CMD_DUMP_DEBUG = 6

HEADER = struct.Struct("=6I3Q128s")  # 176 bytes, no padding (checked against gcc's layout)


@dataclass(frozen=True, slots=True)
class WdmdHeader:
    """One ``struct wdmd_header``."""

    cmd: int
    test_interval: int = 0
    fire_timeout: int = 0
    last_keepalive: int = 0
    renewal_time: int = 0
    expire_time: int = 0
    name: bytes = b""
    magic: int = 0
    len: int = 0
    flags: int = 0

    def pack(self) -> bytes:
        """The 176 bytes on the wire (``name`` NUL-padded; at most 127 bytes kept)."""
        return HEADER.pack(
            self.magic,
            self.cmd,
            self.len,
            self.flags,
            self.test_interval,
            self.fire_timeout,
            self.last_keepalive,
            self.renewal_time,
            self.expire_time,
            self.name[: WDMD_NAME_SIZE - 1],
        )

    @classmethod
    def unpack(cls, data: bytes) -> WdmdHeader:
        """Parse 176 bytes; :class:`WdmdError` if there are not exactly that many."""
        if len(data) != HEADER.size:
            raise WdmdError("wdmd", f"message is {len(data)} bytes, not {HEADER.size}")
        magic, cmd, ln, flags, ti, ft, ka, rt, et, name = HEADER.unpack(data)
        return cls(cmd, ti, ft, ka, rt, et, name.split(b"\0", 1)[0], magic, ln, flags)


class WdmdWatchdog(Watchdog):
    """sanlock's watchdog: wdmd feeds the device while our lockspaces' expire times are ahead.

    Creating it checks that wdmd answers and uses ``fire_timeout`` (one STATUS on a throwaway
    connection), so a missing wdmd is reported at start-up. :meth:`arm` opens the lockspace's
    connection the first time and sends TEST_LIVE when the (integer) times change; :meth:`tick`
    sends nothing (wdmd does the feeding) and only logs a passed deadline. Socket operations
    block for at most ``io_timeout`` seconds; failures raise :class:`WdmdError`.
    """

    def __init__(
        self,
        socket_path: str = WDMD_SOCKET_PATH,
        *,
        fire_timeout: int = WATCHDOG_FIRE_TIMEOUT,
        name_prefix: str = "sanlock_",
        io_timeout: float = 5.0,
        logger: logging.Logger | None = None,
    ) -> None:
        """Check wdmd at ``socket_path``; :class:`WatchdogUnavailable` if it cannot be used."""
        super().__init__(logger)
        self.socket_path = socket_path
        self.fire_timeout = fire_timeout
        self.name_prefix = name_prefix
        self.io_timeout = io_timeout
        self._conns: dict[str, socket.socket] = {}
        self._sent: dict[str, tuple[int, int]] = {}
        probe = self._connect()
        try:
            status = self._status(probe, "wdmd")
        except WdmdError as e:
            raise WatchdogUnavailable(socket_path, f"wdmd does not answer: {e}") from e
        finally:
            probe.close()
        if status.fire_timeout != fire_timeout:
            raise WatchdogUnavailable(
                socket_path, f"wdmd fire_timeout is {status.fire_timeout}, not {fire_timeout}"
            )
        self.test_interval = status.test_interval

    def name_for(self, lockspace_key: str) -> bytes:
        """The name registered with wdmd for a lockspace (at most 127 bytes)."""
        return (self.name_prefix + lockspace_key).encode("utf-8", "replace")[: WDMD_NAME_SIZE - 1]

    def _connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.settimeout(self.io_timeout)
        try:
            s.connect(self.socket_path)
        except OSError as e:
            s.close()
            why = {
                errno.ENOENT: "no wdmd socket (is wdmd running?)",
                errno.ECONNREFUSED: "wdmd is not listening",
                errno.EACCES: "permission denied on the wdmd socket",
            }.get(e.errno or 0, e.strerror or str(e))
            raise WatchdogUnavailable(self.socket_path, why, err=e.errno) from e
        return s

    def _send(self, s: socket.socket, header: WdmdHeader, key: str) -> None:
        try:
            s.sendall(header.pack())
        except OSError as e:
            raise WdmdError(
                self.socket_path, f"{key}: sending command {header.cmd} failed: {e}", err=e.errno
            ) from e

    def _status(self, s: socket.socket, key: str) -> WdmdHeader:
        self._send(s, WdmdHeader(CMD_STATUS), key)
        data = b""
        try:
            while len(data) < HEADER.size:
                chunk = s.recv(HEADER.size - len(data))
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            raise WdmdError(self.socket_path, f"{key}: no STATUS reply: {e}", err=e.errno) from e
        return WdmdHeader.unpack(data)

    def _test_live(self, s: socket.socket, key: str, renewal: int, expire: int) -> None:
        self._send(s, WdmdHeader(CMD_TEST_LIVE, renewal_time=renewal, expire_time=expire), key)
        self._sent[key] = (renewal, expire)

    def _arm(self, key: str, expire_at: float, renewal_at: float | None) -> None:
        if expire_at <= 0:
            raise UsageError(f"wdmd expire time must be positive, not {expire_at}")
        expire = math.floor(expire_at)
        renewal = max(math.floor(renewal_at), 0) if renewal_at is not None else 0
        s = self._conns.get(key)
        if s is not None:
            if self._sent.get(key) != (renewal, expire):
                self._test_live(s, key, renewal, expire)
            return
        s = self._connect()
        try:
            self._send(s, WdmdHeader(CMD_REGISTER, name=self.name_for(key)), key)
            self._send(s, WdmdHeader(CMD_REFCOUNT_SET), key)
            status = self._status(s, key)
            if status.fire_timeout != self.fire_timeout:
                raise WdmdError(
                    self.socket_path,
                    f"{key}: wdmd fire_timeout is {status.fire_timeout}, not {self.fire_timeout}",
                )
            self._test_live(s, key, renewal, expire)
        except BaseException:
            # Nothing armed yet (no expire sent) or the send failed: dropping is safe.
            with contextlib.suppress(OSError):
                s.sendall(WdmdHeader(CMD_REFCOUNT_CLEAR).pack())
            s.close()
            self._sent.pop(key, None)
            raise
        self._conns[key] = s
        self._log.info("wdmd: %s registered, expire %d", self.name_for(key).decode(), expire)

    def _disarm(self, key: str) -> None:
        s = self._conns.pop(key, None)
        if s is None:
            return
        try:
            try:
                self._test_live(s, key, 0, 0)
            except WdmdError as first:
                self._log.error("wdmd: %s: disabling failed (%s), retrying", key, first)
                try:
                    self._test_live(s, key, 0, 0)
                except WdmdError as e:
                    self._log.critical(
                        "wdmd: %s could not be disabled: wdmd will reset this host", key
                    )
                    raise e from first
            self._send(s, WdmdHeader(CMD_REFCOUNT_CLEAR), key)
        finally:
            s.close()
            self._sent.pop(key, None)
        self._log.info("wdmd: %s disabled", key)

    def _expire(self, key: str, deadline: float, now: float) -> None:
        self._log.error(
            "wdmd: lockspace %s expired at %.1f (now %.1f): wdmd stops feeding the watchdog "
            "and the host is reset before %.1f unless the lockspace ends first",
            key,
            deadline,
            now,
            deadline + self.fire_timeout,
        )

    def _close(self, armed: list[str]) -> None:
        for key, s in self._conns.items():
            s.close()
            self._log.critical(
                "wdmd: connection for %s closed while armed: wdmd will reset this host", key
            )
        self._conns.clear()
