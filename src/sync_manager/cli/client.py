"""``sync_manager client ACTION ...``: talk to the lease daemon as ``sanlock client`` does.

Options and stdout are sanlock 3.8.5's (spec 6), so scripts written for ``sanlock client``
keep working against either daemon; a failure also gets one line on stderr. The exit status
is 0 when the daemon's result is 0, or, for ``align``, ``log_dump`` and ``release -O 1`` whose
result is a size or a count, when it is not negative (sanlock exits 1 on those successes).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterable
from typing import Any

from sync_manager import leasestr
from sync_manager.cli import client_output as out
from sync_manager.cli import wrapper
from sync_manager.client import Client, SanlockError
from sync_manager.client.leases import check
from sync_manager.client.resources import to_wire
from sync_manager.errors import UsageError
from sync_manager.protocol import (
    GetHosts,
    GetLockspaces,
    Host,
    HostsReply,
    Inquire,
    InquireReply,
    Lockspace,
    LockspacesReply,
    Resource,
    StateReply,
    Version,
    VersionReply,
    align_flag,
    parse_state,
    res_to_str,
    sector_flag,
)
from sync_manager.protocol import HostStatus as HostStatusRequest
from sync_manager.protocol import Status as StatusRequest

__all__ = ["add_parser"]

DEFAULT_IO_TIMEOUT = 10
_SIZES = ((512, 1 << 20), (4096, 1 << 20), (4096, 2 << 20), (4096, 4 << 20), (4096, 8 << 20))
_ALIGNS = {"1M": 1 << 20, "2M": 2 << 20, "4M": 4 << 20, "8M": 8 << 20}


# --- argument parsing ------------------------------------------------------------------------


def _arg(parse: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse type that checks a string with ``parse`` and keeps the string."""

    def run(text: str) -> str:
        try:
            parse(text)
        except (UsageError, ValueError) as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return text

    run.__name__ = getattr(parse, "__name__", "value")
    return run


def _names_ok(text: str) -> object:
    return to_wire(text, names_only=True)


def _lockspace_name(text: str) -> str:
    """``-s`` where only the name counts (host_status, release -O): up to the first colon."""
    name = text.split(":", 1)[0]
    if not name or len(name.encode()) > leasestr.NAME_LEN:
        raise argparse.ArgumentTypeError(f"{text!r}: a lockspace name is 1..48 bytes")
    return name


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _bool(text: str) -> bool:
    return _int(text) != 0


Action = Callable[[argparse.Namespace, Client], int]
_ACTIONS: dict[str, tuple[str, Action]] = {}


def _action(name: str, summary: str) -> Callable[[Action], Action]:
    """Register an action's function under its name, with its one-line help."""

    def register(run: Action) -> Action:
        _ACTIONS[name] = (summary, run)
        return run

    return register


def add_parser(commands: Any) -> None:
    """Add ``client`` and its actions to the top-level subcommands."""
    parser = commands.add_parser(
        "client",
        help="ask the lease daemon (ours or sanlock's) to do something",
        description="Talk to the lease daemon over its socket ($SANLOCK_RUN_DIR/sanlock.sock), "
        "with the options and output of `sanlock client`.",
    )
    parser.add_argument(
        "--run-dir", metavar="DIR", help="the daemon's run dir (default $SANLOCK_RUN_DIR)"
    )
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="give up waiting for the daemon after"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub = {
        name: actions.add_parser(name, help=summary, description=summary, add_help=False)
        for name, (summary, _) in _ACTIONS.items()
    }
    sub["write"] = actions.add_parser("write", help="same as init", add_help=False)
    for parser_ in sub.values():  # -h is sanlock's "hosts" option: help is --help only
        parser_.add_argument("--help", action="help", help="show this help and exit")
    _options(sub)
    for name, parser_ in sub.items():
        run = _ACTIONS["init" if name == "write" else name][1]
        parser_.set_defaults(run=lambda args, run=run: _run(args, run))
    wrapper.add_client_command(actions)  # command -r ... -c CMD (cli/wrapper.py)


