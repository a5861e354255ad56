"""Our ``direct`` commands against the real ``sanlock direct``, on the same files.

What one tool writes, the other reads with the same fields; where sanlock's output is
deterministic, images and outputs are compared byte for byte / line for line.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

Run = Callable[..., subprocess.CompletedProcess[str]]

MIB = 1024 * 1024

# (sector size, align size flag, align bytes)
GEOMETRIES = [(512, "1M", MIB), (4096, "1M", MIB), (4096, "2M", 2 * MIB), (4096, "8M", 8 * MIB)]


def _sizes(sector: int, align: str) -> list[str]:
    return ["-Z", str(sector), "-A", align]


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args} failed: {result.stdout}{result.stderr}"
    out: str = result.stdout
    return out


@pytest.mark.parametrize(("sector", "align", "align_bytes"), GEOMETRIES)
def test_init_images_identical(
    sector: int,
    align: str,
    align_bytes: int,
    sanlock: Run,
    ours: Run,
    lease_file: Callable[[int], Path],
    tmp_path: Path,
) -> None:
    """Both tools' init images of a lockspace and two resources are byte-identical."""
    theirs = lease_file(4 * align_bytes // MIB)
    mine = tmp_path / "mine.img"
    mine.write_bytes(b"")
    for tool, path in ((sanlock, theirs), (ours, mine)):
        _ok(tool("direct", "init", "-s", f"LS:0:{path}:0", "-o", "7", *_sizes(sector, align)))
        _ok(tool("direct", "init", "-r", f"LS:R1:{path}:{align_bytes}", *_sizes(sector, align)))
        _ok(
            tool(
                "direct",
                "init",
                "-r",
                f"LS:R2:{path}:{2 * align_bytes}",
                "-n",
                "9",
                *_sizes(sector, align),
            )
        )
    size = 3 * align_bytes
    assert mine.read_bytes()[:size] == theirs.read_bytes()[:size]


@pytest.mark.parametrize(("sector", "align", "align_bytes"), GEOMETRIES)
def test_read_leader_output_matches(
    sector: int,
    align: str,
    align_bytes: int,
    sanlock: Run,
    ours: Run,
    lease_file: Callable[[int], Path],
) -> None:
    """On a lockspace with a joined host and a held resource, read_leader prints the same."""
    path = lease_file(2 * align_bytes // MIB)
    # io_timeout 1: acquire_id waits 2 * the io_timeout stored on disk; keep it at 2 s
    _ok(ours("direct", "init", "-s", f"LS:0:{path}:0", "-o", "1", *_sizes(sector, align)))
    _ok(ours("direct", "init", "-r", f"LS:RES:{path}:{align_bytes}", *_sizes(sector, align)))
    _ok(sanlock("direct", "acquire_id", "-s", f"LS:3:{path}:0", "-e", "host-three"))
    _ok(sanlock("direct", "acquire", "-r", f"LS:RES:{path}:{align_bytes}", "-i", "3", "-g", "1"))
    for args in (
        ["-s", f"LS:3:{path}:0"],
        ["-s", f"LS:1:{path}:0"],
        ["-r", f"LS:RES:{path}:{align_bytes}"],
    ):
        expected = _ok(sanlock("direct", "read_leader", *args))
        assert _ok(ours("direct", "read_leader", *args)) == expected
    assert "owner_id 3" in _ok(ours("direct", "read_leader", "-r", f"LS:RES:{path}:{align_bytes}"))


@pytest.mark.parametrize("force", ["0", "1", "2"])
@pytest.mark.parametrize(("sector", "align", "align_bytes"), GEOMETRIES[:2])
def test_dump_output_matches(
    force: str,
    sector: int,
    align: str,
    align_bytes: int,
    sanlock: Run,
    ours: Run,
    lease_file: Callable[[int], Path],
) -> None:
    """``dump`` prints what sanlock's prints, whole file and with offset and size."""
    path = lease_file(8)
    _ok(sanlock("direct", "init", "-s", f"LS:0:{path}:0", "-o", "1", *_sizes(sector, align)))
    for i in (1, 2, 3):
        _ok(
            sanlock(
                "direct", "init", "-r", f"LS:R{i}:{path}:{i * align_bytes}", *_sizes(sector, align)
            )
        )
    _ok(sanlock("direct", "acquire_id", "-s", f"LS:1:{path}:0", "-e", "alpha"))
    _ok(sanlock("direct", "acquire_id", "-s", f"LS:2:{path}:0", "-e", "beta"))
    _ok(sanlock("direct", "acquire", "-r", f"LS:R2:{path}:{2 * align_bytes}", "-i", "2", "-g", "1"))
    for spec in (str(path), f"{path}:{align_bytes}:{2 * align_bytes}", f"{path}:0:1M"):
        expected = _ok(sanlock("direct", "dump", spec, "-f", force))
        assert _ok(ours("direct", "dump", spec, "-f", force)) == expected
        assert expected.count("\n") >= 2


def test_ours_written_sanlock_acquires(
    sanlock: Run, ours: Run, lease_file: Callable[[int], Path]
) -> None:
    """sanlock's own acquire works on areas we initialized, and we read its result."""
    path = lease_file(4)
    _ok(ours("direct", "init", "-s", f"LS:0:{path}:0", "-o", "1"))
    _ok(ours("direct", "init", "-r", f"LS:R:{path}:1M"))
    _ok(sanlock("direct", "acquire_id", "-s", f"LS:5:{path}:0", "-e", "five"))
    _ok(sanlock("direct", "acquire", "-r", f"LS:R:{path}:1048576", "-i", "5", "-g", "1"))
    out = _ok(ours("direct", "read_leader", "-r", f"LS:R:{path}:1048576"))
    assert "owner_id 5\n" in out and "lver 1\n" in out
    out = _ok(ours("direct", "dump", str(path)))
    assert "five" in out


def test_cleared_resource(sanlock: Run, ours: Run, lease_file: Callable[[int], Path]) -> None:
    """``init -z 1`` is refused by both tools' read_leader, and dump stops at it."""
    path = lease_file(2)
    _ok(ours("direct", "init", "-r", f"LS:R:{path}:0", "-z", "1"))
    theirs = sanlock("direct", "read_leader", "-r", f"LS:R:{path}:0")
    mine = ours("direct", "read_leader", "-r", f"LS:R:{path}:0")
    assert "read_leader done -223" in theirs.stdout
    assert mine.stdout == theirs.stdout
    assert mine.returncode == 1


def test_corrupt_byte_reported_alike(
    sanlock: Run, ours: Run, lease_file: Callable[[int], Path]
) -> None:
    """A flipped byte in a leader: both report a checksum error; we write nothing."""
    path = lease_file(2)
    _ok(sanlock("direct", "init", "-r", f"LS:R:{path}:0"))
    data = bytearray(path.read_bytes())
    data[60] ^= 0x01  # space_name[4]: a NUL after "LS", so only the checksum can tell
    path.write_bytes(bytes(data))
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    theirs = sanlock("direct", "read_leader", "-r", f"LS:R:{path}:0")
    mine = ours("direct", "read_leader", "-r", f"LS:R:{path}:0")
    assert "read_leader done -229" in theirs.stdout
    assert mine.stdout == theirs.stdout
    assert mine.returncode == 1
    assert mine.stderr.count("\n") == 1 and "checksum" in mine.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
