"""What the daemon reports: STATUS and HOST_STATUS records, GET_LOCKSPACES and GET_HOSTS
structs, LOG_DUMP text (protocol 2.5.13, 2.5.14, 2.5.25, 2.5.26, 2.5.28).

The key=value texts have sanlock 3.8.5's keys in sanlock's order (``print_state_*`` in its
src/cmd.c), so tools that parse them keep working; a few keys of ours are appended at the end
(``watchdog=`` says plainly whether a watchdog protects this host).
"""

from __future__ import annotations

import time

from sync_manager import protocol as p
from sync_manager.core.hosts import HostState
from sync_manager.daemon import logs
from sync_manager.daemon.clients import Client
from sync_manager.daemon.lockspace import Lockspace, LsState
from sync_manager.daemon.service import Daemon
from sync_manager.protocol.flags import LockspaceFlag, StateType

__all__ = [
    "host_records",
    "host_structs",
    "lockspace_structs",
    "log_text",
    "status_records",
]

_LIST_FLAGS = {
    LsState.ACTIVE: 0,
    LsState.REMOVING: LockspaceFlag.REM,
    LsState.ADDING: LockspaceFlag.ADD,
}
_ORDER = (LsState.ACTIVE, LsState.REMOVING, LsState.ADDING)  # GET_LOCKSPACES' order
_STATUS_ORDER = (LsState.ACTIVE, LsState.ADDING, LsState.REMOVING)  # STATUS's order


def _ordered(daemon: Daemon, order: tuple[LsState, ...]) -> list[Lockspace]:
    return [ls for state in order for ls in daemon.lockspaces if ls.state is state]


def _lockspace_struct(ls: Lockspace, flags: int = 0) -> p.Lockspace:
    return p.Lockspace.make(ls.name, ls.host_id, ls.path, ls.offset, flags=flags)


def lockspace_structs(daemon: Daemon) -> tuple[p.Lockspace, ...]:
    """GET_LOCKSPACES: active, then being removed, then being added."""
    return tuple(_lockspace_struct(ls, _LIST_FLAGS[ls.state]) for ls in _ordered(daemon, _ORDER))


def host_structs(ls: Lockspace, host_id: int) -> tuple[p.Host, ...]:
    """GET_HOSTS: every host with a timestamp, or exactly ``host_id`` (even if free)."""
    assert ls.view is not None and ls.core is not None
    if host_id:
        if not 1 <= host_id <= ls.core.geometry.max_hosts:
            return ()
        statuses = [ls.view.status(host_id)]
    else:
        statuses = [s for s in ls.view.known() if s.timestamp]
    out = []
    for s in statuses:
        i = s.host_id
        state = HostState.LIVE if i == ls.host_id else ls.host_state(i)
        generation = ls.generation if i == ls.host_id else s.generation
        timestamp = ls.lease.last_success if i == ls.host_id and ls.lease else s.timestamp
        out.append(p.Host(i, generation, timestamp, s.io_timeout, int(state)))
    return tuple(out)


def host_records(ls: Lockspace) -> tuple[p.StateRecord, ...]:
    """HOST_STATUS: one HOST record per host seen live or holding a record."""
    if ls.view is None or ls.core is None or not ls.hosts_reported:
        return ()
    out = []
    for s in ls.view.known():
        if not s.last_live and not s.owner_id:
            continue
        i = s.host_id
        pairs = {
            "last_check": int(s.last_check or 0),
            "last_live": int(s.last_live or 0),
            "last_req": 0,
            "owner_id": s.owner_id,
            "owner_generation": s.generation,
            "timestamp": s.timestamp,
            "io_timeout": s.io_timeout,
            "owner_name": s.name,
        }
        out.append(p.StateRecord.make(StateType.HOST, b"", pairs, data32=i, data64=s.timestamp))
    return tuple(out)


