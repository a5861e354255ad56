"""The fencing policy (spec/sanlock-ondisk.md 7, 8.2; spec/sanlock-protocol.md 1.5, 2.5.3, 8).

Exact actions at exact times, pinned by sanlock's own worked timeline (io_timeout 10, last good
renewal at 40: warning at 100, killpath/SIGTERM from 120, SIGKILL from 160, watchdog reset in
[170, 180)) and by the rules of ``kill_pids`` and ``do_request`` in sanlock 3.8.5. ``follow``
drives :func:`decide` the way the daemon does, calling back at ``Decision.next_check``; the
Hypothesis properties at the end check the safety margin for any timings and clients.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync_manager.errors import UsageError
from sync_manager.supervisor.policy import (
    CHECK_INTERVAL,
    KILL_COUNT_MAX,
    RECOVERY_CHECK_INTERVAL,
    Action,
    ClientState,
    Decision,
    Fencing,
    ForceMode,
    LockspaceState,
    Reason,
    Severity,
    WatchdogAction,
    decide,
    in_grace,
    next_check_at,
    recovery_reason,
    request_action,
    sigkill_at,
    watchdog_expire_at,
)
from sync_manager.timeouts import Timeouts

T10 = Timeouts(10)  # kill_grace 40
LAST = 40.0  # the last successful renewal of the worked example

PLAIN = ClientState(101)
KILLPATH_PID = ClientState(102, killpath=True, killpath_pid=True)
KILLPATH = ClientState(103, killpath=True)
NO_SIGKILL = ClientState(104, restrict_sigkill=True)
NO_SIGTERM = ClientState(105, restrict_sigterm=True)
FIVE = (PLAIN, KILLPATH_PID, KILLPATH, NO_SIGKILL, NO_SIGTERM)


@dataclass
class Run:
    """What happened while following the policy: every check, and what each pid was sent."""

    checks: list[tuple[float, Decision]] = field(default_factory=list)
    sent: dict[int, list[tuple[float, Action]]] = field(default_factory=dict)
    lockspace: LockspaceState | None = None
    clients: list[ClientState] = field(default_factory=list)

    def times(self, pid: int, action: Action) -> list[float]:
        return [t for t, a in self.sent.get(pid, []) if a is action]


LockspaceHook = Callable[[float, LockspaceState], LockspaceState]
ClientHook = Callable[[float, ClientState], ClientState]


def follow(
    lockspace: LockspaceState,
    clients: Sequence[ClientState],
    start: float,
    until: float,
    timeouts: Timeouts = T10,
    *,
    at: Sequence[float] | None = None,
    on_lockspace: LockspaceHook | None = None,
    on_client: ClientHook | None = None,
    jitter: Sequence[float] = (0.0,),
    use_watchdog: bool = True,
    kill_count_max: int = KILL_COUNT_MAX,
) -> Run:
    """Check at ``at`` if given, else from ``start`` at each ``next_check`` (plus ``jitter``,
    cycled), until ``until`` (exclusive) or the lockspace is released. The hooks change the
    daemon's inputs (flags, deaths) before each check."""
    run = Run(lockspace=lockspace, clients=list(clients))
    ls, cls = lockspace, list(clients)
    t, i = start, 0
    times = iter(at) if at is not None else None
    while True:
        if times is not None:
            t = next(times, until)
        if t >= until:
            break
        if on_lockspace is not None:
            ls = on_lockspace(t, ls)
        if on_client is not None:
            cls = [on_client(t, c) for c in cls]
        d = decide(t, ls, cls, timeouts, use_watchdog=use_watchdog, kill_count_max=kill_count_max)
        assert d.next_check > t
        run.checks.append((t, d))
        for cd in d.clients:
            if cd.action is not Action.NONE:
                run.sent.setdefault(cd.pid, []).append((t, cd.action))
        ls, cls = d.lockspace, [cd.state for cd in d.clients]
        run.lockspace, run.clients = ls, cls
        if d.release_lockspace:
            break
        t = d.next_check + jitter[i % len(jitter)]
        i += 1
    return run


def failing(
    last: float = LAST,
    *,
    recovery: Reason | None = None,
    corrupt: bool = False,
    removing: bool = False,
    shutting_down: bool = False,
    used_externally: bool = False,
) -> LockspaceState:
    """A lockspace whose renewals fail from ``last + 2N`` on."""
    return LockspaceState(
        last,
        last_renewal_ok=False,
        recovery=recovery,
        corrupt=corrupt,
        removing=removing,
        shutting_down=shutting_down,
        used_externally=used_externally,
    )


