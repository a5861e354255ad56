"""An unmodified libvirt (9.0, ``lock_manager = "sanlock"``) and QEMU on our daemon (issue 5).

Two hypervisor hosts on this machine (``tests/interop/libvirt_hosts.py``): each a private
mount namespace with its own libvirtd and its own lease daemon, host ids 1 and 2, sharing one
lease directory. libvirt talks to the lease daemon exactly as it talks to sanlock: it finds it
through ``SANLOCK_RUN_DIR``. Every test runs twice, on our daemon (``sync_manager``) and, as
the control, on the real sanlock 3.8.5 (``sanlock``), and asserts the same outcome for both.

What libvirt does, and what is checked (spec/sanlock-protocol.md section 7, spec/libvirt-e2e.md):

* at start, libvirtd creates, writes (WRITE_LOCKSPACE) and joins (ADD_LOCKSPACE) the
  automatic disk lockspace ``__LIBVIRT__DISKS__`` with its host id; each domain start
  writes (WRITE_RESOURCE) a lease per disk, ``<disk_lease_dir>/<md5 of the disk path>``,
  registers the QEMU pid before exec (REGISTER, KILLPATH with ``<on_lockfailure>``,
  RESTRICT) and acquires every lease in one ACQUIRE when the CPUs start;
* an explicit ``<lease>`` held by one domain refuses a second domain ("Failed to acquire
  lock: File exists" on the same host, "Lease is held by another host" from the other
  host); ``virsh destroy`` sends the lease daemon nothing: it sees QEMU's registered
  connection close and releases, and the second domain then starts;
* the automatic disk lease alone keeps two hosts off one disk (host 2 sees the disk path as
  another inode, so that QEMU's own image lock cannot be what refuses it);
* ``virsh suspend`` releases the leases (INQUIRE, RELEASE; QEMU stays registered) and
  ``virsh resume`` acquires them again with a higher lver, or fails while another domain
  holds them;
* ``<on_lockfailure>``: when host 2 asks for the lease (REQUEST, graceful), host 1's daemon
  runs the killpath libvirt registered, ``libvirt_sanlock_helper <uri> <uuid> <action>``,
  which powers the domain off or pauses it; either way the lease is released and host 2 gets
  it. The same when host 1's renewals fail (its lockspace's filesystem frozen): at T + 8N the
  killpath, not a signal. Leaving a lockspace (rem_lockspace) instead SIGKILLs the holder:
  libvirt sees a crash;
* a restarted libvirtd finds its lockspace joined ("already registered") and its running
  domain's leases as they were.

Lockspaces and leases here use io_timeout 1, so a join takes ~2-3 s. The module needs root,
libvirt (libvirt-daemon-system, libvirt-daemon-driver-qemu, libvirt-sanlock, libvirt-clients),
qemu-system-x86 and qemu-utils; in CI a missing one fails, elsewhere the module skips.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daemons import KINDS, require_sanlock
from tests.interop.libvirt_hosts import (
    Lease,
    LibvirtHost,
    direct_init,
    domain_type,
    lease_path,
    new_disk,
    require_libvirt,
    wait_for,
)
from tests.loopdev import ext4_mount, frozen

pytestmark = pytest.mark.interop

IO_TIMEOUT = 1
LS = "LV"  # the explicit lockspace both hosts join
FENCE = "FENCE"  # a lockspace host 1 alone joins, and leaves with a domain holding a lease in it
HUNG = "HUNG"  # a lockspace host 1 alone joins, on a filesystem the test freezes
DISKS = "__LIBVIRT__DISKS__"
SAME_HOST = "Failed to acquire lock: File exists"  # -EEXIST: held by another pid here
OTHER_HOST = "Failed to acquire lock: Lease is held by another host"  # -243
RELEASE_SECONDS = 15.0  # a destroyed or fenced domain's leases are released well within this
GRACEFUL = "2"  # SANLK_REQ_GRACEFUL: the holder's killpath, not a signal


@dataclass
class Cluster:
    """Two libvirt hosts of one kind, joined to lockspace ``LV`` and to the disk lockspace."""

    kind: str
    dom_type: str
    base: Path
    lease_dir: Path
    hung_mnt: Path  # an ext4 of its own, with lockspace HUNG (host 1), to freeze
    host1: LibvirtHost
    host2: LibvirtHost
    token: str

    def name(self, label: str) -> str:
        """A domain name unique to this run (cgroups are per machine, not per libvirtd)."""
        return f"sm{self.token}-{self.kind[:2]}-{label}"

    def lease(self, key: str, lockspace: str = LS) -> Lease:
        """A fresh resource lease ``lockspace:key`` in its own file, made with the kind's tool."""
        lease = Lease(lockspace, key, self.lease_dir / f"{key}.lease")
        with lease.path.open("wb") as f:
            f.truncate(1024 * 1024)
        direct_init(self.kind, "-r", lease.spec)
        return lease


