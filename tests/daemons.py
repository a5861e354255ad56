"""Lease daemons for interop tests: the real sanlock and ours, each in its own run dir.

Both are driven the same way, so one test can run a stock client (python3-sanlock under
``/usr/bin/python3``, or ``sanlock client``) against each and compare what it sees:

* the daemon gets a fresh ``SANLOCK_RUN_DIR`` (short, under ``/tmp``: a socket path must fit
  in 108 bytes), ``SANLOCK_PRIVILEGED=0`` and the fixed host name :data:`HOST_NAME`;
* it is ready when ``<run_dir>/sanlock.sock`` accepts a connection;
* it is stopped with ``sanlock client shutdown -f 1`` (the protocol's own SHUTDOWN), then
  SIGTERM, then SIGKILL, each bounded in time, signals sent to its own process group only;
* its stdout and stderr (``-D``: the full debug log) go to ``<run_dir>/daemon.log``, kept in
  :attr:`Daemon.log_text` after the run dir is removed, for failure messages.

Outside CI a missing tool skips the test; in CI (``CI=true``) it fails (:func:`require`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import pytest

from tests.loopdev import require

__all__ = [
    "HOST_NAME",
    "KINDS",
    "SANLOCK",
    "SYSTEM_PYTHON",
    "Daemon",
    "SanlockDaemon",
    "SyncManagerDaemon",
    "daemon",
    "join",
    "lease_file",
    "make_daemon",
    "require_python_sanlock",
    "require_sanlock",
    "run_python_client",
]

SANLOCK = shutil.which("sanlock") or "/usr/sbin/sanlock"
SYSTEM_PYTHON = "/usr/bin/python3"
# One name for both daemons, so that outputs which show it (``daemon <name>`` in status, the
# delta lease's resource name) need no normalization.
HOST_NAME = "interop-host"
KINDS = ("sanlock", "sync_manager")

READY_SECONDS = 20.0  # sanlock is ready in ~0.1 s; bounded so a hung daemon fails the test
STOP_SECONDS = 15.0  # shutdown -f 1 releases every lockspace first (io_timeout 1: ~2 s each)


def require_sanlock() -> None:
    """The ``sanlock`` binary (Debian package ``sanlock``)."""
    require(Path(SANLOCK).exists(), "needs the sanlock binary (apt-get install sanlock)")


def require_python_sanlock() -> None:
    """python3-sanlock importable by the system Python."""
    probe = [SYSTEM_PYTHON, "-c", "import sanlock"]
    found = Path(SYSTEM_PYTHON).exists() and subprocess.run(probe, check=False).returncode == 0
    require(found, "needs python3-sanlock (/usr/bin/python3 -c 'import sanlock')")


class Daemon:
    """One lease daemon process listening on ``<run_dir>/sanlock.sock``."""

    kind: ClassVar[str]

    def __init__(self, host_name: str = HOST_NAME) -> None:
        self.host_name = host_name
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"sm{self.kind[:2]}", dir="/tmp"))
        self.socket_path = self.run_dir / "sanlock.sock"
        self.log_path = self.run_dir / "daemon.log"
        self.log_text = ""
        self.proc: subprocess.Popen[bytes] | None = None

    # --- what differs between the kinds ---

    def argv(self) -> list[str]:
        raise NotImplementedError

    # --- environment for the daemon and its clients ---

    @property
    def env(self) -> dict[str, str]:
        """The environment for the daemon and for every client talking to it."""
        return dict(os.environ, SANLOCK_RUN_DIR=str(self.run_dir), SANLOCK_PRIVILEGED="0")

    # --- life cycle ---

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so a fallback kill gets helpers
            )
        deadline = time.monotonic() + READY_SECONDS
        while not self._accepts():
            if self.proc.poll() is not None:
                self.stop()
                self._fail(f"{self.kind} daemon exited with {self.proc.returncode} at start")
            if time.monotonic() > deadline:
                self.stop()
                self._fail(f"{self.kind} daemon not listening after {READY_SECONDS} s")
            time.sleep(0.02)  # polling for the socket; there is no readiness notification

    def _accepts(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(self.socket_path))
            except OSError:
                return False
        return True

    def stop(self) -> None:
        """Stop the daemon (shutdown -f 1, then signals) and remove the run dir."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                self.client("shutdown", "-f", "1", timeout=STOP_SECONDS)
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=STOP_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # helpers the daemon forked (sanlock's helper process) go with its process group
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.log_text = self.log()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> Daemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        """The daemon's output so far (or, after :meth:`stop`, all of it)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return self.log_text

    def _fail(self, message: str) -> NoReturn:
        pytest.fail(f"{message}\n--- {self.kind} daemon log ---\n{self.log()}")

    # --- clients ---

    def client(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``sanlock client ARGS...`` (the real CLI) against this daemon; never raises on rc."""
        return subprocess.run(
            [SANLOCK, "client", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def run_python(self, script: Path, *args: str, timeout: float = 120.0) -> Any:
        """Run a python3-sanlock ``script`` with ``/usr/bin/python3``; its stdout, as JSON."""
        return run_python_client(script, *args, env=self.env, timeout=timeout, daemon=self)


class SanlockDaemon(Daemon):
    """The real sanlock daemon (Debian's sanlock 3.8.5).

    ``-D`` stays in the foreground and logs everything to stderr; ``-w 0`` no watchdog (no
    wdmd here); ``-l 0`` no mlockall and ``SANLOCK_PRIVILEGED=0`` no setrlimit/RT priority,
    which need CAP_SYS_RESOURCE (spec/libvirt-e2e.md); ``-L -1 -S -1`` no log file in
    /var/log and no syslog; ``-U root -G root`` so the socket is not chowned to a ``sanlock``
    user where one exists; ``-e`` the fixed host name.
    """

    kind = "sanlock"

    def argv(self) -> list[str]:
        return [
            SANLOCK, "daemon", "-D", "-w", "0", "-l", "0", "-L", "-1", "-S", "-1",
            "-U", "root", "-G", "root", "-e", self.host_name,
        ]  # fmt: skip


class SyncManagerDaemon(Daemon):
    """Our daemon, ``python -m sync_manager daemon``, with the sanlock options it accepts."""

    kind = "sync_manager"

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "sync_manager", "daemon", "-D", "-w", "0", "-e", self.host_name,
        ]  # fmt: skip


def make_daemon(kind: str, host_name: str = HOST_NAME) -> Daemon:
    """A (not yet started) daemon of ``kind``: ``"sanlock"`` or ``"sync_manager"``."""
    if kind == "sanlock":
        require_sanlock()
        return SanlockDaemon(host_name)
    if kind == "sync_manager":
        return SyncManagerDaemon(host_name)
    raise ValueError(f"unknown daemon kind {kind!r}")


@pytest.fixture(params=KINDS)
def daemon(request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """A running daemon of each kind (ids ``sanlock``, ``sync_manager``), stopped after."""
    with make_daemon(request.param) as running:
        yield running


def run_python_client(
    script: Path,
    *args: str,
    env: Mapping[str, str],
    timeout: float = 120.0,
    daemon: Daemon | None = None,
) -> Any:
    """Run ``/usr/bin/python3 SCRIPT ARGS...`` in ``env``; parse its stdout as one JSON document.

    A non-zero exit or unparsable output fails the test with the script's stderr (and the
    daemon's log, when given).
    """
    require_python_sanlock()
    done = subprocess.run(
        [SYSTEM_PYTHON, str(script), *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    context = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    if daemon is not None:
        context += f"\n--- {daemon.kind} daemon log ---\n{daemon.log()}"
    if done.returncode != 0:
        pytest.fail(f"{script.name} exited with {done.returncode}\n{context}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        pytest.fail(f"{script.name} printed no JSON document ({exc})\n{context}")


def lease_file(path: Path, *resources: str, size: int = 2 << 20) -> Path:
    """A sparse lease file with lockspace ``LS`` (io_timeout 1) at 0 and each of
    ``resources`` in the next MiBs, laid out by ``sanlock direct init``."""
    with path.open("wb") as f:
        f.truncate(size)
    inits = [["-s", f"LS:0:{path}:0", "-o", "1"]]
    inits += [["-r", f"LS:{name}:{path}:{(i + 1) << 20}"] for i, name in enumerate(resources)]
    for args in inits:
        done = subprocess.run([SANLOCK, "direct", "init", *args], capture_output=True, check=False)
        assert done.returncode == 0, done
    return path


def join(daemon: Daemon, path: Path, host_id: int = 1) -> None:
    """``daemon`` joins the lockspace ``LS`` of ``path`` as ``host_id`` (io_timeout 1)."""
    added = daemon.client("add_lockspace", "-s", f"LS:{host_id}:{path}:0", "-o", "1")
    assert added.returncode == 0, added.stdout + daemon.log()