def every(first: float, last: float) -> list[float]:
    """Whole seconds from ``first`` to ``last`` inclusive."""
    return [float(s) for s in range(int(first), int(last) + 1)]


# --- the worked timeline ---------------------------------------------------------------------


def test_nothing_before_the_warning() -> None:
    run = follow(failing(), FIVE, start=0.0, until=100.0)
    assert [t for t, _ in run.checks] == every(0, 99)  # the standard 1 s cadence
    for _, d in run.checks:
        assert d.notices == ()
        assert d.watchdog is WatchdogAction.PET
        assert d.fencing is Fencing.NONE
        assert d.lockspace.recovery is None
        assert all(c.action is Action.NONE for c in d.clients)
    assert run.sent == {}


def test_next_check_lands_on_the_warning_and_on_recovery() -> None:
    assert next_check_at(99.5, failing(), FIVE, T10) == 100.0
    assert next_check_at(119.7, failing(), FIVE, T10) == 120.0
    assert next_check_at(50.0, failing(), FIVE, T10) == 50.0 + CHECK_INTERVAL


def test_warnings_every_second_from_6n_then_recovery_at_8n() -> None:
    run = follow(failing(), FIVE, start=99.5, until=120.5)
    warned = [t for t, d in run.checks if any(n.severity is Severity.WARNING for n in d.notices)]
    assert warned == every(100, 119)
    started = [t for t, d in run.checks if d.started_recovery]
    assert started == [120.0]
    d120 = dict(run.checks)[120.0]
    assert d120.lockspace.recovery is Reason.RENEWAL_FAILED
    assert not any(n.severity is Severity.WARNING for n in d120.notices)


def test_worked_timeline_actions() -> None:
    """Each client from 120 to 180: what it gets, when, at most once per second."""
    run = follow(failing(), FIVE, start=0.0, until=180.0)
    grace, kill = every(120, 159), every(160, 179)
    assert run.sent[PLAIN.pid] == [(t, Action.SIGTERM) for t in grace] + [
        (t, Action.SIGKILL) for t in kill
    ]
    for c in (KILLPATH_PID, KILLPATH):
        assert run.sent[c.pid] == [(120.0, Action.RUN_KILLPATH)] + [
            (t, Action.SIGKILL) for t in kill
        ]
    assert run.sent[NO_SIGKILL.pid] == [(t, Action.SIGTERM) for t in grace + kill]
    assert run.sent[NO_SIGTERM.pid] == [(t, Action.SIGKILL) for t in grace + kill]

    d120 = dict(run.checks)[120.0]
    by_pid = {cd.pid: cd for cd in d120.clients}
    assert by_pid[KILLPATH_PID.pid].append_pid is True
    assert by_pid[KILLPATH.pid].append_pid is False

    # the rounds in grace after the killpath send nothing but still count, as in sanlock
    d159 = dict(run.checks)[159.0]
    assert {cd.pid: cd.state.kill_count for cd in d159.clients}[KILLPATH.pid] == 40


def test_worked_timeline_checks_every_200ms_while_killing() -> None:
    run = follow(failing(), FIVE, start=119.5, until=125.0)
    times = [t for t, _ in run.checks if t >= 120.0]
    assert times[0] == 120.0
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0 < g <= RECOVERY_CHECK_INTERVAL + 1e-9 for g in gaps)
    assert {121.0, 122.0, 123.0, 124.0} <= set(times)  # each client's next round, exactly


def test_worked_timeline_watchdog() -> None:
    run = follow(failing(), FIVE, start=0.0, until=180.0)
    for t, d in run.checks:
        if t < 120.0:
            assert (d.watchdog, d.fencing) == (WatchdogAction.PET, Fencing.NONE), t
        else:
            assert (d.watchdog, d.fencing) == (WatchdogAction.EXPIRE, Fencing.WATCHDOG), t
    expired = [(t, n) for t, d in run.checks for n in d.notices if "watchdog" in n.text]
    assert len(expired) == 1
    assert expired[0][0] == 120.0
    assert "[170.0, 180.0)" in expired[0][1].text
    assert watchdog_expire_at(LAST, T10) == 120.0
    assert T10.watchdog_reset_window(LAST) == (170.0, 180.0)
    assert sigkill_at(LAST, T10) == 160.0


