"""``sync_manager client`` output formatting, against lines sanlock 3.8.5 prints."""

from __future__ import annotations

from sync_manager.cli import client_output as out
from sync_manager.protocol import (
    Disk,
    Host,
    HostState,
    Lockspace,
    LockspaceFlag,
    Resource,
    ResourceFlag,
    StateRecord,
    StateType,
)

LS = Lockspace(b"LS", 1, disk=Disk(b"/dev/a b:c", 0))


def _daemon() -> StateRecord:
    return StateRecord.make(StateType.DAEMON, b"uuid.host", {"use_watchdog": 0, "uid": 0})


def _client(pid: int, name: bytes) -> StateRecord:
    return StateRecord.make(StateType.CLIENT, name, {"ci": 0, "pid": pid}, data32=pid)


def _lockspace(name: bytes, listed: str = "spaces") -> StateRecord:
    ls = Lockspace(name, 1, disk=Disk(b"/dev/a b:c", 0))
    return StateRecord.make(StateType.LOCKSPACE, name, {"list": listed}, data64=1, lockspace=ls)


def _resource(ls: bytes, name: bytes, pid: int, *, shared: bool = False) -> StateRecord:
    res = Resource(
        ls, name, flags=ResourceFlag.SHARED if shared else 0, disks=(Disk(b"/d", 1048576),)
    )
    return StateRecord.make(
        StateType.RESOURCE, name, {"list": "held"}, data32=pid, data64=7, resource=res
    )


RECORDS = [
    _daemon(),
    _client(-1, b"helper"),
    _client(-1, b"listener"),
    _client(42, b""),
    _client(-1, b"status"),
    _lockspace(b"LS"),
    _lockspace(b"NEW", "add"),
    _resource(b"LS", b"R", 42),
    _resource(b"NEW", b"S", 42, shared=True),
]


def test_status_lines_in_received_order() -> None:
    assert out.status_lines(RECORDS) == [
        "daemon uuid.host",
        "p -1 helper",
        "p -1 listener",
        "p 42 ",
        "p -1 status",
        "s LS:1:/dev/a\\ b\\:c:0",
        "s NEW:1:/dev/a\\ b\\:c:0 ADD",
        "r LS:R:/d:1048576:7 p 42",
        "r NEW:S:/d:1048576:SH p 42",
    ]


def test_status_sorted_by_pid_and_by_lockspace() -> None:
    by_pid = out.status_lines(RECORDS, sort="p")
    assert by_pid[4:] == [
        "s LS:1:/dev/a\\ b\\:c:0",
        "s NEW:1:/dev/a\\ b\\:c:0 ADD",
        "p 42 ",
        "r LS:R:/d:1048576:7 p 42",
        "r NEW:S:/d:1048576:SH p 42",
    ]
    by_ls = out.status_lines(RECORDS, sort="s")
    assert by_ls[:4] == ["daemon uuid.host", "p -1 helper", "p -1 listener", "p -1 status"]
    assert by_ls[4:] == [
        "p 42 ",
        "s LS:1:/dev/a\\ b\\:c:0",
        "r LS:R:/d:1048576:7 p 42",
        "s NEW:1:/dev/a\\ b\\:c:0 ADD",
        "r NEW:S:/d:1048576:SH p 42",
    ]


def test_status_sorted_leftovers_after_a_dash() -> None:
    orphan = _resource(b"GONE", b"X", 0)
    assert out.status_lines([_daemon(), orphan], sort="s")[-2:] == [
        "-",
        "r GONE:X:/d:1048576:7 p 0",
    ]


def test_debug_lines_split_the_text_at_spaces() -> None:
    lines = out.status_lines([_daemon()], debug=True)
    assert lines == ["daemon uuid.host", "    use_watchdog=0", "    uid=0"]


def test_gets_lines() -> None:
    assert out.gets_lockspace_line(LS) == "s LS:1:/dev/a b:c:0 "
    adding = Lockspace(b"LS", 2, LockspaceFlag.ADD, disk=Disk(b"/p", 512))
    assert out.gets_lockspace_line(adding) == "s LS:2:/p:512 ADD "
    host = Host(1, 3, 99, 10, HostState.LIVE)
    assert out.gets_host_line(host) == "h 1 gen 3 timestamp 99 LIVE"
    assert out.gets_host_line(Host(2, flags=0)).endswith(" ERROR")


def test_read_lines() -> None:
    flags = ResourceFlag.SECTOR512 | ResourceFlag.ALIGN1M
    res = Resource(b"LS", b"R", lver=4, flags=flags, disks=(Disk(b"/p", 1048576),))
    owners = [Host(1, 2, 33), Host(2, 5, 0)]
    assert out.read_resource_lines(res, owners, debug=True) == [
        "r LS:R:/p:1048576:4",
        "sector_size 512",
        "align_size 1048576",
        "h 1 gen 2 timestamp 33",
        "h 2 gen 5",
    ]
    ls = Lockspace(b"LS", 1, int(flags), disk=Disk(b"/p", 0))
    assert out.read_lockspace_lines(ls, 1, debug=True) == [
        "s LS:1:/p:0",
        "io_timeout 1",
        "sector_size 512",
        "align_size 1048576",
    ]


def test_version_lines() -> None:
    assert list(out.version_lines(0x03080500, 1)) == [
        "client version 3.8.5 (0x03080500)",
        "daemon version 3.8.5 (0x03080500)",
        "client socket protocol 0.1",
        "daemon socket protocol 0.1",
    ]
    assert next(out.version_lines(0, 0, -111)) == "daemon version error -111"


def test_host_status_line() -> None:
    rec = StateRecord.make(StateType.HOST, b"", {"last_live": 5}, data32=3, data64=77)
    assert out.record_lines(rec, debug=True) == ["3 timestamp 77", "    last_live=5"]
