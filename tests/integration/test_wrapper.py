"""The wrapper end to end: ``sync_manager daemon ... -c CMD`` and ``client command`` against
our daemon as a subprocess (``-w 0``, its own run dir), on a sparse lease file with an
io_timeout 1 lockspace.

One daemon serves the module (joining takes 2 s); each test uses its own lease. Waits are
bounded polls of the daemon's STATUS that end as soon as the state is reached; the one timed
bound is the issue's own requirement: a lease is free within a second of its holder's exit.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync_manager import direct
from sync_manager.cli.main import main
from sync_manager.client import Client, ResourceState
from sync_manager.leasestr import DiskLocation, LockspaceSpec, ResourceSpec
from tests.daemons import SyncManagerDaemon

LS = "WLS"
HOST = "wrapper-host"
MIB = 1 << 20
LEASES = ("run", "busy", "kill", "nobody", "argv", "missing", "command", "remote")
WAIT = 20.0  # bound on a wait that should end at once; reached only on failure
FREED_WITHIN = 1.0  # the issue: a holder's exit frees its lease within a second

SM = [sys.executable, "-m", "sync_manager"]


def _offset(name: str) -> int:
    return (LEASES.index(name) + 1) * MIB


def _init(path: Path, lockspace: str, names: tuple[str, ...]) -> None:
    """``direct init`` of an io_timeout 1 lockspace at 0 and the leases ``names``."""
    disk = DiskLocation(str(path), 0)
    direct.init_lockspace(LockspaceSpec(lockspace, 0, disk), io_timeout=1)
    for name in names:
        where = (DiskLocation(str(path), _offset(name)),)
        direct.init_resource(ResourceSpec(lockspace, name, where))


@pytest.fixture(scope="module")
def lease_dir() -> Iterator[Path]:
    """A directory anyone may search, holding lease files only root may open (0600).

    On tmpfs when there is one: with io_timeout 1, a disk busy with other work can time out
    renewals for 8 s, and the daemon then (rightly) kills the lease holders under test.
    """
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = Path(tempfile.mkdtemp(prefix="smwrap", dir=base))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def lease_file(lease_dir: Path) -> Path:
    path = lease_dir / "leases.img"
    with path.open("wb") as f:
        f.truncate(len(LEASES) * MIB + 2 * MIB)  # sparse
    path.chmod(0o600)
    _init(path, LS, LEASES)
    return path


@pytest.fixture(scope="module")
def daemon(lease_file: Path) -> Iterator[SyncManagerDaemon]:
    """Our daemon with lockspace WLS joined as host 1."""
    running = SyncManagerDaemon(HOST)
    running.start()
    try:
        Client(running.run_dir).add_lockspace(LS, 1, lease_file, 0, io_timeout=1)
        yield running
    finally:
        subprocess.run(
            [*SM, "client", "shutdown", "-f", "1", "-w", "1"],
            env=running.env,
            capture_output=True,
            timeout=WAIT,
            check=False,
        )
        running.stop()


def _wrap(
    daemon: SyncManagerDaemon,
    lease_file: Path,
    name: str,
    command: list[str],
    *options: str,
    vm: str = "",
) -> subprocess.Popen[str]:
    """The seed's command for lease ``name``, as a child with pipes."""
    argv = [*SM, "daemon", "-n", vm or f"vm-{name}", "-s", f"{LS}:1:{lease_file}:0"]
    argv += ["-l", f"{name}:{lease_file}:{_offset(name)}", *options, "-c", *command]
    return subprocess.Popen(
        argv,
        env=daemon.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _held(daemon: SyncManagerDaemon, name: str) -> list[ResourceState]:
    status = Client(daemon.run_dir).status()
    return [r for r in status.resources if (r.lockspace, r.name) == (LS, name)]


def _wait_free(daemon: SyncManagerDaemon, name: str, within: float) -> float:
    """Seconds until lease ``name`` is held by nobody here; fails after ``within``."""
    start = time.monotonic()
    while _held(daemon, name):
        if time.monotonic() - start > within:
            pytest.fail(f"lease {name} still held {within} s after its holder exited")
        time.sleep(0.01)  # polling STATUS: the daemon sends no event
    return time.monotonic() - start


def _ready(proc: subprocess.Popen[str], line: str = "ready") -> None:
    assert proc.stdout is not None
    got = proc.stdout.readline()
    if got.strip() != line:
        proc.kill()
        _, err = proc.communicate(timeout=WAIT)
        pytest.fail(f"expected {line!r} on stdout, got {got!r}; stderr: {err}")


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate("\n", timeout=WAIT)
    return proc.returncode, out, err


def test_command_output_and_status_pass_through(
    daemon: SyncManagerDaemon, lease_file: Path
) -> None:
    proc = _wrap(daemon, lease_file, "run", ["sh", "-c", "echo out; echo err >&2; read x; exit 7"])
    try:
        _ready(proc, "out")
        held = _held(daemon, "run")
        # the command itself (same pid as the wrapper: it exec'd) holds the lease
        assert [r.pid for r in held] == [proc.pid]
        client = Client(daemon.run_dir)
        assert [h.name for h in client.inquire(proc.pid)] == ["run"]
        names = {c.pid: c for c in client.status().clients}
        assert names[proc.pid].name == "vm-run"
        assert names[proc.pid].fields["restricted"] == "1"  # RESTRICT_ALL by default
    finally:
        rc, out, err = _finish(proc)
    assert (rc, out, err) == (7, "", "err\n")  # stdout's "out" was read above
    _wait_free(daemon, "run", FREED_WITHIN)


def test_second_wrapper_is_refused_and_runs_nothing(
    daemon: SyncManagerDaemon, lease_file: Path, tmp_path: Path
) -> None:
    first = _wrap(daemon, lease_file, "busy", ["sh", "-c", "echo ready; read x"], vm="vm-first")
    try:
        _ready(first)
        marker = tmp_path / "marker"
        second = _wrap(daemon, lease_file, "busy", ["touch", str(marker)], vm="vm-second")
        rc, out, err = _finish(second)
    finally:
        _finish(first)
    assert rc == 75
    assert out == ""
    assert not marker.exists()
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(
        f"sync_manager: lease busy ({LS}:busy:{lease_file}:{_offset('busy')})"
    )
    assert f"is held by host 1 (this host, {HOST}), pid {first.pid} (vm-first)" in lines[0]
    assert "lver " in lines[0]
    assert f"wait until pid {first.pid} exits" in lines[1]
    assert "the command was not run" in lines[1]


def test_lease_held_by_another_host(daemon: SyncManagerDaemon, lease_file: Path) -> None:
    first = _wrap(daemon, lease_file, "remote", ["sh", "-c", "echo ready; read x"])
    other = SyncManagerDaemon("other-host")
    argv = [*SM, "daemon", "-n", "vm-2", "-s", f"{LS}:2:{lease_file}:0"]
    argv += ["-l", f"remote:{lease_file}:{_offset('remote')}", "-c", "echo", "ran"]
    try:
        _ready(first)
        other.start()
        client = Client(other.run_dir)
        client.add_lockspace(LS, 2, lease_file, 0, io_timeout=1)
        # at once: the holder's name comes from its delta lease on disk
        early = subprocess.run(
            argv, env=other.env, capture_output=True, text=True, timeout=WAIT, check=False
        )
        deadline = time.monotonic() + WAIT
        while not client.host_status(LS) and time.monotonic() < deadline:
            time.sleep(0.05)  # HOST_STATUS lists hosts after the daemon's first renewal
        # then: when it last renewed, and for how long it has held the lease
        later = subprocess.run(
            argv, env=other.env, capture_output=True, text=True, timeout=WAIT, check=False
        )
    finally:
        _finish(first)
        subprocess.run(
            [*SM, "client", "shutdown", "-f", "1", "-w", "1"],
            env=other.env,
            capture_output=True,
            timeout=WAIT,
            check=False,
        )
        other.stop()
    res = f"{LS}:remote:{lease_file}:{_offset('remote')}"
    for done in (early, later):
        assert (done.returncode, done.stdout) == (75, ""), done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 2, done.stderr
        assert lines[0].startswith(f"sync_manager: lease remote ({res}) is held by host 1 ({HOST})")
        assert "(lver 1)" in lines[0]
        assert f"sync_manager client request -r {res}:2 -f 2" in lines[1]  # lver 1 + 1
    assert " for about " in later.stderr
    assert "; host 1 last renewed its host lease " in later.stderr


def test_killed_command_frees_its_lease_at_once(
    daemon: SyncManagerDaemon, lease_file: Path
) -> None:
    proc = _wrap(daemon, lease_file, "kill", ["sh", "-c", "echo ready; exec sleep 60"])
    try:
        _ready(proc)
        assert [r.pid for r in _held(daemon, "kill")] == [proc.pid]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=WAIT)
    assert proc.returncode == -signal.SIGKILL
    _wait_free(daemon, "kill", FREED_WITHIN)
    again = _wrap(daemon, lease_file, "kill", ["true"])
    assert _finish(again) == (0, "", "")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as nobody")
