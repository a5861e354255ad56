"""A real QEMU live migration under leases, through the VM lock hooks (integrations/vm_locks).

Three of our daemons on one lease file (sparse, lockspace io_timeout 1), each its own run dir,
joined as host ids 1, 2 and 3: host 1 runs the source QEMU, host 2 the destination, and host 3
is a third host that tries to take the VM's lease EX at every step and must always be refused.
QEMU (``qemu-system-x86_64 -M q35 -m 64``, TCG, no guest OS) is started by the wrapper argv of
:meth:`VmLocks.launch`, so the QEMU process itself is registered and holds the leases; it is
driven over QMP; the migration is QMP ``migrate`` to ``tcp:127.0.0.1:PORT`` (the destination
started with ``-S -incoming``), polled with ``query-migrate``.

Missing QEMU skips outside CI and fails in CI (tests/loopdev.py ``require``). The refusals
the third host got are printed (``pytest -s``), step by step.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sync_manager.client import Client, Registration, SanlockError
from sync_manager.integrations.vm_locks import VmLocks, VmLockTimeout, VmState
from tests.integration.daemon_proc import (
    IO_TIMEOUT,
    LS,
    LS_OFFSET,
    DaemonProcess,
    daemon_process,
    lease_file,
    resource_string,
)
from tests.loopdev import require

QEMU = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
# A small machine with RAM to move, no devices, paused at start (-S): the manager resumes it
# only once it holds the lease EX.
MACHINE = ["-M", "q35", "-m", "64", "-accel", "tcg", "-nodefaults", "-display", "none", "-S"]
WAIT = 30.0  # bound on a wait that should end within a second; reached only on failure
SLOW_BANDWIDTH = 4096  # bytes/s: a migration that stays active until we kill the destination

# The third host's refusals: EX held by a live host (its leader owned): SANLK_ACQUIRE_IDLIVE;
# SH held (the leader is free, live shared holders): -EAGAIN.
IDLIVE = -243
SHARED_HELD = -errno.EAGAIN

Refusals = list[tuple[str, int, str]]


@dataclass
class Cluster:
    """Three daemons joined to LS as host ids 1, 2, 3, with a VM lock manager on each."""

    path: Path
    hosts: tuple[DaemonProcess, DaemonProcess, DaemonProcess]
    locks: tuple[VmLocks, VmLocks, VmLocks]
    third: Registration  # a process on host 3 that tries to take the leases


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    require(shutil.which(QEMU), "needs qemu-system-x86_64 (apt-get install qemu-system-x86)")
    workdir = Path(tempfile.mkdtemp(prefix="smvm", dir="/tmp"))
    path = lease_file(workdir / "leases", 4 * (1 << 20))
    try:
        with contextlib.ExitStack() as stack:
            daemons = tuple(stack.enter_context(daemon_process(f"host{i}")) for i in (1, 2, 3))
            first = daemons[0].api
            first.write_lockspace(LS, path, LS_OFFSET, io_timeout=IO_TIMEOUT)
            for index in (1, 2):
                first.write_resource(resource_string(path, index))
            for host_id, d in enumerate(daemons, 1):  # the three joins run at once
                d.api.add_lockspace(LS, host_id, path, LS_OFFSET, wait=False)
            for host_id, d in enumerate(daemons, 1):
                d.check(d.api.inq_lockspace(LS, host_id, path, LS_OFFSET, wait=True), "no join")
            third = stack.enter_context(daemons[2].api.register())
            locks = tuple(VmLocks(d.api) for d in daemons)
            yield Cluster(path, daemons, locks, third)  # type: ignore[arg-type]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- QEMU and QMP ---------------------------------------------------------------------------


class Qmp:
    """A QMP connection: one command at a time, events skipped."""

    def __init__(self, path: Path, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + WAIT
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            try:
                self.sock.connect(str(path))
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    self.sock.close()
                    raise
            time.sleep(0.02)  # polling for QEMU's monitor socket; nothing announces it
        self.sock.settimeout(WAIT)
        self.file = self.sock.makefile("rwb")
        self._read()  # the greeting
        self.call("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise ConnectionError("QMP connection closed")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, command: str, **arguments: Any) -> Any:
        """The command's ``return`` value; AssertionError on a QMP error."""
        self.file.write(json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n")
        self.file.flush()
        while True:
            reply = self._read()
            if "event" not in reply:
                break
        assert "error" not in reply, f"QMP {command}: {reply['error']}"
        return reply.get("return")

    def status(self) -> str:
        return str(self.call("query-status")["status"])

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Qemu:
    """A QEMU process started by the VM lock manager's wrapper argv."""

    def __init__(self, locks: VmLocks, vm_id: str, lease: str, *extra: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="smq", dir="/tmp"))
        self.qmp_path = self.dir / "qmp.sock"
        command = [QEMU, *MACHINE, "-qmp", f"unix:{self.qmp_path},server=on,wait=off", *extra]
        launch = locks.launch(vm_id, [lease], command, incoming="-incoming" in extra)
        self.proc = subprocess.Popen(
            launch.argv,
            env={**os.environ, **launch.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.pid = self.proc.pid  # the wrapper execs QEMU: the same pid
        self._qmp: Qmp | None = None

    @property
    def qmp(self) -> Qmp:
        """QMP, once QEMU runs (the wrapper has acquired the leases and exec'd it)."""
        if self._qmp is None:
            try:
                self._qmp = Qmp(self.qmp_path, self.proc)
            except OSError:
                pytest.fail(f"QEMU did not start: {self.stop()}")
        return self._qmp

    def exit_status(self) -> int:
        """Wait for the process (bounded) and return its exit status."""
        return self.proc.wait(WAIT)

    def stop(self) -> str:
        """Kill QEMU if it runs, reap it; its stderr."""
        if self._qmp is not None:
            self._qmp.close()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        _, err = self.proc.communicate(timeout=WAIT)
        shutil.rmtree(self.dir, ignore_errors=True)
        return err.decode(errors="replace")


@contextlib.contextmanager
def qemus() -> Iterator[list[Qemu]]:
    """A list to put QEMUs in; every one is stopped at the end."""
    started: list[Qemu] = []
    try:
        yield started
    finally:
        for q in started:
            q.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_migration(src: Qmp, until: set[str]) -> dict[str, Any]:
    """Poll ``query-migrate`` until its status is in ``until``; the last answer."""
    deadline = time.monotonic() + WAIT
    while True:
        info: dict[str, Any] = src.call("query-migrate")
        if info.get("status") in until:
            return info
        assert time.monotonic() < deadline, f"migration still {info.get('status')}"
        time.sleep(0.05)  # polling: query-migrate is how QMP reports progress


# --- the lease, seen from each host -----------------------------------------------------------


def probe(c: Cluster, lease: str, step: str, expected: int, refusals: Refusals) -> None:
    """The third host tries to take ``lease`` EX; it must be refused with ``expected``."""
    try:
        c.third.acquire(lease)
    except SanlockError as err:
        refusals.append((step, err.code, err.name))
        assert err.code == expected, f"{step}: host 3 refused with {err}, expected {expected}"
        return
    c.third.release(lease)
    pytest.fail(f"{step}: host 3 acquired {lease} EX: two hosts could write")


def held(api: Client, pid: int) -> list[str]:
    """What ``pid`` holds, ``NAME:EX`` or ``NAME:SH``."""
    return [f"{h.name}:{'SH' if h.shared else 'EX'}" for h in api.inquire(pid)]


def owners(c: Cluster, index: int) -> tuple[bool, list[int]]:
    """The lease's on-disk owners: (shared, host ids)."""
    got = c.hosts[0].api.read_resource_owners(LS, f"r{index}", c.path, index * (1 << 20))
    return got.shared, sorted(h.host_id for h in got.owners)


def state(locks: VmLocks, vm_id: str) -> VmState | None:
    """The VM's state on that host (None: not known there)."""
    vm = locks.vm(vm_id)
    return vm.state if vm is not None else None


def report(title: str, refusals: Refusals) -> None:
    print(f"\n{title}: host 3's EX acquire at each step", file=sys.stderr)
    for step, code, name in refusals:
        print(f"  {step:<44} {code} {name}", file=sys.stderr)


# --- the tests ----------------------------------------------------------------------------


def test_live_migration_moves_the_lease(cluster: Cluster) -> None:
    c, lease, vm = cluster, resource_string(cluster.path, 1), "vm-live"
    src_locks, dst_locks, _ = c.locks
    h1, h2, _ = (d.api for d in c.hosts)
    refusals: Refusals = []
    port = free_port()
    with qemus() as started:
        src = Qemu(src_locks, vm, lease)
        started.append(src)
        src.qmp.call("query-status")
        src_locks.vm_start(vm, src.pid, [lease])
        assert held(h1, src.pid) == ["r1:EX"]
        src.qmp.call("cont")  # the guest runs only while the lease is held
        assert src.qmp.status() == "running"
        probe(c, lease, "source running (EX on host 1)", IDLIVE, refusals)

        # The destination cannot even start while the source holds EX: its wrapper is refused.
        early = Qemu(dst_locks, vm, lease, "-incoming", f"tcp:127.0.0.1:{port}")
        started.append(early)
        assert early.exit_status() == 75, early.stop()

        src_locks.migrate_begin(vm)
        assert held(h1, src.pid) == ["r1:SH"]
        assert owners(c, 1) == (True, [1])
        probe(c, lease, "migrate_begin (SH on host 1)", SHARED_HELD, refusals)

        dst = Qemu(dst_locks, vm, lease, "-incoming", f"tcp:127.0.0.1:{port}")
        started.append(dst)
        assert dst.qmp.status() == "inmigrate"
        dst_locks.migrate_prepare_destination(vm, dst.pid, [lease])
        assert held(h2, dst.pid) == ["r1:SH"]
        assert owners(c, 1) == (True, [1, 2])
        probe(c, lease, "prepare_destination (SH on hosts 1, 2)", SHARED_HELD, refusals)

        src.qmp.call("migrate", uri=f"tcp:127.0.0.1:{port}")
        info = wait_migration(src.qmp, {"completed", "failed", "cancelled"})
        assert info["status"] == "completed", info
        assert src.qmp.status() == "postmigrate"
        probe(c, lease, "migration completed (SH on hosts 1, 2)", SHARED_HELD, refusals)

        # The destination's SH -> EX waits for the source's release.
        with pytest.raises(VmLockTimeout) as waited:
            dst_locks.migrate_finish(vm, timeout=1.0)
        assert waited.value.last is not None and waited.value.last.code == -errno.EAGAIN
        assert state(dst_locks, vm) is VmState.INCOMING

        src_locks.migrate_finish(vm)
        assert state(src_locks, vm) is None
        assert h1.inquire(src.pid) == []
        probe(c, lease, "source finished (SH on host 2)", SHARED_HELD, refusals)
        src.qmp.call("quit")
        assert src.exit_status() == 0

        dst_locks.migrate_finish(vm)
        assert held(h2, dst.pid) == ["r1:EX"]
        assert owners(c, 1) == (False, [2])
        dst.qmp.call("cont")
        assert dst.qmp.status() == "running"
        probe(c, lease, "destination finished (EX on host 2)", IDLIVE, refusals)

        # The lease manager kills the VM: a FORCE request, examined by host 2's daemon.
        dst_locks.vm_destroy(vm)
        assert dst.exit_status() == -signal.SIGKILL
        assert state(dst_locks, vm) is None
    report("live migration", refusals)


def test_migration_aborted_by_a_dead_destination(cluster: Cluster) -> None:
    c, lease, vm = cluster, resource_string(cluster.path, 2), "vm-abort"
    src_locks, dst_locks, _ = c.locks
    h1, h2, _ = (d.api for d in c.hosts)
    refusals: Refusals = []
    port = free_port()
    with qemus() as started:
        src = Qemu(src_locks, vm, lease)
        started.append(src)
        src.qmp.call("query-status")
        src_locks.vm_start(vm, src.pid, [lease])
        src.qmp.call("cont")
        src_locks.migrate_begin(vm)
        dst = Qemu(dst_locks, vm, lease, "-incoming", f"tcp:127.0.0.1:{port}")
        started.append(dst)
        dst.qmp.call("query-status")
        dst_locks.migrate_prepare_destination(vm, dst.pid, [lease])
        assert held(h2, dst.pid) == ["r2:SH"]
        assert owners(c, 2) == (True, [1, 2])

        # A migration slow enough to still be under way when the destination dies.
        src.qmp.call("migrate-set-parameters", **{"max-bandwidth": SLOW_BANDWIDTH})
        src.qmp.call("migrate", uri=f"tcp:127.0.0.1:{port}")
        assert wait_migration(src.qmp, {"active"})["status"] == "active"
        probe(c, lease, "migrating (SH on hosts 1, 2)", SHARED_HELD, refusals)

        dst.proc.kill()
        assert dst.exit_status() == -signal.SIGKILL
        info = wait_migration(src.qmp, {"completed", "failed", "cancelled"})
        assert info["status"] == "failed", info
        probe(c, lease, "destination killed (SH on host 1)", SHARED_HELD, refusals)

        dst_locks.migrate_abort(vm)  # its leases went with its process
        assert state(dst_locks, vm) is None
        src_locks.migrate_abort(vm)
        assert held(h1, src.pid) == ["r2:EX"]
        assert owners(c, 2) == (False, [1])
        assert state(src_locks, vm) is VmState.RUNNING
        assert src.qmp.status() == "running"  # QEMU resumes the source when a migration fails
        probe(c, lease, "migrate_abort (EX on host 1)", IDLIVE, refusals)

        src.qmp.call("quit")
        assert src.exit_status() == 0
        src_locks.vm_shutdown(vm)
        assert state(src_locks, vm) is None
    # Nobody holds it now: the third host gets it, so its refusals above were the holders'.
    c.third.acquire(lease)
    c.third.release(lease)
    with pytest.raises(SanlockError) as gone:
        h2.inquire(dst.pid)
    assert gone.value.code == -errno.ESRCH
    report("aborted migration", refusals)
