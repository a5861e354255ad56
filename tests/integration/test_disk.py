"""Storage on real files: O_DIRECT round trips, clear errors, and real faults.

The fault sources are real kernel objects, never mocks of ``os``:

- read-only storage: a file with ``chattr +i`` (root ignores permission bits, not that) and a
  tmpfs remounted read-only;
- a filesystem that refuses O_DIRECT at open: ramfs (and procfs);
- a filesystem that accepts O_DIRECT but refuses 512-byte O_DIRECT I/O (EINVAL at the first
  I/O): ext4 on a 4096-byte-sector loop device;
- hung writes: ext4 on a loop device frozen with ``fsfreeze`` (writes block in the kernel,
  uninterruptibly, until it is thawed);
- hung reads and EIO: a tiny FUSE filesystem served by this very file run as a script
  (``python3 test_disk.py --fuse-server MOUNTPOINT MODE``) over ``/dev/fuse``, which holds
  READ requests without answering, or answers them with EIO.

Those tests are marked ``root``: they need root, loop devices, mount, fsfreeze and /dev/fuse.
Outside CI a missing one skips the test with the reason; in CI (``CI=true``) it fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import queue
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sync_manager.errors import (
    DeviceTooSmall,
    DirectIOUnsupported,
    DiskIOError,
    IOTimeout,
    UsageError,
)
from sync_manager.io.disk import DEFAULT_IO_TIMEOUT, FILE_SECTOR_SIZE, Storage
from tests.loopdev import ext4_mount, frozen, require

MiB = 1 << 20

# Deadlines of the timeout tests: short, so the suite stays fast, and far above the ~50 us an
# I/O takes here, so a healthy I/O never trips them.
SHORT_TIMEOUT = 0.3

# A hang the test makes is ended by this safety net after GUARD seconds at the latest, so that
# a regression (an I/O without a deadline) fails the test instead of hanging the whole run
# with a thread stuck in the kernel.
GUARD = 30.0


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)


def _must(*args: str) -> str:
    proc = _run(*args)
    require(proc.returncode == 0, f"{' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _require_root_tools(*tools: str) -> None:
    require(os.geteuid() == 0, "needs root")
    for tool in tools:
        require(shutil.which(tool), f"needs {tool}")


def _make_file(path: Path, size: int, fill: bytes = b"\0") -> Path:
    with path.open("wb") as f:
        if fill == b"\0":
            f.truncate(size)
        else:
            f.write(fill * (size // len(fill)))
    return path


def _pattern(tag: int, length: int) -> bytes:
    """Distinct, non-repeating-per-sector bytes, so a misplaced sector is caught."""
    unit = struct.pack("<II", tag, 0xA5A5A5A5)
    return bytes((b + i // 8) % 256 for i, b in enumerate(unit * (length // len(unit))))


def _io_threads(storage: Storage) -> list[threading.Thread]:
    name = f"sync_manager-io:{os.path.basename(storage.path)}"
    return [t for t in threading.enumerate() if t.name == name]


@pytest.fixture
def lease(tmp_path: Path) -> Path:
    """A 2 MiB lease file of zeros."""
    return _make_file(tmp_path / "lease", 2 * MiB)


# --- round trips ------------------------------------------------------------------------------


def test_regular_file_geometry(lease: Path) -> None:
    with Storage.open(str(lease)) as disk:
        assert disk.sector_size == FILE_SECTOR_SIZE == 512
        assert disk.is_block_device is False
        assert disk.size == 2 * MiB
        assert disk.path == str(lease)
        assert disk.io_timeout == DEFAULT_IO_TIMEOUT == 10.0


@pytest.mark.parametrize(
    ("offset", "length"),
    [(0, 512), (512, 512), (4096, 4096), (1536, 3 * 512), (MiB - 512, 1024), (MiB, MiB)],
)
def test_write_then_read_round_trip(lease: Path, offset: int, length: int) -> None:
    data = _pattern(offset, length)
    with Storage.open(str(lease)) as disk:
        disk.write(offset, data)
        assert disk.read(offset, length) == data
        # The neighbours are untouched: whole sectors, no read-modify-write spill.
        if offset:
            assert disk.read(offset - 512, 512) == bytes(512)
        if offset + length < disk.size:
            assert disk.read(offset + length, 512) == bytes(512)
    # What a plain buffered reader sees on disk is what we wrote.
    raw = lease.read_bytes()
    assert raw[offset : offset + length] == data
    assert len(raw) == 2 * MiB


def test_many_writes_then_one_large_read(lease: Path) -> None:
    offsets = [0, 512, 8192, 65536, 2 * MiB - 512]
    with Storage.open(str(lease)) as disk:
        for off in offsets:
            disk.write(off, _pattern(off, 512))
        whole = disk.read(0, 2 * MiB)  # grows the aligned buffer
        small = disk.read(512, 512)  # and the small I/O after it still works
    expected = bytearray(2 * MiB)
    for off in offsets:
        expected[off : off + 512] = _pattern(off, 512)
    assert whole == expected
    assert small == _pattern(512, 512)


def test_opened_with_o_direct_and_o_sync(lease: Path) -> None:
    # What the kernel holds, not what we meant: sanlock opens O_RDWR|O_DIRECT|O_SYNC.
    with Storage.open(str(lease)):
        flags = _open_flags(lease)
        assert flags & os.O_ACCMODE == os.O_RDWR
        assert flags & os.O_DIRECT
        assert flags & os.O_SYNC == os.O_SYNC
    with Storage.open(str(lease), readonly=True):
        flags = _open_flags(lease)
        assert flags & os.O_ACCMODE == os.O_RDONLY
        assert flags & os.O_DIRECT


def test_data_persists_after_close_and_reopen(lease: Path) -> None:
    data = _pattern(7, 4096)
    disk = Storage.open(str(lease))
    disk.write(8192, data)
    disk.close()
    disk.close()  # idempotent
    with Storage.open(str(lease), readonly=True) as again:
        assert again.read(8192, 4096) == data
        assert again.readonly


def test_closed_storage_refuses_io(lease: Path) -> None:
    disk = Storage.open(str(lease))
    disk.read(0, 512)
    disk.close()
    with pytest.raises(UsageError, match="closed"):
        disk.read(0, 512)
    with pytest.raises(UsageError, match="closed"):
        disk.write(0, bytes(512))
    # The worker thread went away with it.
    for thread in _io_threads(disk):
        thread.join(5)
    assert not _io_threads(disk)


def test_write_extends_a_regular_file(tmp_path: Path) -> None:
    path = _make_file(tmp_path / "empty", 0)
    with Storage.open(str(path)) as disk:
        assert disk.size == 0
        with pytest.raises(DeviceTooSmall):
            disk.require_size(MiB)
        disk.write(MiB - 512, _pattern(1, 512))
        assert disk.size == MiB
        disk.require_size(MiB)
        assert disk.read(0, 512) == bytes(512)


def test_storage_is_usable_from_several_threads(lease: Path) -> None:
    errors: list[BaseException] = []
    with Storage.open(str(lease)) as disk:

        def worker(tag: int) -> None:
            try:
                for i in range(50):
                    off = (tag * 64 + i) * 512
                    disk.write(off, _pattern(tag * 1000 + i, 512))
                    assert disk.read(off, 512) == _pattern(tag * 1000 + i, 512)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(_io_threads(disk)) == 1
    assert errors == []


# --- misuse -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "length", "words"),
    [
        (100, 512, ["offset 100", "sector size 512"]),
        (-512, 512, ["offset -512", "sector size 512"]),
        (0, 100, ["length 100", "sector size 512"]),
        (512, 0, ["length 0", "sector size 512"]),
        (0, 4097, ["length 4097", "sector size 512"]),
    ],
)
def test_misaligned_read_is_a_usage_error(
    lease: Path, offset: int, length: int, words: list[str]
) -> None:
    with Storage.open(str(lease)) as disk, pytest.raises(UsageError) as info:
        disk.read(offset, length)
    for word in words:
        assert word in str(info.value)


def test_short_or_misaligned_write_is_a_usage_error_and_writes_nothing(lease: Path) -> None:
    with Storage.open(str(lease)) as disk:
        with pytest.raises(UsageError, match=r"length 511 .*sector size 512.*pad"):
            disk.write(0, b"x" * 511)
        with pytest.raises(UsageError, match=r"offset 256 .*sector size 512"):
            disk.write(256, b"x" * 512)
    assert lease.read_bytes() == bytes(2 * MiB)


@pytest.mark.parametrize("timeout", [0.0, -1.0, float("nan")])
def test_bad_timeout_is_a_usage_error(lease: Path, timeout: float) -> None:
    with Storage.open(str(lease)) as disk, pytest.raises(UsageError, match="timeout"):
        disk.read(0, 512, timeout=timeout)
    with pytest.raises(UsageError, match="timeout"):
        Storage.open(str(lease), io_timeout=timeout)


def test_readonly_storage_refuses_write(lease: Path) -> None:
    with Storage.open(str(lease), readonly=True) as disk:
        with pytest.raises(UsageError, match="read-only"):
            disk.write(0, bytes(512))
        assert disk.read(0, 512) == bytes(512)


# --- errors at open ---------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "lease"
    for readonly in (False, True):
        with pytest.raises(DiskIOError, match="does not exist") as info:
            Storage.open(str(missing), readonly=readonly)
        assert info.value.errno == errno.ENOENT
        assert str(missing) in str(info.value)
        assert info.value.code == -errno.ENOENT


def test_directory(tmp_path: Path) -> None:
    for readonly in (False, True):
        with pytest.raises(DiskIOError, match="is a directory") as info:
            Storage.open(str(tmp_path), readonly=readonly)
        assert info.value.errno == errno.EISDIR


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # Opening a FIFO for reading would block until a writer comes: we must not even try.
    with pytest.raises(DiskIOError, match="neither a regular file nor a block device"):
        Storage.open(str(fifo), readonly=True)


def test_character_device_is_refused() -> None:
    with pytest.raises(DiskIOError, match="neither a regular file nor a block device"):
        Storage.open("/dev/null")


@pytest.mark.root
def test_immutable_file_cannot_be_opened_for_writing(lease: Path) -> None:
    _require_root_tools("chattr")
    _must("chattr", "+i", str(lease))
    try:
        with pytest.raises(DiskIOError) as info:
            Storage.open(str(lease))
        assert info.value.errno == errno.EPERM
        assert "permission denied" in str(info.value)
        assert "read-only" in str(info.value)
        with Storage.open(str(lease), readonly=True) as disk:
            assert disk.read(0, 512) == bytes(512)
    finally:
        _run("chattr", "-i", str(lease))


@contextlib.contextmanager
def _mounted(fstype: str, target: Path, options: str = "") -> Iterator[Path]:
    target.mkdir(exist_ok=True)
    args = ["mount", "-t", fstype, *(["-o", options] if options else []), fstype, str(target)]
    _must(*args)
    try:
        yield target
    finally:
        if _run("umount", str(target)).returncode != 0:
            _run("umount", "-l", str(target))


@pytest.mark.root
def test_read_only_mount(tmp_path: Path) -> None:
    _require_root_tools("mount", "umount")
    with _mounted("tmpfs", tmp_path / "ro", "size=4m") as mnt:
        _make_file(mnt / "lease", MiB, _pattern(3, 512))
        _must("mount", "-o", "remount,ro", str(mnt))
        with pytest.raises(DiskIOError, match="read-only file system") as info:
            Storage.open(str(mnt / "lease"))
        assert info.value.errno == errno.EROFS
        with Storage.open(str(mnt / "lease"), readonly=True) as disk:
            assert disk.read(512, 512) == _pattern(3, 512)


@pytest.mark.root
def test_filesystem_refusing_o_direct_at_open(tmp_path: Path) -> None:
    _require_root_tools("mount", "umount")
    with _mounted("ramfs", tmp_path / "ramfs") as mnt:
        _make_file(mnt / "lease", MiB)
        for readonly in (False, True):
            with pytest.raises(DirectIOUnsupported, match="does not support O_DIRECT") as info:
                Storage.open(str(mnt / "lease"), readonly=readonly)
            assert info.value.code == -errno.EINVAL


def test_procfs_refuses_o_direct() -> None:
    # A regular file (st_mode S_IFREG) whose filesystem has no O_DIRECT: no mount needed.
    with pytest.raises(DirectIOUnsupported, match="does not support O_DIRECT"):
        Storage.open("/proc/self/status", readonly=True)


def test_a_large_buffer_is_given_back_and_grows_again(lease: Path) -> None:
    with Storage.open(str(lease)) as disk:
        assert not disk.shrink_buffer()  # one page: nothing to give back
        whole = disk.read(0, MiB)
        assert disk.shrink_buffer()  # the 1 MiB buffer of that read
        assert not disk.shrink_buffer()
        assert disk.read(0, MiB) == whole  # grown again
        disk.write(MiB - 512, _pattern(5, 512))
        assert disk.read(MiB - 512, 512) == _pattern(5, 512)
        assert disk.shrink_buffer()
    assert not disk.shrink_buffer()  # closed


# --- short reads ------------------------------------------------------------------------------


def test_short_read_is_device_too_small(tmp_path: Path) -> None:
    path = _make_file(tmp_path / "small", 4096, b"\x01")
    with Storage.open(str(path)) as disk:
        with pytest.raises(DeviceTooSmall) as info:
            disk.read(4096, 512)  # entirely past the end
        assert "4096 bytes" in str(info.value)
        assert "4608" in str(info.value)
        with pytest.raises(DeviceTooSmall, match="8192"):
            disk.read(0, 8192)  # straddles the end: never zero-filled
        assert disk.read(3584, 512) == b"\x01" * 512


def test_require_size_says_how_big(lease: Path) -> None:
    with Storage.open(str(lease), readonly=True) as disk:
        disk.require_size(2 * MiB)
        with pytest.raises(DeviceTooSmall) as info:
            disk.require_size(3 * MiB)
    message = str(info.value)
    assert "file is 2097152 bytes" in message
    assert "at least 3145728 bytes" in message
    assert info.value.code == -errno.ENOSPC


# --- ext4 on loop devices: EINVAL at the first I/O, and hung writes ---------------------------


@contextlib.contextmanager
def _ext4_on_loop(tmp_path: Path, *, sector_size: int = 512) -> Iterator[Path]:
    """A fresh ext4 on a loop device (with the given logical sector size), mounted."""
    _require_root_tools("losetup", "mkfs.ext4", "mount", "umount")
    backing = tmp_path / "ext4.img"
    with ext4_mount(backing, tmp_path / "ext4", size=32 * MiB, sector_size=sector_size) as mnt:
        yield mnt


def _frozen(mnt: Path) -> contextlib.AbstractContextManager[None]:
    """Freeze the filesystem at ``mnt`` (writes to it hang) until the block ends, or GUARD."""
    return frozen(mnt, GUARD)


@pytest.mark.root
def test_filesystem_refusing_512_byte_o_direct_at_first_io(tmp_path: Path) -> None:
    # ext4 on a 4096-byte-sector device opens O_DIRECT fine but fails a 512-byte O_DIRECT
    # I/O with EINVAL. A regular file counts as 512-byte sectors (as in sanlock), so the
    # first 512-byte I/O is where the refusal shows.
    with _ext4_on_loop(tmp_path, sector_size=4096) as mnt:
        _make_file(mnt / "lease", MiB, _pattern(9, 4096))
        with Storage.open(str(mnt / "lease")) as disk:
            assert disk.sector_size == 512
            with pytest.raises(DirectIOUnsupported) as info:
                disk.read(0, 512)
            message = str(info.value)
            assert "does not support O_DIRECT" in message
            assert "read of 512 bytes at offset 0" in message
            assert "4096" in message  # the hint from statx(STATX_DIOALIGN)
            with pytest.raises(DirectIOUnsupported):
                disk.write(512, bytes(512))
            # 4096-byte I/O is fine: this was never a buffered fallback.
            assert disk.read(4096, 4096) == _pattern(9, 4096)
            disk.write(0, _pattern(10, 4096))
            assert disk.read(0, 4096) == _pattern(10, 4096)


@pytest.mark.root
def test_hung_write_times_out_and_holds_back_the_next_io(tmp_path: Path) -> None:
    _require_root_tools("fsfreeze")
    with _ext4_on_loop(tmp_path) as mnt:
        _make_file(mnt / "lease", MiB, _pattern(1, 512))
        disk = Storage.open(str(mnt / "lease"), io_timeout=SHORT_TIMEOUT)
        try:
            assert disk.read(0, MiB)[:512] == _pattern(1, 512)  # grows the buffer to 1 MiB
            with _frozen(mnt):
                # Real waits of SHORT_TIMEOUT each: the deadline is what is under test.
                start = time.monotonic()
                with pytest.raises(IOTimeout, match=r"write of 512 bytes at offset 0 .*0\.3 s"):
                    disk.write(0, _pattern(2, 512))
                assert time.monotonic() - start >= SHORT_TIMEOUT
                # Reads are not blocked by the freeze, but the abandoned write is still out:
                # the next I/O waits for it within its own deadline, and is not issued.
                with pytest.raises(IOTimeout, match=r"earlier write .* has not finished") as info:
                    disk.read(512, 512)
                assert info.value.code == -202  # SANLK_AIO_TIMEOUT
                with pytest.raises(IOTimeout, match="earlier write"):
                    disk.write(4096, _pattern(3, 512), timeout=0.1)
                assert len(_io_threads(disk)) == 1  # one hung I/O costs one thread, not more
                assert not disk.shrink_buffer()  # the kernel may still write from that buffer
            # Thawed: the abandoned write lands, the next I/O goes through.
            assert disk.read(0, 512, timeout=5) == _pattern(2, 512)
            disk.write(4096, _pattern(4, 512))
            assert disk.read(4096, 512) == _pattern(4, 512)
        finally:
            disk.close()


@pytest.mark.root
def test_close_during_a_hung_write_does_not_wait_and_frees_the_fd_later(tmp_path: Path) -> None:
    _require_root_tools("fsfreeze")
    with _ext4_on_loop(tmp_path) as mnt:
        _make_file(mnt / "lease", MiB)
        disk = Storage.open(str(mnt / "lease"), io_timeout=SHORT_TIMEOUT)
        with _frozen(mnt):
            with pytest.raises(IOTimeout):
                disk.write(0, _pattern(5, 512))
            disk.close()  # returns while the write is still stuck:
            (worker,) = _io_threads(disk)
            assert worker.daemon  # never holds up interpreter exit
            assert worker.is_alive()  # still stuck in the kernel...
            # ...and the fd stays open under it, so its number cannot be reused by another
            # open() while the worker may still use it.
            assert str(mnt / "lease") in _open_files()
        worker.join(10)
        assert not worker.is_alive()
        # The worker closed the fd once the write returned: nothing refers to the file now.
        assert str(mnt / "lease") not in _open_files()


def _open_files() -> dict[str, int]:
    """The files this process has open, by path, with one fd of each."""
    names = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            names[os.readlink(f"/proc/self/fd/{fd}")] = int(fd)
    return names


def _open_flags(path: Path) -> int:
    """The flags the kernel holds for this process's open file at ``path``."""
    fd = _open_files()[str(path)]
    with open(f"/proc/self/fdinfo/{fd}") as info:
        for line in info:
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    raise AssertionError(f"no flags in /proc/self/fdinfo/{fd}")


