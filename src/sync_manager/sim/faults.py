"""The fault plan of a simulation: what goes wrong, how often, and when.

A :class:`FaultPlan` is plain data: knobs for random faults (drawn from the simulation's seed,
so a run replays exactly) and explicit faults for tests (:class:`IORule`, :class:`LostPath`,
:class:`HostCrash`, :class:`HostPause`). The engine (``sim/engine.py``) asks a
:class:`FaultInjector`, built from the plan and the seed, for the fate of each I/O when the I/O
starts, and counts every fault it injects in :attr:`FaultInjector.counts`.

The faults, and why each is realistic:

* latency: every I/O takes ``latency`` seconds (uniform), and a fraction ``tail_probability``
  takes a long-tailed time instead (log-uniform over ``tail_latency``), as a busy SAN does;
* EIO: a fraction ``eio_probability`` of I/Os fail; a failing write may have landed some of its
  sectors first (``partial_write_on_eio``), as a real device may;
* hung I/O: a fraction ``hang_probability`` of I/Os sit in the device queue until a heal time
  (``hang_heal`` after they started) or forever (``hang_heal=None``); they are then carried out,
  so a write its issuer gave up on long ago still lands (abandoned I/O);
* lost path: a host loses its path to one disk for an interval; its I/O to that disk stalls
  until the path comes back (``mode="hang"``, multipath ``queue_if_no_path``) or fails with EIO
  (``mode="error"``);
* host crash (all its tasks stop; its in-flight writes may still land), optionally restarted
  later; host pause (its tasks make no progress for a while; time and I/O go on).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from sync_manager.errors import UsageError

__all__ = [
    "FaultInjector",
    "FaultPlan",
    "HostCrash",
    "HostPause",
    "IOFate",
    "IORule",
    "LostPath",
    "Op",
    "PathMode",
]

Op = Literal["read", "write"]
PathMode = Literal["hang", "error"]
Outcome = Literal["ok", "eio", "hang"]


@dataclass(frozen=True, slots=True)
class IORule:
    """An explicit fate for the I/Os that match it (the first matching rule wins).

    An I/O matches when its host, disk and op match (None matches any) and it starts (leaves
    its host's queue for the device) in the true-time window ``[start, end)``. ``count`` limits
    the rule to that many I/Os. ``latency`` replaces the drawn latency. ``outcome`` is ``"ok"``,
    ``"eio"`` (the I/O fails at the end of its latency; a write lands the sectors whose turn
    came before that) or ``"hang"`` (the I/O waits ``heal_after`` seconds, or forever when None,
    before the device carries it out).
    """

    host: str | None = None
    disk: str | None = None
    op: Op | None = None
    start: float = 0.0
    end: float = math.inf
    count: int | None = None
    latency: float | None = None
    outcome: Outcome = "ok"
    heal_after: float | None = None

    def matches(self, host: str, disk: str, op: Op, now: float) -> bool:
        """Whether an I/O of ``op`` by ``host`` on ``disk`` starting at ``now`` matches."""
        return (
            (self.host is None or self.host == host)
            and (self.disk is None or self.disk == disk)
            and (self.op is None or self.op == op)
            and self.start <= now < self.end
        )


@dataclass(frozen=True, slots=True)
class LostPath:
    """``host`` cannot reach ``disk`` during the true-time interval ``[start, end)``."""

    host: str
    disk: str
    start: float
    end: float = math.inf
    mode: PathMode = "hang"

    def __post_init__(self) -> None:
        if not self.start < self.end:
            raise UsageError(f"lost path interval [{self.start}, {self.end}) is empty")


@dataclass(frozen=True, slots=True)
class HostCrash:
    """``host`` crashes at true time ``at``; it comes back ``restart_after`` later if given."""

    host: str
    at: float
    restart_after: float | None = None


@dataclass(frozen=True, slots=True)
class HostPause:
    """``host``'s tasks make no progress during the true-time interval ``[at, at + duration)``."""

    host: str
    at: float
    duration: float


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What goes wrong in a simulation. The default plan injects nothing but small latencies.

    Rates (``*_mtbf``) are mean true seconds between two occurrences per host (per host and
    disk for lost paths), drawn as a Poisson process; None turns the fault off. Durations and
    latencies given as ``(low, high)`` are drawn uniformly from that range, except the tail
    latency, which is log-uniform.
    """

    latency: tuple[float, float] = (0.0001, 0.002)
    tail_probability: float = 0.0
    tail_latency: tuple[float, float] = (0.1, 30.0)
    eio_probability: float = 0.0
    partial_write_on_eio: bool = True
    hang_probability: float = 0.0
    hang_heal: tuple[float, float] | None = (20.0, 300.0)
    crash_mtbf: float | None = None
    restart_delay: tuple[float, float] | None = (5.0, 120.0)
    pause_mtbf: float | None = None
    pause_duration: tuple[float, float] = (1.0, 200.0)
    lost_path_mtbf: float | None = None
    lost_path_duration: tuple[float, float] = (1.0, 300.0)
    lost_path_mode: PathMode = "hang"
    rules: tuple[IORule, ...] = ()
    lost_paths: tuple[LostPath, ...] = ()
    crashes: tuple[HostCrash, ...] = ()
    pauses: tuple[HostPause, ...] = ()

    def __post_init__(self) -> None:
        for name in ("tail_probability", "eio_probability", "hang_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UsageError(f"{name} must be in [0, 1], not {value}")
        ranges: list[tuple[str, tuple[float, float] | None]] = [
            ("latency", self.latency),
            ("tail_latency", self.tail_latency),
            ("hang_heal", self.hang_heal),
            ("restart_delay", self.restart_delay),
            ("pause_duration", self.pause_duration),
            ("lost_path_duration", self.lost_path_duration),
        ]
        for name, pair in ranges:
            if pair is not None and not 0.0 <= pair[0] <= pair[1] < math.inf:
                raise UsageError(f"{name} must be a range 0 <= low <= high, not {pair}")
        if self.tail_latency[0] <= 0.0:
            raise UsageError("tail_latency must start above 0 (it is drawn log-uniformly)")
        for name in ("crash_mtbf", "pause_mtbf", "lost_path_mtbf"):
            value = getattr(self, name)
            if value is not None and not value > 0.0:
                raise UsageError(f"{name} must be positive or None, not {value}")


@dataclass(slots=True)
class IOFate:
    """What the device will do with one I/O, decided when the I/O starts.

    The device holds the I/O for ``stall`` seconds (inf: forever), then transfers it over
    ``latency`` seconds. If ``fail_at`` is not None the I/O fails with EIO at that fraction of
    the transfer (a write has landed the pieces whose turn came before). ``lost_path`` is the
    lost-path interval that disturbs it, if any.
    """

    latency: float
    stall: float = 0.0
    fail_at: float | None = None
    lost_path: LostPath | None = None
    faults: list[str] = field(default_factory=list)


class FaultInjector:
    """Draws I/O fates and host faults from a plan and a seed; counts what it injects.

    Every random draw comes from a ``random.Random`` derived from ``seed`` and a fixed purpose
    string, so a run replays exactly and adding a host does not change the draws of another.
    """

    def __init__(self, plan: FaultPlan, seed: int) -> None:
        self.plan = plan
        self.seed = seed
        self.counts: Counter[str] = Counter()
        self._io_rngs: dict[str, random.Random] = {}
        self._rule_uses = [0] * len(plan.rules)
        self._explicit_paths: dict[tuple[str, str], list[LostPath]] = {}
        self._random_paths: dict[tuple[str, str], _PathSchedule] = {}
        for lost in plan.lost_paths:
            self.add_lost_path(lost)

    def rng(self, purpose: str) -> random.Random:
        """A new generator for ``purpose``, derived from the seed (str seeds hash stably)."""
        return random.Random(f"{self.seed}/{purpose}")

    def add_lost_path(self, lost: LostPath) -> None:
        """Add an explicit lost path; it affects the I/Os that start after this call."""
        paths = self._explicit_paths.setdefault((lost.host, lost.disk), [])
        paths.append(lost)
        paths.sort(key=lambda p: (p.start, p.end))

    def io_fate(self, host: str, disk: str, op: Op, now: float) -> IOFate:
        """The fate of an I/O by ``host`` on ``disk`` that starts at true time ``now``."""
        plan = self.plan
        rng = self._io_rngs.get(host)
        if rng is None:
            rng = self._io_rngs[host] = self.rng(f"io/{host}")
        low, high = plan.latency
        fate = IOFate(latency=rng.uniform(low, high))
        if plan.tail_probability and rng.random() < plan.tail_probability:
            tlow, thigh = plan.tail_latency
            fate.latency = math.exp(rng.uniform(math.log(tlow), math.log(thigh)))
            fate.faults.append("tail_latency")
        rule = self._match_rule(host, disk, op, now)
        if rule is not None:
            fate.faults.append("rule")
            if rule.latency is not None:
                fate.latency = rule.latency
            if rule.outcome == "eio":
                fate.fail_at = 1.0
                fate.faults.append("eio")
            elif rule.outcome == "hang":
                fate.stall = math.inf if rule.heal_after is None else rule.heal_after
                fate.faults.append("hang")
        elif plan.eio_probability and rng.random() < plan.eio_probability:
            partial = op == "write" and plan.partial_write_on_eio
            fate.fail_at = rng.random() if partial else 1.0
            fate.faults.append("eio")
        elif plan.hang_probability and rng.random() < plan.hang_probability:
            heal = plan.hang_heal
            fate.stall = math.inf if heal is None else rng.uniform(*heal)
            fate.faults.append("hang")
        window_end = now + fate.stall + fate.latency
        if math.isfinite(window_end):  # an I/O hung forever meets no path fault that matters
            fate.lost_path = self.lost_path(host, disk, now, window_end)
        if fate.lost_path is not None:
            fate.faults.append(f"lost_path_{fate.lost_path.mode}")
        for name in fate.faults:
            if name != "rule":
                self.counts[name] += 1
        return fate

    def _match_rule(self, host: str, disk: str, op: Op, now: float) -> IORule | None:
        for index, rule in enumerate(self.plan.rules):
            if rule.matches(host, disk, op, now):
                if rule.count is not None and self._rule_uses[index] >= rule.count:
                    continue
                self._rule_uses[index] += 1
                return rule
        return None

    def lost_path(self, host: str, disk: str, start: float, end: float) -> LostPath | None:
        """The first lost-path interval of ``host`` to ``disk`` that meets ``[start, end]``.

        ``end`` must be finite (random intervals are generated up to it).
        """
        best: LostPath | None = None
        for lost in self._explicit_paths.get((host, disk), ()):
            if lost.end > start and lost.start <= end:
                best = lost
                break
        if self.plan.lost_path_mtbf is not None:
            schedule = self._random_paths.get((host, disk))
            if schedule is None:
                schedule = self._random_paths[(host, disk)] = _PathSchedule(
                    self.plan.lost_path_mtbf,
                    self.plan,
                    self.rng(f"lost_path/{host}/{disk}"),
                    host,
                    disk,
                )
            found = schedule.first_meeting(start, end)
            if found is not None and (best is None or found.start < best.start):
                best = found
        return best


class _PathSchedule:
    """Random lost-path intervals of one (host, disk) pair, generated lazily in time order.

    The sequence depends only on the seed and the pair, never on when it is asked for, so an
    I/O that starts before an interval is generated sees the same interval as any later one.
    """

    def __init__(
        self, mtbf: float, plan: FaultPlan, rng: random.Random, host: str, disk: str
    ) -> None:
        self.mtbf = mtbf
        self.duration = plan.lost_path_duration
        self.mode: PathMode = plan.lost_path_mode
        self.rng = rng
        self.host = host
        self.disk = disk
        self.intervals: list[LostPath] = []
        self.horizon = 0.0  # the end of the last interval generated

    def first_meeting(self, start: float, end: float) -> LostPath | None:
        while self.horizon <= end:
            begin = self.horizon + self.rng.expovariate(1.0 / self.mtbf)
            length = max(self.rng.uniform(*self.duration), 1e-9)
            self.intervals.append(LostPath(self.host, self.disk, begin, begin + length, self.mode))
            self.horizon = begin + length
        # Intervals end before ``start`` are never needed again: I/O starts never go back.
        while self.intervals and self.intervals[0].end <= start:
            self.intervals.pop(0)
        for lost in self.intervals:
            if lost.start > end:
                return None
            if lost.end > start:
                return lost
        return None
