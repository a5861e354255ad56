"""Golden frames from the real client library: python3-sanlock and ``sanlock client``.

A Unix-socket server in a thread stands in for the daemon at ``$SANLOCK_RUN_DIR/sanlock.sock``.
It frames what the real clients send with our :class:`RequestParser`, records the bytes, and
answers with replies our encoder makes. Each case then checks three things:

* the live bytes equal the frames stored in ``tests/data/protocol/captures.json``, which
  ``tests/unit/test_protocol_golden.py`` decodes and re-encodes without python3-sanlock;
* our decoder reads every frame, and every connection ends on a frame boundary (except the
  4-byte "end" word ``sanlock_end_event`` writes on an event connection);
* the client turned our reply into the expected Python value, exception or CLI output.

Frames are stored as hex with each run of 8 or more zero bytes written ``(N)`` (N zero bytes):
the structs are mostly padding. ``SYNC_MANAGER_REGEN_CAPTURES=1`` rewrites the stored frames
instead of comparing them. In CI (``CI=true``) a missing python3-sanlock, ``sanlock`` or
libsanlock fails these tests instead of skipping them.

The last tests call libsanlock's own string functions through ctypes and compare them with
:mod:`sync_manager.protocol.resstr` on generated strings.
"""

from __future__ import annotations

import ast
import ctypes
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sync_manager.protocol import (
    Command,
    Disk,
    EventCallback,
    Frame,
    Host,
    HostEvent,
    HostsReply,
    InquireReply,
    Lockspace,
    LockspaceFlag,
    LockspacesReply,
    LogDumpReply,
    LvbReply,
    MalformedMessage,
    OwnersReply,
    ProtocolError,
    ReadLockspaceReply,
    ReadResourceReply,
    Reply,
    RequestParser,
    Resource,
    Result,
    StateRecord,
    StateReply,
    StateType,
    describe,
    encode_reply,
    error_reply,
    parse_state,
    res_to_str,
    state_string,
    str_to_res,
)

CAPTURES = Path(__file__).parent.parent / "data" / "protocol" / "captures.json"
SYSTEM_PYTHON = "/usr/bin/python3"
SANLOCK = shutil.which("sanlock") or "/usr/sbin/sanlock"
REGEN = os.environ.get("SYNC_MANAGER_REGEN_CAPTURES") == "1"
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")

# The daemon closes these connections after its reply (spec 2.4, class D); streams end there.
_CLOSE_AFTER = {
    Command.SHUTDOWN,
    Command.STATUS,
    Command.HOST_STATUS,
    Command.RENEWAL,
    Command.LOG_DUMP,
    Command.GET_LOCKSPACES,
    Command.GET_HOSTS,
    Command.END_EVENT,
    Command.SET_CONFIG,
}

EVENT = EventCallback(HostEvent(3, 4, 5, 6), from_host_id=7, from_generation=8)
DISK_R = ("/dev/shm/sm-r", 1048576)


@dataclass
class Connection:
    """What one client connection sent: frames, then unframed bytes left at its end."""

    frames: list[Frame] = field(default_factory=list)
    leftover: bytes = b""
    errors: list[str] = field(default_factory=list)