# --- a FUSE filesystem that hangs or fails reads ----------------------------------------------

_FUSE_IN = struct.Struct("=IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, extlen, pad
_FUSE_OUT = struct.Struct("=IiQ")  # len, error, unique
_FUSE_ATTR = struct.Struct("=QQQQQQIIIIIIIIII")
_FUSE_FILE_SIZE = MiB
_ROOT, _FILE = 1, 2
(_LOOKUP, _GETATTR, _OPEN, _READ, _WRITE, _RELEASE, _FLUSH, _INIT) = (1, 3, 14, 15, 16, 18, 25, 26)
_NO_REPLY = frozenset({2, 36, 42})  # FORGET, INTERRUPT, BATCH_FORGET
_EMPTY_REPLY = frozenset({_RELEASE, _FLUSH, 29, 34})  # RELEASEDIR, ACCESS


def _fuse_attr(node: int) -> bytes:
    if node == _ROOT:
        return _FUSE_ATTR.pack(_ROOT, 0, 0, 0, 0, 0, 0, 0, 0, 0o40755, 2, 0, 0, 0, 4096, 0)
    size = _FUSE_FILE_SIZE
    return _FUSE_ATTR.pack(
        _FILE, size, size // 512, 0, 0, 0, 0, 0, 0, 0o100644, 1, 0, 0, 0, 4096, 0
    )


def fuse_server(mountpoint: str, mode: str) -> None:
    """Serve one file, ``lease`` (1 MiB of zeros), on ``mountpoint`` over /dev/fuse.

    ``mode`` is what READ and WRITE get: ``hang`` (never answered), ``eio`` (EIO) or
    ``serve``. Runs until the filesystem is unmounted or this process is killed; killing
    it aborts the connection, so every request still waiting fails with ENOTCONN.
    """
    dev = os.open("/dev/fuse", os.O_RDWR)
    libc = ctypes.CDLL(None, use_errno=True)
    options = f"fd={dev},rootmode=40000,user_id=0,group_id=0".encode()
    if libc.mount(b"sync_manager_test", mountpoint.encode(), b"fuse", 0, options) != 0:
        print(f"mount failed: {os.strerror(ctypes.get_errno())}", flush=True)
        sys.exit(1)
    print("mounted", flush=True)
    while True:
        try:
            request = os.read(dev, 1 << 21)
        except OSError as exc:
            if exc.errno == errno.ENODEV:  # unmounted
                return
            if exc.errno in (errno.EINTR, errno.ENOENT):
                continue
            raise
        _, opcode, unique, node, *_ = _FUSE_IN.unpack_from(request)
        body = request[_FUSE_IN.size :]
        payload, error = b"", 0
        if opcode in _NO_REPLY:
            continue
        if opcode == _INIT:
            readahead = struct.unpack_from("=III", body)[2]
            init = struct.pack("=IIIIHHIIHHII", 7, 26, readahead, 0, 16, 12, 1 << 17, 1, 0, 0, 0, 0)
            payload = init.ljust(64, b"\0")
        elif opcode == _LOOKUP:
            if node == _ROOT and body.split(b"\0", 1)[0] == b"lease":
                payload = struct.pack("=QQQQII", _FILE, 0, 0, 0, 0, 0) + _fuse_attr(_FILE)
            else:
                error = errno.ENOENT
        elif opcode == _GETATTR:
            payload = struct.pack("=QII", 0, 0, 0) + _fuse_attr(node)
        elif opcode == _OPEN:
            payload = struct.pack("=QII", 1, 0, 0)
        elif opcode in (_READ, _WRITE):
            if mode == "hang":
                continue  # held forever: the caller's pread/pwrite hangs
            if mode == "eio":
                error = errno.EIO
            else:
                offset, size = struct.unpack_from("=QQI", body)[1:]
                if opcode == _READ:
                    payload = bytes(min(size, max(0, _FUSE_FILE_SIZE - offset)))
                else:
                    payload = struct.pack("=II", size, 0)
        elif opcode not in _EMPTY_REPLY:
            error = errno.ENOSYS
        with contextlib.suppress(OSError):  # the request may have been interrupted
            os.write(dev, _FUSE_OUT.pack(_FUSE_OUT.size + len(payload), -error, unique) + payload)


@pytest.fixture
def fuse_mount(tmp_path: Path) -> Iterator[Callable[[str], tuple[Path, subprocess.Popen[str]]]]:
    """Start the FUSE server in a mode; yield the lease path and the server process."""
    require(os.geteuid() == 0, "needs root")
    require(os.path.exists("/dev/fuse"), "needs /dev/fuse")
    servers: list[tuple[Path, subprocess.Popen[str]]] = []
    guards: list[threading.Timer] = []

    def start(mode: str) -> tuple[Path, subprocess.Popen[str]]:
        mnt = tmp_path / f"fuse-{mode}"
        mnt.mkdir()
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.test_disk", "--fuse-server", str(mnt), mode],
            cwd=Path(__file__).parents[2],  # the repository root, where `tests` is a package
            stdout=subprocess.PIPE,
            text=True,
        )
        servers.append((mnt, server))
        if mode == "hang":
            guard = threading.Timer(GUARD, server.kill)
            guard.daemon = True
            guard.start()
            guards.append(guard)
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        require(line == "mounted", f"FUSE mount failed: {line or server.wait()}")
        return mnt / "lease", server

    yield start
    for guard in guards:
        guard.cancel()
    for mnt, server in servers:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()
        _run("umount", "-l", str(mnt))


