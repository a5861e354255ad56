"""Request handlers: one thin function per command, from a decoded request to its reply.

Each handler validates what the codec could not, calls the daemon (``daemon/service.py``,
``daemon/resources.py``) and returns the reply sanlock would send. Commands that act on leases
(ACQUIRE, RELEASE, INQUIRE, CONVERT) first resolve their target client as sanlock does
(protocol 1.4): the connection itself when ``data2`` is -1, else the registered pid.

Beyond sanlock, a client that is not an administrator (root, the daemon's user, or a member
of the configured admin group) may only act on its own pid and use the read-only commands.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sync_manager import protocol as p
from sync_manager.core import paxos
from sync_manager.daemon import disk_commands, event_commands, status
from sync_manager.daemon.clients import Client
from sync_manager.daemon.resources import LeaseError, Token
from sync_manager.daemon.runner import lease_purpose
from sync_manager.daemon.service import Daemon
from sync_manager.direct import open_resource
from sync_manager.errors import SyncManagerError
from sync_manager.ondisk.geometry import Geometry
from sync_manager.protocol.flags import (
    AcquireFlag,
    AddLockspaceFlag,
    InqLockspaceFlag,
    KillpathFlag,
    ReleaseFlag,
    RemLockspaceFlag,
    RequestFlag,
    ResourceFlag,
)
from sync_manager.protocol.header import SELF, Command

__all__ = ["Context", "handle", "is_open_to_all"]

log = logging.getLogger("sync_manager.handlers")

INQ_WAIT_INTERVAL = 1.0  # sanlock re-checks an INQ_LOCKSPACE with INQ_WAIT every second

# Commands any client may send; the rest need an administrator.
_OPEN_TO_ALL = frozenset(
    {
        Command.REGISTER, Command.RESTRICT, Command.KILLPATH, Command.ACQUIRE, Command.RELEASE,
        Command.INQUIRE, Command.CONVERT, Command.VERSION, Command.STATUS, Command.HOST_STATUS,
        Command.GET_LOCKSPACES, Command.GET_HOSTS, Command.INQ_LOCKSPACE, Command.LOG_DUMP,
        Command.RENEWAL, Command.ALIGN, Command.READ_LOCKSPACE, Command.READ_RESOURCE,
        Command.READ_RESOURCE_OWNERS,
    }
)  # fmt: skip


def is_open_to_all(command: Command) -> bool:
    """Whether a client that is not an administrator may send ``command``."""
    return command in _OPEN_TO_ALL


@dataclass
class Context:
    """One request being handled: the daemon, the connection, and the request's header."""

    daemon: Daemon
    client: Client
    header: p.Header
    admin: bool


Handler = Callable[[Context, Any], Awaitable[p.Reply]]
_HANDLERS: dict[type[p.Request], Handler] = {}


def _handles(cls: type[p.Request]) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        _HANDLERS[cls] = func
        return func

    return register


async def handle(ctx: Context, request: p.Request) -> p.Reply:
    """The reply to ``request`` (never raises for a client's mistake)."""
    command = request.COMMAND
    if not ctx.admin and not is_open_to_all(command):
        log.warning("pid %d (uid %d): %s refused: not an administrator",
                    ctx.client.peer.pid, ctx.client.peer.uid, command.name)  # fmt: skip
        return p.error_reply(command, -errno.EPERM)
    handler = _HANDLERS.get(type(request))
    if handler is None:
        log.info("%s is not supported; answering -EOPNOTSUPP", command.name)
        return p.error_reply(command, -errno.EOPNOTSUPP)
    try:
        return await handler(ctx, request)
    except LeaseError as err:
        return p.error_reply(command, err.code)
    except SyncManagerError as err:
        log.info("%s failed: %s", command.name, err)
        return p.error_reply(command, err.code)


# --- registration ------------------------------------------------------------------------


@_handles(p.Register)
async def _register(ctx: Context, _req: p.Register) -> p.Reply:
    ctx.client.registered = True
    ctx.client.owner_name = str(ctx.client.peer.pid).encode()
    log.debug("pid %d registered", ctx.client.peer.pid)
    return p.NoReply()


@_handles(p.Restrict)
async def _restrict(ctx: Context, req: p.Restrict) -> p.Reply:
    if not ctx.client.registered:
        return p.Result(-errno.EBUSY)
    ctx.client.restricted = req.flags
    return p.Result(0)