def test_user_runs_without_the_lease_file_and_still_holds(
    daemon: SyncManagerDaemon, lease_file: Path
) -> None:
    nobody = pwd.getpwnam("nobody")
    script = f"id -u; head -c 1 {lease_file} 2>&1 >/dev/null; echo ready; read x"
    proc = _wrap(daemon, lease_file, "nobody", ["sh", "-c", script], "-U", "nobody")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == f"{nobody.pw_uid}\n"
        assert "Permission denied" in proc.stdout.readline()
        _ready(proc)
        assert os.stat(f"/proc/{proc.pid}").st_uid == nobody.pw_uid
        assert [r.pid for r in _held(daemon, "nobody")] == [proc.pid]
        assert [h.name for h in Client(daemon.run_dir).inquire(proc.pid)] == ["nobody"]
    finally:
        rc, _, err = _finish(proc)
    assert (rc, err) == (0, "")
    _wait_free(daemon, "nobody", FREED_WITHIN)


def test_arguments_after_c_are_untouched(daemon: SyncManagerDaemon, lease_file: Path) -> None:
    code = "import sys; print(sys.argv[1:])"
    args = ["--", "-l", "x", "--help", "-c", "-U"]
    proc = _wrap(daemon, lease_file, "argv", [sys.executable, "-c", code, *args])
    rc, out, err = _finish(proc)
    assert (rc, err) == (0, "")
    assert out == f"{args!r}\n"


