"""Real libvirt "hosts" on one machine: libvirtd + QEMU + a lease daemon in a mount namespace.

A :class:`LibvirtHost` is what a hypervisor host of a cluster is, made on this one machine
(the set-up is spec/libvirt-e2e.md's, measured on Debian 12 with libvirt 9.0 and QEMU 7.2):

* a private mount namespace (``unshare -m --propagation private``, held by a ``sleep``) in
  which ``/etc/libvirt``, ``/var/lib/libvirt`` and ``/var/log/libvirt`` are bind mounts of the
  host's own directories and ``/run`` is a fresh tmpfs with ``/run/libvirt`` a bind mount of
  the host's run directory. The machine's ``/etc/libvirt`` is never touched, and two hosts (or
  another libvirtd on the machine) cannot see each other's domains, pid files or sockets;
  ``/var/cache/libvirt`` (QEMU's capabilities cache) stays shared, so the capability probe
  (~12 s) is paid once per machine, not per host;
* the lease daemon, ours or the real sanlock (``tests/daemons.py``), started inside the
  namespace with ``nsenter`` (so that the killpath it runs, libvirt's
  ``libvirt_sanlock_helper``, reaches this host's libvirtd at ``qemu:///system``), listening
  on ``$SANLOCK_RUN_DIR/sanlock.sock`` in a run dir under /tmp;
* an unmodified ``libvirtd`` started in the foreground inside the namespace, with
  ``SANLOCK_RUN_DIR`` in its environment and a configuration written from scratch:
  ``qemu.conf``: ``lock_manager = "sanlock"`` and ``stdio_handler = "file"`` (QEMU's log
  goes to a file, so no virtlogd is needed); ``qemu-sanlock.conf``: automatic disk leases
  with this host's ``host_id``, a ``disk_lease_dir`` that all hosts share, ``io_timeout``.

Tests drive a host with ``virsh -c qemu:///system?socket=<run>/libvirt-sock`` from outside the
namespace, and look at its leases with the lease daemon's own ``client status``.

:meth:`LibvirtHost.stop` destroys what is still running, stops libvirtd, kills any QEMU left
(by the pid files libvirt wrote), stops the lease daemon and ends the namespace, each bounded
in time, and each whatever happened before. Outside CI a missing libvirt skips; in CI
(``CI=true``) it fails (:func:`require_libvirt`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import grp
import hashlib
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from sync_manager import protocol
from sync_manager.cli.client_output import status_lines
from sync_manager.client import Client
from tests.daemons import SANLOCK, Daemon, SanlockDaemon, SyncManagerDaemon
from tests.loopdev import require

__all__ = [
    "DiskLease",
    "Lease",
    "LibvirtHost",
    "direct_init",
    "domain_type",
    "domain_xml",
    "lease_path",
    "new_disk",
    "require_libvirt",
    "wait_for",
]

LIBVIRTD = "/usr/sbin/libvirtd"
VIRSH = "/usr/bin/virsh"
QEMU = "/usr/bin/qemu-system-x86_64"
QEMU_IMG = "/usr/bin/qemu-img"
SANLOCK_PLUGIN = "/usr/lib/x86_64-linux-gnu/libvirt/lock-driver/sanlock.so"
SANLOCK_HELPER = "/usr/lib/libvirt/libvirt_sanlock_helper"
UNSHARE = "/usr/bin/unshare"
NSENTER = "/usr/bin/nsenter"

PACKAGES = (
    "libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-sanlock libvirt-clients "
    "qemu-system-x86 qemu-utils"
)
READY_SECONDS = 120.0  # libvirtd's first QEMU capability probe alone can take 12 s (or more)
STOP_SECONDS = 15.0
KVM_GET_API_VERSION = 0xAE00


def require_libvirt() -> None:
    """Root, libvirtd, virsh, QEMU, libvirt's sanlock plugin, unshare and nsenter."""
    require(os.geteuid() == 0, "libvirtd with lock_manager=sanlock needs root")
    for path in (LIBVIRTD, VIRSH, QEMU, QEMU_IMG, SANLOCK_PLUGIN, UNSHARE, NSENTER):
        require(Path(path).exists(), f"needs {path} (apt-get install {PACKAGES})")


