"""Run a command under leases: ``sync_manager daemon ... -c CMD`` and ``client command``.

The lease's lifetime is the command's (DESIGN.md, "The seed's own interface" and Supervisor):

1. the host's daemon answers (for the seed's command, one is started in the background if none
   runs), and the lockspace is joined (the seed's command joins it, and says how long that
   takes);
2. this process registers with the daemon and acquires every lease on the registered
   connection, one at a time, so a failure names its lease; nothing is run unless all are held;
3. the registration is restricted (``SANLK_RESTRICT_ALL``, as libvirt does): the daemon then
   ignores every request on it, so the command cannot release or acquire through it;
4. with a user, privileges are dropped (initgroups, setgid, setuid);
5. the process execs the command. The registered socket is inherited (its ``FD_CLOEXEC`` is
   cleared) and the pid does not change, so the command itself is the registered process that
   owns the leases: when it exits, however it exits, the socket closes and the daemon
   releases them at once; if its host loses the lockspace, the daemon kills it. Its exit
   status, stdout, stderr and other file descriptors are its own. Signals that Python ignores
   (SIGPIPE, SIGXFSZ) get their default action back first, as a shell would leave them.

Exit statuses of the wrapper itself, when the command never ran: :data:`EXIT_BUSY` (75, sysexits'
EX_TEMPFAIL: a lease is held by someone else; try again later), :data:`EXIT_FAILED` (125: any
other failure before exec), :data:`EXIT_CANNOT_EXEC` (126) and :data:`EXIT_NOT_FOUND` (127), as
``env``, ``nohup`` and ``timeout`` use them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from sync_manager.client import (
    Client,
    DaemonNotRunning,
    LockspaceInfo,
    Registration,
    RestrictFlag,
    SanlockError,
)
from sync_manager.errors import SyncManagerError, UsageError
from sync_manager.integrations.holders import find_holder, holder_text
from sync_manager.leasestr import LockspaceSpec, ResourceSpec, format_lockspace, format_resource
from sync_manager.timeouts import Timeouts

__all__ = [
    "EXIT_BUSY",
    "EXIT_CANNOT_EXEC",
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "CommandNotRun",
    "LeaseBusy",
    "Plan",
    "Report",
    "User",
    "ensure_daemon",
    "exec_command",
    "hold_leases",
    "join_lockspace",
    "lookup_user",
    "run",
]

EXIT_BUSY = 75
EXIT_FAILED = 125
EXIT_CANNOT_EXEC = 126
EXIT_NOT_FOUND = 127

DAEMON_START_SECONDS = 60.0  # the background daemon's parent exits once the child listens

# Acquire results that mean "someone else has it": the local table's (another pid here holds
# it, is acquiring or releasing it) and the paxos ones (another host owns it).
_BUSY = frozenset(
    {
        "EEXIST",
        "EBUSY",
        "EAGAIN",
        "SANLK_ACQUIRE_IDLIVE",
        "SANLK_ACQUIRE_OWNED",
        "SANLK_ACQUIRE_OTHER",
        "SANLK_ACQUIRE_SHRETRY",
        "SANLK_ACQUIRE_OWNED_RETRY",
    }
)

Report = Callable[[str], None]
"""Where the wrapper says what it does (one line each, without the program name)."""


class CommandNotRun(SyncManagerError):
    """The command was not started; ``lines`` say why and what to do, ``exit_status`` is ours."""

    def __init__(self, *lines: str, exit_status: int = EXIT_FAILED) -> None:
        super().__init__(lines[0])
        self.lines = lines
        self.exit_status = exit_status


class LeaseBusy(CommandNotRun):
    """A lease is held by another process or host (exit status :data:`EXIT_BUSY`)."""

    def __init__(self, resource: ResourceSpec, *lines: str) -> None:
        super().__init__(*lines, exit_status=EXIT_BUSY)
        self.resource = resource


@dataclass(frozen=True, slots=True)
class User:
    """The user the command runs as."""

    name: str
    uid: int
    gid: int


def lookup_user(text: str) -> User:
    """A user name or numeric uid from the password database; UsageError if unknown."""
    try:
        entry = pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
    except (KeyError, OverflowError):
        raise UsageError(f"-U {text}: no such user") from None
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to hold and what to run.

    ``join`` is the lockspace to join when it is not joined yet (None: it must be);
    ``owner_name`` is the name STATUS shows for the holder (the seed's VM id).
    """

    resources: tuple[ResourceSpec, ...]
    argv: tuple[str, ...]
    owner_name: str = ""
    join: LockspaceSpec | None = None
    user: User | None = None
    restrict: bool = True

    def __post_init__(self) -> None:
        if not self.argv:
            raise UsageError("-c needs a command")
        if not self.resources:
            raise UsageError("no lease to hold: give at least one")
        if len(self.owner_name.encode("utf-8", "surrogateescape")) > 48:
            raise UsageError(f"owner name {self.owner_name!r} is longer than 48 bytes")
        if self.user is not None and not self.restrict:
            raise UsageError("-U runs the command restricted: --no-restrict cannot go with it")


