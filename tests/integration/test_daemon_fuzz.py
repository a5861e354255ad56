"""Socket fuzz: many connections sending bad input, while a well-behaved client is served.

Threads, each with its own seeded ``random.Random``, open connection after connection to the
daemon and send one of: random bytes; a header cut short; a valid header with a garbage
payload; a huge length field; an unknown command number; a valid frame (built with
``sync_manager.protocol``) with random flags and data; a frame cut mid-message; a valid frame
with random bytes overwritten. Meanwhile the test's own thread uses our Client as a program
would (VERSION, GET_LOCKSPACES, REGISTER + ACQUIRE + INQUIRE + RELEASE) and checks every
answer. Afterwards the daemon still runs and never logged a Python traceback.

Commands that change the daemon's state for everyone are never sent, whatever the mutation:
(rem_lockspace, shutdown, writes of lease areas, set_config, request, rindex changes,
add_lockspace), nor a target pid equal to this process's (the good client's registration is
in this process, and the daemon finds a registered client by pid). Everything else goes.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sync_manager import protocol as p
from sync_manager.client import LockspaceInfo
from sync_manager.protocol import Command, Header
from tests.integration.daemon_proc import (
    IO_TIMEOUT,
    LS,
    LS_OFFSET,
    DaemonProcess,
    MiB,
    daemon_process,
    lease_file,
    resource_string,
)

SEED = 20261125
THREADS = 12
FUZZ_SECONDS = 8.0
IDLE_CONNECTIONS = 100  # held open (half of them mid-message) for the whole run

# Never sent: they change the daemon's state for every client (see the module docstring).
FORBIDDEN = frozenset(
    {
        Command.ADD_LOCKSPACE, Command.REM_LOCKSPACE, Command.SHUTDOWN, Command.SHUTDOWN_WAIT,
        Command.WRITE_LOCKSPACE, Command.WRITE_RESOURCE, Command.SET_CONFIG, Command.REQUEST,
        Command.FORMAT_RINDEX, Command.UPDATE_RINDEX, Command.CREATE_RESOURCE,
        Command.DELETE_RESOURCE, Command.REBUILD_RINDEX,
    }
)  # fmt: skip
ALLOWED = sorted(int(c) for c in Command if c not in FORBIDDEN)


def _valid_requests(path: Path) -> list[p.Request]:
    """Well-formed requests the fuzzer starts from (names and offsets of its own)."""
    ls = p.Lockspace.make(LS, 1, str(path), LS_OFFSET)
    other = p.Lockspace.make("FZ", 0)
    res = [p.Resource.make(LS, f"fz{i}", [(str(path), (8 + i) * MiB)]) for i in range(4)]
    return [
        p.Register(),
        p.Version(),
        p.Status(),
        p.LogDump(),
        p.GetLockspaces(),
        p.GetHosts(ls),
        p.GetHosts(other),
        p.InqLockspace(ls),
        p.InqLockspace(other),
        p.HostStatus(ls),
        p.Renewal(ls),
        p.Inquire(),
        p.Acquire((res[0],)),
        p.Acquire(tuple(res), flags=int(p.AcquireFlag.OWNER_NOWAIT)),
        p.Release((res[0],)),
        p.Release((), int(p.ReleaseFlag.ALL)),
        p.Convert(res[1]),
        p.Killpath(b"/bin/true", b"x"),
        p.Restrict(0),
        p.ExamineResource(res[2]),
        p.ExamineLockspace(ls),
        p.RegEvent(ls),
        p.EndEvent(ls),
        p.GetLvb(res[3], 64),
        p.SetLvb(res[3], b"lvb"),
        p.Align(p.Disk(str(path).encode(), 0)),
        p.ReadLockspace(ls),
        p.ReadResource(res[0]),
        p.ReadResourceOwners(res[0]),
    ]


def _target(rng: random.Random) -> int:
    """A data2 that is never this process's pid (see the module docstring)."""
    value = rng.choice([0xFFFFFFFF, 0, 1, rng.getrandbits(32)])
    return 0xFFFFFFFF if value == os.getpid() else value