class CaptureServer:
    """A stand-in daemon that records requests and answers them from ``replies``.

    A command's replies are used in order (the last one again when they run out); a command
    without any gets ``error_reply(command, 0)``, a success with empty contents.
    """

    def __init__(self, run_dir: Path, replies: Mapping[Command, Sequence[Reply]]) -> None:
        self.path = run_dir / "sanlock.sock"
        self.replies = {command: list(queue) for command, queue in replies.items()}
        self.connections: list[Connection] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> CaptureServer:
        self._listener.bind(str(self.path))
        self._listener.listen(16)
        # A timeout, so that the accept loop sees _stopping; a client that sends without
        # waiting for a reply (SHUTDOWN) may still sit in the backlog when it has exited.
        self._listener.settimeout(0.05)
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._acceptor.join(timeout=10)
        self._listener.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=10)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                if self._stopping.is_set():
                    return
                continue
            sock.settimeout(30)
            conn = Connection()
            thread = threading.Thread(target=self._serve, args=(sock, conn), daemon=True)
            with self._lock:
                self.connections.append(conn)
                thread.start()
                self._threads.append(thread)

    def _reply_for(self, frame: Frame) -> bytes:
        command = frame.header.command
        assert command is not None
        with self._lock:
            queue = self.replies.get(command, [])
            reply = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else None
        out = encode_reply(frame.header, reply or error_reply(command, 0))
        if command == Command.REG_EVENT:  # an event right away, for get_event() to read
            out += EVENT.pack()
        return out

    def _serve(self, sock: socket.socket, conn: Connection) -> None:
        parser = RequestParser()
        with sock:
            while data := sock.recv(65536):
                parser.feed(data)
                while True:
                    try:
                        frame = parser.next()
                    except ProtocolError as exc:
                        conn.errors.append(str(exc))
                        continue
                    if frame is None:
                        break
                    conn.frames.append(frame)
                    reply = self._reply_for(frame)
                    if reply:  # REGISTER and SHUTDOWN get none; the client may be gone
                        sock.sendall(reply)
                    if frame.header.command in _CLOSE_AFTER:
                        return
            conn.leftover = parser.pending()


@dataclass(frozen=True)
class Case:
    """One client run: a python3-sanlock script or ``sanlock client`` arguments."""

    name: str
    expected: list[object]
    script: str = ""
    cli: tuple[str, ...] | None = None
    replies: Mapping[Command, Sequence[Reply]] = field(default_factory=dict)


PRELUDE = """
import select, sanlock
def attempt(call, *args, **kwargs):
    try:
        print(repr(call(*args, **kwargs)))
    except sanlock.SanlockException as exc:
        print(repr(("SanlockException", exc.errno, exc.args[1], exc.args[2])))
R = [("/dev/shm/sm-r", 1048576)]
"""

HELD = (
    Resource.make("LS", "R1", [("/dev/shm/sm-a", 0)], lver=5),
    Resource.make("LS", "R2", [("/dev/shm/with:colon", 1048576)], shared=True),
)
LOCKSPACES = (
    Lockspace.make("LS", 1, "/dev/shm/sm-ids", 0),
    Lockspace.make("LS2", 2, "/dev/shm/sm-ids2", 1048576, flags=LockspaceFlag.ADD),
)
HOSTS = (Host(1, 3, 1000, 10, 3), Host(2, 1, 2000, 10, 5))


def _host_dict(host: Host) -> dict[str, int]:
    return {
        "host_id": host.host_id,
        "generation": host.generation,
        "timestamp": host.timestamp,
        "io_timeout": host.io_timeout,
        "flags": host.flags,
    }


def _status_records() -> tuple[StateRecord, ...]:
    ls, res = LOCKSPACES[0], Resource.make("LS", "R1", [DISK_R], lver=9)
    return (
        StateRecord.make(StateType.DAEMON, b"host-uuid.node", {"our_host_name": "host"}),
        StateRecord.make(StateType.CLIENT, b"helper", {"ci": 0}, data32=-1),
        StateRecord.make(StateType.CLIENT, b"vm1", {"ci": 2}, data32=4242),
        StateRecord.make(StateType.LOCKSPACE, b"LS", {"list": "spaces"}, data64=1, lockspace=ls),
        StateRecord.make(
            StateType.LOCKSPACE, b"LS2", {"list": "add"}, data64=2, lockspace=LOCKSPACES[1]
        ),
        StateRecord.make(
            StateType.RESOURCE, b"R1", {"list": "held"}, data32=4242, data64=9, resource=res
        ),
    )