def test_sigterm_at_most_once_per_second() -> None:
    """Checks every 0.25 s (exact in binary): one SIGTERM per whole second, none in between."""
    grid = [120.0 + k / 4 for k in range(12)]
    run = follow(failing(), [PLAIN], start=0.0, until=123.0, at=grid)
    assert run.sent[PLAIN.pid] == [
        (120.0, Action.SIGTERM),
        (121.0, Action.SIGTERM),
        (122.0, Action.SIGTERM),
    ]


def test_late_checks_space_signals_from_the_last_one() -> None:
    grid = [120.0, 120.5, 121.5, 122.25, 122.5, 123.0, 123.75]
    run = follow(failing(), [PLAIN], start=0.0, until=124.0, at=grid)
    assert run.times(PLAIN.pid, Action.SIGTERM) == [120.0, 121.5, 122.5, 123.75]


# --- kill_grace 0 ----------------------------------------------------------------------------


def test_kill_grace_0_sigkill_from_the_start() -> None:
    t0 = Timeouts(10, kill_grace=0)
    d = decide(120.0, failing(), FIVE, t0)
    assert d.lockspace.recovery is Reason.RENEWAL_FAILED
    assert [c.action for c in d.clients] == [
        Action.SIGKILL,  # no SIGTERM phase
        Action.SIGKILL,  # no killpath phase either
        Action.SIGKILL,
        Action.SIGTERM,  # RESTRICT_SIGKILL
        Action.SIGKILL,
    ]


def test_kill_grace_0_corrupt_renewal_gets_sigterm_until_8n() -> None:
    """sanlock's quirk: with kill_grace 0 a corrupt renewal before T+8N is still "in grace",
    and the killpath needs kill_grace > 0, so every client gets SIGTERM until T+8N."""
    t0 = Timeouts(10, kill_grace=0)
    run = follow(failing(corrupt=True), [PLAIN, KILLPATH], start=50.0, until=122.0, timeouts=t0)
    assert dict(run.checks)[50.0].lockspace.recovery is Reason.RENEWAL_CORRUPT
    for c in (PLAIN, KILLPATH):
        assert run.sent[c.pid] == [(t, Action.SIGTERM) for t in every(50, 119)] + [
            (120.0, Action.SIGKILL),
            (121.0, Action.SIGKILL),
        ]


def test_corrupt_renewal_starts_recovery_at_once_with_grace() -> None:
    run = follow(failing(corrupt=True), [PLAIN, KILLPATH], start=60.0, until=62.0)
    assert run.sent[PLAIN.pid] == [(60.0, Action.SIGTERM), (61.0, Action.SIGTERM)]
    assert run.sent[KILLPATH.pid] == [(60.0, Action.RUN_KILLPATH)]
    d = dict(run.checks)[60.0]
    assert d.watchdog is WatchdogAction.PET  # still fed until T+8N, as wdmd would be


def test_early_corrupt_renewal_can_exhaust_kill_count_before_sigkill() -> None:
    """As in sanlock: 100 rounds from a corrupt renewal at 45 end at 144, before SIGKILL at 160;
    the client is given up on and only the watchdog is left."""
    run = follow(failing(corrupt=True), [PLAIN], start=45.0, until=170.0)
    assert run.sent[PLAIN.pid][:100] == [(t, Action.SIGTERM) for t in every(45, 144)]
    assert set(a for _, a in run.sent[PLAIN.pid][100:]) == {Action.GIVE_UP}
    assert run.times(PLAIN.pid, Action.SIGKILL) == []
    stuck = [t for t, d in run.checks if any("stuck" in n.text for n in d.notices)]
    assert stuck == pytest.approx([144.2])  # the next check (0.2 s) sees it


# --- restrict flags --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restrict_sigkill", "restrict_sigterm", "grace", "after", "removing"),
    [
        (False, False, Action.SIGTERM, Action.SIGKILL, Action.SIGKILL),
        (True, False, Action.SIGTERM, Action.SIGTERM, Action.SIGTERM),
        (False, True, Action.SIGKILL, Action.SIGKILL, Action.SIGKILL),
        # both: SIGKILL -> SIGTERM -> SIGKILL, the second rule applies after the first
        (True, True, Action.SIGKILL, Action.SIGKILL, Action.SIGKILL),
    ],
)
def test_restrict_flags(
    restrict_sigkill: bool, restrict_sigterm: bool, grace: Action, after: Action, removing: Action
) -> None:
    c = ClientState(7, restrict_sigkill=restrict_sigkill, restrict_sigterm=restrict_sigterm)
    assert decide(120.0, failing(), [c], T10).clients[0].action is grace
    assert decide(160.0, failing(), [c], T10).clients[0].action is after
    good = LockspaceState(100.0, removing=True)
    assert decide(101.0, good, [c], T10).clients[0].action is removing


