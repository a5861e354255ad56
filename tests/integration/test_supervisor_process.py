"""The supervisor on real processes: signals, pidfds, killpath programs, the executor.

Children are ``sleep 60`` and a Python child that ignores SIGTERM; every child is waited for
(or killed) before its test ends. Waits are bounded by ``proc.wait(timeout=...)``: they end as
soon as the child exits, and the timeout only bounds a failure.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sync_manager.supervisor import policy
from sync_manager.supervisor.errors import ProcessGone
from sync_manager.supervisor.executor import Executor, Killpath, Result, Target
from sync_manager.supervisor.killpath import escape_killpath_arg
from sync_manager.supervisor.policy import Action, ClientDecision, ClientState, LockspaceState
from sync_manager.supervisor.process import (
    ProcessHandle,
    Reaper,
    pidfd_supported,
    send_signal,
)
from sync_manager.timeouts import Timeouts

LOGGER = "sync_manager.supervisor"
WAIT = 10.0  # bound on waiting for a child that should exit; reached only on failure

IGNORE_TERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)

# A killpath program that records how it was started.
RECORDER = """\
import json, os, sys
def is_open(fd):
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
out = sys.argv[1]
info = {
    "argv": sys.argv[2:],
    "session_leader": os.getsid(0) == os.getpid(),
    "stdin": os.readlink("/proc/self/fd/0"),
    "stdout": os.readlink("/proc/self/fd/1"),
    "fds": [fd for fd in range(1024) if is_open(fd)],
}
with open(out + ".tmp", "w") as f:
    json.dump(info, f)
