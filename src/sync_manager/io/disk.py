"""Aligned O_DIRECT I/O on lease files and block devices, with a deadline per I/O.

A :class:`Storage` is one open file or block device. It does what sanlock does with its disks
(``spec/sanlock-ondisk.md`` section 1): open with ``O_RDWR|O_DIRECT|O_SYNC``, read and write
whole sectors from page-aligned buffers, and give up on an I/O that does not complete within
its deadline (the lockspace's io_timeout).

Invariants:

- **No buffered I/O, ever.** If the filesystem refuses O_DIRECT (at open, or with EINVAL on an
  I/O) the error is :class:`DirectIOUnsupported`; there is no fallback, because a page cache
  between two hosts breaks the lease algorithms.
- **Whole sectors only.** Offsets and lengths are multiples of :attr:`Storage.sector_size`
  (the kernel's logical sector size for a block device, 512 for a regular file, as in sanlock);
  anything else is a :class:`UsageError` before any I/O is issued.
- **A deadline per I/O, and at most one outstanding I/O per Storage.** A hung ``pread`` cannot
  be cancelled from Python, so each I/O runs on the Storage's own worker thread (a daemon
  thread, so a hung I/O never blocks interpreter exit) while the caller waits with a timeout.
  On timeout the caller gets :class:`IOTimeout` and the I/O is *abandoned*, not cancelled: it
  keeps the worker and the buffer. The next I/O first waits, within its own deadline, for the
  abandoned one to finish; if it does not, that I/O raises :class:`IOTimeout` too without
  issuing anything. So one hung disk costs one thread and one buffer, never a pile of them.
  An abandoned write may or may not have reached the disk: the caller must treat it as such.
- **Short means too small.** A read that returns fewer bytes than asked for (the file or
  device ends first) raises :class:`DeviceTooSmall`; data is never zero-filled.
- Every other OS error is a :class:`DiskIOError` carrying the errno and a one-line message.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import queue
import stat
import threading
import time
from types import TracebackType
from typing import Final, Self

from sync_manager.errors import (
    DeviceTooSmall,
    DirectIOUnsupported,
    DiskIOError,
    IOTimeout,
    UsageError,
)
from sync_manager.io import blockdev

__all__ = ["DEFAULT_IO_TIMEOUT", "FILE_SECTOR_SIZE", "Storage"]

DEFAULT_IO_TIMEOUT: Final = 10.0
"""Seconds an I/O may take before it is abandoned (sanlock's default io_timeout)."""

FILE_SECTOR_SIZE: Final = 512
"""The sector size of a regular file: sanlock always treats files as 512-byte sectors."""

_READ: Final = "read"
_WRITE: Final = "write"
_CLOSE: Final = "close"


class _Op:
    """One I/O handed to the worker thread; ``done`` is released when it has finished."""

    __slots__ = ("done", "error", "fd", "kind", "length", "nbytes", "offset", "view")

    def __init__(
        self, kind: str, fd: int, view: memoryview | None, offset: int, length: int
    ) -> None:
        self.kind = kind
        self.fd = fd
        self.view = view
        self.offset = offset
        self.length = length
        self.nbytes = 0
        self.error: Exception | None = None
        self.done = threading.Lock()
        self.done.acquire()

    def describe(self) -> str:
        return f"{self.kind} of {self.length} bytes at offset {self.offset}"


def _serve(ops: queue.SimpleQueue[_Op | None], closing: list[mmap.mmap]) -> None:
    """Worker thread body: run the ops in order until told to stop.

    A ``_CLOSE`` op (queued by :meth:`Storage.close` while an abandoned I/O was still in
    flight) closes the fd and the buffers once that I/O has returned, then stops the thread.
    """
    while True:
        op = ops.get()
        if op is None:
            return
        if op.kind == _CLOSE:
            _close_quietly(op.fd, closing)
            op.done.release()
            return
        view = op.view
        if view is None:  # pragma: no cover  (only a _CLOSE op has no view)
            continue
        try:
            if op.kind == _READ:
                op.nbytes = os.preadv(op.fd, (view,), op.offset)
            else:
                op.nbytes = os.pwritev(op.fd, (view,), op.offset)
        except Exception as exc:  # handed to the caller; the worker must live on
            op.error = exc
        finally:
            view.release()
            op.done.release()


def _close_quietly(fd: int, buffers: list[mmap.mmap]) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    for buf in buffers:
        with contextlib.suppress(BufferError):  # a view still exported: let GC unmap it
            buf.close()
    buffers.clear()


def _await(done: threading.Lock, deadline: float) -> bool:
    """Wait until ``done`` can be acquired or ``deadline`` passes; return whether it was."""
    return done.acquire(True, max(0.0, deadline - time.monotonic()))


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


class Storage:
    """An open lease file or block device, for aligned O_DIRECT I/O with a deadline per I/O.

    Use :meth:`open` (or ``with Storage.open(path) as disk:``). Safe to share between threads:
    I/Os on one Storage run one at a time, in the order they get the Storage's lock, each
    within its own deadline (waiting for the lock counts against it).

    Attributes:
        path: the path it was opened with.
        sector_size: the logical sector size (BLKSSZGET) for a block device, 512 for a file.
        is_block_device: whether ``path`` is a block device.
        readonly: opened with ``O_RDONLY``; :meth:`write` is refused.
        io_timeout: the default deadline of one I/O, in seconds.
    """

    path: str
    sector_size: int
    is_block_device: bool
    readonly: bool
    io_timeout: float

    def __init__(
        self,
        path: str,
        fd: int,
        *,
        sector_size: int,
        is_block_device: bool,
        device_size: int,
        readonly: bool,
        io_timeout: float,
    ) -> None:
        """Wrap an fd already opened with O_DIRECT; use :meth:`open` instead."""
        self.path = path
        self.sector_size = sector_size
        self.is_block_device = is_block_device
        self.readonly = readonly
        self.io_timeout = io_timeout
        self._fd = fd
        self._device_size = device_size
        self._closed = False
        self._lock = threading.Lock()
        self._pending: _Op | None = None
        self._ops: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._buf = mmap.mmap(-1, mmap.PAGESIZE)
        self._view = memoryview(self._buf)
        self._old_buffers: list[mmap.mmap] = []
        self.last_io_end = time.monotonic()  # when the latest I/O ended (or this was opened)

    # --- opening -----------------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: str, *, readonly: bool = False, io_timeout: float = DEFAULT_IO_TIMEOUT
    ) -> Storage:
        """Open ``path`` (a regular file or a block device) for O_DIRECT I/O.

        Raises:
            DiskIOError: the path does not exist, is a directory or another kind of file,
                is read-only or not permitted (EACCES, EPERM, EROFS), or cannot be opened.
            DirectIOUnsupported: the filesystem refuses O_DIRECT.
            UsageError: ``io_timeout`` is not positive.
        """
        _check_timeout(io_timeout)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise _open_error(path, exc, readonly=readonly) from None
        # Look before opening: opening a FIFO blocks, a directory is never a lease area.
        _check_kind(path, st.st_mode)
        flags = (os.O_RDONLY if readonly else os.O_RDWR | os.O_SYNC) | os.O_DIRECT | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise _classify_einval(path, flags, exc, readonly=readonly) from None
            raise _open_error(path, exc, readonly=readonly) from None
        try:
            st = os.fstat(fd)
            _check_kind(path, st.st_mode)
            is_block = stat.S_ISBLK(st.st_mode)
            if is_block:
                try:
                    sector = blockdev.sector_size(fd)
                    size = blockdev.device_size(fd)
                    device_read_only = blockdev.read_only(fd)
                except OSError as exc:
                    raise DiskIOError(
                        path,
                        f"cannot get the sector size and size of the block device: {exc.strerror}",
                        err=exc.errno,
                    ) from None
                if device_read_only and not readonly:
                    raise DiskIOError(
                        path,
                        "cannot open for reading and writing: block device is read-only",
                        err=errno.EROFS,
                    )
            else:
                sector, size = FILE_SECTOR_SIZE, st.st_size
        except BaseException:
            os.close(fd)
            raise
        return cls(
            path,
            fd,
            sector_size=sector,
            is_block_device=is_block,
            device_size=size,
            readonly=readonly,
            io_timeout=io_timeout,
        )

    # --- size --------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The size in bytes now: BLKGETSIZE64 (as at open) for a device, st_size for a file."""
        if not self.is_block_device:
            fd = self._fd_or_raise()
            try:
                return os.fstat(fd).st_size
            except OSError as exc:
                raise DiskIOError(
                    self.path, f"cannot stat: {exc.strerror}", err=exc.errno
                ) from None
        return self._device_size

    def require_size(self, end: int) -> None:
        """Raise :class:`DeviceTooSmall` unless the file or device extends to byte ``end``.

        A regular file can still grow by :meth:`write` (lease files are created by writing
        their areas), so callers that initialize an area write first and check afterwards.
        """
        have = self.size
        if have < end:
            what = "block device" if self.is_block_device else "file"
            raise DeviceTooSmall(
                self.path,
                f"{what} is {have} bytes ({_human(have)}), but must be at least {end} bytes "
                f"({_human(end)})",
            )

    # --- I/O ---------------------------------------------------------------------------------

    def read(self, offset: int, length: int, *, timeout: float | None = None) -> bytes:
        """Read ``length`` bytes at ``offset`` (both whole sectors), within ``timeout`` seconds.

        Raises:
            UsageError: misaligned offset or length, bad timeout, or the Storage is closed.
            IOTimeout: the read (or an earlier abandoned I/O) did not finish in time.
            DeviceTooSmall: the file or device ends before ``offset + length``.
            DirectIOUnsupported: the filesystem refused this O_DIRECT read (EINVAL).
            DiskIOError: any other failure (EIO, ...), with its errno.
        """
        return self._run(_READ, offset, length, None, timeout)

    def write(self, offset: int, data: bytes, *, timeout: float | None = None) -> None:
        """Write ``data`` (whole sectors: callers pad) at ``offset``, within ``timeout`` seconds.

        The fd is O_SYNC: the data is on stable storage when this returns. Writing past the
        end of a regular file extends it; a block device is never written past its end.

        Raises:
            UsageError: opened read-only, misaligned offset or length, bad timeout, or closed.
            IOTimeout: the write (or an earlier abandoned I/O) did not finish in time; an
                abandoned write may still land on disk later.
            DeviceTooSmall: the block device ends before ``offset + len(data)``.
            DirectIOUnsupported: the filesystem refused this O_DIRECT write (EINVAL).
            DiskIOError: any other failure (EIO, ENOSPC, ...), with its errno.
        """
        if self.readonly:
            raise UsageError(f"{self.path}: opened read-only; cannot write")
        self._run(_WRITE, offset, len(data), data, timeout)

    def _run(
        self, kind: str, offset: int, length: int, data: bytes | None, timeout: float | None
    ) -> bytes:
        """Run one I/O on the worker within the deadline; return the bytes read (b"" if a write).

        Order: validate; take the Storage lock; wait for an abandoned I/O, if any; copy the
        data into the aligned buffer; hand the op to the worker; wait for it; copy out.
        """
        if timeout is None:
            timeout = self.io_timeout
        deadline = time.monotonic() + timeout
        self._validate(kind, offset, length, timeout)
        if self.is_block_device and offset + length > self._device_size:
            raise self._too_small(kind, offset, length)
        if not self._lock.acquire(True, timeout):
            raise IOTimeout(
                self.path,
                f"{kind} of {length} bytes at offset {offset} timed out after {timeout:g} s "
                "waiting for another I/O on the same storage",
            )
        try:
            self._fd_or_raise()
            pending = self._pending
            if pending is not None:
                if not _await(pending.done, deadline):
                    raise IOTimeout(
                        self.path,
                        f"{kind} of {length} bytes at offset {offset} not issued: an earlier "
                        f"{pending.describe()} timed out and has not finished after waiting "
                        f"{timeout:g} s more for it (at most one outstanding I/O per storage)",
                    )
                self._pending = None
            if length > len(self._buf):
                self._grow(length)
            if data is not None:
                self._buf[:length] = data
            op = _Op(kind, self._fd, self._view[:length], offset, length)
            if self._worker is None:
                self._start_worker()
            self._pending = op
            self._ops.put(op)
            if not _await(op.done, deadline):
                raise IOTimeout(self.path, f"{op.describe()} did not complete within {timeout:g} s")
            self._pending = None
            if op.error is None and op.nbytes == length:
                return self._buf[:length] if data is None else b""
        finally:
            self.last_io_end = time.monotonic()
            self._lock.release()
        if op.error is not None:
            raise self._io_error(op, op.error)
        if data is not None and not self.is_block_device:
            raise DiskIOError(
                self.path,
                f"short write: {op.nbytes} of {length} bytes at offset {offset}",
                err=errno.EIO,
            )
        raise self._too_small(kind, offset, length)

    def _validate(self, kind: str, offset: int, length: int, timeout: float) -> None:
        _check_timeout(timeout)
        sector = self.sector_size
        if offset < 0 or offset % sector:
            raise UsageError(
                f"{self.path}: {kind} offset {offset} is not a multiple of the sector size {sector}"
            )
        if length <= 0 or length % sector:
            what = "data length" if kind == _WRITE else "length"
            raise UsageError(
                f"{self.path}: {kind} {what} {length} is not a positive multiple of the sector "
                f"size {sector}" + (" (pad the data to whole sectors)" if kind == _WRITE else "")
            )

    def shrink_buffer(self) -> bool:
        """Give back a buffer grown for a large I/O (a 1 MiB read), keeping one page.

        Never waits: does nothing (False) while an I/O runs, while an abandoned one may still
        be using the buffer, or once closed. The next large I/O grows it again.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if self._closed or self._pending is not None or len(self._buf) <= mmap.PAGESIZE:
                return False
            self._grow(mmap.PAGESIZE)
            return True
        finally:
            self._lock.release()

    def _grow(self, length: int) -> None:
        # Only called with no I/O in flight, so nothing uses the old buffer any more.
        self._view.release()
        self._buf.close()
        self._buf = mmap.mmap(-1, _round_up(length, mmap.PAGESIZE))
        self._view = memoryview(self._buf)

    def _start_worker(self) -> None:
        name = f"sync_manager-io:{os.path.basename(self.path)}"
        worker = threading.Thread(
            target=_serve, args=(self._ops, self._old_buffers), name=name, daemon=True
        )
        worker.start()
        self._worker = worker

    def _fd_or_raise(self) -> int:
        if self._closed:
            raise UsageError(f"{self.path}: storage is closed")
        return self._fd

    def _too_small(self, kind: str, offset: int, length: int) -> DeviceTooSmall:
        what = "block device" if self.is_block_device else "file"
        size = self._device_size if self.is_block_device else self.size
        return DeviceTooSmall(
            self.path,
            f"{what} ends at {size} bytes ({_human(size)}); {kind} of {length} bytes at offset "
            f"{offset} needs at least {offset + length} bytes",
        )

    def _io_error(self, op: _Op, exc: Exception) -> Exception:
        if not isinstance(exc, OSError):
            return DiskIOError(self.path, f"{op.describe()} failed: {exc!r}", err=errno.EIO)
        code = exc.errno or errno.EIO
        if code == errno.EINVAL:
            return DirectIOUnsupported(
                self.path,
                f"filesystem does not support O_DIRECT for this I/O ({op.describe()} failed "
                f"with EINVAL){self._dio_hint()}; buffered I/O is never used",
            )
        if code == errno.ENOSPC and self.is_block_device:
            return self._too_small(op.kind, op.offset, op.length)
        return DiskIOError(self.path, f"{op.describe()} failed: {os.strerror(code)}", err=code)

    def _dio_hint(self) -> str:
        if self.is_block_device or self._closed:
            return ""
        align = blockdev.dio_offset_alignment(self._fd)
        if align is None or align <= self.sector_size:
            return ""
        return (
            f"; it needs O_DIRECT I/O aligned to {align} bytes, so this file needs "
            f"{align}-byte sectors"
        )

    # --- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file or device. Idempotent.

        If an abandoned I/O is still in flight, the fd and the buffer stay open until it
        returns (the worker thread closes them then), so that the fd number is never reused
        under it; this call does not wait for that.
        """
        if self._closed:
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = self._pending
            if pending is not None and pending.done.acquire(False):
                pending = self._pending = None
            self._view.release()
            if pending is None:
                _close_quietly(self._fd, [self._buf])
                if self._worker is not None:
                    self._ops.put(None)
            else:
                self._old_buffers.append(self._buf)
                self._ops.put(_Op(_CLOSE, self._fd, None, 0, 0))

    def __enter__(self) -> Self:
        """Return self; the ``with`` block closes it."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the storage."""
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("ro" if self.readonly else "rw")
        kind = "block" if self.is_block_device else "file"
        return f"<Storage {self.path!r} {kind} sector={self.sector_size} {state}>"