PYTHON_CASES = [
    Case("py_register", [True], "print(repr(sanlock.register() > 2))"),
    Case(
        "py_acquire_lver_release",
        [None, None, None],
        "fd = sanlock.register()\n"
        "attempt(sanlock.acquire, b'LS', b'R1', R, slkfd=fd, version=5)\n"
        "attempt(sanlock.acquire, b'LS', b'R2', R, slkfd=fd, shared=True, lvb=True)\n"
        "attempt(sanlock.release, b'LS', b'R1', R, slkfd=fd)\n",
    ),
    Case(
        "py_acquire_pid_two_disks",
        [None],
        "attempt(sanlock.acquire, b'LS', b'R1', [('/dev/shm/sm-a', 0), ('/dev/shm/sm-b', 512)],"
        " pid=4242, shared=True)",
    ),
    Case(
        "py_errors",
        [
            (
                "SanlockException",
                -243,
                "Sanlock resource not acquired",
                "Lease is held by another host",
            ),
            ("SanlockException", 1, "Sanlock resource not released", "Operation not permitted"),
            ("SanlockException", 17, "Sanlock lockspace add failure", "File exists"),
            ("SanlockException", 3, "Inquire error", "No such process"),
        ],
        "attempt(sanlock.acquire, b'LS', b'R1', R, pid=4242)\n"
        "attempt(sanlock.release, b'LS', b'R1', R, pid=4242)\n"
        "attempt(sanlock.add_lockspace, b'LS', 1, '/dev/shm/sm-ids')\n"
        "attempt(sanlock.inquire, pid=4243)\n",
        replies={
            Command.ACQUIRE: [Result(-243)],
            Command.RELEASE: [Result(-1)],
            Command.ADD_LOCKSPACE: [Result(-17)],
            Command.INQUIRE: [Result(-3)],
        },
    ),
    Case(
        "py_inquire",
        [
            [
                {
                    "lockspace": b"LS",
                    "resource": b"R1",
                    "flags": 1,
                    "version": 5,
                    "disks": [("/dev/shm/sm-a", 0)],
                },
                {
                    "lockspace": b"LS",
                    "resource": b"R2",
                    "flags": 4,
                    "version": 0,
                    "disks": [("/dev/shm/with:colon", 1048576)],
                },
            ],
            [],
        ],
        "fd = sanlock.register()\n"
        "attempt(sanlock.inquire, slkfd=fd)\n"
        "attempt(sanlock.inquire, pid=4242)\n",
        replies={Command.INQUIRE: [InquireReply(0, 2, state_string(HELD)), InquireReply()]},
    ),
    Case(
        "py_lockspaces",
        [
            None,
            None,
            True,
            False,
            None,
            None,
            [
                {
                    "lockspace": b"LS",
                    "host_id": 1,
                    "path": "/dev/shm/sm-ids",
                    "offset": 0,
                    "flags": 0,
                },
                {
                    "lockspace": b"LS2",
                    "host_id": 2,
                    "path": "/dev/shm/sm-ids2",
                    "offset": 1048576,
                    "flags": 1,
                },
            ],
        ],
        "attempt(sanlock.add_lockspace, b'LS', 1, '/dev/shm/sm-ids')\n"
        "attempt(sanlock.add_lockspace, b'LS', 1, '/dev/shm/sm-ids', 512, iotimeout=5,"
        " wait=False)\n"
        "attempt(sanlock.inq_lockspace, b'LS', 1, '/dev/shm/sm-ids', wait=True)\n"
        "attempt(sanlock.inq_lockspace, b'LS', 1, '/dev/shm/sm-ids')\n"
        "attempt(sanlock.rem_lockspace, b'LS', 1, '/dev/shm/sm-ids', wait=False, unused=True)\n"
        "attempt(sanlock.rem_lockspace, b'LS', 1, '/dev/shm/sm-ids')\n"
        "attempt(sanlock.get_lockspaces)\n",
        replies={
            Command.INQ_LOCKSPACE: [Result(0), Result(-2)],
            Command.GET_LOCKSPACES: [LockspacesReply(0, LOCKSPACES)],
        },
    ),
    Case(
        "py_get_hosts",
        [[_host_dict(h) for h in HOSTS], [_host_dict(HOSTS[1])]],
        "attempt(sanlock.get_hosts, b'LS')\nattempt(sanlock.get_hosts, b'LS', 2)\n",
        replies={Command.GET_HOSTS: [HostsReply(0, HOSTS), HostsReply(0, HOSTS[1:])]},
    ),
    Case(
        "py_read_write",
        [
            None,
            {"lockspace": b"LS", "iotimeout": 5},
            None,
            {"lockspace": b"LS", "resource": b"R1", "version": 7},
        ],
        "attempt(sanlock.write_lockspace, b'LS', '/dev/shm/sm-ids', iotimeout=5,"
        " align=2097152, sector=4096)\n"
        "attempt(sanlock.read_lockspace, '/dev/shm/sm-ids')\n"
        "attempt(sanlock.write_resource, b'LS', b'R1', R, num_hosts=3, clear=True)\n"
        "attempt(sanlock.read_resource, '/dev/shm/sm-r', 1048576)\n",
        replies={
            Command.READ_LOCKSPACE: [ReadLockspaceReply(0, 5, LOCKSPACES[0])],
            Command.READ_RESOURCE: [ReadResourceReply(0, Resource.make("LS", "R1", lver=7))],
        },
    ),
    Case(
        "py_owners",
        [[_host_dict(Host(1, 2, 300, 10, 0)), _host_dict(Host(4, 1))]],
        "attempt(sanlock.read_resource_owners, b'LS', b'R1', R)\n",
        replies={
            Command.READ_RESOURCE_OWNERS: [
                OwnersReply(0, Resource.make("LS", "R1", lver=3), (Host(1, 2, 300, 10), Host(4, 1)))
            ]
        },
    ),
    Case(
        "py_request_killpath",
        [None, None, None],
        "attempt(sanlock.request, b'LS', b'R1', R)\n"
        "attempt(sanlock.request, b'LS', b'R1', R, action=sanlock.REQ_FORCE, version=9)\n"
        "fd = sanlock.register()\n"
        "attempt(sanlock.killpath, '/usr/bin/kill-it', ['arg one', 'b\\\\c'], slkfd=fd)\n",
    ),
    Case(
        "py_events",
        [
            [
                {
                    "from_host_id": 7,
                    "from_generation": 8,
                    "host_id": 3,
                    "generation": 4,
                    "event": 5,
                    "data": 6,
                }
            ],
            None,
            None,
        ],
        "fd = sanlock.reg_event(b'LS')\n"
        "select.select([fd], [], [], 10)\n"
        "attempt(sanlock.get_event, fd)\n"
        "attempt(sanlock.set_event, b'LS', 3, 4, 5, data=6, flags=sanlock.SETEV_REPLACE_EVENT)\n"
        "attempt(sanlock.end_event, fd, b'LS')\n",
    ),
    Case(
        "py_lvb",
        [None, b"world" + bytes(11)],
        "attempt(sanlock.set_lvb, b'LS', b'R1', R, b'hello')\n"
        "attempt(sanlock.get_lvb, b'LS', b'R1', R, 16)\n",
        replies={Command.GET_LVB: [LvbReply(0, b"world")]},
    ),
]

