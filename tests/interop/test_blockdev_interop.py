"""``direct`` on real loop devices, 512 and 4K logical sectors, against sanlock.

Without -Z/-A our init must pick what sanlock picks from the device (512 -> 1M areas,
4096 -> 8M areas), and each tool must read what the other wrote on the device.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.loopdev import loop_device

Run = Callable[..., subprocess.CompletedProcess[str]]
MIB = 1024 * 1024


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args} failed: {result.stdout}{result.stderr}"
    return result.stdout


@pytest.mark.parametrize(("sector", "align"), [(512, MIB), (4096, 8 * MIB)])
def test_default_geometry_from_device(
    sector: int, align: int, sanlock: Run, ours: Run, lease_file: Callable[[int], Path]
) -> None:
    backing = lease_file(32)
    with loop_device(backing, "--sector-size", str(sector)) as dev:
        _ok(ours("direct", "init", "-s", f"LS:0:{dev}:0", "-o", "1"))
        _ok(ours("direct", "init", "-r", f"LS:R:{dev}:{align}"))
        for args in (["-s", f"LS:1:{dev}:0"], ["-r", f"LS:R:{dev}:{align}"]):
            theirs = _ok(sanlock("direct", "read_leader", *args))
            assert f"sector_size {sector}\n" in theirs
            assert _ok(ours("direct", "read_leader", *args)) == theirs
        _ok(sanlock("direct", "acquire_id", "-s", f"LS:2:{dev}:0", "-e", "two"))
        _ok(ours("direct", "acquire", "-r", f"LS:R:{dev}:{align}", "-i", "2", "-g", "1"))
        assert _ok(ours("direct", "dump", dev)) == _ok(sanlock("direct", "dump", dev))


def test_sanlock_init_on_4k_device_read_by_us(
    sanlock: Run, ours: Run, lease_file: Callable[[int], Path]
) -> None:
    backing = lease_file(24)
    with loop_device(backing, "--sector-size", "4096") as dev:
        _ok(sanlock("direct", "init", "-s", f"LS:0:{dev}:0", "-Z", "4096", "-A", "1M"))
        _ok(sanlock("direct", "init", "-r", f"LS:R:{dev}:1M", "-Z", "4096", "-A", "1M"))
        _ok(ours("direct", "acquire", "-r", f"LS:R:{dev}:1M", "-i", "3", "-g", "1"))
        out = _ok(sanlock("direct", "read_leader", "-r", f"LS:R:{dev}:1048576"))
        assert "owner_id 3\n" in out and "max_hosts 250\n" in out
        for force in ("0", "1", "2"):
            expected = _ok(sanlock("direct", "dump", dev, "-f", force))
            assert _ok(ours("direct", "dump", dev, "-f", force)) == expected


def test_512_io_refused_on_4k_device(ours: Run, lease_file: Callable[[int], Path]) -> None:
    backing = lease_file(16)
    with loop_device(backing, "--sector-size", "4096") as dev:
        result = ours("direct", "init", "-s", f"LS:0:{dev}:0", "-Z", "512")
        assert result.returncode == 1
        assert "512" in result.stderr and "4096" in result.stderr
        assert result.stderr.count("\n") == 1
