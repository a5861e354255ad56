"""Fencing: the daemon's check loop for one lockspace (sanlock's main loop, spec 8.2).

Each lockspace has one :class:`Fencer` task on the event loop. It asks the pure policy
(``supervisor/policy.py``) what to do at each check, carries it out (killpath, SIGTERM,
SIGKILL through ``supervisor/process.py``; the watchdog through ``supervisor/watchdog.py``),
and sleeps until the policy's next deadline or until something changes (a renewal result, a
client exit, rem_lockspace, shutdown). No disk I/O happens here, so a hung device cannot stop
this clock: that is what makes the kill deadlines hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from sync_manager.daemon.clients import Client
from sync_manager.daemon.lockspace import Lockspace
from sync_manager.supervisor import policy
from sync_manager.supervisor.executor import Executor
from sync_manager.supervisor.policy import Action
from sync_manager.supervisor.watchdog import Watchdog, apply_watchdog

__all__ = ["Fencer", "watchdog_key"]

log = logging.getLogger("sync_manager.fencing")


class Fencer:
    """Runs the policy's checks for one lockspace until the lockspace ends."""

    def __init__(
        self,
        ls: Lockspace,
        clients: Callable[[], Iterable[Client]],
        watchdog: Watchdog,
        executor: Executor,
        end: Callable[[Lockspace, bool], None],
    ) -> None:
        self.ls = ls
        self._clients = clients
        self._watchdog = watchdog
        self._executor = executor
        self._end = end
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin checking (once the lockspace has joined)."""
        self._task = asyncio.create_task(self._run(), name=f"fencing {self.ls.name}")

    def poke(self) -> None:
        """Check again now: something the policy looks at changed."""
        self._poke.set()

    async def _run(self) -> None:
        while True:
            next_check = self.check(time.monotonic())
            if next_check is None:
                return
            self._poke.clear()
            delay = max(next_check - time.monotonic(), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), delay)

    def holders(self) -> list[Client]:
        """The clients holding a lease in this lockspace."""
        return [c for c in self._clients() if any(t.lockspace is self.ls for t in c.tokens)]

    def check(self, now: float) -> float | None:
        """One check: decide, act; the time of the next check, or None when it has ended."""
        ls = self.ls
        assert ls.policy is not None
        holders = self.holders()
        states = [c.policy_state() for c in holders]
        decision = policy.decide(
            now, ls.policy, states, ls.timeouts, use_watchdog=self._watchdog.fences
        )
        ls.policy = decision.lockspace
        for notice in decision.notices:
            log.log(int(notice.severity), "lockspace %s: %s", ls.name, notice.text)
        for client, choice in zip(holders, decision.clients, strict=True):
            if ls.policy.recovery is not None:
                client.kill = choice.state
            if choice.action is not Action.NONE:
                self._act(client, choice)
        apply_watchdog(
            self._watchdog,
            watchdog_key(ls),
            decision.watchdog,
            policy.watchdog_expire_at(ls.policy.last_success, ls.timeouts),
            renewal_at=ls.policy.last_success,
        )
        self._watchdog.tick(now)
        if decision.release_lockspace:
            self._end(ls, decision.release_delta)
            return None
        return policy.next_check_at(
            now, ls.policy, [c.policy_state() for c in holders], ls.timeouts
        )

    def _act(self, client: Client, choice: policy.ClientDecision) -> None:
        outcome = self._executor.carry_out_one(choice, client.kill_target(), lockspace=self.ls.name)
        if client.kill is not None:
            client.kill = outcome.state


def watchdog_key(ls: Lockspace) -> str:
    """The lockspace's name at the watchdog (wdmd registers ``sanlock_<key>``)."""
    return f"{ls.name}:{ls.host_id}"
