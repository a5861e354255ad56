"""``sync_manager daemon``: run the host daemon (sanlock's ``sanlock daemon``)."""

from __future__ import annotations

import argparse
from typing import Any

from sync_manager.cli import wrapper
from sync_manager.daemon import config as daemon_config
from sync_manager.daemon import main as daemon_main

__all__ = ["add_parser"]

WATCHDOG_HELP = (
    "the host watchdog: 1 or wdmd (sanlock's wdmd daemon), a device path such as "
    "/dev/watchdog, or 0/none: NO watchdog, so a host that cannot kill its lease holders is "
    "never reset (logged loudly; for tests and machines without one)"
)


def add_parser(commands: Any) -> None:
    """Add the ``daemon`` command."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "daemon",
        help="run the host daemon (sanlock's socket protocol on $SANLOCK_RUN_DIR/sanlock.sock)",
        description=(
            "Run the lease daemon for this host. Stock sanlock clients (libvirt, "
            "python3-sanlock, 'sanlock client') use it through the socket in the run dir "
            "($SANLOCK_RUN_DIR, default /run/sanlock). Options override the config file."
        ),
    )
    parser.add_argument("-D", dest="foreground", action="store_true",
                        help="stay in the foreground, logging to stderr")  # fmt: skip
    parser.add_argument("-e", dest="host_name", metavar="NAME",
                        help="host name in the lockspaces (default: stable per machine and "
                        "run dir, so a restart frees the old leases at once)")  # fmt: skip
    parser.add_argument("-o", dest="io_timeout", metavar="SECONDS", type=_positive,
                        help="default io_timeout of lockspaces (default 10)")  # fmt: skip
    parser.add_argument("-g", dest="kill_grace", metavar="SECONDS", type=_non_negative,
                        help="seconds of killpath/SIGTERM before SIGKILL (default 40)")  # fmt: skip
    parser.add_argument("-w", dest="watchdog", metavar="MODE", help=WATCHDOG_HELP)
    parser.add_argument("-t", dest="max_worker_threads", metavar="N", type=_positive,
                        help="worker threads for disk I/O (default 32)")  # fmt: skip
    parser.add_argument("--config", metavar="PATH",
                        help=f"TOML file (default {daemon_config.DEFAULT_CONFIG})")  # fmt: skip
    parser.add_argument("--socket-group", metavar="GROUP",
                        help="group owning the 0660 socket: who may connect")  # fmt: skip
    parser.add_argument("--admin-group", metavar="GROUP",
                        help="members may act on any pid and use admin commands")  # fmt: skip
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--log-file", metavar="PATH",
                        help="log here in the background (default "
                        f"{daemon_config.DEFAULT_LOG_FILE}; '' for none)")  # fmt: skip
    wrapper.add_daemon_options(parser)  # -c COMMAND: run it under leases (cli/wrapper.py)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    if wrapper.wants_command(args):  # before anything of the daemon starts
        return wrapper.run_daemon_command(args)
    watchdog = args.watchdog
    if watchdog in ("0", "none"):
        watchdog = "none"
    overrides = {
        "host_name": args.host_name,
        "io_timeout": args.io_timeout,
        "kill_grace": args.kill_grace,
        "watchdog": watchdog,
        "max_worker_threads": args.max_worker_threads,
        "socket_group": args.socket_group,
        "admin_group": args.admin_group,
        "log_level": args.log_level,
        "log_file": args.log_file,
    }
    config = daemon_config.load(args.config, overrides)
    return daemon_main.run(config, foreground=args.foreground)


def _positive(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text}")
    return value


def _non_negative(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
