"""Leases of virtual machines for a VM manager: the lock-manager hooks libvirt asked for.

One :class:`VmLocks` per host, over that host's daemon (:class:`~sync_manager.client.Client`,
as an administrator: it acts on the VM processes' behalf). It keeps which VM process holds
which leases and in which mode; every hook checks the VM's state first (:func:`next_state`,
:class:`WrongState`), and every daemon failure is the client's :class:`SanlockError`
(``.code``, ``.name``).

How the VM process holds its leases (as libvirt's sanlock driver does it): the VM process
registers with the daemon itself, on a connection made *before* it execs QEMU and inherited
through exec, so the registered pid is QEMU's and the leases end with QEMU however it ends.
:meth:`VmLocks.launch` gives the argv that does this with the seed's wrapper
(``sync_manager daemon -n VM_ID -l LEASE ... -c QEMU ARGS``): it acquires the leases (EX, or
SH for an incoming migration), restricts the registration (``SANLK_RESTRICT_ALL``, so QEMU
cannot release anything through it) and execs QEMU. The restriction covers that connection
only: the manager still acquires, converts, releases and inquires on the pid's behalf.

States and lease modes (``-`` is "not known here")::

    hook                          before         after          leases of the VM's pid
    vm_start                      -              RUNNING        EX
    vm_shutdown, vm_destroy       RUNNING        -              released
    migrate_begin          (src)  RUNNING        MIGRATING_OUT  EX -> SH
    migrate_prepare_destination   -              INCOMING       SH (dst)
    migrate_finish         (src)  MIGRATING_OUT  -              SH released
    migrate_finish         (dst)  INCOMING       RUNNING        SH -> EX, once src's SH is gone
    migrate_abort          (src)  MIGRATING_OUT  RUNNING        SH -> EX, once dst's SH is gone
    migrate_abort          (dst)  INCOMING       -              SH released

The invariant of a migration: no moment where two hosts can both write. While the source
holds EX nobody else gets the lease (the destination's wrapper fails to start QEMU, exit 75);
while the lease is SH on source and destination, no third host can take EX (SH excludes EX:
its acquire fails with -EAGAIN, or -243 while a holder owns the leader); and the SH -> EX
conversions wait until the other side's SH is released (or its host is dead), so exactly one
side ends with EX. QEMU itself guarantees that only one side runs the guest: the source stops
it before the last pass and the destination (started with ``-S``) is resumed by the manager
only after :meth:`VmLocks.migrate_finish`.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sync_manager.client import Client, ForceMode, SanlockError
from sync_manager.client.resources import ResourceLike, to_wire
from sync_manager.errors import SyncManagerError, UsageError
from sync_manager.leasestr import ResourceSpec, format_resource, parse_resource
from sync_manager.protocol import MAX_RESOURCES, ExamineResource

__all__ = [
    "DEFAULT_PROGRAM",
    "Launch",
    "LeaseModeMismatch",
    "Vm",
    "VmLockError",
    "VmLockTimeout",
    "VmLocks",
    "VmState",
    "WrongState",
    "launch_argv",
    "next_state",
]

DEFAULT_PROGRAM: tuple[str, ...] = (sys.executable, "-m", "sync_manager")
MAX_VM_ID_BYTES = 48  # the daemon's owner name field

CONVERT_TIMEOUT = 60.0  # longer than a dead host's timeout (io_timeout 10: 8N + 2N + slack)
DESTROY_TIMEOUT = 30.0  # a FORCE request is a SIGKILL: the process is gone in milliseconds
POLL_SECONDS = 0.2  # between two tries of a conversion, or two looks at a dying VM

# A conversion to EX that may succeed later: live SH holders on the other side (-EAGAIN), or
# a ballot lost to another host trying the same lease right now (it owns the leader briefly).
_RETRY = frozenset(
    {
        "EAGAIN",
        "EBUSY",
        "SANLK_ACQUIRE_IDLIVE",
        "SANLK_ACQUIRE_OWNED_RETRY",
        "SANLK_ACQUIRE_SHRETRY",
        "SANLK_DBLOCK_LVER",
        "SANLK_DBLOCK_MBAL",
    }
)


class VmState(enum.Enum):
    """Where a VM known to this host stands, and so the mode of its leases."""

    RUNNING = "running"  # EX: the only copy of the VM
    MIGRATING_OUT = "migrating-out"  # SH: the source of a migration
    INCOMING = "incoming"  # SH: the destination of a migration

    @property
    def shared(self) -> bool:
        """Whether the VM's leases are SH in this state."""
        return self is not VmState.RUNNING