class Fuzzer:
    """One thread's cases."""

    def __init__(self, socket_path: str, frames: list[bytes], seed: int) -> None:
        self.path = socket_path
        self.frames = frames
        self.rng = random.Random(seed)
        self.cases = 0
        self.cases_by_kind: dict[str, int] = {}

    def _header(self, cmd: int, length: int) -> Header:
        rng = self.rng
        return Header(
            cmd,
            rng.getrandbits(32),
            length,
            rng.getrandbits(32),
            _target(rng),
            seq=rng.getrandbits(32),
        )

    def _frame(self) -> bytes:
        return self.rng.choice(self.frames)

    # --- the cases: each returns the byte strings to send, in order ----------------------

    def random_bytes(self) -> list[bytes]:
        return [self.rng.randbytes(self.rng.randrange(1, 300))]

    def short_header(self) -> list[bytes]:
        return [self._frame()[: self.rng.randrange(1, p.HEADER_SIZE)]]

    def garbage_payload(self) -> list[bytes]:
        payload = self.rng.randbytes(self.rng.randrange(0, 2000))
        header = self._header(self.rng.choice(ALLOWED), p.HEADER_SIZE + len(payload))
        return [header.pack() + payload]

    def huge_length(self) -> list[bytes]:
        length = self.rng.choice([0xFFFFFFFF, 1 << 31, p.MAX_CLIENT_MSG + 1, 1 << 24, 0, 1])
        header = self._header(self.rng.choice(ALLOWED), length)
        return [header.pack() + self.rng.randbytes(self.rng.randrange(0, 100))]

    def unknown_command(self) -> list[bytes]:
        cmd = self.rng.choice([0, 41, 42, 99, 255, 0xFFFF, self.rng.randrange(41, 1 << 32)])
        return [self._header(cmd, p.HEADER_SIZE).pack()]

    def random_flags(self) -> list[bytes]:
        frame = self._frame()
        header = Header.unpack(frame)
        rng = self.rng
        header = header.replace(
            cmd_flags=rng.getrandbits(32), data=rng.getrandbits(32), data2=_target(rng)
        )
        return [header.pack() + frame[p.HEADER_SIZE :]]

    def mid_message(self) -> list[bytes]:
        frame = self._frame()
        cut = self.rng.randrange(p.HEADER_SIZE, len(frame)) if len(frame) > p.HEADER_SIZE else 8
        return [frame[:cut]]

    def flipped(self) -> list[bytes]:
        data = bytearray(self._frame())
        for _ in range(self.rng.randrange(1, 8)):
            data[self.rng.randrange(len(data))] = self.rng.getrandbits(8)
        header = Header.unpack(data)
        if header.cmd in FORBIDDEN or header.target == os.getpid():
            return self.random_flags()
        return [bytes(data)]

    def pipelined(self) -> list[bytes]:
        parts = [self._frame() for _ in range(self.rng.randrange(2, 6))]
        parts.append(self.random_bytes()[0])
        return parts

    # --- running ------------------------------------------------------------------------

    def kinds(self) -> list[Callable[[], list[bytes]]]:
        return [
            self.random_bytes, self.short_header, self.garbage_payload, self.huge_length,
            self.unknown_command, self.random_flags, self.mid_message, self.flipped,
            self.pipelined,
        ]  # fmt: skip

    def one(self) -> None:
        case = self.rng.choice(self.kinds())
        chunks = case()
        self.cases += 1
        self.cases_by_kind[case.__name__] = self.cases_by_kind.get(case.__name__, 0) + 1
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            with contextlib.suppress(OSError):  # refused, reset, timed out: all fine here
                sock.connect(self.path)
                for chunk in chunks:
                    sock.sendall(chunk)
                if self.rng.random() < 0.5:
                    sock.recv(65536)  # sometimes read an answer (or time out)

    def run(self, until: float, errors: list[BaseException]) -> None:
        try:
            while time.monotonic() < until:
                self.one()
        except BaseException as exc:  # reported by the test
            errors.append(exc)


def _good_client_round(d: DaemonProcess, path: Path, lver: int) -> float:
    """One round of a well-behaved client; its duration. Checks every answer."""
    start = time.monotonic()
    api = d.api
    assert str(api.version()) == "3.8.5"
    assert api.get_lockspaces() == [LockspaceInfo(LS, 1, str(path), LS_OFFSET)]
    with api.register() as reg:
        reg.acquire(resource_string(path, 1, "good"))
        (held,) = reg.inquire()
        assert (held.name, held.lver, held.shared) == ("good", lver, False)
        reg.release("LS:good")
        assert reg.inquire() == []
    return time.monotonic() - start


def test_fuzzed_socket_keeps_serving(tmp_path: Path) -> None:
    path = lease_file(tmp_path / "leases")
    with daemon_process() as d:
        d.api.write_lockspace(LS, path, LS_OFFSET, io_timeout=IO_TIMEOUT)
        d.api.write_resource(resource_string(path, 1, "good"))
        d.api.add_lockspace(LS, 1, path, LS_OFFSET, io_timeout=IO_TIMEOUT)
        frames = [p.encode_request(req) for req in _valid_requests(path)]
        socket_path = str(d.socket_path)

        idle = []
        for i in range(IDLE_CONNECTIONS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(socket_path)
            if i % 2:
                sock.sendall(frames[i % len(frames)][:20])  # a header left unfinished
            idle.append(sock)

        fuzzers = [Fuzzer(socket_path, frames, SEED + i) for i in range(THREADS)]
        errors: list[BaseException] = []
        until = time.monotonic() + FUZZ_SECONDS
        threads = [
            threading.Thread(target=f.run, args=(until, errors), daemon=True) for f in fuzzers
        ]
        for thread in threads:
            thread.start()
        rounds: list[float] = []
        try:
            while time.monotonic() < until:
                rounds.append(_good_client_round(d, path, len(rounds) + 1))
        finally:
            for thread in threads:
                thread.join(10)
            for sock in idle:
                sock.close()
        assert not errors, errors
        cases = sum(f.cases for f in fuzzers)
        kinds: dict[str, int] = {}
        for f in fuzzers:
            for kind, n in f.cases_by_kind.items():
                kinds[kind] = kinds.get(kind, 0) + n
        print(
            f"fuzz: {cases} connections from {THREADS} threads in {FUZZ_SECONDS:.0f} s "
            f"({kinds}); good client: {len(rounds)} rounds, slowest {max(rounds) * 1000:.0f} ms"
        )
        d.check(len(rounds) >= 5, f"the good client got only {len(rounds)} rounds through")
        d.check(cases >= 100, f"only {cases} fuzz cases ran")

        # afterwards: alive, serving, and nothing left behind
        d.check(d.alive, "the daemon exited under fuzzing")
        _good_client_round(d, path, len(rounds) + 1)
        assert d.api.status().resources == ()
        d.check("Traceback" not in d.log(), "the daemon logged a Python traceback")
