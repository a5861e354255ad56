"""``sync_manager direct`` end to end as a user runs it: a separate process on real files.

Every bad input must give exit status 1, exactly one line on stderr, no traceback, and must
leave the storage untouched.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

MIB = 1024 * 1024


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """``sync_manager ARGS`` in a new process."""
    return subprocess.run(
        [sys.executable, "-m", "sync_manager", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(*args: str) -> str:
    """Run and require success; returns stdout."""
    result = run(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def fails(*args: str) -> str:
    """Run and require a clean failure: exit 1, one line on stderr, no traceback."""
    result = run(*args)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr


def digest(path: Path) -> str:
    """sha256 of a file, to show nothing was written."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def leases(tmp_path: Path) -> Path:
    """A 4 MiB lease file with lockspace LS at 0 and resources R1, R2 at 1M, 2M."""
    path = tmp_path / "leases"
    path.write_bytes(b"")
    ok("direct", "init", "-s", f"LS:0:{path}:0")
    ok("direct", "init", "-r", f"LS:R1:{path}:1M")
    ok("direct", "init", "-r", f"LS:R2:{path}:2M", "-n", "16")
    return path


def test_init_prints_done_and_extends_file(leases: Path) -> None:
    assert leases.stat().st_size == 3 * MIB
    out = ok("direct", "read_leader", "-r", f"LS:R2:{leases}:2097152")
    assert out.splitlines()[0] == "read_leader done 0"
    assert "num_hosts 16" in out.splitlines()


def test_init_refuses_live_areas_unless_forced(leases: Path) -> None:
    # Beyond sanlock, which writes anyway: a held lease or a host id in use is not wiped.
    ok("direct", "acquire_id", "-s", f"LS:1:{leases}:0", "-e", "host1")
    ok("direct", "acquire", "-r", f"LS:R1:{leases}:1M", "-i", "1", "-g", "1")
    before = digest(leases)
    err = fails("direct", "init", "-r", f"LS:R1:{leases}:1M")
    assert "holds lease LS:R1, held by host 1 (lver 1)" in err
    assert "--force" in err
    err = fails("direct", "init", "-s", f"LS:0:{leases}:0")
    assert "host id 1 is in use" in err
    assert digest(leases) == before  # nothing written
    ok("direct", "init", "-r", f"LS:R2:{leases}:2M")  # a free lease: as before
    ok("direct", "init", "-r", f"LS:R1:{leases}:1M", "--force")
    assert "timestamp 0" in ok("direct", "read_leader", "-r", f"LS:R1:{leases}:1M").splitlines()
    ok("direct", "init", "-s", f"LS:0:{leases}:0", "--force")


def test_json_outputs(leases: Path) -> None:
    init = json.loads(ok("direct", "init", "-r", f"LS:R3:{leases}:3M", "--json"))
    assert init == {"result": 0, "sector_size": 512, "align_size": MIB, "max_hosts": 2000}
    read = json.loads(ok("direct", "read_leader", "-s", f"LS:7:{leases}:0", "--json"))
    assert read["result"] == 0
    assert read["leader"]["space_name"] == "LS"
    assert read["leader"]["io_timeout"] == 10
    dump = json.loads(ok("direct", "dump", str(leases), "--json"))
    assert [e["leader"]["resource_name"] for e in dump["entries"]] == ["R1", "R2", "R3"]
    assert dump["entries"][0]["kind"] == "resource"


def test_dump_of_fresh_file(leases: Path) -> None:
    lines = ok("direct", "dump", str(leases)).splitlines()
    assert lines[0].split() == [
        "offset",
        "lockspace",
        "resource",
        "timestamp",
        "own",
        "gen",
        "lver",
    ]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["01048576", "LS", "R1"],
        ["02097152", "LS", "R2"],
    ]


def test_path_with_colon_and_space(tmp_path: Path) -> None:
    path = tmp_path / "a:b c"
    path.write_bytes(b"")
    escaped = str(path).replace(":", "\\:").replace(" ", "\\ ")
    ok("direct", "init", "-r", f"LS:R:{escaped}:0")
    assert "resource_name R" in ok("direct", "read_leader", "-r", f"LS:R:{escaped}:0")
    assert " R " in ok("direct", "dump", escaped)


@pytest.mark.parametrize(
    ("offset", "change", "message"),
    [
        (MIB + 60, b"\x01", "checksum"),  # a NUL inside space_name: only the checksum knows
        (MIB, b"\0\0\0\0", "magic"),
        (MIB + 4, b"\x00\x00\x09\x00", "version"),
    ],
)
def test_corrupt_leader_is_reported_not_written(
    leases: Path, offset: int, change: bytes, message: str
) -> None:
    with leases.open("r+b") as f:
        f.seek(offset)
        f.write(change)
    before = digest(leases)
    error = fails("direct", "read_leader", "-r", f"LS:R1:{leases}:1M")
    assert message in error
    assert f"{leases}:{MIB}" in error
    assert digest(leases) == before


def test_wrong_names(leases: Path) -> None:
    assert "another resource" in fails("direct", "read_leader", "-r", f"LS:NOPE:{leases}:1M")
    assert "another lockspace" in fails("direct", "read_leader", "-r", f"XX:R1:{leases}:1M")
    assert "another lockspace" in fails("direct", "read_leader", "-s", f"XX:1:{leases}:0")


def test_truncated_file(tmp_path: Path, leases: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(leases.read_bytes()[: MIB + 100])  # ends inside R1's leader
    before = digest(short)
    error = fails("direct", "read_leader", "-r", f"LS:R1:{short}:1M")
    assert str(short) in error
    fails("direct", "read_leader", "-r", f"LS:R1:{short}:8M")
    assert digest(short) == before


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert "not exist" in fails("direct", "read_leader", "-r", f"LS:R:{missing}:0")
    assert "not exist" in fails("direct", "init", "-s", f"LS:0:{missing}:0")
    assert "not exist" in fails("direct", "dump", str(missing))
    assert not missing.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["direct", "init", "-s", "LS:0:/tmp/x"],  # no offset
        ["direct", "init", "-s", "LS:0:/tmp/x:100"],  # unaligned
        ["direct", "init", "-s", "LS:0:/tmp/x:-512"],
        ["direct", "init", "-r", f"LS:{'r' * 49}:/tmp/x:0"],
        ["direct", "init", "-r", "LS::/tmp/x:0"],
        ["direct", "init", "-s", "LS:0:/tmp/x:0", "-Z", "512", "-A", "8M"],
        ["direct", "init", "-s", "LS:0:/tmp/x:0", "-A", "3M"],
        ["direct", "init", "-s", "LS:0:/tmp/x:0", "-o", "-1"],
        ["direct", "init", "-s", "LS:3:/tmp/x:0"],
        ["direct", "init", "-r", "LS:R:/tmp/x:0:5"],
        ["direct", "read_leader", "-s", "LS:0:/tmp/x:0"],
        ["direct", "init"],
        ["direct"],
        ["frobnicate"],
    ],
)
def test_bad_arguments(args: list[str], tmp_path: Path) -> None:
    stray = Path("/tmp/x")
    existed = stray.exists()
    fails(*args)
    assert stray.exists() == existed


def test_invalid_geometry_combination_names_both(leases: Path) -> None:
    error = fails("direct", "init", "-s", f"LS:0:{leases}:0", "-Z", "512", "-A", "8M")
    assert "512" in error and "8M" in error