@pytest.fixture(scope="module", params=KINDS)
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    kind: str = request.param
    require_libvirt()
    if kind == "sanlock":
        require_sanlock()
    dom_type = domain_type()
    base = Path(tempfile.mkdtemp(prefix="smlv", dir="/tmp"))
    base.chmod(0o755)  # QEMU runs as libvirt-qemu and opens the disks under it
    lease_dir = base / "leases"
    lease_dir.mkdir()
    hosts = [LibvirtHost(kind, i, base, lease_dir, IO_TIMEOUT) for i in (1, 2)]
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        # mounted before the hosts' namespaces are made, so that they see it too
        hung_mnt = stack.enter_context(ext4_mount(base / "hung.img", base / "hung"))
        stack.callback(_stop_all, hosts)
        ls_file, fence_file = lease_dir / "lv.ls", lease_dir / "fence.ls"
        hung_file = hung_mnt / "hung.ls"
        for path in (ls_file, fence_file, hung_file):
            with path.open("wb") as f:
                f.truncate(1024 * 1024)
        for name, path in ((LS, ls_file), (FENCE, fence_file), (HUNG, hung_file)):
            direct_init(kind, "-o", str(IO_TIMEOUT), "-s", f"{name}:0:{path}:0")
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for started in [pool.submit(h.start_daemon) for h in hosts]:
                started.result()
            joins = [
                pool.submit(h.client, "add_lockspace", "-o", str(IO_TIMEOUT),
                            "-s", f"{name}:{h.host_id}:{path}:0")
                for h, name, path in ((hosts[0], LS, ls_file), (hosts[1], LS, ls_file),
                                      (hosts[0], FENCE, fence_file), (hosts[0], HUNG, hung_file))
            ]  # fmt: skip
            # Meanwhile the libvirtds, one after the other: the first one writes
            # __LIBVIRT__DISKS__ (through its lease daemon), the second one finds and joins it.
            for host in hosts:
                host.start_libvirtd()
            for join in joins:
                done = join.result()
                assert done.returncode == 0, f"add_lockspace: {done.stdout}{done.stderr}\n" + (
                    "\n".join(h.diagnostics() for h in hosts)
                )
        yield Cluster(
            kind, dom_type, base, lease_dir, hung_mnt, hosts[0], hosts[1], secrets.token_hex(2)
        )


def _stop_all(hosts: list[LibvirtHost]) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        pool.map(LibvirtHost.stop, hosts)


def _held(host: LibvirtHost, pid: int) -> dict[tuple[str, str], int]:
    """The leases ``pid`` holds on ``host``: (lockspace, key) -> lver."""
    return {(le.lockspace, le.key): le.lver for le in host.leases() if le.pid == pid}


def _refused(host: LibvirtHost, name: str, message: str) -> None:
    done = host.virsh("start", name, check=False)
    assert done.returncode != 0, f"{name} started although its lease is held\n{host.diagnostics()}"
    assert message in done.stderr, done.stderr
    assert host.state(name) == "shut off"


def _destroy(host: LibvirtHost, name: str) -> int:
    """``virsh destroy NAME``; wait until the lease daemon has released its leases."""
    pid = host.qemu_pid(name)
    host.virsh("destroy", name)
    wait_for(f"host {host.host_id} to release {name}'s leases",
             lambda: not _held(host, pid) and pid not in host.registered(),
             RELEASE_SECONDS)  # fmt: skip
    return pid


