"""The text ``sanlock client`` prints, line for line (spec 6; sanlock 3.8.5's ``main.c`` and
``client_cmd.c``), as pure functions of what the daemon sent, for ``sync_manager client``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from sync_manager.protocol import (
    HOST_STATE_MASK,
    SM_PROTO,
    VERSION_3_8_5,
    Host,
    HostState,
    Lockspace,
    LockspaceFlag,
    Resource,
    StateRecord,
    StateType,
    align_from_flags,
    path_export,
    res_to_str,
    sector_from_flags,
)
from sync_manager.protocol.structs import text

__all__ = [
    "debug_lines",
    "gets_host_line",
    "gets_lockspace_line",
    "host_line",
    "read_lockspace_lines",
    "read_resource_lines",
    "record_lines",
    "status_lines",
    "version_lines",
]

_LIST_MARKS = (("list=add", "ADD"), ("list=rem", "REM"), ("list=orphan", "ORPHAN"))


def _raw(field: bytes) -> str:
    return text(field)


def debug_lines(record: StateRecord) -> list[str]:
    """``-D``: the record's text split at spaces, each piece indented by 4 (``print_debug``)."""
    if not record.string:
        return []
    return [f"    {piece}" for piece in record.text.split(" ")]


def _list_mark(record: StateRecord) -> str:
    body = record.text
    for key, mark in _LIST_MARKS:
        if key in body:
            return f" {mark}"
    return ""


def _lockspace_line(record: StateRecord) -> str:
    ls = record.lockspace or Lockspace(b"")
    path = path_export(ls.disk.path).decode("utf-8", "backslashreplace")
    return f"s {_raw(ls.name)}:{ls.host_id}:{path}:{ls.disk.offset}{_list_mark(record)}"


def _resource_line(record: StateRecord) -> str:
    res = record.resource or Resource(b"", b"")
    out = f"r {_raw(res.lockspace_name)}:{_raw(res.name)}"
    for disk in res.disks:
        out += f":{path_export(disk.path).decode('utf-8', 'backslashreplace')}:{disk.offset}"
    mode = "SH" if res.shared else str(record.data64)
    return f"{out}:{mode} p {record.data32}{_list_mark(record)}"


def host_line(record: StateRecord) -> str:
    """A HOST record of HOST_STATUS: ``<host_id> timestamp <ts>``."""
    return f"{record.data32} timestamp {record.data64}"


def record_lines(record: StateRecord, *, debug: bool = False) -> list[str]:
    """One STATUS record's line (and with ``debug`` its ``key=value`` lines)."""
    kind = record.type
    if kind == StateType.DAEMON:
        line = f"daemon {_raw(record.name)}"
    elif kind == StateType.CLIENT:
        line = f"p {record.pid} {_raw(record.name)}"
    elif kind == StateType.LOCKSPACE:
        line = _lockspace_line(record)
    elif kind == StateType.RESOURCE:
        line = _resource_line(record)
    elif kind == StateType.HOST:
        line = host_line(record)
    else:
        return []
    return [line, *(debug_lines(record) if debug else [])]


class _Sorter:
    """``sanlock_status``'s sort passes over the received records (``-o p`` / ``-o s``)."""

    def __init__(self, records: Sequence[StateRecord], debug: bool) -> None:
        self.left: list[StateRecord | None] = list(records)
        self.debug = debug
        self.out: list[str] = []

    def _take(self, index: int) -> StateRecord:
        record = self.left[index]
        assert record is not None
        self.left[index] = None
        self.out += record_lines(record, debug=self.debug)
        return record

    def by_type(self, kind: int = 0) -> None:
        for i, rec in enumerate(self.left):
            if rec is not None and (not kind or rec.type == kind):
                self._take(i)

    def clients_of(self, pid: int) -> None:
        for i, rec in enumerate(self.left):
            if rec is not None and rec.type == StateType.CLIENT and rec.pid == pid:
                self._take(i)

    def resources_of(self, pid: int = 0, lockspace: bytes | None = None) -> None:
        for i, rec in enumerate(self.left):
            if rec is None or rec.type != StateType.RESOURCE:
                continue
            name = rec.resource.lockspace_name if rec.resource is not None else b""
            if (pid and rec.pid == pid) or (lockspace is not None and name == lockspace):
                self._take(i)

    def each(self, kind: int, then: str) -> None:
        while (i := self._first(kind)) is not None:
            rec = self._take(i)
            if then == "p":
                self.resources_of(pid=rec.pid)
            else:
                self.resources_of(lockspace=rec.name)

    def _first(self, kind: int) -> int | None:
        return next(
            (i for i, rec in enumerate(self.left) if rec is not None and rec.type == kind), None
        )

    def rest(self) -> None:
        if any(rec is not None for rec in self.left):
            self.out.append("-")
            self.by_type(0)


