"""Mixed clusters (issue 4): our daemon and a real sanlock daemon in one lockspace.

One sparse lease file: lockspace LS at 0 (initialized with io_timeout 1, so
host_dead = 8 * 1 + 60 = 68 s, spec 7), exclusive leases R at 1 MiB and Q at 2 MiB, shared
lease S at 3 MiB. Our daemon joins as host 1 and the real sanlock daemon as host 2, each from its
own run dir, each with add_lockspace (io_timeout 1). A *holder* process per daemon is
registered with it and acquires and releases through that daemon's own client: ours with
``sync_manager.client``, sanlock's with python3-sanlock under ``/usr/bin/python3``. Holders
take one JSON command per line on stdin and answer one JSON line.

What is shown, in both orders (ours holds first / sanlock holds first):

* a lease held by one host is refused to the other with SANLK_ACQUIRE_IDLIVE (-243);
* after the holder releases it, the other host takes it (lver goes up by one);
* ``sanlock direct dump`` shows the owner, generation and lver each daemon committed;
  get_hosts on each daemon shows the other host LIVE;
* shared leases: both hosts hold S shared at once, and an exclusive request from either is
  refused (-EAGAIN, spec 6.7) while the other holds it shared;
* takeover: the holding host's daemon and holder are SIGKILLed; the other host's acquire
  fails until host_dead after the killed host's last renewal, and succeeds after.

The takeover bound. The killed host's last renewal wrote timestamp ``T_last`` (whole seconds of
CLOCK_MONOTONIC, which both daemons and this test share, being on one machine) in its delta
lease; we read it back from the disk after the kill. The survivor may take over only when
``now - last_live > host_dead`` (spec 6.2 step 6), where ``last_live`` is when the survivor
saw that renewal, so after ``T_last``: the first success must come at or after
``T_last + 68`` (asserted exactly). Relative to the kill at ``K``: the killed host renewed every
2N = 2 s (spec 5.3: sanlock checks once per second and pauses 0.5 s before each attempt) and
writes whole seconds, so ``T_last > K - (2 + 1 + 0.5) - 1``; we allow ``K - 5`` and assert the
first success is at least ``68 - 5 = 63`` s after the kill. It must also have come within
``68 + 30`` s of the kill: the survivor's liveness loop runs once a second and we poll every 2 s.

Each takeover direction takes ~75 s (most of it host_dead, idle): the two run at once, in two
clusters, so they run by default. The daemons come from tests/daemons.py.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sync_manager.client import Client
from tests.daemons import (
    SANLOCK,
    SYSTEM_PYTHON,
    Daemon,
    SanlockDaemon,
    SyncManagerDaemon,
    require_python_sanlock,
    require_sanlock,
)

pytestmark = pytest.mark.interop

MIB = 1024 * 1024
LS = "LS"
R, Q, S = "R", "Q", "S"
OFFSETS = {R: 1 * MIB, Q: 2 * MIB, S: 3 * MIB}
IO_TIMEOUT = 1
HOST_DEAD = 8 * IO_TIMEOUT + 60  # spec 7: host_dead_seconds = 8N + 60
# How long before the kill the killed host's last renewal may have been (see the docstring).
RENEWAL_SLACK = 5
TAKEOVER_LATE = 30  # generous: the survivor's liveness loop runs once a second
POLL = 2.0  # seconds between acquire attempts during a takeover

IDLIVE = -243  # SANLK_ACQUIRE_IDLIVE
EAGAIN = -11  # live shared holders (spec 6.7)
HOST_LIVE = 3  # SANLK_HOST_LIVE, in sanlk_host.flags & 0xF
HOST_DEAD_STATE = 5  # SANLK_HOST_DEAD

OURS_ID, SANLOCK_ID = 1, 2

# A holder registered with sanlock through python3-sanlock (system Python): one JSON command a
# line on stdin, one JSON answer a line on stdout; the first line is its pid.
SANLOCK_HOLDER = r"""
import json, os, sys
import sanlock
fd = sanlock.register()
print(json.dumps({"ok": True, "result": os.getpid()}), flush=True)
for line in sys.stdin:
    c = json.loads(line)
    ls, disks = c["ls"].encode(), [(c["path"], c["offset"])]
    try:
        if c["op"] == "acquire":
            sanlock.acquire(ls, c["res"].encode(), disks, slkfd=fd, shared=c["shared"])
            out = None
        elif c["op"] == "release":
            sanlock.release(ls, c["res"].encode(), disks, slkfd=fd)
            out = None
        else:
            out = [[h["host_id"], h["generation"], h["flags"]] for h in sanlock.get_hosts(ls)]
    except sanlock.SanlockException as e:
        print(json.dumps({"ok": False, "errno": -abs(e.errno), "message": str(e)}), flush=True)
    else:
        print(json.dumps({"ok": True, "result": out}), flush=True)