@_handles(p.Killpath)
async def _killpath(ctx: Context, req: p.Killpath) -> p.Reply:
    if not ctx.client.registered:
        return p.Result(-errno.EBUSY)
    ctx.client.killpath = req.path.split(b"\0", 1)[0]
    ctx.client.killargs = req.args.split(b"\0", 1)[0]
    ctx.client.killpath_pid = bool(req.flags & KillpathFlag.PID)
    return p.Result(0)


# --- leases of a client ----------------------------------------------------------------


def _target(ctx: Context, target: int, *, acquiring: bool = False) -> Client:
    """The client a lease command is for (protocol 1.4); LeaseError if none may be used."""
    if target in (SELF, 0xFFFFFFFF, -1):
        client = ctx.client
        if not client.registered:
            raise LeaseError(-errno.EBUSY, "this connection is not registered")
    else:
        if not ctx.admin and target != ctx.client.peer.pid:
            raise LeaseError(-errno.EPERM, f"pid {ctx.client.peer.pid} may not act for {target}")
        found = ctx.daemon.clients.registered(target)
        if found is None:
            raise LeaseError(-errno.ESRCH, f"pid {target} is not registered")
        client = found
    if client.dead:
        raise LeaseError(-errno.EBUSY, f"pid {client.peer.pid} is exiting")
    if acquiring and client.kill is not None and client.kill.kill_count > 0:
        raise LeaseError(-errno.EBUSY, f"pid {client.peer.pid} is being killed")
    if client.cmd_active:
        raise LeaseError(-errno.EBUSY, f"pid {client.peer.pid} has a command in progress")
    return client


async def _exclusive(client: Client, work: Awaitable[p.Reply]) -> p.Reply:
    """Run ``work`` as the target's one active command (sanlock's cmd_active)."""
    client.cmd_active = True
    try:
        return await work
    finally:
        client.cmd_active = False


def _core_resource(res: p.Resource) -> paxos.Resource:
    disks = tuple((d.path_str, d.offset) for d in res.disks)
    # The geometry is a placeholder: the acquire reads the leader's own before anything else.
    return paxos.Resource(res.lockspace, res.resource, disks, Geometry.default_for(512))


@_handles(p.Acquire)
async def _acquire(ctx: Context, req: p.Acquire) -> p.Reply:
    if len(req.resources) > p.MAX_RESOURCES:
        return p.Result(-errno.E2BIG)
    target = _target(ctx, req.target, acquiring=True)
    target.owner_name = req.options.owner_name.split(b"\0", 1)[0]
    tokens = []
    for res in req.resources:
        ls = ctx.daemon.named(res.lockspace)
        if ls is None or ls.dead:
            log.info("acquire %s:%s: lockspace not joined", res.lockspace, res.resource)
            return p.Result(-errno.ENOSPC)
        tokens.append(
            Token(
                target,
                ls,
                res,
                _core_resource(res),
                shared=bool(res.flags & ResourceFlag.SHARED),
                persistent=bool(res.flags & ResourceFlag.PERSISTENT),
            )
        )

    async def work() -> p.Reply:
        await ctx.daemon.resources.acquire(
            target,
            tokens,
            req.flags,
            owner_nowait=bool(req.flags & AcquireFlag.OWNER_NOWAIT),
        )
        return p.Result(0)

    return await _exclusive(target, work())


@_handles(p.Release)
async def _release(ctx: Context, req: p.Release) -> p.Reply:
    target = _target(ctx, req.target)
    resources = ctx.daemon.resources

    async def work() -> p.Reply:
        if req.flags & ReleaseFlag.ALL:
            result = await resources.release_all(target)
        elif req.flags & ReleaseFlag.ORPHAN:
            named = req.resources[0] if req.resources else p.Resource(b"", b"")
            orphans = resources.orphans(named.lockspace_name, named.name)
            ctx.daemon.spawn(resources.release_orphans(orphans), "release orphans")
            return p.Result(len(orphans))  # sanlock: the number queued for release
        elif req.flags & ReleaseFlag.RENAME:
            return p.Result(-errno.EOPNOTSUPP)
        else:
            result = 0
            for res in req.resources:
                key = (res.lockspace_name, res.name)
                token = next((t for t in target.tokens if t.key == key), None)
                if token is None:
                    result = -1  # sanlock's raw -1 for a lease the target does not hold
                    continue
                rv = await resources.release(token)
                result = rv if rv < 0 else result
        if not target.tokens:
            target.kill = None
        return p.Result(result)

    return await _exclusive(target, work())


