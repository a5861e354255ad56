"""The daemon as a real subprocess: its life cycle, and leases through registered connections.

Each daemon is ``python3 -m sync_manager daemon -D -w 0 -e host1`` on its own run dir
(tests/integration/daemon_proc.py), with lease areas in sparse files initialised through our
client (WRITE_LOCKSPACE / WRITE_RESOURCE on the daemon). Lockspaces use io_timeout 1, so a
join takes 2N = 2 s. Time bounds below are generous on purpose: they only tell which path the
daemon took (a 2N join, not the 8N + 60 wait for a host id another host may hold).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sync_manager.client import (
    Client,
    HeldLease,
    HostState,
    LockspaceInfo,
    SanlockError,
    resource,
)
from tests.integration.daemon_proc import (
    IO_TIMEOUT,
    LS,
    LS_OFFSET,
    DaemonProcess,
    MiB,
    daemon_process,
    hosts,
    lease_file,
    resource_string,
    start_holder,
    stop_process,
)

SANLK_ACQUIRE_LVER = -240
JOIN_BOUND = 8 * IO_TIMEOUT  # a join on the fast path takes 2N; the slow one 8N + 60


def _init(client: Client, path: Path, resources: int) -> None:
    """Lockspace LS at offset 0 of ``path`` and resources r1..rN at 1..N MiB."""
    client.write_lockspace(LS, path, LS_OFFSET, io_timeout=IO_TIMEOUT)
    for index in range(1, resources + 1):
        client.write_resource(resource_string(path, index))


def _join(daemon: DaemonProcess, path: Path, host_id: int = 1) -> float:
    """ADD_LOCKSPACE (synchronous); the seconds it took."""
    start = time.monotonic()
    daemon.api.add_lockspace(LS, host_id, path, LS_OFFSET, io_timeout=IO_TIMEOUT)
    return time.monotonic() - start


def _code(excinfo: pytest.ExceptionInfo[SanlockError]) -> int:
    return excinfo.value.code


# --- life cycle ------------------------------------------------------------------------------


def test_lifecycle(tmp_path: Path) -> None:
    path = lease_file(tmp_path / "leases")
    with daemon_process() as d:
        c = d.api
        assert str(c.version()) == "3.8.5"
        status = c.status()
        assert status.daemon is not None and status.daemon.host_name == "host1"
        assert status.lockspaces == ()
        _init(c, path, 1)

        # synchronous add: joined when it returns, in about 2N
        took = _join(d, path)
        print(f"synchronous join: {took:.2f} s")
        d.check(took < JOIN_BOUND, f"join took {took:.1f} s")
        assert c.get_lockspaces() == [LockspaceInfo(LS, 1, str(path), LS_OFFSET)]
        assert c.inq_lockspace(LS, 1, path, LS_OFFSET) is True
        (host,) = hosts(c)
        assert (host.host_id, host.generation, host.io_timeout) == (1, 1, IO_TIMEOUT)
        assert host.state is HostState.LIVE
        with pytest.raises(SanlockError) as again:
            c.add_lockspace(LS, 1, path, LS_OFFSET, io_timeout=IO_TIMEOUT)
        assert _code(again) == -errno.EEXIST

        # shutdown without force is refused while a lockspace is joined
        with pytest.raises(SanlockError) as busy:
            c.shutdown(wait=True)
        assert _code(busy) == -errno.EBUSY
        c.shutdown()  # SHUTDOWN (no reply): ignored
        d.wait_log("shutdown ignored", 5)
        assert d.alive and str(c.version()) == "3.8.5"

        # remove, then add asynchronously and wait with INQ_LOCKSPACE
        c.rem_lockspace(LS, 1, path, LS_OFFSET)
        assert c.get_lockspaces() == []
        assert c.inq_lockspace(LS, 1, path, LS_OFFSET) is False
        start = time.monotonic()
        c.add_lockspace(LS, 1, path, LS_OFFSET, io_timeout=IO_TIMEOUT, wait=False)
        assert c.inq_lockspace(LS, 1, path, LS_OFFSET) is None  # being added
        (adding,) = c.get_lockspaces()
        assert adding.adding and not adding.removing
        assert c.inq_lockspace(LS, 1, path, LS_OFFSET, wait=True) is True
        took = time.monotonic() - start
        print(f"asynchronous join: {took:.2f} s")
        d.check(took < JOIN_BOUND, f"async join took {took:.1f} s")
        assert c.get_lockspaces() == [LockspaceInfo(LS, 1, str(path), LS_OFFSET)]
        assert hosts(c)[0].generation == 2  # a new join after a clean leave

        # a second daemon on the same run dir is refused, and says why
        assert d.proc is not None
        second = subprocess.run(
            d.argv(), env=d.env, capture_output=True, text=True, timeout=30, check=False
        )
        assert second.returncode == 1, second.stderr
        assert str(d.run_dir / "sanlock.pid") in second.stderr
        assert f"pid {d.proc.pid}" in second.stderr
        assert d.alive and c.get_lockspaces()  # and the first one is untouched

        # forced shutdown: leaves the lockspace, then the process exits
        done = d.client("shutdown", "-f", "1")
        assert done.returncode == 0, done.stderr
        try:
            rc = d.proc.wait(10)
        except subprocess.TimeoutExpired:
            d.fail("the daemon still runs 10 s after shutdown -f 1")
        assert rc == 0
        assert "lockspace LS: host id 1 released" in d.log()
        assert not (d.run_dir / "sanlock.sock").exists()


def test_restart_after_a_crash_rejoins_on_the_fast_path(tmp_path: Path) -> None:
    # The same -e name finds its own (unreleased) delta lease: it may take it back after 2N,
    # not after the 8N + 60 a host id held by another host costs.
    path = lease_file(tmp_path / "leases")
    with daemon_process() as d:
        _init(d.api, path, 1)
        _join(d, path)
        first = hosts(d.api, 1)[0].generation
        d.crash()  # crash: the delta lease stays held on disk
        d.restart()
        took = _join(d, path)
        print(f"join after a crash, same host name: {took:.2f} s")
        d.check(took < JOIN_BOUND, f"rejoin took {took:.1f} s: not the fast path")
        assert hosts(d.api, 1)[0].generation == first + 1


def test_a_join_longer_than_the_fail_deadline_keeps_the_lockspace(tmp_path: Path) -> None:
    # The host id's record on disk says io_timeout 5 (written so), the join asks for 1: the
    # acquire waits 2 x 5 = 10 s (sanlock's rule), past io_timeout 1's 8 s fail deadline.
    # The daemon renews before the fencing clock starts, so the lockspace lives and serves.
    path = lease_file(tmp_path / "leases")
    with daemon_process() as d:
        d.api.write_lockspace(LS, path, LS_OFFSET, io_timeout=5)
        d.api.write_resource(resource_string(path, 1))
        took = _join(d, path)
        d.check(took >= 10, f"the join took {took:.1f} s, not the 2 x 5 s the disk asks for")
        time.sleep(2 * IO_TIMEOUT)  # the fencer's first checks
        assert d.api.inq_lockspace(LS, 1, path, LS_OFFSET) is True
        with d.api.register() as reg:
            reg.acquire(resource_string(path, 1))
            assert [lease.name for lease in reg.inquire()] == ["r1"]
        d.check("recovery started" not in d.log(), "the join started recovery")


# --- leases ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, Path]]:
    """One daemon for the lease tests, joined to LS; each test uses resources of its own."""
    path = lease_file(tmp_path_factory.mktemp("leases") / "leases")
    with daemon_process() as d:
        _init(d.api, path, 12)
        _join(d, path)
        yield d, path


def test_acquire_inquire_release(joined: tuple[DaemonProcess, Path]) -> None:
    d, path = joined
    res = resource_string(path, 1)
    with d.api.register() as reg:
        reg.acquire(res)
        assert reg.inquire() == [HeldLease(LS, "r1", ((str(path), MiB),), 1, False)]
        (state,) = d.api.status().resources
        assert (state.name, state.pid, state.lver, state.shared) == ("r1", os.getpid(), 1, False)
        reg.release("LS:r1")
        assert reg.inquire() == []
        with pytest.raises(SanlockError) as not_held:
            reg.release("LS:r1")
        assert _code(not_held) == -1  # sanlock's raw -1
        with reg.lease(LS, "r1", [(path, MiB)]) as held:
            assert held.lver == 2
    assert d.api.status().resources == ()


def test_local_exclusion_at_once(joined: tuple[DaemonProcess, Path]) -> None:
    d, path = joined
    res = resource_string(path, 2)
    holder = start_holder(d, res)
    try:
        with d.api.register() as reg:
            start = time.monotonic()
            with pytest.raises(SanlockError) as held:
                reg.acquire(res)
            took = time.monotonic() - start
            assert _code(held) == -errno.EEXIST
            d.check(took < 1.0, f"-EEXIST took {took:.2f} s: not answered without disk I/O")
            assert reg.inquire() == []
    finally:
        stop_process(holder)


def test_acquire_on_behalf_of_another_pid(joined: tuple[DaemonProcess, Path]) -> None:
    d, path = joined
    c = d.api
    res = resource_string(path, 3)
    # a process that registers and waits: the daemon acts on its leases by its pid
    other = subprocess.Popen(
        [sys.executable, "-c", _REGISTERED],
        env=d.env,
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "registered"
        c.acquire(other.pid, res, owner_name="vm3")
        (held,) = c.inquire(other.pid)
        assert (held.name, held.lver, held.shared) == ("r3", 1, False)
        (state,) = [r for r in c.status().resources if r.name == "r3"]
        assert state.pid == other.pid
        with pytest.raises(SanlockError) as busy, c.register() as reg:
            reg.acquire(res)
        assert _code(busy) == -errno.EEXIST
        c.release(other.pid, ["LS:r3"])
        assert c.inquire(other.pid) == []
        # the lease is free again; and a pid that is not registered is refused
        with c.lease(LS, "r3", [(path, 3 * MiB)]) as again:
            assert again.lver == 2
        with pytest.raises(SanlockError) as nobody:
            c.acquire(os.getpid(), res)
        assert _code(nobody) == -errno.ESRCH
    finally:
        stop_process(other)


_REGISTERED = """
import time
from sync_manager.client import Client
registration = Client().register()
registration.inquire()  # a round trip: REGISTER has been handled
print("registered", flush=True)
time.sleep(3600)
"""


def test_shared_shared_and_convert(joined: tuple[DaemonProcess, Path]) -> None:
    d, path = joined
    shared = resource(LS, "r4", [(path, 4 * MiB)], shared=True)
    with d.api.register() as one, d.api.register() as two:
        one.acquire(shared)
        two.acquire(shared)
        assert [h.shared for h in one.inquire() + two.inquire()] == [True, True]
        assert [h.lver for h in one.inquire()] == [None]
        with pytest.raises(SanlockError) as both:
            one.convert("LS:r4", shared=False)  # another local holder shares it
        assert _code(both) == -errno.EEXIST
        # an exclusive request meets the shared holders
        with pytest.raises(SanlockError) as excl, d.api.register() as three:
            three.acquire(resource(LS, "r4", [(path, 4 * MiB)]))
        assert _code(excl) == -errno.EEXIST
        two.release("LS:r4")
        one.convert("LS:r4", shared=False)
        (held,) = one.inquire()
        assert not held.shared and held.lver is not None and held.lver >= 1
        one.convert("LS:r4", shared=True)
        (held,) = one.inquire()
        assert held.shared
        two.acquire(shared)  # shared again: a second holder is welcome
        one.release("LS:r4")
        two.release("LS:r4")
    assert [r for r in d.api.status().resources if r.name == "r4"] == []


def test_lver_mismatch(joined: tuple[DaemonProcess, Path]) -> None:
    d, path = joined
    disks = [(path, 5 * MiB)]
    with d.api.register() as reg:
        with pytest.raises(SanlockError) as wrong:
            reg.acquire(resource(LS, "r5", disks, lver=7))
        assert _code(wrong) == SANLK_ACQUIRE_LVER
        assert wrong.value.name == "SANLK_ACQUIRE_LVER"
        assert reg.inquire() == []
        reg.acquire(resource(LS, "r5", disks))  # lver 0 -> 1
        reg.release("LS:r5")
        reg.acquire(resource(LS, "r5", disks, lver=1))  # the version on disk: fine
        assert [h.lver for h in reg.inquire()] == [2]
        reg.release("LS:r5")


def test_live_areas_are_not_rewritten(joined: tuple[DaemonProcess, Path]) -> None:
    # Beyond sanlock, which writes them: a lockspace this host has joined (every host's delta
    # lease would be erased) and a lease held here (it would be free on disk while held),
    # whatever the name written and wherever the area written overlaps them.
    d, path = joined
    res = resource_string(path, 7)
    over_lockspace: list[Callable[[], object]] = [
        lambda: d.api.write_lockspace("OTHER", path, LS_OFFSET, io_timeout=IO_TIMEOUT),
        lambda: d.api.write_resource(f"LS:over-ls:{path}:{LS_OFFSET + 512 * 1024}"),
    ]
    for write in over_lockspace:
        with pytest.raises(SanlockError) as joined_ls:
            write()
        assert _code(joined_ls) == -errno.EBUSY
        assert "overlaps a lockspace this host has joined" in str(joined_ls.value)
    with d.api.register() as reg:
        reg.acquire(res)
        over_lease: list[Callable[[], object]] = [
            lambda: d.api.write_resource(f"LS:renamed:{path}:{7 * MiB}"),
            lambda: d.api.write_lockspace("OVER", path, 7 * MiB, io_timeout=IO_TIMEOUT),
        ]
        for write in over_lease:
            with pytest.raises(SanlockError) as held:
                write()
            assert _code(held) == -errno.EBUSY
        assert [lease.lver for lease in reg.inquire()] == [1]
    d.api.write_resource(res)  # released: allowed again
    log = d.log()
    assert f"write_resource LS:renamed refused: {path}:{7 * MiB} is within lease LS:r7" in log
    assert f"write_lockspace OTHER refused: {path}:0 is within lockspace LS" in log


def test_unknown_lockspace(joined: tuple[DaemonProcess, Path]) -> None:
    d, path = joined
    with d.api.register() as reg:
        with pytest.raises(SanlockError) as nope:
            reg.acquire(f"NOPE:r6:{path}:{6 * MiB}")
        assert _code(nope) == -errno.ENOSPC == -28
        assert reg.inquire() == []
    assert d.alive