"""

# The same, registered with our daemon through sync_manager.client.
OURS_HOLDER = r"""
import json, os, sys
from sync_manager.client import Client, SanlockError, resource
client = Client()
reg = client.register()
print(json.dumps({"ok": True, "result": os.getpid()}), flush=True)
for line in sys.stdin:
    c = json.loads(line)
    try:
        if c["op"] in ("acquire", "release"):
            spec = resource(c["ls"], c["res"], [(c["path"], c["offset"])], shared=c["shared"])
            getattr(reg, c["op"])(spec)
            out = None
        else:
            out = [[h.host_id, h.generation, h.flags] for h in client.get_hosts(c["ls"])]
    except SanlockError as e:
        print(json.dumps({"ok": False, "errno": e.code, "message": str(e)}), flush=True)
    else:
        print(json.dumps({"ok": True, "result": out}), flush=True)
"""


@dataclass(frozen=True)
class Outcome:
    """One holder command's answer: ``errno`` 0 on success; ``at`` when it came (monotonic)."""

    errno: int
    result: Any
    message: str
    started: float
    at: float


class Holder:
    """A process registered with one daemon; it acquires and releases through its client."""

    def __init__(self, argv: list[str], env: dict[str, str], leases: Path) -> None:
        self.leases = leases
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = self._read(30.0)
        self.pid = int(first.result)

    def _read(self, timeout: float) -> Outcome:
        assert self.proc.stdout is not None
        started = time.monotonic()
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                self.kill()
                pytest.fail(f"holder gave no answer in {timeout} s: {self.stderr()}")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            pytest.fail(f"holder exited ({self.proc.returncode}): {self.stderr()}")
        got = json.loads(line)
        at = time.monotonic()
        if got["ok"]:
            return Outcome(0, got["result"], "", started, at)
        return Outcome(got["errno"], None, got["message"], started, at)

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return self.proc.stderr.read()

    def command(
        self, op: str, res: str = "", *, shared: bool = False, timeout: float = 30.0
    ) -> Outcome:
        assert self.proc.stdin is not None
        cmd = {"op": op, "ls": LS, "res": res, "shared": shared, "path": str(self.leases)}
        cmd["offset"] = OFFSETS.get(res, 0)
        started = time.monotonic()
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        out = self._read(timeout)
        return Outcome(out.errno, out.result, out.message, started, out.at)

    def acquire(self, res: str, *, shared: bool = False, timeout: float = 30.0) -> Outcome:
        return self.command("acquire", res, shared=shared, timeout=timeout)

    def release(self, res: str) -> Outcome:
        return self.command("release", res)

    def hosts(self) -> dict[int, tuple[int, int]] | None:
        """get_hosts(LS) through this holder's client: {host_id: (generation, state)}; None
        while the daemon answers -EAGAIN (not yet renewed once since joining)."""
        out = self.command("hosts")
        if out.errno == EAGAIN:
            return None
        assert out.errno == 0, out
        return {h: (gen, flags & 0xF) for h, gen, flags in out.result}

    def close(self) -> None:
        """Close stdin; the holder exits and its daemon releases what it held."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(BrokenPipeError):  # stdin of a killed holder
                    pipe.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=15)


@dataclass
class Host:
    """One daemon (``ours`` or ``sanlock``, from tests/daemons.py) and its holder."""

    kind: str
    host_id: int
    daemon: Daemon
    leases: Path
    holder: Holder | None = None

    def log(self) -> str:
        return self.daemon.log()

    def start_holder(self) -> Holder:
        if self.kind == "ours":
            argv = [sys.executable, "-c", OURS_HOLDER]
        else:
            argv = [SYSTEM_PYTHON, "-c", SANLOCK_HOLDER]
        self.holder = Holder(argv, self.daemon.env, self.leases)
        return self.holder

    def add_lockspace(self) -> Callable[[], None]:
        """Start joining LS with the daemon's own client; returns a function that waits."""
        if self.kind == "ours":
            errors: list[BaseException] = []

            def join() -> None:
                try:
                    Client(self.daemon.run_dir, timeout=60).add_lockspace(
                        LS, self.host_id, self.leases, 0, io_timeout=IO_TIMEOUT
                    )
                except BaseException as exc:  # reported by the waiter
                    errors.append(exc)

            thread = threading.Thread(target=join)
            thread.start()

            def wait_ours() -> None:
                thread.join(timeout=60)
                assert not thread.is_alive() and not errors, (errors, self.log())

            return wait_ours
        ls = f"{LS}:{self.host_id}:{self.leases}:0"
        cli = subprocess.Popen(
            [SANLOCK, "client", "add_lockspace", "-s", ls, "-o", str(IO_TIMEOUT)],
            env=self.daemon.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

        def wait_sanlock() -> None:
            out, _ = cli.communicate(timeout=60)
            assert cli.returncode == 0, f"{out}\n{self.log()}"

        return wait_sanlock

    def kill(self) -> None:
        """SIGKILL the daemon (its whole process group: sanlock's helper too) and its holder."""
        proc = self.daemon.proc
        assert proc is not None
        os.killpg(proc.pid, signal.SIGKILL)
        if self.holder is not None:
            self.holder.kill()
        proc.wait(timeout=15)

    def stop(self) -> None:
        """Holder first (its leases are released), then the daemon (shutdown -f 1)."""
        if self.holder is not None:
            self.holder.close()
        self.daemon.stop()


@dataclass
class Cluster:
    leases: Path
    ours: Host
    sanlock: Host

    def host(self, kind: str) -> Host:
        return self.ours if kind == "ours" else self.sanlock

    def other(self, kind: str) -> Host:
        return self.sanlock if kind == "ours" else self.ours

    def holder(self, kind: str) -> Holder:
        holder = self.host(kind).holder
        assert holder is not None
        return holder

    def logs(self) -> str:
        return "\n".join(
            f"--- {h.kind} daemon log ---\n{h.log()}" for h in (self.ours, self.sanlock)
        )


def _run(*args: str) -> str:
    done = subprocess.run([SANLOCK, *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"sanlock {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


@dataclass(frozen=True)
class Dump:
    """``sanlock direct dump`` of the lease file: delta leases and resource leaders."""

    hosts: dict[int, tuple[str, int, int]]  # host_id -> (name, timestamp, generation)
    leaders: dict[str, tuple[int, int, int, int]]  # name -> (timestamp, owner, generation, lver)
    shared: dict[str, set[tuple[int, int]]]  # name -> {(host_id, generation)} in SH mode
    text: str


def dump(leases: Path) -> Dump:
    text = _run("direct", "dump", f"{leases}:0:{4 * MIB}")
    hosts: dict[int, tuple[str, int, int]] = {}
    leaders: dict[str, tuple[int, int, int, int]] = {}
    shared: dict[str, set[tuple[int, int]]] = {}
    current = ""
    for line in text.splitlines()[1:]:
        f = line.split()
        if f[-1] == "SH":
            shared[current].add((int(f[0]), int(f[1])))
        elif len(f) == 6:  # a delta lease: offset space name timestamp owner gen
            assert f[1] == LS, line
            hosts[int(f[4])] = (f[2], int(f[3]), int(f[5]))
        else:  # a paxos leader: ... lver
            current = f[2]
            leaders[current] = (int(f[3]), int(f[4]), int(f[5]), int(f[6]))
            shared[current] = set()
    return Dump(hosts, leaders, shared, text)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Both daemons joined to LS (ours host 1, sanlock host 2), each seeing the other LIVE,
    each with a registered holder."""
    with running_cluster(tmp_path) as mixed:
        yield mixed


@contextlib.contextmanager
def running_cluster(where: Path) -> Iterator[Cluster]:
    """The cluster of the ``cluster`` fixture, its lease file in ``where``."""
    require_sanlock()
    require_python_sanlock()
    where.mkdir(parents=True, exist_ok=True)
    leases = where / "leases.img"
    with leases.open("wb") as f:
        f.truncate(4 * MIB)
    _run("direct", "init", "-s", f"{LS}:0:{leases}:0", "-o", str(IO_TIMEOUT))
    for name, offset in OFFSETS.items():
        _run("direct", "init", "-r", f"{LS}:{name}:{leases}:{offset}")
    ours = Host("ours", OURS_ID, SyncManagerDaemon("mixed-ours"), leases)
    theirs = Host("sanlock", SANLOCK_ID, SanlockDaemon("mixed-sanlock"), leases)
    mixed = Cluster(leases, ours, theirs)
    try:
        for host in (ours, theirs):
            host.daemon.start()
        waits = [host.add_lockspace() for host in (ours, theirs)]  # both join at once
        for wait in waits:
            wait()
        for host in (ours, theirs):
            host.start_holder()
        # A joined host shows UNKNOWN until a renewal of the other has been seen (spec 5.5):
        # poll each daemon's get_hosts until it shows the other LIVE, or 20 s pass.
        deadline = time.monotonic() + 20
        while True:
            views = {h.kind: mixed.holder(h.kind).hosts() or {} for h in (ours, theirs)}
            live = views["ours"].get(SANLOCK_ID, (0, 0))[1] == HOST_LIVE
            live = live and views["sanlock"].get(OURS_ID, (0, 0))[1] == HOST_LIVE
            if live or time.monotonic() > deadline:
                break
            time.sleep(0.5)  # polling: daemons announce no renewal
        yield mixed
    finally:
        for host in (ours, theirs):
            host.stop()


def _fail(outcome: Outcome, want: int, what: str, mixed: Cluster) -> None:
    assert outcome.errno == want, f"{what}: got {outcome}\n{mixed.logs()}"


def test_both_see_each_other_live(cluster: Cluster) -> None:
    """get_hosts from each daemon shows both hosts LIVE (ourselves and the other), and the
    delta leases on disk carry each daemon's host name, generation 1."""
    ours_view = cluster.holder("ours").hosts()
    sanlock_view = cluster.holder("sanlock").hosts()
    assert ours_view == {OURS_ID: (1, HOST_LIVE), SANLOCK_ID: (1, HOST_LIVE)}, cluster.logs()
    assert sanlock_view == {OURS_ID: (1, HOST_LIVE), SANLOCK_ID: (1, HOST_LIVE)}, cluster.logs()
    disk = dump(cluster.leases)
    assert {h: (name, gen) for h, (name, _ts, gen) in disk.hosts.items()} == {
        OURS_ID: ("mixed-ours", 1),
        SANLOCK_ID: ("mixed-sanlock", 1),
    }, disk.text
    assert all(ts > 0 for _name, ts, _gen in disk.hosts.values()), disk.text


@pytest.mark.parametrize("first", ["ours", "sanlock"])
def test_exclusive_refused_then_taken_after_release(cluster: Cluster, first: str) -> None:
    """The first host holds R: the other gets IDLIVE; after release the other takes R (lver
    2) and the first now gets IDLIVE; the dump shows each owner and lver as committed."""
    second = "sanlock" if first == "ours" else "ours"
    a, b = cluster.holder(first), cluster.holder(second)
    a_id, b_id = cluster.host(first).host_id, cluster.host(second).host_id

    _fail(a.acquire(R), 0, f"{first} acquires free R", cluster)
    disk = dump(cluster.leases)
    ts, owner, gen, lver = disk.leaders[R]
    assert (owner, gen, lver) == (a_id, 1, 1) and ts > 0, disk.text

    _fail(b.acquire(R), IDLIVE, f"{second} acquires R held by {first}", cluster)
    assert dump(cluster.leases).leaders[R] == (ts, owner, gen, lver)  # a refusal writes no leader

    _fail(a.release(R), 0, f"{first} releases R", cluster)
    disk = dump(cluster.leases)
    assert disk.leaders[R][0] == 0 and disk.leaders[R][1:] == (a_id, 1, 1), disk.text

    _fail(b.acquire(R), 0, f"{second} acquires R after release", cluster)
    disk = dump(cluster.leases)
    ts2, owner2, gen2, lver2 = disk.leaders[R]
    assert (owner2, gen2, lver2) == (b_id, 1, 2) and ts2 > 0, disk.text

    _fail(a.acquire(R), IDLIVE, f"{first} acquires R now held by {second}", cluster)
    # the other lease is untouched and free for either
    _fail(a.acquire(Q), 0, f"{first} acquires Q while {second} holds R", cluster)
    _fail(b.acquire(Q), IDLIVE, f"{second} acquires Q held by {first}", cluster)
    _fail(b.release(R), 0, f"{second} releases R", cluster)
    _fail(a.release(Q), 0, f"{first} releases Q", cluster)
    disk = dump(cluster.leases)
    assert disk.leaders[R] == (0, b_id, 1, 2), disk.text
    assert disk.leaders[Q] == (0, a_id, 1, 1), disk.text


def test_shared_across_daemons(cluster: Cluster) -> None:
    """Both hosts hold S shared at once; an exclusive acquire from either is refused with
    -EAGAIN while the other holds S shared; once both released, an exclusive acquire works."""
    ours, theirs = cluster.holder("ours"), cluster.holder("sanlock")

    _fail(ours.acquire(S, shared=True), 0, "ours SH", cluster)
    _fail(theirs.acquire(S), EAGAIN, "sanlock EX while ours holds SH", cluster)
    _fail(theirs.acquire(S, shared=True), 0, "sanlock SH while ours holds SH", cluster)
    disk = dump(cluster.leases)
    assert disk.shared[S] == {(OURS_ID, 1), (SANLOCK_ID, 1)}, disk.text
    assert disk.leaders[S][0] == 0, disk.text  # SH leaves the leader free (spec 6.7)

    _fail(ours.release(S), 0, "ours releases SH", cluster)
    assert dump(cluster.leases).shared[S] == {(SANLOCK_ID, 1)}
    _fail(ours.acquire(S), EAGAIN, "ours EX while sanlock holds SH", cluster)
    _fail(theirs.release(S), 0, "sanlock releases SH", cluster)
    assert dump(cluster.leases).shared[S] == set()

    _fail(ours.acquire(S), 0, "ours EX once nobody holds SH", cluster)
    _fail(theirs.acquire(S, shared=True), IDLIVE, "sanlock SH while ours holds EX", cluster)
    disk = dump(cluster.leases)
    assert disk.leaders[S][1:3] == (OURS_ID, 1) and disk.leaders[S][0] > 0, disk.text
    _fail(ours.release(S), 0, "ours releases EX", cluster)
    _fail(theirs.acquire(S), 0, "sanlock EX once free", cluster)
    _fail(ours.acquire(S, shared=True), IDLIVE, "ours SH while sanlock holds EX", cluster)
    _fail(theirs.release(S), 0, "sanlock releases EX", cluster)


def test_takeover_after_kill_both_ways(tmp_path: Path) -> None:
    """In two clusters at once (the waits are long and mostly idle): ours killed and sanlock
    taking over, and sanlock killed and ours taking over."""
    with (
        running_cluster(tmp_path / "ours-killed") as first,
        running_cluster(tmp_path / "sanlock-killed") as second,
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        runs = [pool.submit(takeover, first, "ours"), pool.submit(takeover, second, "sanlock")]
        for run in runs:
            run.result()  # re-raises the direction's assertion


def takeover(cluster: Cluster, killed: str) -> None:
    """The holder's daemon and holder are SIGKILLed; the other host's acquire is refused until
    host_dead after the killed host's last renewal (on disk) and succeeds after."""
    survivor = "sanlock" if killed == "ours" else "ours"
    victim, taker = cluster.holder(killed), cluster.holder(survivor)
    dead_id, taker_id = cluster.host(killed).host_id, cluster.host(survivor).host_id

    _fail(victim.acquire(R), 0, f"{killed} acquires R", cluster)
    _fail(taker.acquire(R), IDLIVE, f"{survivor} acquires R held by live {killed}", cluster)

    cluster.host(killed).kill()
    killed_at = time.monotonic()
    disk = dump(cluster.leases)
    last_renewal = disk.hosts[dead_id][1]  # whole seconds of CLOCK_MONOTONIC, as we use
    assert killed_at - RENEWAL_SLACK <= last_renewal <= killed_at, (killed_at, disk.text)
    assert disk.leaders[R][1:] == (dead_id, 1, 1), disk.text

    attempts: list[Outcome] = []
    while True:
        # an attempt may block in the daemon's liveness loop until host_dead (spec 6.2)
        out = taker.acquire(R, timeout=HOST_DEAD + 60)
        attempts.append(out)
        if out.errno == 0 or out.at - killed_at > HOST_DEAD + TAKEOVER_LATE:
            break
        time.sleep(max(0.0, out.started + POLL - time.monotonic()))  # poll every ~2 s

    report = [
        (round(o.started - killed_at, 1), round(o.at - killed_at, 1), o.errno) for o in attempts
    ]
    first_ok = attempts[-1]
    after_kill = first_ok.at - killed_at
    print(
        f"{survivor} took R over {after_kill:.1f} s after the kill; {last_renewal=} "
        f"{killed_at=:.1f}; attempts (start, end, errno): {report}"
    )
    assert first_ok.errno == 0, f"no takeover within {HOST_DEAD + TAKEOVER_LATE} s: {report}"
    assert all(o.errno == IDLIVE for o in attempts[:-1]), report
    assert first_ok.at >= last_renewal + HOST_DEAD, (last_renewal, first_ok, report)
    assert after_kill >= HOST_DEAD - RENEWAL_SLACK, report
    assert after_kill <= HOST_DEAD + TAKEOVER_LATE, report

    disk = dump(cluster.leases)
    ts, owner, gen, lver = disk.leaders[R]
    assert (owner, gen, lver) == (taker_id, 1, 2) and ts > 0, disk.text
    # the takeover waited for the same age of last_live that get_hosts calls DEAD (spec 5.5)
    view = taker.hosts()
    assert view is not None and view[dead_id] == (1, HOST_DEAD_STATE), view
    assert view[taker_id] == (1, HOST_LIVE), view
    _fail(taker.release(R), 0, f"{survivor} releases R", cluster)