@_handles(p.Inquire)
async def _inquire(ctx: Context, req: p.Inquire) -> p.Reply:
    target = _target(ctx, req.target)
    described = [t.described() for t in target.tokens]
    if not described:
        return p.InquireReply(0, 0, None)
    try:
        text = p.state_string(described)
    except p.MalformedMessage as err:
        return p.InquireReply(err.code)
    return p.InquireReply(0, len(described), text)


@_handles(p.Convert)
async def _convert(ctx: Context, req: p.Convert) -> p.Reply:
    target = _target(ctx, req.target)
    key = (req.resource.lockspace_name, req.resource.name)
    token = next((t for t in target.tokens if t.key == key), None)
    if token is None:
        return p.Result(-errno.ENOENT)

    async def work() -> p.Reply:
        shared = bool(req.resource.flags & ResourceFlag.SHARED)
        await ctx.daemon.resources.convert(token, shared, req.flags)
        return p.Result(0)

    return await _exclusive(target, work())


@_handles(p.RequestLease)
async def _request(ctx: Context, req: p.RequestLease) -> p.Reply:
    res = req.resource
    ls = ctx.daemon.named(res.lockspace)
    if ls is None:
        return p.Result(-errno.ENOSPC)
    lver = res.lver if res.flags & ResourceFlag.LVER else 0
    core = _core_resource(res)

    def on_disk() -> paxos.RequestResult:
        purpose = lease_purpose(core.lockspace, core.name)  # the request record is the lease's
        with ctx.daemon.runner.driver(purpose, io_timeout=ls.io_timeout) as driver:
            resource, _ = open_resource(driver, core.lockspace, core.name, core.disks)
            step = paxos.request(
                resource, lver, req.force_mode, next_lver=bool(req.flags & RequestFlag.NEXT_LVER)
            )
            return driver.run(step)

    result = await ctx.daemon.runner.call(on_disk)
    if result.owner_id and result.written is not None and ls.view is not None:
        ls.view.notify(result.owner_id, time.monotonic())
    return p.Result(0)


@_handles(p.ExamineResource)
async def _examine_resource(ctx: Context, req: p.ExamineResource) -> p.Reply:
    key = (req.resource.lockspace_name, req.resource.name)
    await ctx.daemon.examine([t for t in ctx.daemon.resources if t.key == key])
    return p.Result(0)


@_handles(p.ExamineLockspace)
async def _examine_lockspace(ctx: Context, req: p.ExamineLockspace) -> p.Reply:
    name = req.lockspace.lockspace
    await ctx.daemon.examine([t for t in ctx.daemon.resources if t.lockspace.name == name])
    return p.Result(0)


# --- lock value blocks (2.5.24) ---------------------------------------------------------


@_handles(p.SetLvb)
async def _set_lvb(ctx: Context, req: p.SetLvb) -> p.Reply:
    token = ctx.daemon.resources.with_lvb((req.resource.lockspace_name, req.resource.name))
    if len(req.lvb) > len(token.lvb or b""):
        return p.Result(-errno.E2BIG)
    assert token.lvb is not None
    token.lvb[: len(req.lvb)] = req.lvb  # as sanlock: the rest of the sector is kept
    token.lvb_changed = True
    return p.Result(0)


@_handles(p.GetLvb)
async def _get_lvb(ctx: Context, req: p.GetLvb) -> p.Reply:
    token = ctx.daemon.resources.with_lvb((req.resource.lockspace_name, req.resource.name))
    assert token.lvb is not None
    return p.LvbReply(0, bytes(token.lvb[: req.length or len(token.lvb)]))


# --- lockspaces --------------------------------------------------------------------------


@_handles(p.AddLockspace)
async def _add_lockspace(ctx: Context, req: p.AddLockspace) -> p.Reply:
    ls = req.lockspace
    result = await ctx.daemon.add_lockspace(
        ls.lockspace,
        ls.host_id,
        ls.disk.path_str,
        ls.disk.offset,
        req.io_timeout,
        wait=not req.flags & AddLockspaceFlag.ASYNC,
    )
    return p.Result(result)


