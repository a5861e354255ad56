"""Typed errors of sync_manager.

Every failure a user can cause or meet (bad input, corrupt disk, failing storage) is raised as
a subclass of :class:`SyncManagerError`. Each carries the sanlock error code a sanlock client
would see for the same failure (``code``), so the daemon can answer with it unchanged, and a
one-line message fit for stderr. Nothing here ever lets an ``AssertionError`` or a bare
``struct.error`` reach a user.
"""

from __future__ import annotations

import errno

__all__ = [
    "BadGeometry",
    "BadMagic",
    "ChecksumMismatch",
    "CorruptRecord",
    "DeviceTooSmall",
    "DirectIOUnsupported",
    "DiskIOError",
    "IOTimeout",
    "LeaseStringError",
    "OnDiskError",
    "StorageError",
    "SyncManagerError",
    "TruncatedArea",
    "UnsupportedVersion",
    "UsageError",
    "WrongLockspace",
    "WrongResource",
]

# sanlock's return codes (sanlock_rv.h), the subset these errors map to.
SANLK_ERROR = -201
SANLK_AIO_TIMEOUT = -202
SANLK_DBLOCK_CHECKSUM = -214
SANLK_LEADER_READ = -220
SANLK_LEADER_MAGIC = -223
SANLK_LEADER_VERSION = -224
SANLK_LEADER_SECTORSIZE = -225
SANLK_LEADER_LOCKSPACE = -226
SANLK_LEADER_RESOURCE = -227
SANLK_LEADER_NUMHOSTS = -228
SANLK_LEADER_CHECKSUM = -229
SANLK_ADDLS_SIZES = -230
SANLK_REQUEST_MAGIC = -270
SANLK_REQUEST_VERSION = -271


class SyncManagerError(Exception):
    """Base of every error sync_manager raises on purpose.

    ``code`` is the sanlock return code (negative) that matches this failure.
    """

    code: int = SANLK_ERROR


class UsageError(SyncManagerError, ValueError):
    """The caller asked for something invalid (bad option, bad argument combination)."""

    code = -errno.EINVAL


class LeaseStringError(UsageError):
    """A lockspace or resource string could not be parsed or formatted."""

    def __init__(self, text: str, problem: str) -> None:
        self.text = text
        self.problem = problem
        super().__init__(f"invalid lease string {text!r}: {problem}")


class BadGeometry(UsageError):
    """An invalid sector size / align size / host count combination."""

    code = SANLK_ADDLS_SIZES


# --- what we find on disk --------------------------------------------------------------------


class OnDiskError(SyncManagerError):
    """A record on disk is not what it must be.

    ``disk`` is the path (or another name of the storage), ``offset`` the byte offset of the
    record, ``expected`` and ``found`` describe the mismatch for the message and for programs.
    """

    what = "on-disk record is invalid"

    def __init__(
        self,
        *,
        disk: str = "",
        offset: int = 0,
        expected: object = None,
        found: object = None,
        record: str = "record",
        code: int | None = None,
    ) -> None:
        self.disk = disk
        self.offset = offset
        self.expected = expected
        self.found = found
        self.record = record
        if code is not None:
            self.code = code
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"{self.disk}:{self.offset}" if self.disk else f"offset {self.offset}"
        detail = ""
        if self.expected is not None or self.found is not None:
            detail = f" (expected {_show(self.expected)}, found {_show(self.found)})"
        return f"{self.record} at {where}: {self.what}{detail}"

    def at(self, disk: str, base: int) -> OnDiskError:
        """Return this error re-located to ``disk`` with ``base`` added to its offset.

        Unpackers work on bytes and know neither the disk nor the absolute offset; the I/O
        layer that read the bytes fills them in.
        """
        self.disk = disk
        self.offset += base
        self.args = (self._message(),)
        return self


def _show(value: object) -> str:
    if isinstance(value, int) and value > 9:
        return hex(value)
    if isinstance(value, bytes):
        return repr(value.rstrip(b"\0").decode("utf-8", "backslashreplace"))
    return repr(value) if isinstance(value, str) else str(value)


class CorruptRecord(OnDiskError):
    """The bytes cannot be a record of the expected kind."""

    what = "corrupt record"
    code = SANLK_LEADER_READ


class BadMagic(CorruptRecord):
    """The magic number is not the one this record kind must have."""

    what = "bad magic number (not initialized, or not a sanlock area)"
    code = SANLK_LEADER_MAGIC


class ChecksumMismatch(CorruptRecord):
    """The stored checksum does not match the record's bytes."""

    what = "checksum mismatch (torn or corrupted write)"
    code = SANLK_LEADER_CHECKSUM


class TruncatedArea(CorruptRecord):
    """Fewer bytes than a record or an area needs."""

    what = "truncated: not enough bytes"

    @classmethod
    def check(cls, data: bytes | memoryview, offset: int, size: int, record: str) -> None:
        """Raise unless ``data`` holds ``size`` bytes from ``offset`` (a non-negative one)."""
        if offset < 0 or len(data) - offset < size:
            raise cls(offset=offset, expected=size, found=max(len(data) - offset, 0), record=record)


class UnsupportedVersion(OnDiskError):
    """The record's major version is not one we understand."""

    what = "unsupported on-disk version"
    code = SANLK_LEADER_VERSION


class WrongLockspace(OnDiskError):
    """The record belongs to another lockspace."""

    what = "belongs to another lockspace"
    code = SANLK_LEADER_LOCKSPACE


class WrongResource(OnDiskError):
    """The record belongs to another resource."""

    what = "belongs to another resource"
    code = SANLK_LEADER_RESOURCE


# --- storage ---------------------------------------------------------------------------------


class StorageError(SyncManagerError):
    """Storage could not be opened, read or written."""

    def __init__(self, path: str, message: str, *, code: int | None = None) -> None:
        self.path = path
        if code is not None:
            self.code = code
        super().__init__(f"{path}: {message}")


class DiskIOError(StorageError):
    """An I/O failed (EIO, ENOENT, EACCES, ...). ``errno`` is kept when there was one."""

    def __init__(self, path: str, message: str, *, err: int | None = None) -> None:
        self.errno = err
        super().__init__(path, message, code=-err if err else None)


class IOTimeout(StorageError):
    """An I/O did not complete within its deadline (the I/O may still be in flight)."""

    code = SANLK_AIO_TIMEOUT


class DirectIOUnsupported(StorageError):
    """The filesystem refuses O_DIRECT; we never fall back to buffered I/O."""

    code = -errno.EINVAL


class DeviceTooSmall(StorageError):
    """The file or device ends before the area that was asked for."""

    code = -errno.ENOSPC
