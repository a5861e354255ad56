#!/usr/bin/env python3
"""Our daemon next to the real sanlock 3.8.5 daemon: latency, throughput, join, idle cost.

    python3 bench/daemon_bench.py [--dir DIR] [--rounds N] [--duration S] [--idle S]
                                  [--failover] [--out FILE | --print-only]

Both daemons run at the same time, each with its own run dir and its own lease file, both
files in one fresh directory under DIR (default: the system temporary directory, /tmp on ext4
here). Every file is first filled with zeros (so no O_DIRECT read hits a hole), then laid out
by ``sanlock direct init``: lockspace ``LS`` at offset 0 with io_timeout 1, resources
``R0``..``R7`` with the default num_hosts (2000, as vdsm and libvirt write them) and ``S0``
with num_hosts 8 (``init -r -n 8``).

The same neutral client drives both daemons: python3-sanlock (what vdsm uses) in worker
processes run by ``/usr/bin/python3``, which differ only in ``SANLOCK_RUN_DIR``.

* **Join**: the wall time of ``sanlock.add_lockspace(LS, 1, file, iotimeout=1)``.
* **Idle**: over ``--idle`` seconds with that one lockspace joined and no client: CPU from
  ``/proc/PID/stat`` utime+stime (clock ticks) and from the sum of every thread's
  ``/proc/PID/task/TID/schedstat`` run time (ns), of the daemon and its child processes; RSS
  (``VmRSS``) before any lease was taken, right after the load phases and again after 15 s
  idle; ``read_bytes``
  of ``/proc/PID/io`` over the window.
* **Renewal I/O**: ``strace -f -p PID`` on both daemons at once for a few renewals; the
  lengths of every ``io_submit`` iocb (sanlock: libaio) and every ``pread64/preadv/preadv2/
  pwrite64/pwritev/pwritev2`` (ours) on the lockspace file are summed, and divided by the
  number of one-sector writes (one per renewal).
* **Latency**: one registered client doing ``--rounds`` acquire + release of one resource
  (first those of R0, num_hosts 2000, then S0, num_hosts 8), in 4 blocks per daemon
  alternating between the daemons; each call timed alone in the client (perf_counter_ns),
  3 warm-up cycles per block dropped. p50 and p99 (nearest rank).
* **Throughput**: 1 and 8 client processes, each registered and cycling acquire + release
  on its own resource (R0..R7) for ``--duration`` seconds from a common start instant; the
  cycles completed inside the window, summed, per second. Two rounds, daemons alternating.
* **Failover** (``--failover``, about 80 s more): per daemon kind, two more daemons (hosts
  A and B) join lockspace ``FO`` (io_timeout 1) in another file; a client of A holds
  resource ``R0``; A's daemon (its whole process group) and the holder are killed with
  SIGKILL at T0; a client of B tries to acquire ``R0`` every 200 ms; the time from T0 to
  its success. Both kinds run at the same time.

Prints a markdown section and puts it in bench/RESULTS.md (or ``--out``) between the markers
``<!-- daemon_bench -->`` and ``<!-- /daemon_bench -->``, keeping every other section.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import mmap
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
SANLOCK = shutil.which("sanlock") or "/usr/sbin/sanlock"
STRACE = shutil.which("strace") or "strace"
SYSTEM_PYTHON = "/usr/bin/python3"  # has python3-sanlock; a pyenv python3 on PATH does not
MIB = 1024 * 1024
IO_TIMEOUT = 1
WARM_UP = 3  # cycles dropped at the start of each latency block
CLIENTS = 8  # resources R0..R7, one per client in the throughput run
SETTLE_SECONDS = 15.0  # idle after the load before RSS is taken again (buffers given back at 10)
FILE_MIB = 12
KINDS = ("ours", "sanlock")
BEGIN, END = "<!-- daemon_bench -->", "<!-- /daemon_bench -->"
T = TypeVar("T")

# The client side: python3-sanlock, run by /usr/bin/python3 (not type-checked: not our Python).
WORKER = r"""
import json, sys, time
import sanlock

def disks(path, off):
    return [(path, int(off))]