# --- tests ---------------------------------------------------------------------------


def test_disk_lockspace_joined_by_libvirtd(cluster: Cluster) -> None:
    """Host 1's libvirtd made __LIBVIRT__DISKS__ (ALIGN, WRITE_LOCKSPACE through the lease
    daemon), host 2's found it; each joined it (ADD_LOCKSPACE) with its host id."""
    disks_file = cluster.lease_dir / DISKS
    assert disks_file.stat().st_size >= 1024 * 1024
    initialized = f"Lockspace {disks_file} has been initialized"
    registered = f"Lockspace {disks_file} has been registered"
    for host in (cluster.host1, cluster.host2):
        log = host.libvirtd_log.read_text()
        assert (initialized in log) == (host is cluster.host1), host.diagnostics()
        assert registered in log, host.diagnostics()
        lines = host.status().splitlines()
        assert f"s {DISKS}:{host.host_id}:{disks_file}:0" in lines, lines
        assert f"s {LS}:{host.host_id}:{cluster.lease_dir / 'lv.ls'}:0" in lines, lines


def test_explicit_lease_refuses_a_second_domain_until_destroy(cluster: Cluster) -> None:
    h1 = cluster.host1
    lease = cluster.lease("same-host")
    a, b = cluster.name("a"), cluster.name("b")
    disk_a = h1.define(a, cluster.dom_type, (lease,))
    h1.define(b, cluster.dom_type, (lease,))

    h1.virsh("start", a)
    pid_a = h1.qemu_pid(a)
    auto = (DISKS, lease_path(cluster.lease_dir, disk_a).name)
    assert _held(h1, pid_a) == {(LS, lease.key): 1, auto: 1}
    assert lease_path(cluster.lease_dir, disk_a).exists()  # written through the daemon

    _refused(h1, b, SAME_HOST)
    assert h1.state(a) == "running"
    assert _held(h1, pid_a)[(LS, lease.key)] == 1

    _destroy(h1, a)
    h1.virsh("start", b)
    assert _held(h1, h1.qemu_pid(b))[(LS, lease.key)] == 2


def test_suspend_releases_and_resume_reacquires(cluster: Cluster) -> None:
    h1 = cluster.host1
    lease = cluster.lease("suspend")
    a, b = cluster.name("sa"), cluster.name("sb")
    key = (LS, lease.key)
    h1.define(a, cluster.dom_type, (lease,))
    h1.define(b, cluster.dom_type, (lease,))
    h1.virsh("start", a)
    pid_a = h1.qemu_pid(a)
    before = _held(h1, pid_a)
    assert before[key] == 1

    h1.virsh("suspend", a)
    assert h1.state(a) == "paused"
    assert _held(h1, pid_a) == {}  # every lease released...
    assert pid_a in h1.registered()  # ...and QEMU still registered

    h1.virsh("resume", a)
    assert h1.state(a) == "running"
    assert _held(h1, pid_a) == {k: lver + 1 for k, lver in before.items()}

    # While a is paused its lease is free: b takes it, and a cannot resume.
    h1.virsh("suspend", a)
    h1.virsh("start", b)
    assert _held(h1, h1.qemu_pid(b))[key] == 3
    done = h1.virsh("resume", a, check=False)
    assert done.returncode != 0, "a resumed although b holds the lease"
    assert SAME_HOST in done.stderr, done.stderr
    assert h1.state(a) == "paused"

    _destroy(h1, b)
    h1.virsh("resume", a)
    assert _held(h1, pid_a)[key] == 4


