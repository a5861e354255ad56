"""Loop devices for tests: real block devices made from a backing file, removed after.

Needs root and losetup. Outside CI a missing capability skips with the reason; in CI
(``CI=true``) it fails, so a machine that cannot run these tests is never silently green.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["ext4_mount", "frozen", "loop_device", "require"]


def require(ok: object, reason: str) -> None:
    """Skip (outside CI) or fail (in CI) when a capability the test needs is missing."""
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"missing capability in CI: {reason}")
    pytest.skip(reason)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)


@contextlib.contextmanager
def loop_device(backing: Path, *options: str) -> Iterator[str]:
    """Attach ``backing`` to a free loop device; yield its path; detach it afterwards."""
    require(os.geteuid() == 0, "loop devices need root")
    require(shutil.which("losetup"), "needs losetup (util-linux)")
    proc = _run("losetup", "--find", "--show", *options, str(backing))
    require(proc.returncode == 0, f"losetup {' '.join(options)} failed: {proc.stderr.strip()}")
    dev = proc.stdout.strip()
    try:
        yield dev
    finally:
        _run("losetup", "-d", dev)


def _must(*args: str) -> str:
    done = _run(*args)
    require(done.returncode == 0, f"{' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


@contextlib.contextmanager
def ext4_mount(
    backing: Path, mnt: Path, *, size: int = 64 << 20, sector_size: int = 512
) -> Iterator[Path]:
    """A fresh ext4 in ``backing`` (``size`` bytes) on a loop device with that logical sector
    size, mounted on ``mnt`` (made if missing); thawed, unmounted and detached afterwards."""
    for tool in ("mkfs.ext4", "mount", "umount", "fsfreeze"):
        require(shutil.which(tool), f"needs {tool}")
    with backing.open("wb") as f:
        f.truncate(size)
    mnt.mkdir(exist_ok=True)
    with loop_device(backing, "--sector-size", str(sector_size)) as dev:
        _must("mkfs.ext4", "-q", "-F", dev)
        _must("mount", dev, str(mnt))
        try:
            yield mnt
        finally:
            _run("fsfreeze", "--unfreeze", str(mnt))  # in case a test left it frozen
            if _run("umount", str(mnt)).returncode != 0:
                _run("umount", "-l", str(mnt))


@contextlib.contextmanager
def frozen(mnt: Path, guard: float) -> Iterator[None]:
    """Writes to the filesystem at ``mnt`` hang (fsfreeze) until the block ends, or after
    ``guard`` seconds whatever happens (a safety net: a test never leaves it frozen)."""
    _must("fsfreeze", "--freeze", str(mnt))
    timer = threading.Timer(guard, _run, ("fsfreeze", "--unfreeze", str(mnt)))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        _run("fsfreeze", "--unfreeze", str(mnt))