@pytest.mark.root
def test_hung_read_times_out_then_fails_when_the_server_dies(
    fuse_mount: Callable[[str], tuple[Path, subprocess.Popen[str]]],
) -> None:
    path, server = fuse_mount("hang")
    with Storage.open(str(path), io_timeout=SHORT_TIMEOUT) as disk:
        assert disk.size == _FUSE_FILE_SIZE
        # Real waits of SHORT_TIMEOUT each: the deadline is what is under test.
        start = time.monotonic()
        with pytest.raises(IOTimeout, match=r"read of 512 bytes at offset 0 did not complete"):
            disk.read(0, 512)
        assert time.monotonic() - start >= SHORT_TIMEOUT
        with pytest.raises(IOTimeout, match="earlier read of 512 bytes at offset 0"):
            disk.read(4096, 4096)
        assert len(_io_threads(disk)) == 1
        # The server dies: the kernel fails the abandoned read (ENOTCONN), which frees the
        # worker, and the next read is issued and fails the same way, with its errno.
        server.kill()
        server.wait()
        with pytest.raises(DiskIOError) as info:
            disk.read(4096, 4096, timeout=5)
        assert info.value.errno == errno.ENOTCONN
        assert "read of 4096 bytes at offset 4096 failed" in str(info.value)
        assert "\n" not in str(info.value)


