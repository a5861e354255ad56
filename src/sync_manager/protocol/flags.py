"""Flag and enumeration values of the client API (spec/sanlock-protocol.md 3.1, 3.2).

Values are ``sanlock.h``, ``sanlock_resource.h``, ``sanlock_admin.h`` and ``sanlock_sock.h`` of
sanlock 3.8.5. Messages keep flags as the plain integers of the wire (unknown bits included, so
that every message round-trips); these classes name the bits.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

__all__ = [
    "HOST_STATE_MASK",
    "AcquireFlag",
    "AddLockspaceFlag",
    "ConfigCmd",
    "ConvertFlag",
    "ForceMode",
    "HostState",
    "InqLockspaceFlag",
    "KillpathFlag",
    "LockspaceFlag",
    "ReleaseFlag",
    "RemLockspaceFlag",
    "RequestFlag",
    "ResourceFlag",
    "RestrictFlag",
    "RindexFlag",
    "SetEventFlag",
    "StateType",
    "WriteResourceFlag",
    "align_flag",
    "align_from_flags",
    "sector_flag",
    "sector_from_flags",
]


class ResourceFlag(IntFlag):
    """``SANLK_RES_*``, the flags of ``sanlk_resource`` (also ``SANLK_RIF_*`` sizes)."""

    LVER = 0x001
    NUM_HOSTS = 0x002
    SHARED = 0x004
    PERSISTENT = 0x008
    ALIGN1M = 0x010
    ALIGN2M = 0x020
    ALIGN4M = 0x040
    ALIGN8M = 0x080
    SECTOR512 = 0x100
    SECTOR4K = 0x200


class LockspaceFlag(IntFlag):
    """``SANLK_LSF_*``, the flags of ``sanlk_lockspace``."""

    ADD = 0x001
    REM = 0x002
    ALIGN1M = 0x010
    ALIGN2M = 0x020
    ALIGN4M = 0x040
    ALIGN8M = 0x080
    SECTOR512 = 0x100
    SECTOR4K = 0x200


_ALIGN_FLAGS = {1 << 20: 0x010, 2 << 20: 0x020, 4 << 20: 0x040, 8 << 20: 0x080}
_SECTOR_FLAGS = {512: 0x100, 4096: 0x200}


def align_flag(align_size: int) -> int:
    """The ALIGN flag bit for an align size in bytes (0 for a size without one)."""
    return _ALIGN_FLAGS.get(align_size, 0)


def sector_flag(sector_size: int) -> int:
    """The SECTOR flag bit for a sector size in bytes (0 for a size without one)."""
    return _SECTOR_FLAGS.get(sector_size, 0)


def align_from_flags(flags: int) -> int:
    """The align size the flags name, 0 if none (like ``sanlk_res_align_flag_to_size``)."""
    return next((size for size, bit in _ALIGN_FLAGS.items() if flags & bit), 0)


def sector_from_flags(flags: int) -> int:
    """The sector size the flags name, 0 if none (like ``sanlk_res_sector_flag_to_size``)."""
    return next((size for size, bit in _SECTOR_FLAGS.items() if flags & bit), 0)


class AcquireFlag(IntFlag):
    """``SANLK_ACQUIRE_*`` (header ``cmd_flags`` of ACQUIRE)."""

    LVB = 0x1
    ORPHAN = 0x2
    ORPHAN_ONLY = 0x4
    OWNER_NOWAIT = 0x8


class ReleaseFlag(IntFlag):
    """``SANLK_REL_*`` (header ``cmd_flags`` of RELEASE)."""

    ALL = 0x1
    RENAME = 0x2
    ORPHAN = 0x4


class ConvertFlag(IntFlag):
    """``SANLK_CONVERT_*`` (header ``cmd_flags`` of CONVERT)."""

    OWNER_NOWAIT = 0x8


class RequestFlag(IntFlag):
    """``SANLK_REQUEST_*`` (header ``cmd_flags`` of REQUEST)."""

    NEXT_LVER = 0x1


class ForceMode(IntEnum):
    """``SANLK_REQ_*``: REQUEST's force mode (header ``data``)."""

    NONE = 0
    FORCE = 1
    GRACEFUL = 2


class RestrictFlag(IntFlag):
    """``SANLK_RESTRICT_*`` (header ``cmd_flags`` of RESTRICT)."""

    ALL = 0x1
    SIGKILL = 0x2
    SIGTERM = 0x4


class KillpathFlag(IntFlag):
    """``SANLK_KILLPATH_*`` (header ``cmd_flags`` of KILLPATH)."""

    PID = 0x1


class AddLockspaceFlag(IntFlag):
    """``SANLK_ADD_*``."""

    ASYNC = 0x1


class RemLockspaceFlag(IntFlag):
    """``SANLK_REM_*``."""

    ASYNC = 0x1
    UNUSED = 0x2


class InqLockspaceFlag(IntFlag):
    """``SANLK_INQ_*``."""

    WAIT = 0x1


class WriteResourceFlag(IntFlag):
    """``SANLK_WRITE_*``."""

    CLEAR = 0x1


HOST_STATE_MASK = 0xF
"""``SANLK_HOST_MASK``: the bits of ``sanlk_host.flags`` that hold the state."""


class HostState(IntEnum):
    """``SANLK_HOST_*``: a host's state in ``sanlk_host.flags & 0xF``."""

    UNKNOWN = 1
    FREE = 2
    LIVE = 3
    FAIL = 4
    DEAD = 5


class ConfigCmd(IntEnum):
    """``SANLK_CONFIG_*``: SET_CONFIG's command (header ``data``)."""

    USED = 1
    UNUSED = 2
    USED_BY_ORPHANS = 4
    UNUSED_BY_ORPHANS = 8


class SetEventFlag(IntFlag):
    """``SANLK_SETEV_*`` (header ``cmd_flags`` of SET_EVENT)."""

    CUR_GENERATION = 0x01
    CLEAR_HOSTID = 0x02
    CLEAR_EVENT = 0x04
    REPLACE_EVENT = 0x08
    ALL_HOSTS = 0x10


class RindexFlag(IntFlag):
    """``SANLK_RX_*`` and ``SANLK_RXUP_*`` (header ``cmd_flags`` of the rindex commands)."""

    NO_LOCKSPACE = 0x00001
    UPDATE_ADD = 0x10000
    UPDATE_REM = 0x20000


class StateType(IntEnum):
    """``SANLK_STATE_*``: the type of a STATUS, HOST_STATUS or RENEWAL record."""

    DAEMON = 1
    CLIENT = 2
    LOCKSPACE = 3
    RESOURCE = 4
    HOST = 5
    RENEWAL = 6
