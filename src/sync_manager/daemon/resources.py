"""Resource leases held by the daemon's clients: acquire, release, convert, inquire (6, 2.5.4-7).

Every lease a client holds is a :class:`Token`. The daemon-wide :class:`ResourceTable` keeps
them by (lockspace, resource name) so that local exclusion needs no disk I/O: a second local
process asking for a lease held here gets -EEXIST at once (two shared holders share it), one
being acquired -EBUSY, one being released -EAGAIN. Only then is the paxos core run, on a worker.

Safety notes:

* A lease is released on disk only while its lockspace is alive. After a failed renewal the
  lockspace is dead and nothing is written (8.2): another host takes the lease over after the
  host_dead wait, by when our holders are dead.
* A client that died while its acquire ran gets its new leases released (-ENOTTY), and one
  whose lockspace failed meanwhile gets -ENOSPC, as sanlock does.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from sync_manager.core import paxos
from sync_manager.core.effects import Step, read, write
from sync_manager.core.paxos_io import ReadPattern
from sync_manager.core.paxos_owner import OwnerObservation
from sync_manager.core.paxos_shared import AcquireResult
from sync_manager.daemon.clients import Client
from sync_manager.daemon.lockspace import Lockspace
from sync_manager.daemon.runner import Runner, lease_purpose
from sync_manager.errors import SyncManagerError
from sync_manager.ondisk.areas import LVB_SECTOR
from sync_manager.ondisk.geometry import Geometry
from sync_manager.protocol.flags import AcquireFlag, ConvertFlag, ResourceFlag
from sync_manager.protocol.resstr import res_to_str
from sync_manager.protocol.structs import Resource
from sync_manager.supervisor.policy import Reason

__all__ = ["LeaseError", "ResourceTable", "Token", "read_lvb", "write_lvb"]

log = logging.getLogger("sync_manager.resources")

MAX_ACQUIRE = 8  # sanlock's SANLK_MAX_RESOURCES per acquire
_DEAD_RENEWAL = (Reason.RENEWAL_FAILED, Reason.RENEWAL_CORRUPT)


def read_lvb(resource: paxos.Resource) -> Step[bytes]:
    """The lease's lock value block: the sector after the hosts' blocks (LVB_SECTOR)."""
    path, base = resource.disks[0]
    size = resource.geometry.sector_size
    return (yield from read(path, base + LVB_SECTOR * size, size))


def write_lvb(resource: paxos.Resource, lvb: bytes) -> Step[None]:
    """Write the lock value block back (an exclusive holder, at release: spec 6.6 step 1)."""
    path, base = resource.disks[0]
    size = resource.geometry.sector_size
    yield from write(path, base + LVB_SECTOR * size, lvb[:size].ljust(size, b"\0"))


class LeaseError(Exception):
    """A lease command failed with sanlock's result ``code`` (negative)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(eq=False)
class Token:
    """One lease held (or being acquired) by one client."""

    client: Client
    lockspace: Lockspace
    resource: Resource  # as the client named it, disks included
    core: paxos.Resource
    shared: bool
    result: AcquireResult | None = None
    persistent: bool = False
    orphan: bool = False  # a persistent lease whose process exited: held, owned by no one
    lvb: bytearray | None = None  # the lock value block (ACQUIRE_LVB), a sector, else None
    lvb_changed: bool = False  # SET_LVB since the acquire: written back at release

    @property
    def key(self) -> tuple[bytes, bytes]:
        """(lockspace name, resource name), as sanlock compares them."""
        return (self.resource.lockspace_name, self.resource.name)

    @property
    def lver(self) -> int:
        """The lease version held (0 until acquired)."""
        return self.result.lver if self.result is not None else 0

    @property
    def purpose(self) -> str:
        """The runner storage this lease's I/O always goes through (see lease_purpose)."""
        return lease_purpose(self.core.lockspace, self.core.name)

    def host(self) -> paxos.Host:
        """Us, as the paxos core needs it."""
        return paxos.Host(self.lockspace.host_id, self.lockspace.generation)

    def described(self) -> Resource:
        """The resource as INQUIRE and STATUS show it: our lver, or SHARED."""
        flags = ResourceFlag.SHARED if self.shared else 0
        return Resource(
            self.resource.lockspace_name,
            self.resource.name,
            lver=0 if self.shared else self.lver,
            flags=flags,
            num_disks=len(self.resource.disks),
            disks=self.resource.disks,
        )

    def text(self) -> str:
        """``LS:NAME:PATH:OFFSET:LVER`` for logs."""
        return res_to_str(self.described()).decode("utf-8", "replace")