CLI_CASES = [
    Case(
        "cli_version",
        [
            "client version 3.8.5 (0x03080500)",
            "daemon version 3.8.5 (0x03080500)",
            "client socket protocol 0.1",
            "daemon socket protocol 0.1",
        ],
        cli=("version",),
    ),
    Case(
        "cli_status",
        [
            "daemon host-uuid.node",
            "p -1 helper",
            "p 4242 vm1",
            "s LS:1:/dev/shm/sm-ids:0",
            "s LS2:2:/dev/shm/sm-ids2:1048576 ADD",
            "r LS:R1:/dev/shm/sm-r:1048576:9 p 4242",
        ],
        cli=("status",),
        replies={Command.STATUS: [StateReply(0, _status_records())]},
    ),
    Case(
        "cli_host_status",
        ["1 timestamp 1000", "    last_live=5", "2 timestamp 2000", "    last_live=0"],
        cli=("host_status", "-s", "LS", "-D"),
        replies={
            Command.HOST_STATUS: [
                StateReply(
                    0,
                    (
                        StateRecord.make(
                            StateType.HOST, b"", {"last_live": 5}, data32=1, data64=1000
                        ),
                        StateRecord.make(
                            StateType.HOST, b"", {"last_live": 0}, data32=2, data64=2000
                        ),
                    ),
                )
            ]
        },
    ),
    Case(
        "cli_gets",
        [
            "s LS:1:/dev/shm/sm-ids:0 ",
            "h 1 gen 3 timestamp 1000 LIVE",
            "h 2 gen 1 timestamp 2000 DEAD",
            "s LS2:2:/dev/shm/sm-ids2:1048576 ADD ",
            "hosts not ready",
        ],
        cli=("gets", "-h", "1"),
        replies={
            Command.GET_LOCKSPACES: [LockspacesReply(0, LOCKSPACES)],
            Command.GET_HOSTS: [HostsReply(0, HOSTS), HostsReply(-11)],
        },
    ),
    Case(
        "cli_renewal",
        ["timestamp=10 read_ms=1 write_ms=2", "timestamp=20 read_ms=1 write_ms=3"],
        cli=("renewal", "-s", "LS"),
        replies={
            Command.RENEWAL: [
                StateReply(
                    0,
                    (
                        StateRecord.make(
                            StateType.RENEWAL,
                            b"",
                            {"timestamp": 10, "read_ms": 1, "write_ms": 2},
                            data64=10,
                        ),
                        StateRecord.make(
                            StateType.RENEWAL,
                            b"",
                            {"timestamp": 20, "read_ms": 1, "write_ms": 3},
                            data64=20,
                        ),
                    ),
                    data2=10,
                )
            ]
        },
    ),
    Case(
        "cli_log_dump",
        ["line one", "line two"],
        cli=("log_dump",),
        replies={Command.LOG_DUMP: [LogDumpReply(b"line one\nline two")]},
    ),
    Case(
        "cli_inquire",
        [
            "inquire pid 4242",
            "inquire done 0 res_count 2",
            '"LS:R1:/dev/shm/sm-a:0:5 LS:R2:/dev/shm/with\\:colon:1048576:SH"',
        ],
        cli=("inquire", "-p", "4242"),
        replies={Command.INQUIRE: [InquireReply(0, 2, state_string(HELD))]},
    ),
    Case(
        "cli_acquire_release",
        ["acquire pid 4242", "acquire done 0"],
        cli=(
            "acquire",
            "-r",
            "LS:R1:/dev/shm/sm-r:1M:6",
            "-r",
            "LS:R2:/dev/shm/sm-r:2M:SH",
            "-p",
            "4242",
        ),
    ),
    Case(
        "cli_release_orphans",
        ["release pid 4242", "release done 2"],
        cli=("release", "-s", "LS", "-O", "1", "-p", "4242"),
        replies={Command.RELEASE: [Result(2)]},
    ),
    Case(
        "cli_shutdown", ["shutdown force 1 wait 0", "shutdown done 0"], cli=("shutdown", "-f", "1")
    ),
    Case(
        "cli_shutdown_wait",
        ["shutdown force 0 wait 1", "shutdown done 0"],
        cli=("shutdown", "-w", "1"),
    ),
    Case(
        "cli_align",
        ["align", "align done 1048576"],
        cli=("align", "-s", "LS:1:/dev/shm/x:0"),
        replies={Command.ALIGN: [Result(1048576)]},
    ),
    Case(
        "cli_read_owners",
        ["r LS:R1:/dev/shm/sm-r:1048576:3", "h 1 gen 2 timestamp 300", "h 4 gen 1"],
        cli=("read", "-r", "LS:R1:/dev/shm/sm-r:1M", "-h", "1"),
        replies={
            Command.READ_RESOURCE_OWNERS: [
                OwnersReply(
                    0,
                    Resource.make("LS", "R1", [DISK_R], lver=3),
                    (Host(1, 2, 300, 10), Host(4, 1)),
                )
            ]
        },
    ),
    Case(
        "cli_init_resource",
        ["init", "init done 0"],
        cli=("init", "-r", "LS:R1:/dev/shm/sm-r:1M", "-n", "5", "-Z", "4096", "-A", "8M"),
    ),
    Case(
        "cli_set_config",
        ["set_config LS 2", "set_config done 0"],
        cli=("set_config", "-s", "LS", "-u", "0"),
    ),
]