def test_missing_command_is_127_and_frees_the_lease(
    daemon: SyncManagerDaemon, lease_file: Path
) -> None:
    proc = _wrap(daemon, lease_file, "missing", ["/nonexistent/command"])
    rc, out, err = _finish(proc)
    assert (rc, out) == (127, "")
    assert "cannot run /nonexistent/command: No such file or directory" in err
    _wait_free(daemon, "missing", WAIT)


def test_client_command(daemon: SyncManagerDaemon, lease_file: Path) -> None:
    res = f"{LS}:command:{lease_file}:{_offset('command')}"
    script = "echo ready; read x; exit 3"
    argv = [*SM, "client", "command", "-r", res, "-c", "sh", "-c", script]
    proc = subprocess.Popen(
        argv,
        env=daemon.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _ready(proc)
        assert [r.pid for r in _held(daemon, "command")] == [proc.pid]
    finally:
        rc, out, err = _finish(proc)
    assert (rc, out, err) == (3, "", "")
    _wait_free(daemon, "command", FREED_WITHIN)


def test_no_daemon_the_wrapper_starts_one(lease_dir: Path) -> None:
    path = lease_dir / "own.img"
    with path.open("wb") as f:
        f.truncate(3 * MIB)
    _init(path, "OWN", ("run",))
    run_dir = Path(tempfile.mkdtemp(prefix="smwrap", dir="/tmp"))
    env = dict(os.environ, SANLOCK_RUN_DIR=str(run_dir))
    argv = [*SM, "daemon", "-w", "0", "-e", "started-host", "-i", "1", "-n", "vm1"]
    argv += ["-s", f"OWN:0:{path}:0", "-l", f"run:{path}:{_offset('run')}"]
    argv += ["-c", "sh", "-c", "echo ran; exit 4"]
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert (done.returncode, done.stdout) == (4, "ran\n"), done.stderr
        lines = done.stderr.splitlines()
        assert lines[0] == (
            "sync_manager: the sanlock daemon is not running (no socket at "
            f"{run_dir}/sanlock.sock); starting one in the background: "
            "sync_manager daemon -e started-host -w 0"
        )
        assert lines[1].startswith("sync_manager: daemon started (pid ")
        assert lines[2].startswith(
            "sync_manager: joining lockspace OWN as host id 1 (io_timeout 1 s): this takes "
            "about 2 s"
        )
        assert lines[3].startswith("sync_manager: joined lockspace OWN as host id 1 in ")
        assert len(lines) == 4
        status = Client(run_dir).status()
        assert status.daemon is not None and status.daemon.host_name == "started-host"
    finally:
        _stop_started_daemon(run_dir, env)


def _stop_started_daemon(run_dir: Path, env: dict[str, str]) -> None:
    """Stop the daemon the wrapper started (by its pid file), and remove its run dir."""
    try:
        pid = int((run_dir / "sanlock.pid").read_text().strip() or "0")
    except (OSError, ValueError):
        pid = 0
    subprocess.run(
        [*SM, "client", "shutdown", "-f", "1", "-w", "1"],
        env=env,
        capture_output=True,
        timeout=WAIT,
        check=False,
    )
    deadline = time.monotonic() + WAIT
    while pid and Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # not our child: poll until it is gone
    if pid and Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(run_dir, ignore_errors=True)


U_NO_RESTRICT = ["-U", "nobody", "--no-restrict", "-c", "true"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["daemon", "-l", "a:/x:0"], "-l need -c COMMAND"),
        (["daemon", "-U", "nobody"], "-U need -c COMMAND"),
        (["daemon", "-s", "LS:1:/x:0", "-l", "a:/x:0", "-c"], "-c needs a command"),
        (["daemon", "-s", "LS:1:/x:0", "-c", "true"], "at least one -l"),
        (["daemon", "-s", "LS:2:/x:0", "-i", "1", "-l", "a:/x:0", "-c", "true"], "differ"),
        (["daemon", "-D", "-l", "a:/x:0", "-c", "true"], "-D cannot go with -c"),
        (["daemon", "-s", "LS:1:/x:0", "-l", "a:/x:0", *U_NO_RESTRICT], "--no-restrict cannot"),
        (["daemon", "-U", "no-such-user-here", "-l", "LS:a:/x:0", "-c", "true"], "no such user"),
        (["client", "command", "-r", "LS:a:/x:0"], "-c COMMAND [ARGS...] is required"),
        (["client", "command", "-r", "LS:a:/x:0", "stray"], "unexpected arguments: stray"),
    ],
)
def test_usage_errors_run_nothing(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""
