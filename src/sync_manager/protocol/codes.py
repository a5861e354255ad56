"""Result codes: what a reply's ``data`` says (spec/sanlock-protocol.md 3.3, ``sanlock_rv.h``).

0 is success (a few commands put a count there). -1..-199 are ``-errno`` (Linux numbers); -200
and below are sanlock's own ``SANLK_*`` codes. :class:`Code` names those the daemon sends to
clients, :func:`code_name` names any value and :func:`describe` gives the text a client shows:
sanlock's ``sanlock_strerror`` for its codes, glibc's ``strerror`` for the errno values.
"""

from __future__ import annotations

import errno
from enum import IntEnum

__all__ = ["SANLK_OK", "Code", "code_name", "describe", "is_sanlock_code"]

SANLK_OK = 1
"""Success inside sanlock; replies carry 0 instead (never on the wire as a result)."""


class Code(IntEnum):
    """Result codes the daemon returns to clients."""

    OK = 0
    # -errno (Linux numbering); -1 is also sanlock's bare "failed" (release of a lease not held)
    EPERM = -errno.EPERM
    ENOENT = -errno.ENOENT
    ESRCH = -errno.ESRCH
    EINTR = -errno.EINTR
    EIO = -errno.EIO
    ENXIO = -errno.ENXIO
    E2BIG = -errno.E2BIG
    EAGAIN = -errno.EAGAIN
    ENOMEM = -errno.ENOMEM
    EACCES = -errno.EACCES
    EBUSY = -errno.EBUSY
    EEXIST = -errno.EEXIST
    ENODEV = -errno.ENODEV
    EINVAL = -errno.EINVAL
    ENOTTY = -errno.ENOTTY
    ENOSPC = -errno.ENOSPC
    EPIPE = -errno.EPIPE
    ERANGE = -errno.ERANGE
    ENOCSI = -errno.ENOCSI
    ELIBACC = -errno.ELIBACC
    ELIBBAD = -errno.ELIBBAD
    ELIBSCN = -errno.ELIBSCN
    ENOTCONN = -errno.ENOTCONN
    EALREADY = -errno.EALREADY
    EINPROGRESS = -errno.EINPROGRESS
    ESTALE = -errno.ESTALE
    EUCLEAN = -errno.EUCLEAN
    # sanlock's own codes (sanlock_rv.h)
    SANLK_ERROR = -201
    SANLK_AIO_TIMEOUT = -202
    SANLK_WD_ERROR = -203
    SANLK_DBLOCK_READ = -210
    SANLK_DBLOCK_WRITE = -211
    SANLK_DBLOCK_LVER = -212
    SANLK_DBLOCK_MBAL = -213
    SANLK_DBLOCK_CHECKSUM = -214
    SANLK_LEADER_READ = -220
    SANLK_LEADER_WRITE = -221
    SANLK_LEADER_DIFF = -222
    SANLK_LEADER_MAGIC = -223
    SANLK_LEADER_VERSION = -224
    SANLK_LEADER_SECTORSIZE = -225
    SANLK_LEADER_LOCKSPACE = -226
    SANLK_LEADER_RESOURCE = -227
    SANLK_LEADER_NUMHOSTS = -228
    SANLK_LEADER_CHECKSUM = -229
    SANLK_ADDLS_SIZES = -230
    SANLK_ADDLS_INVALID_HOSTID = -231
    SANLK_ACQUIRE_LVER = -240
    SANLK_ACQUIRE_LOCKSPACE = -241
    SANLK_ACQUIRE_IDDISK = -242
    SANLK_ACQUIRE_IDLIVE = -243
    SANLK_ACQUIRE_OWNED = -244
    SANLK_ACQUIRE_OTHER = -245
    SANLK_ACQUIRE_SHRETRY = -246
    SANLK_ACQUIRE_OWNED_RETRY = -247
    SANLK_RELEASE_LVER = -250
    SANLK_RELEASE_OWNER = -251
    SANLK_RENEW_OWNER = -260
    SANLK_RENEW_DIFF = -261
    SANLK_HOSTID_BUSY = -262
    SANLK_REQUEST_MAGIC = -270
    SANLK_REQUEST_VERSION = -271
    SANLK_REQUEST_OLD = -272
    SANLK_REQUEST_LVER = -273
    SANLK_RINDEX_MAGIC = -274
    SANLK_RINDEX_VERSION = -275
    SANLK_RINDEX_LOCKSPACE = -276
    SANLK_RINDEX_OFFSET = -277
    SANLK_RINDEX_DIFF = -278