# hook -> {state before: state after}; None is "not known on this host".
_TRANSITIONS: dict[str, dict[VmState | None, VmState | None]] = {
    "vm_start": {None: VmState.RUNNING},
    "vm_shutdown": {VmState.RUNNING: None},
    "vm_destroy": {VmState.RUNNING: None},
    "migrate_begin": {VmState.RUNNING: VmState.MIGRATING_OUT},
    "migrate_prepare_destination": {None: VmState.INCOMING},
    "migrate_finish": {VmState.MIGRATING_OUT: None, VmState.INCOMING: VmState.RUNNING},
    "migrate_abort": {VmState.MIGRATING_OUT: VmState.RUNNING, VmState.INCOMING: None},
}


class VmLockError(SyncManagerError):
    """A hook could not be carried out (besides the daemon's own SanlockError)."""


class WrongState(VmLockError, UsageError):
    """A hook was called in a state it does not apply to (nothing was done)."""

    def __init__(self, hook: str, vm_id: str, state: VmState | None) -> None:
        self.hook = hook
        self.vm_id = vm_id
        self.state = state
        now = state.value if state is not None else "not known here"
        wanted = " or ".join(
            s.value if s is not None else "not known here" for s in _TRANSITIONS[hook]
        )
        super().__init__(f"{hook}: VM {vm_id} is {now}; it must be {wanted}")


class LeaseModeMismatch(VmLockError):
    """The VM's process holds a lease in the other mode than the hook needs (nothing done)."""

    code = -errno.EEXIST


class VmLockTimeout(VmLockError):
    """A wait ran out; ``last`` is the daemon's last refusal, if any. The state is unchanged."""

    code = -errno.ETIMEDOUT

    def __init__(self, message: str, last: SanlockError | None = None) -> None:
        self.last = last
        super().__init__(message + (f" (last: {last})" if last is not None else ""))


def next_state(hook: str, state: VmState | None, vm_id: str = "?") -> VmState | None:
    """The state after ``hook`` from ``state``; :class:`WrongState` if it does not apply."""
    table = _TRANSITIONS[hook]
    if state not in table:
        raise WrongState(hook, vm_id, state)
    return table[state]


@dataclass(frozen=True, slots=True)
class Vm:
    """A VM known to this host: its id, its process (the registered pid), leases, state."""

    vm_id: str
    pid: int
    leases: tuple[ResourceSpec, ...]
    state: VmState


@dataclass(frozen=True, slots=True)
class Launch:
    """How to start a VM process that holds its leases: run ``argv`` with ``env`` added."""

    argv: tuple[str, ...]
    env: dict[str, str]


def _lease(res: ResourceLike) -> ResourceSpec:
    """``res`` without a mode or lver: which lease, not how it is held."""
    spec = parse_resource(res) if isinstance(res, str) else res
    return dataclasses.replace(spec, shared=False, lver=None)


def _leases(leases: Iterable[ResourceLike]) -> tuple[ResourceSpec, ...]:
    specs = tuple(_lease(res) for res in leases)
    if not 1 <= len(specs) <= MAX_RESOURCES:
        raise UsageError(f"a VM has 1 to {MAX_RESOURCES} leases, not {len(specs)}")
    keys = [(s.lockspace, s.name) for s in specs]
    if len(set(keys)) != len(keys):
        raise UsageError("a lease is listed twice")
    return specs


def _check_vm_id(vm_id: str) -> None:
    size = len(vm_id.encode("utf-8", "surrogateescape"))
    if not 1 <= size <= MAX_VM_ID_BYTES or "\0" in vm_id:
        raise UsageError(f"VM id {vm_id!r}: 1 to {MAX_VM_ID_BYTES} bytes, no NUL")


def launch_argv(
    vm_id: str,
    leases: Iterable[ResourceLike],
    command: Sequence[str],
    *,
    incoming: bool = False,
    program: Sequence[str] = DEFAULT_PROGRAM,
) -> tuple[str, ...]:
    """The seed's wrapper running ``command`` (QEMU and its arguments) as VM ``vm_id``.

    ``sync_manager daemon -n VM_ID -l LS:RES:PATH:OFFSET[:SH] ... -c COMMAND...``: the leases
    EX, or SH with ``incoming`` (the destination of a migration). ``program`` runs
    sync_manager. Pure; UsageError on an invalid id, lease list or an empty command.
    """
    _check_vm_id(vm_id)
    specs = _leases(leases)
    if not command:
        raise UsageError("no command to run the VM")
    argv = [*program, "daemon", "-n", vm_id]
    for spec in specs:
        argv += ["-l", format_resource(dataclasses.replace(spec, shared=incoming))]
    return (*argv, "-c", *command)


