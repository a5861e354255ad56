"""Signals and killpath programs for real processes: what ``policy.py`` decides, done.

sanlock sends its signals and runs killpaths from a forked helper process (protocol 8.2); we do
both from the daemon, which never waits for them:

* :class:`ProcessHandle` is a registered client's process. It holds a pidfd (Linux 5.3+,
  ``os.pidfd_open``), opened when the client registers, so that a signal sent later can never hit
  another process that reused the pid; without pidfds it falls back to ``kill(2)`` on the pid.
* :func:`send_signal` signals a bare pid; a process that is gone is not an error.
* :func:`run_killpath` starts the killpath program (``subprocess.Popen``: fork and exec, no wait
  for the program) in a new session, stdin and stdout on /dev/null, all other descriptors
  closed; :class:`Reaper` collects the exit statuses from the daemon's periodic tick.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import IO

from sync_manager.errors import UsageError
from sync_manager.supervisor.errors import ProcessGone, SignalError
from sync_manager.supervisor.killpath import killpath_argv

__all__ = [
    "Finished",
    "ProcessHandle",
    "Reaper",
    "StderrTarget",
    "pidfd_supported",
    "run_killpath",
    "send_signal",
]

log = logging.getLogger("sync_manager.supervisor")

StderrTarget = int | IO[bytes] | None  # what subprocess accepts for stderr; None: inherit ours


def pidfd_supported() -> bool:
    """Whether this Python and kernel have pidfds (``pidfd_open`` and ``pidfd_send_signal``)."""
    if not (hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:
        return False
    os.close(fd)
    return True


def send_signal(pid: int, sig: int) -> bool:
    """Send ``sig`` to ``pid``; False if there is no such process (ESRCH), True if sent.

    A zombie still "receives" it (True). Other failures (EPERM) raise :class:`SignalError`.
    Prefer :meth:`ProcessHandle.signal`, which cannot hit a process that reused the pid.
    """
    if pid <= 0:
        raise UsageError(f"refusing to signal pid {pid} (a process group or every process)")
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    except OSError as e:
        raise SignalError(pid, sig, e.errno or errno.EPERM) from e
    return True


def _exists(pid: int) -> bool:
    """Whether ``pid`` exists (perhaps as a zombie, perhaps not ours to signal)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _proc_state(pid: int) -> str | None:
    """The state letter in /proc/<pid>/stat (R, S, D, Z, ...), or None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # "pid (comm) S ...": comm may contain spaces and parentheses; the last ")" ends it.
    rest = stat[stat.rfind(b")") + 1 :].split()
    return rest[0].decode("ascii", "replace") if rest else None


class ProcessHandle:
    """A process to watch and signal, by pidfd when the system has them.

    Open it with :meth:`open` as soon as the pid is known (at REGISTER, from SO_PEERCRED), keep
    it while the client is registered, and :meth:`close` it when the client goes. It is also a
    context manager.
    """

    __slots__ = ("_closed", "_pid", "_pidfd")

    def __init__(self, pid: int, pidfd: int | None) -> None:
        """Wrap ``pid`` and its pidfd (None: plain pid). Use :meth:`open` instead."""
        if pid <= 0:
            raise UsageError(f"process handle pid must be positive, not {pid}")
        self._pid = pid
        self._pidfd = pidfd
        self._closed = False

    @classmethod
    def open(cls, pid: int, *, use_pidfd: bool | None = None) -> ProcessHandle:
        """Open a handle on ``pid``; :class:`ProcessGone` if it does not exist.

        ``use_pidfd``: None uses a pidfd when the system has them; False never (tests, old
        kernels); True requires one.
        """
        if pid <= 0:
            raise UsageError(f"process handle pid must be positive, not {pid}")
        want = use_pidfd
        if want is None:
            want = hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal")
        if want:
            try:
                return cls(pid, os.pidfd_open(pid))
            except ProcessLookupError:
                raise ProcessGone(pid) from None
            except OSError as e:
                if use_pidfd or e.errno != errno.ENOSYS:
                    raise
                # No pidfd support in this kernel: fall back to the pid.
        if not _exists(pid):
            raise ProcessGone(pid)
        return cls(pid, None)

    @property
    def pid(self) -> int:
        """The process id."""
        return self._pid

    @property
    def uses_pidfd(self) -> bool:
        """Whether signals go through a pidfd (immune to pid reuse)."""
        return self._pidfd is not None

    def _check_open(self) -> None:
        if self._closed:
            raise UsageError(f"process handle for pid {self._pid} is closed")

    def alive(self) -> bool:
        """Whether the process is still running (a zombie is not: it has exited)."""
        self._check_open()
        if self._pidfd is not None:
            poller = select.poll()
            poller.register(self._pidfd, select.POLLIN)
            return not poller.poll(0)  # a pidfd is readable once its process has exited
        return _exists(self._pid) and _proc_state(self._pid) not in ("Z", "X")

    def signal(self, sig: int) -> bool:
        """Send ``sig``; False if the process is gone, True if sent (see :func:`send_signal`)."""
        self._check_open()
        if self._pidfd is None:
            return send_signal(self._pid, sig)
        try:
            signal.pidfd_send_signal(self._pidfd, sig)
        except ProcessLookupError:
            return False
        except OSError as e:
            raise SignalError(self._pid, sig, e.errno or errno.EPERM) from e
        return True

    def close(self) -> None:
        """Release the pidfd. Idempotent."""
        if not self._closed and self._pidfd is not None:
            os.close(self._pidfd)
        self._closed = True

    def __enter__(self) -> ProcessHandle:
        """Return self."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the handle."""
        self.close()

    def __repr__(self) -> str:
        """Show the pid and how it is held."""
        how = "closed" if self._closed else ("pidfd" if self._pidfd is not None else "pid")
        return f"ProcessHandle(pid={self._pid}, {how})"


