"""Our client (the Python API and ``sync_manager client``) against a real sanlock daemon.

One sanlock daemon for the module, in its own run dir (``SANLOCK_PRIVILEGED=0``, no watchdog),
with lockspace LS (io_timeout 1, so a join takes ~3 s) and resource leases R and Q in one
sparse file. Where both CLIs print the same facts, ``sync_manager client X`` must print what
``sanlock client X`` prints, byte for byte (a line holding a renewal timestamp may move
between the two runs, so those comparisons are retried). In CI a missing sanlock fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sync_manager.client import Client, DaemonNotRunning, HostState, SanlockError

pytestmark = pytest.mark.interop

SANLOCK = shutil.which("sanlock") or "/usr/sbin/sanlock"
MIB = 1024 * 1024


@dataclass
class Sanlock:
    """The daemon under test: its run dir, environment and lease file."""

    run_dir: Path
    env: dict[str, str]
    leases: Path
    proc: subprocess.Popen[bytes]

    def sanlock(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``sanlock client ARGS``."""
        return subprocess.run(
            [SANLOCK, "client", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def ours(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python3 -m sync_manager client ARGS``."""
        return subprocess.run(
            [sys.executable, "-m", "sync_manager", "client", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def same(self, *args: str, tries: int = 3) -> str:
        """Assert both CLIs print the same and exit alike (clock readings, which move between
        the two runs, compared as zero or not); our output."""
        for _ in range(tries):
            theirs, ours = self.sanlock(*args), self.ours(*args)
            if (_steady(theirs.stdout), theirs.returncode) == (
                _steady(ours.stdout),
                ours.returncode,
            ):
                assert "Traceback" not in ours.stderr
                return ours.stdout
        assert _steady(ours.stdout) == _steady(theirs.stdout), ours.stderr
        assert ours.returncode == theirs.returncode
        return ours.stdout

    def res(self, name: str, offset: int) -> str:
        return f"LS:{name}:{self.leases}:{offset}"


# key=value fields that are clock readings (seconds of the daemon's monotonic clock)
_CLOCK = re.compile(
    r"\b(monotime|last_check|last_live|renewal_last_attempt|renewal_last_success)=[1-9][0-9]*"
)


def _steady(text: str) -> str:
    """``text`` with non-zero clock readings replaced by ``<t>``."""
    return _CLOCK.sub(r"\1=<t>", text)


def _require_sanlock() -> None:
    if not Path(SANLOCK).exists():
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail("sanlock is not installed (apt-get install sanlock)")
        pytest.skip("sanlock is not installed")


@pytest.fixture(scope="module")
def daemon() -> Iterator[Sanlock]:
    """A real sanlock daemon that joined LS as host 1; R at 1 MiB and Q at 2 MiB."""
    _require_sanlock()
    run_dir = Path(tempfile.mkdtemp(prefix="smcl", dir="/tmp"))  # socket path < 108 bytes
    env = dict(os.environ, SANLOCK_RUN_DIR=str(run_dir), SANLOCK_PRIVILEGED="0")
    log = (run_dir / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [SANLOCK, "daemon", "-D", "-w", "0", "-l", "0", "-U", "root", "-G", "root"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    leases = run_dir / "leases"
    with leases.open("wb") as f:
        f.truncate(8 * MIB)
    sl = Sanlock(run_dir, env, leases, proc)
    try:
        deadline = time.monotonic() + 20
        while not (run_dir / "sanlock.sock").exists():
            assert proc.poll() is None, (run_dir / "daemon.log").read_text()
            assert time.monotonic() < deadline, "sanlock did not start"
            time.sleep(0.05)  # polling for the socket: sanlock has no readiness signal
        client = Client(run_dir, timeout=30)
        client.write_lockspace("LS", leases, 0, io_timeout=1)
        client.write_resource(sl.res("R", MIB))
        client.write_resource(sl.res("Q", 2 * MIB))
        client.add_lockspace("LS", 1, leases, 0, io_timeout=1)
        deadline = time.monotonic() + 10
        while True:  # GET_HOSTS says -EAGAIN until the first renewal after the join (~2 s)
            try:
                client.get_hosts("LS")
                break
            except SanlockError as err:
                assert err.name == "EAGAIN" and time.monotonic() < deadline, err
                time.sleep(0.2)  # polling: the daemon announces no renewal
        yield sl
    finally:
        if proc.poll() is None:
            with contextlib.suppress(SanlockError):
                Client(run_dir, timeout=15).shutdown(force=True, wait=True)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
        log.close()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def client(daemon: Sanlock) -> Client:
    return Client(daemon.run_dir, timeout=30)


@pytest.fixture
def registered(daemon: Sanlock) -> Iterator[int]:
    """Another process, registered with the daemon (no leases); its pid."""
    code = (
        "import sys, time; from sync_manager.client import Client\n"
        "reg = Client(timeout=10).register(); print('ok', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=daemon.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ok\n"
    try:
        yield proc.pid
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_version_and_queries(daemon: Sanlock, client: Client) -> None:
    assert str(client.version()) == "3.8.5"
    assert client.version().proto == 1
    assert client.inq_lockspace("LS", 1, daemon.leases) is True
    assert client.inq_lockspace("LS", 2, daemon.leases) is False
    [ls] = client.get_lockspaces()
    assert (ls.name, ls.host_id, ls.path, ls.offset, ls.adding) == (
        "LS",
        1,
        str(daemon.leases),
        0,
        False,
    )
    hosts = client.get_hosts("LS")
    assert [(h.host_id, h.generation, h.state) for h in hosts] == [(1, 1, HostState.LIVE)]
    leader = client.read_lockspace(daemon.leases)
    assert (leader.name, leader.io_timeout, leader.sector_size, leader.align_size) == (
        "LS",
        1,
        512,
        MIB,
    )
    info = client.read_resource(daemon.leases, MIB)
    assert (info.lockspace, info.name, info.lver) == ("LS", "R", 0)
    assert client.align(daemon.leases) == MIB
    [host] = client.host_status("LS")
    assert (host.host_id, host.fields["owner_id"], host.fields["io_timeout"]) == (1, "1", "1")
    with pytest.raises(SanlockError) as caught:
        client.host_status("NOPE")
    assert caught.value.name == "ENOSPC"
    assert "cmd_" in client.log_dump()


def test_cli_output_matches_sanlock(daemon: Sanlock) -> None:
    ls = f"LS:1:{daemon.leases}:0"
    assert daemon.same("version").startswith("client version 3.8.5 (0x03080500)\n")
    assert (
        daemon.same("gets", "-h", "1")
        == f"s {ls} \nh 1 gen 1 timestamp "
        + (daemon.sanlock("gets", "-h", "1").stdout.split("timestamp ")[1])
    )
    assert daemon.same("status").splitlines()[1:] == [
        "p -1 helper",
        "p -1 listener",
        "p -1 status",
        f"s {ls}",
    ]
    for args in (["status", "-D"], ["status", "-o", "p"], ["status", "-o", "s", "-D"]):
        daemon.same(*args, tries=5)
    assert daemon.same("host_status", "-s", "LS").startswith("1 timestamp ")
    daemon.same("host_status", "-s", "LS", "-D", tries=5)
    daemon.same("host_status")
    assert daemon.same("host_status", "-s", "NOPE") == ""
    assert daemon.same("read", "-s", f"LS:0:{daemon.leases}:0", "-D").splitlines() == [
        f"s {ls}",
        "io_timeout 1",
        "sector_size 512",
        "align_size 1048576",
    ]
    assert daemon.same("read", "-r", daemon.res("R", MIB), "-D").startswith(
        f"r {daemon.res('R', MIB)}:"
    )
    assert daemon.same("read", "-r", f"LS:X:{daemon.leases}:1M") == "read error -227\n"
    assert daemon.same("inq_lockspace", "-s", ls) == "inq_lockspace\ninq_lockspace done 0\n"
    out = daemon.same("inq_lockspace", "-s", f"LS:2:{daemon.leases}:0")
    assert out.endswith("done -2\n")
    assert daemon.same("inquire", "-p", "1") == "inquire pid 1\ninquire done -3 res_count 0\n"
    # align's result is a size: sanlock exits 1 on it, we exit 0
    ours = daemon.ours("align", "-s", ls)
    assert (ours.stdout, ours.returncode) == ("align\nalign done 1048576\n", 0)


def test_lease_context_manager(daemon: Sanlock, client: Client) -> None:
    pid = os.getpid()
    with client.lease("LS", "R", [(daemon.leases, MIB)]) as held:
        assert (held.name, held.disks, held.shared) == ("R", ((str(daemon.leases), MIB),), False)
        assert held.lver is not None and held.lver >= 1
        assert client.inquire(pid) == [held]
        status = client.status()
        assert [(r.name, r.pid, r.lver, r.list) for r in status.resources] == [
            ("R", pid, held.lver, "held")
        ]
        assert any(c.pid == pid for c in status.clients)
        owners = client.read_resource_owners("LS", "R", daemon.leases, MIB)
        assert [(o.host_id, o.generation) for o in owners.owners] == [(1, 1)]
        # what both CLIs print about it
        assert daemon.same("inquire", "-p", str(pid)) == (
            f'inquire pid {pid}\ninquire done 0 res_count 1\n"{daemon.res("R", MIB)}:{held.lver}"\n'
        )
        daemon.same("inquire", "-p", str(pid), "-D")
        assert f"r {daemon.res('R', MIB)}:{held.lver} p {pid}" in daemon.same("status", tries=5)
        daemon.same("status", "-o", "p", tries=5)
        daemon.same("status", "-o", "s", tries=5)
        assert daemon.same("read", "-r", daemon.res("R", MIB), "-h", "1").startswith(
            f"r {daemon.res('R', MIB)}:{held.lver}\nh 1 gen 1 timestamp "
        )
        # a second holder on this host is refused
        with pytest.raises(SanlockError) as caught, client.lease("LS", "R", [(daemon.leases, MIB)]):
            pass
        assert (caught.value.code, caught.value.name) == (-17, "EEXIST")
        # a wrong lver is refused with sanlock's own code
        with client.register() as reg, pytest.raises(SanlockError) as caught:
            reg.acquire(daemon.res("Q", 2 * MIB) + ":99")
        assert (caught.value.code, caught.value.name) == (-240, "SANLK_ACQUIRE_LVER")
    # released on exit: the lease is free to take again, at the next lver
    with client.lease("LS", "R", [(daemon.leases, MIB)]) as again:
        assert again.lver == held.lver + 1


def test_registration_shared_and_convert(daemon: Sanlock, client: Client) -> None:
    with client.register() as reg:
        reg.acquire(daemon.res("Q", 2 * MIB) + ":SH")
        [held] = reg.inquire()
        assert (held.name, held.shared, held.lver) == ("Q", True, None)
        reg.convert("LS:Q", shared=False)
        [held] = reg.inquire()
        assert (held.shared, held.lver is not None) == (False, True)
        reg.release("LS:Q")
        assert reg.inquire() == []
        with pytest.raises(SanlockError) as caught:
            reg.release("LS:Q")
        assert caught.value.code == -1


def test_cli_leases_for_another_pid(daemon: Sanlock, registered: int) -> None:
    pid = str(registered)
    res = daemon.res("R", MIB)
    out = daemon.ours("acquire", "-r", res, "-p", pid)
    assert (out.stdout, out.returncode) == (f"acquire pid {pid}\nacquire done 0\n", 0)
    state = daemon.same("inquire", "-p", pid).splitlines()
    assert state[1:] == ["inquire done 0 res_count 1", f'"{res}:{state[2].split(":")[-1]}']
    # the same acquire again is refused alike by both
    for tool in (daemon.ours, daemon.sanlock):
        again = tool("acquire", "-r", res, "-p", pid)
        assert (again.stdout, again.returncode) == (f"acquire pid {pid}\nacquire done -17\n", 1)
    out = daemon.ours("convert", "-r", f"{res}:SH", "-p", pid)
    assert out.stdout == f"convert pid {pid}\nconvert done 0\n"
    assert daemon.sanlock("inquire", "-p", pid).stdout.splitlines()[2] == f'"{res}:SH"'
    assert daemon.sanlock("convert", "-r", res, "-p", pid).returncode == 0
    out = daemon.ours("release", "-r", "LS:R", "-p", pid)
    assert (out.stdout, out.returncode) == (f"release pid {pid}\nrelease done 0\n", 0)
    assert daemon.same("release", "-r", res, "-p", pid) == f"release pid {pid}\nrelease done -1\n"
    # request on a free lease: both succeed, and the lease shows the request
    assert daemon.same("request", "-r", f"{daemon.res('Q', 2 * MIB)}:0", "-f", "0") == (
        "request\nrequest done 0\n"
    )


def test_cli_lockspace_lifecycle(daemon: Sanlock) -> None:
    area = daemon.run_dir / "ls2"
    with area.open("wb") as f:
        f.truncate(2 * MIB)
    ls = f"LS2:1:{area}:0"
    assert daemon.ours("init", "-s", f"LS2:0:{area}:0", "-o", "1").stdout == "init\ninit done 0\n"
    assert daemon.ours("write", "-r", f"LS2:X:{area}:1M").stdout == "init\ninit done 0\n"
    daemon.same("read", "-s", f"LS2:0:{area}:0", "-D")
    daemon.same("read", "-r", f"LS2:X:{area}:1M", "-D")
    out = daemon.ours("add_lockspace", "-s", ls, "-o", "1")
    assert out.stdout == "add_lockspace_timeout 1\nadd_lockspace_timeout done 0\n", out.stderr
    listed = sorted(daemon.same("gets").splitlines())
    assert listed == sorted([f"s LS:1:{daemon.leases}:0 ", f"s {ls} "])
    again = daemon.ours("add_lockspace", "-s", ls, "-o", "1")
    assert (again.stdout.splitlines()[-1], again.returncode) == (
        "add_lockspace_timeout done -17",
        1,
    )
    assert again.stderr.count("\n") == 1 and "EEXIST" in again.stderr
    out = daemon.ours("rem_lockspace", "-s", ls)
    assert (out.stdout, out.returncode) == ("rem_lockspace\nrem_lockspace done 0\n", 0)
    assert daemon.same("inq_lockspace", "-s", ls).endswith("done -2\n")


def test_daemon_not_running(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning) as caught:
        Client(tmp_path).status()
    assert caught.value.code == -2
    out = subprocess.run(
        [sys.executable, "-m", "sync_manager", "client", "status"],
        env=dict(os.environ, SANLOCK_RUN_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert (out.stdout, out.returncode) == ("", 1)
    assert out.stderr == (
        "sync_manager: status failed: the sanlock daemon is not running "
        f"(no socket at {tmp_path}/sanlock.sock) (ENOENT, -2)\n"
    )


def test_shutdown_last(daemon: Sanlock) -> None:
    """Runs last in this module: stops the daemon through our CLI."""
    refused = daemon.ours("shutdown", "-w", "1")
    assert (refused.stdout, refused.returncode) == (
        "shutdown force 0 wait 1\nshutdown done -16\n",
        1,
    )
    out = daemon.ours("shutdown", "-f", "1", "-w", "1")
    assert (out.stdout, out.returncode) == ("shutdown force 1 wait 1\nshutdown done 0\n", 0)
    daemon.proc.wait(timeout=20)
    with pytest.raises(DaemonNotRunning):
        Client(daemon.run_dir).version()
