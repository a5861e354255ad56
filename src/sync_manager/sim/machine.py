"""The simulator's machines and the work on them: :class:`Host` (a clock, a default I/O
timeout, its tasks and I/O channels) and :class:`Task` (a core Step running on a host). The
:class:`~sync_manager.sim.engine.Simulation` creates and drives both."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sync_manager.core.effects import Step
from sync_manager.sim.clock import HostClock

if TYPE_CHECKING:
    from sync_manager.sim.engine import Simulation
    from sync_manager.sim.storage import Channel, IORequest

__all__ = ["Host", "Task", "TaskCancelled"]

T = TypeVar("T")


class TaskCancelled(Exception):
    """Passed to ``on_done`` of a task that was cancelled."""


class Task(Generic[T]):
    """A Step running on a host. ``state`` tells where it is; see :meth:`Simulation.spawn`.

    States: ``"ready"`` (a resume is scheduled), ``"sleeping"``, ``"io"``, and the final
    ``"done"`` (returned; ``result``), ``"failed"`` (raised; ``error``), ``"cancelled"``,
    ``"crashed"`` (its host crashed).
    """

    __slots__ = (
        "_gen",
        "_on_done",
        "_running",
        "_sim",
        "_stop",
        "channel",
        "error",
        "host",
        "id",
        "io",
        "name",
        "result",
        "state",
        "token",
    )

    def __init__(
        self,
        sim: Simulation,
        host: Host,
        gen: Step[T],
        *,
        ident: int,
        on_done: Callable[[T | Exception], None] | None,
        channel: str,
        name: str,
    ) -> None:
        self._sim = sim
        self.id = ident
        self.host = host
        self._gen: Step[T] | None = gen
        self._on_done = on_done
        self.channel = channel
        self.name = name
        self.state = "ready"
        self.token = 0  # bumped at each resume: stale wake-ups carry an older token
        self.io: IORequest | None = None
        self.result: T | None = None
        self.error: Exception | None = None
        self._running = False
        self._stop: str | None = None  # a stop requested while the step was running

    @property
    def finished(self) -> bool:
        """Whether the task has stopped for good (done, failed, cancelled or crashed)."""
        return self.state in ("done", "failed", "cancelled", "crashed")

    def cancel(self) -> None:
        """Stop the task at its current ``yield``; ``on_done`` gets :class:`TaskCancelled`."""
        self._sim.cancel(self)

    def __repr__(self) -> str:
        return f"Task({self.name} on {self.host.name}: {self.state})"


class Host:
    """A simulated machine: a clock, a default I/O timeout, and the tasks running on it."""

    __slots__ = (
        "_sim",
        "alive",
        "channels",
        "clock",
        "deferred",
        "incarnation",
        "io_rng",
        "io_timeout",
        "name",
        "on_crash",
        "on_restart",
        "pause_until",
        "paused",
        "tasks",
    )

    def __init__(
        self,
        sim: Simulation,
        name: str,
        clock: HostClock,
        io_timeout: float,
        on_restart: Callable[[Host], None] | None,
    ) -> None:
        self._sim = sim
        self.name = name
        self.clock = clock
        self.io_timeout = io_timeout
        self.on_restart = on_restart
        self.on_crash: Callable[[Host], None] | None = None  # told when the host goes down
        self.alive = True
        self.incarnation = 0
        self.paused = False
        self.pause_until = 0.0
        self.tasks: dict[int, Task[Any]] = {}
        self.channels: dict[tuple[str, str], Channel] = {}
        self.deferred: list[tuple[Callable[[Any], None], Any]] = []
        self.io_rng = sim.rng(f"io-timing/{name}")

    def clock_now(self) -> float:
        """This host's monotonic clock now."""
        return self.clock.at(self._sim.now)

    def __repr__(self) -> str:
        state = "crashed" if not self.alive else "paused" if self.paused else "up"
        return f"Host({self.name} {state}, {len(self.tasks)} tasks)"