def status_lines(
    records: Sequence[StateRecord], *, debug: bool = False, sort: str | None = None
) -> list[str]:
    """``sanlock client status [-D] [-o p|s]``: records in order received, or sorted by
    pid (``p``: lockspaces, then each client and its leases) or by lockspace (``s``)."""
    if sort not in ("p", "s"):
        return [line for rec in records for line in record_lines(rec, debug=debug)]
    sorter = _Sorter(records, debug)
    sorter.by_type(StateType.DAEMON)
    sorter.clients_of(-1)
    if sort == "p":
        sorter.by_type(StateType.LOCKSPACE)
        sorter.each(StateType.CLIENT, "p")
    else:
        sorter.by_type(StateType.CLIENT)
        sorter.each(StateType.LOCKSPACE, "s")
    sorter.rest()
    return sorter.out


def gets_lockspace_line(ls: Lockspace) -> str:
    """``gets``: ``s NAME:HOST_ID:PATH:OFFSET FLAGS`` (raw path; flags ``ADD ``/``REM ``)."""
    flags = ("ADD " if ls.flags & LockspaceFlag.ADD else "") + (
        "REM " if ls.flags & LockspaceFlag.REM else ""
    )
    return f"s {_raw(ls.name)}:{ls.host_id}:{ls.disk.path_str}:{ls.disk.offset} {flags}"


def _host_state(flags: int) -> str:
    try:
        return HostState(flags & HOST_STATE_MASK).name
    except ValueError:
        return "ERROR"


def gets_host_line(host: Host) -> str:
    """``gets -h 1``: ``h ID gen GEN timestamp TS STATE``."""
    return (
        f"h {host.host_id} gen {host.generation} timestamp {host.timestamp} "
        f"{_host_state(host.flags)}"
    )


def read_lockspace_lines(ls: Lockspace, io_timeout: int, *, debug: bool = False) -> list[str]:
    """``read -s``: the lockspace as the daemon read it (raw path), ``-D``: its sizes."""
    lines = [f"s {_raw(ls.name)}:{ls.host_id}:{ls.disk.path_str}:{ls.disk.offset}"]
    if debug:
        lines += [
            f"io_timeout {io_timeout}",
            f"sector_size {sector_from_flags(ls.flags)}",
            f"align_size {align_from_flags(ls.flags)}",
        ]
    return lines


def read_resource_lines(
    res: Resource, hosts: Iterable[Host] = (), *, debug: bool = False
) -> list[str]:
    """``read -r [-h 1]``: ``r <resource string>``, ``-D`` sizes, then the owners."""
    lines = [f"r {res_to_str(res).decode('utf-8', 'backslashreplace')}"]
    if debug:
        lines += [
            f"sector_size {sector_from_flags(res.flags)}",
            f"align_size {align_from_flags(res.flags)}",
        ]
    for host in hosts:
        stamp = f" timestamp {host.timestamp}" if host.timestamp else ""
        lines.append(f"h {host.host_id} gen {host.generation}{stamp}")
    return lines


def _release(number: int) -> str:
    return f"{number >> 24 & 0xFF}.{number >> 16 & 0xFF}.{number >> 8 & 0xFF} (0x{number:08x})"


def _proto(proto: int) -> str:
    return f"{proto >> 16 & 0xFFFF}.{proto & 0xFFFF}"


def version_lines(version: int, proto: int, error: int = 0) -> Iterator[str]:
    """``client version``: ours (3.8.5's protocol), the daemon's, and both socket protocols."""
    if error < 0:
        yield f"daemon version error {error}"
    yield f"client version {_release(VERSION_3_8_5)}"
    yield f"daemon version {_release(version)}"
    yield f"client socket protocol {_proto(SM_PROTO)}"
    yield f"daemon socket protocol {_proto(proto)}"
