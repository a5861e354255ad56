"""``sync_manager direct ...``: lease areas on storage without a daemon.

Output follows ``sanlock direct`` line for line (spec/sanlock-ondisk.md 9, 9.1) so that scripts
written for sanlock keep working; ``--json`` gives the same facts to programs.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sync_manager import direct, leasestr
from sync_manager.errors import SyncManagerError, UsageError
from sync_manager.ondisk.geometry import MIB, Geometry, parse_align
from sync_manager.ondisk.leader import LeaderRecord

__all__ = ["add_parser", "leader_fields"]

T = TypeVar("T")

# --- argument parsing ------------------------------------------------------------------------


def add_parser(commands: Any) -> None:
    """Add ``direct`` and its actions to the top-level subcommands."""
    parser = commands.add_parser(
        "direct",
        help="read and write lease areas directly on storage (no daemon)",
        description="Read and write lease areas directly on storage, as `sanlock direct`.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    init = actions.add_parser(
        "init",
        help="initialize a lockspace (-s) or a resource lease (-r)",
        description="Initialize a lockspace area (-s LS:0:PATH:OFFSET) or a resource lease "
        "area (-r LS:RES:PATH:OFFSET). Everything in the area is overwritten.",
    )
    _add_target(init, lockspace_host="0")
    init.add_argument(
        "-o",
        dest="io_timeout",
        type=_natural,
        default=direct.DEFAULT_IO_TIMEOUT,
        metavar="SECONDS",
        help="io_timeout stored in a lockspace (default 10; 0 means 10)",
    )
    init.add_argument(
        "-n",
        dest="num_hosts",
        type=_natural,
        default=0,
        metavar="NUM",
        help="host ids a resource lease serves (default: the most the geometry allows)",
    )
    init.add_argument(
        "-z",
        dest="clear",
        type=_flag,
        default=False,
        metavar="0|1",
        help="1: write the resource lease invalid (cleared), so nobody can acquire it",
    )
    init.add_argument(
        "--force",
        action="store_true",
        help="write even over a held lease or a lockspace with host ids in use (frees them on "
        "disk while their holders may run; sanlock always does)",
    )
    _add_geometry(init)
    _add_json(init)
    init.set_defaults(run=_run_init)

    read = actions.add_parser(
        "read_leader",
        help="read and validate one leader record",
        description="Read and validate host HOST_ID's delta lease (-s LS:HOST_ID:PATH:OFFSET) "
        "or a resource lease's leader (-r LS:RES:PATH:OFFSET) and print its fields.",
    )
    _add_target(read, lockspace_host="HOST_ID")
    _add_io_timeout(read)
    _add_geometry(read)
    _add_json(read)
    read.set_defaults(run=_run_read_leader)

    acquire = actions.add_parser(
        "acquire",
        help="acquire a resource lease as host -i generation -g",
        description="Run the paxos acquire as host HOST_ID generation GEN, with no daemon and "
        "no lockspace: a lease owned by another host fails (-241). Add :SH for shared, :LVER to "
        "require that lease version.",
    )
    _add_resource(acquire)
    _add_host(acquire)
    acquire.add_argument(
        "-n",
        dest="num_hosts",
        type=_natural,
        default=0,
        metavar="NUM",
        help="record this num_hosts in the lease on commit",
    )
    _add_io_timeout(acquire)
    acquire.set_defaults(run=_run_acquire)

    release = actions.add_parser(
        "release",
        help="release a resource lease held by host -i generation -g",
        description="Release a lease held by host HOST_ID generation GEN: its dblock is "
        "marked released and the leader freed. (sanlock's direct release writes nothing.)",
    )
    _add_resource(release)
    _add_host(release)
    _add_io_timeout(release)
    release.set_defaults(run=_run_release)

    acquire_id = actions.add_parser(
        "acquire_id",
        help="acquire a host id (delta lease) in a lockspace",
        description="Acquire host id HOST_ID in a lockspace, as the daemon does when it "
        "joins: 2 * io_timeout for a free id, 8 * io_timeout + 60 more for one that may be held.",
    )
    _add_host_id(acquire_id)
    acquire_id.add_argument(
        "-e",
        dest="host_name",
        default=None,
        metavar="NAME",
        help="unique host name (default: a new UUID and the node name)",
    )
    _add_io_timeout(acquire_id)
    acquire_id.set_defaults(run=_run_acquire_id)

    release_id = actions.add_parser(
        "release_id",
        help="release a host id (delta lease)",
        description="Free host id HOST_ID in a lockspace (timestamp 0).",
    )
    _add_host_id(release_id)
    _add_io_timeout(release_id)
    release_id.set_defaults(run=_run_release_id)

    dump = actions.add_parser(
        "dump",
        help="print the lease areas found on storage",
        description="Print the lockspaces and resource leases found from OFFSET (default 0), "
        "one align size at a time, for SIZE bytes or until an area that is neither.",
    )
    dump.add_argument(
        "location",
        metavar="PATH[:OFFSET[:SIZE]]",
        help="offset and size in bytes, or with an M suffix in MiB",
    )
    dump.add_argument(
        "-f",
        dest="force",
        type=int,
        choices=(0, 1, 2),
        default=0,
        help="1: also request records and bitmaps; 2: also dblocks",
    )
    _add_io_timeout(dump)
    _add_geometry(dump)
    _add_json(dump)
    dump.set_defaults(run=_run_dump)


def _add_target(parser: argparse.ArgumentParser, *, lockspace_host: str) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "-s",
        dest="lockspace",
        metavar=f"LS:{lockspace_host}:PATH:OFFSET",
        type=_checked(leasestr.parse_lockspace),
        help="a lockspace",
    )
    target.add_argument(
        "-r",
        dest="resource",
        metavar="LS:RES:PATH:OFFSET[:PATH:OFFSET...]",
        type=_checked(leasestr.parse_resource),
        help="a resource lease",
    )


def _add_resource(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-r",
        dest="resource",
        required=True,
        metavar="LS:RES:PATH:OFFSET[:PATH:OFFSET...][:LVER|:SH]",
        type=_checked(leasestr.parse_resource),
        help="the resource lease",
    )


def _add_host_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-s",
        dest="lockspace",
        required=True,
        metavar="LS:HOST_ID:PATH:OFFSET",
        type=_checked(leasestr.parse_lockspace),
        help="the host id",
    )


def _add_host(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i",
        dest="host_id",
        type=_natural,
        required=True,
        metavar="HOST_ID",
        help="our host id (1..2000)",
    )
    parser.add_argument(
        "-g",
        dest="generation",
        type=_natural,
        required=True,
        metavar="GEN",
        help="our host id generation",
    )


def _add_io_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        dest="io_timeout",
        type=_positive,
        default=direct.DEFAULT_IO_TIMEOUT,
        metavar="SECONDS",
        help="I/O timeout (default 10)",
    )


def _add_geometry(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-Z",
        dest="sector_size",
        type=int,
        choices=(512, 4096),
        help="sector size (default: the device's; 512 for a file)",
    )
    parser.add_argument(
        "-A",
        dest="align_size",
        type=_checked(parse_align),
        metavar="1M|2M|4M|8M",
        help="align (area) size (default: 1M for 512, 8M for 4096)",
    )


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for programs")


def _checked(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` for argparse: our UsageError becomes argparse's one-line message."""

    def run(text: str) -> T:
        try:
            return parse(text)
        except UsageError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    run.__name__ = parse.__name__
    return run