@_handles(p.InqLockspace)
async def _inq_lockspace(ctx: Context, req: p.InqLockspace) -> p.Reply:
    ls = req.lockspace
    args = (ls.lockspace, ls.disk.path_str, ls.disk.offset, ls.host_id)
    result = ctx.daemon.inq_lockspace(*args)
    while req.flags & InqLockspaceFlag.WAIT and result == -errno.EINPROGRESS:
        await asyncio.sleep(INQ_WAIT_INTERVAL)
        result = ctx.daemon.inq_lockspace(*args)
    return p.Result(result)


@_handles(p.RemLockspace)
async def _rem_lockspace(ctx: Context, req: p.RemLockspace) -> p.Reply:
    ls = req.lockspace
    result = await ctx.daemon.rem_lockspace(
        ls.lockspace,
        ls.disk.path_str,
        ls.disk.offset,
        ls.host_id,
        wait=not req.flags & RemLockspaceFlag.ASYNC,
        unused=bool(req.flags & RemLockspaceFlag.UNUSED),
    )
    return p.Result(result)


@_handles(p.GetLockspaces)
async def _get_lockspaces(ctx: Context, _req: p.GetLockspaces) -> p.Reply:
    return p.LockspacesReply(0, status.lockspace_structs(ctx.daemon))


@_handles(p.GetHosts)
async def _get_hosts(ctx: Context, req: p.GetHosts) -> p.Reply:
    ls = ctx.daemon.named(req.lockspace.lockspace)
    if ls is None:
        return p.HostsReply(-errno.ENOENT)
    if ls.view is None or not ls.hosts_reported:
        return p.HostsReply(-errno.EAGAIN)
    return p.HostsReply(0, status.host_structs(ls, req.lockspace.host_id))


@_handles(p.SetConfig)
async def _set_config(ctx: Context, req: p.SetConfig) -> p.Reply:
    ls = ctx.daemon.named(req.lockspace.lockspace, active=False)
    if ls is None:
        return p.Result(-errno.ENOENT)
    used = {1: True, 2: False, 4: True, 8: False}.get(req.cmd)
    if used is None:
        return p.Result(-errno.EINVAL)
    if used and ls.dead:
        return p.Result(-errno.ENOSPC)
    ls.used_externally = used
    if ls.policy is not None:  # recovery does not end while something outside still uses it
        ls.policy = dataclasses.replace(ls.policy, used_externally=used)
    return p.Result(0)


# --- daemon ------------------------------------------------------------------------------


@_handles(p.Version)
async def _version(_ctx: Context, _req: p.Version) -> p.Reply:
    return p.VersionReply()


@_handles(p.Status)
async def _status(ctx: Context, req: p.Status) -> p.Reply:
    return p.StateReply(0, status.status_records(ctx.daemon, ctx.client, req.data))


@_handles(p.HostStatus)
async def _host_status(ctx: Context, req: p.HostStatus) -> p.Reply:
    ls = ctx.daemon.named(req.lockspace.lockspace, active=False)
    if ls is None:
        return p.StateReply(-errno.ENOSPC)
    return p.StateReply(0, status.host_records(ls))


@_handles(p.Renewal)
async def _renewal(ctx: Context, req: p.Renewal) -> p.Reply:
    ls = ctx.daemon.named(req.lockspace.lockspace, active=False)
    if ls is None:
        return p.StateReply(-errno.ENOSPC)
    return p.StateReply(0, (), data2=ls.io_timeout)


@_handles(p.LogDump)
async def _log_dump(ctx: Context, _req: p.LogDump) -> p.Reply:
    return p.LogDumpReply(status.log_text())


@_handles(p.Shutdown)
async def _shutdown(ctx: Context, req: p.Shutdown) -> p.Reply:
    if not ctx.daemon.shutdown(force=bool(req.data)):
        log.info("shutdown ignored: lockspaces are joined (use force)")
    return p.NoReply()


@_handles(p.ShutdownWait)
async def _shutdown_wait(ctx: Context, req: p.ShutdownWait) -> p.Reply:
    if not ctx.daemon.shutdown(force=bool(req.data)):
        return p.ShutdownWaitReply(-errno.EBUSY)
    await ctx.daemon.stopped.wait()
    return p.ShutdownWaitReply(0)


disk_commands.register(_handles)
event_commands.register(_handles)