def status_records(daemon: Daemon, asking: Client, what: int) -> tuple[p.StateRecord, ...]:
    """STATUS with filter ``what`` (0 all, 1 daemon, 2 + clients, 3 + lockspaces)."""
    records = [_daemon_record(daemon)]
    if what == StateType.DAEMON:
        return tuple(records)
    asking.label = b"status"
    records += [_client_record(-1, b"helper", 0), _client_record(-1, b"listener", 1)]
    records += [_client_record(c.pid, c.display_name, c.ci, c) for c in daemon.clients]
    if what == StateType.CLIENT:
        return tuple(records)
    records += [_lockspace_record(ls) for ls in _ordered(daemon, _STATUS_ORDER)]
    if what == StateType.LOCKSPACE:
        return tuple(records)
    for token in daemon.resources:
        described = token.described()
        pairs = {
            "list": "orphan" if token.orphan else "held",
            "flags": f"{described.flags:x}",
            "sector_size": token.core.geometry.sector_size,
            "align_size": token.core.geometry.align_size,
            "lver": token.lver,
            "reused": 0,
            "res_id": 0,
            "token_id": 0,
        }
        records.append(
            p.StateRecord.make(
                StateType.RESOURCE,
                token.resource.name,
                pairs,
                data32=token.client.peer.pid,
                data64=token.lver,
                resource=described,
            )
        )
    return tuple(records)


def _daemon_record(daemon: Daemon) -> p.StateRecord:
    s = daemon.settings
    pairs = {
        "our_host_name": s.host_name,
        "use_watchdog": int(daemon.watchdog.fences),
        "high_priority": 0,
        "mlock_level": 0,
        "quiet_fail": 1,
        "debug_renew": 0,
        "debug_clients": 0,
        "debug_cmds": "0x0",
        "renewal_history_size": 0,
        "gid": 0,
        "uid": 0,
        "sh_retries": 8,
        "max_sectors_kb_ignore": 0,
        "max_sectors_kb_align": 0,
        "max_sectors_kb_num": 0,
        "max_worker_threads": s.workers,
        "write_init_io_timeout": 60,
        "use_aio": 0,
        "io_timeout": s.io_timeout,
        "watchdog_fire_timeout": 60,
        "kill_grace_seconds": s.kill_grace,
        "helper_pid": -1,
        "helper_kill_fd": -1,
        "helper_full_count": 0,
        "helper_last_status": 0,
        "monotime": int(time.monotonic()),
        "version_str": "3.8.5",
        "version_num": "3.8.5",
        "version_hex": "03080500",
        "smproto_hex": "00000001",
        "watchdog": type(daemon.watchdog).__name__ if daemon.watchdog.fences else "NONE",
    }
    return p.StateRecord.make(StateType.DAEMON, s.host_name.encode()[:47], pairs)


def _client_record(pid: int, name: bytes, ci: int, client: Client | None = None) -> p.StateRecord:
    kill = client.kill if client is not None else None
    pairs = {
        "ci": ci,
        "fd": -1,
        "pid": pid,
        "flags": "0",
        "restricted": f"{client.restricted:x}" if client else "0",
        "cmd_active": int(client.cmd_active) if client else 0,
        "cmd_last": 0,
        "pid_dead": int(client.dead) if client else 0,
        "kill_count": kill.kill_count if kill else 0,
        "kill_last": int(kill.last_kill or 0) if kill else 0,
        "suspend": 0,
        "need_free": 0,
    }
    return p.StateRecord.make(StateType.CLIENT, name[:47], pairs, data32=pid)


def _lockspace_record(ls: Lockspace) -> p.StateRecord:
    geometry = ls.core.geometry if ls.core is not None else None
    policy = ls.policy
    pairs = {
        "list": ls.state.value,
        "space_id": ls.space_id,
        "io_timeout": ls.io_timeout,
        "sector_size": geometry.sector_size if geometry else 0,
        "align_size": geometry.align_size if geometry else 0,
        "host_generation": ls.generation,
        "renew_fail": int(ls.renew_fail),
        "space_dead": int(bool(policy and policy.recovery)),
        "killing_pids": int(bool(policy and policy.recovery)),
        "used_retries": 0,
        "external_used": int(ls.used_externally),
        "used_by_orphans": 0,
        "renewal_read_extend_sec": 0,
        "set_max_sectors_kb": 0,
        "corrupt_result": int(bool(policy and policy.corrupt)),
        "acquire_last_result": ls.acquire_last_result,
        "renewal_last_result": ls.renewal_last_result,
        "acquire_last_attempt": ls.acquire_last_attempt,
        "acquire_last_success": ls.acquire_last_success,
        "renewal_last_attempt": ls.renewal_last_attempt,
        "renewal_last_success": int(policy.last_success) if policy else 0,
    }
    return p.StateRecord.make(
        StateType.LOCKSPACE,
        ls.name.encode(),
        pairs,
        data64=ls.host_id,
        lockspace=_lockspace_struct(ls),
    )


def log_text() -> bytes:
    """LOG_DUMP: the daemon's recent log lines."""
    return logs.buffer.text().encode("utf-8", "replace")
