"""What vdsm does with python3-sanlock, against whatever daemon ``$SANLOCK_RUN_DIR`` points to.

Run by the system Python with Debian's python3-sanlock 3.8.5 (never with sync_manager on the
path: the point is a stock client)::

    SANLOCK_RUN_DIR=/run/dir /usr/bin/python3 vdsm_client.py IDS LEASES

``IDS`` and ``LEASES`` are the storage domain's two lease files, as in vdsm's ``dom_md/``;
both must not exist yet (the script makes them, so every run starts from blank storage).
The lockspace is the domain UUID, at offset 0 of ``IDS``, with io_timeout 1 so a join takes
about 3 s; ``LEASES`` holds the SDM lease at 1 MiB and a volume lease at 3 MiB, for the error
cases a resource of another lockspace at 0, and 2 MiB left blank.

Every call is recorded, in order, as ``{"call": label, "ok": true, "result": value}`` or
``{"call": label, "ok": false, "errno": n, "message": text}``; the script prints one JSON
document ``{"calls": [...], "seconds": {label: elapsed}}``. ``calls`` is what two daemons
must agree on; ``seconds`` is for the reader only. Values are normalized where they
legitimately differ between runs and daemons:

* the two paths become ``$IDS`` and ``$LEASES``; bytes are written as their ``repr``;
* a host's ``timestamp`` (a daemon's monotonic clock, in seconds) becomes ``"ts>0"`` when it
  is non-zero; 0 (a free host, a shared owner) stays 0. Generations, io_timeouts and flags
  are compared exactly: on blank storage they are fixed by the on-disk algorithm;
* ``register()`` returns a fd number; it becomes ``"fd>=0"``;
* the registered child's pid never appears in a result, only in labels as ``pid=child``;
* right after ``rem_lockspace(wait=False)`` sanlock may or may not have moved the lockspace
  to its "removing" list yet (its main loop does that on a 1 s tick), so get_lockspaces'
  flags show as ``"0|REM"`` and inq_lockspace's True or None as ``"True|None"``.

Nothing sleeps without a bound: the few waits poll every 0.1 s for at most :data:`WAIT`
seconds (a daemon has no notification for "host status ready" or "lockspace gone").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import sanlock

MIB = 1024 * 1024
LS = b"3b7a3fce-6b0e-4e6c-9b3a-1e2f3d4c5b6a"  # vdsm names the lockspace after the domain
SDM = b"SDM"  # the SPM lease, at 1 MiB of the leases volume
VOL = b"0f5a2c1e-3d4b-4a6f-8e9d-7c6b5a4f3e2d"  # a volume lease
OTHER = b"other-ls"
WAIT = 20.0
EAGAIN = 11
EINPROGRESS = 115

# A second registered process, for acquire/inquire/release by pid= (as the CLI and libvirt
# do for another process). It registers, says so, then waits for its stdin to close.
CHILD = (
    "import sanlock, sys\n"
    "fd = sanlock.register()\n"
    "print('registered', flush=True)\n"
    "sys.stdin.read()\n"
)


class Recorder:
    """Calls python3-sanlock and records each outcome, normalized."""

    def __init__(self, paths: dict[str, str]) -> None:
        self.paths = paths
        self.calls: list[dict[str, Any]] = []
        self.seconds: dict[str, float] = {}

    def call(
        self,
        label: str,
        fn: Callable[..., Any],
        *args: Any,
        normalize: Callable[[Any], Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``fn(*args, **kwargs)``; record and return its value (None when it raised)."""
        if label in self.seconds:
            raise AssertionError(f"duplicate label {label!r}")
        entry: dict[str, Any] = {"call": label}
        start = time.monotonic()
        value: Any = None
        try:
            value = fn(*args, **kwargs)
        except sanlock.SanlockException as exc:
            entry |= {"ok": False, "errno": exc.errno, "message": exc.args[1]}
        except (TypeError, ValueError) as exc:
            entry |= {"ok": False, "exception": type(exc).__name__, "message": str(exc)}
        else:
            shown = normalize(value) if normalize is not None else value
            entry |= {"ok": True, "result": self.normalize(shown)}
        self.seconds[label] = round(time.monotonic() - start, 3)
        self.calls.append(entry)
        return value

    def note(self, label: str, ok: bool, result: Any = None) -> None:
        """Record an outcome that is not a python3-sanlock call (the child's registration)."""
        self.seconds[label] = 0.0
        self.calls.append({"call": label, "ok": ok, "result": self.normalize(result)})

    def normalize(self, value: Any) -> Any:
        if isinstance(value, dict):
            out = {str(k): self.normalize(v) for k, v in value.items()}
            if {"host_id", "generation", "timestamp"} <= value.keys() and value["timestamp"]:
                out["timestamp"] = "ts>0"
            return out
        if isinstance(value, list | tuple):
            return [self.normalize(v) for v in value]
        if isinstance(value, bytes):
            return repr(value)
        if isinstance(value, str):
            return self.paths.get(value, value)
        return value

    def poll(
        self, label: str, fn: Callable[..., Any], *args: Any, until: Callable[[Any], bool]
    ) -> None:
        """Record ``fn(*args)``'s first outcome for which ``until(outcome)`` holds.

        The outcome is the value, or the SanlockException's errno. Used only where the
        daemon has no way to wait for us (host status after the first renewal; a lockspace
        removed asynchronously). Bounded by :data:`WAIT`.
        """
        deadline = time.monotonic() + WAIT
        while True:
            try:
                outcome = fn(*args)
            except sanlock.SanlockException as exc:
                outcome = exc.errno
            if until(outcome) or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # polling; see the docstring
        self.call(label, fn, *args)