@pytest.mark.root
def test_eio_is_a_disk_io_error_with_errno(
    fuse_mount: Callable[[str], tuple[Path, subprocess.Popen[str]]],
) -> None:
    path, _ = fuse_mount("eio")
    with Storage.open(str(path)) as disk:
        with pytest.raises(DiskIOError) as info:
            disk.read(0, 512)
        assert info.value.errno == errno.EIO
        assert info.value.code == -errno.EIO
        assert str(info.value) == (
            f"{path}: read of 512 bytes at offset 0 failed: Input/output error"
        )
        with pytest.raises(DiskIOError, match="write of 512 bytes at offset 512 failed"):
            disk.write(512, bytes(512))


@pytest.mark.root
def test_fuse_serving_round_trip_sanity(
    fuse_mount: Callable[[str], tuple[Path, subprocess.Popen[str]]],
) -> None:
    # The same server answering normally: shows the hang above is the server's doing.
    path, _ = fuse_mount("serve")
    with Storage.open(str(path)) as disk:
        assert disk.read(0, 4096) == bytes(4096)
        disk.write(0, bytes(512))


@pytest.mark.root
def test_interpreter_exit_does_not_wait_for_a_hung_read(
    fuse_mount: Callable[[str], tuple[Path, subprocess.Popen[str]]],
) -> None:
    # A thread stuck in a FUSE read that the server has taken cannot be killed (the kernel
    # waits uninterruptibly for the answer), so the *process* lingers until the server goes
    # away. What we check is that the *interpreter* does not wait for it: atexit handlers run
    # only after non-daemon threads are joined, so "atexit" printed means the worker is a
    # daemon thread that did not hold up the shutdown.
    path, server = fuse_mount("hang")
    code = (
        "import atexit\n"
        "from sync_manager.errors import IOTimeout\n"
        "from sync_manager.io.disk import Storage\n"
        "atexit.register(print, 'atexit', flush=True)\n"
        f"disk = Storage.open({str(path)!r}, io_timeout=0.2)\n"
        "try:\n"
        "    disk.read(0, 512)\n"
        "except IOTimeout:\n"
        "    print('timed out', flush=True)\n"
        "disk.close()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    stdout = child.stdout
    assert stdout is not None

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        # Generous bounds, so that a stuck shutdown fails the test instead of hanging it.
        assert lines.get(timeout=GUARD / 3) == "timed out\n"
        assert lines.get(timeout=GUARD / 3) == "atexit\n"
    finally:
        server.kill()  # aborts the FUSE connection: the held read fails, the process ends
        server.wait()
        assert child.wait(30) == 0
        if child.stdout is not None:
            child.stdout.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--fuse-server":
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        fuse_server(sys.argv[2], sys.argv[3])
    else:
        sys.exit(
            "usage: python3 -m tests.integration.test_disk --fuse-server MOUNTPOINT hang|eio|serve"
        )
