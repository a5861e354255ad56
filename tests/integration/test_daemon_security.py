"""Who may do what through the daemon's socket (issue 4, item 6: beyond sanlock).

sanlock checks no credentials: whoever can open the socket may act on any pid. Our daemon
takes the peer's credentials (SO_PEERCRED): a client that is not root, the daemon's user or
in the admin group may only act on its own pid and use the read-only commands. The clients
here are python3-sanlock under ``/usr/bin/python3``, run as ``nobody`` through ``setpriv``
(the package is installed system-wide, so ``nobody`` can import it).
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import (
    SYSTEM_PYTHON,
    SyncManagerDaemon,
    join,
    lease_file,
    require_python_sanlock,
)
from tests.loopdev import require

NOBODY = 65534
SOCKET_GROUP = "users"  # nobody is not in it: the test gives it as the process's gid
ADMIN_GROUP = "adm"


class GroupedDaemon(SyncManagerDaemon):
    """Our daemon with a socket group and an admin group."""

    def argv(self) -> list[str]:
        return [*super().argv(), "--socket-group", SOCKET_GROUP, "--admin-group", ADMIN_GROUP]


@pytest.fixture
def daemon() -> Iterator[GroupedDaemon]:
    require_python_sanlock()
    require(shutil.which("setpriv"), "setpriv (util-linux) is needed to run clients as nobody")
    running = GroupedDaemon()
    with running:
        os.chmod(running.run_dir, 0o755)  # the run dir is mkdtemp's 0700
        yield running


@pytest.fixture
def leases(daemon: GroupedDaemon) -> Path:
    """A lockspace joined as host 1 (io_timeout 1) and a resource, in a file only root can
    open: the clients below never need the lease area."""
    path = lease_file(daemon.run_dir / "leases", "R")
    os.chmod(path, 0o600)
    join(daemon, path)
    return path


def run_as(
    daemon: GroupedDaemon, script: str, *, gid: int, groups: list[int] | None = None
) -> dict[str, object]:
    """Run a python3-sanlock ``script`` as nobody with ``gid`` (and ``groups``); the JSON it
    prints. ``attempt(name, fn)`` in the script records ``fn()``'s result or its errno."""
    prelude = textwrap.dedent(
        """
        import json, os, sys, time, sanlock
        out = {"uid": os.getuid()}
        def attempt(name, fn):
            try:
                out[name] = ["ok", fn()]
            except (sanlock.SanlockException, OSError) as e:
                out[name] = ["error", e.errno]
        """
    )
    groups_arg = ",".join(map(str, groups)) if groups else None
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={gid}"]
    argv += [f"--groups={groups_arg}"] if groups_arg else ["--clear-groups"]
    argv += [SYSTEM_PYTHON, "-c", prelude + textwrap.dedent(script) + "\nprint(json.dumps(out))"]
    done = subprocess.run(
        argv, env=daemon.env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr + daemon.log()
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_socket_is_0660_in_the_socket_group(daemon: GroupedDaemon) -> None:
    st = os.stat(daemon.socket_path)
    assert st.st_mode & 0o777 == 0o660
    assert st.st_gid == grp.getgrnam(SOCKET_GROUP).gr_gid


def test_a_client_outside_the_socket_group_cannot_connect(daemon: GroupedDaemon) -> None:
    out = run_as(daemon, "attempt('lockspaces', sanlock.get_lockspaces)", gid=NOBODY)
    assert out["uid"] == NOBODY
    assert out["lockspaces"][0] == "error"  # type: ignore[index]


def test_an_ordinary_client_holds_its_own_leases_only(daemon: GroupedDaemon, leases: Path) -> None:
    users = grp.getgrnam(SOCKET_GROUP).gr_gid
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], stdin=subprocess.DEVNULL
    )
    try:
        script = f"""
            disks = [("{leases}", 1048576)]
            attempt("lockspaces", lambda: len(sanlock.get_lockspaces()))
            for _ in range(50):  # hosts are reported from the second renewal after a join
                attempt("hosts", lambda: len(sanlock.get_hosts(b"LS")))
                if out["hosts"] != ["error", 11]:
                    break
                time.sleep(0.1)
            attempt("add", lambda: sanlock.add_lockspace(b"LS2", 2, "{leases}", 0))
            attempt("write", lambda: sanlock.write_resource(b"LS", b"X", disks))
            fd = sanlock.register()
            attempt("acquire_own", lambda: sanlock.acquire(b"LS", b"R", disks, slkfd=fd))
            attempt("inquire_own", lambda: len(sanlock.inquire(slkfd=fd)))
            attempt("inquire_other", lambda: sanlock.inquire(pid={holder.pid}))
            attempt("release_other", lambda: sanlock.release(b"LS", b"R", disks, pid={holder.pid}))
            attempt("open_lease_file", lambda: open("{leases}", "rb").close())
            attempt("release_own", lambda: sanlock.release(b"LS", b"R", disks, slkfd=fd))
        """
        out = run_as(daemon, script, gid=users)
    finally:
        holder.kill()
        holder.wait()
    assert out["lockspaces"] == ["ok", 1]
    assert out["hosts"] == ["ok", 1]
    assert out["add"] == ["error", 1]  # EPERM: an administrator's command
    assert out["write"] == ["error", 1]
    assert out["acquire_own"] == ["ok", None]
    assert out["inquire_own"] == ["ok", 1]
    assert out["inquire_other"] == ["error", 1]  # EPERM: another pid
    assert out["release_other"] == ["error", 1]
    assert out["open_lease_file"] == ["error", 13]  # EACCES: the lease area is root's
    assert out["release_own"] == ["ok", None]
    assert "not an administrator" in daemon.log()


def test_a_member_of_the_admin_group_may_act_for_other_pids(
    daemon: GroupedDaemon, leases: Path
) -> None:
    users = grp.getgrnam(SOCKET_GROUP).gr_gid
    adm = grp.getgrnam(ADMIN_GROUP).gr_gid
    script = f"""
        import subprocess
        disks = [("{leases}", 1048576)]
        child = subprocess.Popen([sys.executable, "-c",
            "import sanlock, sys; sanlock.register(); sys.stdout.write('r\\\\n');"
            " sys.stdout.flush(); sys.stdin.read()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        child.stdout.readline()
        attempt("acquire_for_child", lambda: sanlock.acquire(b"LS", b"R", disks, pid=child.pid))
        attempt("inquire_child", lambda: len(sanlock.inquire(pid=child.pid)))
        attempt("add", lambda: sanlock.add_lockspace(b"LS", 1, "{leases}", 0))
        child.stdin.close()
        child.wait()
    """
    out = run_as(daemon, script, gid=users, groups=[adm])
    assert out["acquire_for_child"] == ["ok", None]
    assert out["inquire_child"] == ["ok", 1]
    assert out["add"] == ["error", 17]  # EEXIST: allowed, and already joined