def test_libvirtd_restart_keeps_leases(cluster: Cluster) -> None:
    """A restarted libvirtd finds its lockspace joined (-EEXIST, "already registered") and
    its running domain's leases untouched, and still releases and acquires them."""
    h1 = cluster.host1
    lease = cluster.lease("restart")
    a = cluster.name("ra")
    h1.define(a, cluster.dom_type, (lease,))
    h1.virsh("start", a)
    pid_a = h1.qemu_pid(a)
    held = _held(h1, pid_a)

    h1.restart_libvirtd()
    assert f"Lockspace {cluster.lease_dir / DISKS} is already registered" in (
        h1.libvirtd_log.read_text()
    )
    assert h1.state(a) == "running"
    assert _held(h1, pid_a) == held

    h1.virsh("suspend", a)
    assert _held(h1, pid_a) == {}
    h1.virsh("resume", a)
    assert _held(h1, pid_a) == {k: lver + 1 for k, lver in held.items()}


def test_two_hosts_one_explicit_lease(cluster: Cluster) -> None:
    h1, h2 = cluster.host1, cluster.host2
    lease = cluster.lease("two-hosts")
    a, c = cluster.name("xa"), cluster.name("xc")
    key = (LS, lease.key)
    h1.define(a, cluster.dom_type, (lease,))
    h2.define(c, cluster.dom_type, (lease,))

    h1.virsh("start", a)
    _refused(h2, c, OTHER_HOST)

    _destroy(h1, a)
    h2.virsh("start", c)
    assert _held(h2, h2.qemu_pid(c))[key] == 2
    _refused(h1, a, OTHER_HOST)  # and the other way round