# --- 1. the daemon and the lockspace ----------------------------------------------------------


def ensure_daemon(client: Client, daemon_argv: Sequence[str], report: Report) -> None:
    """Make sure a daemon answers on ``client``'s socket; start ``sync_manager daemon
    DAEMON_ARGV`` in the background if none does."""
    try:
        client.version()
        return
    except DaemonNotRunning as err:
        why = err.detail
    shown = " ".join(["sync_manager", "daemon", *daemon_argv])
    report(f"{why}; starting one in the background: {shown}")
    argv = [sys.executable, "-m", "sync_manager", "daemon", *daemon_argv]
    env = dict(os.environ, SANLOCK_RUN_DIR=os.path.dirname(client.path))
    try:
        # The daemon forks; its parent exits once the child listens, and the child's stderr
        # (the pipe) is replaced by /dev/null at that moment, so this returns then.
        done = subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=DAEMON_START_SECONDS,
            check=False,
        )
        failed = done.returncode != 0
        output = done.stderr.decode(errors="replace").strip()
    except subprocess.TimeoutExpired:
        failed, output = True, f"not ready after {DAEMON_START_SECONDS:g} s"
    except OSError as err:
        failed, output = True, f"{argv[0]}: {err.strerror}"
    try:
        client.version()  # another wrapper may have started one meanwhile
    except SanlockError:
        lines = [line for line in output.splitlines() if line.strip()]
        raise CommandNotRun(
            f"the daemon did not start: {lines[-1] if lines else 'it exited'}",
            "the command was not run; see the daemon's log (syslog)",
        ) from None
    if not failed:
        report(f"daemon started (pid {_daemon_pid(client)})")


def _daemon_pid(client: Client) -> str:
    path = os.path.join(os.path.dirname(client.path), "sanlock.pid")
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip() or "?"
    except (OSError, ValueError):
        return "?"


def join_lockspace(client: Client, ls: LockspaceSpec, report: Report) -> None:
    """Join ``ls`` unless it is joined (or being joined: then wait for it).

    ``ls.host_id`` 0 accepts whatever host id it is joined with. UsageError if it is joined
    from another disk or with another host id.
    """
    where = (ls.disk.path, ls.disk.offset)
    for info in _lockspaces(client):
        if info.name != ls.name:
            continue
        if (info.path, info.offset) != where:
            raise UsageError(
                f"lockspace {ls.name} is joined from {info.path}:{info.offset}, "
                f"not {ls.disk.path}:{ls.disk.offset}"
            )
        if ls.host_id and info.host_id != ls.host_id:
            raise UsageError(
                f"lockspace {ls.name} is joined as host id {info.host_id}, not {ls.host_id}"
            )
        if info.removing:
            raise CommandNotRun(
                f"lockspace {ls.name} is being removed from this host",
                "the command was not run; try again once it is gone",
            )
        if info.adding:
            report(f"lockspace {ls.name} is being joined; waiting for it")
            _wait_joined(client, LockspaceSpec(ls.name, info.host_id, ls.disk))
        return
    if not ls.host_id:
        raise UsageError(
            f"lockspace {ls.name} is not joined and no host id was given: use -i HOST_ID "
            "(or a host id in -s LS:HOST_ID:PATH:OFFSET)"
        )
    io_timeout = _disk_io_timeout(client, ls)
    t = Timeouts(io_timeout or 10)
    report(
        f"joining lockspace {ls.name} as host id {ls.host_id} (io_timeout {t.io_timeout} s): "
        f"this takes about {t.delta_short_delay} s, up to {t.delta_acquire_held_wait} s if "
        f"host id {ls.host_id} was in use by another host recently"
    )
    started = time.monotonic()
    try:
        client.add_lockspace(
            ls.name, ls.host_id, ls.disk.path, ls.disk.offset, io_timeout=io_timeout
        )
    except SanlockError as err:
        if err.name == "EINPROGRESS":
            _wait_joined(client, ls)
        elif err.name != "EEXIST":
            raise CommandNotRun(
                f"cannot join lockspace {format_lockspace(ls)}: {err}",
                "the command was not run; is the lockspace initialized there "
                f"(sync_manager direct init -s {ls.name}:0:...), and is host id "
                f"{ls.host_id} this host's?",
            ) from None
    took = time.monotonic() - started
    report(f"joined lockspace {ls.name} as host id {ls.host_id} in {took:.1f} s")


def _lockspaces(client: Client) -> list[LockspaceInfo]:
    try:
        return client.get_lockspaces()
    except SanlockError as err:
        raise CommandNotRun(f"cannot list the daemon's lockspaces: {err}") from None