CASES = PYTHON_CASES + CLI_CASES


def _require(ok: bool, what: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"{what} is not available (CI=true)")
        pytest.skip(f"{what} is not available")


@pytest.fixture(scope="module")
def system_sanlock() -> None:
    """python3-sanlock importable by the system Python (a failure in CI when it is not)."""
    probe = [SYSTEM_PYTHON, "-c", "import sanlock"]
    found = Path(SYSTEM_PYTHON).exists() and subprocess.run(probe, check=False).returncode == 0
    _require(found, "python3-sanlock (/usr/bin/python3 -c 'import sanlock')")


@pytest.fixture(scope="module")
def sanlock_cli() -> None:
    """The ``sanlock`` CLI (a failure in CI when it is missing)."""
    _require(Path(SANLOCK).exists(), "the sanlock CLI")


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A short run dir: a socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="smcap", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run(case: Case, run_dir: Path) -> tuple[str, list[Connection]]:
    env = dict(os.environ, SANLOCK_RUN_DIR=str(run_dir))
    if case.cli is not None:
        argv = [SANLOCK, "client", *case.cli]
    else:
        argv = [SYSTEM_PYTHON, "-c", PRELUDE + case.script]
    with CaptureServer(run_dir, case.replies) as server:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=60, check=False
        )
    assert case.cli is not None or not done.stderr, done.stderr
    return done.stdout, [c for c in server.connections if c.frames or c.leftover]


