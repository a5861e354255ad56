"""The host watchdog: what resets this host when its lease holders cannot be killed in time.

One :class:`Watchdog` per daemon, shared by the lockspaces (spec/sanlock-ondisk.md 8.1). Each
joined lockspace arms it with the moment it must stop being fed, ``T + 8N`` (``expire_at``,
:func:`~sync_manager.supervisor.policy.watchdog_expire_at`, on the ``time.monotonic()`` clock),
and moves that moment at each successful renewal; the host is kept alive only while *every*
armed lockspace's moment is in the future. A lockspace that ends cleanly disarms. How the daemon
drives it from a policy :class:`~sync_manager.supervisor.policy.Decision` (see
:func:`apply_watchdog`):

* ``WatchdogAction.PET``: ``arm(key, T + 8N)`` (idempotent);
* ``WatchdogAction.EXPIRE``: nothing: the deadline stays where it was and passes;
* ``WatchdogAction.DISARM``: ``disarm(key)``;

and ``tick(now)`` once per main-loop pass (every second at least), which feeds the host's
watchdog if no armed deadline has passed. Three kinds:

* :class:`NoWatchdog` (sanlock's ``-w 0``): nothing resets the host; loud about it.
* :class:`DeviceWatchdog`: a kernel watchdog device (``/dev/watchdog``, softdog or hardware),
  opened here, fed by ``tick``. The reset comes ``timeout`` s after the last feed, so before
  ``T + 8N + 60 = T + host_dead`` with the default 60 s.
* :class:`~sync_manager.supervisor.wdmd.WdmdWatchdog`: sanlock's way, through the wdmd daemon
  (one connection per lockspace, wdmd feeds the device).

:func:`open_watchdog` makes one from the daemon's ``-w`` option.
"""

from __future__ import annotations

import abc
import errno
import fcntl
import logging
import os
import stat
import struct

from sync_manager.errors import UsageError
from sync_manager.supervisor.errors import WatchdogError, WatchdogUnavailable
from sync_manager.supervisor.policy import WatchdogAction
from sync_manager.timeouts import WATCHDOG_FIRE_TIMEOUT

__all__ = [
    "DEFAULT_DEVICE",
    "MAGIC_CLOSE",
    "NO_WATCHDOG_WARNING",
    "PET_BYTE",
    "WDIOC_GETTIMEOUT",
    "WDIOC_KEEPALIVE",
    "WDIOC_SETTIMEOUT",
    "DeviceWatchdog",
    "NoWatchdog",
    "Watchdog",
    "apply_watchdog",
    "open_watchdog",
]

log = logging.getLogger("sync_manager.supervisor")

DEFAULT_DEVICE = "/dev/watchdog"

# linux/watchdog.h: _IOR('W', 5, int), _IOWR('W', 6, int), _IOR('W', 7, int)
WDIOC_KEEPALIVE = 0x80045705
WDIOC_SETTIMEOUT = 0xC0045706
WDIOC_GETTIMEOUT = 0x80045707

PET_BYTE = b"\0"  # any byte but "V" feeds the device (and cancels an earlier "V")
MAGIC_CLOSE = b"V"  # written just before close: the device stops instead of firing

NO_WATCHDOG_WARNING = (
    "no watchdog: a host whose renewals fail and whose processes cannot be killed will NOT "
    "be reset; other hosts may take its leases after host_dead seconds"
)


