"""Carry out the client actions of a policy :class:`~sync_manager.supervisor.policy.Decision`.

The daemon calls :meth:`Executor.carry_out` after each
:func:`~sync_manager.supervisor.policy.decide` (or :meth:`Executor.carry_out_one` for a
:func:`~sync_manager.supervisor.policy.request_action`),
with a :class:`Target` for each client pid: its :class:`ProcessHandle` and its registered
killpath. Each action is done at once, never waited for, and logged on one line (logger
``sync_manager.supervisor``); the returned :class:`Outcome` per client carries the state to store
back, which differs from the decision's only when a killpath could not be started for want of
resources (so that the next round tries again, as the policy asks).

A program that cannot be executed at all (missing, not executable) counts as run, as in
sanlock, whose helper's exec failure is never reported back: the grace period then ends with
SIGKILL instead of retrying the program every second.
"""

from __future__ import annotations

import enum
import errno
import logging
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from sync_manager.supervisor.errors import SignalError
from sync_manager.supervisor.policy import Action, ClientDecision, ClientState, Decision
from sync_manager.supervisor.process import (
    ProcessHandle,
    Reaper,
    StderrTarget,
    run_killpath,
    send_signal,
)

__all__ = ["Executor", "Killpath", "Outcome", "Result", "Target"]

log = logging.getLogger("sync_manager.supervisor")

_SIGNALS = {Action.SIGTERM: signal.SIGTERM, Action.SIGKILL: signal.SIGKILL}

# fork/exec failures that are about resources, not about the program: try again next round.
_TRANSIENT = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE})


@dataclass(frozen=True, slots=True)
class Killpath:
    """A client's registered killpath: the program and its escaped args string (see killpath.py)."""

    path: str
    args: str = ""


@dataclass(frozen=True, slots=True)
class Target:
    """What the executor needs to act on one client: its handle (or None: signal the bare pid)
    and its killpath (None: it registered none)."""

    handle: ProcessHandle | None = None
    killpath: Killpath | None = None


class Result(enum.Enum):
    """What happened when an action was carried out."""

    NOTHING = "nothing"  # the action was NONE or GIVE_UP
    SIGNALLED = "signalled"  # the signal was sent
    STARTED = "started"  # the killpath program was started
    GONE = "gone"  # the process no longer exists: nothing was sent
    FAILED = "failed"  # it could not be done (see Outcome.detail)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one client's action; store ``state`` back in place of the decision's."""

    pid: int
    action: Action
    result: Result
    state: ClientState
    detail: str = ""
    child_pid: int | None = None  # the killpath program's pid, when one was started

    @property
    def done(self) -> bool:
        """Whether the signal was sent or the program started."""
        return self.result in (Result.SIGNALLED, Result.STARTED)


class Executor:
    """Performs client actions on real processes and starts killpaths, never waiting for them.

    ``reaper`` collects the killpath programs (call its :meth:`Reaper.reap` from the daemon's
    tick); ``killpath_stderr`` is where their stderr goes (None: the daemon's own).
    """

    def __init__(
        self,
        reaper: Reaper | None = None,
        *,
        killpath_stderr: StderrTarget = None,
        logger: logging.Logger | None = None,
    ) -> None:
        """An executor starting killpaths into ``reaper`` (a new one if None)."""
        self.reaper = reaper if reaper is not None else Reaper(logger)
        self._stderr = killpath_stderr
        self._log = logger or log

    def carry_out(
        self,
        decision: Decision | Iterable[ClientDecision],
        targets: Mapping[int, Target],
        *,
        lockspace: str = "",
    ) -> list[Outcome]:
        """Carry out every client action of ``decision``, in order; one Outcome per client.

        ``targets`` maps pids to what is known of them; a pid missing there is signalled by pid
        and has no killpath. ``lockspace`` names the lockspace in the log lines.
        """
        decisions = decision.clients if isinstance(decision, Decision) else decision
        return [
            self.carry_out_one(d, targets.get(d.pid, Target()), lockspace=lockspace)
            for d in decisions
        ]

    def carry_out_one(
        self, decision: ClientDecision, target: Target, *, lockspace: str = ""
    ) -> Outcome:
        """Carry out one client's action (from a kill round or a request)."""
        where = f"{lockspace}: " if lockspace else ""
        action, pid = decision.action, decision.pid
        if action is Action.NONE:
            return Outcome(pid, action, Result.NOTHING, decision.state)
        if action is Action.GIVE_UP:
            # The policy logs "stuck" once; this repeats at every check, so only at DEBUG.
            self._log.debug("%spid %d: given up on, nothing sent", where, pid)
            return Outcome(pid, action, Result.NOTHING, decision.state, "given up")
        if action is Action.RUN_KILLPATH:
            return self._killpath(decision, target, where)
        return self._signal(decision, target, where)

    def _signal(self, decision: ClientDecision, target: Target, where: str) -> Outcome:
        action, pid = decision.action, decision.pid
        sig = _SIGNALS[action]
        try:
            sent = target.handle.signal(sig) if target.handle else send_signal(pid, sig)
        except SignalError as e:
            self._log.error("%spid %d: %s failed: %s", where, pid, action.value, e)
            return Outcome(pid, action, Result.FAILED, decision.state, str(e))
        if not sent:
            self._log.info("%spid %d: %s not sent, process already gone", where, pid, action.value)
            return Outcome(pid, action, Result.GONE, decision.state, "already gone")
        self._log.warning(
            "%spid %d: sent %s (kill round %d)", where, pid, action.value, decision.state.kill_count
        )
        return Outcome(pid, action, Result.SIGNALLED, decision.state)

    def _killpath(self, decision: ClientDecision, target: Target, where: str) -> Outcome:
        action, pid, kp = decision.action, decision.pid, target.killpath
        if kp is None:
            msg = "no killpath registered for it (daemon state out of step with the policy's)"
            self._log.error("%spid %d: cannot run killpath: %s", where, pid, msg)
            return Outcome(
                pid, action, Result.FAILED, replace(decision.state, killpath_sent=False), msg
            )
        try:
            proc = run_killpath(
                kp.path,
                kp.args,
                pid,
                append_pid=decision.append_pid,
                stderr=self._stderr,
                reaper=self.reaper,
            )
        except OSError as e:
            transient = e.errno in _TRANSIENT
            state = replace(decision.state, killpath_sent=False) if transient else decision.state
            msg = f"{kp.path}: {e.strerror or e}" + (", will retry" if transient else "")
            self._log.error("%spid %d: cannot run killpath %s", where, pid, msg)
            return Outcome(pid, action, Result.FAILED, state, msg)
        argv = " ".join(str(a) for a in proc.args) if isinstance(proc.args, list) else kp.path
        self._log.warning("%spid %d: started killpath (pid %d): %s", where, pid, proc.pid, argv)
        return Outcome(pid, action, Result.STARTED, decision.state, argv, child_pid=proc.pid)