@pytest.mark.parametrize(("rk", "rt"), [(True, False), (False, True), (True, True)])
def test_restrict_flags_do_not_touch_the_killpath(rk: bool, rt: bool) -> None:
    c = ClientState(7, killpath=True, restrict_sigkill=rk, restrict_sigterm=rt)
    assert decide(120.0, failing(), [c], T10).clients[0].action is Action.RUN_KILLPATH


# --- killpath --------------------------------------------------------------------------------


@pytest.mark.parametrize("with_pid", [False, True])
def test_killpath_runs_once_with_or_without_pid(with_pid: bool) -> None:
    c = ClientState(7, killpath=True, killpath_pid=with_pid)
    d1 = decide(120.0, failing(), [c], T10).clients[0]
    assert (d1.action, d1.append_pid) == (Action.RUN_KILLPATH, with_pid)
    assert (d1.state.kill_count, d1.state.last_kill, d1.state.killpath_sent) == (1, 120.0, True)
    d2 = decide(121.0, failing(recovery=Reason.RENEWAL_FAILED), [d1.state], T10).clients[0]
    assert (d2.action, d2.state.kill_count, d2.state.last_kill) == (Action.NONE, 2, 121.0)


def test_killpath_retried_when_it_could_not_be_started() -> None:
    ls = failing(recovery=Reason.RENEWAL_FAILED)
    d1 = decide(120.0, ls, [KILLPATH], T10).clients[0]
    failed = replace(d1.state, killpath_sent=False)
    assert decide(120.5, ls, [failed], T10).clients[0].action is Action.NONE  # < 1 s
    assert decide(121.0, ls, [failed], T10).clients[0].action is Action.RUN_KILLPATH


def test_killpath_ends_at_grace_even_if_never_sent() -> None:
    assert decide(160.0, failing(), [KILLPATH], T10).clients[0].action is Action.SIGKILL


# --- kill_count_max --------------------------------------------------------------------------


def test_kill_count_max() -> None:
    ls = failing(recovery=Reason.RENEWAL_FAILED)
    c = ClientState(7, kill_count=99, last_kill=164.0)
    d1 = decide(165.0, ls, [c], T10)
    assert d1.clients[0].action is Action.SIGKILL
    assert d1.clients[0].state.kill_count == 100
    assert not d1.lockspace.stuck
    d2 = decide(166.0, d1.lockspace, [d1.clients[0].state], T10)
    assert d2.clients[0].action is Action.GIVE_UP
    assert d2.lockspace.stuck
    assert [n.severity for n in d2.notices if "stuck" in n.text] == [Severity.ERROR]
    d3 = decide(167.0, d2.lockspace, [d2.clients[0].state], T10)
    assert d3.clients[0].action is Action.GIVE_UP
    assert not any("stuck" in n.text for n in d3.notices)  # logged once
    assert d3.watchdog is WatchdogAction.EXPIRE
    assert not d3.release_lockspace


def test_kill_count_max_is_a_parameter_and_stuck_needs_all() -> None:
    run = follow(failing(), [PLAIN, NO_SIGKILL], start=120.0, until=126.0, kill_count_max=3)
    assert run.sent[PLAIN.pid] == [
        (120.0, Action.SIGTERM),
        (121.0, Action.SIGTERM),
        (122.0, Action.SIGTERM),
    ] + [(t, Action.GIVE_UP) for t, _ in run.checks if t > 122.0]
    stuck = [t for t, d in run.checks if d.lockspace.stuck]
    assert stuck[0] == pytest.approx(122.2)  # the check after the third round

    one_left = ClientState(9, kill_count=1, last_kill=120.0)
    given_up = ClientState(8, kill_count=3, last_kill=122.0)
    d = decide(
        123.0, failing(recovery=Reason.RENEWAL_FAILED), [given_up, one_left], T10, kill_count_max=3
    )
    assert [c.action for c in d.clients] == [Action.GIVE_UP, Action.SIGTERM]
    assert not d.lockspace.stuck