def make_file(path: str, size: int) -> None:
    with open(path, "xb") as f:  # "x": blank storage on every run
        f.truncate(size)


def fd_number(fd: Any) -> str:
    return "fd>=0" if isinstance(fd, int) and fd >= 0 else f"bad fd {fd!r}"


def either_flag(lockspaces: Any) -> Any:
    """get_lockspaces while an asynchronous remove is pending: flags 0 or LSFLAG_REM."""
    pending = {0: "0|REM", sanlock.LSFLAG_REM: "0|REM"}
    return [{**ls, "flags": pending.get(ls["flags"], ls["flags"])} for ls in lockspaces]


def either_inq(joined: Any) -> Any:
    """inq_lockspace while an asynchronous remove is pending: True, or None (in progress)."""
    return "True|None" if joined is None or joined is True else joined


def main(ids: str, leases: str) -> dict[str, Any]:
    make_file(ids, MIB)
    make_file(leases, 4 * MIB)
    missing = leases + ".missing"
    rec = Recorder({ids: "$IDS", leases: "$LEASES", missing: "$MISSING"})
    sdm = [(leases, MIB)]
    vol = [(leases, 3 * MIB)]
    blank = [(leases, 2 * MIB)]
    foreign = [(leases, 0)]  # a resource of another lockspace
    call = rec.call

    # --- formatting the storage domain (vdsm's create/format), no lockspace joined yet
    call("write_lockspace(iotimeout=1)", sanlock.write_lockspace, LS, ids, iotimeout=1)
    call("read_lockspace", sanlock.read_lockspace, ids)
    call("write_resource(SDM)", sanlock.write_resource, LS, SDM, sdm)
    call("write_resource(VOL)", sanlock.write_resource, LS, VOL, vol)
    call("write_resource(other lockspace)", sanlock.write_resource, OTHER, VOL, foreign)
    call("write_resource(missing path)", sanlock.write_resource, LS, VOL, [(missing, 0)])
    call("read_resource(SDM)", sanlock.read_resource, leases, MIB)
    call("read_resource(blank)", sanlock.read_resource, leases, 2 * MIB)
    call("read_resource_owners(SDM) unjoined", sanlock.read_resource_owners, LS, SDM, sdm)
    call("inq_lockspace before add", sanlock.inq_lockspace, LS, 1, ids)
    call("get_hosts before add", sanlock.get_hosts, LS)
    call("get_lockspaces before add", sanlock.get_lockspaces)
    call("rem_lockspace before add", sanlock.rem_lockspace, LS, 1, ids)
    fd1 = call("register fd1", sanlock.register, normalize=fd_number)
    call("acquire(SDM) before add", sanlock.acquire, LS, SDM, sdm, slkfd=fd1)

    # --- joining: add_lockspace, then vdsm's hasHostId / getHostStatus
    call("add_lockspace(1, iotimeout=1)", sanlock.add_lockspace, LS, 1, ids, iotimeout=1)
    call("inq_lockspace", sanlock.inq_lockspace, LS, 1, ids)
    call("get_lockspaces", sanlock.get_lockspaces)
    # sanlock answers EAGAIN until its first renewal after the join has read the other
    # hosts' leases (2 io_timeouts later): vdsm maps this to "host status unavailable".
    call("get_hosts just after add", sanlock.get_hosts, LS)
    call("add_lockspace again", sanlock.add_lockspace, LS, 1, ids, iotimeout=1)
    call("add_lockspace(host_id 2) same name", sanlock.add_lockspace, LS, 2, ids, iotimeout=1)
    call("add_lockspace(host_id 0)", sanlock.add_lockspace, OTHER, 0, leases, 2 * MIB)
    call("add_lockspace(host_id 2001)", sanlock.add_lockspace, OTHER, 2001, leases, 2 * MIB)
    call("add_lockspace(missing path)", sanlock.add_lockspace, OTHER, 1, missing)
    call("add_lockspace(blank area)", sanlock.add_lockspace, OTHER, 1, leases, 2 * MIB)
    call("inq_lockspace(host_id 2)", sanlock.inq_lockspace, LS, 2, ids)
    call("inq_lockspace(host_id 0)", sanlock.inq_lockspace, LS, 0, ids)
    call("inq_lockspace(other path)", sanlock.inq_lockspace, LS, 1, missing)
    call("get_hosts(other lockspace)", sanlock.get_hosts, OTHER)

    # --- the SDM lease, held by our registered fd (vdsm's acquireClusterLock)
    call("acquire(SDM, slkfd=fd1)", sanlock.acquire, LS, SDM, sdm, slkfd=fd1)
    call("inquire(slkfd=fd1)", sanlock.inquire, slkfd=fd1)
    call("read_resource(SDM) held", sanlock.read_resource, leases, MIB)
    call("read_resource_owners(SDM) held", sanlock.read_resource_owners, LS, SDM, sdm)
    call("acquire(SDM, slkfd=fd1) again", sanlock.acquire, LS, SDM, sdm, slkfd=fd1)
    fd2 = call("register fd2", sanlock.register, normalize=fd_number)
    call("acquire(SDM, slkfd=fd2) held by fd1", sanlock.acquire, LS, SDM, sdm, slkfd=fd2)
    call("inquire(slkfd=fd2) nothing held", sanlock.inquire, slkfd=fd2)
    call("release(SDM, slkfd=fd2) not held", sanlock.release, LS, SDM, sdm, slkfd=fd2)
    call("release(SDM) no slkfd, no pid", sanlock.release, LS, SDM, sdm)
    call("rem_lockspace(unused=True) while held", sanlock.rem_lockspace, LS, 1, ids, unused=True)

    # --- acquire errors
    call("acquire(blank area)", sanlock.acquire, LS, VOL, blank, slkfd=fd2)
    call("acquire(wrong resource name)", sanlock.acquire, LS, VOL, sdm, slkfd=fd2)
    call("acquire(wrong lockspace name)", sanlock.acquire, LS, VOL, foreign, slkfd=fd2)
    call("acquire(missing path)", sanlock.acquire, LS, VOL, [(missing, 0)], slkfd=fd2)
    call("acquire(VOL, version=5) wrong lver", sanlock.acquire, LS, VOL, vol, slkfd=fd2, version=5)
    call("acquire(VOL) no slkfd, no pid", sanlock.acquire, LS, VOL, vol)
    call("inquire() no slkfd, no pid", sanlock.inquire)
    parent = os.getppid()  # alive, and never registered with this daemon
    call("acquire(VOL, pid=unregistered)", sanlock.acquire, LS, VOL, vol, pid=parent)
    call("inquire(pid=unregistered)", sanlock.inquire, pid=parent)
    call("release(VOL, pid=unregistered)", sanlock.release, LS, VOL, vol, pid=parent)
    call("acquire(VOL, lockspace bytes) as str", sanlock.acquire, LS.decode(), VOL, vol, slkfd=fd2)

    # --- a volume lease held on behalf of another registered process (pid=)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdin is not None
    registered = child.stdout.readline().strip() == "registered"
    rec.note("child register", registered)
    call("acquire(VOL, pid=child)", sanlock.acquire, LS, VOL, vol, pid=child.pid)
    call("inquire(pid=child)", sanlock.inquire, pid=child.pid)
    call("read_resource_owners(VOL) held", sanlock.read_resource_owners, LS, VOL, vol)
    call("acquire(VOL, slkfd=fd2) held by child", sanlock.acquire, LS, VOL, vol, slkfd=fd2)
    call("release(VOL, pid=child)", sanlock.release, LS, VOL, vol, pid=child.pid)
    call("inquire(pid=child) after release", sanlock.inquire, pid=child.pid)
    child.stdin.close()
    child.wait(timeout=WAIT)
    child.stdout.close()

    # --- releasing the SDM lease (vdsm's releaseClusterLock), and the lver it leaves
    call("release(SDM, slkfd=fd1)", sanlock.release, LS, SDM, sdm, slkfd=fd1)
    call("release(SDM, slkfd=fd1) again", sanlock.release, LS, SDM, sdm, slkfd=fd1)
    call("inquire(slkfd=fd1) after release", sanlock.inquire, slkfd=fd1)
    call("read_resource_owners(SDM) released", sanlock.read_resource_owners, LS, SDM, sdm)
    call("read_resource(SDM) released", sanlock.read_resource, leases, MIB)
    call("acquire(SDM, version=1)", sanlock.acquire, LS, SDM, sdm, slkfd=fd1, version=1)
    call("inquire(slkfd=fd1) lver 2", sanlock.inquire, slkfd=fd1)
    call("release(SDM) lver 2", sanlock.release, LS, SDM, sdm, slkfd=fd1)
    call("acquire(unknown lockspace)", sanlock.acquire, b"no-such-ls", SDM, sdm, slkfd=fd1)

    # --- host status once the first renewal has been read
    rec.poll("get_hosts", sanlock.get_hosts, LS, until=lambda r: r != EAGAIN)
    call("get_hosts(host_id 1)", sanlock.get_hosts, LS, 1)
    call("get_hosts(host_id 2) free", sanlock.get_hosts, LS, 2)
    call("get_hosts(host_id 2000) free", sanlock.get_hosts, LS, 2000)

    # --- leaving (vdsm's releaseHostId, wait=True)
    call("rem_lockspace", sanlock.rem_lockspace, LS, 1, ids)
    call("inq_lockspace after rem", sanlock.inq_lockspace, LS, 1, ids)
    call("get_lockspaces after rem", sanlock.get_lockspaces)
    call("get_hosts after rem", sanlock.get_hosts, LS)
    call("rem_lockspace again", sanlock.rem_lockspace, LS, 1, ids)
    call("acquire(SDM) after rem", sanlock.acquire, LS, SDM, sdm, slkfd=fd1)

    # --- joining again asynchronously (vdsm's acquireHostId(wait=False)): the next generation
    call("add_lockspace(wait=False)", sanlock.add_lockspace, LS, 1, ids, iotimeout=1, wait=False)
    call("get_lockspaces while adding", sanlock.get_lockspaces)
    call("inq_lockspace while adding", sanlock.inq_lockspace, LS, 1, ids)
    call("add_lockspace while adding", sanlock.add_lockspace, LS, 1, ids, iotimeout=1)
    call("inq_lockspace(wait=True)", sanlock.inq_lockspace, LS, 1, ids, wait=True)
    call("get_lockspaces joined again", sanlock.get_lockspaces)
    rec.poll("get_hosts(host_id 1) rejoined", sanlock.get_hosts, LS, 1, until=lambda r: r != EAGAIN)

    # --- leaving asynchronously
    # sanlock only flags the lockspace here; its main loop, on its next 1 s tick, moves it to
    # the "rem" list. Until then it is listed as joined (flags 0) and inq_lockspace says True;
    # after, flags REM and None. Either is right, so both are shown as one value.
    call("rem_lockspace(wait=False)", sanlock.rem_lockspace, LS, 1, ids, wait=False)
    call("get_lockspaces while removing", sanlock.get_lockspaces, normalize=either_flag)
    call("inq_lockspace while removing", sanlock.inq_lockspace, LS, 1, ids, normalize=either_inq)
    rec.poll("inq_lockspace removed", sanlock.inq_lockspace, LS, 1, ids, until=lambda r: r is False)
    call("get_lockspaces removed", sanlock.get_lockspaces)

    for fd in (fd1, fd2):
        if isinstance(fd, int):
            os.close(fd)
    return {"calls": rec.calls, "seconds": rec.seconds}


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} IDS LEASES")
    print(json.dumps(main(sys.argv[1], sys.argv[2]), indent=1))