def run_killpath(
    path: str,
    args: str,
    pid: int,
    *,
    append_pid: bool,
    stderr: StderrTarget = None,
    reaper: Reaper | None = None,
) -> subprocess.Popen[bytes]:
    """Start the killpath program for client ``pid`` and return at once (no wait for it).

    The argv is :func:`~sync_manager.supervisor.killpath.killpath_argv` (``path`` looked up in
    PATH if it has no slash, as ``execvp``); the pid is appended when ``append_pid``. The
    program gets a new session, /dev/null for stdin and stdout, ``stderr`` for stderr (None:
    the daemon's), and no other descriptor. Only the fork and exec are waited for, so a program
    that cannot be run raises ``OSError`` here (FileNotFoundError, PermissionError; or
    BlockingIOError if the fork failed for lack of resources). Give a ``reaper`` (or keep the
    Popen and poll it) so that the finished program does not stay a zombie.
    """
    argv = killpath_argv(path, args, pid if append_pid else None)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        close_fds=True,
        start_new_session=True,
    )
    if reaper is not None:
        reaper.add(proc, f"killpath for pid {pid}")
    return proc


@dataclass(frozen=True, slots=True)
class Finished:
    """A child that has exited and been reaped."""

    pid: int
    argv: tuple[str, ...]
    returncode: int  # negative: killed by that signal
    what: str


class Reaper:
    """Children (killpath programs) started without waiting, reaped later without blocking.

    Call :meth:`reap` from a periodic tick; each exit is logged once (INFO when it succeeded,
    WARNING otherwise) and returned.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        """An empty reaper logging to ``logger`` (``sync_manager.supervisor`` by default)."""
        self._children: list[tuple[subprocess.Popen[bytes], str]] = []
        self._log = logger or log

    def add(self, proc: subprocess.Popen[bytes], what: str) -> None:
        """Watch ``proc``; ``what`` names it in the log."""
        self._children.append((proc, what))

    def __len__(self) -> int:
        """How many children have not been reaped yet."""
        return len(self._children)

    @property
    def pids(self) -> list[int]:
        """The pids of the children not reaped yet."""
        return [p.pid for p, _ in self._children]

    def reap(self) -> list[Finished]:
        """Reap every child that has exited, without blocking."""
        done: list[Finished] = []
        running: list[tuple[subprocess.Popen[bytes], str]] = []
        for proc, what in self._children:
            rc = proc.poll()
            if rc is None:
                running.append((proc, what))
                continue
            argv = tuple(str(a) for a in proc.args) if isinstance(proc.args, list) else ()
            done.append(Finished(proc.pid, argv, rc, what))
            level = logging.INFO if rc == 0 else logging.WARNING
            self._log.log(level, "%s: program %d exited with status %d", what, proc.pid, rc)
        self._children = running
        return done

    def wait_all(self, timeout: float) -> list[Finished]:
        """Reap children until none is left or ``timeout`` seconds have passed (blocking).

        For shutdown and tests; the daemon's loop uses :meth:`reap`.
        """
        deadline = time.monotonic() + timeout
        done = self.reap()
        while self._children and time.monotonic() < deadline:
            # Poll every 10 ms: children started here are not ours to waitpid(-1) for.
            time.sleep(0.01)
            done.extend(self.reap())
        return done