def domain_type() -> str:
    """``kvm`` when /dev/kvm works, else ``qemu`` (TCG).

    Without udev, /dev/kvm is ``root:root 0600``: QEMU, which runs as ``libvirt-qemu`` (group
    kvm), cannot open it, and libvirt then finds its cached capabilities (probed as root, with
    KVM) stale and probes QEMU again, ~4 s, on every define and start. So when root can use
    /dev/kvm it is given to group kvm with mode 0660, as udev's rule does; it is left so.
    """
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return "qemu"
    try:
        fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
        st = os.fstat(fd)
        kvm_gid = grp.getgrnam("kvm").gr_gid
        if st.st_gid != kvm_gid or stat.S_IMODE(st.st_mode) & 0o060 != 0o060:
            os.chown("/dev/kvm", -1, kvm_gid)
            os.chmod("/dev/kvm", 0o660)
    except (OSError, KeyError):
        return "qemu"
    finally:
        os.close(fd)
    return "kvm"


@dataclass(frozen=True)
class Lease:
    """An explicit ``<lease>``: a resource lease in a lockspace the admin made and joined."""

    lockspace: str
    key: str
    path: Path
    offset: int = 0

    @property
    def spec(self) -> str:
        """``LS:RES:PATH:OFFSET``, as the lease daemons' CLIs take it."""
        return f"{self.lockspace}:{self.key}:{self.path}:{self.offset}"


@dataclass(frozen=True)
class DiskLease:
    """One held lease, as ``client status`` shows it: ``r LS:RES:PATH:OFF:LVER p PID``."""

    lockspace: str
    key: str
    path: str
    offset: int
    lver: int
    pid: int


_LEASE_LINE = re.compile(
    r"^r (?P<ls>[^:]+):(?P<key>[^:]+):(?P<path>.+):(?P<off>\d+):(?P<lver>\d+|SH) p (?P<pid>\d+)$"
)


def domain_xml(
    name: str,
    disk: Path,
    dom_type: str,
    leases: tuple[Lease, ...] = (),
    on_lockfailure: str | None = None,
) -> str:
    """A tiny domain (no OS: it sits in SeaBIOS) with one qcow2 disk and ``leases``."""
    lease_xml = "".join(
        f"<lease><lockspace>{escape(le.lockspace)}</lockspace><key>{escape(le.key)}</key>"
        f"<target path={quoteattr(str(le.path))} offset='{le.offset}'/></lease>\n"
        for le in leases
    )
    failure = f"<on_lockfailure>{on_lockfailure}</on_lockfailure>" if on_lockfailure else ""
    return f"""<domain type='{dom_type}'>
  <name>{escape(name)}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  {failure}
  <devices>
    <emulator>{QEMU}</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file={quoteattr(str(disk))}/><target dev='vda' bus='virtio'/></disk>
    {lease_xml}
    <serial type='pty'/><memballoon model='none'/>
  </devices>
</domain>
"""


def new_disk(path: Path) -> Path:
    """A new, empty 10 MiB qcow2 image at ``path``."""
    subprocess.run([QEMU_IMG, "create", "-q", "-f", "qcow2", str(path), "10M"],
                   check=True, capture_output=True, timeout=30)  # fmt: skip
    return path


