"""Lock value blocks (protocol 2.5.24), through python3-sanlock, against both daemons.

A lease acquired with ``lvb=True`` carries one sector of data, kept after the hosts' blocks:
``set_lvb`` changes the holder's copy, the release writes it back, and the next holder that
acquires with ``lvb=True`` reads it. The same script runs against sanlock's daemon and ours;
its record must be identical, and right.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.daemons import Daemon, daemon, join, lease_file, require_python_sanlock

__all__ = ["daemon"]

SCRIPT = """
    import json, sanlock, sys
    path = sys.argv[1]
    disks = [(path, 1048576)]
    out = []
    def attempt(name, fn):
        try:
            value = fn()
            out.append([name, "ok", value.hex() if isinstance(value, bytes) else value])
        except sanlock.SanlockException as e:
            out.append([name, "error", e.errno])
    fd = sanlock.register()
    attempt("get, not held", lambda: sanlock.get_lvb(b"LS", b"R", disks, 8))
    attempt("acquire lvb", lambda: sanlock.acquire(b"LS", b"R", disks, slkfd=fd, lvb=True))
    attempt("get, fresh", lambda: sanlock.get_lvb(b"LS", b"R", disks, 8))
    attempt("set", lambda: sanlock.set_lvb(b"LS", b"R", disks, b"hello"))
    attempt("get, set", lambda: sanlock.get_lvb(b"LS", b"R", disks, 8))
    attempt("set, too big", lambda: sanlock.set_lvb(b"LS", b"R", disks, b"x" * 600))
    attempt("release", lambda: sanlock.release(b"LS", b"R", disks, slkfd=fd))
    attempt("acquire, no lvb", lambda: sanlock.acquire(b"LS", b"R", disks, slkfd=fd))
    attempt("get, no lvb", lambda: sanlock.get_lvb(b"LS", b"R", disks, 8))
    attempt("release again", lambda: sanlock.release(b"LS", b"R", disks, slkfd=fd))
    other = sanlock.register()
    attempt("next acquire lvb", lambda: sanlock.acquire(b"LS", b"R", disks, slkfd=other, lvb=True))
    attempt("next get", lambda: sanlock.get_lvb(b"LS", b"R", disks, 8))
    attempt("next release", lambda: sanlock.release(b"LS", b"R", disks, slkfd=other))
    print(json.dumps(out))
"""

EXPECTED: list[list[Any]] = [
    ["get, not held", "error", 2],  # ENOENT
    ["acquire lvb", "ok", None],
    ["get, fresh", "ok", "00" * 8],
    ["set", "ok", None],
    ["get, set", "ok", b"hello".hex() + "00" * 3],
    ["set, too big", "error", 7],  # E2BIG: more than the sector
    ["release", "ok", None],
    ["acquire, no lvb", "ok", None],
    ["get, no lvb", "error", 22],  # EINVAL: held without its LVB
    ["release again", "ok", None],
    ["next acquire lvb", "ok", None],
    ["next get", "ok", b"hello".hex() + "00" * 3],  # written back at the release
    ["next release", "ok", None],
]


@pytest.mark.interop
def test_lock_value_block(daemon: Daemon, tmp_path: Path) -> None:
    require_python_sanlock()
    path = lease_file(Path(daemon.run_dir) / "leases", "R")
    join(daemon, path)
    script = tmp_path / "lvb.py"
    script.write_text(textwrap.dedent(SCRIPT))
    record = daemon.run_python(script, str(path))
    assert record == EXPECTED, f"{daemon.kind}: {record}\n{daemon.log()[-3000:]}"