class Watchdog(abc.ABC):
    """The host's watchdog, armed per lockspace with the moment it stops being fed.

    Subclasses implement the hooks; the deadline bookkeeping is here. Keys are strings naming
    a lockspace; use ``"<lockspace>:<host_id>"`` (wdmd registers ``sanlock_<key>``).
    """

    #: whether a failing host is actually reset (pass it as the policy's ``use_watchdog``)
    fences: bool = True

    def __init__(self, logger: logging.Logger | None = None) -> None:
        """No lockspace armed."""
        self._deadlines: dict[str, float] = {}
        self._reported: dict[str, float] = {}  # key -> the deadline whose passing was logged
        self._log = logger or log
        self._closed = False

    @property
    def deadlines(self) -> dict[str, float]:
        """A copy of the armed lockspaces and the moments they stop being fed."""
        return dict(self._deadlines)

    def arm(self, lockspace_key: str, expire_at: float, *, renewal_at: float | None = None) -> None:
        """Keep the host alive for ``lockspace_key`` until ``expire_at`` (monotonic seconds).

        Call it when the lockspace is joined (before any process may use it) and after each
        successful renewal, with ``renewal_at`` the renewal's time (used in wdmd's log only).
        """
        self._check_open()
        if not lockspace_key:
            raise UsageError("watchdog lockspace key must not be empty")
        self._arm(lockspace_key, expire_at, renewal_at)
        self._deadlines[lockspace_key] = expire_at

    def disarm(self, lockspace_key: str) -> None:
        """The lockspace ended cleanly (no lease holder left): it no longer needs a reset."""
        self._check_open()
        if lockspace_key not in self._deadlines:
            return
        self._disarm(lockspace_key)
        del self._deadlines[lockspace_key]
        self._reported.pop(lockspace_key, None)

    def expired(self, now: float) -> list[str]:
        """The armed lockspaces whose deadline is at or before ``now``."""
        return sorted(k for k, d in self._deadlines.items() if d <= now)

    def tick(self, now: float) -> bool:
        """Feed the watchdog if no armed deadline has passed; return whether the host is fed.

        The first tick after a lockspace's deadline passes logs it, once per deadline.
        """
        self._check_open()
        expired = self.expired(now)
        for key in expired:
            deadline = self._deadlines[key]
            if self._reported.get(key) != deadline:
                self._reported[key] = deadline
                self._expire(key, deadline, now)
        if expired:
            return False
        self._feed(now)
        return True

    def close(self) -> None:
        """Stop using the watchdog: cleanly if nothing is armed, else leave the reset coming."""
        if self._closed:
            return
        self._closed = True
        self._close(sorted(self._deadlines))

    def __enter__(self) -> Watchdog:
        """Return self."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close it."""
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"{type(self).__name__} is closed")

    # hooks ---------------------------------------------------------------------------------

    def _arm(self, key: str, expire_at: float, renewal_at: float | None) -> None:  # noqa: B027
        """Tell the watchdog about a new or moved deadline (before it is recorded)."""

    def _disarm(self, key: str) -> None:  # noqa: B027
        """Tell the watchdog the lockspace ended cleanly (before it is forgotten)."""

    @abc.abstractmethod
    def _expire(self, key: str, deadline: float, now: float) -> None:
        """Log that ``key``'s deadline passed: the host is no longer fed."""

    def _feed(self, now: float) -> None:  # noqa: B027
        """Feed the watchdog: every armed deadline is after ``now``."""

    def _close(self, armed: list[str]) -> None:  # noqa: B027
        """Release resources; ``armed`` lockspaces were never disarmed."""


class NoWatchdog(Watchdog):
    """No watchdog at all (sanlock's ``-w 0``): nothing resets a host whose processes survive.

    Logs a WARNING when created and a CRITICAL each time an armed lockspace's deadline passes
    (when a watchdog would have started the reset; the policy's :attr:`Fencing.UNFENCED`),
    counted in :attr:`unfenced_events` and listed in :attr:`unfenced`.
    """

    fences = False

    def __init__(self, logger: logging.Logger | None = None) -> None:
        """Log the warning that this host will not be fenced."""
        super().__init__(logger)
        self.unfenced_events = 0
        self.unfenced: list[tuple[str, float]] = []  # (lockspace key, deadline) per event
        self._log.warning(NO_WATCHDOG_WARNING)

    def _expire(self, key: str, deadline: float, now: float) -> None:
        self.unfenced_events += 1
        self.unfenced.append((key, deadline))
        self._log.critical(
            "NO WATCHDOG: lockspace %s stopped being renewed safely at %.1f (now %.1f): a "
            "watchdog would reset this host now; nothing will, and other hosts may take its "
            "leases once host_dead seconds have passed",
            key,
            deadline,
            now,
        )


