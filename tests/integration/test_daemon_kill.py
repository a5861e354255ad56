"""Lease holders that die, and a daemon whose storage stops answering, with real processes.

* A holder killed with SIGKILL: the kernel closes its registered connection, the daemon
  releases its lease, and another process can acquire it at once (the measured latency is
  printed, not asserted tightly).
* Storage that hangs: the lease file lives on ext4 on a loop device, frozen with
  ``fsfreeze`` so the daemon's renewal writes block in the kernel. With io_timeout N = 1 the
  renewals fail, and from the last good renewal T the daemon sends SIGTERM at T + 8N and, to a
  holder that ignores it, SIGKILL at T + 8N + kill_grace (the daemon runs with ``-g 2``). The
  daemon itself keeps running. That test is marked ``root`` (root, losetup, mkfs.ext4, mount,
  fsfreeze; skipped without them outside CI, failed in CI).
"""

from __future__ import annotations

import contextlib
import errno
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sync_manager.client import SanlockError
from tests.integration.daemon_proc import (
    IO_TIMEOUT,
    LS,
    LS_OFFSET,
    DaemonProcess,
    daemon_process,
    hosts,
    lease_file,
    resource_string,
    start_holder,
    stop_process,
)
from tests.loopdev import ext4_mount, frozen

KILL_GRACE = 2  # the daemon's -g: SIGKILL from T + 8N + 2
FAIL = 8 * IO_TIMEOUT  # T + 8N: recovery, SIGTERM
SLACK = 1.5  # the fencing check runs at each deadline; this covers a loaded machine
GUARD = 40.0  # a frozen filesystem is thawed after this long whatever happens


def _setup(d: DaemonProcess, path: Path, resources: int) -> None:
    d.api.write_lockspace(LS, path, LS_OFFSET, io_timeout=IO_TIMEOUT)
    for index in range(1, resources + 1):
        d.api.write_resource(resource_string(path, index))
    d.api.add_lockspace(LS, 1, path, LS_OFFSET, io_timeout=IO_TIMEOUT)


def test_killed_holder_frees_its_lease_at_once(tmp_path: Path) -> None:
    path = lease_file(tmp_path / "leases")
    with daemon_process() as d:
        _setup(d, path, 1)
        res = resource_string(path, 1)
        holder = start_holder(d, res)
        with d.api.register() as reg:
            with pytest.raises(SanlockError) as held:
                reg.acquire(res)
            assert held.value.code == -errno.EEXIST
            killed = time.monotonic()
            holder.send_signal(signal.SIGKILL)
            attempts = 0
            while True:
                attempts += 1
                try:
                    reg.acquire(res)
                    break
                except SanlockError as err:
                    # still held (-EEXIST) or being released (-EAGAIN) by the dead holder
                    assert err.code in (-errno.EEXIST, -errno.EAGAIN), err
                if time.monotonic() - killed > 5:
                    d.fail("the lease of a holder killed 5 s ago is still not free")
                time.sleep(0.005)  # polling: nothing tells a third process the lease is free
            latency = time.monotonic() - killed
            print(f"kill -9 to acquired elsewhere: {latency * 1000:.0f} ms, {attempts} attempts")
            (lease,) = reg.inquire()
            assert lease.lver == 2
        assert stop_process(holder)[1] == ""
        assert holder.returncode == -signal.SIGKILL
        assert f"pid {holder.pid}: connection closed, releasing 1 lease(s)" in d.log()


def test_an_overwritten_delta_lease_fences_at_once(tmp_path: Path) -> None:
    """Someone writes the lockspace over a joined host (``direct init -s`` by mistake, from
    anywhere but this daemon, which refuses): the next renewal finds our delta lease gone
    and, as sanlock, the holders are fenced at once (SIGTERM), not at T + 8N."""
    path = lease_file(tmp_path / "leases")
    with daemon_process() as d:
        _setup(d, path, 1)
        holder = start_holder(d, resource_string(path, 1))
        try:
            _after_a_renewal(d)
            subprocess.run(
                [sys.executable, "-m", "sync_manager", "direct", "init", "--force",
                 "-o", str(IO_TIMEOUT), "-s", f"{LS}:0:{path}:{LS_OFFSET}"],
                check=True, capture_output=True,
            )  # fmt: skip
            overwritten = time.monotonic()
            died = _deaths((holder,), overwritten + 2 * IO_TIMEOUT + SLACK + 3)
        finally:
            stop_process(holder)
        log = d.log()
    d.check(holder.pid in died, "the holder outlived the overwrite of our delta lease")
    print(f"holder dead {died[holder.pid] - overwritten:.2f} s after the overwrite")
    assert holder.returncode == -signal.SIGTERM
    # by the next renewal (2N), far sooner than the 8N of a failing one
    assert died[holder.pid] - overwritten <= 2 * IO_TIMEOUT + SLACK
    assert "our delta lease was overwritten" in log
    assert "recovery started (renewal corrupt)" in log


