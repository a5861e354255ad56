"""The deterministic simulator engine: an event heap, hosts with drifting clocks, tasks, I/O.

Everything is decided by one integer seed. Events sit in a heap ordered by (true time, a
seeded random tie-break, a sequence number), so events at the same instant run in an order
that varies with the seed but never between two runs with the same seed. Every random draw
comes from a ``random.Random`` derived from the seed and a fixed purpose string (never the
global generator, never the wall clock, never ``hash()`` of a string, never set order).

**Hosts** each read their own monotonic clock (``sim/clock.py``). A host can crash (its tasks
stop forever, its queued I/O is never issued, its in-flight I/O still completes and its writes
still land), be paused (its tasks make no progress; time passes and I/O completes; whatever
they were waiting for is delivered when the pause ends) and restart (a new incarnation: new
tasks, new I/O queues, the same clock).

**Tasks** run any core Step (a generator of effects, ``core/effects.py``) on a host. ``Now``
resumes at once with the host's clock; ``Sleep(s)`` wakes when the *host's* clock has advanced
by ``s``; ``Read``/``Write`` become I/O requests as below. When the step returns or raises,
``on_done`` is called with the value or the exception. A task can be cancelled.

**I/O timing semantics**, modelled on real shared storage:

* *One outstanding I/O per (host, disk, channel)*: a request waits in its channel's queue
  while an earlier one (possibly abandoned after a timeout) is still in flight, as the real
  driver does. The default channel is ``""``, so one outstanding I/O per (host, disk).
* *Deadline*: each request has a deadline of ``timeout`` seconds of host time from its issue
  (``effect.timeout``, else the host's ``io_timeout``); queueing counts against it. If the
  request has not completed by then, ``IOTimeout`` is thrown into the step at its ``yield``.
  A queued request that times out is never issued; one in flight is *abandoned*: it still
  occupies its channel, and a write still lands when the device gets to it.
* *Fate*: when a request leaves the queue the fault plan (``sim/faults.py``) decides its
  latency ``L``, a stall (hung I/O: the device holds it for a while, or forever), a failure
  point (EIO) and any lost-path interval that disturbs it. That gives a timeline: fraction
  ``u`` in [0, 1) of the transfer happens at ``start + stall + u * L``, shifted by the part of
  a lost-path interval during which the device could make no progress.
* *Sector-atomic writes*: a write is cut into pieces (one per sector, or ``max_pieces``
  contiguous runs of sectors for long writes); each piece lands at its own random point of the
  timeline, in random order, and completion (the ack) comes after the last. A failing write
  lands the pieces whose turn came before the failure.
* *Reads see either side of concurrent writes*: each sector of a read is sampled at its own
  point of the read's timeline, so a read overlapping an in-flight write returns, per sector,
  old or new contents, as timing decides; reads are not atomic snapshots of several sectors.
  (A read takes a copy when it starts and re-applies every piece that lands before the sample
  point of each sector it covers, so only the sectors that writes touch cost anything; the
  arithmetic lives in ``sim/storage.py``.)
* *Pause*: a paused host's I/O completes on time, but the task sees the outcome only when the
  pause ends: success if the I/O completed by then (even past its deadline, as with
  ``io_getevents`` after a SIGSTOP), else the timeout.

The **trace** is a list of ``(true time, host, kind, details)`` tuples, cheap to record and
formatted only when printed; :meth:`Simulation.trace_digest` hashes it to compare runs.
"""

from __future__ import annotations

import errno
import math
import random
from collections.abc import Callable
from typing import Any, TypeVar

from sync_manager.core.effects import Now, Read, Sleep, Step, Write
from sync_manager.errors import DiskIOError, IOTimeout, SyncManagerError, UsageError
from sync_manager.sim.clock import DEFAULT_MAX_DRIFT, HostClock
from sync_manager.sim.disk import FakeDisk
from sync_manager.sim.events import EventLoop, TraceEntry, format_trace_entry, record_event
from sync_manager.sim.faults import FaultInjector, FaultPlan, LostPath, Op, PathMode
from sync_manager.sim.machine import Host, Task, TaskCancelled
from sync_manager.sim.storage import Channel, IORequest

