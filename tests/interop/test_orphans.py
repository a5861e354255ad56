"""Persistent leases and orphans (protocol 1.3, 2.5.4, 2.5.5), against both daemons.

A lease acquired with ``SANLK_RES_PERSISTENT`` (``sanlock client acquire -P 1``) outlives its
process: when the process exits it stays held on disk as an *orphan*. A new acquire of it is
refused (-EUCLEAN) unless it asks to adopt orphans (``-O 1``); ``release -O 1`` frees them and
answers how many. The same CLI steps run against sanlock's daemon and ours; the outputs must
match.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import SYSTEM_PYTHON, Daemon, daemon, join, lease_file, require_python_sanlock

__all__ = ["daemon"]

HOLD = "import sanlock, sys; sanlock.register(); print('r', flush=True); sys.stdin.read()"


@pytest.fixture
def lease(daemon: Daemon) -> Iterator[str]:
    require_python_sanlock()
    path = lease_file(Path(daemon.run_dir) / "leases", "R")
    join(daemon, path)
    yield f"LS:R:{path}:1048576"


class Holder:
    """A registered process that holds whatever is acquired for it until it is ended."""

    def __init__(self, daemon: Daemon) -> None:
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, "-c", HOLD],
            env=daemon.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "r\n"

    def end(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


def done_line(daemon: Daemon, *args: str) -> str:
    """The ``<action> done <rv>`` line of ``sanlock client ARGS``."""
    out = daemon.client(*args).stdout
    return next(line for line in out.splitlines() if " done " in line)


def resource_lines(daemon: Daemon) -> list[str]:
    """The ``r`` lines of ``sanlock client status``, pids replaced by ``PID``."""
    lines = [line for line in daemon.client("status").stdout.splitlines() if line.startswith("r ")]
    return [re.sub(r" p \d+\b", " p PID", line) for line in lines]


@pytest.mark.interop
def test_a_persistent_lease_outlives_its_process(daemon: Daemon, lease: str) -> None:
    first = Holder(daemon)
    pid = str(first.proc.pid)
    assert done_line(daemon, "acquire", "-r", lease, "-p", pid, "-P", "1") == "acquire done 0"
    first.end()
    assert resource_lines(daemon) == [f"r {lease}:1 p PID ORPHAN"]

    second = Holder(daemon)
    pid = str(second.proc.pid)
    assert done_line(daemon, "acquire", "-r", lease, "-p", pid) == "acquire done -117"  # EUCLEAN
    assert done_line(daemon, "acquire", "-r", lease, "-p", pid, "-O", "1") == "acquire done 0"
    assert resource_lines(daemon) == [f"r {lease}:1 p PID"]
    assert done_line(daemon, "release", "-r", lease, "-p", pid) == "release done 0"
    second.end()


@pytest.mark.interop
def test_release_orphans_frees_them(daemon: Daemon, lease: str) -> None:
    holder = Holder(daemon)
    assert done_line(daemon, "acquire", "-r", lease, "-p", str(holder.proc.pid), "-P", "1") == (
        "acquire done 0"
    )
    holder.end()
    other = Holder(daemon)
    released = done_line(daemon, "release", "-s", "LS", "-O", "1", "-p", str(other.proc.pid))
    assert released == "release done 1"  # one orphan queued for release
    other.end()
    again = Holder(daemon)
    assert done_line(daemon, "acquire", "-r", lease, "-p", str(again.proc.pid)) == (
        "acquire done 0"
    )
    again.end()
