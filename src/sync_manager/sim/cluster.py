"""A simulated cluster: hosts running the lease core on shared fake disks, with fencing.

Each simulated host runs what the daemon runs, built from the same pure steps as the real one:
it joins the lockspace (delta acquire), renews its host id every ``2N`` seconds, watches the
other hosts (HostView), and a random workload (or, with ``workload=False``, a test calling each
daemon's ``request_acquire``/``request_release``/``request_convert``) acquires, converts and
releases resource leases on behalf of "processes". Fencing is modelled the way sanlock does it
(spec 8):

* the **supervisor** checks every second; once the last good renewal is ``8N`` old it kills
  the holders: SIGTERM (which a process may ignore), then SIGKILL from ``8N + kill_grace``;
  it runs on the host, so a paused host's supervisor does nothing;
* the **watchdog** (wdmd and the device, outside the paused daemon) resets the host
  ``watchdog_fire_timeout`` seconds after the first wdmd test (every 10 s) that finds the
  renewal expired (``last + 8N - 10``), unless the lockspace was stopped cleanly first.

A holder counts for the invariants (sim/invariants.py) from the moment its acquire returned to
the moment its process is really dead.

**Assumption on late writes.** A write abandoned after its deadline may still land later (the
engine models that), but not arbitrarily later: the storage stack (SCSI command timeouts,
multipath ``no_path_retry``) fails or completes it within a bound. If a host's stale leader
write (say, the release of lver 3) could land after another host has taken the lease over and
committed lver 4 or more, the leader on disk would go back to lver 3; Disk Paxos still keeps
the current holder safe (its dblock's higher lver makes every new ballot abort) but lver is
seen to go down and the history of decided versions is lost. A takeover happens at least
``host_dead - renewal`` = 6N + 60 seconds after the owner's last write was issued, so
:func:`max_io_delay` keeps faults below that; sanlock relies on the same bound, which is why
multipath must not queue I/O forever under a lockspace. Everything runs on the deterministic engine
(sim/engine.py); the same seed replays the same run.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sync_manager.core import delta, paxos
from sync_manager.core.effects import Step, now, sleep
from sync_manager.core.errors import RenewDiff, RenewOwner
from sync_manager.core.hosts import HostView
from sync_manager.core.paxos_io import LockspaceDisk, ReadPattern
from sync_manager.core.paxos_owner import OwnerObservation
from sync_manager.errors import DiskIOError, IOTimeout, SyncManagerError, UsageError
from sync_manager.ondisk.areas import ResourceArea, lockspace_init, resource_init
from sync_manager.ondisk.geometry import MIB, Geometry
from sync_manager.sim.disk import FakeDisk
from sync_manager.sim.engine import Host, Simulation, TaskCancelled
from sync_manager.sim.faults import FaultPlan
from sync_manager.sim.invariants import Checker, Violation
from sync_manager.timeouts import WDMD_TEST_INTERVAL, Timeouts

__all__ = ["Cluster", "ClusterConfig", "ClusterReport", "max_io_delay"]

DISK = "lun0"
_IO_ERRORS = (IOTimeout, DiskIOError)


def max_io_delay(timeouts: Timeouts) -> float:
    """The longest an abandoned I/O may take to land or fail for leases to stay consistent."""
    return float(timeouts.host_dead - timeouts.renewal - 1)


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """What to simulate. Times are seconds; probabilities are per decision."""

    hosts: int = 3
    resources: int = 3
    duration: float = 600.0
    io_timeout: int = 2
    kill_grace: int = 20
    sigterm_ignored: float = 0.3  # a holder that ignores SIGTERM dies only at SIGKILL
    think: tuple[float, float] = (0.5, 15.0)
    hold: tuple[float, float] = (1.0, 60.0)
    shared_probability: float = 0.25
    convert_probability: float = 0.15
    nowait_probability: float = 0.6
    new_name_probability: float = 0.3  # a restarted host comes back under a new name
    rejoin_delay: tuple[float, float] = (1.0, 30.0)
    restart_delay: tuple[float, float] = (5.0, 60.0)  # after a watchdog reset
    fencing: bool = True  # False: neither kill nor watchdog (a mutation the checker must catch)
    workload: bool = True  # False: no random workload; drive each daemon by its request_* calls
    # The host id of each host (None: 1, 2, ... hosts). An id given twice models two machines
    # misconfigured with one host id: only the delta lease (5.2) keeps them from both using it.
    host_ids: tuple[int, ...] | None = None
    timeouts: Timeouts | None = None  # None: Timeouts(io_timeout, kill_grace)
    read_pattern: ReadPattern = ReadPattern.MINIMAL  # what the daemon runs

    def timings(self) -> Timeouts:
        """The timings every host uses."""
        return self.timeouts or Timeouts(self.io_timeout, self.kill_grace)


@dataclass(slots=True)
class ClusterReport:
    """What happened in a run."""

    seed: int
    config: ClusterConfig
    counts: Counter[str]
    faults: Counter[str]
    violations: list[Violation]
    takeovers: int
    events: int
    trace_tail: str = ""

    @property
    def host_seconds(self) -> float:
        """Simulated host-seconds."""
        return self.config.hosts * self.config.duration

    def summary(self) -> str:
        """A few lines for people."""
        c = self.counts
        lines = [
            f"seed {self.seed}: {self.config.hosts} hosts, {self.config.resources} resources, "
            f"{self.config.duration:g} s, io_timeout {self.config.io_timeout}",
            f"simulated host-seconds {self.host_seconds:g}, events {self.events}",
            f"joins {c['join']}, renewals {c['renew']} (failed {c['renew_failed']}), "
            f"recoveries {c['recovery']}, watchdog resets {c['watchdog_fire']}",
            f"acquires {c['acquire']} (failed {c['acquire_failed']}), releases {c['release']}, "
            f"converts {c['convert']}, takeovers {self.takeovers}",
            "faults injected: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"),
            f"violations {len(self.violations)}",
        ]
        lines.extend(f"  VIOLATION {v}" for v in self.violations)
        return "\n".join(lines)


class Cluster:
    """Hosts, one shared disk with a lockspace and ``resources`` leases, and the checker."""

    def __init__(self, seed: int, config: ClusterConfig, faults: FaultPlan | None = None) -> None:
        self.seed = seed
        self.config = config
        self.timeouts = config.timings()
        if config.host_ids is not None and (
            len(config.host_ids) != config.hosts
            or not all(1 <= h <= config.hosts for h in config.host_ids)
        ):
            raise UsageError(
                f"host_ids {config.host_ids} must give each of {config.hosts} "
                f"hosts an id in 1..{config.hosts}"
            )
        self.sim = Simulation(seed, faults, trace_limit=2000)
        self.geometry = Geometry(512, MIB)
        self.disk = self.sim.add_disk(FakeDisk(DISK, (config.resources + 1) * MIB))
        self.checker = Checker()
        self.counts: Counter[str] = Counter()
        self._format()
        self.daemons = [_Daemon(self, index) for index in range(config.hosts)]

    def _format(self) -> None:
        init = lockspace_init("LS", self.geometry, self.config.io_timeout)
        self.disk.data[: len(init.area)] = init.area
        self.disk.data[: len(init.first_sector)] = init.first_sector
        for r in range(self.config.resources):
            image = resource_init("LS", f"R{r}", self.geometry, num_hosts=self.config.hosts)
            self.disk.data[(r + 1) * MIB : (r + 2) * MIB] = image

    def resource(self, r: int) -> paxos.Resource:
        """Resource lease number ``r``."""
        return paxos.Resource("LS", f"R{r}", ((DISK, (r + 1) * MIB),), self.geometry)

    def area(self, r: int) -> ResourceArea:
        """Resource ``r`` as it is on disk now (god's view, no I/O counted)."""
        start = (r + 1) * MIB
        return ResourceArea.unpack(bytes(self.disk.data[start : start + MIB]), 512)

    def run(self) -> ClusterReport:
        """Run to the configured duration (or the first violation) and report."""
        for daemon in self.daemons:
            daemon.start()
        self.sim.run(until=self.config.duration)
        tail = self.sim.format_trace(last=60)
        return ClusterReport(
            self.seed,
            self.config,
            self.counts,
            Counter(self.sim.faults.counts),
            list(self.checker.violations),
            self.checker.takeovers,
            self.sim.events,
            tail,
        )

    def violated(self) -> None:
        """Stop at the first violation: the trace up to here is the evidence."""
        self.sim.stop()


@dataclass(slots=True)
class _Holder:
    mode: str
    result: paxos.AcquireResult
    sigterm_sent: bool = False  # a holder that ignored it lives until SIGKILL
    busy: bool = False  # a convert or release is running


@dataclass
class _Daemon:
    """One host's daemon, supervisor and workload."""

    cluster: Cluster
    index: int
    host: Host = field(init=False)
    name: str = field(init=False)
    state: str = "down"  # down | joining | live | recovering
    lease: delta.DeltaLease | None = None
    view: HostView | None = None
    holders: dict[int, _Holder] = field(default_factory=dict)
    acquiring: set[int] = field(default_factory=set)
    epoch: int = 0  # bumped at every join and crash: stale callbacks compare it
    watchdog_armed: int = 0  # the epoch/renewal the watchdog was last armed for; 0 = off
    renewals: int = 0

    def __post_init__(self) -> None:
        self.host = self.cluster.sim.add_host(
            f"h{self.index + 1}",
            io_timeout=float(self.cluster.config.io_timeout),
            on_restart=self._restarted,
        )
        self.host.on_crash = self._crashed
        self.name = f"host{self.index + 1}"
        self.rng = self.cluster.sim.rng(f"workload/{self.host.name}")
        self.wdmd_phase = self.rng.uniform(0, WDMD_TEST_INTERVAL)

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def sim(self) -> Simulation:
        return self.cluster.sim

    @property
    def t(self) -> Timeouts:
        return self.cluster.timeouts

    @property
    def host_id(self) -> int:
        ids = self.cluster.config.host_ids
        return self.index + 1 if ids is None else ids[self.index]

    @property
    def holder_name(self) -> str:
        return f"{self.host.name}/{self.epoch}"

    def _spawn(self, step: Step[Any], done: Callable[[Any], None], channel: str) -> None:
        if self.host.alive:
            self.sim.spawn(self.host, step, done, channel=channel)

    def _lockspace(self) -> delta.Lockspace:
        return delta.Lockspace(
            "LS",
            DISK,
            0,
            self.cluster.geometry,
            self.host_id,
            self.name,
            self.cluster.config.io_timeout,
        )

    # --- joining and renewing ---------------------------------------------------------------

    def start(self) -> None:
        self._join(delay=self.rng.uniform(0, 5))

    def _join(self, delay: float = 0.0) -> None:
        self.state = "joining"
        self.epoch += 1
        epoch = self.epoch
        ls = self._lockspace()

        def done(result: delta.DeltaLease | Exception) -> None:
            if epoch != self.epoch or not self.host.alive:
                return
            if isinstance(result, Exception):
                self.cluster.counts["join_failed"] += 1
                self.sim.call_later(
                    self.rng.uniform(*self.cluster.config.rejoin_delay),
                    lambda: self._retry_join(epoch),
                )
                return
            self._joined(ls, result)

        self.sim.call_later(delay, lambda: self._spawn(delta.acquire(ls), done, "ls"))

    def _retry_join(self, epoch: int) -> None:
        if epoch == self.epoch and self.host.alive and self.state == "joining":
            self._join()

    def _joined(self, ls: delta.Lockspace, lease: delta.DeltaLease) -> None:
        self.cluster.counts["join"] += 1
        self.lease = lease
        self.view = HostView(ls)
        self.state = "live"
        self._arm_watchdog()
        epoch = self.epoch
        self._spawn(self._renewal_loop(ls, epoch), _ignore, "ls")
        self._spawn(self._supervisor(epoch), _ignore, "supervisor")
        if self.cluster.config.workload:
            self._spawn(self._workload(epoch), _ignore, "workload")

    def _renewal_loop(self, ls: delta.Lockspace, epoch: int) -> Step[None]:
        previous_ok = True
        while self.state == "live" and epoch == self.epoch:
            assert self.lease is not None and self.view is not None
            wait = self.lease.last_success + self.t.renewal - (yield from now())
            if wait > 0:
                yield from sleep(wait)
            if self.state != "live" or epoch != self.epoch:
                return
            try:
                result = yield from delta.renew(
                    ls,
                    self.lease,
                    bitmap=self.view.renewal_bitmap((yield from now())),
                    previous_ok=previous_ok,
                )
            except _IO_ERRORS:
                self.cluster.counts["renew_failed"] += 1
                previous_ok = False
                yield from sleep(0.5)
                continue
            except (RenewOwner, RenewDiff):
                self.cluster.counts["renew_corrupt"] += 1
                self._recover()
                return
            if self.state != "live" or epoch != self.epoch:
                return  # too late: recovery has begun; a late success does not undo it
            self.cluster.counts["renew"] += 1
            previous_ok = True
            self.lease = result.lease
            self.view.update(result.area, (yield from now()))
            self._arm_watchdog()

    # --- fencing ----------------------------------------------------------------------------

    def _supervisor(self, epoch: int) -> Step[None]:
        """The daemon's main loop: start recovery at 8N, then kill until the holders are gone."""
        while epoch == self.epoch and self.state in ("live", "recovering"):
            host_now = yield from now()
            assert self.lease is not None
            age = host_now - self.lease.last_success
            if self.state == "live" and age >= self.t.renewal_fail and self.cluster.config.fencing:
                self._recover()
            if self.state == "recovering":
                sigkill = age >= self.t.sigkill_after
                for r, holder in list(self.holders.items()):
                    if sigkill:
                        self._holder_dead(r)
                    elif not holder.sigterm_sent:
                        holder.sigterm_sent = True
                        if not self._ignores_sigterm():
                            self._holder_dead(r)
                if not self.holders:
                    self._stopped_cleanly()
                    return
                yield from sleep(0.2)
            else:
                yield from sleep(1.0)

    def _ignores_sigterm(self) -> bool:
        return self.rng.random() < self.cluster.config.sigterm_ignored

    def _recover(self) -> None:
        self.cluster.counts["recovery"] += 1
        self.state = "recovering"
        self.sim.note(self.host, "recovery")

    def _stopped_cleanly(self) -> None:
        """Every holder is dead: disarm the watchdog, leave, and join again later."""
        self.watchdog_armed = 0
        self.state = "down"
        self.sim.note(self.host, "lockspace_stopped")
        self._join(delay=self.rng.uniform(*self.cluster.config.rejoin_delay))

    def _arm_watchdog(self) -> None:
        """wdmd: reset the host 60 s after the first test that finds the renewal expired."""
        if not self.cluster.config.fencing or self.lease is None:
            return
        self.renewals += 1
        token = self.renewals
        self.watchdog_armed = token
        expire = self.lease.last_success + self.t.watchdog_expire
        first_failing = expire - WDMD_TEST_INTERVAL
        tests = math.ceil((first_failing - self.wdmd_phase) / WDMD_TEST_INTERVAL)
        fire_host = self.wdmd_phase + tests * WDMD_TEST_INTERVAL + self.t.watchdog_fire_timeout
        fire = max(self.host.clock.true_at(fire_host), self.sim.now)
        self.sim.schedule(fire, lambda: self._watchdog_fires(token))

    def _watchdog_fires(self, token: int) -> None:
        if self.watchdog_armed != token or not self.host.alive:
            return
        self.cluster.counts["watchdog_fire"] += 1
        self.sim.note(self.host, "watchdog_reset")
        low, high = self.cluster.config.restart_delay
        self.sim.crash(self.host, restart_after=self.rng.uniform(low, high))

    def _crashed(self, _host: Host) -> None:
        for r in list(self.holders):
            self._holder_dead(r)
        self.acquiring.clear()
        self.watchdog_armed = 0
        self.state = "down"
        self.epoch += 1

    def _restarted(self, _host: Host) -> None:
        if self.rng.random() < self.cluster.config.new_name_probability:
            self.name = f"host{self.index + 1}-{self.host.incarnation}"
        self._join(delay=self.rng.uniform(0, 5))

    def _holder_dead(self, r: int) -> None:
        self.holders.pop(r, None)
        self.cluster.checker.drop(f"R{r}", self.holder_name)

    # --- the workload -----------------------------------------------------------------------

    def _workload(self, epoch: int) -> Step[None]:
        config = self.cluster.config
        while self.state == "live" and epoch == self.epoch:
            yield from sleep(self.rng.uniform(*config.think))
            if self.state != "live" or epoch != self.epoch:
                return
            r = self.rng.randrange(config.resources)
            holder = self.holders.get(r)
            if holder is not None:
                if not holder.busy and self.rng.random() < config.convert_probability:
                    self._convert(r, holder, epoch)
                continue
            if r in self.acquiring:
                continue
            self._acquire(r, epoch)

    def _paxos_host(self) -> paxos.Host:
        assert self.lease is not None
        return paxos.Host(self.host_id, self.lease.generation)

    def _liveness(self, nowait: bool | None = None) -> dict[str, Any]:
        assert self.view is not None
        view = self.view
        observations = {}
        for host_id in range(1, self.cluster.config.hosts + 1):
            observations[host_id] = OwnerObservation.of(view.status(host_id))
        return {
            "lockspace": LockspaceDisk(DISK, 0, self.cluster.geometry, self.t.io_timeout),
            "owner_observations": observations,
            "is_alive": lambda h, g: view.is_alive(h, g, self.host.clock_now()),
            "read_pattern": self.cluster.config.read_pattern,
            "owner_nowait": (
                self.rng.random() < self.cluster.config.nowait_probability
                if nowait is None
                else nowait
            ),
        }

    def _acquire(
        self, r: int, epoch: int, *, shared: bool | None = None, nowait: bool | None = None
    ) -> None:
        if shared is None:
            shared = self.rng.random() < self.cluster.config.shared_probability
        self.acquiring.add(r)
        step = paxos.acquire(
            self.cluster.resource(r),
            self._paxos_host(),
            rng=self.rng,
            shared=shared,
            **self._liveness(nowait),
        )

        def done(result: paxos.AcquireResult | Exception) -> None:
            self.acquiring.discard(r)
            if isinstance(result, Exception):
                self._failed("acquire", result)
                return
            if epoch != self.epoch or self.state != "live":
                return  # the process is killed at once: it never used the lease
            self.cluster.counts["acquire"] += 1
            mode = "SH" if result.shared else "EX"
            self._hold(r, mode, result)
            if self.cluster.config.workload:
                self.sim.call_later(
                    self.rng.uniform(*self.cluster.config.hold), lambda: self._release(r, epoch)
                )

        self._spawn(step, done, f"r{r}")

    def _hold(self, r: int, mode: str, result: paxos.AcquireResult) -> None:
        checker = self.cluster.checker
        if mode == "EX":
            checker.committed(self.sim.now, f"R{r}", self.host.name, self.cluster.area(r))
        self.holders[r] = _Holder(mode, result)
        checker.hold(self.sim.now, f"R{r}", self.holder_name, mode)
        if checker.violations:
            self.cluster.violated()

    def _convert(self, r: int, holder: _Holder, epoch: int) -> None:
        holder.busy = True
        resource = self.cluster.resource(r)
        if holder.mode == "EX":
            # The process gives up exclusive use when it asks to downgrade: once our SHARED
            # block and RELEASED flag land (the first write of 6.8), another host may take
            # the lease shared while this conversion is still running, and whatever the
            # outcome the process cannot tell whether they landed. It counts as SH from here.
            self.cluster.checker.hold(self.sim.now, f"R{r}", self.holder_name, "SH")
            step = paxos.convert_to_shared(
                resource, self._paxos_host(), holder.result.leader, holder.result.dblock
            )
        else:
            step = paxos.convert_to_exclusive(
                resource, self._paxos_host(), rng=self.rng, **self._liveness()
            )

        def done(result: paxos.AcquireResult | Exception) -> None:
            holder.busy = False
            if self.holders.get(r) is not holder or epoch != self.epoch:
                return
            if isinstance(result, Exception):
                self._failed("convert", result)
                return
            self.cluster.counts["convert"] += 1
            if result.shared:  # the exclusive lease was freed, not abandoned
                self.cluster.checker.released(f"R{r}", self.host.name)
            self._hold(r, "SH" if result.shared else "EX", result)

        self._spawn(step, done, f"r{r}")

    def _release(self, r: int, epoch: int) -> None:
        holder = self.holders.get(r)
        if holder is None or epoch != self.epoch or holder.busy:
            if holder is not None and holder.busy:  # try again once the convert is over
                self.sim.call_later(1.0, lambda: self._release(r, epoch))
            return
        self._holder_dead(r)  # the process exits first; then the daemon releases
        if self.state != "live":
            return  # a dead lockspace writes nothing (8.2)
        shared = holder.mode == "SH"
        result = holder.result
        step = paxos.release(
            self.cluster.resource(r),
            self._paxos_host(),
            result.leader,
            result.dblock,
            shared=shared,
        )

        def done(outcome: object) -> None:
            if isinstance(outcome, Exception):
                self._failed("release", outcome)
                return
            self.cluster.counts["release"] += 1
            if not shared:
                self.cluster.checker.released(f"R{r}", self.host.name)

        self._spawn(step, done, f"r{r}")

    # --- explicit actions (a test's schedule, with ``workload=False``) ----------------------

    def request_acquire(self, r: int, *, shared: bool, nowait: bool) -> bool:
        """A new process asks for lease ``r`` (``nowait``: owner_nowait) and, once it has it,
        holds it until :meth:`request_release` or until it is killed. False, and nothing done,
        unless the lockspace is joined and this host neither holds nor is acquiring ``r``."""
        if self.state != "live" or r in self.holders or r in self.acquiring:
            return False
        self._acquire(r, self.epoch, shared=shared, nowait=nowait)
        return True

    def request_release(self, r: int) -> bool:
        """The holder of lease ``r`` exits and the daemon releases it; False if none is idle."""
        holder = self.holders.get(r)
        if holder is None or holder.busy:
            return False
        self._release(r, self.epoch)
        return True

    def request_convert(self, r: int) -> bool:
        """The holder of lease ``r`` converts it (EX to SH, SH to EX); False if it cannot."""
        holder = self.holders.get(r)
        if holder is None or holder.busy or self.state != "live":
            return False
        self._convert(r, holder, self.epoch)
        return True

    def _failed(self, what: str, error: Exception) -> None:
        if isinstance(error, TaskCancelled):
            return
        self.cluster.counts[f"{what}_failed"] += 1
        if not isinstance(error, SyncManagerError):
            raise error  # a bug in the core or the model: never hide it
        self.cluster.counts[f"{what}_error_{type(error).__name__}"] += 1


def _ignore(_result: object) -> None:
    """Long-running loops end by themselves; a failure there is a bug and is re-raised."""
    if isinstance(_result, Exception) and not isinstance(_result, TaskCancelled):
        raise _result