__all__ = [
    "Host",
    "IORequest",
    "Simulation",
    "Task",
    "TaskCancelled",
    "TraceEntry",
    "format_trace_entry",
]

T = TypeVar("T")


class Simulation(EventLoop):
    """A deterministic run of hosts, disks and tasks from one seed. See the module docstring.

    ``max_drift`` bounds each host's clock rate error; ``max_pieces`` is the most pieces a
    write is cut into (one per sector up to that); ``trace=False`` records nothing (for
    benchmarks), ``trace_limit`` keeps only that many of the last entries.
    """

    def __init__(
        self,
        seed: int,
        faults: FaultPlan | None = None,
        *,
        max_drift: float = DEFAULT_MAX_DRIFT,
        max_pieces: int = 64,
        trace: bool = True,
        trace_limit: int | None = None,
    ) -> None:
        if max_pieces < 1:
            raise UsageError(f"max_pieces must be at least 1, not {max_pieces}")
        self.seed = seed
        self.plan = faults if faults is not None else FaultPlan()
        self.faults = FaultInjector(self.plan, seed)
        self.max_drift = max_drift
        self.max_pieces = max_pieces
        super().__init__(
            tie=self.rng("tie-break").getrandbits, trace=trace, trace_limit=trace_limit
        )
        self.hosts: dict[str, Host] = {}
        self.disks: dict[str, FakeDisk] = {}
        self._task_ids = 0
        self._io_ids = 0
        self._active_reads: dict[str, list[IORequest]] = {}
        self._graveyard: list[Step[Any]] = []
        for lost in self.plan.lost_paths:
            self._trace_lost_path(lost)

    # --- set-up ---------------------------------------------------------------------------

    def rng(self, purpose: str) -> random.Random:
        """A ``random.Random`` derived from the seed and ``purpose`` (for workloads, backoff)."""
        return self.faults.rng(purpose)

    def add_disk(self, disk: FakeDisk) -> FakeDisk:
        """Attach ``disk``; steps name it by ``disk.name``."""
        if disk.name in self.disks:
            raise UsageError(f"disk {disk.name!r} is already in the simulation")
        self.disks[disk.name] = disk
        return disk

    def add_host(
        self,
        name: str,
        *,
        io_timeout: float = 10.0,
        drift: float | None = None,
        offset: float | None = None,
        on_restart: Callable[[Host], None] | None = None,
    ) -> Host:
        """Add a host. Its clock's drift and offset are drawn from the seed unless given.

        ``on_restart`` is called (at the restart instant) each time the host restarts, to
        spawn its new tasks. The plan's explicit and random crashes and pauses of this host
        are scheduled here.
        """
        if name in self.hosts:
            raise UsageError(f"host {name!r} is already in the simulation")
        if not io_timeout > 0:
            raise UsageError(f"io_timeout must be positive, not {io_timeout}")
        draw = self.rng(f"clock/{name}")
        if drift is None:
            drift = draw.uniform(-self.max_drift, self.max_drift)
        if offset is None:
            offset = draw.uniform(100.0, 100_000.0)
        clock = HostClock(offset, drift, max_drift=self.max_drift)
        host = Host(self, name, clock, float(io_timeout), on_restart)
        self.hosts[name] = host
        self._record(name, "host", (round(offset, 6), drift))
        for crash in self.plan.crashes:
            if crash.host == name:
                self.crash(host, at=crash.at, restart_after=crash.restart_after)
        for pause in self.plan.pauses:
            if pause.host == name:
                self.pause(host, at=pause.at, duration=pause.duration)
        if self.plan.crash_mtbf is not None:
            self._arm_random_crash(host, self.rng(f"crash/{name}"), self.plan.crash_mtbf)
        if self.plan.pause_mtbf is not None:
            self._arm_random_pause(host, self.rng(f"pause/{name}"), self.plan.pause_mtbf)
        return host

    # --- tasks ----------------------------------------------------------------------------

    def spawn(
        self,
        host: Host,
        step: Step[T],
        on_done: Callable[[T | Exception], None] | None = None,
        *,
        channel: str = "",
        name: str | None = None,
        delay: float = 0.0,
    ) -> Task[T]:
        """Run ``step`` on ``host``, starting ``delay`` true seconds from now.

        ``on_done`` gets the step's return value, the exception it raised, or
        :class:`TaskCancelled`; it is not called when the host crashes. I/O is serialized
        per (host, disk, ``channel``).
        """
        if not host.alive:
            raise UsageError(f"cannot spawn on {host.name}: it is crashed")
        self._task_ids += 1
        task: Task[T] = Task(
            self,
            host,
            step,
            ident=self._task_ids,
            on_done=on_done,
            channel=channel,
            name=name or f"t{self._task_ids}",
        )
        host.tasks[task.id] = task
        self._record(host.name, "spawn", (task.name,))
        self._push(self.now + max(delay, 0.0), self._ev_wake, (task, task.token, None))
        return task

    def cancel(self, task: Task[Any]) -> None:
        """Stop ``task``: see :meth:`Task.cancel`. Cancelling a finished task does nothing."""
        if task.finished:
            return
        if task._running:
            task._stop = "cancelled"
            return
        self._stop_task(task, "cancelled")
        gen = task._gen
        task._gen = None
        if gen is not None:
            gen.close()
        self._record(task.host.name, "cancel", (task.name,))
        if task._on_done is not None:
            task._on_done(TaskCancelled(f"task {task.name} on {task.host.name} was cancelled"))

    def _stop_task(self, task: Task[Any], state: str) -> None:
        """Mark ``task`` finished; forget its pending wake-ups and unissued I/O."""
        task.state = state
        task.token += 1
        req = task.io
        task.io = None
        if req is not None:
            req.abandoned = True
            if req.state == "queued":
                req.state = "dropped"
                if req in req.channel.queue:
                    req.channel.queue.remove(req)
        task.host.tasks.pop(task.id, None)

    def _ev_wake(self, arg: tuple[Task[Any], int, object]) -> None:
        task, token, value = arg
        if task.token != token or task.finished:
            return
        if task.host.paused:
            task.host.deferred.append((self._ev_wake, arg))
            return
        self._drive(task, value, None)

    def _drive(self, task: Task[Any], value: object, exc: BaseException | None) -> None:
        """Resume ``task`` with ``value`` (or throw ``exc``) and carry out effects until it
        must wait for time or I/O, or finishes."""
        gen = task._gen
        assert gen is not None  # finished tasks are filtered out by the token checks
        host = task.host
        task.token += 1
        task.state = "ready"
        task.io = None
        task._running = True
        try:
            while True:
                try:
                    if exc is None:
                        effect = gen.send(value)
                    else:
                        effect = gen.throw(exc)
                        exc = None
                except StopIteration as stop:
                    task._running = False
                    if task._stop is None:
                        self._finish(task, "done", stop.value, None)
                    else:
                        self._honour_stop(task)
                    return
                except Exception as error:
                    task._running = False
                    if task._stop is None:
                        self._finish(task, "failed", None, error)
                    else:
                        self._honour_stop(task)
                    return
                if task._stop is not None:
                    task._running = False
                    self._honour_stop(task)
                    return
                if isinstance(effect, Now):
                    value = host.clock.at(self.now)
                elif isinstance(effect, Sleep):
                    seconds = effect.seconds
                    if math.isnan(seconds):
                        exc = UsageError(f"cannot sleep {seconds} seconds")
                        continue
                    task.state = "sleeping"
                    wake = self.now
                    if seconds > 0:
                        target = host.clock.at(self.now) + seconds
                        wake = max(self.now, host.clock.true_at(target))
                    self._record(host.name, "sleep", (task.name, seconds))
                    if wake != math.inf:
                        self._push(wake, self._ev_wake, (task, task.token, None))
                    return
                elif isinstance(effect, Read | Write):
                    invalid = self._issue(task, effect)
                    if invalid is None:
                        return
                    exc = invalid
                else:
                    exc = TypeError(f"a step yielded {effect!r}, which is not an effect")
        finally:
            task._running = False

    def _honour_stop(self, task: Task[Any]) -> None:
        reason = task._stop
        task._stop = None
        if reason == "crashed":
            self._bury(task)
        else:
            self.cancel(task)

    def _finish(self, task: Task[Any], state: str, result: object, error: Exception | None) -> None:
        self._stop_task(task, state)
        task._gen = None
        task.result = result
        task.error = error
        if error is None:
            self._record(task.host.name, "done", (task.name, type(result).__name__))
        else:
            self._record(task.host.name, "failed", (task.name, type(error).__name__, str(error)))
        if task._on_done is not None:
            task._on_done(result if error is None else error)

    def _bury(self, task: Task[Any]) -> None:
        """Stop a task of a crashed host without running any more of its code.

        Closing the generator would run its ``finally`` blocks (code of a dead host), and so
        would dropping the last reference to it; it is kept in a graveyard instead.
        """
        self._stop_task(task, "crashed")
        if task._gen is not None:
            self._graveyard.append(task._gen)
            task._gen = None

    # --- I/O ------------------------------------------------------------------------------

    def _issue(self, task: Task[Any], effect: Read | Write) -> Exception | None:
        """Queue or start the I/O of ``effect``; an error to throw in at once if invalid."""
        host = task.host
        disk = self.disks.get(effect.disk)
        if disk is None:
            return DiskIOError(effect.disk, "no such disk in the simulation", err=errno.ENODEV)
        if isinstance(effect, Read):
            op: Op = "read"
            length = effect.length
            data = None
        else:
            op = "write"
            data = bytes(effect.data)
            length = len(data)
        try:
            disk.check(effect.offset, length)
        except SyncManagerError as error:  # unaligned, or past the end of the disk
            return error
        timeout = host.io_timeout if effect.timeout is None else effect.timeout
        key = (disk.name, task.channel)
        channel = host.channels.get(key)
        if channel is None:
            channel = host.channels[key] = Channel(host, key)
        self._io_ids += 1
        req = IORequest(
            task,
            channel,
            disk,
            ident=self._io_ids,
            op=op,
            offset=effect.offset,
            length=length,
            data=data,
        )
        task.state = "io"
        task.io = req
        deadline = host.clock.true_at(host.clock.at(self.now) + timeout)
        self._record(host.name, op, (task.name, req.id, disk.name, effect.offset, length))
        if deadline != math.inf:
            self._push(max(deadline, self.now), self._ev_deliver, (task, task.token, req))
        if channel.busy is None:
            self._start(req)
        else:
            channel.queue.append(req)
            self._record(host.name, "io_queued", (req.id, channel.busy.id))
        return None

    def _start(self, req: IORequest) -> None:
        """The device takes ``req``: draw its fate and schedule what happens to it."""
        channel = req.channel
        channel.busy = req
        req.state = "in_flight"
        host = channel.host
        fate = self.faults.io_fate(host.name, req.disk.name, req.op, self.now)
        req.plan(fate, self.now)
        if fate.faults:
            self._record(host.name, "io_fault", (req.id, *fate.faults))
        if req.op == "write":
            req.disk.count_write(req.length)
            for when, index in req.cut(self.max_pieces, host.io_rng):
                self._push(when, self._ev_land, (req, index))
        else:
            req.seed = host.io_rng.getrandbits(64)
            req.buffer = bytearray(req.disk.read(req.offset, req.length))
            if req.end != math.inf and req.state == "in_flight":
                self._active_reads.setdefault(req.disk.name, []).append(req)
        self._push(req.end, self._ev_complete, req)

    def _ev_land(self, arg: tuple[IORequest, int]) -> None:
        """One piece of a write lands on the disk; reads in flight may see it."""
        req, index = arg
        piece = req.pieces[index]
        if piece[2]:
            return
        piece[2] = True
        offset: int = piece[0]
        data: bytes = piece[1]
        disk = req.disk
        disk.write_sector(offset, data)
        if req.abandoned and not req.landed_late:
            req.landed_late = True
            self.faults.counts["late_write"] += 1
            self._record(req.channel.host.name, "late_write", (req.id,))
        for reader in self._active_reads.get(disk.name, ()):
            if offset < reader.offset + reader.length and reader.offset < offset + len(data):
                reader.see(offset, data, self.now)

    def _ev_complete(self, req: IORequest) -> None:
        """The device is done with ``req``: success or EIO. Free its channel, tell its task."""
        failed = req.state == "failing"
        if req.op == "write":
            if not failed:
                for index, piece in enumerate(req.pieces):
                    if not piece[2]:
                        self._ev_land((req, index))
        else:
            readers = self._active_reads.get(req.disk.name)
            if readers and req in readers:
                readers.remove(req)
            if not failed:
                assert req.buffer is not None
                req.result = bytes(req.buffer)
            req.buffer = None
        req.state = "failed" if failed else "done"
        channel = req.channel
        host = channel.host
        self._record(host.name, "io_end", (req.id, req.state, req.abandoned))
        channel.busy = None
        if channel.queue and host.alive and host.channels.get(channel.key) is channel:
            if host.paused:
                host.deferred.append((self._ev_start_next, channel))
            else:
                self._ev_start_next(channel)
        task = req.task
        if task.io is req and not task.finished:
            self._ev_deliver((task, task.token, req))

    def _ev_start_next(self, channel: Channel) -> None:
        host = channel.host
        current = host.alive and host.channels.get(channel.key) is channel
        if current and channel.busy is None and channel.queue:
            self._start(channel.queue.popleft())

    def _ev_deliver(self, arg: tuple[Task[Any], int, IORequest]) -> None:
        """Tell a task how its I/O went: completion, EIO, or (at its deadline) a timeout."""
        task, token, req = arg
        if task.token != token or task.finished or task.io is not req:
            return
        host = task.host
        if host.paused:
            host.deferred.append((self._ev_deliver, arg))
            return
        if req.state == "done":
            self._drive(task, req.result, None)
        elif req.state == "failed":
            self.faults.counts["eio_thrown"] += 1
            self._drive(task, None, DiskIOError(req.disk.name, f"{req.op} failed", err=errno.EIO))
        else:
            req.abandoned = True
            if req.state == "queued":
                req.state = "dropped"
                req.channel.queue.remove(req)
            self.faults.counts["io_timeout"] += 1
            self._record(host.name, "io_timeout", (req.id, req.state))
            error = IOTimeout(
                req.disk.name, f"{req.op} at {req.offset} length {req.length} timed out"
            )
            self._drive(task, None, error)

    # --- host faults ----------------------------------------------------------------------

    def crash(
        self, host: Host, *, at: float | None = None, restart_after: float | None = None
    ) -> None:
        """Crash ``host`` at true time ``at`` (now if None); restart it later if asked."""
        when = self._when(at)
        self._push(when, self._ev_crash, (host, restart_after))

    def _ev_crash(self, arg: tuple[Host, float | None]) -> None:
        host, restart_after = arg
        if host.alive:
            self._crash_now(host)
        if restart_after is not None:
            self._push(self.now + restart_after, self._ev_restart, host)

    def _crash_now(self, host: Host) -> None:
        self.faults.counts["crash"] += 1
        self._record(host.name, "crash", (len(host.tasks),))
        host.alive = False
        host.paused = False
        host.deferred = []
        for task in list(host.tasks.values()):
            if task._running:
                task._stop = "crashed"
            else:
                self._bury(task)
        for channel in host.channels.values():
            for req in channel.queue:
                req.state = "dropped"
                req.abandoned = True
            channel.queue.clear()
            if channel.busy is not None:
                channel.busy.abandoned = True
        host.channels = {}
        if host.on_crash is not None:
            host.on_crash(host)

    def restart(self, host: Host, *, at: float | None = None) -> None:
        """Restart ``host`` at ``at`` (crashing it first if it is up); calls its on_restart."""
        self._push(self._when(at), self._ev_restart, host)

    def _ev_restart(self, host: Host) -> None:
        if host.alive:
            self._crash_now(host)
        self.faults.counts["restart"] += 1
        host.alive = True
        host.incarnation += 1
        host.paused = False
        host.pause_until = 0.0
        self._record(host.name, "restart", (host.incarnation,))
        if host.on_restart is not None:
            host.on_restart(host)

    def pause(self, host: Host, *, duration: float, at: float | None = None) -> None:
        """Pause ``host``'s tasks during ``[at, at + duration)`` (true time)."""
        if not duration >= 0:
            raise UsageError(f"pause duration must be non-negative, not {duration}")
        self._push(self._when(at), self._ev_pause, (host, duration))

    def _ev_pause(self, arg: tuple[Host, float]) -> None:
        host, duration = arg
        if not host.alive:
            return
        self.faults.counts["pause"] += 1
        until = self.now + duration
        self._record(host.name, "pause", (duration,))
        host.pause_until = max(host.pause_until, until)
        if not host.paused:
            host.paused = True
            if host.pause_until != math.inf:
                self._push(host.pause_until, self._ev_unpause, (host, host.incarnation))

    def _ev_unpause(self, arg: tuple[Host, int]) -> None:
        host, incarnation = arg
        if not host.paused or host.incarnation != incarnation:
            return
        if self.now < host.pause_until:
            if host.pause_until != math.inf:
                self._push(host.pause_until, self._ev_unpause, arg)
            return
        host.paused = False
        self._record(host.name, "unpause", (len(host.deferred),))
        deferred = host.deferred
        host.deferred = []
        for fn, value in deferred:
            self._push(self.now, fn, value)

    def lose_path(
        self,
        host: Host,
        disk: str,
        *,
        at: float | None = None,
        duration: float = math.inf,
        mode: PathMode = "hang",
    ) -> None:
        """``host`` loses its path to ``disk`` during ``[at, at + duration)``.

        I/O timelines are fixed when the I/O starts, so declare a lost path before the I/O it
        must disturb starts (an I/O already in flight is not affected).
        """
        start = self._when(at)
        lost = LostPath(host.name, disk, start, start + duration, mode)
        self.faults.add_lost_path(lost)
        self._trace_lost_path(lost)

    def _trace_lost_path(self, lost: LostPath) -> None:
        self.faults.counts["lost_path"] += 1
        lost_detail = (lost.disk, lost.mode)
        self._push(lost.start, record_event, (self, lost.host, "path_lost", lost_detail))
        if lost.end != math.inf:
            self._push(lost.end, record_event, (self, lost.host, "path_back", (lost.disk,)))

    def _arm_random_crash(self, host: Host, rng: random.Random, mtbf: float) -> None:
        """Crash ``host`` after a random delay, restart it after another, and so on."""
        delay = rng.expovariate(1.0 / mtbf)
        restart = self.plan.restart_delay

        def fire(_: object) -> None:
            if not host.alive:  # someone else crashed it: try again later
                self._arm_random_crash(host, rng, mtbf)
                return
            self._crash_now(host)
            if restart is not None:
                self._push(self.now + rng.uniform(*restart), _restart_and_rearm, (self, host, rng))

        self._push(self.now + delay, fire, None)

    def _arm_random_pause(self, host: Host, rng: random.Random, mtbf: float) -> None:
        """Pause ``host`` after a random delay for a random duration, and so on."""
        delay = rng.expovariate(1.0 / mtbf)
        duration = rng.uniform(*self.plan.pause_duration)

        def fire(_: object) -> None:
            self._ev_pause((host, duration))
            self._push(self.now + duration, lambda _: self._arm_random_pause(host, rng, mtbf), None)

        self._push(self.now + delay, fire, None)

    # --- trace ---------------------------------------------------------------------------

    def note(self, host: Host | str, kind: str, *detail: object) -> None:
        """Add a workload event (e.g. "acquired") to the trace."""
        self._record(host if isinstance(host, str) else host.name, kind, detail)

    def summary(self) -> str:
        """One line: time, events, hosts up, and every fault injected, by kind."""
        up = sum(1 for host in self.hosts.values() if host.alive)
        faults = ", ".join(f"{kind}={n}" for kind, n in sorted(self.faults.counts.items()))
        return (
            f"seed {self.seed}: t={self.now:.3f}s, {self.events} events, "
            f"{up}/{len(self.hosts)} hosts up, faults: {faults or 'none'}"
        )


def _restart_and_rearm(arg: tuple[Simulation, Host, random.Random]) -> None:
    sim, host, rng = arg
    if not host.alive:
        sim._ev_restart(host)
    mtbf = sim.plan.crash_mtbf
    if mtbf is not None:
        sim._arm_random_crash(host, rng, mtbf)
