"""The daemon's event commands: REG_EVENT, END_EVENT, SET_EVENT (protocol 2.5.17, spec 5.6).

An event travels in our renewals: the target's bit in our bitmap and the event in our delta
record's write_* fields, for set_bitmap seconds (``Lockspace.set_event``); the receiver's next
renewal that sees it writes it to every connection registered with REG_EVENT there
(``Lockspace._deliver``).
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sync_manager import protocol as p
from sync_manager.core import delta
from sync_manager.protocol.flags import SetEventFlag

if TYPE_CHECKING:
    from sync_manager.daemon.handlers import Context

__all__ = ["register"]


def register(handles: Callable[[type[p.Request]], Callable[[Any], Any]]) -> None:
    """Add this module's handlers to the handler table (``handlers._handles``)."""
    handles(p.RegEvent)(_reg_event)
    handles(p.EndEvent)(_end_event)
    handles(p.SetEvent)(_set_event)


MAX_EVENT_CONNECTIONS = 32  # sanlock's per-lockspace limit


async def _reg_event(ctx: Context, req: p.RegEvent) -> p.Reply:
    ls = ctx.daemon.named(req.lockspace.lockspace)
    if ls is None:
        return p.Result(-errno.ENOENT)
    if len(ls.event_sinks) >= MAX_EVENT_CONNECTIONS:
        return p.Result(-errno.ENOCSI)
    client = ctx.client
    if client.send is None or client.events_of is not None:
        return p.Result(-errno.EINVAL)
    ls.event_sinks.append(client.send)
    client.events_of = ls
    return p.Result(0)


async def _end_event(ctx: Context, req: p.EndEvent) -> p.Reply:
    # The client has closed its event connection already; the server dropped it on EOF.
    if ctx.daemon.named(req.lockspace.lockspace) is None:
        return p.Result(-errno.ENOENT)
    return p.Result(0)


async def _set_event(ctx: Context, req: p.SetEvent) -> p.Reply:
    ls = ctx.daemon.named(req.lockspace.lockspace)
    if ls is None:
        return p.Result(-errno.ENOENT)
    he, flags = req.event, req.flags
    if not he.host_id or ls.core is None or he.host_id > ls.core.geometry.max_hosts:
        return p.Result(-errno.EINVAL)
    if flags & SetEventFlag.CUR_GENERATION and not he.generation and ls.view is not None:
        he = dataclasses.replace(he, generation=ls.view.status(he.host_id).generation)
    if flags & SetEventFlag.CLEAR_EVENT:
        ls.event = delta.NO_EVENT
        return p.Result(0)
    if flags & SetEventFlag.CLEAR_HOSTID:
        return p.Result(0)  # our notify bit for that host simply expires
    result = ls.set_event(
        he.host_id,
        he,
        replace=bool(flags & SetEventFlag.REPLACE_EVENT),
        all_hosts=bool(flags & SetEventFlag.ALL_HOSTS),
    )
    return p.Result(result)
