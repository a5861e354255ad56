"""Golden request frames captured from python3-sanlock 3.8.5 and ``sanlock client`` 3.8.5.

``tests/data/protocol/captures.json`` holds, per client run, the bytes of each connection
(``tests/interop/test_protocol_capture.py`` records and refreshes them). Here, without
python3-sanlock, every frame must decode to the request written below and encode back to
exactly the captured bytes. The facts they pin (see the report in that module's cases):

* HOST_STATUS and RENEWAL from the CLI announce ``length`` 32 and send 1104 bytes more;
* RELEASE sends ``num_disks`` 1 and no disk; the CLI's orphan release names only a lockspace;
* WRITE_RESOURCE sends ``max_hosts`` in ``data`` and ``num_hosts`` in ``data2``;
* python3-sanlock fills ALIGN/SECTOR flags (1M/512 by default) on read/write requests;
* KILLPATH's args are escaped and joined by python3-sanlock (``arg\\ one b\\\\c``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sync_manager.protocol import (
    SELF,
    Acquire,
    AddLockspace,
    Align,
    EndEvent,
    GetHosts,
    GetLockspaces,
    GetLvb,
    HostEvent,
    HostStatus,
    InqLockspace,
    Inquire,
    Killpath,
    Lockspace,
    LogDump,
    ReadLockspace,
    ReadResource,
    ReadResourceOwners,
    RegEvent,
    Register,
    Release,
    RemLockspace,
    Renewal,
    Request,
    RequestLease,
    RequestParser,
    Resource,
    SetConfig,
    SetEvent,
    SetLvb,
    Shutdown,
    ShutdownWait,
    Status,
    Version,
    WriteLockspace,
    WriteResource,
)

CAPTURES = Path(__file__).parent.parent / "data" / "protocol" / "captures.json"
R = ("/dev/shm/sm-r", 1048576)
IDS = Lockspace.make("LS", 1, "/dev/shm/sm-ids")
LS = Lockspace.make("LS")


def _res(name: str, disks: list[tuple[str, int]] | None = None, **kw: object) -> Resource:
    return Resource.make("LS", name, [R] if disks is None else disks, **kw)  # type: ignore[arg-type]


def _bare(name: str, num_disks: int = 1) -> Resource:
    return Resource(b"LS", name.encode(), num_disks=num_disks)


# Per capture: one list of requests per connection.
EXPECTED: dict[str, list[list[Request]]] = {
    "py_register": [[Register()]],
    "py_acquire_lver_release": [
        [
            Register(),
            Acquire((_res("R1", lver=5),)),
            Acquire((_res("R2", shared=True),), flags=1),
            Release((_bare("R1"),)),
        ]
    ],
    "py_acquire_pid_two_disks": [
        [
            Acquire(
                (_res("R1", [("/dev/shm/sm-a", 0), ("/dev/shm/sm-b", 512)], shared=True),),
                target=4242,
            ),
        ]
    ],
    "py_errors": [
        [Acquire((_res("R1"),), target=4242)],
        [Release((_bare("R1"),), target=4242)],
        [AddLockspace(IDS)],
        [Inquire(target=4243)],
    ],
    "py_inquire": [[Register(), Inquire()], [Inquire(target=4242)]],
    "py_lockspaces": [
        [AddLockspace(IDS)],
        [AddLockspace(Lockspace.make("LS", 1, "/dev/shm/sm-ids", 512), flags=1, io_timeout=5)],
        [InqLockspace(IDS, flags=1)],
        [InqLockspace(IDS)],
        [RemLockspace(IDS, flags=3)],
        [RemLockspace(IDS)],
        [GetLockspaces()],
    ],
    "py_get_hosts": [[GetHosts(LS)], [GetHosts(Lockspace.make("LS", 2))]],
    "py_read_write": [
        [WriteLockspace(Lockspace.make("LS", 0, "/dev/shm/sm-ids", flags=0x220), io_timeout=5)],
        [ReadLockspace(Lockspace.make("", 0, "/dev/shm/sm-ids", flags=0x110))],
        [WriteResource(_res("R1", flags=0x110), num_hosts=3, flags=1)],
        [ReadResource(Resource.make("", "", [R], flags=0x110))],
    ],
    "py_owners": [[ReadResourceOwners(_res("R1", flags=0x110))]],
    "py_request_killpath": [
        [RequestLease(_res("R1"), flags=1, force_mode=2)],
        [RequestLease(_res("R1", lver=9), force_mode=1)],
        [Register(), Killpath(b"/usr/bin/kill-it", b"arg\\ one b\\\\c")],
    ],
    "py_events": [
        [RegEvent(LS)],
        [SetEvent(LS, HostEvent(3, 4, 5, 6), flags=8)],
        [EndEvent(LS)],
    ],
    "py_lvb": [[SetLvb(_bare("R1"), b"hello")], [GetLvb(_bare("R1"))]],
    "cli_version": [[Version()]],
    "cli_status": [[Status()]],
    "cli_host_status": [[HostStatus(LS)]],
    "cli_gets": [[GetLockspaces()], [GetHosts(LS)], [GetHosts(Lockspace.make("LS2"))]],
    "cli_renewal": [[Renewal(LS)]],
    "cli_log_dump": [[LogDump()]],
    "cli_inquire": [[Inquire(target=4242)]],
    "cli_acquire_release": [
        [
            Acquire(
                (
                    _res("R1", lver=6),
                    Resource.make("LS", "R2", [("/dev/shm/sm-r", 2 << 20)], shared=True),
                ),
                target=4242,
            ),
        ]
    ],
    "cli_release_orphans": [[Release((Resource(b"LS", b""),), flags=4, target=4242)]],
    "cli_shutdown": [[Shutdown(1)]],
    "cli_shutdown_wait": [[ShutdownWait(0)]],
    "cli_align": [[Align(Lockspace.make("LS", 1, "/dev/shm/x").disk)]],
    "cli_read_owners": [[ReadResourceOwners(_res("R1"))]],
    "cli_init_resource": [[WriteResource(_res("R1", flags=0x280), num_hosts=5)]],
    "cli_set_config": [[SetConfig(LS, cmd=2)]],
}


def expand_hex(text: str) -> bytes:
    """Stored hex back to bytes: ``(N)`` stands for N zero bytes."""
    return b"".join(
        bytes(int(part[1:-1])) if part.startswith("(") else bytes.fromhex(part)
        for part in re.findall(r"\(\d+\)|[0-9a-f]+", text)
    )


def _captures() -> dict[str, list[dict[str, str | list[str]]]]:
    data: dict[str, list[dict[str, str | list[str]]]] = json.loads(CAPTURES.read_text())
    return data


def test_every_capture_has_expectations() -> None:
    """The stored captures and the table above name the same client runs."""
    assert set(_captures()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_decodes_and_reencodes(name: str) -> None:
    """Each connection's bytes frame into the expected requests, which encode back exactly."""
    connections = _captures()[name]
    assert len(connections) == len(EXPECTED[name])
    for conn, expected in zip(connections, EXPECTED[name], strict=True):
        frames = [expand_hex(h) for h in conn["frames"]]
        leftover = bytes.fromhex(str(conn["leftover"]))
        parser = RequestParser()
        parser.feed(b"".join(frames) + leftover)
        decoded = [frame.decode() for frame in parser.frames()]
        assert decoded == expected
        assert [request.encode() for request in expected] == frames
        assert parser.pending() == leftover


def test_host_status_length_quirk_is_kept() -> None:
    """The CLI says 32 bytes and sends a lockspace after them; our encoder does the same."""
    raw = HostStatus(LS).encode()
    assert len(raw) == 32 + 1104
    assert int.from_bytes(raw[16:20], "little") == 32
    assert Release((_bare("R1"),)).encode()[28:32] == SELF.to_bytes(4, "little", signed=True)
