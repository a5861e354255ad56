"""The VM lock hooks' pure parts: the wrapper argv, the state table, and each hook's calls
against a stand-in client (no daemon, a fake clock)."""

from __future__ import annotations

import errno
from typing import Any, cast

import pytest

from sync_manager.client import Client, ForceMode, HeldLease, SanlockError
from sync_manager.errors import UsageError
from sync_manager.integrations.vm_locks import (
    LeaseModeMismatch,
    VmLocks,
    VmLockTimeout,
    VmState,
    WrongState,
    launch_argv,
    next_state,
)
from sync_manager.leasestr import parse_resource

LEASE = "LS:vm1:/dev/leases:1048576"
PROG = ("sm",)

# --- the wrapper argv -------------------------------------------------------------------------


def test_argv_runs_the_command_under_the_seed_wrapper() -> None:
    argv = launch_argv("vm1", [LEASE], ["qemu", "-S", "-c", "--"], program=PROG)
    assert argv == ("sm", "daemon", "-n", "vm1", "-l", LEASE, "-c", "qemu", "-S", "-c", "--")


def test_incoming_asks_for_shared_leases() -> None:
    argv = launch_argv("vm1", [LEASE, "LS:d:/dev/leases:2097152"], ["q"], incoming=True)
    assert argv[-6:] == ("-l", f"{LEASE}:SH", "-l", "LS:d:/dev/leases:2097152:SH", "-c", "q")


def test_mode_and_lver_of_the_given_leases_are_ignored() -> None:
    argv = launch_argv("vm1", [f"{LEASE}:SH", "LS:d:/dev/leases:2097152:7"], ["q"], program=PROG)
    assert argv[4:8] == ("-l", LEASE, "-l", "LS:d:/dev/leases:2097152")
    spec = parse_resource(f"{LEASE}:SH")
    assert launch_argv("vm1", [spec], ["q"], program=PROG)[5] == LEASE


def test_argv_with_paths_that_need_escaping_round_trips() -> None:
    lease = r"LS:vm1:/dev/my\:disk:0"
    argv = launch_argv("vm1", [lease], ["q"], program=PROG)
    assert parse_resource(argv[5]) == parse_resource(lease)


