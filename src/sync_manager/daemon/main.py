"""Starting and stopping the daemon process: run dir, pid file lock, background mode, signals.

One daemon per run dir: ``<run_dir>/sanlock.pid`` is locked (fcntl) for the daemon's life, as
sanlock does, so our daemon and a real sanlock daemon never share a socket either. In the
background (no ``-D``) the process forks first thing, before any thread exists, and the parent
exits only once the child listens (or reports why it could not).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Callable

from sync_manager.daemon import logs
from sync_manager.daemon.config import Config
from sync_manager.daemon.server import Server
from sync_manager.daemon.service import Daemon, Settings
from sync_manager.errors import SyncManagerError, UsageError
from sync_manager.supervisor.watchdog import open_watchdog

__all__ = ["PID_FILE", "run"]

log = logging.getLogger("sync_manager.daemon")

PID_FILE = "sanlock.pid"


def run(config: Config, *, foreground: bool) -> int:
    """Run the daemon until it is shut down; the exit status."""
    _make_run_dir(config.run_dir)
    _limit_malloc_arenas()
    ready: Callable[[str], None] = lambda _message: None  # noqa: E731
    if not foreground:
        ready = _daemonize()
    try:
        pid_fd = _lock_pid_file(config.run_dir)
    except SyncManagerError as err:
        ready(str(err))
        raise
    try:
        logs.setup(
            level=getattr(logging, config.log_level.upper()),
            to_stderr=foreground,
            log_file="" if foreground else config.log_file,
        )
    except OSError as err:
        message = f"cannot open log file {config.log_file}: {err.strerror}"
        ready(message)
        raise UsageError(message) from None
    try:
        watchdog = open_watchdog(config.watchdog, logger=logging.getLogger("sync_manager.watchdog"))
    except SyncManagerError as err:
        ready(f"{err} (start with -w 0 to run without a watchdog)")
        raise
    settings = Settings(
        run_dir=config.run_dir,
        host_name=config.host_name,
        io_timeout=config.io_timeout,
        kill_grace=config.kill_grace,
        workers=config.max_worker_threads,
    )
    try:
        asyncio.run(_serve(settings, config, Daemon(settings, watchdog), ready))
    finally:
        os.close(pid_fd)
    return 0


async def _serve(
    settings: Settings, config: Config, daemon: Daemon, ready: Callable[[str], None]
) -> None:
    server = Server(
        daemon, settings.run_dir, socket_group=config.socket_group, admin_group=config.admin_group
    )
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, daemon, sig)
    ticker = asyncio.create_task(daemon.tick_forever(), name="watchdog tick")
    log.info(
        "sync_manager daemon started: host name %s, run dir %s, io_timeout %d, watchdog %s",
        settings.host_name,
        settings.run_dir,
        settings.io_timeout,
        config.watchdog,
    )
    ready("")
    try:
        await daemon.stopped.wait()
    finally:
        ticker.cancel()
        await server.close()
        daemon.close()
        log.info("sync_manager daemon stopped")


def _on_signal(daemon: Daemon, sig: int) -> None:
    if daemon.shutdown(force=False):
        log.info("%s: shutting down", signal.Signals(sig).name)
    else:
        log.warning(
            "%s ignored: %d lockspace(s) joined; remove them first or use "
            "'sync_manager client shutdown -f 1'",
            signal.Signals(sig).name,
            len(daemon.lockspaces),
        )


M_ARENA_MAX = -8  # glibc's mallopt parameter


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Let glibc's malloc use at most ``arenas`` arenas, before any thread exists.

    By default each thread that allocates gets an arena of its own (up to 8 per core), and
    the daemon's disk workers each keep one, megabytes apiece, for the daemon's life. The
    daemon allocates little and never in a hot loop, so two arenas cost nothing measurable.
    Without glibc (or mallopt) nothing is done.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        pass


def _make_run_dir(run_dir: str) -> None:
    old = os.umask(0o002)
    try:
        os.makedirs(run_dir, mode=0o775, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create run dir {run_dir}: {err.strerror}") from None
    finally:
        os.umask(old)


def _lock_pid_file(run_dir: str) -> int:
    """Lock ``<run_dir>/sanlock.pid`` and write our pid in it; the fd to keep open."""
    path = os.path.join(run_dir, PID_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        with contextlib.suppress(OSError):
            other = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise UsageError(
            f"a daemon (pid {other or '?'}) already runs with run dir {run_dir} "
            f"({path} is locked); set SANLOCK_RUN_DIR for another one"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _daemonize() -> Callable[[str], None]:
    """Fork into the background; the child returns a function reporting readiness ("" ok,
    else an error message) to the parent, which exits with 0 or 1 after printing it."""
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read().decode(errors="replace")
        if message.startswith("ok"):
            os._exit(0)
        print(f"sync_manager: daemon failed to start: {message or 'exited'}", file=sys.stderr)
        os._exit(1)
    os.close(read_end)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)

    def ready(message: str) -> None:
        nonlocal write_end
        if write_end < 0:
            return
        os.write(write_end, (message or "ok").encode())
        os.close(write_end)
        write_end = -1
        # The parent prints the outcome; from now on the log goes to the log file and syslog.
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)

    return ready