class DeviceWatchdog(Watchdog):
    """A kernel watchdog device fed directly: ``tick`` writes a byte while every lockspace is fed.

    Opening the device starts it; its timeout is set to ``timeout`` with ``WDIOC_SETTIMEOUT``,
    read back with ``WDIOC_GETTIMEOUT``, and must be exactly ``timeout`` (as wdmd requires).
    When a deadline passes nothing is written any more, and the device resets the host
    ``timeout`` s after the last write; it is never disarmed then, and feeding resumes only if
    the lockspace is re-armed later (a renewal succeeded) or disarmed (it ended cleanly).
    :meth:`close` with nothing armed writes the magic "V" before closing, which stops the
    device; with lockspaces still armed it closes without it: the kernel then feeds the device
    one last time and resets the host ``timeout`` s later (the kernel feeds it on every close
    without "V", including the one at process exit).

    ``allow_non_device`` accepts a path that is not a character device, where the timeout
    ioctls fail with ENOTTY: for tests only (a FIFO or a regular file shows what was written).
    """

    def __init__(
        self,
        path: str = DEFAULT_DEVICE,
        timeout: int = WATCHDOG_FIRE_TIMEOUT,
        *,
        allow_non_device: bool = False,
        logger: logging.Logger | None = None,
    ) -> None:
        """Open ``path`` and set its timeout; :class:`WatchdogUnavailable` if that fails."""
        super().__init__(logger)
        if timeout <= 0:
            raise UsageError(f"watchdog timeout must be positive, not {timeout}")
        self.path = path
        self.timeout = timeout
        self.pets = 0
        self.last_pet: float | None = None
        self._fd = _open_device(path)
        try:
            self.is_device = stat.S_ISCHR(os.fstat(self._fd).st_mode)
            if not self.is_device and not allow_non_device:
                raise WatchdogUnavailable(path, "not a watchdog device (not a character device)")
            self.timeout = self._set_timeout(timeout)
        except BaseException:
            os.close(self._fd)  # without "V": a real device keeps running, which is safe
            raise
        self._log.warning(
            "watchdog %s armed with timeout %d s%s",
            path,
            self.timeout,
            "" if self.is_device else " (NOT a device: tests only, nothing will reset this host)",
        )

    @property
    def fire_timeout(self) -> int:
        """Seconds from the last feed to the reset."""
        return self.timeout

    def _set_timeout(self, timeout: int) -> int:
        """Set the device's timeout and return the one it reports (SETTIMEOUT, GETTIMEOUT)."""
        try:
            buf = fcntl.ioctl(self._fd, WDIOC_SETTIMEOUT, struct.pack("=i", timeout))
        except OSError as e:
            if e.errno == errno.ENOTTY and not self.is_device:
                return timeout  # a FIFO or a file standing in for the device in a test
            raise WatchdogUnavailable(
                self.path, f"cannot set timeout {timeout}: {e.strerror}", err=e.errno
            ) from e
        got: int = struct.unpack("=i", buf)[0]  # SETTIMEOUT writes back what it set
        try:
            buf = fcntl.ioctl(self._fd, WDIOC_GETTIMEOUT, struct.pack("=i", 0))
            got = struct.unpack("=i", buf)[0]
        except OSError as e:
            if e.errno not in (errno.ENOTTY, errno.EOPNOTSUPP):
                raise WatchdogUnavailable(
                    self.path, f"cannot read timeout back: {e.strerror}", err=e.errno
                ) from e
        if got != timeout:
            raise WatchdogUnavailable(
                self.path, f"timeout set to {timeout} s but the device uses {got} s"
            )
        return got

    def _feed(self, now: float) -> None:
        try:
            os.write(self._fd, PET_BYTE)
        except OSError as e:
            # The next tick tries again; if it never works, the device resets the host (safe).
            self._log.error("watchdog %s: feeding failed: %s", self.path, e.strerror)
            return
        self.pets += 1
        self.last_pet = now

    def _expire(self, key: str, deadline: float, now: float) -> None:
        last = "never" if self.last_pet is None else f"{self.last_pet:.1f}"
        self._log.error(
            "watchdog %s no longer fed: lockspace %s expired at %.1f (now %.1f); the host is "
            "reset %d s after the last feed (%s) unless the lockspace ends first",
            self.path,
            key,
            deadline,
            now,
            self.timeout,
            last,
        )

    def _close(self, armed: list[str]) -> None:
        if armed:
            self._log.critical(
                "watchdog %s closed with lockspaces still armed (%s): it is NOT disarmed and "
                "resets this host in %d s",
                self.path,
                ", ".join(armed),
                self.timeout,
            )
            os.close(self._fd)
            return
        try:
            os.write(self._fd, MAGIC_CLOSE)
        except OSError as e:
            raise WatchdogError(self.path, f"disarm failed: {e.strerror}", err=e.errno) from e
        finally:
            os.close(self._fd)
        self._log.info("watchdog %s disarmed", self.path)