# --- storage that stops answering ------------------------------------------------------------


def _ext4(tmp_path: Path) -> contextlib.AbstractContextManager[Path]:
    """A fresh ext4 on a loop device, mounted; thawed, unmounted and detached after."""
    return ext4_mount(tmp_path / "ext4.img", tmp_path / "mnt")


def _frozen(mnt: Path) -> contextlib.AbstractContextManager[None]:
    """Writes to ``mnt`` hang until the block ends (or GUARD seconds, as a safety net)."""
    return frozen(mnt, GUARD)


def _after_a_renewal(d: DaemonProcess) -> int:
    """Wait for the next successful renewal; its timestamp T (the daemon's monotonic seconds,
    as its fencing deadlines count them). The next renewal is 2N later."""
    first = hosts(d.api, 1)[0].timestamp
    deadline = time.monotonic() + 4 * IO_TIMEOUT
    while time.monotonic() < deadline:
        now = hosts(d.api, 1)[0].timestamp
        if now != first:
            return now
        time.sleep(0.01)  # polling: a renewal shows only in the daemon's answers
    d.fail(f"no renewal within {4 * IO_TIMEOUT} s")


def _deaths(procs: tuple[subprocess.Popen[str], ...], limit: float) -> dict[int, float]:
    """When each of ``procs`` ended (monotonic), waiting until all have or ``limit`` passes."""
    died: dict[int, float] = {}
    while len(died) < len(procs) and time.monotonic() < limit:
        for proc in procs:
            if proc.pid not in died and proc.poll() is not None:
                died[proc.pid] = time.monotonic()
        time.sleep(0.01)  # polling the holders: waitpid has no timeout for several
    return died


@pytest.mark.root
def test_hung_storage_kills_holders_by_the_fail_deadline(tmp_path: Path) -> None:
    with _ext4(tmp_path) as mnt, daemon_process(extra=["-g", str(KILL_GRACE)]) as d:
        path = lease_file(mnt / "leases")
        _setup(d, path, 2)
        polite = start_holder(d, resource_string(path, 1))
        stubborn = start_holder(d, resource_string(path, 2), ignore_term=True)
        try:
            t = _after_a_renewal(d)
            with _frozen(mnt):
                frozen_at = time.monotonic()
                limit = t + FAIL + KILL_GRACE + SLACK + 3
                died = _deaths((polite, stubborn), limit)
                d.check(d.alive, "the daemon exited when its storage hung")
                assert d.api.get_lockspaces() is not None  # and still answers
        finally:
            stop_process(polite)
            stubborn_out, _ = stop_process(stubborn)
        log = d.log()
        print(f"froze {frozen_at - t:.2f} s after the last renewal T")
        for name, proc in (("holder", polite), ("SIGTERM-ignoring holder", stubborn)):
            when = died.get(proc.pid)
            shown = "alive" if when is None else f"T+{when - t:.2f} s"
            print(f"{name} pid {proc.pid}: rc {proc.returncode}, dead at {shown}")
        term_lines = [ln for ln in stubborn_out.splitlines() if ln.startswith("SIGTERM ")]
        for line in term_lines:
            print(f"SIGTERM-ignoring holder got SIGTERM at T+{float(line.split()[1]) - t:.2f} s")

        # the holder that takes SIGTERM is dead from T + 8N, within the check's slack
        d.check(polite.pid in died, f"holder pid {polite.pid} still alive at T+{limit - t:.0f}")
        assert polite.returncode == -signal.SIGTERM
        assert t + FAIL - 0.1 <= died[polite.pid] <= t + FAIL + SLACK
        assert f"LS: pid {polite.pid}: sent SIGTERM" in log
        # the one that ignores it got SIGTERM at T + 8N, then SIGKILL at T + 8N + kill_grace
        assert term_lines, stubborn_out
        assert t + FAIL - 0.1 <= float(term_lines[0].split()[1]) <= t + FAIL + SLACK
        d.check(stubborn.pid in died, f"holder pid {stubborn.pid} ignoring SIGTERM still alive")
        assert stubborn.returncode == -signal.SIGKILL
        sigkill_at = t + FAIL + KILL_GRACE
        assert sigkill_at - 0.1 <= died[stubborn.pid] <= sigkill_at + SLACK
        assert f"LS: pid {stubborn.pid}: sent SIGTERM" in log
        assert f"LS: pid {stubborn.pid}: sent SIGKILL" in log
        assert "lockspace LS: renewal warning" in log
        # thawed: the daemon is still there and serves
        assert d.alive and str(d.api.version()) == "3.8.5"


