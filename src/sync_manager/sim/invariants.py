"""The safety properties the simulator checks after every lease event.

The checker sees the simulation as god does: which host's processes really hold which lease
right now (a holder counts from the moment its acquire returned until its process is really
dead: it exited, was killed, or its host was reset), and the bytes on the fake disks.

* **Mutual exclusion**: never two exclusive holders of one resource at the same instant, and
  never an exclusive holder together with a shared one.
* **lver never goes down**: every committed leader has an lver at least the last one seen.
* **A committed leader comes from an accepted ballot**: when an acquire returns, the leader on
  disk names an owner that some host's dblock accepted (bal != 0) for that lver.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sync_manager.ondisk.areas import ResourceArea
from sync_manager.ondisk.leader import LeaderRecord

__all__ = ["Checker", "Violation"]


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken invariant, at true time ``time``."""

    time: float
    resource: str
    what: str

    def __str__(self) -> str:
        return f"t={self.time:.6f} {self.resource}: {self.what}"


@dataclass(slots=True)
class _ResourceState:
    holders: dict[str, str] = field(default_factory=dict)  # holder name -> "EX" | "SH"
    max_lver: int = 0
    last_owner: str | None = None  # host of the last exclusive commit
    last_released: bool = True


class Checker:
    """Tracks holders and committed leaders; collects violations."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []
        self.takeovers = 0
        self._resources: dict[str, _ResourceState] = {}

    def _state(self, resource: str) -> _ResourceState:
        return self._resources.setdefault(resource, _ResourceState())

    def hold(self, time: float, resource: str, holder: str, mode: str) -> None:
        """``holder`` (a host's process) starts using ``resource`` in ``mode``."""
        state = self._state(resource)
        others = {name: m for name, m in state.holders.items() if name != holder}
        if mode == "EX" and others:
            self._violate(time, resource, f"{holder} holds EX while {others} hold it")
        elif mode == "SH" and "EX" in others.values():
            self._violate(time, resource, f"{holder} holds SH while {others} hold it")
        state.holders[holder] = mode

    def drop(self, resource: str, holder: str) -> None:
        """``holder``'s process is dead or no longer uses ``resource``."""
        self._state(resource).holders.pop(holder, None)

    def released(self, resource: str, host: str) -> None:
        """``host`` released its exclusive lease cleanly (not a takeover when taken next)."""
        state = self._state(resource)
        if state.last_owner == host:
            state.last_released = True

    def committed(self, time: float, resource: str, host: str, area: ResourceArea) -> None:
        """``host``'s acquire returned; ``area`` is the lease on disk at that instant."""
        state = self._state(resource)
        leader = area.leader
        if leader.lver < state.max_lver:
            self._violate(time, resource, f"lver went down: {state.max_lver} -> {leader.lver}")
        state.max_lver = max(state.max_lver, leader.lver)
        if leader.lver and not leader.is_free and not _chosen_by_a_ballot(leader, area):
            self._violate(
                time,
                resource,
                f"leader lver {leader.lver} owner {leader.owner_id}/{leader.owner_generation} "
                "was accepted by no ballot",
            )
        if state.last_owner not in (None, host) and not state.last_released:
            self.takeovers += 1
        state.last_owner = host
        state.last_released = False

    def _violate(self, time: float, resource: str, what: str) -> None:
        self.violations.append(Violation(time, resource, what))

    def holders(self, resource: str) -> dict[str, str]:
        """Who holds ``resource`` now (holder name -> mode)."""
        return dict(self._state(resource).holders)


def _chosen_by_a_ballot(leader: LeaderRecord, area: ResourceArea) -> bool:
    return any(
        d.lver == leader.lver
        and d.bal != 0
        and (d.inp, d.inp2, d.inp3) == (leader.owner_id, leader.owner_generation, leader.timestamp)
        for d in area.dblocks
    )
