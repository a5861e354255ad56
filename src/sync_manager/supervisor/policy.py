"""What to do to the lease holders of a failing lockspace, and to the host (spec 8.2, protocol 8).

This module is **pure**: it never reads a clock, sends a signal, starts a program or touches a
file. Every function takes the time ``now`` (the host's monotonic seconds, the clock that
``last_success`` was taken on) and the state the daemon keeps, and returns what to do and the
new state to keep; ``supervisor/process.py`` and the daemon carry it out. ``supervisor/ruff.toml``
bans ``os``, ``time``, ``socket``, ``threading``, ``subprocess``, ``asyncio`` and ``signal`` here.

It is sanlock 3.8.5's ``main_loop``/``check_our_lease``/``kill_pids``/``all_pids_dead``
(src/main.c, src/lockspace.c), its watchdog feeding (src/watchdog.c, wdmd) and ``do_request``
(src/resource.c), with ``T`` the last successful renewal and ``N`` the io_timeout:

* **Checks.** Every second (every 0.2 s while killing) the daemon calls :func:`decide`. Before
  recovery: from ``T + 6N`` each check logs a warning; at ``T + 8N``, at once on a *corrupt*
  renewal (our delta lease was overwritten), on ``rem_lockspace`` and on a forced shutdown the
  lockspace enters **recovery** (sanlock's ``killing_pids``), which never ends until every lease
  holder has gone. :func:`next_check_at` says when to call again: never later than sanlock's
  cadence, and exactly at each deadline, so nothing happens late.
* **Kill rounds.** In recovery each live client is handled at most once per second
  (:data:`KILL_INTERVAL`) and at most :data:`KILL_COUNT_MAX` times; each handling counts, even
  when nothing is sent. The choice, in sanlock's order:

  1. ``rem_lockspace`` or forced shutdown (now, whatever started recovery): SIGKILL;
  2. ``kill_grace > 0``, in grace (``now < T + 8N + kill_grace``) and a killpath registered:
     run the killpath, **once** (later rounds in grace send nothing but still count);
  3. in grace: SIGTERM;
  4. otherwise SIGKILL;

  then ``RESTRICT_SIGKILL`` turns SIGKILL into SIGTERM and, after that, ``RESTRICT_SIGTERM``
  turns SIGTERM into SIGKILL (so a client with both flags always gets SIGKILL). A client that
  has had :data:`KILL_COUNT_MAX` rounds is given up on; when every live client is given up on,
  the lockspace is "stuck" and only the watchdog is left.
* **Watchdog.** It is kept alive while ``now < T + 8N`` (wdmd's ``expire``), whatever the
  lockspace's state; renewals that succeed during recovery move ``T`` and keep it alive. From
  ``T + 8N`` it is no longer fed and resets the host in ``[T + 8N + 50, T + 8N + 60)``
  (:meth:`Timeouts.watchdog_reset_window`), before ``T + host_dead``, when other hosts may take
  our leases. Without a watchdog (sanlock's ``-w 0``) nothing resets the host: the decision says
  so (:attr:`Fencing.UNFENCED`) and carries a CRITICAL notice.
* **End of recovery.** At the first check in recovery that finds no live lease holder (and no
  external user of the lockspace), the watchdog is disarmed cleanly (no reset), the lockspace
  is stopped and, if the last renewal attempt succeeded, its delta lease is released.
* **Requests** (protocol 8.3) are not recovery: when an examination of a held resource finds a
  pending request with a larger lver, :func:`request_action` gives the one action to take.

Invariants (checked by tests/unit/test_supervisor_policy.py, with Hypothesis):

* The watchdog is never fed at or after ``T + 8N``; so the host is reset before ``T + host_dead``
  unless every holder is gone first.
* A live client not yet given up on has been sent SIGKILL (SIGTERM if only SIGKILL is
  restricted) within one second of ``T + 8N + kill_grace``, when the daemon calls back at
  :func:`next_check_at`. It can be given up on before that only if recovery started more than
  ``KILL_COUNT_MAX - 1`` seconds earlier (a corrupt renewal long before ``T + 8N``), as in
  sanlock; the watchdog covers that case.
* The delta lease is released only when the last renewal attempt succeeded and is younger than
  ``8N`` (sanlock checks the first only; see :func:`decide`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, replace

from sync_manager.errors import UsageError
from sync_manager.timeouts import Timeouts

__all__ = [
    "CHECK_INTERVAL",
    "KILL_COUNT_MAX",
    "KILL_INTERVAL",
    "RECOVERY_CHECK_INTERVAL",
    "Action",
    "ClientDecision",
    "ClientState",
    "Decision",
    "Fencing",
    "ForceMode",
    "LockspaceState",
    "Notice",
    "Reason",
    "Severity",
    "WatchdogAction",
    "decide",
    "in_grace",
    "next_check_at",
    "recovery_reason",
    "request_action",
    "sigkill_at",
    "watchdog_expire_at",
]

KILL_COUNT_MAX = 100  # sanlock's kill_count_max: kill rounds per client before giving up
CHECK_INTERVAL = 1.0  # sanlock's STANDARD_CHECK_INTERVAL (1000 ms)
RECOVERY_CHECK_INTERVAL = 0.2  # sanlock's RECOVERY_CHECK_INTERVAL (200 ms), while killing
KILL_INTERVAL = 1.0  # a client is handled at most once per this many seconds


class Reason(enum.Enum):
    """Why a lockspace entered recovery (sanlock's ``killing_pids``), in sanlock's order."""

    RENEWAL_CORRUPT = "renewal corrupt"  # a renewal found our delta lease overwritten
    RENEWAL_FAILED = "renewal failed"  # no successful renewal for 8N seconds
    REM_LOCKSPACE = "rem_lockspace"  # the lockspace is being removed
    FORCED_SHUTDOWN = "forced shutdown"  # shutdown with force (sanlock's external_shutdown 2)


class ForceMode(enum.IntEnum):
    """The force mode of a pending request record (``SANLK_REQ_*``)."""

    FORCE = 1
    GRACEFUL = 2


class Action(enum.Enum):
    """What to do to one client now."""

    NONE = "none"  # nothing now (not in recovery, dead, signalled < 1 s ago, killpath already run)
    RUN_KILLPATH = "run killpath"  # run its registered killpath program
    SIGTERM = "SIGTERM"
    SIGKILL = "SIGKILL"
    GIVE_UP = "give up"  # it has had KILL_COUNT_MAX rounds; nothing more is sent


class WatchdogAction(enum.Enum):
    """What to do with the lockspace's watchdog connection."""

    PET = "pet"  # the renewal is good (now < T + 8N): keep the host alive
    EXPIRE = "expire"  # stop feeding it: the host is reset unless the lockspace ends first
    DISARM = "disarm"  # the lockspace ends cleanly: disable the connection, no reset


class Fencing(enum.Enum):
    """Whether the host is going to be reset."""

    NONE = "none"  # no: the watchdog is fed, or disarmed because the lockspace ended cleanly
    WATCHDOG = "watchdog"  # yes: the watchdog is no longer fed
    UNFENCED = "unfenced"  # it should be, but there is no watchdog: log it loudly


class Severity(enum.IntEnum):
    """How loudly to log a notice; the values are the :mod:`logging` levels."""

    INFO = 20
    WARNING = 30
    ERROR = 40
    CRITICAL = 50


@dataclass(frozen=True, slots=True)
class Notice:
    """A line for the daemon's log."""

    severity: Severity
    text: str


@dataclass(frozen=True, slots=True)
class ClientState:
    """One registered client holding at least one lease in the lockspace, as the daemon keeps it.

    ``killpath``/``killpath_pid``/``restrict_*`` are what the client registered (KILLPATH with or
    without ``SANLK_KILLPATH_PID``; RESTRICT's ``SANLK_RESTRICT_SIGKILL``/``_SIGTERM``). ``dead``
    means it exited or no longer holds a lease in this lockspace. ``kill_count``, ``last_kill`` and
    ``killpath_sent`` belong to this module: start them at their defaults and store back the
    ``state`` of each :class:`ClientDecision`. sanlock keeps them per client, not per lockspace,
    and clears them when the client releases all its leases.
    """

    pid: int
    _: KW_ONLY
    killpath: bool = False
    killpath_pid: bool = False
    restrict_sigkill: bool = False
    restrict_sigterm: bool = False
    dead: bool = False
    kill_count: int = 0
    last_kill: float | None = None
    killpath_sent: bool = False

    def __post_init__(self) -> None:
        if self.pid <= 0:
            raise UsageError(f"client pid must be positive, not {self.pid}")
        if self.kill_count < 0:
            raise UsageError(f"kill_count must be >= 0, not {self.kill_count}")
        if self.kill_count > 0 and self.last_kill is None:
            raise UsageError("a client with kill_count > 0 must have last_kill")


@dataclass(frozen=True, slots=True)
class LockspaceState:
    """What the daemon knows about one joined lockspace.

    The daemon sets ``last_success`` (the monotonic time of the last successful renewal, sanlock's
    ``renewal_last_success``), ``last_renewal_ok`` (whether the latest renewal attempt succeeded),
    and the sticky flags ``corrupt`` (a renewal returned a corrupt result), ``removing``
    (rem_lockspace), ``shutting_down`` (forced shutdown) and ``used_externally`` (sanlock's USED
    or USED_BY_ORPHANS: something outside the clients still needs the lockspace). ``recovery``,
    ``stuck`` and ``watchdog_expired`` belong to this module: store back ``Decision.lockspace``.
    """

    last_success: float
    _: KW_ONLY
    last_renewal_ok: bool = True
    corrupt: bool = False
    removing: bool = False
    shutting_down: bool = False
    used_externally: bool = False
    recovery: Reason | None = None
    stuck: bool = False
    watchdog_expired: bool = False


@dataclass(frozen=True, slots=True)
class ClientDecision:
    """What to do to one client now, and its state to keep.

    For :attr:`Action.RUN_KILLPATH`, ``append_pid`` says whether the pid goes last in its argv.
    If the killpath could not be started (sanlock: the helper pipe was full), store
    ``replace(state, killpath_sent=False)`` so the next round tries again.
    """

    action: Action
    state: ClientState
    append_pid: bool = False

    @property
    def pid(self) -> int:
        """The client's pid."""
        return self.state.pid


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one check of a lockspace; see :func:`decide`."""

    lockspace: LockspaceState  # store it back
    clients: tuple[ClientDecision, ...]  # one per client given, in the same order
    watchdog: WatchdogAction
    fencing: Fencing
    release_lockspace: bool  # recovery is over: stop the lockspace (after disarming)
    release_delta: bool  # ... and write our delta lease free (timestamp 0)
    notices: tuple[Notice, ...]
    next_check: float  # call decide() again at this monotonic time at the latest
    started_recovery: bool = False  # this check put the lockspace into recovery

    def action_for(self, pid: int) -> Action:
        """The action for the client with ``pid`` (:attr:`Action.NONE` if it is not here)."""
        for c in self.clients:
            if c.pid == pid:
                return c.action
        return Action.NONE


def watchdog_expire_at(last_success: float, timeouts: Timeouts) -> float:
    """The moment the watchdog stops being fed: ``T + 8N`` (wdmd's ``expire``)."""
    return last_success + timeouts.watchdog_expire


def sigkill_at(last_success: float, timeouts: Timeouts) -> float:
    """The end of the grace period: ``T + 8N + kill_grace``; SIGKILL from then on."""
    return last_success + timeouts.sigkill_after


def in_grace(now: float, last_success: float, timeouts: Timeouts) -> bool:
    """Whether killpath/SIGTERM still apply rather than SIGKILL (sanlock's ``in_grace``)."""
    return now < sigkill_at(last_success, timeouts)


def recovery_reason(now: float, lockspace: LockspaceState, timeouts: Timeouts) -> Reason | None:
    """Why the lockspace must enter recovery at ``now``, or None (``check_our_lease`` + main_loop).

    A corrupt renewal comes first, then a renewal ``8N`` old, then rem_lockspace, then a forced
    shutdown; only the first that applies is named. An already running recovery is kept.
    """
    if lockspace.recovery is not None:
        return lockspace.recovery
    if lockspace.corrupt:
        return Reason.RENEWAL_CORRUPT
    if now >= lockspace.last_success + timeouts.renewal_fail:
        return Reason.RENEWAL_FAILED
    if lockspace.removing:
        return Reason.REM_LOCKSPACE
    if lockspace.shutting_down:
        return Reason.FORCED_SHUTDOWN
    return None


def _recovery_severity(reason: Reason, *, holders: int) -> Severity:
    """A failing renewal is an error; leaving on request is routine, a warning only when it
    kills lease holders."""
    if reason in (Reason.RENEWAL_CORRUPT, Reason.RENEWAL_FAILED):
        return Severity.ERROR
    return Severity.WARNING if holders else Severity.INFO


def _restricted(action: Action, client: ClientState) -> Action:
    """Apply the restrict flags to a signal, in sanlock's order (SIGKILL rule first)."""
    if action is Action.SIGKILL and client.restrict_sigkill:
        action = Action.SIGTERM
    if action is Action.SIGTERM and client.restrict_sigterm:
        action = Action.SIGKILL
    return action


def _kill_round(
    now: float,
    client: ClientState,
    lockspace: LockspaceState,
    timeouts: Timeouts,
    kill_count_max: int,
) -> ClientDecision:
    """One client's turn in a kill round (sanlock's loop body in ``kill_pids``)."""
    if client.dead:
        return ClientDecision(Action.NONE, client)
    if client.kill_count >= kill_count_max:
        return ClientDecision(Action.GIVE_UP, client)
    if (
        client.kill_count > 0
        and client.last_kill is not None
        and now < client.last_kill + KILL_INTERVAL
    ):
        return ClientDecision(Action.NONE, client)

    state = replace(client, kill_count=client.kill_count + 1, last_kill=now)
    grace = in_grace(now, lockspace.last_success, timeouts)
    if lockspace.removing or lockspace.shutting_down:
        action = Action.SIGKILL
    elif timeouts.kill_grace > 0 and grace and client.killpath:
        if client.killpath_sent:
            return ClientDecision(Action.NONE, state)  # counted, nothing sent
        return ClientDecision(
            Action.RUN_KILLPATH,
            replace(state, killpath_sent=True),
            append_pid=client.killpath_pid,
        )
    elif grace:
        action = Action.SIGTERM
    else:
        action = Action.SIGKILL
    return ClientDecision(_restricted(action, client), state)


def _live(clients: Sequence[ClientState]) -> list[ClientState]:
    return [c for c in clients if not c.dead]


def decide(
    now: float,
    lockspace: LockspaceState,
    clients: Sequence[ClientState],
    timeouts: Timeouts,
    *,
    use_watchdog: bool = True,
    kill_count_max: int = KILL_COUNT_MAX,
) -> Decision:
    """Check one lockspace at ``now``: one pass of sanlock's main loop for it.

    ``clients`` are the clients holding leases in the lockspace (sanlock's
    ``client_using_space``). In order:

    1. In recovery with no live client and no external user: the lockspace ends. Disarm the
       watchdog, stop the lockspace and, if ``last_renewal_ok`` and the last success is younger
       than ``8N``, release the delta lease. (sanlock checks only the last renewal's result; the
       age is a guard against a blind release write after a stall, which could overwrite a new
       holder of our host id; it never matters while renewals run every ``2N``.)
    2. In recovery with every live client given up on: "stuck", logged once; nothing is sent.
    3. Not in recovery: warn from ``T + 6N``; enter recovery for :func:`recovery_reason`.
    4. In recovery (including just entered): a kill round (see the module docstring).

    The watchdog is fed while ``now < T + 8N`` and is otherwise left to expire, unless step 1
    disarms it. ``use_watchdog=False`` (sanlock's ``-w 0``) changes nothing but ``fencing``
    and the notice when the watchdog would expire.
    """
    if kill_count_max < 1:
        raise UsageError(f"kill_count_max must be >= 1, not {kill_count_max}")
    ls = lockspace
    notices: list[Notice] = []
    live = _live(clients)
    expire_at = watchdog_expire_at(ls.last_success, timeouts)
    renewal_good = now < expire_at

    if ls.recovery is not None and not live and not ls.used_externally:
        release_delta = ls.last_renewal_ok and renewal_good
        notices.append(
            Notice(
                Severity.WARNING,
                "all lease holders gone: lockspace stops, watchdog disarmed, delta lease "
                + ("released" if release_delta else "left to expire"),
            )
        )
        return Decision(
            lockspace=ls,
            clients=tuple(ClientDecision(Action.NONE, c) for c in clients),
            watchdog=WatchdogAction.DISARM,
            fencing=Fencing.NONE,
            release_lockspace=True,
            release_delta=release_delta,
            notices=tuple(notices),
            next_check=now + RECOVERY_CHECK_INTERVAL,
        )

    if (
        ls.recovery is not None
        and not ls.stuck
        and live
        and all(c.kill_count >= kill_count_max for c in live)
    ):
        ls = replace(ls, stuck=True)
        notices.append(
            Notice(
                Severity.ERROR,
                f"killing pids stuck: {len(live)} lease holder(s) survived {kill_count_max} "
                "kill rounds; giving up, the watchdog must reset the host",
            )
        )

    started = False
    if ls.recovery is None:
        gap = now - ls.last_success
        reason = recovery_reason(now, ls, timeouts)
        if not ls.corrupt and timeouts.renewal_warn <= gap < timeouts.renewal_fail:
            notices.append(
                Notice(
                    Severity.WARNING,
                    f"renewal warning: last successful renewal {gap:.1f} s ago "
                    f"(at {ls.last_success:.1f}); lease holders are killed at "
                    f"{timeouts.renewal_fail} s",
                )
            )
        if reason is not None:
            ls, started = replace(ls, recovery=reason), True
            notices.append(
                Notice(
                    _recovery_severity(reason, holders=len(live)),
                    f"recovery started ({reason.value}): last successful renewal {gap:.1f} s "
                    f"ago; killing {len(live)} lease holder(s)",
                )
            )

    if ls.recovery is None:
        decisions = tuple(ClientDecision(Action.NONE, c) for c in clients)
    elif ls.stuck:
        decisions = tuple(
            ClientDecision(Action.NONE if c.dead else Action.GIVE_UP, c) for c in clients
        )
    else:
        decisions = tuple(_kill_round(now, c, ls, timeouts, kill_count_max) for c in clients)

    if renewal_good:
        watchdog, fencing = WatchdogAction.PET, Fencing.NONE
        ls = replace(ls, watchdog_expired=False)
    else:
        watchdog = WatchdogAction.EXPIRE
        fencing = Fencing.WATCHDOG if use_watchdog else Fencing.UNFENCED
        if not ls.watchdog_expired:
            ls = replace(ls, watchdog_expired=True)
            notices.append(_expire_notice(ls.last_success, timeouts, use_watchdog=use_watchdog))

    states = [d.state for d in decisions]
    return Decision(
        lockspace=ls,
        clients=decisions,
        watchdog=watchdog,
        fencing=fencing,
        release_lockspace=False,
        release_delta=False,
        notices=tuple(notices),
        next_check=next_check_at(now, ls, states, timeouts, kill_count_max=kill_count_max),
        started_recovery=started,
    )


def _expire_notice(last_success: float, timeouts: Timeouts, *, use_watchdog: bool) -> Notice:
    """The notice for the check at which the watchdog stops being fed."""
    takeover = last_success + timeouts.host_dead
    if use_watchdog:
        first, last = timeouts.watchdog_reset_window(last_success)
        return Notice(
            Severity.ERROR,
            f"watchdog no longer fed: this host is reset in [{first:.1f}, {last:.1f}) "
            f"unless every lease holder exits first; other hosts may take its leases from "
            f"{takeover:.1f}",
        )
    return Notice(
        Severity.CRITICAL,
        "NO WATCHDOG: the lockspace's renewal is "
        f"{timeouts.renewal_fail} s old and nothing will reset this host; lease holders that "
        f"do not exit keep running while other hosts may take their leases from {takeover:.1f}",
    )


def next_check_at(
    now: float,
    lockspace: LockspaceState,
    clients: Sequence[ClientState],
    timeouts: Timeouts,
    *,
    kill_count_max: int = KILL_COUNT_MAX,
) -> float:
    """When :func:`decide` must run again, given the state after the check at ``now``.

    The earliest of sanlock's cadence (``now + 1`` s, ``now + 0.2`` s in recovery) and every
    later moment at which a decision changes by time alone: the warning (``T + 6N``), recovery
    and the watchdog's expiry (``T + 8N``), the end of grace (``T + 8N + kill_grace``), and each
    live client's next allowed round (``last_kill + 1``). Events (a renewal result, a client
    exiting or releasing, rem_lockspace, shutdown) call for a check at once.
    """
    ls = lockspace
    deadlines = [watchdog_expire_at(ls.last_success, timeouts)]
    if ls.recovery is None:
        due = now + CHECK_INTERVAL
        deadlines.append(ls.last_success + timeouts.renewal_warn)
    else:
        due = now + RECOVERY_CHECK_INTERVAL
        deadlines.append(sigkill_at(ls.last_success, timeouts))
        deadlines.extend(
            c.last_kill + KILL_INTERVAL
            for c in _live(clients)
            if c.last_kill is not None and 0 < c.kill_count < kill_count_max
        )
    return min([due, *(t for t in deadlines if t > now)])


def request_action(mode: ForceMode, client: ClientState) -> ClientDecision:
    """The action for a holder whose resource has a pending request (sanlock's ``do_request``).

    Call it once per examination that finds a request with a larger lver than ours; there is
    no rate limit and no count (sanlock examines at each renewal that sees the requester's
    bitmap bit). ``client`` must carry the killpath and restrict flags *as they were when the
    resource was acquired*, which is what sanlock copies into the resource.

    * FORCE: SIGKILL, or SIGTERM if SIGKILL is restricted.
    * GRACEFUL: the killpath **without** the pid (even if it was registered with
      ``SANLK_KILLPATH_PID``), run each time; without a killpath SIGTERM, or SIGKILL if SIGTERM
      is restricted.

    Only one restrict flag is looked at per mode, so with both set FORCE gives SIGTERM and
    GRACEFUL gives SIGKILL. The state is returned unchanged.
    """
    if client.dead:
        return ClientDecision(Action.NONE, client)
    if mode is ForceMode.FORCE:
        return ClientDecision(Action.SIGTERM if client.restrict_sigkill else Action.SIGKILL, client)
    if client.killpath:
        return ClientDecision(Action.RUN_KILLPATH, client, append_pid=False)
    return ClientDecision(Action.SIGKILL if client.restrict_sigterm else Action.SIGTERM, client)
