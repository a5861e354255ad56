"""Why a paxos lease operation failed, with the sanlock return code of each reason.

Every error of the paxos lease algorithms (spec/sanlock-ondisk.md 6) is a :class:`PaxosError`.
Besides the message and ``code`` it may carry what the caller needs to act on the failure:

* ``leader``: the leader record the decision was based on (sanlock's ``leader_ret``). A shared
  acquire looks at its ``LFL_SHORT_HOLD`` flag to decide whether to retry (6.7).
* ``dblock``: our last ballot block, for a release after a partial acquire.
* ``retract``: the ballot passed phase 1 and then failed on I/O, or the commit failed: another
  host may still commit our value, so we may own the lease without knowing it; the caller must
  release it (sanlock's ``T_RETRACT_PAXOS``).
* ``cleanup_error``: the acquire tried to undo a partial acquire and that failed too (the
  daemon should retry the release later, as sanlock's resource thread does).
"""

from __future__ import annotations

import errno

from sync_manager.errors import SANLK_ERROR, SyncManagerError
from sync_manager.ondisk.dblock import PaxosDblock
from sync_manager.ondisk.geometry import Geometry
from sync_manager.ondisk.leader import LeaderRecord

__all__ = [
    "SANLK_ACQUIRE_IDLIVE",
    "SANLK_ACQUIRE_LOCKSPACE",
    "SANLK_ACQUIRE_LVER",
    "SANLK_ACQUIRE_OTHER",
    "SANLK_ACQUIRE_OWNED",
    "SANLK_ACQUIRE_OWNED_RETRY",
    "SANLK_ACQUIRE_SHRETRY",
    "SANLK_DBLOCK_LVER",
    "SANLK_DBLOCK_MBAL",
    "SANLK_DBLOCK_READ",
    "SANLK_DBLOCK_WRITE",
    "SANLK_LEADER_DIFF",
    "SANLK_LEADER_READ",
    "SANLK_LEADER_WRITE",
    "SANLK_RELEASE_LVER",
    "SANLK_RELEASE_OWNER",
    "SANLK_REQUEST_LVER",
    "SANLK_REQUEST_OLD",
    "AcquireIdLive",
    "AcquireLockspace",
    "AcquireLver",
    "AcquireOther",
    "AcquireOwned",
    "AcquireOwnedRetry",
    "AcquireShRetry",
    "BallotAborted",
    "DblockLver",
    "DblockMbal",
    "DblockRead",
    "DblockWrite",
    "LeaderDiff",
    "LeaderRead",
    "LeaderWrite",
    "PaxosError",
    "ReleaseLver",
    "ReleaseOwner",
    "RequestLver",
    "RequestOld",
    "SharedHoldersLive",
]

SANLK_DBLOCK_READ = -210
SANLK_DBLOCK_WRITE = -211
SANLK_DBLOCK_LVER = -212
SANLK_DBLOCK_MBAL = -213
SANLK_LEADER_READ = -220
SANLK_LEADER_WRITE = -221
SANLK_LEADER_DIFF = -222
SANLK_ACQUIRE_LVER = -240
SANLK_ACQUIRE_LOCKSPACE = -241
SANLK_ACQUIRE_IDLIVE = -243
SANLK_ACQUIRE_OWNED = -244
SANLK_ACQUIRE_OTHER = -245
SANLK_ACQUIRE_SHRETRY = -246
SANLK_ACQUIRE_OWNED_RETRY = -247
SANLK_RELEASE_LVER = -250
SANLK_RELEASE_OWNER = -251
SANLK_REQUEST_OLD = -272
SANLK_REQUEST_LVER = -273


class PaxosError(SyncManagerError):
    """A paxos lease operation failed; ``code`` is sanlock's return code for the reason."""

    code = SANLK_ERROR

    def __init__(
        self,
        message: str,
        *,
        leader: LeaderRecord | None = None,
        dblock: PaxosDblock | None = None,
        retract: bool = False,
        code: int | None = None,
    ) -> None:
        self.leader = leader
        self.dblock = dblock
        self.retract = retract
        self.cleanup_error: Exception | None = None
        self.geometry: Geometry | None = None  # the lease's geometry, once the acquire knew it
        if code is not None:
            self.code = code
        super().__init__(message)


# --- the ballot ------------------------------------------------------------------------------


class DblockRead(PaxosError):
    """The dblocks could not be read from a majority of the lease's disks."""

    code = SANLK_DBLOCK_READ


class DblockWrite(PaxosError):
    """Our dblock (or host sector) could not be written to a majority of the disks."""

    code = SANLK_DBLOCK_WRITE


class BallotAborted(PaxosError):
    """The ballot met a newer one; acquire retries it with a higher ballot number."""


class DblockLver(BallotAborted):
    """A dblock is already voting on a later lease version."""

    code = SANLK_DBLOCK_LVER


class DblockMbal(BallotAborted):
    """A dblock carries a higher ballot number than ours (``seen_mbal``)."""

    code = SANLK_DBLOCK_MBAL
    seen_mbal: int = 0


# --- the leader ------------------------------------------------------------------------------


class LeaderRead(PaxosError):
    """The leader could not be read and validated on a majority of the disks."""

    code = SANLK_LEADER_READ


class LeaderWrite(PaxosError):
    """The leader could not be written to a majority of the disks."""

    code = SANLK_LEADER_WRITE


class LeaderDiff(PaxosError):
    """No leader record is the same (first 152 bytes) on a majority of the disks."""

    code = SANLK_LEADER_DIFF


# --- acquire ---------------------------------------------------------------------------------


class AcquireLver(PaxosError):
    """The caller asked for a lease version that is not the current one."""

    code = SANLK_ACQUIRE_LVER


class AcquireLockspace(PaxosError):
    """The lease is held by another host and its lockspace is not joined here."""

    code = SANLK_ACQUIRE_LOCKSPACE


class AcquireIdLive(PaxosError):
    """The lease is held by another host whose delta lease is being renewed."""

    code = SANLK_ACQUIRE_IDLIVE


class AcquireOwned(PaxosError):
    """Another host committed this lease version first."""

    code = SANLK_ACQUIRE_OWNED


class AcquireOther(PaxosError):
    """Our ballot chose (and we committed) another host's value: the lease is theirs."""

    code = SANLK_ACQUIRE_OTHER


class AcquireShRetry(PaxosError):
    """A shared acquire kept meeting short exclusive holds; it gave up after its retries."""

    code = SANLK_ACQUIRE_SHRETRY


class AcquireOwnedRetry(PaxosError):
    """The owner may have failed but the caller asked not to wait (OWNER_NOWAIT)."""

    code = SANLK_ACQUIRE_OWNED_RETRY


class SharedHoldersLive(PaxosError):
    """Exclusive mode refused: live hosts hold the lease in shared mode (-EAGAIN)."""

    code = -errno.EAGAIN


# --- release ---------------------------------------------------------------------------------


class ReleaseLver(PaxosError):
    """The leader on disk is at another lease version than the one we committed."""

    code = SANLK_RELEASE_LVER


class ReleaseOwner(PaxosError):
    """The leader on disk is free, owned by someone else, or not the one we committed."""

    code = SANLK_RELEASE_OWNER


# --- requests --------------------------------------------------------------------------------


class RequestOld(PaxosError):
    """The requested lease version is not newer than the current one."""

    code = SANLK_REQUEST_OLD


class RequestLver(PaxosError):
    """The request record already asks for a later lease version."""

    code = SANLK_REQUEST_LVER