def _natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _positive(text: str) -> int:
    value = _natural(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"{text!r}: use 0 or 1")
    return text == "1"


# --- actions ---------------------------------------------------------------------------------


def _refuse_live_area(args: argparse.Namespace) -> None:
    """Beyond sanlock, which writes anyway: refuse to init over host ids in use or a held
    lease (``--force`` writes), since that frees them on disk while their holders may run."""
    locations = (args.lockspace.disk,) if args.lockspace is not None else args.resource.disks
    for where in locations:
        harm = direct.in_use(where, sector_size=args.sector_size, align_size=args.align_size)
        if harm is not None:
            raise UsageError(f"{harm}, or use --force")


def _run_init(args: argparse.Namespace) -> int:
    if not args.force:
        _refuse_live_area(args)
    if args.lockspace is not None:
        if args.lockspace.host_id != 0:
            raise UsageError("init -s takes host id 0: LS:0:PATH:OFFSET")
        geometry = direct.init_lockspace(
            args.lockspace,
            io_timeout=args.io_timeout,
            sector_size=args.sector_size,
            align_size=args.align_size,
        )
    else:
        if args.resource.lver is not None or args.resource.shared:
            raise UsageError("init -r takes no :LVER or :SH suffix")
        geometry = direct.init_resource(
            args.resource,
            num_hosts=args.num_hosts,
            clear=args.clear,
            sector_size=args.sector_size,
            align_size=args.align_size,
        )
    if args.json:
        _print_json({"result": 0, **_geometry_fields(geometry)})
    else:
        print("init done 0")
    return 0