def test_two_hosts_one_disk_automatic_lease(cluster: Cluster) -> None:
    """The same disk path on both hosts: only the automatic disk lease can refuse host 2.

    On host 2 the path is bind-mounted onto another file, so QEMU's own image lock (OFD, per
    inode) does not fire first, as it would for one file (spec/libvirt-e2e.md R5, R8).
    """
    h1, h2 = cluster.host1, cluster.host2
    a, c = cluster.name("da"), cluster.name("dc")
    disk = h1.define(a, cluster.dom_type)
    other = new_disk(h2.dir / f"{c}.qcow2")
    mount = subprocess.run([*h2.ns.enter(), "mount", "--bind", str(other), str(disk)],
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert mount.returncode == 0, mount.stderr
    h2.define(c, cluster.dom_type, disk=disk)
    auto = (DISKS, lease_path(cluster.lease_dir, disk).name)

    h1.virsh("start", a)
    assert _held(h1, h1.qemu_pid(a)) == {auto: 1}
    _refused(h2, c, OTHER_HOST)

    _destroy(h1, a)
    h2.virsh("start", c)
    assert _held(h2, h2.qemu_pid(c)) == {auto: 2}


def test_on_lockfailure_killpath(cluster: Cluster) -> None:
    """Host 2 asks for host 1's leases (graceful): libvirt's killpath frees each one by its
    domain's ``<on_lockfailure>``, ``poweroff`` (destroyed) or ``pause`` (paused, QEMU lives
    on). Both domains at once, to pay the wait for host 1's next renewal only once."""
    h1, h2 = cluster.host1, cluster.host2
    actions = ("poweroff", "pause")
    leases = {action: cluster.lease(f"fail-{action}") for action in actions}
    a = {action: cluster.name(f"f{action[:2]}a") for action in actions}
    c = {action: cluster.name(f"f{action[:2]}c") for action in actions}
    pid_a, lver = {}, {}
    for action, lease in leases.items():
        h1.define(a[action], cluster.dom_type, (lease,), on_lockfailure=action)
        h2.define(c[action], cluster.dom_type, (lease,))
        h1.virsh("start", a[action])
        pid_a[action] = h1.qemu_pid(a[action])
        lver[action] = _held(h1, pid_a[action])[(LS, lease.key)]

    for action, lease in leases.items():
        spec = f"{lease.spec}:{lver[action] + 1}"
        done = h2.client("request", "-r", spec, "-f", GRACEFUL)
        assert done.returncode == 0, done.stdout + done.stderr
    for action, lease in leases.items():
        wait_for(f"host 1 to give up {lease.key} ({action})",
                 lambda: (LS, lease.key) not in _held(h1, pid_a[action]),  # noqa: B023
                 RELEASE_SECONDS)  # fmt: skip
    wait_for(f"{a['poweroff']} to be shut off",
             lambda: h1.state(a["poweroff"]) == "shut off", RELEASE_SECONDS)  # fmt: skip
    assert h1.state(a["pause"]) == "paused"
    assert pid_a["pause"] in h1.registered()  # QEMU lives on, without its leases
    assert os.path.exists(f"/proc/{pid_a['pause']}")

    for action, lease in leases.items():
        h2.virsh("start", c[action])
        assert _held(h2, h2.qemu_pid(c[action]))[(LS, lease.key)] == lver[action] + 1


def test_rem_lockspace_kills_the_holder(cluster: Cluster) -> None:
    """Leaving a lockspace fences its lease holders: QEMU is SIGKILLed (no killpath, even with
    ``<on_lockfailure>``, as in sanlock for an external remove) and libvirt records a crash."""
    h1 = cluster.host1
    lease = cluster.lease("fenced", FENCE)
    a = cluster.name("rl")
    h1.define(a, cluster.dom_type, (lease,), on_lockfailure="pause")
    h1.virsh("start", a)
    pid_a = h1.qemu_pid(a)
    assert (FENCE, lease.key) in _held(h1, pid_a)

    done = h1.client("rem_lockspace", "-s", f"{FENCE}:1:{cluster.lease_dir / 'fence.ls'}:0")
    assert done.returncode == 0, done.stdout + done.stderr
    wait_for(f"{a} to be killed", lambda: not os.path.exists(f"/proc/{pid_a}"), RELEASE_SECONDS)
    wait_for(f"{a} to be shut off",
             lambda: h1.virsh("domstate", "--reason", a).stdout.strip() == "shut off (crashed)",
             RELEASE_SECONDS)  # fmt: skip
    assert not _held(h1, pid_a)
    assert f"s {FENCE}:" not in h1.status()


def test_on_lockfailure_when_renewals_fail(cluster: Cluster) -> None:
    """Host 1's storage of lockspace HUNG stops answering (fsfreeze): at T + 8N its lease
    daemon runs the killpath libvirt registered for each domain holding a lease there, and
    libvirt acts by ``<on_lockfailure>``: ``poweroff`` destroys the domain, ``pause`` pauses
    it (QEMU lives on, its leases released); no SIGTERM, no SIGKILL."""
    h1 = cluster.host1
    actions = ("poweroff", "pause")
    leases = {action: cluster.lease(f"hung-{action}", HUNG) for action in actions}
    names = {action: cluster.name(f"h{action[:2]}") for action in actions}
    pids = {}
    for action, lease in leases.items():
        h1.define(names[action], cluster.dom_type, (lease,), on_lockfailure=action)
        h1.virsh("start", names[action])
        pids[action] = h1.qemu_pid(names[action])
        assert (HUNG, lease.key) in _held(h1, pids[action])

    with frozen(cluster.hung_mnt, guard=60.0):
        frozen_at = time.monotonic()
        for action, lease in leases.items():
            wait_for(f"host 1 to give up {lease.key} ({action}) after its renewals fail",
                     lambda: (HUNG, lease.key) not in _held(h1, pids[action]),  # noqa: B023
                     8 * IO_TIMEOUT + 2 * IO_TIMEOUT + RELEASE_SECONDS)  # fmt: skip
        wait_for(f"{names['poweroff']} to be shut off",
                 lambda: h1.state(names["poweroff"]) == "shut off", RELEASE_SECONDS)  # fmt: skip
        took = time.monotonic() - frozen_at
        reasons = {a: h1.virsh("domstate", "--reason", n).stdout.strip() for a, n in names.items()}
        print(f"{cluster.kind}: leases given up {took:.1f} s after the freeze; {reasons}")
        assert h1.state(names["pause"]) == "paused"
        assert os.path.exists(f"/proc/{pids['pause']}")  # QEMU lives on, without its leases
        assert not _held(h1, pids["pause"])
        assert reasons["poweroff"] == "shut off (destroyed)"  # by libvirt, not a crash
        # recovery began no sooner than the fail deadline: T + 8N, with T at most 2N ago
        assert took >= 8 * IO_TIMEOUT - 2 * IO_TIMEOUT
        h1.virsh("destroy", names["pause"])