def _disk_io_timeout(client: Client, ls: LockspaceSpec) -> int:
    """The io_timeout the lockspace was initialized with (0: the daemon's default)."""
    try:
        leader = client.read_lockspace(ls.disk.path, ls.disk.offset, host_id=ls.host_id)
    except SanlockError:
        return 0  # add_lockspace will say what is wrong
    if leader.name and leader.name != ls.name:
        raise UsageError(
            f"the lockspace at {ls.disk.path}:{ls.disk.offset} is {leader.name}, not {ls.name}"
        )
    return leader.io_timeout


def _wait_joined(client: Client, ls: LockspaceSpec) -> None:
    joined = client.inq_lockspace(ls.name, ls.host_id, ls.disk.path, ls.disk.offset, wait=True)
    if not joined:
        raise CommandNotRun(
            f"lockspace {ls.name} could not be joined (see the daemon's log)",
            "the command was not run",
        )


# --- 2, 3. the leases ------------------------------------------------------------------------


def hold_leases(client: Client, plan: Plan) -> Registration:
    """Register and acquire every lease of ``plan`` (then restrict); the registration.

    LeaseBusy when one is held elsewhere, CommandNotRun on another failure; the leases
    already acquired are released (the connection closes) before either is raised.
    """
    try:
        reg = client.register()
    except DaemonNotRunning as err:
        raise CommandNotRun(
            f"cannot register with the daemon: {err.detail}",
            "the command was not run; start the daemon first (sync_manager daemon) and join "
            "the lockspace (sync_manager client add_lockspace)",
        ) from None
    except SanlockError as err:
        raise CommandNotRun(f"cannot register with the daemon: {err}") from None
    try:
        for spec in plan.resources:
            try:
                reg.acquire(spec, owner_name=plan.owner_name)
            except SanlockError as err:
                raise _not_acquired(client, spec, err) from None
        if plan.restrict:
            try:
                reg.restrict(RestrictFlag.ALL)
            except SanlockError as err:
                raise CommandNotRun(f"cannot restrict the registration: {err}") from None
    except BaseException:
        reg.close()
        raise
    return reg


def _not_acquired(client: Client, spec: ResourceSpec, err: SanlockError) -> CommandNotRun:
    res = format_resource(spec)
    if err.name in _BUSY:
        return LeaseBusy(spec, *holder_text(spec, find_holder(client, spec)))
    if err.name == "ENOSPC":
        return CommandNotRun(
            f"cannot acquire lease {spec.name} ({res}): lockspace {spec.lockspace} is not "
            "joined on this host",
            "the command was not run; join it first: sync_manager client add_lockspace "
            f"-s {spec.lockspace}:HOST_ID:PATH:OFFSET",
        )
    hint = ""
    if err.name in ("SANLK_LEADER_MAGIC", "SANLK_LEADER_RESOURCE", "SANLK_LEADER_LOCKSPACE"):
        hint = f"; is the lease initialized there (sync_manager direct init -r {res})?"
    return CommandNotRun(
        f"cannot acquire lease {spec.name} ({res}): {err.detail} ({err.name})",
        f"the command was not run{hint}",
    )


# --- 4, 5. privileges and exec ---------------------------------------------------------------


def drop_privileges(user: User) -> None:
    """Become ``user``: supplementary groups, gid, uid (in that order, as root must)."""
    if os.geteuid() != 0:
        if user.uid == os.geteuid():
            return
        raise CommandNotRun(f"-U {user.name}: only root can run a command as another user")
    try:
        os.initgroups(user.name, user.gid)
        os.setgid(user.gid)
        os.setuid(user.uid)
    except OSError as err:
        raise CommandNotRun(f"cannot become user {user.name}: {err.strerror}") from None


def exec_command(reg: Registration, plan: Plan) -> NoReturn:
    """Replace this process with the command; it inherits ``reg`` (and so the leases)."""
    os.set_inheritable(reg.fileno(), True)
    if plan.user is not None:
        drop_privileges(plan.user)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores them; exec keeps "ignored"
        signal.signal(sig, signal.SIG_DFL)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    try:
        os.execvp(plan.argv[0], list(plan.argv))
    except OSError as err:
        status = EXIT_NOT_FOUND if err.errno in (errno.ENOENT, errno.ENOTDIR) else EXIT_CANNOT_EXEC
        raise CommandNotRun(
            f"cannot run {plan.argv[0]}: {err.strerror}",
            "the leases were released",
            exit_status=status,
        ) from None


def run(
    client: Client, plan: Plan, report: Report, *, daemon_argv: Sequence[str] | None = None
) -> NoReturn:
    """The whole wrapper: daemon (started with ``daemon_argv`` if given and none runs),
    lockspace (``plan.join``), leases, exec. Returns only by raising CommandNotRun."""
    if daemon_argv is not None:
        ensure_daemon(client, daemon_argv, report)
    if plan.join is not None:
        join_lockspace(client, plan.join, report)
    reg = hold_leases(client, plan)
    exec_command(reg, plan)
