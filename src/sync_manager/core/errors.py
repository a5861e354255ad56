"""Errors of the lease algorithms (the pure core), with sanlock's codes (sanlock_rv.h).

These are outcomes of the protocol rather than of bad bytes: another host holds or took the
delta lease (:class:`HostIdBusy`, :class:`RenewOwner`, :class:`RenewDiff`), or the caller asked
a step to stop (:class:`Aborted`). Each carries the lockspace, the host id and, when there is
one, the record found on disk, so a user can be told who is in the way.
"""

from __future__ import annotations

from sync_manager.errors import SANLK_ERROR, SyncManagerError
from sync_manager.ondisk.leader import LeaderRecord

__all__ = [
    "SANLK_HOSTID_BUSY",
    "SANLK_RENEW_DIFF",
    "SANLK_RENEW_OWNER",
    "Aborted",
    "DeltaLeaseError",
    "HostIdBusy",
    "RenewDiff",
    "RenewOwner",
]

SANLK_RENEW_OWNER = -260
SANLK_RENEW_DIFF = -261
SANLK_HOSTID_BUSY = -262


class DeltaLeaseError(SyncManagerError):
    """The delta lease of ``host_id`` in ``lockspace`` is not (or no longer) ours.

    ``found`` is the record read from disk that shows it, if any.
    """

    what = "delta lease error"

    def __init__(self, lockspace: str, host_id: int, found: LeaderRecord | None = None) -> None:
        self.lockspace = lockspace
        self.host_id = host_id
        self.found = found
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"lockspace {self.lockspace} host id {self.host_id}: {self.what}"
        if self.found is not None:
            rec = self.found
            text += (
                f" (on disk: owner {rec.owner_id} generation {rec.owner_generation}"
                f" timestamp {rec.timestamp} name {rec.resource!r})"
            )
        return text


class HostIdBusy(DeltaLeaseError):
    """Another host holds, or is acquiring, the host id we tried to acquire."""

    code = SANLK_HOSTID_BUSY
    what = "host id is busy (held or being acquired by another host)"


class RenewOwner(DeltaLeaseError):
    """Our delta lease now has another owner, generation or host name: it was taken."""

    code = SANLK_RENEW_OWNER
    what = "delta lease has a new owner"


class RenewDiff(DeltaLeaseError):
    """Our delta lease differs from what we last wrote: someone else wrote it."""

    code = SANLK_RENEW_DIFF
    what = "delta lease changed since our last write"


class Aborted(SyncManagerError):
    """The caller's abort check asked a waiting step to stop (sanlock answers SANLK_ERROR)."""

    code = SANLK_ERROR

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}: aborted")
