"""Typed errors of the supervisor's impure half (processes, killpath, watchdog).

Each is a :class:`~sync_manager.errors.SyncManagerError` with a one-line message fit for the
daemon's log or a user's stderr, naming the pid, program, device or socket concerned.
"""

from __future__ import annotations

import errno

from sync_manager.errors import SyncManagerError

__all__ = [
    "ProcessGone",
    "SignalError",
    "SupervisorError",
    "WatchdogError",
    "WatchdogUnavailable",
    "WdmdError",
]


class SupervisorError(SyncManagerError):
    """Base of the errors raised while acting on processes or the watchdog."""


class ProcessGone(SupervisorError):
    """The process does not exist (any more): it cannot be opened or watched."""

    code = -errno.ESRCH

    def __init__(self, pid: int) -> None:
        self.pid = pid
        super().__init__(f"process {pid} does not exist")


class SignalError(SupervisorError):
    """A signal could not be sent for a reason other than the process being gone (EPERM)."""

    def __init__(self, pid: int, sig: int, err: int) -> None:
        self.pid = pid
        self.sig = sig
        self.errno = err
        self.code = -err
        super().__init__(f"cannot send signal {sig} to pid {pid}: {errno.errorcode.get(err, err)}")


class WatchdogError(SupervisorError):
    """The watchdog failed while in use (a write, an ioctl, a message to wdmd)."""

    def __init__(self, where: str, message: str, *, err: int | None = None) -> None:
        self.where = where
        self.errno = err
        if err:
            self.code = -err
        super().__init__(f"{where}: {message}")


class WatchdogUnavailable(WatchdogError):
    """The watchdog cannot be set up: missing device, no permission, wrong timeout, no wdmd.

    The message names the device or socket and says how to run without one (``-w 0``).
    """

    def __init__(self, where: str, message: str, *, err: int | None = None) -> None:
        super().__init__(
            where,
            f"{message}; load a watchdog driver (e.g. softdog), start wdmd, or run with "
            "-w 0 (no watchdog: NOT safe, hosts whose processes cannot be killed are not reset)",
            err=err,
        )


class WdmdError(WatchdogError):
    """wdmd answered wrongly or its socket failed after the connection was set up."""