os.rename(out + ".tmp", out)
"""

HANDLE_MODES = [pytest.param(False, id="pid")]
if pidfd_supported():
    HANDLE_MODES.insert(0, pytest.param(True, id="pidfd"))


class Children:
    """Started children, killed and reaped at the end of the test whatever happened."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def sleep(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["sleep", "60"])
        self.procs.append(proc)
        return proc

    def ignoring_sigterm(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", IGNORE_TERM], stdout=subprocess.PIPE)
        self.procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"  # the SIG_IGN is in place
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def children() -> Iterator[Children]:
    c = Children()
    try:
        yield c
    finally:
        c.cleanup()


def gone_pid() -> int:
    """A pid that no longer exists (a reaped child's; not reused this soon)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("use_pidfd", HANDLE_MODES)
def test_handle_signals_and_sees_exit(children: Children, use_pidfd: bool) -> None:
    proc = children.sleep()
    with ProcessHandle.open(proc.pid, use_pidfd=use_pidfd) as h:
        assert h.uses_pidfd is use_pidfd
        assert h.pid == proc.pid
        assert h.alive()
        assert h.signal(signal.SIGTERM)
        # Exited but not reaped: a zombie is not alive.
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        assert not h.alive()
        assert proc.wait(timeout=WAIT) == -signal.SIGTERM
        assert not h.alive()
        assert not h.signal(signal.SIGKILL)  # gone: not an error


def test_pidfd_never_signals_a_reused_pid(children: Children) -> None:
    if not pidfd_supported():
        pytest.skip("no pidfd on this system")
    proc = children.sleep()
    h = ProcessHandle.open(proc.pid)
    proc.kill()
    proc.wait(timeout=WAIT)
    # Whatever process gets this pid number later, the pidfd still names the dead one.
    assert not h.signal(signal.SIGTERM)
    h.close()


def test_gone_processes() -> None:
    pid = gone_pid()
    assert send_signal(pid, signal.SIGTERM) is False
    with pytest.raises(ProcessGone, match=str(pid)):
        ProcessHandle.open(pid)
    with pytest.raises(ProcessGone):
        ProcessHandle.open(pid, use_pidfd=False)


def recovery(clients: list[ClientState], now: float, ls: LockspaceState) -> policy.Decision:
    return policy.decide(now, ls, clients, Timeouts(io_timeout=10))


def test_sigterm_then_sigkill_through_the_policy(
    children: Children, caplog: pytest.LogCaptureFixture
) -> None:
    """T = 0, N = 10: at 80 both get SIGTERM; at 120 (grace over) the survivor gets SIGKILL."""
    sleeper, stubborn = children.sleep(), children.ignoring_sigterm()
    handles = {p.pid: ProcessHandle.open(p.pid) for p in (sleeper, stubborn)}
    targets = {pid: Target(handle=h) for pid, h in handles.items()}
    ex = Executor()
    ls = LockspaceState(last_success=0.0)
    states = [ClientState(pid) for pid in handles]

    with caplog.at_level(logging.INFO, logger=LOGGER):
        d = recovery(states, 80.0, ls)
        outcomes = ex.carry_out(d, targets, lockspace="ls")
    assert [o.action for o in outcomes] == [Action.SIGTERM, Action.SIGTERM]
    assert [o.result for o in outcomes] == [Result.SIGNALLED, Result.SIGNALLED]
    assert all(o.state.kill_count == 1 for o in outcomes)
    assert sleeper.wait(timeout=WAIT) == -signal.SIGTERM
    # SIGTERM reaches both at once; the sleeper is dead, so the other one has it too.
    assert stubborn.poll() is None
    assert handles[stubborn.pid].alive()
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert lines == [f"ls: pid {p}: sent SIGTERM (kill round 1)" for p in handles]

    ls, states = d.lockspace, [replace(o.state, dead=o.pid == sleeper.pid) for o in outcomes]
    d = recovery(states, 120.0, ls)
    outcomes = ex.carry_out(d, targets)
    assert [(o.action, o.result) for o in outcomes] == [
        (Action.NONE, Result.NOTHING),
        (Action.SIGKILL, Result.SIGNALLED),
    ]
    assert stubborn.wait(timeout=WAIT) == -signal.SIGKILL
    for h in handles.values():
        h.close()


def test_signal_to_a_gone_process_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    pid = gone_pid()
    decision = ClientDecision(Action.SIGKILL, ClientState(pid, kill_count=1, last_kill=0.0))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        out = Executor().carry_out([decision], {})
    assert out[0].result is Result.GONE
    assert not out[0].done
    assert "already gone" in caplog.records[-1].getMessage()


@pytest.fixture
def recorder(tmp_path: Path) -> Path:
    script = tmp_path / "killpath recorder"  # a space in the path: no shell involved
    script.write_text(f"#!{sys.executable}\n{RECORDER}")
    script.chmod(0o755)
    return script


def run_killpath_round(
    recorder: Path, out: Path, pid: int, *, append_pid: bool, extra: str
) -> dict[str, object]:
    reaper = Reaper()
    ex = Executor(reaper)
    state = ClientState(pid, killpath=True, killpath_pid=append_pid)
    decision = ClientDecision(
        Action.RUN_KILLPATH, replace(state, killpath_sent=True), append_pid=append_pid
    )
    args = f"{escape_killpath_arg(str(out))} {extra}"
    [outcome] = ex.carry_out([decision], {pid: Target(killpath=Killpath(str(recorder), args))})
    assert outcome.result is Result.STARTED
    assert outcome.state.killpath_sent
    assert outcome.child_pid is not None
    finished = reaper.wait_all(WAIT)
    assert [(f.pid, f.returncode) for f in finished] == [(outcome.child_pid, 0)]
    assert len(reaper) == 0
    info: dict[str, object] = json.loads(out.read_text())
    return info


def test_killpath_runs_with_the_pid_appended(
    children: Children, recorder: Path, tmp_path: Path
) -> None:
    client = children.sleep()
    info = run_killpath_round(
        recorder, tmp_path / "out.json", client.pid, append_pid=True, extra=r"destroy a\ b"
    )
    assert info["argv"] == ["destroy", "a b", str(client.pid)]
    assert info["session_leader"] is True
    assert info["stdin"] == info["stdout"] == "/dev/null"
    assert info["fds"] == [0, 1, 2]  # none of ours leaked
    assert client.poll() is None  # the killpath decides what happens to the client


def test_killpath_runs_without_the_pid(children: Children, recorder: Path, tmp_path: Path) -> None:
    client = children.sleep()
    info = run_killpath_round(
        recorder, tmp_path / "out.json", client.pid, append_pid=False, extra="pause"
    )
    assert info["argv"] == ["pause"]


def test_killpath_that_cannot_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = ClientState(4242, killpath=True, killpath_sent=True)
    decision = ClientDecision(Action.RUN_KILLPATH, state)
    ex = Executor()
    missing = Target(killpath=Killpath(str(tmp_path / "missing"), ""))
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        [out] = ex.carry_out([decision], {4242: missing})
        [none] = ex.carry_out([decision], {4242: Target()})
    # A program that does not exist counts as run (sanlock); SIGKILL comes when grace ends.
    assert out.result is Result.FAILED and out.state.killpath_sent
    # No killpath known at all: not sent, so the next round tries again.
    assert none.result is Result.FAILED and not none.state.killpath_sent
    assert len(caplog.records) == 2
    assert len(ex.reaper) == 0
