"""What the kernel says about a block device or a file's O_DIRECT needs.

Thin wrappers over three kernel interfaces, each returning plain integers:

- ``BLKSSZGET``: the logical sector size of a block device, the unit of O_DIRECT I/O on it
  (512 or 4096; what libblkid's ``blkid_probe_get_sectorsize`` reports to sanlock);
- ``BLKGETSIZE64``: the size of a block device in bytes;
- ``BLKROGET``: whether a block device is read-only (Linux lets such a device be opened
  O_RDWR and fails each write with EPERM, so we ask at open);
- ``statx(STATX_DIOALIGN)`` (Linux 6.1+): the offset alignment a filesystem needs for O_DIRECT
  I/O on a regular file. Used only to explain an O_DIRECT failure, never to change sizes:
  sanlock treats every regular file as 512-byte sectors, and so do we.

Failures of the ioctls raise :class:`OSError` for the caller to turn into a typed error.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import struct
from collections.abc import Callable

__all__ = [
    "BLKGETSIZE64",
    "BLKROGET",
    "BLKSSZGET",
    "device_size",
    "dio_offset_alignment",
    "read_only",
    "sector_size",
]

# <linux/fs.h>: BLKROGET = _IO(0x12, 94); BLKSSZGET = _IO(0x12, 104);
# BLKGETSIZE64 = _IOR(0x12, 114, size_t).
BLKROGET = 0x125E
BLKSSZGET = 0x1268
BLKGETSIZE64 = 0x80081272

_INT = struct.Struct("=i")
_U64 = struct.Struct("=Q")

# <linux/stat.h>: struct statx is 256 bytes; stx_mask is the u32 at 0 and
# stx_dio_offset_align the u32 at 156 (after stx_dio_mem_align at 152).
_AT_EMPTY_PATH = 0x1000
_STATX_DIOALIGN = 0x2000
_STATX_SIZE = 256
_STATX_MASK_AT = 0
_STATX_DIO_OFFSET_ALIGN_AT = 156


def sector_size(fd: int) -> int:
    """Return the logical sector size of the block device open on ``fd`` (ioctl BLKSSZGET)."""
    out = fcntl.ioctl(fd, BLKSSZGET, bytes(_INT.size))
    value: int = _INT.unpack(out)[0]
    return value


def device_size(fd: int) -> int:
    """Return the size in bytes of the block device open on ``fd`` (ioctl BLKGETSIZE64)."""
    out = fcntl.ioctl(fd, BLKGETSIZE64, bytes(_U64.size))
    value: int = _U64.unpack(out)[0]
    return value


def read_only(fd: int) -> bool:
    """Return whether the block device open on ``fd`` is read-only (ioctl BLKROGET)."""
    out = fcntl.ioctl(fd, BLKROGET, bytes(_INT.size))
    value: int = _INT.unpack(out)[0]
    return value != 0


def _load_statx() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        func = libc.statx
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    func.restype = ctypes.c_int
    statx: Callable[..., int] = func
    return statx


_statx = _load_statx()


def dio_offset_alignment(fd: int) -> int | None:
    """Return the file offset alignment O_DIRECT I/O on ``fd`` needs, as the kernel reports it.

    ``0`` means the file does not support O_DIRECT; ``None`` means the kernel or filesystem
    does not say (statx or STATX_DIOALIGN unsupported). Never raises.
    """
    if _statx is None:
        return None
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    if _statx(fd, b"", _AT_EMPTY_PATH, _STATX_DIOALIGN, buf) != 0:
        return None
    raw = buf.raw
    mask: int = struct.unpack_from("=I", raw, _STATX_MASK_AT)[0]
    if not mask & _STATX_DIOALIGN:
        return None
    align: int = struct.unpack_from("=I", raw, _STATX_DIO_OFFSET_ALIGN_AT)[0]
    return align
