"""The daemon's configuration: defaults, then the TOML config file, then the command line.

``/etc/sync_manager/sync_manager.conf`` (TOML) may hold any of::

    host_name = "host1.example"   # default: stable, derived from /etc/machine-id and run dir
    io_timeout = 10               # seconds; every lease timing derives from it
    kill_grace = 40               # seconds of killpath/SIGTERM before SIGKILL
    watchdog = "/dev/watchdog"    # or "wdmd", or "none" (no host reset: unsafe, loud)
    socket_group = "sanlock"      # group of the 0660 socket (who may connect)
    admin_group = "sanlock"       # members may act on any pid and run admin commands
    max_worker_threads = 32
    log_level = "info"
    log_file = "/var/log/sync_manager.log"   # in the background (no -D); "" for none
    default_lockspace = "LS:1:/dev/vg/leases:0"  # for `sync_manager daemon -l ... -c CMD`

A missing default file is fine; a file named with ``--config`` must exist. Unknown keys and
wrong types are errors that name the file and the key.
"""

from __future__ import annotations

import os
import socket
import tomllib
import uuid
from dataclasses import dataclass, fields, replace
from typing import Any

from sync_manager import leasestr
from sync_manager.errors import UsageError
from sync_manager.timeouts import DEFAULT_IO_TIMEOUT, DEFAULT_KILL_GRACE, WATCHDOG_FIRE_TIMEOUT

__all__ = ["DEFAULT_CONFIG", "DEFAULT_RUN_DIR", "Config", "load", "stable_host_name"]

DEFAULT_CONFIG = "/etc/sync_manager/sync_manager.conf"
DEFAULT_RUN_DIR = "/run/sanlock"
DEFAULT_LOG_FILE = "/var/log/sync_manager.log"
HOST_NAME_MAX = 47  # bytes of a host name that fit on disk


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the daemon is started with."""

    run_dir: str = DEFAULT_RUN_DIR
    host_name: str = ""
    io_timeout: int = DEFAULT_IO_TIMEOUT
    kill_grace: int = DEFAULT_KILL_GRACE
    watchdog: str = "/dev/watchdog"
    socket_group: str = ""
    admin_group: str = ""
    max_worker_threads: int = 32
    log_level: str = "info"
    log_file: str = DEFAULT_LOG_FILE
    default_lockspace: str = ""  # LS:HOST_ID:PATH:OFFSET the wrapper (-c) uses without -s

    def __post_init__(self) -> None:
        if self.io_timeout < 1:
            raise UsageError(f"io_timeout must be at least 1 second, not {self.io_timeout}")
        if not 0 <= self.kill_grace <= WATCHDOG_FIRE_TIMEOUT:
            # Beyond it, SIGKILL would come after the watchdog resets the host (8N + 60).
            raise UsageError(
                f"kill_grace must be 0..{WATCHDOG_FIRE_TIMEOUT} seconds, not {self.kill_grace}"
            )
        if not 1 <= self.max_worker_threads <= 1024:
            raise UsageError("max_worker_threads must be 1..1024")
        if len(self.host_name.encode()) > HOST_NAME_MAX:
            raise UsageError(f"host name longer than {HOST_NAME_MAX} bytes: {self.host_name!r}")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise UsageError(f"log_level must be debug, info, warning or error: {self.log_level}")
        if self.default_lockspace:
            leasestr.parse_lockspace(self.default_lockspace)  # LeaseStringError if invalid


def load(path: str | None, overrides: dict[str, Any]) -> Config:
    """Defaults, then the file at ``path`` (the default file if None), then ``overrides``
    (command-line values that were given; None values are ignored)."""
    config = Config(run_dir=os.environ.get("SANLOCK_RUN_DIR") or DEFAULT_RUN_DIR)
    file_path = path or DEFAULT_CONFIG
    if path is not None or os.path.exists(file_path):
        config = replace(config, **_read(file_path))
    given = {k: v for k, v in overrides.items() if v is not None}
    config = replace(config, **given)
    if not config.host_name:
        config = replace(config, host_name=stable_host_name(config.run_dir))
    return config


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except OSError as err:
        raise UsageError(f"cannot read config file {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"config file {path}: {err}") from None
    allowed = {f.name: f for f in fields(Config) if f.name != "run_dir"}
    for key, value in data.items():
        if key not in allowed:
            raise UsageError(f"config file {path}: unknown key {key!r}")
        want = int if allowed[key].type in ("int", int) else str
        if not isinstance(value, want) or isinstance(value, bool):
            raise UsageError(f"config file {path}: {key} must be a {want.__name__}")
    return data


def stable_host_name(run_dir: str) -> str:
    """A host name that stays the same across restarts, so that a restarted daemon re-joins
    with the fast path (2N seconds) and frees its old leases at once (sanlock's default is a
    new random name per start, which costs host_dead seconds per restart).

    A UUID derived from /etc/machine-id (the hostname if missing) and the run dir (several
    daemons with their own run dirs are several hosts), then the node name, as sanlock's
    ``<uuid>.<nodename>``.
    """
    try:
        with open("/etc/machine-id", encoding="ascii") as f:
            machine = f.read().strip()
    except OSError:
        machine = ""
    node = socket.gethostname() or "localhost"
    ident = uuid.uuid5(uuid.NAMESPACE_URL, f"sync_manager:{machine or node}:{run_dir}")
    return f"{ident}.{node}"[:HOST_NAME_MAX]
