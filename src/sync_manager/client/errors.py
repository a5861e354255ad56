"""Errors of the client: every failure is a :class:`SanlockError`, as in python3-sanlock.

``code`` is the negative result a sanlock client library returns for the same failure: the
daemon's own result (``-EEXIST``, ``SANLK_ACQUIRE_IDLIVE`` = -243, ...), ``-ENOENT`` or
``-ECONNREFUSED`` when no daemon listens, ``-EPIPE`` when the connection broke, ``-1`` for a
reply cut short (libsanlock's short read). ``name`` names the code (``"EEXIST"``,
``"SANLK_ACQUIRE_IDLIVE"``), so callers can test either.
"""

from __future__ import annotations

import errno

from sync_manager.errors import SyncManagerError
from sync_manager.protocol import code_name, describe

__all__ = [
    "ConnectionLost",
    "DaemonNotRunning",
    "DaemonTimeout",
    "SanlockError",
]


_IN_USE = (
    "the area overlaps a lockspace this host has joined or a lease one of its processes "
    "holds, so the daemon will not write it (its log says which)"
)
# What a code means for one command, where that says more than the code's own description.
_DETAILS = {
    ("write_lockspace", -errno.EBUSY): _IN_USE,
    ("write_resource", -errno.EBUSY): _IN_USE,
}


class SanlockError(SyncManagerError):
    """A client request failed; ``code`` is sanlock's negative result, ``name`` its name.

    ``command`` names the request (``"acquire"``, ``"add_lockspace"``, ...).
    """

    def __init__(self, command: str, code: int, detail: str | None = None) -> None:
        self.command = command
        self.code = code
        self.name = code_name(code)
        if detail is None:
            detail = _DETAILS.get((command, code)) or describe(code)
        self.detail = detail
        super().__init__(f"{command} failed: {self.detail} ({self.name}, {code})")


class DaemonNotRunning(SanlockError):
    """Nothing listens on the socket (``-ENOENT``: no socket file; ``-ECONNREFUSED``: stale)."""

    def __init__(self, command: str, path: str, err: int) -> None:
        self.path = path
        why = "no socket" if err == errno.ENOENT else "connection refused"
        super().__init__(command, -err, f"the sanlock daemon is not running ({why} at {path})")


class DaemonTimeout(SanlockError):
    """The daemon did not answer within the client's timeout (``-ETIMEDOUT``)."""

    def __init__(self, command: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(
            command, -errno.ETIMEDOUT, f"no reply from the daemon within {timeout:g} s"
        )


class ConnectionLost(SanlockError):
    """The connection broke: ``-EPIPE``/``-ECONNRESET``, or ``-1`` for a reply cut short."""