# --- rem_lockspace and forced shutdown -------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "reason"),
    [("removing", Reason.REM_LOCKSPACE), ("shutting_down", Reason.FORCED_SHUTDOWN)],
)
def test_remove_and_forced_shutdown_sigkill_from_the_start(flag: str, reason: Reason) -> None:
    # renewals are fine
    ls = LockspaceState(100.0, removing=flag == "removing", shutting_down=flag == "shutting_down")
    d = decide(105.0, ls, FIVE, T10)
    assert d.started_recovery
    assert d.lockspace.recovery is reason
    assert [c.action for c in d.clients] == [
        Action.SIGKILL,
        Action.SIGKILL,  # no killpath
        Action.SIGKILL,
        Action.SIGTERM,  # RESTRICT_SIGKILL
        Action.SIGKILL,
    ]
    assert (d.watchdog, d.fencing) == (WatchdogAction.PET, Fencing.NONE)

    dead = [replace(cd.state, dead=True) for cd in d.clients]
    d2 = decide(105.2, d.lockspace, dead, T10)
    assert d2.release_lockspace and d2.release_delta
    assert (d2.watchdog, d2.fencing) == (WatchdogAction.DISARM, Fencing.NONE)


def test_remove_during_renewal_failure_recovery_switches_to_sigkill() -> None:
    def remove_at_130(t: float, ls: LockspaceState) -> LockspaceState:
        return replace(ls, removing=True) if t >= 130.0 else ls

    run = follow(failing(), [PLAIN, KILLPATH], start=120.0, until=132.0, on_lockspace=remove_at_130)
    assert run.sent[PLAIN.pid] == [(t, Action.SIGTERM) for t in every(120, 129)] + [
        (130.0, Action.SIGKILL),
        (131.0, Action.SIGKILL),
    ]
    assert run.sent[KILLPATH.pid] == [
        (120.0, Action.RUN_KILLPATH),
        (130.0, Action.SIGKILL),
        (131.0, Action.SIGKILL),
    ]
    assert run.lockspace is not None
    assert run.lockspace.recovery is Reason.RENEWAL_FAILED  # why it started is kept


def test_remove_in_the_warning_window_warns_and_starts_recovery() -> None:
    d = decide(105.0, failing(removing=True), [PLAIN], T10)
    assert d.lockspace.recovery is Reason.REM_LOCKSPACE
    # the renewal warning, then the removal, which kills a holder
    assert [n.severity for n in d.notices] == [Severity.WARNING, Severity.WARNING]


def test_recovery_is_an_error_only_when_renewals_fail() -> None:
    def severity(ls: LockspaceState, now: float, clients: list[ClientState]) -> Severity:
        (notice,) = [n for n in decide(now, ls, clients, T10).notices if "recovery" in n.text]
        return notice.severity

    assert severity(failing(), 120.0, [PLAIN]) is Severity.ERROR
    assert severity(failing(corrupt=True), 101.0, []) is Severity.ERROR
    assert severity(failing(removing=True), 101.0, [PLAIN]) is Severity.WARNING
    assert severity(failing(removing=True), 101.0, []) is Severity.INFO  # a routine leave
    assert severity(failing(shutting_down=True), 101.0, []) is Severity.INFO


def test_recovery_reason_order() -> None:
    ls = failing(corrupt=True, removing=True, shutting_down=True)
    assert recovery_reason(130.0, ls, T10) is Reason.RENEWAL_CORRUPT
    ls = failing(removing=True, shutting_down=True)
    assert recovery_reason(120.0, ls, T10) is Reason.RENEWAL_FAILED
    assert recovery_reason(119.0, ls, T10) is Reason.REM_LOCKSPACE
    assert recovery_reason(119.0, failing(shutting_down=True), T10) is Reason.FORCED_SHUTDOWN
    assert recovery_reason(119.0, failing(), T10) is None
    assert recovery_reason(0.0, failing(recovery=Reason.REM_LOCKSPACE), T10) is (
        Reason.REM_LOCKSPACE
    )