def _debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("-D", dest="debug", action="store_true", help="print more")


def _pid(p: argparse.ArgumentParser) -> None:
    p.add_argument("-p", dest="pid", type=_int, required=True, help="the registered process")


def _res(p: argparse.ArgumentParser, *, names_only: bool = False, many: bool = False) -> None:
    p.add_argument(
        "-r",
        dest="resources",
        action="append",
        default=[],
        required=not names_only,
        type=_arg(_names_ok if names_only else leasestr.parse_resource),
        metavar="LS:RES:PATH:OFFSET[:LVER|:SH]" + (" (repeatable)" if many else ""),
        help="a resource lease",
    )


def _ls(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument(
        "-s",
        dest="lockspace",
        required=required,
        type=_arg(leasestr.parse_lockspace),
        metavar="LS:HOST_ID:PATH:OFFSET",
        help="a lockspace",
    )


def _sizes(p: argparse.ArgumentParser) -> None:
    p.add_argument("-Z", dest="sector_size", type=int, choices=(512, 4096), default=0)
    p.add_argument("-A", dest="align_size", choices=sorted(_ALIGNS), default=None)


def _options(sub: dict[str, argparse.ArgumentParser]) -> None:
    _debug(sub["status"])
    sub["status"].add_argument("-o", dest="sort", choices=("p", "s"), help="sort by pid/lockspace")
    _debug(sub["host_status"])
    sub["host_status"].add_argument("-s", dest="lockspace", type=_lockspace_name, metavar="LS")
    sub["gets"].add_argument("-h", dest="hosts", type=_bool, default=False, metavar="0|1")
    sub["shutdown"].add_argument("-f", dest="force", type=_int, default=0, metavar="0|1")
    sub["shutdown"].add_argument("-w", dest="wait", type=_int, default=0, metavar="0|1")
    _ls(sub["add_lockspace"])
    sub["add_lockspace"].add_argument(
        "-o", dest="io_timeout", type=_int, default=DEFAULT_IO_TIMEOUT, metavar="SECONDS"
    )
    _ls(sub["inq_lockspace"])
    _ls(sub["rem_lockspace"])
    _res(sub["acquire"], many=True)
    _pid(sub["acquire"])
    sub["acquire"].add_argument("-O", dest="orphan", type=_bool, default=False, metavar="0|1")
    sub["acquire"].add_argument("-n", dest="num_hosts", type=_int, default=0, metavar="NUM")
    sub["acquire"].add_argument("-P", dest="persistent", type=_bool, default=False, metavar="0|1")
    _res(sub["release"], names_only=True, many=True)
    _pid(sub["release"])
    sub["release"].add_argument("-O", dest="orphan", type=_bool, default=False, metavar="0|1")
    sub["release"].add_argument("-a", dest="all", type=_bool, default=False, metavar="0|1")
    sub["release"].add_argument("-s", dest="lockspace", type=_lockspace_name, metavar="LS")
    _pid(sub["inquire"])
    _debug(sub["inquire"])
    _res(sub["convert"], names_only=True)
    _pid(sub["convert"])
    _res(sub["request"])
    sub["request"].add_argument("-f", dest="force", type=_int, default=0, metavar="MODE")
    _ls(sub["align"])
    for name in ("init", "write"):
        target = sub[name].add_mutually_exclusive_group(required=True)
        target.add_argument("-s", dest="lockspace", type=_arg(leasestr.parse_lockspace))
        target.add_argument("-r", dest="resource", type=_arg(leasestr.parse_resource))
        sub[name].add_argument("-o", dest="io_timeout", type=_int, default=DEFAULT_IO_TIMEOUT)
        sub[name].add_argument("-m", dest="max_hosts", type=_int, default=0)
        sub[name].add_argument("-n", dest="num_hosts", type=_int, default=0)
        sub[name].add_argument("-z", dest="clear", type=_bool, default=False, metavar="0|1")
        _sizes(sub[name])
    target = sub["read"].add_mutually_exclusive_group(required=True)
    target.add_argument("-s", dest="lockspace", type=_arg(leasestr.parse_lockspace))
    target.add_argument("-r", dest="resource", type=_arg(leasestr.parse_resource))
    sub["read"].add_argument("-h", dest="hosts", type=_bool, default=False, metavar="0|1")
    _debug(sub["read"])
    _sizes(sub["read"])


# --- running ---------------------------------------------------------------------------------


def _run(args: argparse.Namespace, run: Action) -> int:
    client = Client(args.run_dir, args.timeout)
    try:
        return 0 if run(args, client) == 0 else 1
    except SanlockError as err:
        print(f"sync_manager: {err}", file=sys.stderr)
        return 1


def _print(lines: Iterable[str]) -> None:
    for line in lines:
        print(line)


def _done(action: str, call: Callable[[], object]) -> int:
    """Run ``call``, print ``<action> done <rv>`` as sanlock does, and return ``rv``."""
    try:
        value = call()
    except SanlockError as err:
        print(f"{action} done {err.code}", flush=True)
        raise
    rv = value if isinstance(value, int) else 0
    print(f"{action} done {rv}")
    return rv


def _lockspace(text: str) -> leasestr.LockspaceSpec:
    return leasestr.parse_lockspace(text)


def _check_sizes(args: argparse.Namespace) -> tuple[int, int]:
    sector, align = args.sector_size, _ALIGNS.get(args.align_size or "", 0)
    if align and (sector, align) not in _SIZES:
        raise UsageError(
            f"Invalid sector_size/align_size combination ({sector}/{align}); "
            "use one of: 512/1M, 4096/1M, 4096/2M, 4096/4M, 4096/8M"
        )
    return sector, align


@_action("status", "the daemon's connections, lockspaces and leases")
def _status(args: argparse.Namespace, client: Client) -> int:
    reply = client.call(StatusRequest())
    check("status", reply)
    assert isinstance(reply, StateReply)
    _print(out.status_lines(reply.records, debug=args.debug, sort=args.sort))
    return 0


@_action("host_status", "the daemon's view of the hosts of each lockspace (or of -s LS)")
def _host_status(args: argparse.Namespace, client: Client) -> int:
    if args.lockspace:
        return _hosts_of(client, args.lockspace, args.debug)
    for name in client.lockspace_names():
        print(f"lockspace {name}")
        with contextlib.suppress(SanlockError):  # sanlock ignores each one's result here
            _hosts_of(client, name, args.debug)
    return 0


def _hosts_of(client: Client, name: str, debug: bool) -> int:
    reply = client.call(HostStatusRequest(Lockspace.make(name)))
    assert isinstance(reply, StateReply)
    for rec in reply.records:
        _print(out.record_lines(rec, debug=debug))
    check("host_status", reply)
    return 0


@_action("gets", "the lockspaces (-h 1: and their hosts)")
def _gets(args: argparse.Namespace, client: Client) -> int:
    try:
        reply = client.call(GetLockspaces())
        check("get_lockspaces", reply)
    except SanlockError as err:
        print(f"gets error {err.code}")
        raise
    assert isinstance(reply, LockspacesReply)
    for ls in reply.lockspaces:
        print(out.gets_lockspace_line(ls))
        if args.hosts:
            _gets_hosts(client, ls)
    return 0


def _gets_hosts(client: Client, ls: Lockspace) -> None:
    hosts = client.call(GetHosts(Lockspace(ls.name)))
    assert isinstance(hosts, HostsReply)
    if hosts.result == -11:  # -EAGAIN
        print("hosts not ready")
    elif hosts.result < 0:
        print(f"hosts error {hosts.result}")
    else:
        _print(out.gets_host_line(host) for host in hosts.hosts)


@_action("log_dump", "the daemon's in-memory log")
def _log_dump(args: argparse.Namespace, client: Client) -> int:
    print(client.log_dump())
    return 0


@_action("shutdown", "stop the daemon (-f 1: even with lockspaces; -w 1: wait)")
def _shutdown(args: argparse.Namespace, client: Client) -> int:
    print(f"shutdown force {args.force} wait {args.wait}")
    return _done("shutdown", lambda: client.shutdown(force=bool(args.force), wait=bool(args.wait)))


@_action("add_lockspace", "join a lockspace (-o: io_timeout)")
def _add_lockspace(args: argparse.Namespace, client: Client) -> int:
    ls = _lockspace(args.lockspace)
    io_timeout = args.io_timeout or DEFAULT_IO_TIMEOUT
    action = "add_lockspace" if io_timeout == DEFAULT_IO_TIMEOUT else "add_lockspace_timeout"
    print(action if action == "add_lockspace" else f"{action} {io_timeout}")
    timeout = 0 if io_timeout == DEFAULT_IO_TIMEOUT else io_timeout
    return _done(
        action,
        lambda: client.add_lockspace(
            ls.name, ls.host_id, ls.disk.path, ls.disk.offset, io_timeout=timeout
        ),
    )


@_action("inq_lockspace", "is the lockspace joined? (0 yes, -2 no, -115 joining/leaving)")
def _inq_lockspace(args: argparse.Namespace, client: Client) -> int:
    ls = _lockspace(args.lockspace)
    print("inq_lockspace")
    state = client.inq_lockspace(ls.name, ls.host_id, ls.disk.path, ls.disk.offset)
    rv = 0 if state else (-2 if state is False else -115)
    print(f"inq_lockspace done {rv}")
    return rv


@_action("rem_lockspace", "leave a lockspace")
def _rem_lockspace(args: argparse.Namespace, client: Client) -> int:
    ls = _lockspace(args.lockspace)
    print("rem_lockspace")
    return _done(
        "rem_lockspace",
        lambda: client.rem_lockspace(ls.name, ls.host_id, ls.disk.path, ls.disk.offset),
    )


@_action("acquire", "acquire leases for a registered process -p")
def _acquire(args: argparse.Namespace, client: Client) -> int:
    print(f"acquire pid {args.pid}")
    return _done(
        "acquire",
        lambda: client.acquire(
            args.pid,
            args.resources,
            orphan=args.orphan,
            num_hosts=args.num_hosts,
            persistent=args.persistent,
        ),
    )


@_action("release", "release leases of a registered process -p (-a 1: all; -O 1: orphans)")
def _release(args: argparse.Namespace, client: Client) -> int:
    resources: list[str] = list(args.resources)
    if args.orphan and not resources and args.lockspace:
        resources = [args.lockspace]
    if not resources and not args.all:
        raise UsageError("release needs -r RES, -a 1, or -s LS with -O 1")
    print(f"release pid {args.pid}")
    rv = _done(
        "release",
        lambda: client.release(args.pid, resources, all=args.all, orphan=args.orphan),
    )
    return 0 if rv >= 0 else 1


@_action("inquire", "the leases a registered process -p holds")
def _inquire(args: argparse.Namespace, client: Client) -> int:
    print(f"inquire pid {args.pid}")
    reply = client.call(Inquire(target=args.pid))
    assert isinstance(reply, InquireReply)
    print(f"inquire done {reply.result} res_count {reply.count}")
    if reply.result < 0:
        return check("inquire", reply)
    state = "(null)" if reply.state is None else reply.state.decode("utf-8", "backslashreplace")
    print(f'"{state}"')
    if args.debug and reply.state is not None:
        _inquire_debug(reply.state)
    return 0


def _inquire_debug(state: bytes) -> None:
    resources = parse_state(state)
    print(f"\nstate_to_args done 0 res_count {len(resources)}")
    for res in resources:
        disk = res.disks[0]
        print(f'"{res.lockspace}:{res.resource}:{disk.path_str}:{disk.offset}:{res.lver}"')
    joined = b" ".join(res_to_str(res) for res in resources)
    print("\nargs_to_state done 0")
    print(f'"{joined.decode("utf-8", "backslashreplace")}"')


@_action("convert", "switch a lease of -p between shared (:SH) and exclusive")
def _convert(args: argparse.Namespace, client: Client) -> int:
    print(f"convert pid {args.pid}")
    return _done("convert", lambda: client.convert(args.pid, args.resources[0]))


@_action("request", "ask the holder of a lease to release it (-f 1: force, 2: graceful)")
def _request(args: argparse.Namespace, client: Client) -> int:
    print("request")
    res = args.resources[0]
    return _done("request", lambda: client.request(res, args.force, next_lver=False))


@_action("align", "the alignment the daemon uses for the lockspace's disk")
def _align(args: argparse.Namespace, client: Client) -> int:
    ls = _lockspace(args.lockspace)
    print("align")
    rv = _done("align", lambda: client.align(ls.disk.path, ls.disk.offset))
    return 0 if rv >= 0 else 1


@_action("init", "initialize a lockspace (-s) or resource lease (-r) area through the daemon")
def _init(args: argparse.Namespace, client: Client) -> int:
    sector, align = _check_sizes(args)
    print("init")
    if args.lockspace:
        ls = _lockspace(args.lockspace)
        return _done(
            "init",
            lambda: client.write_lockspace(
                ls.name,
                ls.disk.path,
                ls.disk.offset,
                max_hosts=args.max_hosts,
                io_timeout=args.io_timeout or DEFAULT_IO_TIMEOUT,
                sector_size=sector,
                align_size=align,
            ),
        )
    return _done(
        "init",
        lambda: client.write_resource(
            args.resource,
            max_hosts=args.max_hosts,
            num_hosts=args.num_hosts,
            clear=args.clear,
            sector_size=sector,
            align_size=align,
        ),
    )


@_action("read", "read a lockspace's (-s) or resource lease's (-r; -h 1: owners) leader")
def _read(args: argparse.Namespace, client: Client) -> int:
    sector, align = _check_sizes(args)
    try:
        if args.lockspace:
            ls = _lockspace(args.lockspace)
            got = client.read_lockspace(
                ls.disk.path,
                ls.disk.offset,
                host_id=ls.host_id,
                sector_size=sector,
                align_size=align,
            )
            flags = sector_flag(got.sector_size) | align_flag(got.align_size)
            wire = Lockspace.make(got.name, got.host_id, got.path, got.offset, flags=flags)
            _print(out.read_lockspace_lines(wire, got.io_timeout, debug=args.debug))
            return 0
        asked = to_wire(args.resource)
        if args.hosts:
            owners = client.read_resource_owners(
                asked.lockspace,
                asked.resource,
                asked.disks[0].path_str,
                asked.disks[0].offset,
                sector_size=sector,
                align_size=align,
            )
            found, hosts = owners.info.resource, owners.owners
        else:
            info = client.read_resource(
                asked.disks[0].path_str,
                asked.disks[0].offset,
                lockspace=asked.lockspace,
                name=asked.resource,
                sector_size=sector,
                align_size=align,
            )
            found, hosts = info.resource, ()
    except SanlockError as err:
        print(f"read error {err.code}")
        raise
    shown = Resource(
        found.lockspace_name, found.name, lver=found.lver, flags=found.flags, disks=asked.disks
    )
    wire_hosts = [Host(h.host_id, h.generation, h.timestamp, h.io_timeout, h.flags) for h in hosts]
    _print(out.read_resource_lines(shown, wire_hosts, debug=args.debug))
    return 0


@_action("version", "the versions of this client and of the daemon")
def _version(args: argparse.Namespace, client: Client) -> int:
    try:
        reply = client.call(Version())
    except SanlockError as err:
        _print(out.version_lines(0, 0, err.code))
        raise
    assert isinstance(reply, VersionReply)
    _print(out.version_lines(reply.version, reply.proto, reply.result))
    return check("version", reply)