@dataclass
class ResourceTable:
    """Every token on this host, and the leases being acquired or released."""

    runner: Runner
    rng: random.Random = field(default_factory=random.Random)
    held: dict[tuple[bytes, bytes], list[Token]] = field(default_factory=dict)
    acquiring: set[tuple[bytes, bytes]] = field(default_factory=set)
    releasing: set[tuple[bytes, bytes]] = field(default_factory=set)

    def __iter__(self) -> Iterator[Token]:
        for tokens in list(self.held.values()):
            yield from tokens

    def in_lockspace(self, ls: Lockspace) -> list[Token]:
        """The tokens held in ``ls``."""
        return [t for t in self if t.lockspace is ls]

    # --- acquire -----------------------------------------------------------------------------

    async def acquire(
        self, client: Client, tokens: list[Token], flags: int, *, owner_nowait: bool = False
    ) -> None:
        """Acquire ``tokens`` for ``client`` in order; on a failure release those acquired.

        Raises LeaseError with sanlock's code.
        """
        done: list[Token] = []
        try:
            for token in tokens:
                await self._acquire_one(token, flags, owner_nowait=owner_nowait)
                done.append(token)
        except LeaseError:
            for token in done:
                await self.release(token)
            raise
        failed = next((t.lockspace for t in done if t.lockspace.dead), None)
        if failed is not None or client.dead:
            for token in done:
                await self.release(token)
            if client.dead:
                raise LeaseError(-errno.ENOTTY, f"pid {client.peer.pid} exited while acquiring")
            assert failed is not None
            raise LeaseError(-errno.ENOSPC, f"lockspace {failed.name} failed while acquiring")

    async def _acquire_one(self, token: Token, flags: int, *, owner_nowait: bool) -> None:
        key = token.key
        if token.lockspace.dead:
            raise LeaseError(-errno.ENOSPC, f"lockspace {token.lockspace.name} is not live")
        if key in self.releasing:
            raise LeaseError(-errno.EAGAIN, f"{token.text()} is being released")
        if key in self.acquiring:
            raise LeaseError(-errno.EBUSY, f"{token.text()} is being acquired")
        holders = self.held.get(key, [])
        orphan = next((t for t in holders if t.orphan), None)
        if orphan is not None:
            self._adopt(orphan, token, flags)
            return
        if holders:
            if token.shared and all(t.shared for t in holders):
                token.result = holders[0].result
                self._hold(token)
                return
            holder = holders[0].client
            raise LeaseError(
                -errno.EEXIST,
                f"{token.text()} is held by local pid {holder.peer.pid}",
            )
        if flags & AcquireFlag.ORPHAN_ONLY:
            raise LeaseError(-errno.ENOENT, f"{token.text()}: no orphan to adopt")
        self.acquiring.add(key)
        observations = token.lockspace.observations()  # a snapshot, taken on the loop
        try:
            token.result = await self.runner.call(
                lambda: self._acquire_on_disk(
                    token, observations, owner_nowait, lvb=bool(flags & AcquireFlag.LVB)
                )
            )
        except SyncManagerError as err:
            log.info("acquire %s for pid %d failed: %s", token.text(), token.client.peer.pid, err)
            raise LeaseError(err.code, str(err)) from None
        finally:
            self.acquiring.discard(key)
        self._hold(token)
        log.info(
            "acquired %s %s for pid %d",
            token.text(),
            "SH" if token.shared else "EX",
            token.client.peer.pid,
        )

    def _acquire_on_disk(
        self,
        token: Token,
        observations: Mapping[int, OwnerObservation],
        owner_nowait: bool,
        *,
        lvb: bool = False,
    ) -> AcquireResult:
        """On a worker: run the paxos acquire, reading only what it must (MINIMAL: the leader
        and our block, then the two ballot phases; the leader tells the lease's geometry)."""
        ls = token.lockspace
        lver = token.resource.lver if token.resource.flags & ResourceFlag.LVER else None
        num_hosts = token.resource.data32 if token.resource.flags & ResourceFlag.NUM_HOSTS else 0
        with self.runner.driver(token.purpose, io_timeout=ls.io_timeout) as driver:
            path = token.core.disks[0][0]
            sector_size = driver.storage(path).sector_size
            core = dataclasses.replace(token.core, geometry=Geometry.default_for(sector_size))
            result = driver.run(
                paxos.acquire(
                    core,
                    token.host(),
                    rng=self.rng,
                    lockspace=ls.disk(),
                    owner_observations=observations,
                    lver=lver,
                    shared=token.shared,
                    owner_nowait=owner_nowait,
                    num_hosts=num_hosts or None,
                    is_alive=ls.is_alive,
                    read_pattern=ReadPattern.MINIMAL,
                )
            )
            token.core = dataclasses.replace(core, geometry=result.geometry)
            if lvb:  # read with the lease held (2.5.4): what the last holder left there
                token.lvb = bytearray(driver.run(read_lvb(token.core)))
        return result

    def _adopt(self, orphan: Token, token: Token, flags: int) -> None:
        """``token`` takes over ``orphan`` (ACQUIRE with SANLK_ACQUIRE_ORPHAN*): no disk I/O."""
        if not flags & (AcquireFlag.ORPHAN | AcquireFlag.ORPHAN_ONLY):
            raise LeaseError(-errno.EUCLEAN, f"{orphan.text()} is an orphan: adopt it or free it")
        if orphan.shared != token.shared:
            raise LeaseError(-errno.EUCLEAN, f"{orphan.text()} is an orphan in the other mode")
        self._unhold(orphan)
        token.result, token.core = orphan.result, orphan.core
        self._hold(token)
        log.info("pid %d adopted orphan %s", token.client.peer.pid, token.text())

    def _hold(self, token: Token) -> None:
        self.held.setdefault(token.key, []).append(token)
        token.client.tokens.append(token)

    # --- release -----------------------------------------------------------------------------

    async def release(self, token: Token) -> int:
        """Release ``token`` (on disk when it was the last local holder); 0 or an error code."""
        self._unhold(token)
        if self.held.get(token.key):
            return 0  # another local process still holds it shared
        ls = token.lockspace
        if token.result is None or ls.lease is None:
            return 0
        if ls.policy is not None and ls.policy.recovery in _DEAD_RENEWAL:
            log.info("release %s: lockspace %s is dead, nothing written", token.text(), ls.name)
            return 0
        result = token.result
        self.releasing.add(token.key)
        try:
            if token.lvb is not None and token.lvb_changed and not token.shared:
                await self.runner.run(
                    write_lvb(token.core, bytes(token.lvb)),
                    purpose=token.purpose,
                    io_timeout=ls.io_timeout,
                )
            await self.runner.run(
                paxos.release(
                    token.core, token.host(), result.leader, result.dblock, shared=token.shared
                ),
                purpose=token.purpose,
                io_timeout=ls.io_timeout,
            )
        except SyncManagerError as err:
            log.error("release %s failed: %s", token.text(), err)
            return err.code
        finally:
            self.releasing.discard(token.key)
        log.info("released %s for pid %d", token.text(), token.client.peer.pid)
        return 0

    def _unhold(self, token: Token) -> None:
        tokens = self.held.get(token.key, [])
        if token in tokens:
            tokens.remove(token)
        if not tokens:
            self.held.pop(token.key, None)
        if token in token.client.tokens:
            token.client.tokens.remove(token)

    async def client_exited(self, client: Client) -> None:
        """``client`` is gone: its persistent leases become orphans, the rest are released."""
        for token in list(client.tokens):
            if token.persistent and not token.lockspace.dead:
                client.tokens.remove(token)
                token.orphan = True
                log.info("%s of pid %d kept as an orphan", token.text(), client.peer.pid)
            else:
                await self.release(token)

    def forget(self, ls: Lockspace) -> None:
        """The lockspace ended: its orphans (no process holds them) are forgotten; their
        leases on disk are freed by the host id's end, as any lease of ours there."""
        for token in self.in_lockspace(ls):
            if token.orphan:
                self._unhold(token)

    def with_lvb(self, key: tuple[bytes, bytes]) -> Token:
        """The held token of ``key`` for SET_LVB/GET_LVB: LeaseError -ENOENT if this host does
        not hold it, -EINVAL if it was acquired without the LVB."""
        token = next((t for t in self.held.get(key, []) if not t.orphan), None)
        if token is None:
            raise LeaseError(-errno.ENOENT, f"{key[1]!r} is not held here")
        if token.lvb is None:
            raise LeaseError(-errno.EINVAL, f"{token.text()} was acquired without its LVB")
        return token

    def orphans(self, lockspace: bytes, name: bytes = b"") -> list[Token]:
        """The orphans of ``lockspace`` (all, or the one called ``name``)."""
        return [
            t for t in self if t.orphan and t.key[0] == lockspace and (not name or t.key[1] == name)
        ]

    async def release_orphans(self, tokens: list[Token]) -> None:
        """Free orphans on disk (REL_ORPHAN)."""
        for token in tokens:
            await self.release(token)

    async def release_all(self, client: Client) -> int:
        """Release every lease of ``client`` (it exited, or asked REL_ALL)."""
        result = 0
        for token in list(client.tokens):
            rv = await self.release(token)
            result = rv if rv < 0 else result
        return result

    # --- convert -----------------------------------------------------------------------------

    async def convert(self, token: Token, shared: bool, flags: int) -> None:
        """Convert ``token`` to ``shared`` (True) or exclusive; LeaseError on failure."""
        if token.shared == shared:
            return
        assert token.result is not None
        others = [t for t in self.held.get(token.key, []) if t is not token]
        if others:
            raise LeaseError(-errno.EEXIST, f"{token.text()} is also held by another local pid")
        ls = token.lockspace
        if ls.dead:
            raise LeaseError(-errno.ENOSPC, f"lockspace {ls.name} is not live")
        result = token.result
        if shared:
            step = paxos.convert_to_shared(token.core, token.host(), result.leader, result.dblock)
        else:
            step = paxos.convert_to_exclusive(
                token.core,
                token.host(),
                rng=self.rng,
                lockspace=ls.disk(),
                owner_observations=ls.observations(),
                owner_nowait=bool(flags & ConvertFlag.OWNER_NOWAIT),
                is_alive=ls.is_alive,
                read_pattern=ReadPattern.MINIMAL,
            )
        try:
            token.result = await self.runner.run(
                step, purpose=token.purpose, io_timeout=ls.io_timeout
            )
        except SyncManagerError as err:
            raise LeaseError(err.code, str(err)) from None
        token.shared = shared
        log.info("converted %s to %s", token.text(), "SH" if shared else "EX")
