"""Our daemon as a real subprocess, for the integration tests of ``daemon/``.

:class:`DaemonProcess` is tests/daemons.py's :class:`SyncManagerDaemon` (a fresh, short run
dir under /tmp, ``SANLOCK_RUN_DIR``, ``-D -w 0 -e NAME``, its output in
``<run_dir>/daemon.log``, stopped with a forced SHUTDOWN then signals) with what these tests
add: extra daemon options (``-g 2``), our own CLI for ``client`` commands (so no sanlock
binary is needed), our Python client as :attr:`DaemonProcess.api`, a crash (SIGKILL) and a
restart on the same run dir, and failures that carry the daemon's log. :func:`daemon_process`
prints the log to the test's captured stderr (pytest shows it with a failing test) and fails
the test if the daemon logged a Python traceback.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

from sync_manager.client import Client, HostInfo, SanlockError
from tests.daemons import SyncManagerDaemon

__all__ = [
    "HOLDER",
    "IO_TIMEOUT",
    "LS",
    "LS_OFFSET",
    "DaemonProcess",
    "MiB",
    "daemon_process",
    "hosts",
    "lease_file",
    "resource_string",
    "start_holder",
    "stop_process",
]

MiB = 1 << 20
LS = "LS"
LS_OFFSET = 0
IO_TIMEOUT = 1  # joining takes 2N = 2 s; fail (kill) deadline 8N = 8 s

CLI_SECONDS = 15.0  # shutdown -f 1 leaves every lockspace first (~0.2 s each here)


class DaemonProcess(SyncManagerDaemon):
    """One ``sync_manager daemon`` process on its own run dir."""

    def __init__(self, host_name: str = "host1", extra: Sequence[str] = ()) -> None:
        super().__init__(host_name)
        self.extra = tuple(extra)
        self.api = Client(self.run_dir, timeout=30.0)
        self.earlier_logs = ""  # the output of the processes before a restart

    def argv(self) -> list[str]:
        return [*super().argv(), *self.extra]

    def client(self, *args: str, timeout: float = CLI_SECONDS) -> subprocess.CompletedProcess[str]:
        """``sync_manager client ARGS...`` (our CLI) against this daemon; never raises on rc."""
        return subprocess.run(
            [sys.executable, "-m", "sync_manager", "client", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @property
    def alive(self) -> bool:
        """Whether the daemon process still runs."""
        return self.proc is not None and self.proc.poll() is None

    def crash(self) -> None:
        """SIGKILL the daemon and reap it; its run dir stays, for :meth:`restart`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(CLI_SECONDS)

    def restart(self) -> None:
        """Start a new daemon process on the same run dir (keeping the old output)."""
        self.earlier_logs += self.log()
        self.start()

    def all_logs(self) -> str:
        """Everything every process of this daemon wrote."""
        return self.earlier_logs + self.log()

    def fail(self, message: str) -> NoReturn:
        """Fail the test with ``message`` and the daemon's log."""
        pytest.fail(f"{message}\n--- daemon log ---\n{self.all_logs()}", pytrace=False)

    def check(self, ok: object, message: str) -> None:
        """Fail with the daemon's log unless ``ok``."""
        if not ok:
            self.fail(message)

    def wait_log(self, text: str, timeout: float) -> None:
        """Wait until ``text`` appears in the log (fail after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if time.monotonic() > deadline:
                self.fail(f"{text!r} not in the daemon log after {timeout} s")
            time.sleep(0.05)  # polling the log file


@contextlib.contextmanager
def daemon_process(host_name: str = "host1", extra: Sequence[str] = ()) -> Iterator[DaemonProcess]:
    """A started daemon; stopped after, and its log checked for Python tracebacks."""
    daemon = DaemonProcess(host_name, extra)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        log = daemon.all_logs()
        print(f"--- daemon log ({daemon.log_path}) ---\n{log}", file=sys.stderr)
    if "Traceback" in log:
        pytest.fail(f"the daemon logged a Python traceback:\n{log}", pytrace=False)


def hosts(api: Client, host_id: int = 0, timeout: float = 4 * IO_TIMEOUT) -> list[HostInfo]:
    """GET_HOSTS of LS, waiting out its -EAGAIN (as sanlock, the daemon reports the hosts only
    after its first renewal, 2N after the join)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return api.get_hosts(LS, host_id)
        except SanlockError as err:
            if err.code != -errno.EAGAIN or time.monotonic() > deadline:
                raise
        time.sleep(0.05)  # polling: nothing announces the first renewal


def lease_file(path: Path, size: int = 16 * MiB) -> Path:
    """A sparse lease file of ``size`` bytes."""
    with path.open("wb") as f:
        f.truncate(size)
    return path


def resource_string(path: Path, index: int, name: str | None = None) -> str:
    """``LS:NAME:PATH:OFFSET`` of resource ``index`` (at ``index`` MiB; 0 is the lockspace)."""
    assert index >= 1
    return f"{LS}:{name or f'r{index}'}:{path}:{index * MiB}"


# A lease holder: registers, acquires the resource in argv[1], prints "acquired", sleeps.
# argv[2] "ignore-term" catches SIGTERM (printing "SIGTERM <monotonic time>") and carries on.
# argv[3:], if any, is a killpath program and its args, registered with the pid appended.
HOLDER = """
import signal, sys, time
from sync_manager.client import Client

def on_term(signum, frame):
    print(f"SIGTERM {time.monotonic():.3f}", flush=True)

if sys.argv[2] == "ignore-term":
    signal.signal(signal.SIGTERM, on_term)
registration = Client().register()
if len(sys.argv) > 3:
    registration.killpath(sys.argv[3], sys.argv[4:], append_pid=True)
registration.acquire(sys.argv[1])
print("acquired", flush=True)
while True:
    time.sleep(3600)
"""


def start_holder(
    daemon: DaemonProcess,
    resource: str,
    *,
    ignore_term: bool = False,
    killpath: Sequence[str] = (),
) -> subprocess.Popen[str]:
    """A holder process of ``resource``, once it has acquired it (fail if it could not);
    ``killpath``: a program and its args, registered with the holder's pid appended."""
    mode = "ignore-term" if ignore_term else "normal"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, resource, mode, *killpath],
        env=daemon.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()  # blocks until the acquire is done (or it exits)
    if line != "acquired":
        _, err = stop_process(proc)
        daemon.fail(f"holder of {resource} did not acquire it: {line!r}\n{err}")
    return proc


def stop_process(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGKILL ``proc`` (if still running), reap it, close its pipes; its remaining output."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    out, err = proc.communicate(timeout=10)
    return out or "", err or ""