def main(mode, *a):
    if mode == "join":
        ls, path, host_id, io = a
        t = time.perf_counter()
        sanlock.add_lockspace(ls.encode(), int(host_id), path, 0, iotimeout=int(io))
        return {"seconds": time.perf_counter() - t}
    if mode == "latency":
        ls, res, path, off, rounds, warm = a
        ls, res, d = ls.encode(), res.encode(), disks(path, off)
        fd = sanlock.register()
        acq, rel = [], []
        for i in range(int(warm) + int(rounds)):
            t0 = time.perf_counter_ns()
            sanlock.acquire(ls, res, d, slkfd=fd)
            t1 = time.perf_counter_ns()
            sanlock.release(ls, res, d, slkfd=fd)
            t2 = time.perf_counter_ns()
            if i >= int(warm):
                acq.append(t1 - t0)
                rel.append(t2 - t1)
        return {"acquire_ns": acq, "release_ns": rel}
    if mode == "cycles":
        ls, res, path, off, start, duration = a
        ls, res, d = ls.encode(), res.encode(), disks(path, off)
        fd = sanlock.register()
        start, deadline = float(start), float(start) + float(duration)
        late = time.monotonic() > start
        while time.monotonic() < start:
            time.sleep(min(0.01, max(start - time.monotonic(), 0)))
        count = 0
        while True:
            t0 = time.monotonic()
            if t0 >= deadline:
                break
            sanlock.acquire(ls, res, d, slkfd=fd)
            sanlock.release(ls, res, d, slkfd=fd)
            if time.monotonic() <= deadline:
                count += 1
        return {"cycles": count, "late": late}
    if mode == "hold":
        ls, res, path, off = a
        fd = sanlock.register()
        sanlock.acquire(ls.encode(), res.encode(), disks(path, off), slkfd=fd)
        print("held", flush=True)
        time.sleep(1e6)
    if mode == "poll":
        ls, res, path, off, limit = a
        ls, res, d = ls.encode(), res.encode(), disks(path, off)
        fd = sanlock.register()
        errors, first = {}, time.monotonic()
        while time.monotonic() - first < float(limit):
            try:
                sanlock.acquire(ls, res, d, slkfd=fd)
            except sanlock.SanlockException as err:
                errors[str(err.errno)] = errors.get(str(err.errno), 0) + 1
                time.sleep(0.2)
                continue
            return {"acquired_at": time.monotonic(), "errors": errors}
        return {"acquired_at": None, "errors": errors}
    raise SystemExit("unknown mode " + mode)