# --- requests (REQUEST with force mode) ------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "client", "action"),
    [
        (ForceMode.FORCE, PLAIN, Action.SIGKILL),
        (ForceMode.FORCE, KILLPATH_PID, Action.SIGKILL),  # FORCE ignores the killpath
        (ForceMode.FORCE, NO_SIGKILL, Action.SIGTERM),
        (ForceMode.FORCE, NO_SIGTERM, Action.SIGKILL),
        (
            ForceMode.FORCE,
            ClientState(9, restrict_sigkill=True, restrict_sigterm=True),
            Action.SIGTERM,
        ),
        (ForceMode.GRACEFUL, PLAIN, Action.SIGTERM),
        (ForceMode.GRACEFUL, KILLPATH, Action.RUN_KILLPATH),
        (ForceMode.GRACEFUL, KILLPATH_PID, Action.RUN_KILLPATH),
        (ForceMode.GRACEFUL, NO_SIGKILL, Action.SIGTERM),
        (ForceMode.GRACEFUL, NO_SIGTERM, Action.SIGKILL),
        (
            ForceMode.GRACEFUL,
            ClientState(9, restrict_sigkill=True, restrict_sigterm=True),
            Action.SIGKILL,
        ),
        (ForceMode.FORCE, ClientState(9, dead=True), Action.NONE),
        (ForceMode.GRACEFUL, ClientState(9, killpath=True, dead=True), Action.NONE),
    ],
)
def test_request(mode: ForceMode, client: ClientState, action: Action) -> None:
    d = request_action(mode, client)
    assert d.action is action
    assert d.append_pid is False  # sanlock never appends the pid for a request's killpath
    assert d.state == client  # no count, no rate limit: once per examination
    assert request_action(mode, client) == d


def test_force_mode_values() -> None:
    assert (ForceMode(1), ForceMode(2)) == (ForceMode.FORCE, ForceMode.GRACEFUL)
    with pytest.raises(ValueError, match="3"):
        ForceMode(3)


# --- clients already dead, lockspace release -------------------------------------------------


def test_all_dead_at_recovery_release_on_the_next_check() -> None:
    gone = [replace(c, dead=True) for c in FIVE]
    d1 = decide(120.0, failing(), gone, T10)
    assert d1.started_recovery and not d1.release_lockspace
    assert all(c.action is Action.NONE for c in d1.clients)
    assert d1.next_check == pytest.approx(120.0 + RECOVERY_CHECK_INTERVAL)
    d2 = decide(d1.next_check, d1.lockspace, gone, T10)
    assert d2.release_lockspace
    assert not d2.release_delta  # the last renewal failed
    assert (d2.watchdog, d2.fencing) == (WatchdogAction.DISARM, Fencing.NONE)


def test_dead_clients_are_left_alone_and_release_waits_for_the_live() -> None:
    def dies_at_125(t: float, c: ClientState) -> ClientState:
        return replace(c, dead=True) if c.pid == PLAIN.pid and t >= 125.0 else c

    dead = ClientState(200, dead=True, killpath=True)
    run = follow(failing(), [dead, PLAIN], start=120.0, until=200.0, on_client=dies_at_125)
    assert dead.pid not in run.sent
    assert run.sent[PLAIN.pid] == [(t, Action.SIGTERM) for t in every(120, 124)]
    last_t, last = run.checks[-1]
    assert last.release_lockspace
    assert last_t == 125.0  # the check that sees it gone ends the lockspace
    assert last.watchdog is WatchdogAction.DISARM  # after 8N: disarmed, not reset


def test_used_externally_blocks_the_release() -> None:
    ls = failing(recovery=Reason.RENEWAL_FAILED, used_externally=True)
    d = decide(130.0, ls, [ClientState(9, dead=True)], T10)
    assert not d.release_lockspace
    assert not d.lockspace.stuck  # no live client is not "stuck"
    assert (d.watchdog, d.fencing) == (WatchdogAction.EXPIRE, Fencing.WATCHDOG)


@pytest.mark.parametrize(
    ("last_success", "last_renewal_ok", "now", "release_delta"),
    [
        (100.0, True, 105.0, True),  # rem_lockspace with good renewals
        (100.0, False, 105.0, False),  # the last attempt failed
        (40.0, False, 130.0, False),  # renewal failure recovery
        (40.0, True, 120.0, False),  # last attempt "ok" but 8N old: our guard
        (40.0, True, 119.9, True),
    ],
)
def test_delta_release_only_after_a_good_renewal(
    last_success: float, last_renewal_ok: bool, now: float, release_delta: bool
) -> None:
    ls = LockspaceState(
        last_success, last_renewal_ok=last_renewal_ok, recovery=Reason.REM_LOCKSPACE
    )
    d = decide(now, ls, [ClientState(9, dead=True)], T10)
    assert d.release_lockspace
    assert d.release_delta is release_delta


def test_not_in_recovery_nothing_is_released_without_clients() -> None:
    d = decide(50.0, LockspaceState(45.0), [], T10)
    assert not d.release_lockspace and d.lockspace.recovery is None