def _open_device(path: str) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        why = {
            errno.ENOENT: "no such device",
            errno.EACCES: "permission denied (the daemon must run as root)",
            errno.EPERM: "permission denied (the daemon must run as root)",
            errno.EBUSY: "device busy (is wdmd or another watchdog daemon using it?)",
            errno.ENXIO: "no device or reader behind it",
        }.get(e.errno or 0, e.strerror or str(e))
        raise WatchdogUnavailable(path, f"cannot open watchdog: {why}", err=e.errno) from e


def apply_watchdog(
    watchdog: Watchdog,
    lockspace_key: str,
    action: WatchdogAction,
    expire_at: float,
    *,
    renewal_at: float | None = None,
) -> None:
    """Carry out a policy decision's ``watchdog`` action for one lockspace (see the module).

    ``expire_at`` is :func:`~sync_manager.supervisor.policy.watchdog_expire_at` of the
    lockspace's last successful renewal. Call :meth:`Watchdog.tick` once all are applied.
    """
    if action is WatchdogAction.PET:
        watchdog.arm(lockspace_key, expire_at, renewal_at=renewal_at)
    elif action is WatchdogAction.DISARM:
        watchdog.disarm(lockspace_key)
    # EXPIRE: the armed deadline stays where it is and passes.


def open_watchdog(
    mode: str, *, fire_timeout: int = WATCHDOG_FIRE_TIMEOUT, logger: logging.Logger | None = None
) -> Watchdog:
    """The watchdog for the daemon's ``-w`` option.

    ``"none"`` (or ``"0"``): :class:`NoWatchdog`; ``"wdmd"`` (or ``"1"``, sanlock's default):
    a wdmd client on its default socket; an absolute path: that watchdog device. Raises
    :class:`WatchdogUnavailable` naming the device or socket if it cannot be used.
    """
    # wdmd.py builds on this module's Watchdog, so it is imported when needed.
    from sync_manager.supervisor.wdmd import WdmdWatchdog  # noqa: PLC0415

    if mode in ("none", "0"):
        return NoWatchdog(logger)
    if mode in ("wdmd", "1"):
        return WdmdWatchdog(fire_timeout=fire_timeout, logger=logger)
    if mode.startswith("/"):
        return DeviceWatchdog(mode, fire_timeout, logger=logger)
    raise UsageError(f"watchdog must be 'none', 'wdmd' or a device path, not {mode!r}")