# sanlock_strerror(); codes missing here have no text there ("Unknown error").
_SANLOCK_TEXT = {
    -201: "General error",
    -202: "IO timeout",
    -203: "Watchdog device error",
    -210: "Lease read error in dblock",
    -211: "Lease write error in dblock",
    -212: "Lease was acquired by another host in new ballot",
    -213: "Lease was acquired by another host in current ballot",
    -214: "Lease checksum error in dblock",
    -220: "Lease read error in leader",
    -221: "Lease write error in leader",
    -222: "Lease read inconsistent",
    -223: "Lease does not exist on storage",
    -224: "Lease format version on storage is not recognized",
    -225: "Lease sector size is inconsistent",
    -226: "Lease lockspace name is incorrect",
    -227: "Lease resource name is incorrect",
    -228: "Lease num_hosts is incorrect",
    -229: "Lease checksum error in leader",
    -241: "Lease lockspace is not found",
    -242: "Lease lockspace disk cannot be opened",
    -243: "Lease is held by another host",
    -244: "Lease was acquired by another host in other ballot",
    -245: "Lease was acquired by another host in local commit",
    -246: "Lease is held by another host for shared acquire",
    -247: "Lease is owned by another host",
    -250: "Lease release version is incorrect",
    -251: "Lease release owner is incorrect",
    -260: "Lease renew owner is incorrect",
    -261: "Lease renew data has changed",
    -262: "Lease host ID is being used by another host",
    -270: "Lease request block has invalid data",
    -271: "Lease request block has invalid version",
    -272: "Lease request has newer lease version",
    -273: "Lease request block has newer version",
}

# glibc's strerror() for the errno values the daemon returns (os.strerror is I/O-free, but
# this package may not import os; the texts are glibc's, which python3-sanlock shows).
_ERRNO_TEXT = {
    errno.EPERM: "Operation not permitted",
    errno.ENOENT: "No such file or directory",
    errno.ESRCH: "No such process",
    errno.EINTR: "Interrupted system call",
    errno.EIO: "Input/output error",
    errno.ENXIO: "No such device or address",
    errno.E2BIG: "Argument list too long",
    errno.EAGAIN: "Resource temporarily unavailable",
    errno.ENOMEM: "Cannot allocate memory",
    errno.EACCES: "Permission denied",
    errno.EBUSY: "Device or resource busy",
    errno.EEXIST: "File exists",
    errno.ENODEV: "No such device",
    errno.EINVAL: "Invalid argument",
    errno.ENOTTY: "Inappropriate ioctl for device",
    errno.ENOSPC: "No space left on device",
    errno.EPIPE: "Broken pipe",
    errno.ERANGE: "Numerical result out of range",
    errno.ENOCSI: "No CSI structure available",
    errno.ELIBACC: "Can not access a needed shared library",
    errno.ELIBBAD: "Accessing a corrupted shared library",
    errno.ELIBSCN: ".lib section in a.out corrupted",
    errno.ENOTCONN: "Transport endpoint is not connected",
    errno.EALREADY: "Operation already in progress",
    errno.EINPROGRESS: "Operation now in progress",
    errno.ESTALE: "Stale file handle",
    errno.EUCLEAN: "Structure needs cleaning",
}


def is_sanlock_code(code: int) -> bool:
    """True for sanlock's own codes (-200 and below), which clients name with sanlock's texts."""
    return code <= -200


def code_name(code: int) -> str:
    """A name for any result: ``"OK"``, ``"ENOENT"``, ``"SANLK_ACQUIRE_IDLIVE"``, or the number."""
    try:
        return Code(code).name
    except ValueError:
        pass
    if -200 < code < 0 and -code in errno.errorcode:
        return errno.errorcode[-code]
    return str(code)


def describe(code: int) -> str:
    """The text a sanlock client shows for ``code`` (``strerror`` or ``sanlock_strerror``).

    Like python3-sanlock: ``-200 < code < 0`` is an errno, anything else a sanlock code, and a
    code without a text is ``"Unknown error"``.
    """
    if -200 < code < 0:
        return _ERRNO_TEXT.get(-code, f"Unknown error {-code}")
    return _SANLOCK_TEXT.get(code, "Unknown error")