# A killpath program, as libvirt's sanlock helper is one: it records how and when it ran and,
# given "kill", ends the holder with SIGUSR1 (so the holder's status tells who ended it).
KILLPATH = """#!{python}
import os, signal, sys, time
record, mode, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(record, "a") as f:
    f.write(f"{{mode}} {{pid}} {{time.monotonic():.3f}}\\n")
if mode == "kill":
    os.kill(pid, signal.SIGUSR1)
"""


@pytest.mark.root
def test_hung_storage_runs_the_killpath_by_the_fail_deadline(tmp_path: Path) -> None:
    """With a killpath registered, the fail deadline T + 8N runs it once (its args, then the
    holder's pid) instead of sending SIGTERM; a holder it does not end gets SIGKILL at
    T + 8N + kill_grace, and never SIGTERM."""
    program = tmp_path / "killpath"
    program.write_text(KILLPATH.format(python=sys.executable))
    program.chmod(0o755)
    record = tmp_path / "killpath.log"
    with _ext4(tmp_path) as mnt, daemon_process(extra=["-g", str(KILL_GRACE)]) as d:
        path = lease_file(mnt / "leases")
        _setup(d, path, 2)
        killpath = [str(program), str(record)]
        obeys = start_holder(d, resource_string(path, 1), killpath=[*killpath, "kill"])
        ignores = start_holder(
            d, resource_string(path, 2), ignore_term=True, killpath=[*killpath, "ignore"]
        )
        try:
            t = _after_a_renewal(d)
            with _frozen(mnt):
                died = _deaths((obeys, ignores), t + FAIL + KILL_GRACE + SLACK + 3)
                d.check(d.alive, "the daemon exited when its storage hung")
        finally:
            stop_process(obeys)
            ignores_out, _ = stop_process(ignores)
        log = d.log()
    runs = [line.split() for line in record.read_text().splitlines()]
    for mode, pid, when in runs:
        print(f"killpath {mode} for pid {pid} ran at T+{float(when) - t:.2f} s")
    for name, proc in (("obeys", obeys), ("ignores", ignores)):
        shown = f"T+{died[proc.pid] - t:.2f} s" if proc.pid in died else "alive"
        print(f"holder that {name} the killpath, pid {proc.pid}: rc {proc.returncode}, {shown}")

    # each killpath ran once, at the fail deadline, with its args and the holder's pid
    assert sorted((mode, int(pid)) for mode, pid, _ in runs) == sorted(
        [("kill", obeys.pid), ("ignore", ignores.pid)]
    ), runs
    for _, _, when in runs:  # the time the program wrote, after its own interpreter start-up
        assert t + FAIL - 0.1 <= float(when) <= t + FAIL + SLACK + 1.0
    assert f"LS: pid {obeys.pid}: started killpath" in log
    # the killpath ended one holder; the other got SIGKILL after the grace, never SIGTERM
    d.check(obeys.pid in died, f"holder pid {obeys.pid} outlived its killpath")
    assert obeys.returncode == -signal.SIGUSR1
    d.check(ignores.pid in died, f"holder pid {ignores.pid} still alive after the grace")
    assert ignores.returncode == -signal.SIGKILL
    sigkill_at = t + FAIL + KILL_GRACE
    assert sigkill_at - 0.1 <= died[ignores.pid] <= sigkill_at + SLACK
    assert "SIGTERM" not in ignores_out
    assert f"LS: pid {ignores.pid}: sent SIGTERM" not in log
    assert f"LS: pid {ignores.pid}: sent SIGKILL" in log
