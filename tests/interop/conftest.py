"""Fixtures for tests against the real sanlock (Debian's sanlock 3.8.5).

In CI (``CI=true``) a missing sanlock fails the run; elsewhere the tests are skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

SANLOCK = shutil.which("sanlock") or next(
    (p for p in ("/usr/sbin/sanlock",) if Path(p).exists()), None
)

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def sanlock() -> Run:
    """Run ``sanlock ARGS...``; returns the completed process (never raises on failure)."""
    if SANLOCK is None:
        if os.environ.get("CI"):
            pytest.fail("sanlock is not installed (apt-get install sanlock)")
        pytest.skip("sanlock is not installed")
    path = SANLOCK

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [path, *args], check=False, capture_output=True, text=True, timeout=120
        )

    return run


@pytest.fixture(scope="session")
def ours() -> Run:
    """Run ``sync_manager ARGS...`` as a user would (a separate process)."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sync_manager", *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run


@pytest.fixture
def lease_file(tmp_path: Path) -> Callable[[int], Path]:
    """Make a sparse lease file of the given size in MiB."""

    def make(mib: int = 16) -> Path:
        path = tmp_path / f"leases-{mib}M.img"
        with path.open("wb") as f:
            f.truncate(mib * 1024 * 1024)
        return path

    return make