def _check_timeout(timeout: float) -> None:
    if not timeout > 0 or timeout > threading.TIMEOUT_MAX:
        raise UsageError(f"I/O timeout must be a positive number of seconds, not {timeout!r}")


def _check_kind(path: str, mode: int) -> None:
    if stat.S_ISREG(mode) or stat.S_ISBLK(mode):
        return
    if stat.S_ISDIR(mode):
        raise DiskIOError(
            path, "is a directory, not a lease file or block device", err=errno.EISDIR
        )
    raise DiskIOError(
        path, "is neither a regular file nor a block device (cannot hold leases)", err=errno.EINVAL
    )


def _open_error(path: str, exc: OSError, *, readonly: bool) -> DiskIOError:
    code = exc.errno or errno.EIO
    mode = "reading" if readonly else "reading and writing"
    if code == errno.ENOENT:
        message = "does not exist"
    elif code == errno.EROFS:
        message = f"cannot open for {mode}: read-only file system"
    elif code == errno.EACCES:
        message = f"cannot open for {mode}: permission denied"
    elif code == errno.EPERM:
        message = (
            f"cannot open for {mode}: permission denied (EPERM: an immutable or append-only "
            "file is read-only, even for root)"
        )
    elif code == errno.EISDIR:
        message = "is a directory, not a lease file or block device"
    else:
        message = f"cannot open for {mode}: {os.strerror(code)}"
    return DiskIOError(path, message, err=code)


def _classify_einval(path: str, flags: int, exc: OSError, *, readonly: bool) -> Exception:
    """An open with O_DIRECT failed with EINVAL: find out whether O_DIRECT is the reason.

    The same open without O_DIRECT is tried (and closed at once, never used for I/O): if it
    works, the filesystem refuses O_DIRECT.
    """
    try:
        probe = os.open(path, flags & ~os.O_DIRECT)
    except OSError:
        return _open_error(path, exc, readonly=readonly)
    os.close(probe)
    return DirectIOUnsupported(
        path,
        "filesystem does not support O_DIRECT (open failed with EINVAL); "
        "buffered I/O is never used for leases",
    )


def _human(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} B"