# --- watchdog ----------------------------------------------------------------------------------


def test_no_watchdog_mode_says_the_host_will_not_be_reset() -> None:
    run = follow(failing(), [PLAIN], start=118.0, until=123.0, use_watchdog=False)
    for t, d in run.checks:
        if t >= 120.0:
            assert (d.watchdog, d.fencing) == (WatchdogAction.EXPIRE, Fencing.UNFENCED)
        else:
            assert d.fencing is Fencing.NONE
    critical = [
        (t, n.text) for t, d in run.checks for n in d.notices if n.severity is Severity.CRITICAL
    ]
    assert len(critical) == 1
    assert critical[0][0] == 120.0
    assert "NO WATCHDOG" in critical[0][1]
    assert run.sent[PLAIN.pid][0] == (120.0, Action.SIGTERM)  # killing is unchanged


def test_a_renewal_during_recovery_feeds_the_watchdog_and_extends_grace() -> None:
    """sanlock keeps killing (recovery never ends by itself) but wdmd is fed again, and
    in_grace uses the new last success."""

    def renewed_at_125(t: float, ls: LockspaceState) -> LockspaceState:
        return replace(ls, last_success=125.0, last_renewal_ok=True) if t >= 125.0 else ls

    run = follow(failing(), [PLAIN], start=120.0, until=170.0, on_lockspace=renewed_at_125)
    assert run.sent[PLAIN.pid] == [(t, Action.SIGTERM) for t in every(120, 169)]
    d = dict(run.checks)
    assert d[124.0].watchdog is WatchdogAction.EXPIRE
    assert d[125.0].watchdog is WatchdogAction.PET
    assert not d[125.0].lockspace.watchdog_expired
    assert d[125.0].lockspace.recovery is Reason.RENEWAL_FAILED
    assert in_grace(200.0, 125.0, T10) and not in_grace(245.0, 125.0, T10)


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: ClientState(0),
        lambda: ClientState(-5),
        lambda: ClientState(5, kill_count=-1),
        lambda: ClientState(5, kill_count=2),
    ],
)
def test_invalid_client_state(make: Callable[[], ClientState]) -> None:
    with pytest.raises(UsageError):
        make()


def test_invalid_kill_count_max() -> None:
    with pytest.raises(UsageError, match="kill_count_max"):
        decide(0.0, LockspaceState(0.0), [], T10, kill_count_max=0)


def test_action_for() -> None:
    d = decide(120.0, failing(), [PLAIN, KILLPATH], T10)
    assert d.action_for(PLAIN.pid) is Action.SIGTERM
    assert d.action_for(KILLPATH.pid) is Action.RUN_KILLPATH
    assert d.action_for(999) is Action.NONE


# --- properties ------------------------------------------------------------------------------


@st.composite
def client_states(draw: st.DrawFn, pid: int) -> ClientState:
    return ClientState(
        pid,
        killpath=draw(st.booleans()),
        killpath_pid=draw(st.booleans()),
        restrict_sigkill=draw(st.booleans()),
        restrict_sigterm=draw(st.booleans()),
        dead=draw(st.booleans()),
    )


@dataclass(frozen=True)
class Scenario:
    timeouts: Timeouts
    last: float  # the last successful renewal; every later one fails
    trigger: str  # what starts recovery: "fail" (at T+8N), "corrupt", "remove", "shutdown"
    trigger_at: float
    start: float  # the first check
    clients: tuple[ClientState, ...]
    die_at: dict[int, float]  # some clients exit on their own
    jitter: tuple[float, ...]  # how late the daemon is for each check


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    io = draw(st.integers(1, 30))
    timeouts = Timeouts(io, kill_grace=draw(st.integers(0, 60)))
    last = draw(st.floats(0, 1e6, allow_nan=False, allow_infinity=False))
    trigger = draw(st.sampled_from(["fail", "corrupt", "remove", "shutdown"]))
    trigger_at = last + draw(st.floats(0, 8 * io + 60))
    start = last + draw(st.floats(0, 8 * io))
    n = draw(st.integers(0, 5))
    clients = tuple(draw(client_states(pid)) for pid in range(1, n + 1))
    die_at = draw(
        st.dictionaries(
            st.integers(1, max(n, 1)), st.floats(0, 8 * io + 120).map(lambda x: last + x)
        )
    )
    jitter = draw(
        st.one_of(st.just((0.0,)), st.lists(st.floats(0, 0.5), min_size=1, max_size=7).map(tuple))
    )
    return Scenario(timeouts, last, trigger, trigger_at, start, clients, die_at, jitter)


