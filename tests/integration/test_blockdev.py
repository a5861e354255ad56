"""Storage on real loop devices: sector size and size from the kernel, aligned I/O, limits.

Each test makes a backing file, attaches it with ``losetup --find --show`` (optionally
``--sector-size 4096``, ``--read-only`` or ``--direct-io=on``) and detaches it with
``losetup -d`` when done. Needs root and loop devices: outside CI a missing one skips with the
reason; in CI (``CI=true``) it fails.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from sync_manager.errors import DeviceTooSmall, DiskIOError, UsageError
from sync_manager.io import blockdev
from sync_manager.io.disk import Storage
from tests.loopdev import loop_device

pytestmark = pytest.mark.root

MiB = 1 << 20


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)


def _backing(tmp_path: Path, size: int, name: str = "backing.img") -> Path:
    path = tmp_path / name
    with path.open("wb") as f:
        f.truncate(size)
    return path


def _pattern(tag: int, length: int) -> bytes:
    return bytes((tag * 7 + i * 13 + i // 512) % 256 for i in range(length))


# --- geometry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sector", [512, 4096])
def test_sector_size_and_size_come_from_the_kernel(tmp_path: Path, sector: int) -> None:
    backing = _backing(tmp_path, 8 * MiB)
    with loop_device(backing, "--sector-size", str(sector)) as dev:
        with Storage.open(dev) as disk:
            assert disk.is_block_device is True
            assert disk.sector_size == sector
            assert disk.size == 8 * MiB
            disk.require_size(8 * MiB)
        # Cross-check the ioctls against util-linux's own reading of them.
        fd = os.open(dev, os.O_RDONLY)
        try:
            assert blockdev.sector_size(fd) == int(_run("blockdev", "--getss", dev).stdout)
            assert blockdev.device_size(fd) == int(_run("blockdev", "--getsize64", dev).stdout)
        finally:
            os.close(fd)


def test_ioctls_on_a_regular_file_raise_oserror(tmp_path: Path) -> None:
    path = _backing(tmp_path, MiB)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError):
            blockdev.sector_size(fd)
        assert blockdev.dio_offset_alignment(fd) in (None, 512)
    finally:
        os.close(fd)


# --- I/O --------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [(), ("--direct-io=on",)], ids=["buffered-loop", "dio-loop"])
def test_round_trip_at_several_offsets_512(tmp_path: Path, options: tuple[str, ...]) -> None:
    backing = _backing(tmp_path, 4 * MiB)
    cases = [(0, 512), (512, 1024), (4096, 4096), (MiB + 1536, 512), (4 * MiB - 8192, 8192)]
    with loop_device(backing, *options) as dev:
        with Storage.open(dev) as disk:
            for n, (offset, length) in enumerate(cases):
                disk.write(offset, _pattern(n, length))
            for n, (offset, length) in enumerate(cases):
                assert disk.read(offset, length) == _pattern(n, length)
        with Storage.open(dev, readonly=True) as again:  # persists across close/reopen
            for n, (offset, length) in enumerate(cases):
                assert again.read(offset, length) == _pattern(n, length)
    raw = backing.read_bytes()  # and it is in the backing file
    for n, (offset, length) in enumerate(cases):
        assert raw[offset : offset + length] == _pattern(n, length)


def test_4k_sector_device_refuses_512_byte_io(tmp_path: Path) -> None:
    backing = _backing(tmp_path, 4 * MiB)
    with loop_device(backing, "--sector-size", "4096") as dev, Storage.open(dev) as disk:
        assert disk.sector_size == 4096
        with pytest.raises(UsageError, match=r"length 512 .*sector size 4096"):
            disk.read(0, 512)
        with pytest.raises(UsageError, match=r"offset 512 .*sector size 4096"):
            disk.read(512, 4096)
        with pytest.raises(UsageError, match=r"length 512 .*sector size 4096"):
            disk.write(0, bytes(512))
        with pytest.raises(UsageError, match=r"offset 2048 .*sector size 4096"):
            disk.write(2048, bytes(4096))
        for n, offset in enumerate([0, 4096, 2 * MiB, 4 * MiB - 4096]):
            disk.write(offset, _pattern(n, 4096))
            assert disk.read(offset, 4096) == _pattern(n, 4096)
        assert disk.read(0, 8192) == _pattern(0, 4096) + _pattern(1, 4096)


# --- limits -----------------------------------------------------------------------------------


def test_device_too_small(tmp_path: Path) -> None:
    backing = _backing(tmp_path, MiB)
    with loop_device(backing) as dev, Storage.open(dev) as disk:
        assert disk.size == MiB
        with pytest.raises(DeviceTooSmall) as info:
            disk.require_size(8 * MiB)
        message = str(info.value)
        assert message.startswith(f"{dev}: block device is 1048576 bytes")
        assert "at least 8388608 bytes" in message
        with pytest.raises(DeviceTooSmall, match="read of 1024 bytes at offset 1048064"):
            disk.read(MiB - 512, 1024)  # straddles the end
        with pytest.raises(DeviceTooSmall):
            disk.read(MiB, 512)  # starts at the end
        with pytest.raises(DeviceTooSmall, match="write of 4096 bytes"):
            disk.write(MiB - 512, bytes(4096))
        disk.write(MiB - 512, _pattern(1, 512))  # the last sector itself is fine
        assert disk.read(MiB - 512, 512) == _pattern(1, 512)
    assert backing.stat().st_size == MiB  # a device never grows


def test_read_only_loop_device(tmp_path: Path) -> None:
    backing = _backing(tmp_path, MiB)
    with loop_device(backing, "--read-only") as dev:
        with pytest.raises(DiskIOError, match="read-only") as info:
            Storage.open(dev)
        assert info.value.errno in (errno.EROFS, errno.EACCES)
        with Storage.open(dev, readonly=True) as disk:
            assert disk.read(0, 512) == bytes(512)
