"""Command line of the wrapper: run a command that holds leases while it runs.

Two spellings (see :mod:`sync_manager.integrations.wrapper` for what happens)::

    sync_manager daemon -i HOST_ID -n VM_ID -l RES:PATH:OFFSET [-l ...] [-s LS:HOST_ID:PATH:OFFSET]
                        [-U USER] [--no-restrict] [daemon options] -c COMMAND [ARGS...]
    sync_manager client command -r LS:RES:PATH:OFFSET[:LVER] [-r ...] [-U USER] -c COMMAND [ARGS...]

The first is the seed's: it starts a daemon if none runs (with the daemon options given, such
as ``-w 0``), joins the lockspace if needed, and names the holder's VM ``VM_ID``. The second
is sanlock's ``client command``: the daemon runs and the lockspace is joined already.

``-c`` ends the options: every word after it is the command and its arguments, untouched
(``--`` and options included).

Exit status: the command's own once it runs. If it never ran: 1 bad arguments, 75 a lease is
held by someone else (EX_TEMPFAIL: try later), 125 another failure (no daemon, lockspace
not joined, lease not initialized, ...), 126 the command cannot be executed, 127 not found.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sync_manager import leasestr
from sync_manager.client import Client, SanlockError
from sync_manager.daemon import config as daemon_config
from sync_manager.errors import UsageError
from sync_manager.integrations import wrapper
from sync_manager.integrations.wrapper import CommandNotRun, Plan
from sync_manager.leasestr import LockspaceSpec, ResourceSpec

__all__ = ["add_client_command", "add_daemon_options", "run_daemon_command", "wants_command"]

PROG = "sync_manager"

_RESTRICT_HELP = (
    "restrict the registration (SANLK_RESTRICT_ALL, as libvirt does) so the command cannot "
    "acquire or release through the inherited connection (default: on; --no-restrict keeps "
    "it usable, for a command that manages its own leases; not with -U)"
)
_COMMAND_HELP = "the command and its arguments: everything after -c, untouched (must be last)"

# The daemon's own options, passed on to a daemon the wrapper starts: dest -> option.
_DAEMON_OPTIONS = {
    "host_name": "-e",
    "io_timeout": "-o",
    "kill_grace": "-g",
    "watchdog": "-w",
    "max_worker_threads": "-t",
    "config": "--config",
    "socket_group": "--socket-group",
    "admin_group": "--admin-group",
    "log_level": "--log-level",
}
_WRAPPER_ONLY = ("-i", "wrap_host_id"), ("-n", "owner_name"), ("-l", "leases"), ("-s", "wrap_ls")


def _host_id(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a host id: {text}") from None
    if not 1 <= value <= leasestr.MAX_HOST_ID:
        raise argparse.ArgumentTypeError(f"host id {value} is out of range 1..2000")
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-U", dest="wrap_user", metavar="USER",
                        help="run the command as USER (name or uid): after acquiring, the "
                        "registration is restricted and privileges are dropped")  # fmt: skip
    parser.add_argument("--restrict", dest="wrap_restrict", default=True,
                        action=argparse.BooleanOptionalAction, help=_RESTRICT_HELP)  # fmt: skip
    parser.add_argument("-c", dest="exec_argv", nargs=argparse.REMAINDER,
                        metavar="COMMAND [ARGS]", help=_COMMAND_HELP)  # fmt: skip
    # argparse's REMAINDER option stops at a "--"; this takes the rest (see _command_argv).
    parser.add_argument("exec_rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def add_daemon_options(parser: argparse.ArgumentParser) -> None:
    """The seed's wrapper options on ``sync_manager daemon`` (used with ``-c``)."""
    group = parser.add_argument_group(
        "run a command under leases (with -c; starts the daemon in the background if none "
        "runs, passing the options above on to it)"
    )
    group.add_argument("-i", dest="wrap_host_id", metavar="HOST_ID", type=_host_id,
                       help="this host's id in the lockspace (to join it)")  # fmt: skip
    group.add_argument("-n", dest="owner_name", metavar="VM_ID",
                       help="the holder's name, as status shows it (1..48 bytes)")  # fmt: skip
    group.add_argument("-l", dest="leases", action="append", default=[],
                       metavar="RES:PATH:OFFSET",
                       help="a lease of the lockspace, repeatable (LS:RES:PATH:OFFSET[:LVER] "
                       "names another, joined lockspace)")  # fmt: skip
    group.add_argument("-s", dest="wrap_ls", metavar="LS:HOST_ID:PATH:OFFSET",
                       help="the lockspace (default: default_lockspace in the config file); "
                       "host id 0 takes -i's")  # fmt: skip
    _add_common(group)  # type: ignore[arg-type]