def simulate(s: Scenario, until: float) -> Run:
    def flags(t: float, ls: LockspaceState) -> LockspaceState:
        if t < s.trigger_at or s.trigger == "fail":
            return ls
        return replace(
            ls,
            corrupt=ls.corrupt or s.trigger == "corrupt",
            removing=ls.removing or s.trigger == "remove",
            shutting_down=ls.shutting_down or s.trigger == "shutdown",
        )

    def deaths(t: float, c: ClientState) -> ClientState:
        return replace(c, dead=True) if t >= s.die_at.get(c.pid, float("inf")) else c

    return follow(
        failing(s.last),
        s.clients,
        start=s.start,
        until=until,
        timeouts=s.timeouts,
        on_lockspace=flags,
        on_client=deaths,
        jitter=s.jitter,
    )


@given(scenarios())
def test_property_fencing_before_takeover(s: Scenario) -> None:
    """For any timings and clients: every client still alive at S + 1 = T + 8N + kill_grace + 1
    (+ the daemon's lateness) has been sent SIGKILL (SIGTERM if only SIGKILL is restricted),
    unless it was given up on after KILL_COUNT_MAX rounds that all fit before S; the watchdog
    is never fed from T + 8N on, so the host is reset before T + host_dead."""
    t, late = s.timeouts, max(s.jitter)
    sigkill_phase = sigkill_at(s.last, t)
    deadline = sigkill_phase + 1 + late
    run = simulate(s, until=deadline + 1e-6)

    for now, d in run.checks:
        if d.watchdog is WatchdogAction.PET:
            assert now < s.last + t.renewal_fail
        if now >= s.last + t.renewal_fail:
            assert d.watchdog in (WatchdogAction.EXPIRE, WatchdogAction.DISARM)
            assert d.fencing is (
                Fencing.WATCHDOG if d.watchdog is WatchdogAction.EXPIRE else Fencing.NONE
            )
    assert t.watchdog_reset_window(0.0)[1] <= t.host_dead  # from T: no rounding of s.last

    started = [now for now, d in run.checks if d.started_recovery]
    assert len(started) <= 1
    if not run.checks[-1][1].release_lockspace:
        assert started, "recovery must have started by the deadline"
        assert started[0] <= s.last + t.renewal_fail + late

    final = {
        c.pid: Action.SIGTERM if (c.restrict_sigkill and not c.restrict_sigterm) else Action.SIGKILL
        for c in s.clients
    }
    for c in s.clients:
        if c.dead or s.die_at.get(c.pid, float("inf")) <= deadline:
            continue
        sent = run.sent.get(c.pid, [])
        signals = [(now, a) for now, a in sent if a is not Action.GIVE_UP]
        assert len([a for _, a in signals if a is Action.RUN_KILLPATH]) <= 1
        assert all(b[0] >= a[0] + 1.0 for a, b in itertools.pairwise(signals))
        assert len(signals) <= KILL_COUNT_MAX
        if any(a is final[c.pid] and now <= deadline for now, a in signals):
            continue
        # only sanlock's early give-up is allowed: KILL_COUNT_MAX rounds, 1 s apart, before S
        assert [a for _, a in sent][-1] is Action.GIVE_UP, (c, sent)
        assert sigkill_phase - started[0] > KILL_COUNT_MAX - 1


@given(scenarios())
def test_property_release_only_when_all_gone(s: Scenario) -> None:
    """The lockspace is released only in recovery with every client gone, within one recovery
    check (plus lateness) of the last one going; the delta lease never (renewals fail here)."""
    run = simulate(s, until=s.last + s.timeouts.sigkill_after + 130)
    for now, d in run.checks:
        if d.release_lockspace:
            assert d.lockspace.recovery is not None
            assert all(c.dead or s.die_at.get(c.pid, float("inf")) <= now for c in s.clients)
            assert not d.release_delta
            assert d.watchdog is WatchdogAction.DISARM
    gone = [s.die_at.get(c.pid, float("inf")) if not c.dead else s.start for c in s.clients]
    started = [now for now, d in run.checks if d.started_recovery]
    if started:
        all_gone = max([started[0], *gone])
        if all_gone + RECOVERY_CHECK_INTERVAL + max(s.jitter) + 1.0 < run.checks[-1][0]:
            assert run.checks[-1][1].release_lockspace