def _run_read_leader(args: argparse.Namespace) -> int:
    is_lockspace = args.lockspace is not None
    if is_lockspace:
        result = direct.read_lockspace_leader(
            args.lockspace,
            sector_size=args.sector_size,
            align_size=args.align_size,
            io_timeout=args.io_timeout,
        )
    else:
        result = direct.read_resource_leader(
            args.resource,
            sector_size=args.sector_size,
            align_size=args.align_size,
            io_timeout=args.io_timeout,
        )
    fields = leader_fields(result.leader, lockspace=is_lockspace) if result.leader else []
    if args.json:
        _print_json(
            {
                "result": result.code,
                "error": str(result.error) if result.error else None,
                "leader": dict(fields) if result.leader else None,
            }
        )
    else:
        print(f"read_leader done {result.code}")
        for name, value in fields:
            print(f"{name} {_show(name, value)}")
    if result.error is not None:
        print(f"sync_manager: {result.error}", file=sys.stderr)
        return 1
    return 0


def _run_acquire(args: argparse.Namespace) -> int:
    result = _done(
        "acquire",
        lambda: direct.acquire_resource(
            args.resource,
            args.host_id,
            args.generation,
            num_hosts=args.num_hosts,
            io_timeout=args.io_timeout,
        ),
    )
    lead = result.leader
    print(
        f"lver {lead.lver} owner {lead.owner_id} generation {lead.owner_generation}"
        f"{' shared' if result.shared else ''}"
    )
    return 0


def _run_release(args: argparse.Namespace) -> int:
    _done(
        "release",
        lambda: direct.release_resource(
            args.resource, args.host_id, args.generation, io_timeout=args.io_timeout
        ),
    )
    return 0


def _run_acquire_id(args: argparse.Namespace) -> int:
    name = args.host_name or f"{uuid.uuid4()}.{socket.gethostname()[:11]}"
    lease = _done(
        "acquire_id",
        lambda: direct.acquire_host_id(args.lockspace, name, io_timeout=args.io_timeout),
    )
    print(f"host_id {lease.host_id} generation {lease.generation} name {name}")
    return 0


def _run_release_id(args: argparse.Namespace) -> int:
    _done("release_id", lambda: direct.release_host_id(args.lockspace, io_timeout=args.io_timeout))
    return 0


def _done(action: str, run: Callable[[], T]) -> T:
    """Run ``action`` and print sanlock's ``<action> done <rv>`` line, on failure too."""
    try:
        value = run()
    except SyncManagerError as err:
        print(f"{action} done {err.code}", flush=True)
        raise
    print(f"{action} done 0")
    return value


def _run_dump(args: argparse.Namespace) -> int:
    location, size = leasestr.parse_area(args.location)
    result = direct.dump(
        location,
        size,
        sector_size=args.sector_size,
        align_size=args.align_size,
        io_timeout=args.io_timeout,
    )
    if args.json:
        _print_json(
            {
                **_geometry_fields(result.geometry),
                "entries": [_entry_json(entry) for entry in result.entries],
            }
        )
        return 0
    if location.offset % MIB:
        print("WARNING: dump offset should be a multiple of 1048576 bytes.")
    for line in _dump_lines(result, args.force):
        print(line)
    return 0