class VmLocks:
    """The lease hooks of a VM manager on one host (see the module's table).

    Not thread-safe: call the hooks of one host from one thread (or serialize them).
    ``program`` runs sync_manager in :meth:`launch`'s argv; ``clock`` and ``sleep`` time the
    waits of :meth:`vm_destroy`, :meth:`migrate_finish` and :meth:`migrate_abort`.
    """

    def __init__(
        self,
        client: Client,
        *,
        program: Sequence[str] = DEFAULT_PROGRAM,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.program = tuple(program)
        self._clock = clock
        self._sleep = sleep
        self._vms: dict[str, Vm] = {}

    def vm(self, vm_id: str) -> Vm | None:
        """What this host knows of VM ``vm_id`` (None: not known here)."""
        return self._vms.get(vm_id)

    # --- start and stop ---------------------------------------------------------------------

    def launch(
        self,
        vm_id: str,
        leases: Iterable[ResourceLike],
        command: Sequence[str],
        *,
        incoming: bool = False,
    ) -> Launch:
        """The argv and environment that start VM ``vm_id`` holding its leases (EX; SH with
        ``incoming``). The process's pid is the VM's (the wrapper execs ``command``); pass it
        to :meth:`vm_start` or :meth:`migrate_prepare_destination` once QEMU runs (its monitor
        answers). Start QEMU with ``-S`` (or ``-incoming``): resume it after the hook.

        The wrapper exits 75 without running QEMU when a lease is held elsewhere (the source
        still holds EX), 125 on another failure. Precondition: this host's daemon runs and has
        the lockspace joined (the wrapper starts a daemon only if none answers).
        """
        argv = launch_argv(vm_id, leases, command, incoming=incoming, program=self.program)
        return Launch(argv, {"SANLOCK_RUN_DIR": os.path.dirname(self.client.path)})

    def vm_start(self, vm_id: str, pid: int, leases: Iterable[ResourceLike]) -> Vm:
        """VM ``vm_id`` runs as ``pid`` holding ``leases`` EX. - -> RUNNING.

        Precondition: ``pid`` is registered with this host's daemon (started by
        :meth:`launch`'s argv, or a process that registered itself). Leases the pid does not
        hold yet are acquired for it (EX, owner name ``vm_id``). SanlockError: -ESRCH the pid
        is not registered, -243/-EAGAIN/... a lease is held elsewhere (nothing recorded).
        """
        next_state("vm_start", self._state(vm_id), vm_id)
        _check_vm_id(vm_id)
        specs = _leases(leases)
        self._hold(pid, specs, shared=False, owner_name=vm_id)
        return self._set(Vm(vm_id, pid, specs, VmState.RUNNING))

    def vm_shutdown(self, vm_id: str) -> None:
        """Release the leases of a VM that has stopped. RUNNING -> -.

        Precondition: the VM no longer writes (QEMU quit, or paused): a running VM without
        its lease is exactly what leases are for preventing. If its process has exited the
        daemon released the leases already, and this only forgets it.
        """
        vm = self._vm("vm_shutdown", vm_id)
        self._release(vm)
        del self._vms[vm_id]

    def vm_destroy(self, vm_id: str, *, timeout: float = DESTROY_TIMEOUT) -> None:
        """Have the lease manager kill the VM: a FORCE request on each lease, then EXAMINE, so
        the daemon SIGKILLs the holder (SIGTERM if the holder restricted SIGKILL) and releases
        its leases. Returns once the pid is no longer registered. RUNNING -> -.

        The same request from another host's manager (``Client.request(lease, FORCE)``)
        reaches this host's daemon at its next renewal. VmLockTimeout if the process is
        still registered after ``timeout`` s (the state is unchanged).
        """
        vm = self._vm("vm_destroy", vm_id)
        for spec in vm.leases:
            self.client.request(spec, ForceMode.FORCE)
        for spec in vm.leases:
            reply = self.client.call(ExamineResource(to_wire(spec)))
            result = getattr(reply, "result", 0)
            if isinstance(result, int) and result < 0:
                raise SanlockError("examine_resource", result)
        deadline = self._clock() + timeout
        while self._registered(vm.pid):
            if self._clock() > deadline:
                raise VmLockTimeout(f"vm_destroy: pid {vm.pid} still registered after {timeout} s")
            self._sleep(POLL_SECONDS)  # the daemon announces no process exit
        del self._vms[vm_id]

    # --- migration ---------------------------------------------------------------------------

    def migrate_begin(self, vm_id: str) -> None:
        """Source, before QMP ``migrate``: the VM's leases EX -> SH. RUNNING -> MIGRATING_OUT.

        From here a destination may take SH; no third host can take EX. The VM is
        MIGRATING_OUT even when a conversion fails (SanlockError): some leases may be SH
        already, and :meth:`migrate_abort` makes them all EX again.
        """
        vm = self._set(
            dataclasses.replace(self._vm("migrate_begin", vm_id), state=VmState.MIGRATING_OUT)
        )
        for spec in vm.leases:
            self.client.convert(vm.pid, spec, shared=True)

    def migrate_prepare_destination(
        self, vm_id: str, pid: int, leases: Iterable[ResourceLike]
    ) -> Vm:
        """Destination: the incoming VM process ``pid`` (QEMU ``-S -incoming ...``, started
        by :meth:`launch` with ``incoming``) holds ``leases`` SH. - -> INCOMING.

        Precondition: the source's :meth:`migrate_begin` is done (its leases are SH); else
        the acquire fails (-243/-EEXIST: the source holds EX). Leases the pid does not hold
        yet are acquired SH for it.
        """
        next_state("migrate_prepare_destination", self._state(vm_id), vm_id)
        _check_vm_id(vm_id)
        specs = _leases(leases)
        self._hold(pid, specs, shared=True, owner_name=vm_id)
        return self._set(Vm(vm_id, pid, specs, VmState.INCOMING))

    def migrate_finish(self, vm_id: str, *, timeout: float = CONVERT_TIMEOUT) -> None:
        """After QMP ``query-migrate`` says completed.

        Source (MIGRATING_OUT -> -): release the SH leases; then quit the source QEMU.
        Destination (INCOMING -> RUNNING): SH -> EX, retried until the source's SH is released
        (or its host is dead); then resume QEMU (``cont``). VmLockTimeout after ``timeout``
        s: the VM stays INCOMING (leases converted already stay EX; calling again goes on).
        """
        vm = self._vm("migrate_finish", vm_id)
        if vm.state is VmState.MIGRATING_OUT:
            self._release(vm)
            del self._vms[vm_id]
        else:
            self._to_exclusive("migrate_finish", vm, timeout)

    def migrate_abort(self, vm_id: str, *, timeout: float = CONVERT_TIMEOUT) -> None:
        """A migration that will not complete (failed, cancelled, destination gone).

        Destination (INCOMING -> -): release the SH leases (kill the incoming QEMU: if it
        is dead already, its leases went with it). Source (MIGRATING_OUT -> RUNNING):
        SH -> EX, retried until the destination's SH is released or its host is dead; the
        source VM may then be resumed. VmLockTimeout after ``timeout`` s: the VM stays
        MIGRATING_OUT (leases converted already stay EX; calling again goes on).
        """
        vm = self._vm("migrate_abort", vm_id)
        if vm.state is VmState.INCOMING:
            self._release(vm)
            del self._vms[vm_id]
        else:
            self._to_exclusive("migrate_abort", vm, timeout)

    # --- internals ---------------------------------------------------------------------------

    def _state(self, vm_id: str) -> VmState | None:
        vm = self._vms.get(vm_id)
        return vm.state if vm is not None else None

    def _vm(self, hook: str, vm_id: str) -> Vm:
        next_state(hook, self._state(vm_id), vm_id)
        return self._vms[vm_id]

    def _set(self, vm: Vm) -> Vm:
        self._vms[vm.vm_id] = vm
        return vm

    def _hold(
        self, pid: int, specs: Sequence[ResourceSpec], *, shared: bool, owner_name: str
    ) -> None:
        held = {(h.lockspace, h.name): h for h in self.client.inquire(pid)}
        missing = []
        for spec in specs:
            found = held.get((spec.lockspace, spec.name))
            if found is None:
                missing.append(dataclasses.replace(spec, shared=shared))
            elif found.shared != shared:
                mode, wanted = ("SH", "EX") if found.shared else ("EX", "SH")
                raise LeaseModeMismatch(
                    f"pid {pid} holds {spec.lockspace}:{spec.name} {mode}, not {wanted}"
                )
        if missing:
            self.client.acquire(pid, missing, owner_name=owner_name)

    def _registered(self, pid: int) -> bool:
        try:
            self.client.inquire(pid)
        except SanlockError as err:
            if err.name == "ESRCH":
                return False
            if err.name != "EBUSY":  # EBUSY: exiting, its leases being released
                raise
        return True

    def _release(self, vm: Vm) -> None:
        try:
            self.client.release(vm.pid, [f"{s.lockspace}:{s.name}" for s in vm.leases])
        except SanlockError as err:
            if err.name != "ESRCH":  # gone: the daemon released them when it exited
                raise

    def _to_exclusive(self, hook: str, vm: Vm, timeout: float) -> None:
        deadline = self._clock() + timeout
        for spec in vm.leases:
            while True:
                try:
                    self.client.convert(vm.pid, spec, shared=False)
                    break
                except SanlockError as err:
                    if err.name not in _RETRY:
                        raise
                    if self._clock() > deadline:
                        raise VmLockTimeout(
                            f"{hook}: {spec.lockspace}:{spec.name} still shared elsewhere "
                            f"after {timeout} s",
                            err,
                        ) from None
                self._sleep(POLL_SECONDS)  # the other side's release is not announced
        self._set(dataclasses.replace(vm, state=VmState.RUNNING))