def compact_hex(data: bytes) -> str:
    """``data`` in hex, each run of 8 or more zero bytes written ``(N)``."""
    parts, pos = [], 0
    for run in re.finditer(rb"\x00{8,}", data):
        parts += [data[pos : run.start()].hex(), f"({run.end() - run.start()})"]
        pos = run.end()
    return "".join([*parts, data[pos:].hex()])


def _stored() -> dict[str, list[dict[str, object]]]:
    if not CAPTURES.exists():
        return {}
    data: dict[str, list[dict[str, object]]] = json.loads(CAPTURES.read_text())
    return data


def _check(case: Case, run_dir: Path) -> None:
    output, connections = _run(case, run_dir)
    for conn in connections:
        assert not conn.errors, conn.errors
        for frame in conn.frames:
            frame.decode()
        assert conn.leftover in (b"", b"\x01\x00\x00\x00"), conn.leftover  # end_event's word
    if case.cli is None:
        assert [ast.literal_eval(line) for line in output.splitlines()] == case.expected, output
    else:
        assert output.splitlines() == case.expected, output
    captured = [
        {"frames": [compact_hex(f.pack()) for f in c.frames], "leftover": c.leftover.hex()}
        for c in connections
    ]
    if REGEN:
        merged = {**_stored(), case.name: captured}
        CAPTURES.parent.mkdir(parents=True, exist_ok=True)
        CAPTURES.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")
    else:
        assert captured == _stored().get(case.name), f"{case.name}: live bytes differ from stored"


@pytest.mark.interop
@pytest.mark.parametrize("case", PYTHON_CASES, ids=lambda c: c.name)
def test_python_client(case: Case, system_sanlock: None, run_dir: Path) -> None:
    """python3-sanlock sends the stored bytes and reads our replies as expected."""
    _check(case, run_dir)


@pytest.mark.interop
@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.name)
def test_cli_client(case: Case, sanlock_cli: None, run_dir: Path) -> None:
    """``sanlock client`` sends the stored bytes and prints our replies as expected."""
    _check(case, run_dir)


# --- libsanlock's own string functions, called through ctypes --------------------------------

LIBSANLOCK = "libsanlock.so.1"


@pytest.fixture(scope="module")
def libsanlock() -> ctypes.CDLL:
    """libsanlock (Debian's libsanlock1); a failure in CI when it cannot be loaded."""
    try:
        lib = ctypes.CDLL(LIBSANLOCK)
    except OSError:
        _require(False, LIBSANLOCK)
        raise
    lib.sanlock_strerror.restype = ctypes.c_char_p
    return lib


_LIBC = ctypes.CDLL(None)