# --- output ----------------------------------------------------------------------------------


def leader_fields(leader: LeaderRecord, *, lockspace: bool) -> list[tuple[str, int | str]]:
    """A leader's fields in ``read_leader``'s order and names (extra1..3 for a lockspace)."""
    extra = (
        ("extra1", "extra2", "extra3")
        if lockspace
        else ("write_id", "write_generation", "write_timestamp")
    )
    return [
        ("magic", leader.magic),
        ("version", leader.version),
        ("flags", leader.flags),
        ("sector_size", leader.sector_size),
        ("num_hosts", leader.num_hosts),
        ("max_hosts", leader.max_hosts),
        ("owner_id", leader.owner_id),
        ("owner_generation", leader.owner_generation),
        ("lver", leader.lver),
        ("space_name", leader.space),
        ("resource_name", leader.resource),
        ("timestamp", leader.timestamp),
        ("checksum", leader.checksum),
        ("io_timeout", leader.io_timeout),
        (extra[0], leader.write_id),
        (extra[1], leader.write_generation),
        (extra[2], leader.write_timestamp),
    ]


_HEX_FIELDS = frozenset({"magic", "version", "flags", "checksum"})


def _show(name: str, value: int | str) -> str:
    return f"{value:#x}" if name in _HEX_FIELDS and isinstance(value, int) else str(value)


_SH_INDENT = " " * 106


def _dump_lines(result: direct.DumpResult, force: int) -> Iterator[str]:
    # sanlock's printf widths: "%8s %36s %48s %10s %4s %4s %s"
    header = f"{'offset':>8} {'lockspace':>36} {'resource':>48} {'timestamp':>10} {'own':>4} "
    yield header + f"{'gen':>4} lver" + ("/req/mode" if force else "")
    for entry in result.entries:
        lead = entry.leader
        line = (
            f"{entry.offset:08d} {lead.space:>36} {lead.resource:>48} {lead.timestamp:010d} "
            f"{lead.owner_id:04d} {lead.owner_generation:04d}"
        )
        if entry.kind == "delta":
            if force:
                line += "".join(f" {host}" for host in entry.bitmap)
            yield line
            continue
        line += f" {lead.lver}"
        if force and entry.request is not None:
            line += f"/{entry.request.lver}/{entry.request.force_mode}"
        yield line
        dblocks = dict(entry.dblocks)
        shared = dict(entry.shared)
        for host in sorted(set(dblocks) | set(shared)):
            if force > 1 and host in dblocks:
                d = dblocks[host]
                yield (
                    f"dblock[{host - 1:04d}] mbal {d.mbal} bal {d.bal} inp {d.inp} "
                    f"inp2 {d.inp2} inp3 {d.inp3} lver {d.lver} sum {d.checksum:x}"
                )
            if host in shared:
                yield f"{_SH_INDENT}{host:04d} {shared[host]:04d} SH"


def _entry_json(entry: direct.DumpEntry) -> dict[str, object]:
    out: dict[str, object] = {
        "kind": "lockspace" if entry.kind == "delta" else "resource",
        "offset": entry.offset,
        "leader": dict(leader_fields(entry.leader, lockspace=entry.kind == "delta")),
    }
    if entry.kind == "delta":
        out["bitmap"] = list(entry.bitmap)
    else:
        if entry.request is not None:
            out["request"] = {"lver": entry.request.lver, "force_mode": entry.request.force_mode}
        out["dblocks"] = [
            {
                "host_id": host,
                "mbal": d.mbal,
                "bal": d.bal,
                "inp": d.inp,
                "inp2": d.inp2,
                "inp3": d.inp3,
                "lver": d.lver,
                "checksum": d.checksum,
                "flags": d.flags,
            }
            for host, d in entry.dblocks
        ]
        out["shared"] = [{"host_id": host, "generation": gen} for host, gen in entry.shared]
    return out


def _geometry_fields(geometry: Geometry) -> dict[str, int]:
    return {
        "sector_size": geometry.sector_size,
        "align_size": geometry.align_size,
        "max_hosts": geometry.max_hosts,
    }


def _print_json(value: object) -> None:
    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")