@pytest.mark.parametrize(
    ("vm_id", "leases", "command", "message"),
    [
        ("", [LEASE], ["q"], "VM id"),
        ("x" * 49, [LEASE], ["q"], "VM id"),
        ("vm\0", [LEASE], ["q"], "VM id"),
        ("vm1", [], ["q"], "1 to 8 leases"),
        ("vm1", [f"LS:r{i}:/d:{i << 20}" for i in range(9)], ["q"], "1 to 8 leases"),
        ("vm1", [LEASE, f"{LEASE}:SH"], ["q"], "listed twice"),
        ("vm1", [LEASE], [], "no command"),
        ("vm1", ["not a lease"], ["q"], "invalid lease string"),
    ],
)
def test_argv_refuses_invalid_input(
    vm_id: str, leases: list[str], command: list[str], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        launch_argv(vm_id, leases, command)


def test_launch_points_the_wrapper_at_the_clients_daemon() -> None:
    launch = VmLocks(Client("/tmp/host2"), program=PROG).launch("vm1", [LEASE], ["q"])
    assert launch.env == {"SANLOCK_RUN_DIR": "/tmp/host2"}
    assert launch.argv == ("sm", "daemon", "-n", "vm1", "-l", LEASE, "-c", "q")


# --- the state table --------------------------------------------------------------------------

R, OUT, IN = VmState.RUNNING, VmState.MIGRATING_OUT, VmState.INCOMING


@pytest.mark.parametrize(
    ("hook", "before", "after"),
    [
        ("vm_start", None, R),
        ("vm_shutdown", R, None),
        ("vm_destroy", R, None),
        ("migrate_begin", R, OUT),
        ("migrate_prepare_destination", None, IN),
        ("migrate_finish", OUT, None),
        ("migrate_finish", IN, R),
        ("migrate_abort", OUT, R),
        ("migrate_abort", IN, None),
    ],
)
def test_transitions(hook: str, before: VmState | None, after: VmState | None) -> None:
    assert next_state(hook, before) is after


@pytest.mark.parametrize(
    ("hook", "state"),
    [
        ("vm_start", R),
        ("vm_shutdown", None),
        ("vm_shutdown", OUT),
        ("vm_destroy", IN),
        ("migrate_begin", OUT),
        ("migrate_begin", IN),
        ("migrate_prepare_destination", R),
        ("migrate_finish", R),
        ("migrate_finish", None),
        ("migrate_abort", R),
    ],
)
def test_hooks_in_the_wrong_state_are_refused(hook: str, state: VmState | None) -> None:
    with pytest.raises(WrongState) as err:
        next_state(hook, state, "vm1")
    assert err.value.code == -errno.EINVAL
    assert str(err.value).startswith(f"{hook}: VM vm1 is ")


def test_lease_modes_of_the_states() -> None:
    assert [s.shared for s in (R, OUT, IN)] == [False, True, True]


# --- the hooks against a stand-in client ------------------------------------------------------


class FakeClient:
    """Records the calls; ``held`` is what INQUIRE answers; ``fail`` raises queued errors."""

    path = "/tmp/fake/sanlock.sock"

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.held: dict[int, list[HeldLease]] = {}
        self.fail: dict[str, list[int]] = {}

    def _maybe_fail(self, command: str) -> None:
        codes = self.fail.get(command)
        if codes:
            raise SanlockError(command, codes.pop(0))

    def inquire(self, pid: int) -> list[HeldLease]:
        self.calls.append(("inquire", pid))
        self._maybe_fail("inquire")
        return self.held.get(pid, [])

    def acquire(self, pid: int, resources: list[Any], *, owner_name: str = "") -> None:
        self.calls.append(("acquire", pid, [str(r.shared) for r in resources], owner_name))
        self._maybe_fail("acquire")

    def convert(self, pid: int, res: Any, *, shared: bool | None = None) -> None:
        self.calls.append(("convert", pid, shared))
        self._maybe_fail("convert")

    def release(self, pid: int, resources: list[str]) -> int:
        self.calls.append(("release", pid, resources))
        self._maybe_fail("release")
        return 0

    def request(self, res: Any, mode: ForceMode) -> None:
        self.calls.append(("request", res.name, mode))

    def call(self, request: Any) -> Any:
        self.calls.append(("call", type(request).__name__))
        return type("R", (), {"result": 0})()


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _locks() -> tuple[VmLocks, FakeClient, FakeClock]:
    fake, clock = FakeClient(), FakeClock()
    locks = VmLocks(cast(Client, fake), clock=clock, sleep=clock.sleep)
    return locks, fake, clock


def _held(shared: bool) -> HeldLease:
    return HeldLease("LS", "vm1", (("/dev/leases", 1048576),), None if shared else 3, shared)


def test_vm_start_acquires_what_the_pid_lacks() -> None:
    locks, fake, _ = _locks()
    vm = locks.vm_start("vm1", 42, [LEASE])
    assert vm.state is R and vm.pid == 42
    assert fake.calls == [("inquire", 42), ("acquire", 42, ["False"], "vm1")]


def test_vm_start_adopts_leases_the_wrapper_acquired() -> None:
    locks, fake, _ = _locks()
    fake.held[42] = [_held(shared=False)]
    locks.vm_start("vm1", 42, [LEASE])
    assert fake.calls == [("inquire", 42)]


def test_vm_start_refuses_a_lease_held_in_the_other_mode() -> None:
    locks, fake, _ = _locks()
    fake.held[42] = [_held(shared=True)]
    with pytest.raises(LeaseModeMismatch, match="holds LS:vm1 SH, not EX"):
        locks.vm_start("vm1", 42, [LEASE])
    assert locks.vm("vm1") is None


def test_a_failed_acquire_records_nothing() -> None:
    locks, fake, _ = _locks()
    fake.fail["acquire"] = [-243]
    with pytest.raises(SanlockError):
        locks.vm_start("vm1", 42, [LEASE])
    assert locks.vm("vm1") is None
    locks.vm_start("vm1", 42, [LEASE])  # may be tried again


def test_a_hook_in_the_wrong_state_calls_nothing() -> None:
    locks, fake, _ = _locks()
    with pytest.raises(WrongState):
        locks.migrate_begin("vm1")
    locks.vm_start("vm1", 42, [LEASE])
    fake.calls.clear()
    with pytest.raises(WrongState):
        locks.vm_start("vm1", 43, [LEASE])
    with pytest.raises(WrongState):
        locks.migrate_prepare_destination("vm1", 43, [LEASE])
    assert fake.calls == []


def test_source_side_of_a_migration() -> None:
    locks, fake, _ = _locks()
    locks.vm_start("vm1", 42, [LEASE])
    fake.calls.clear()
    locks.migrate_begin("vm1")
    assert locks.vm("vm1").state is OUT  # type: ignore[union-attr]
    locks.migrate_finish("vm1")
    assert locks.vm("vm1") is None
    assert fake.calls == [("convert", 42, True), ("release", 42, ["LS:vm1"])]


def test_a_failed_migrate_begin_can_be_aborted() -> None:
    locks, fake, _ = _locks()
    locks.vm_start("vm1", 42, [LEASE])
    fake.fail["convert"] = [-errno.EIO]
    with pytest.raises(SanlockError):
        locks.migrate_begin("vm1")
    locks.migrate_abort("vm1")
    assert locks.vm("vm1").state is R  # type: ignore[union-attr]


def test_destination_waits_for_the_source_to_release() -> None:
    locks, fake, clock = _locks()
    locks.migrate_prepare_destination("vm1", 7, [LEASE])
    fake.fail["convert"] = [-errno.EAGAIN, -errno.EAGAIN, -243]
    locks.migrate_finish("vm1")
    assert locks.vm("vm1").state is R  # type: ignore[union-attr]
    assert [c for c in fake.calls if c[0] == "convert"] == [("convert", 7, False)] * 4
    assert clock.now == pytest.approx(0.6)


def test_destination_gives_up_after_its_timeout() -> None:
    locks, fake, clock = _locks()
    locks.migrate_prepare_destination("vm1", 7, [LEASE])
    fake.fail["convert"] = [-errno.EAGAIN] * 100
    with pytest.raises(VmLockTimeout) as err:
        locks.migrate_finish("vm1", timeout=1.0)
    assert err.value.last is not None and err.value.last.name == "EAGAIN"
    assert locks.vm("vm1").state is IN  # type: ignore[union-attr]
    assert 1.0 < clock.now < 1.5


def test_other_conversion_failures_are_not_retried() -> None:
    locks, fake, _ = _locks()
    locks.migrate_prepare_destination("vm1", 7, [LEASE])
    fake.fail["convert"] = [-errno.ENOSPC]
    with pytest.raises(SanlockError) as err:
        locks.migrate_finish("vm1")
    assert err.value.name == "ENOSPC"


def test_abort_on_a_dead_destination_forgets_it() -> None:
    locks, fake, _ = _locks()
    locks.migrate_prepare_destination("vm1", 7, [LEASE])
    fake.fail["release"] = [-errno.ESRCH]
    locks.migrate_abort("vm1")
    assert locks.vm("vm1") is None


def test_shutdown_reports_other_release_failures() -> None:
    locks, fake, _ = _locks()
    locks.vm_start("vm1", 42, [LEASE])
    fake.fail["release"] = [-errno.EIO]
    with pytest.raises(SanlockError):
        locks.vm_shutdown("vm1")
    assert locks.vm("vm1").state is R  # type: ignore[union-attr]


def test_destroy_requests_force_then_waits_for_the_process() -> None:
    locks, fake, _ = _locks()
    locks.vm_start("vm1", 42, [LEASE])
    fake.calls.clear()
    fake.fail["inquire"] = [-errno.EBUSY, -errno.ESRCH]  # exiting, then gone
    locks.vm_destroy("vm1")
    assert fake.calls[:2] == [("request", "vm1", ForceMode.FORCE), ("call", "ExamineResource")]
    assert locks.vm("vm1") is None


def test_destroy_times_out_on_a_process_that_stays() -> None:
    locks, _fake, _ = _locks()
    locks.vm_start("vm1", 42, [LEASE])
    with pytest.raises(VmLockTimeout, match="still registered"):
        locks.vm_destroy("vm1", timeout=1.0)
    assert locks.vm("vm1").state is R  # type: ignore[union-attr]