def direct_init(kind: str, *args: str) -> None:
    """``direct init ARGS`` with the kind's own tool: ``sanlock`` or ``sync_manager``."""
    if kind == "sanlock":
        argv = [SANLOCK, "direct", "init", *args]
    else:
        argv = [sys.executable, "-m", "sync_manager", "direct", "init", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"


class MountNamespace:
    """A private mount namespace with bind mounts, held open by a ``sleep`` in it."""

    def __init__(self, binds: dict[str, Path], ready: Path) -> None:
        self.binds = binds  # mount point -> source
        self.ready = ready
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        lines = ["set -e", "mount -t tmpfs -o mode=0755 tmpfs /run"]
        for target, source in self.binds.items():
            lines.append(f"mkdir -p {target}")
            lines.append(f"mount --bind {source} {target}")
        lines += [f"touch {self.ready}", "exec sleep infinity"]
        self.proc = subprocess.Popen(
            [UNSHARE, "-m", "--propagation", "private", "sh", "-c", "\n".join(lines)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("the mount namespace could not be set up (unshare -m)")
            time.sleep(0.01)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def enter(self) -> list[str]:
        """The argv prefix that runs a command in this namespace."""
        return [NSENTER, "-t", str(self.pid), "-m", "--"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_SECONDS)


class _NsSanlock(SanlockDaemon):
    def __init__(self, host_name: str, ns: MountNamespace) -> None:
        super().__init__(host_name)
        self.ns = ns

    def argv(self) -> list[str]:
        return [*self.ns.enter(), *super().argv()]


class _NsSyncManager(SyncManagerDaemon):
    def __init__(self, host_name: str, ns: MountNamespace) -> None:
        super().__init__(host_name)
        self.ns = ns

    def argv(self) -> list[str]:
        return [*self.ns.enter(), *super().argv()]


class LibvirtHost:
    """One hypervisor host: a lease daemon of ``kind`` and a libvirtd, in their namespace."""

    def __init__(
        self, kind: str, host_id: int, base: Path, lease_dir: Path, io_timeout: int
    ) -> None:
        self.kind = kind
        self.host_id = host_id
        self.dir = base / f"host{host_id}"
        self.lease_dir = lease_dir
        self.io_timeout = io_timeout
        self.etc, self.lib, self.logs, self.run = (
            self.dir / d for d in ("etc", "lib", "log", "run")
        )
        self.libvirtd_log = self.dir / "libvirtd.log"
        self.ns = MountNamespace(
            {
                "/etc/libvirt": self.etc,
                "/var/lib/libvirt": self.lib,
                "/var/log/libvirt": self.logs,
                "/run/libvirt": self.run,
            },
            self.dir / "ns-ready",
        )
        host_name = f"libvirt-host{host_id}"
        self.daemon: Daemon = (
            _NsSanlock(host_name, self.ns)
            if kind == "sanlock"
            else _NsSyncManager(host_name, self.ns)
        )
        self.libvirtd: subprocess.Popen[bytes] | None = None
        self.uri = f"qemu:///system?socket={self.run}/libvirt-sock"

    # --- life cycle ---

    def _configure(self) -> None:
        for d in (self.etc, self.lib, self.logs / "qemu", self.run):
            d.mkdir(parents=True, exist_ok=True)
        (self.etc / "qemu.conf").write_text('lock_manager = "sanlock"\nstdio_handler = "file"\n')
        (self.etc / "qemu-sanlock.conf").write_text(
            "auto_disk_leases = 1\n"
            f'disk_lease_dir = "{self.lease_dir}"\n'
            f"host_id = {self.host_id}\n"
            f"io_timeout = {self.io_timeout}\n"
        )
        (self.etc / "libvirtd.conf").write_text(
            f'log_filters = "1:locking 3:*"\nlog_outputs = "1:file:{self.libvirtd_log}"\n'
        )

    def start(self) -> None:
        """Namespace, lease daemon, then libvirtd (ready when ``virsh list`` answers).

        libvirtd joins ``__LIBVIRT__DISKS__`` (creating and writing it first if it is
        absent) before it answers, so once this returns the host has joined it.
        """
        self.start_daemon()
        self.start_libvirtd()

    def start_daemon(self) -> None:
        """The namespace and the lease daemon in it."""
        self._configure()
        self.ns.start()
        self.daemon.start()

    def start_libvirtd(self) -> None:
        """libvirtd (after :meth:`start_daemon`), ready when ``virsh list`` answers."""
        with (self.dir / "libvirtd.out").open("wb") as out:
            self.libvirtd = subprocess.Popen(
                [*self.ns.enter(), LIBVIRTD, "-p", str(self.run / "libvirtd.pid")],
                env=self.daemon.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_SECONDS
        while self.virsh("list", check=False, timeout=10).returncode != 0:
            if self.libvirtd.poll() is not None:
                raise AssertionError(
                    f"libvirtd exited with {self.libvirtd.returncode}\n{self.diagnostics()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"libvirtd not ready in {READY_SECONDS} s\n"
                                     f"{self.diagnostics()}")  # fmt: skip
            time.sleep(0.1)

    def restart_libvirtd(self) -> None:
        """Stop libvirtd (SIGTERM; its domains keep running) and start it again."""
        self._stop_libvirtd()
        self.start_libvirtd()

    def stop(self) -> None:
        """Stop everything this host started; never raises."""
        with contextlib.suppress(Exception):
            self.destroy_all()
        with contextlib.suppress(Exception):
            self._stop_libvirtd()
        with contextlib.suppress(Exception):
            self._kill_leftover_qemu()
        with contextlib.suppress(Exception):
            self.daemon.stop()
        with contextlib.suppress(Exception):
            self.ns.stop()

    def destroy_all(self) -> None:
        """``virsh destroy`` every running domain, all at once (each takes libvirt ~1.6 s).

        Through libvirt, not by killing QEMU, so that libvirt removes the domains' cgroups.
        """
        if self.libvirtd is None or self.libvirtd.poll() is not None:
            return
        names = self.virsh("list", "--name", check=False, timeout=STOP_SECONDS).stdout.split()
        with concurrent.futures.ThreadPoolExecutor(max(1, len(names))) as pool:
            for name in names:
                pool.submit(self.virsh, "destroy", name, check=False, timeout=STOP_SECONDS)

    def _stop_libvirtd(self) -> None:
        proc = self.libvirtd
        if proc is None or proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=STOP_SECONDS)
                return
            except subprocess.TimeoutExpired:
                continue

    def _kill_leftover_qemu(self) -> None:
        for pidfile in (self.run / "qemu").glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                pid = int(pidfile.read_text().strip())
                if "qemu" in Path(f"/proc/{pid}/comm").read_text():
                    os.kill(pid, signal.SIGKILL)

    # --- driving it ---

    def virsh(
        self, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """``virsh -c <this host's libvirtd> ARGS``; with ``check``, a failure fails the test."""
        done = subprocess.run(
            [VIRSH, "-q", "-c", self.uri, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"host {self.host_id}: virsh {' '.join(args)} failed ({done.returncode}): "
                f"{done.stderr.strip()}\n{self.diagnostics()}"
            )
        return done

    def define(
        self,
        name: str,
        dom_type: str,
        leases: tuple[Lease, ...] = (),
        on_lockfailure: str | None = None,
        disk: Path | None = None,
    ) -> Path:
        """Define domain ``name`` (a fresh 10 MiB qcow2 disk unless given); its disk's path."""
        if disk is None:
            disk = new_disk(self.dir / f"{name}.qcow2")
        xml = self.dir / f"{name}.xml"
        xml.write_text(domain_xml(name, disk, dom_type, leases, on_lockfailure))
        self.virsh("define", str(xml))
        return disk

    def state(self, name: str) -> str:
        """``virsh domstate``: running, paused, shut off..."""
        return self.virsh("domstate", name).stdout.strip()

    def qemu_pid(self, name: str) -> int:
        return int((self.run / "qemu" / f"{name}.pid").read_text().strip())

    def client(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The lease daemon's own CLI: ``sanlock client`` or ``sync_manager client``."""
        if self.kind == "sanlock":
            return self.daemon.client(*args)
        return subprocess.run(
            [sys.executable, "-m", "sync_manager", "client", *args],
            env=self.daemon.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def status(self) -> str:
        """``client status``: ``sanlock client status`` for sanlock; for ours, the lines of
        ``sync_manager client status`` made in this process (its start-up alone, ~0.5 s, would
        be most of a test's time)."""
        if self.kind == "sanlock":
            done = self.client("status")
            assert done.returncode == 0, f"client status: {done.stdout}{done.stderr}"
            return done.stdout
        reply = Client(self.daemon.run_dir, timeout=30).call(protocol.Status())
        assert isinstance(reply, protocol.StateReply), reply
        return "\n".join(status_lines(reply.records)) + "\n"

    def leases(self) -> list[DiskLease]:
        """The leases this host's daemon holds, from ``client status``."""
        found = []
        for line in self.status().splitlines():
            m = _LEASE_LINE.match(line.strip())
            if m:
                lver = 0 if m["lver"] == "SH" else int(m["lver"])
                found.append(DiskLease(m["ls"], m["key"], m["path"], int(m["off"]), lver,
                                       int(m["pid"])))  # fmt: skip
        return found

    def registered(self) -> set[int]:
        """The pids registered with this host's daemon (``p PID NAME`` lines, not ``p -1``)."""
        pids = set()
        for line in self.status().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "p" and parts[1] != "-1":
                pids.add(int(parts[1]))
        return pids

    def diagnostics(self) -> str:
        """The tails of the lease daemon's, libvirtd's and QEMU's logs, for failure messages."""
        parts = [f"--- host {self.host_id} {self.kind} daemon log ---\n{self.daemon.log()[-6000:]}"]
        for path in (self.libvirtd_log, self.dir / "libvirtd.out",
                     *sorted((self.logs / "qemu").glob("*.log"))):  # fmt: skip
            with contextlib.suppress(OSError):
                parts.append(f"--- {path} ---\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)


def wait_for(
    what: str, predicate: Callable[[], object], timeout: float, interval: float = 0.1
) -> None:
    """Poll ``predicate()`` until true, else fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def lease_path(lease_dir: Path, disk: Path) -> Path:
    """Where libvirt puts a disk's automatic lease: ``<disk_lease_dir>/<md5 of its path>``."""
    return lease_dir / hashlib.md5(str(disk).encode()).hexdigest()
