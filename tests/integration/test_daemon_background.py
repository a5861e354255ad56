"""The daemon in the background (no ``-D``): the parent returns once the child listens, or
prints why it could not start; the child logs to its log file, not to the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


def daemon(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SANLOCK_RUN_DIR=str(run_dir))
    return subprocess.run(
        [sys.executable, "-m", "sync_manager", "daemon", "-w", "0", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def client(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SANLOCK_RUN_DIR=str(run_dir))
    return subprocess.run(
        [sys.executable, "-m", "sync_manager", "client", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_started_in_the_background_it_logs_to_its_file(tmp_path: Path) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "daemon.log"
    started = daemon(run_dir, "--log-file", str(log))
    try:
        assert (started.returncode, started.stdout, started.stderr) == (0, "", "")
        assert (run_dir / "sanlock.sock").exists()  # listening when the parent returned
        assert client(run_dir, "version").returncode == 0
        assert "sync_manager daemon started" in log.read_text()
        assert "no watchdog" in log.read_text()  # -w 0 is said loudly, in the log too
    finally:
        stopped = client(run_dir, "shutdown", "-f", "1")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    deadline = time.monotonic() + 10
    while "daemon stopped" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)  # polling: the stopping daemon says nothing else


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--log-file", "/nonexistent/dir/x.log"], "cannot open log file /nonexistent/dir/x.log"),
        (["-w", "/nonexistent/watchdog"], "start with -w 0 to run without a watchdog"),
    ],
)
def test_a_daemon_that_cannot_start_says_why_once(
    tmp_path: Path, args: list[str], message: str
) -> None:
    failed = daemon(tmp_path / "run", *args)
    assert failed.returncode == 1
    assert failed.stderr.count(message) == 1, failed.stderr
    assert not (tmp_path / "run" / "sanlock.sock").exists()