def _c_res_to_str(lib: ctypes.CDLL, res: Resource) -> bytes | None:
    buf = ctypes.create_string_buffer(res.pack_with_disks())
    out = ctypes.c_char_p()
    if lib.sanlock_res_to_str(buf, ctypes.byref(out)) < 0:
        return None
    text = out.value or b""
    _LIBC.free(out)
    return text


def _c_struct(pointer: ctypes.c_void_p) -> bytes:
    head = ctypes.string_at(pointer, 128)
    num_disks = int.from_bytes(head[124:128], "little")
    return ctypes.string_at(pointer, 128 + 1040 * num_disks)


def _c_str_to_res(lib: ctypes.CDLL, text: bytes) -> bytes | None:
    out = ctypes.c_void_p()
    if lib.sanlock_str_to_res(ctypes.c_char_p(text), ctypes.byref(out)) < 0:
        return None
    raw = _c_struct(out)
    _LIBC.free(out)
    return raw


def _c_state_to_args(lib: ctypes.CDLL, text: bytes) -> list[bytes] | None:
    count = ctypes.c_int()
    args = ctypes.POINTER(ctypes.c_void_p)()
    if lib.sanlock_state_to_args(ctypes.c_char_p(text), ctypes.byref(count), ctypes.byref(args)):
        return None
    out = [_c_struct(ctypes.c_void_p(args[i])) for i in range(count.value)]
    for i in range(count.value):
        _LIBC.free(ctypes.c_void_p(args[i]))
    _LIBC.free(args)
    return out


def _ours(parse: Callable[[bytes], object], text: bytes) -> object:
    try:
        return parse(text)
    except MalformedMessage:
        return None


RES_TEXT = st.text(alphabet="ab:\\ /0159xSH", max_size=40).map(str.encode)
PATHS = st.text(alphabet="ab:\\ /", min_size=1, max_size=12).map(str.encode)
RESOURCES = st.builds(
    lambda names, disks, lver, shared: Resource(
        names[0],
        names[1],
        lver=lver,
        flags=4 if shared else 1,
        disks=tuple(Disk(path, offset) for path, offset in disks),
    ),
    st.tuples(st.binary(max_size=48), st.binary(max_size=48)).map(
        lambda names: tuple(n.replace(b"\0", b"n") for n in names)
    ),
    st.lists(st.tuples(PATHS, st.integers(0, 2**64 - 1)), min_size=1, max_size=4),
    st.integers(0, 2**64 - 1),
    st.booleans(),
)


@pytest.mark.interop
@settings(max_examples=300)
@given(resource=RESOURCES)
def test_res_to_str_matches_libsanlock(libsanlock: ctypes.CDLL, resource: Resource) -> None:
    """Our res_to_str writes libsanlock's bytes (names without NUL: a 48-byte name is where
    sanlock's %s runs on, on purpose not copied)."""
    assume(len(resource.lockspace_name) < 48 and len(resource.name) < 48)
    assert res_to_str(resource) == _c_res_to_str(libsanlock, resource)


@pytest.mark.interop
@settings(max_examples=500)
@given(text=RES_TEXT)
def test_str_to_res_matches_libsanlock(libsanlock: ctypes.CDLL, text: bytes) -> None:
    """Same verdict, same struct bytes."""
    ours = _ours(str_to_res, text)
    theirs = _c_str_to_res(libsanlock, text)
    assert (None if ours is None else ours.pack_with_disks()) == theirs  # type: ignore[attr-defined]


@pytest.mark.interop
@settings(max_examples=500)
@given(text=st.lists(RES_TEXT, max_size=3).map(b" ".join))
def test_state_to_args_matches_libsanlock(libsanlock: ctypes.CDLL, text: bytes) -> None:
    """Same verdict, same resources, for whole state strings."""
    ours = _ours(parse_state, text)
    theirs = _c_state_to_args(libsanlock, text)
    assert (None if ours is None else [r.pack_with_disks() for r in ours]) == theirs  # type: ignore[attr-defined]


def test_strerror_matches_libsanlock(libsanlock: ctypes.CDLL) -> None:
    """describe() gives sanlock_strerror's text for every code it could see."""
    for code in [*range(-300, -199), 0, 1]:
        assert describe(code) == libsanlock.sanlock_strerror(code).decode(), code
