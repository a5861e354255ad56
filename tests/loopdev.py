"""Loop devices for tests: real block devices made from a backing file, removed after.

Needs root and losetup. Outside CI a missing capability skips with the reason; in CI
(``CI=true``) it fails, so a machine that cannot run these tests is never silently green.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["loop_device", "require"]


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