def add_client_command(actions: Any) -> None:
    """``sync_manager client command`` (sanlock's spelling) in ``client``'s subcommands."""
    summary = "run a command holding leases (-r ... -c COMMAND ARGS)"
    parser: argparse.ArgumentParser = actions.add_parser(
        "command", help=summary, description=summary, add_help=False
    )
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument("-r", dest="leases", action="append", default=[], required=True,
                        metavar="LS:RES:PATH:OFFSET[:LVER]",
                        help="a lease, repeatable; its lockspace must be joined")  # fmt: skip
    _add_common(parser)
    parser.set_defaults(run=_run_client_command)


def wants_command(args: argparse.Namespace) -> bool:
    """Whether ``sync_manager daemon`` was asked to run a command (UsageError when a wrapper
    option comes without ``-c``)."""
    if args.exec_argv is not None or args.exec_rest:
        return True
    given = [flag for flag, dest in _WRAPPER_ONLY if getattr(args, dest)]
    given += ["-U"] if args.wrap_user else []
    if given:
        raise UsageError(f"{', '.join(given)} need -c COMMAND (to run a command under leases)")
    return False


def _command_argv(args: argparse.Namespace) -> tuple[str, ...]:
    if args.exec_argv is None:
        if not args.exec_rest:
            raise UsageError("-c COMMAND [ARGS...] is required: the command to run under leases")
        raise UsageError(f"unexpected arguments: {' '.join(args.exec_rest)}")
    return (*args.exec_argv, *args.exec_rest)


def _report(line: str) -> None:
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def _execute(client: Client, plan: Plan, daemon_argv: list[str] | None) -> int:
    try:
        wrapper.run(client, plan, _report, daemon_argv=daemon_argv)
    except CommandNotRun as err:
        for line in err.lines:
            _report(line)
        return err.exit_status
    except SanlockError as err:
        _report(str(err))
        _report("the command was not run")
        return wrapper.EXIT_FAILED


# --- sync_manager daemon ... -c ---------------------------------------------------------------


def run_daemon_command(args: argparse.Namespace) -> int:
    """``sync_manager daemon ... -c COMMAND``: the exit status (the command's, once exec'd)."""
    if args.foreground:
        raise UsageError("-D cannot go with -c: a daemon the wrapper starts runs in the background")
    argv = _command_argv(args)
    lockspace = _lockspace(args)
    if not args.leases:
        raise UsageError("-c needs at least one -l RES:PATH:OFFSET")
    resources = tuple(_lease(text, lockspace) for text in args.leases)
    used = lockspace is not None and any(r.lockspace == lockspace.name for r in resources)
    plan = Plan(
        resources,
        argv,
        owner_name=args.owner_name or "",
        join=lockspace if used else None,
        user=wrapper.lookup_user(args.wrap_user) if args.wrap_user else None,
        restrict=args.wrap_restrict,
    )
    daemon_argv = []
    for dest, flag in _DAEMON_OPTIONS.items():
        value = getattr(args, dest, None)
        if value is not None:
            daemon_argv += [flag, str(value)]
    return _execute(Client(), plan, daemon_argv)


def _lockspace(args: argparse.Namespace) -> LockspaceSpec | None:
    """-s, else the config's default_lockspace, with -i's host id; None if neither is set."""
    text = args.wrap_ls
    if text is None:
        text = daemon_config.load(args.config, {}).default_lockspace or None
    if text is None:
        return None
    ls = leasestr.parse_lockspace(text)
    host_id = args.wrap_host_id or 0
    if ls.host_id and host_id and ls.host_id != host_id:
        raise UsageError(f"-i {host_id} and the lockspace's host id {ls.host_id} differ: {text}")
    return LockspaceSpec(ls.name, host_id or ls.host_id, ls.disk)


def _lease(text: str, lockspace: LockspaceSpec | None) -> ResourceSpec:
    """``-l``: the seed's RES:PATH:OFFSET (in the lockspace), or a full resource string."""
    if _field_count(text) != 3:
        return leasestr.parse_resource(text)
    if lockspace is None:
        raise UsageError(
            f"-l {text}: which lockspace? give -s LS:HOST_ID:PATH:OFFSET, or set "
            "default_lockspace in the config file"
        )
    return leasestr.parse_short_resource(text, lockspace.name)


def _field_count(text: str) -> int:
    """Fields of a lease string, split on unescaped colons."""
    count, i = 1, 0
    while i < len(text):
        if text[i] == "\\":
            i += 1
        elif text[i] == ":":
            count += 1
        i += 1
    return count


# --- sync_manager client command ----------------------------------------------------------------


def _run_client_command(args: argparse.Namespace) -> int:
    plan = Plan(
        tuple(leasestr.parse_resource(text) for text in args.leases),
        _command_argv(args),
        user=wrapper.lookup_user(args.wrap_user) if args.wrap_user else None,
        restrict=args.wrap_restrict,
    )
    return _execute(Client(args.run_dir, args.timeout), plan, None)
