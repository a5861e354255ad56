"""The real ``sanlock client`` CLI prints the same against our daemon as against sanlock's.

One transcript per daemon kind (issue 4): the stock CLI (Debian's sanlock 3.8.5) writes a
lockspace and a resource through the daemon, joins, and runs ``status`` (plain, ``-o s``,
``-o p``, ``-D``), ``host_status`` (``-s``, ``-D``, all), ``gets`` (``-h 1``), ``acquire -p``,
``inquire -p`` and ``release -p`` for a registered process (a ``/usr/bin/python3`` child that
called ``sanlock.register()`` and waits on its stdin), the error cases, and ``rem_lockspace``.
Every step keeps its exit status, stdout and stderr. The transcript against sanlock is made
once per module; the test compares the kind's transcript with it step by step, and checks a
few lines absolutely. About 8 s per transcript (a join and a removal at io_timeout 1).

What "the same output" means here. The CLI prints what the daemon sends, so the text is
sanlock's by construction; what is compared is what the daemon decides:

* Exactly, after normalization: every plain line (record lines ``daemon``/``p``/``s``/``r``,
  ``h`` lines, ``<action> done <rv>`` lines, the ``inquire`` state string) and the exit status.
* For ``-D`` (indented ``key=value`` lines): the same records, each with every key sanlock
  prints, in sanlock's order (more keys are allowed: parsers look keys up by name); the values
  of keys with a meaning for clients (:data:`EXACT_KEYS`) exactly; the lockspace and host
  clock readings (:data:`CLOCK_KEYS`) only as zero or non-zero; every other value (fds, slot
  numbers, thread counts, the helper process, ids of internal objects, versions) not at all.

Normalizations, applied to every line:

* the lease file's path becomes ``$PATH``; the registered child's pid ``$PID``; the never
  registered pid used for the error cases (this test process) ``$UNREG``;
* a non-zero ``timestamp N`` becomes ``timestamp <ts>`` (a delta lease timestamp is the
  writer's monotonic clock);
* in ``status`` the client records (``p`` lines, with their ``-D`` lines) are compared as a
  set: sanlock lists them in client-slot order, which depends on which slots earlier short
  connections freed. The record kinds stay in sanlock's order (daemon, clients, lockspaces,
  resources), and so does the CLI's own ``-o s``/``-o p`` grouping. The internal clients
  (``p -1 helper``, ``p -1 listener``, and the status connection itself, ``p -1 status``)
  must be there.

The host name needs no normalization: both daemons run with ``-e interop-host``.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.daemons import SYSTEM_PYTHON, Daemon, daemon, make_daemon, require_python_sanlock

__all__ = ["daemon"]  # the parametrized fixture, re-exported for pytest

pytestmark = pytest.mark.interop

MIB = 1024 * 1024
WAIT = 20.0

# -D keys whose values a client may act on: compared exactly.
EXACT_KEYS = frozenset(
    {
        # daemon
        "our_host_name", "use_watchdog", "smproto_hex",
        # client
        "pid", "restricted",
        # lockspace
        "list", "io_timeout", "sector_size", "align_size", "host_generation", "renew_fail",
        "space_dead", "killing_pids", "external_used", "used_by_orphans", "corrupt_result",
        "acquire_last_result", "renewal_last_result",
        # resource
        "flags", "lver",
        # host
        "last_req", "owner_id", "owner_generation", "owner_name",
    }
)  # fmt: skip
# -D keys holding a monotonic clock reading (seconds): compared as zero or non-zero.
CLOCK_KEYS = frozenset(
    {
        "monotime", "acquire_last_attempt", "acquire_last_success",
        "renewal_last_attempt", "renewal_last_success", "last_check", "last_live", "timestamp",
    }
)  # fmt: skip

CHILD = (
    "import sanlock, sys\n"
    "fd = sanlock.register()\n"
    "print('registered', flush=True)\n"
    "sys.stdin.read()\n"
)


@dataclass(frozen=True)
class Step:
    """One CLI run: its arguments, exit status and output, all normalized.

    The output is a tuple of records: a line, then its indented ``-D`` lines, if any
    (stderr lines come last, one record each).
    """

    args: str
    rc: int
    records: tuple[tuple[str, ...], ...]

    @property
    def out(self) -> tuple[str, ...]:
        return tuple(line for record in self.records for line in record)

    def show(self) -> str:
        return f"$ sanlock client {self.args}  -> rc {self.rc}\n" + "".join(
            f"    {line}\n" for line in self.out
        )

    def seen_as(self, reference: Step) -> Step:
        """This step without the ``-D`` keys that ``reference``'s matching record lacks.

        A daemon may print more ``key=value`` lines than sanlock (parsers look keys up by
        name), but every key sanlock prints must be there, in sanlock's order.
        """
        if len(self.records) != len(reference.records):
            return self
        records = []
        for mine, theirs in zip(self.records, reference.records, strict=True):
            keys = {line.partition("=")[0] for line in theirs[1:]}
            if mine[0] == theirs[0]:
                kept = (line for line in mine[1:] if line.partition("=")[0] in keys)
                records.append((mine[0], *kept))
            else:
                records.append(mine)
        return Step(self.args, self.rc, tuple(records))


class Normalizer:
    def __init__(self, subst: dict[str, str]) -> None:
        # longest first: a pid may be a prefix of another number only as a whole word anyway
        self.subst = sorted(subst.items(), key=lambda kv: -len(kv[0]))

    def text(self, line: str) -> str:
        line = re.sub(r"\btimestamp [1-9][0-9]*", "timestamp <ts>", line)
        for old, new in self.subst:
            line = re.sub(rf"(?<![\w/]){re.escape(old)}(?![\w])", new, line)
        return line

    def detail(self, line: str) -> str:
        """An indented ``-D`` line ``    key=value``."""
        key, sep, value = line.strip().partition("=")
        if not sep:
            return self.text(line)
        if key in EXACT_KEYS:
            value = self.text(value)
        elif key in CLOCK_KEYS:
            value = "0" if value == "0" else "<ts>"
        else:
            value = "*"
        return f"    {key}={value}"

    def records(self, args: list[str], stdout: str) -> tuple[tuple[str, ...], ...]:
        records: list[list[str]] = []  # each record: its line, then its -D lines
        for line in stdout.splitlines():
            if line.startswith("    ") and records:
                records[-1].append(self.detail(line))
            else:
                records.append([self.text(line)])
        if args[0] == "status" and "-o" not in args:
            records = _sort_client_runs(records)
        return tuple(tuple(record) for record in records)


def _sort_client_runs(records: list[list[str]]) -> list[list[str]]:
    """Sort each run of consecutive ``p`` records (client-slot order is not compared)."""
    out: list[list[str]] = []
    run: list[list[str]] = []
    for record in [*records, ["<end>"]]:
        if record[0].startswith("p "):
            run.append(record)
            continue
        out += sorted(run)
        run = []
        if record != ["<end>"]:
            out.append(record)
    return out


@contextlib.contextmanager
def registered(running: Daemon) -> Iterator[int]:
    """A ``/usr/bin/python3`` process registered with ``running``; its pid."""
    require_python_sanlock()
    child = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", CHILD],
        env=running.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    try:
        line = child.stdout.readline().strip()
        assert line == "registered", f"the child did not register\n{running.log()[-4000:]}"
        yield child.pid
    finally:
        child.stdin.close()  # it exits at the end of its stdin
        try:
            child.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        child.stdout.close()


@pytest.fixture
def registered_child(daemon: Daemon) -> Iterator[int]:
    """A process registered with ``daemon``; its pid."""
    with registered(daemon) as pid:
        yield pid


def transcript(running: Daemon, pid: int) -> list[Step]:
    """Run the CLI sequence against ``running`` for the registered ``pid``."""
    path = running.run_dir / "leases"
    with path.open("xb") as f:
        f.truncate(2 * MIB)
    norm = Normalizer({str(path): "$PATH", str(pid): "$PID", str(os.getpid()): "$UNREG"})
    ls = f"LS:1:{path}:0"
    res = f"LS:R:{path}:{MIB}"
    steps: list[Step] = []

    def run(*args: str) -> Step:
        done = running.client(*args)
        errors = tuple((norm.text(line),) for line in done.stderr.splitlines())
        step = Step(
            norm.text(" ".join(args)),
            done.returncode,
            norm.records(list(args), done.stdout) + errors,
        )
        steps.append(step)
        return step

    p, unreg = str(pid), str(os.getpid())
    run("init", "-s", f"LS:0:{path}:0", "-o", "1")
    run("init", "-r", res)
    run("status")  # registered, nothing acquired yet: its name is its pid
    run("acquire", "-r", res, "-p", p)  # no lockspace yet: -ENOSPC, but the name is set
    run("status")
    run("host_status", "-s", "LS")  # unknown lockspace
    run("gets", "-h", "1")
    run("add_lockspace", "-s", ls, "-o", "1")
    # Until the first renewal after the join has read the other hosts' leases (2 io_timeouts),
    # sanlock has no host status: gets prints "hosts not ready", host_status nothing.
    run("gets", "-h", "1")
    run("host_status", "-s", "LS")
    deadline = time.monotonic() + WAIT
    while "hosts not ready" in running.client("gets", "-h", "1").stdout:
        assert time.monotonic() < deadline, f"hosts not ready after {WAIT} s"
        time.sleep(0.1)  # polling: a daemon has no notification for "host status ready"
    run("gets")
    run("gets", "-h", "1")
    run("host_status", "-s", "LS")
    run("host_status", "-s", "LS", "-D")
    run("host_status")
    run("acquire", "-r", res, "-p", p)
    run("acquire", "-r", res, "-p", p)  # already held: -EEXIST
    run("inquire", "-p", p)
    run("status")
    run("status", "-o", "s")
    run("status", "-o", "p")
    run("status", "-D")
    run("acquire", "-r", res, "-p", unreg)  # not registered: -ESRCH
    run("inquire", "-p", unreg)
    run("release", "-r", res, "-p", unreg)
    run("release", "-r", res, "-p", p)
    run("release", "-r", res, "-p", p)  # not held any more: -1
    run("inquire", "-p", p)  # nothing held: the library prints "(null)"
    run("status")
    run("rem_lockspace", "-s", ls)
    run("gets", "-h", "1")
    run("host_status", "-s", "LS")
    run("status")
    return steps


@pytest.fixture(scope="module")
def sanlock_steps() -> list[Step]:
    """The transcript against the real sanlock daemon (made once per module)."""
    with make_daemon("sanlock") as reference, registered(reference) as pid:
        return transcript(reference, pid)


# Lines that must be there whatever sanlock prints: (step index, its command, a line).
RES = f"LS:R:$PATH:{MIB}"
EXPECTED = [
    (2, "status", "p $PID $PID"),
    (3, f"acquire -r {RES} -p $PID", "acquire done -28"),
    (4, "status", "p $PID "),
    (7, "add_lockspace -s LS:1:$PATH:0 -o 1", "add_lockspace_timeout done 0"),
    (8, "gets -h 1", "hosts not ready"),
    (11, "gets -h 1", "h 1 gen 1 timestamp <ts> LIVE"),
    (12, "host_status -s LS", "1 timestamp <ts>"),
    (15, f"acquire -r {RES} -p $PID", "acquire done 0"),
    (16, f"acquire -r {RES} -p $PID", "acquire done -17"),
    (17, "inquire -p $PID", f'"{RES}:1"'),
    (18, "status", f"r {RES}:1 p $PID"),
    (22, f"acquire -r {RES} -p $UNREG", "acquire done -3"),
    (25, f"release -r {RES} -p $PID", "release done 0"),
    (26, f"release -r {RES} -p $PID", "release done -1"),
    (27, "inquire -p $PID", '"(null)"'),
    (29, "rem_lockspace -s LS:1:$PATH:0", "rem_lockspace done 0"),
]


def test_sanlock_client(daemon: Daemon, registered_child: int, sanlock_steps: list[Step]) -> None:
    steps = transcript(daemon, registered_child)
    problems = [
        f"step {i}:\n--- sanlock\n{want.show()}--- {daemon.kind}\n{got.seen_as(want).show()}"
        for i, (want, got) in enumerate(zip(sanlock_steps, steps, strict=True))
        if want != got.seen_as(want)
    ]
    problems += [
        f"step {i}: expected {command!r} printing {line!r}, got\n{steps[i].show()}"
        for i, command, line in EXPECTED
        if steps[i].args != command or line not in steps[i].out
    ]
    assert not problems, (
        f"{daemon.kind}: {len(problems)} difference(s)\n"
        + "\n".join(problems)
        + f"\n--- {daemon.kind} daemon log (tail) ---\n{daemon.log()[-6000:]}"
    )