print(json.dumps(main(*sys.argv[1:])), flush=True)
"""


# --- daemons ----------------------------------------------------------------------------------


@dataclass(eq=False)
class Daemon:
    """One lease daemon (``ours`` or ``sanlock``) in a run dir of its own."""

    kind: str
    name: str
    lease_file: Path
    extra: tuple[str, ...] = ()
    run_dir: Path = field(init=False)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        # short, under /tmp: a socket path must fit in 108 bytes
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"db{self.kind[:2]}", dir="/tmp"))

    @property
    def label(self) -> str:
        return ("sanlock " + " ".join(self.extra)).strip() if self.kind == "sanlock" else "ours"

    def argv(self) -> list[str]:
        if self.kind == "sanlock":
            # -L -1 -S -1: no /var/log/sanlock.log, no syslog (-D logs to stderr anyway)
            return [SANLOCK, "daemon", "-D", "-w", "0", "-U", "root", "-G", "root",
                    "-L", "-1", "-S", "-1", *self.extra, "-e", self.name]  # fmt: skip
        return [sys.executable, "-m", "sync_manager", "daemon", "-D", "-w", "0", "-e", self.name]

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ, SANLOCK_RUN_DIR=str(self.run_dir), SANLOCK_PRIVILEGED="0")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with (self.run_dir / "daemon.log").open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: a crash kills its helpers too
            )
        deadline = time.monotonic() + 30
        while not self._accepts():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{self.label} daemon did not start:\n{self.log()}")
            time.sleep(0.02)  # no readiness notification: poll for the socket

    def _accepts(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(self.run_dir / "sanlock.sock"))
            except OSError:
                return False
        return True

    def log(self) -> str:
        try:
            return (self.run_dir / "daemon.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def crash(self) -> None:
        """SIGKILL the daemon's whole process group (a host crash, as far as disk is concerned)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def stop(self) -> None:
        """``sanlock client shutdown -f 1``, then SIGKILL; remove the run dir."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                subprocess.run([SANLOCK, "client", "shutdown", "-f", "1"], env=self.env,
                               capture_output=True, timeout=15, check=False)  # fmt: skip
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    # --- clients ---

    def worker(self, script: Path, *args: object) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [SYSTEM_PYTHON, str(script), *map(str, args)],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def call(self, script: Path, *args: object, timeout: float = 300) -> Any:
        return finish(self.worker(script, *args), self, timeout)


def finish(proc: subprocess.Popen[str], daemon: Daemon, timeout: float = 300) -> Any:
    """A worker's JSON answer; exit loudly (with the daemon's log tail) if it failed."""
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"client of {daemon.label} failed: {err}\n--- daemon log ---\n"
                         f"{daemon.log()}")  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def parallel(funcs: Sequence[Callable[[], T]]) -> list[T]:
    """Run ``funcs`` on threads at once; their results in order (re-raising the first error)."""
    results: list[Any] = [None] * len(funcs)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = funcs[i]()
        except BaseException as err:  # re-raised below, in the caller
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(funcs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


# --- lease files ------------------------------------------------------------------------------


def sanlock_direct(*args: str) -> None:
    proc = subprocess.run([SANLOCK, "direct", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or "done -" in proc.stdout:
        raise SystemExit(f"sanlock direct {shlex.join(args)}: {proc.stdout}{proc.stderr}")


def make_lease_file(path: Path, lockspace: str, resources: Sequence[tuple[str, int]]) -> None:
    """Zeros (really written, no holes), lockspace at 0 with io_timeout 1, then ``resources``
    (name, num_hosts; 0 = sanlock's default) at 1 MiB, 2 MiB, ..."""
    zeros = bytes(MIB)
    with path.open("wb") as f:
        for _ in range(FILE_MIB):
            f.write(zeros)
        f.flush()
        os.fsync(f.fileno())
    sanlock_direct("init", "-s", f"{lockspace}:0:{path}:0", "-o", str(IO_TIMEOUT))
    for k, (name, num_hosts) in enumerate(resources, start=1):
        hosts = ["-n", str(num_hosts)] if num_hosts else []
        sanlock_direct("init", "-r", f"{lockspace}:{name}:{path}:{k * MIB}", *hosts)


RESOURCES = [*((f"R{k}", 0) for k in range(CLIENTS)), ("S0", 8)]


def offset_of(name: str) -> int:
    return (next(i for i, (n, _) in enumerate(RESOURCES) if n == name) + 1) * MIB


def write_floor(workdir: Path, count: int = 100) -> tuple[float, float]:
    """p50 and p90 seconds of a 512 B ``O_DIRECT|O_SYNC`` pwrite (how both daemons open a
    lease) to a file next to the lease files: the storage's state at this moment."""
    path = workdir / "probe"
    path.write_bytes(bytes(MIB))
    buf = mmap.mmap(-1, 4096)
    fd = os.open(path, os.O_RDWR | os.O_DIRECT | os.O_SYNC)
    try:
        with memoryview(buf) as view:
            lat = []
            for i in range(count):
                start = time.perf_counter()
                os.pwritev(fd, [view[:512]], (i % 16) * 4096)
                lat.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        buf.close()
        path.unlink()
    return pct(lat, 0.5), pct(lat, 0.9)


# --- /proc ------------------------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    children = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                    todo.extend(int(c) for c in children)
    return pids


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class Snapshot:
    """Resource use of a daemon's process tree at one instant."""

    ticks: int  # utime + stime, all processes (dead threads included)
    run_ns: int  # schedstat run time of the live threads
    rss_kb: int
    main_rss_kb: int
    locked_kb: int
    threads: int
    processes: int
    read_bytes: int

    @classmethod
    def of(cls, pid: int) -> Snapshot:
        ticks = run_ns = rss = locked = threads = read = 0
        pids = tree(pid)
        for p in pids:
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
            rss += _status(p, "VmRSS")
            locked += _status(p, "VmLck")
            threads += _status(p, "Threads")
            for line in Path(f"/proc/{p}/io").read_text().splitlines():
                if line.startswith("read_bytes:"):
                    read += int(line.split()[1])
        run_ns = cpu_ns_of(pid)
        return cls(ticks, run_ns, rss, _status(pid, "VmRSS"), locked, threads, len(pids), read)


@dataclass(frozen=True)
class Idle:
    seconds: float
    before: Snapshot
    after: Snapshot

    @property
    def cpu_ticks_pct(self) -> float:
        return (
            (self.after.ticks - self.before.ticks) / os.sysconf("SC_CLK_TCK") / self.seconds * 100
        )

    @property
    def cpu_ns_pct(self) -> float:
        return (self.after.run_ns - self.before.run_ns) / 1e9 / self.seconds * 100

    @property
    def read_rate(self) -> float:
        return (self.after.read_bytes - self.before.read_bytes) / self.seconds


def measure_idle(daemons: Sequence[Daemon], seconds: float) -> dict[Daemon, Idle]:
    before = {d: Snapshot.of(d.pid) for d in daemons}
    start = time.monotonic()
    time.sleep(seconds)  # the measurement window itself: nothing else runs from here
    elapsed = time.monotonic() - start
    return {d: Idle(elapsed, before[d], Snapshot.of(d.pid)) for d in daemons}


# --- renewal I/O by strace --------------------------------------------------------------------

_PREFIX = r"^(?:\d+\s+)?(?P<ts>\d+\.\d+)\s+"  # strace -f -ttt: pid, then the time
_SYSCALL = re.compile(
    _PREFIX + r"(?P<call>p(?:read|write)(?:64|v2?))\(\d+<(?P<path>[^>]*)>.*\)\s+=\s+(?P<ret>-?\d+)"
)
_IOCB = re.compile(
    r"aio_lio_opcode=IOCB_CMD_(?P<op>PREADV?|PWRITEV?), aio_fildes=\d+<(?P<path>[^>]*)>,"
    r"[^}]*?aio_nbytes=(?P<n>\d+)"
)
_UNFINISHED = re.compile(r"^(?P<pid>\d+)\s+(?P<head>.*) <unfinished \.\.\.>$")
_RESUMED = re.compile(r"^(?P<pid>\d+)\s+\S+\s+<\.\.\. \w+ resumed>(?P<tail>.*)$")
TRACED = "io_submit,pread64,pwrite64,preadv,pwritev,preadv2,pwritev2"


@dataclass
class IOCount:
    reads: int = 0
    bytes_read: int = 0
    writes: int = 0
    bytes_written: int = 0
    write_times: list[float] = field(default_factory=list)

    def add(self, read: bool, nbytes: int, when: float) -> None:
        if read:
            self.reads += 1
            self.bytes_read += nbytes
        else:
            self.writes += 1
            self.bytes_written += nbytes
            self.write_times.append(when)

    @property
    def period(self) -> float:
        """Mean seconds between two writes (renewals); 0 with fewer than two."""
        t = self.write_times
        return (t[-1] - t[0]) / (len(t) - 1) if len(t) > 1 else 0.0


def _joined(lines: list[str]) -> Iterator[str]:
    """strace lines with every ``<unfinished ...>`` call joined to its ``resumed`` rest."""
    pending: dict[str, str] = {}
    for line in lines:
        if (m := _UNFINISHED.match(line)) is not None:
            pending[m["pid"]] = m["pid"] + " " + m["head"]
        elif (m := _RESUMED.match(line)) is not None and m["pid"] in pending:
            yield pending.pop(m["pid"]) + m["tail"]
        else:
            yield line


def parse_trace(text: str, target: str) -> IOCount:
    """Sum the I/O on ``target`` in ``strace -f -ttt -y -v`` output."""
    count = IOCount()
    for line in _joined(text.splitlines()):
        if "io_submit(" in line:
            ts = re.match(_PREFIX, line)
            if ts is None or re.search(r"=\s+-1\b", line):
                continue
            for iocb in _IOCB.finditer(line):
                if iocb["path"] == target:
                    count.add(iocb["op"].startswith("PREAD"), int(iocb["n"]), float(ts["ts"]))
            continue
        call = _SYSCALL.match(line)
        if call is not None and call["path"] == target and int(call["ret"]) >= 0:
            count.add("read" in call["call"], int(call["ret"]), float(call["ts"]))
    return count


def trace_renewals(
    daemons: Sequence[Daemon], seconds: float, workdir: Path
) -> dict[Daemon, IOCount]:
    tracers = {}
    for d in daemons:
        out = workdir / f"renewal.{d.kind}.strace"
        tracers[d] = (out, subprocess.Popen(
            [STRACE, "-f", "-ttt", "-y", "-v", "-s", "0", "-e", f"trace={TRACED}", "-o", str(out),
             "-p", str(d.pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))  # fmt: skip
    time.sleep(seconds)  # the traced window: the daemons renew on their own meanwhile
    counts = {}
    for d, (out, proc) in tracers.items():
        proc.send_signal(signal.SIGINT)  # strace detaches on SIGINT
        proc.wait(timeout=30)
        counts[d] = parse_trace(out.read_text(errors="replace"), os.path.realpath(d.lease_file))
    return counts


# --- latency and throughput -------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


@dataclass
class Latency:
    acquire: list[float] = field(default_factory=list)  # seconds
    release: list[float] = field(default_factory=list)
    cpu_ns: int = 0  # daemon CPU (schedstat) over all the cycles, warm-up ones included
    cycles: int = 0


def cpu_ns_of(pid: int) -> int:
    """CPU time of the live threads of ``pid`` and its children, from schedstat (ns)."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    total += int(Path(f"/proc/{p}/task/{task}/schedstat").read_text().split()[0])
    return total


def latency(
    daemons: Sequence[Daemon], script: Path, resource: str, rounds: int, blocks: int = 4
) -> dict[Daemon, Latency]:
    result = {d: Latency() for d in daemons}
    per_block = max(math.ceil(rounds / blocks), 1)
    for b in range(blocks):
        order = daemons if b % 2 == 0 else list(reversed(daemons))
        for d in order:
            cpu = cpu_ns_of(d.pid)
            got = d.call(script, "latency", "LS", resource, d.lease_file, offset_of(resource),
                         per_block, WARM_UP)  # fmt: skip
            result[d].acquire += [ns / 1e9 for ns in got["acquire_ns"]]
            result[d].release += [ns / 1e9 for ns in got["release_ns"]]
            result[d].cpu_ns += cpu_ns_of(d.pid) - cpu
            result[d].cycles += per_block + WARM_UP
    return result


def throughput(d: Daemon, script: Path, clients: int, duration: float) -> float:
    start = time.monotonic() + 1.5  # time for every client to start and register
    procs = [
        d.worker(script, "cycles", "LS", f"R{k}", d.lease_file, offset_of(f"R{k}"), start,
                 duration)
        for k in range(clients)
    ]  # fmt: skip
    answers = [finish(p, d) for p in procs]
    if any(a["late"] for a in answers):
        print(f"warning: a client of {d.label} started late", file=sys.stderr)
    return sum(int(a["cycles"]) for a in answers) / duration


# --- failover ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failover:
    seconds: float | None
    errors: dict[str, int]
    join_a: float
    join_b: float


def failover(kind: str, workdir: Path, script: Path) -> Failover:
    path = workdir / f"{kind}.failover"
    make_lease_file(path, "FO", [("R0", 0)])
    a, b = Daemon(kind, f"bench-{kind}-A", path), Daemon(kind, f"bench-{kind}-B", path)
    holder: subprocess.Popen[str] | None = None
    try:
        a.start()
        b.start()
        joins = parallel([
            lambda: float(a.call(script, "join", "FO", path, 1, IO_TIMEOUT)["seconds"]),
            lambda: float(b.call(script, "join", "FO", path, 2, IO_TIMEOUT)["seconds"]),
        ])  # fmt: skip
        holder = a.worker(script, "hold", "FO", "R0", path, MIB)
        assert holder.stdout is not None
        if holder.stdout.readline().strip() != "held":
            raise SystemExit(f"holder on {a.label} failed: {holder.communicate()}\n{a.log()}")
        time.sleep(5)  # B sees A renew a couple of times, as in a running cluster
        t0 = time.monotonic()
        a.crash()
        holder.kill()
        got = b.call(script, "poll", "FO", "R0", path, MIB, 300, timeout=400)
        seconds = None if got["acquired_at"] is None else got["acquired_at"] - t0
        return Failover(seconds, got["errors"], joins[0], joins[1])
    finally:
        if holder is not None:
            holder.kill()
            holder.communicate()
        a.stop()
        b.stop()


# --- report -----------------------------------------------------------------------------------


@dataclass
class Results:
    joins: dict[str, float]
    idle: dict[Daemon, Idle]
    rss_after: dict[Daemon, Snapshot]
    rss_settled: dict[Daemon, Snapshot]
    renewal: dict[Daemon, IOCount]
    renewal_seconds: float
    lat: dict[str, dict[str, Latency]]  # resource -> kind -> samples
    cycles: dict[tuple[str, int], list[float]]  # (kind, clients) -> per round
    failover: dict[str, Failover] | None
    loads: list[tuple[str, tuple[float, float, float]]]
    floors: list[tuple[str, tuple[float, float]]]
    elapsed: float = 0.0


def _ms(s: float) -> str:
    return f"{s * 1000:.2f}"


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs > 0 else "n/a"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def table(r: Results) -> Iterator[str]:
    yield "| quantity | ours | sanlock 3.8.5 | ours / sanlock | goal |"
    yield "|---|---:|---:|---:|---|"
    for res, label in (("R0", "num_hosts 2000"), ("S0", "num_hosts 8")):
        o, s = r.lat[res]["ours"], r.lat[res]["sanlock"]
        for op in ("acquire", "release"):
            ov, sv = getattr(o, op), getattr(s, op)
            for q, name in ((0.5, "p50"), (0.99, "p99")):
                ratio = pct(ov, q) / pct(sv, q)
                goal = ""
                if op == "acquire":
                    goal = f"≤ 0.5: {_verdict(ratio <= 0.5)}"
                yield (f"| {op} {name} ms, {label} (n={len(ov)}) | {_ms(pct(ov, q))} "
                       f"| {_ms(pct(sv, q))} | {ratio:.2f} | {goal} |")  # fmt: skip
    for res, label in (("R0", "num_hosts 2000"), ("S0", "num_hosts 8")):
        o, s = r.lat[res]["ours"], r.lat[res]["sanlock"]
        ocpu, scpu = o.cpu_ns / o.cycles / 1e6, s.cpu_ns / s.cycles / 1e6
        yield (f"| daemon CPU ms per acquire+release, {label} (schedstat) | {ocpu:.2f} "
               f"| {scpu:.2f} | {ocpu / scpu:.2f} | |")  # fmt: skip
    for clients in (1, CLIENTS):
        oc, sc = r.cycles[("ours", clients)], r.cycles[("sanlock", clients)]
        om, sm = statistics.mean(oc), statistics.mean(sc)
        yield (f"| acquire+release cycles/s, {clients} client{'s' if clients > 1 else ''} "
               f"(mean of rounds {_rounds(oc)} vs {_rounds(sc)}) | {om:.0f} | {sm:.0f} "
               f"| {om / sm:.2f} | ≥ 1: {_verdict(om >= sm)} |")  # fmt: skip
    oj, sj = r.joins["ours"], r.joins["sanlock"]
    yield (f"| join (add_lockspace, io_timeout {IO_TIMEOUT}) s | {oj:.2f} | {sj:.2f} "
           f"| {oj / sj:.2f} | same (sanlock: 2N+1 = {2 * IO_TIMEOUT + 1} s): "
           f"{_verdict(oj <= sj * 1.05)} |")  # fmt: skip
    if r.failover is not None:
        of, sf = r.failover["ours"].seconds, r.failover["sanlock"].seconds
        ok = of is not None and sf is not None and of <= sf + 2 * IO_TIMEOUT + 1
        yield (f"| failover after host crash, io_timeout {IO_TIMEOUT}, s | {_cell(of)} "
               f"| {_cell(sf)} | {_ratio(of or 0, sf or 0)} "
               f"| same (rule: 8N+60 = {8 * IO_TIMEOUT + 60} s after the last renewal seen): "
               f"{_verdict(ok)} |")  # fmt: skip
    else:
        yield "| failover after host crash | not run (`--failover`) | | | |"
    ours, theirs = _by_kind(r.idle)
    oi, si = r.idle[ours], r.idle[theirs]
    yield (
        f"| idle CPU %, utime+stime ticks ({oi.seconds:.0f} s) | {oi.cpu_ticks_pct:.3f} "
        f"| {si.cpu_ticks_pct:.3f} | {_ratio(oi.cpu_ticks_pct, si.cpu_ticks_pct)} | |"
    )
    yield (
        f"| idle CPU %, schedstat run time ({oi.seconds:.0f} s) | {oi.cpu_ns_pct:.3f} "
        f"| {si.cpu_ns_pct:.3f} | {_ratio(oi.cpu_ns_pct, si.cpu_ns_pct)} | |"
    )
    orss, srss = oi.after.rss_kb, si.after.rss_kb
    yield (
        f"| idle RSS MB, 1 lockspace (daemon + children) | {orss / 1024:.1f} "
        f"| {srss / 1024:.1f} | {orss / srss:.2f} | ≤ 2: {_verdict(orss <= 2 * srss)} |"
    )
    ora, sra = r.rss_after[ours].rss_kb, r.rss_after[theirs].rss_kb
    yield (
        f"| RSS MB after the load phases | {ora / 1024:.1f} | {sra / 1024:.1f} "
        f"| {ora / sra:.2f} | ≤ 2: {_verdict(ora <= 2 * sra)} |"
    )
    ors, srs = r.rss_settled[ours].rss_kb, r.rss_settled[theirs].rss_kb
    yield (
        f"| RSS MB {SETTLE_SECONDS:.0f} s idle after the load phases | {ors / 1024:.1f} "
        f"| {srs / 1024:.1f} | {ors / srs:.2f} | ≤ 2: {_verdict(ors <= 2 * srs)} |"
    )
    orn, srn = r.renewal[ours], r.renewal[theirs]
    yield (
        f"| bytes read per renewal (strace, {r.renewal_seconds:.0f} s: "
        f"{orn.writes} vs {srn.writes} renewals) | {_per(orn):,.0f} | {_per(srn):,.0f} "
        f"| {_ratio(_per(orn), _per(srn))} | |"
    )
    yield (
        f"| renewal period s (strace) | {orn.period:.2f} | {srn.period:.2f} "
        f"| {_ratio(orn.period, srn.period)} | |"
    )
    yield (
        f"| idle read_bytes/s (/proc/PID/io) | {oi.read_rate:,.0f} | {si.read_rate:,.0f} "
        f"| {_ratio(oi.read_rate, si.read_rate)} | |"
    )


def _rounds(values: Sequence[float]) -> str:
    return "/".join(f"{x:.0f}" for x in values)


def _cell(seconds: float | None) -> str:
    return "none in 300 s" if seconds is None else f"{seconds:.1f}"


def _per(count: IOCount) -> float:
    return count.bytes_read / count.writes if count.writes else 0.0


def _by_kind(d: dict[Daemon, Any]) -> tuple[Daemon, Daemon]:
    ours = next(k for k in d if k.kind == "ours")
    theirs = next(k for k in d if k.kind == "sanlock" and not k.extra)
    return ours, theirs


def _filesystem(path: Path) -> str:
    real, best = os.path.realpath(path), ("", "?", "?")
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            source, point, fstype = line.split()[:3]
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) > len(best[0]):
                best = (point, fstype, source)
    return f"{best[1]} ({best[2]} on {best[0]})"


def _cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _version(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def report(r: Results, *, argv: list[str], workdir: Path, args: argparse.Namespace) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = shlex.join(["python3", "bench/daemon_bench.py", *argv])
    ours, theirs = _by_kind(r.idle)
    extra = [d for d in r.idle if d.kind == "sanlock" and d.extra]
    loads = "; ".join(f"{what} {a:.2f} {b:.2f} {c:.2f}" for what, (a, b, c) in r.loads)
    floors = "; ".join(f"{what} {_ms(a)} / {_ms(b)} ms" for what, (a, b) in r.floors)
    lines = [
        BEGIN,
        "## Daemon against daemon: sync_manager vs sanlock 3.8.5",
        "",
        f"Produced by `{command}` (from the project root) on {now}, in {r.elapsed:.0f} s.",
        "",
        f"Machine: {platform.node()}, Linux {platform.release()}, {os.cpu_count()} CPU(s) "
        f"({_cpu()}); lease files in {workdir.parent} on {_filesystem(workdir)}; our daemon "
        f"on Python {platform.python_version()} ({sys.executable}); clients python3-sanlock "
        f"under {SYSTEM_PYTHON} ({_version([SYSTEM_PYTHON, '--version'])}); "
        f"sanlock {_version([SANLOCK, 'version'])}. Load average (1/5/15 min): {loads}. "
        "Other sessions share this 2-vCPU VM and its filesystem, so absolute numbers move "
        "between runs; the two daemons are measured in the same run, interleaved, for the "
        "ratios.",
        "",
        "Storage state during the run: p50 / p90 of a 512 B `O_DIRECT|O_SYNC` pwrite next "
        f"to the lease files (both daemons open leases that way): {floors}. On this ext4 "
        "such a write takes about 0.1 ms, or one jiffy (4 ms, HZ=250) and more while the "
        "journal is busy (with other sessions' work on the same filesystem). An acquire "
        "does 3 such writes and a release 1 or 2 in both daemons, so that state moves "
        "latencies by up to 12 ms, and does not hit both daemons alike.",
        "",
        "Daemons: `SANLOCK_RUN_DIR=<dir> python3 -m sync_manager daemon -D -w 0 -e NAME` and "
        "`SANLOCK_RUN_DIR=<dir> SANLOCK_PRIVILEGED=0 sanlock daemon -D -w 0 -U root -G root "
        "-L -1 -S -1 -e NAME` (sanlock's default mlockall, `-l 1`), each with its own lease "
        f"file laid out by `sanlock direct init` (lockspace io_timeout {IO_TIMEOUT}), driven "
        "by the same python3-sanlock client code. Ratios are ours / sanlock: below 1 means "
        "less time, fewer bytes or less memory than sanlock; for cycles/s above 1 is better.",
        "",
        *table(r),
        "",
        "How each number was taken:",
        "",
        f"- Latency: one registered client per daemon, {args.rounds} acquire + release "
        "cycles per resource in 4 blocks, alternating the daemons, each call timed in the "
        "client; 3 warm-up cycles per block dropped; p99 is nearest-rank. The num_hosts 8 "
        "resource was written by `sanlock direct init -r -n 8`.",
        f"- Cycles/s: N client processes, each on its own num_hosts-2000 resource, cycling "
        f"for {args.duration:g} s from a common start; cycles completed in the window / "
        "window; 2 rounds, the daemons alternating.",
        f"- Join: wall time of `sanlock.add_lockspace(..., iotimeout={IO_TIMEOUT})` on a "
        f"lockspace initialised with io_timeout {IO_TIMEOUT}; sanlock waits 2N+1 s "
        "(delta_acquire's 2x the on-disk io_timeout, plus a second).",
        f"- Idle: {args.idle:g} s with one lockspace joined and no client, before any lease "
        "was taken: CPU from `/proc/PID/stat` utime+stime (10 ms ticks, so a few ticks is "
        "noise) and from the summed `/proc/PID/task/*/schedstat` run time (ns, live threads), "
        "for the daemon and its children (sanlock's helper). RSS is VmRSS summed over the "
        "same processes; sanlock mlocks its memory at start "
        f"(VmLck {si_locked(r, theirs)} kB).",
        "- Renewal I/O: `strace -f -ttt -y -v -e trace=" + TRACED + " -p PID` on both daemons at "
        f"once for {r.renewal_seconds:.0f} s; bytes of every read on the lockspace file (iocb "
        "aio_nbytes for sanlock's libaio, return values of our preadv2) divided by the number "
        "of writes on it (one 1-sector delta-lease write per renewal). `/proc/PID/io` "
        "read_bytes does count O_DIRECT reads (they go through the block layer), but not "
        "O_DIRECT writes, and it cannot tell renewals apart; the read_bytes/s row agrees "
        "with bytes per renewal / renewal period.",
    ]
    if extra:
        e = r.idle[extra[0]]
        lines.append(
            f"- For reference, sanlock with `-l 0` (no mlockall): idle RSS "
            f"{e.after.rss_kb / 1024:.1f} MB, CPU {e.cpu_ns_pct:.3f} % (schedstat); ours / "
            f"that RSS = {r.idle[ours].after.rss_kb / e.after.rss_kb:.2f}."
        )
    if r.failover is not None:
        for kind, f in r.failover.items():
            lines.append(
                f"- Failover, {kind}: hosts A and B joined in {f.join_a:.2f} / {f.join_b:.2f} s; "
                f"B's failed attempts before success, by errno: {f.errors or 'none'}."
            )
    lines += [
        f"- Threads: ours {r.idle[ours].after.threads}, sanlock "
        f"{r.idle[theirs].after.threads} (main + helper processes: "
        f"{r.idle[theirs].after.processes}) at idle; after the load phases ours "
        f"{r.rss_after[ours].threads}, sanlock {r.rss_after[theirs].threads}.",
        "",
        END,
    ]
    return "\n".join(lines)


def si_locked(r: Results, theirs: Daemon) -> int:
    return r.idle[theirs].after.locked_kb


def write_section(out: Path, section: str) -> None:
    """Put ``section`` into ``out``, replacing an earlier one between the markers."""
    text = out.read_text() if out.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    out.write_text(text)


# --- main -------------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> Results:
    script = workdir / "worker.py"
    script.write_text(WORKER)
    loads = [("at start", os.getloadavg())]
    floors = [("at start", write_floor(workdir))]
    files = {}
    for kind in (*KINDS, "sanlock-l0"):
        files[kind] = workdir / f"{kind}.leases"
        make_lease_file(files[kind], "LS", RESOURCES)
    ours = Daemon("ours", "bench-ours", files["ours"])
    theirs = Daemon("sanlock", "bench-sanlock", files["sanlock"])
    nolock = Daemon("sanlock", "bench-sanlock-l0", files["sanlock-l0"], ("-l", "0"))
    daemons = [ours, theirs]
    started: list[Daemon] = []
    try:
        for d in (ours, theirs, nolock):
            d.start()
            started.append(d)
        print("joining", file=sys.stderr)
        join_times = parallel([
            lambda d=d: float(d.call(script, "join", "LS", d.lease_file, 1, IO_TIMEOUT)["seconds"])  # type: ignore[misc]
            for d in (ours, theirs, nolock)
        ])  # fmt: skip
        time.sleep(2)  # let the join's short-lived work settle before the idle window
        print(f"idle window {args.idle} s", file=sys.stderr)
        idle = measure_idle([*daemons, nolock], args.idle)
        print("tracing renewals", file=sys.stderr)
        renewal = trace_renewals(daemons, args.trace, workdir)
        nolock.stop()
        started.remove(nolock)
        lat = {}
        for res in ("R0", "S0"):
            floors.append((f"before the latency of {res}", write_floor(workdir)))
            print(f"latency {res}", file=sys.stderr)
            got = latency(daemons, script, res, args.rounds)
            lat[res] = {d.kind: got[d] for d in daemons}
        cycles: dict[tuple[str, int], list[float]] = {}
        for rnd in range(2):
            for clients in (1, CLIENTS):
                for d in daemons if rnd == 0 else reversed(daemons):
                    print(f"throughput {d.label} {clients} clients", file=sys.stderr)
                    rate = throughput(d, script, clients, args.duration)
                    cycles.setdefault((d.kind, clients), []).append(rate)
        rss_after = {d: Snapshot.of(d.pid) for d in daemons}
        loads.append(("after the load phases", os.getloadavg()))
        floors.append(("after the load phases", write_floor(workdir)))
        print(f"idle {SETTLE_SECONDS:.0f} s after the load", file=sys.stderr)
        time.sleep(SETTLE_SECONDS)
        rss_settled = {d: Snapshot.of(d.pid) for d in daemons}
    finally:
        parallel([lambda d=d: d.stop() for d in started])  # type: ignore[misc]
    fo = None
    if args.failover:
        print("failover (about 80 s)", file=sys.stderr)
        got_fo = parallel([lambda k=k: failover(k, workdir, script) for k in KINDS])  # type: ignore[misc]
        fo = dict(zip(KINDS, got_fo, strict=True))
        loads.append(("at the end", os.getloadavg()))
    return Results(
        joins={"ours": join_times[0], "sanlock": join_times[1]},
        idle=idle,
        rss_after=rss_after,
        rss_settled=rss_settled,
        renewal=renewal,
        renewal_seconds=args.trace,
        lat=lat,
        cycles=cycles,
        failover=fo,
        loads=loads,
        floors=floors,
    )


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="directory for the lease files (default: the temp directory)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=600,
        help="latency cycles per resource and daemon (default 600)",
    )
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds of each throughput window (default 5)"
    )
    parser.add_argument(
        "--idle", type=float, default=30.0, help="seconds of the idle window (default 30)"
    )
    parser.add_argument(
        "--trace", type=float, default=9.0, help="seconds of strace on the renewals (default 9)"
    )
    parser.add_argument(
        "--failover",
        action="store_true",
        help="also measure failover after a host crash (about 80 s more)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE / "RESULTS.md",
        help="markdown file to put the section in (default bench/RESULTS.md)",
    )
    parser.add_argument("--print-only", action="store_true", help="do not write --out")
    args = parser.parse_args(args_list)  # fmt: skip
    for tool in (SANLOCK, STRACE, SYSTEM_PYTHON):
        if shutil.which(tool) is None:
            parser.error(f"{tool} not found (apt-get install -y sanlock python3-sanlock strace)")
    if args.rounds < 4:
        parser.error("--rounds must be at least 4")
    start = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="daemon_bench.", dir=args.dir))
    try:
        results = run(args, workdir)
        results.elapsed = time.monotonic() - start
        text = report(results, argv=args_list, workdir=workdir, args=args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(text)
    if not args.print_only:
        write_section(args.out, text)
        print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
