"""A registered connection: the leases acquired on it belong to this process (spec 1.3).

The daemon learns our pid from the socket (``SO_PEERCRED``) at REGISTER, and answers nothing
to it. Leases acquired on the connection live until they are released or the connection
closes (the daemon then releases them, as when the process dies). Commands on it target the
connection itself (``data2`` = ``0xFFFFFFFF``); one at a time, as the daemon requires.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Self

from sync_manager.client.connection import Connection
from sync_manager.client.errors import SanlockError
from sync_manager.client.leases import (
    acquire_request,
    check,
    convert_request,
    held_leases,
    release_request,
)
from sync_manager.client.resources import DiskArg, ResourceLike, resource, to_wire
from sync_manager.client.results import HeldLease
from sync_manager.errors import UsageError
from sync_manager.protocol import (
    HELPER_PATH_LEN,
    SELF,
    Inquire,
    Killpath,
    KillpathFlag,
    Register,
    Request,
    Restrict,
    RestrictFlag,
)

__all__ = ["Registration", "killpath_args"]

_KILLPATH_MAX = HELPER_PATH_LEN - 2  # the client's snprintf(size 127) keeps 126 bytes


def killpath_args(args: Iterable[str]) -> bytes:
    """The args field of KILLPATH as python3-sanlock builds it: spaces and backslashes escaped
    with a backslash, joined by single spaces."""
    out = []
    for arg in args:
        out.append(arg.replace("\\", "\\\\").replace(" ", "\\ "))
    return " ".join(out).encode("utf-8", "surrogateescape")


class Registration:
    """A registered connection to the daemon (use :meth:`Client.register`).

    A context manager: leaving it closes the connection, which releases every lease still
    held on it. Not thread-safe: serialize calls on one registration.
    """

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self._restricted_all = False
        connection.send(Register())

    def fileno(self) -> int:
        """The connection's file descriptor (-1 once closed); an exec'd child may inherit it."""
        return self._conn.fileno()

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._conn.closed

    def close(self) -> None:
        """Close the connection; the daemon releases the leases still held on it."""
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, request: Request) -> int:
        name = request.COMMAND.name.lower()
        if self._restricted_all:
            raise UsageError(f"{name}: this registration is restricted (RESTRICT_ALL)")
        return check(name, self._conn.call(request))

    def acquire(
        self,
        resources: ResourceLike | Iterable[ResourceLike],
        *,
        lvb: bool = False,
        orphan: bool = False,
        orphan_only: bool = False,
        owner_nowait: bool = False,
        persistent: bool = False,
        num_hosts: int = 0,
        owner_name: str = "",
    ) -> None:
        """Acquire 1 to 8 leases for this process (all or none).

        ``orphan``/``orphan_only`` adopt orphaned leases, ``persistent`` keeps the leases as
        orphans when this process goes away, ``owner_nowait`` fails at once if another host
        owns a lease, ``num_hosts`` rewrites a lease's host count, ``owner_name`` is the
        name STATUS shows. SanlockError with sanlock's code on failure.
        """
        self._call(
            acquire_request(
                resources,
                SELF,
                lvb=lvb,
                orphan=orphan,
                orphan_only=orphan_only,
                owner_nowait=owner_nowait,
                persistent=persistent,
                num_hosts=num_hosts,
                owner_name=owner_name,
            )
        )

    def release(
        self,
        resources: ResourceLike | Iterable[ResourceLike] = (),
        *,
        all: bool = False,
    ) -> None:
        """Release leases held here (``all``: every one). ``LS:NAME`` strings are enough."""
        self._call(release_request(resources, SELF, all=all))

    def inquire(self) -> list[HeldLease]:
        """The leases held here, in the daemon's order."""
        if self._restricted_all:
            raise UsageError("inquire: this registration is restricted (RESTRICT_ALL)")
        return held_leases("inquire", self._conn.call(Inquire(target=SELF)))

    def convert(
        self, res: ResourceLike, *, shared: bool | None = None, owner_nowait: bool = False
    ) -> None:
        """Switch a held lease to shared or exclusive (None: as the string's ``:SH`` says)."""
        self._call(convert_request(res, SELF, shared=shared, owner_nowait=owner_nowait))

    def killpath(self, path: str, args: Iterable[str] = (), *, append_pid: bool = False) -> None:
        """The program the daemon runs (with ``args``) when this process's leases must go.

        ``append_pid`` adds the pid as the last argument. Each of path and the joined args
        must fit in 126 bytes. Leases acquired after this call use it.
        """
        raw_path = path.encode("utf-8", "surrogateescape")
        raw_args = killpath_args(args)
        if not raw_path or len(raw_path) > _KILLPATH_MAX or len(raw_args) > _KILLPATH_MAX:
            raise UsageError(f"killpath: path and args must each be 1..{_KILLPATH_MAX} bytes")
        flags = KillpathFlag.PID if append_pid else 0
        self._call(Killpath(raw_path, raw_args, int(flags), SELF))

    def restrict(self, flags: int | RestrictFlag) -> None:
        """Set the connection's ``SANLK_RESTRICT_*`` flags (replacing them).

        After ``RestrictFlag.ALL`` the daemon ignores every request on this connection (they
        get no reply), so this object refuses them; leases stay held until it closes.
        """
        self._call(Restrict(int(flags), SELF))
        if flags & RestrictFlag.ALL:
            self._restricted_all = True

    @contextlib.contextmanager
    def lease(
        self,
        lockspace: str,
        name: str,
        disks: Iterable[DiskArg],
        *,
        shared: bool = False,
        lver: int | None = None,
        **options: bool | int | str,
    ) -> Iterator[HeldLease]:
        """Hold one lease for the ``with`` block: acquire on entry, release on exit.

        Yields the lease as INQUIRE reports it (its lver). ``options`` are
        :meth:`acquire`'s. A failed release after the block raised is not reported over it.
        """
        spec = resource(lockspace, name, disks, lver=lver, shared=shared)
        self.acquire(spec, **options)  # type: ignore[arg-type]
        wire = to_wire(spec)
        try:
            key = (wire.lockspace, wire.resource)
            found = [h for h in self.inquire() if (h.lockspace, h.name) == key]
            where = tuple((d.path, d.offset) for d in spec.disks)
            guess = HeldLease(spec.lockspace, spec.name, where, None if shared else lver, shared)
            held = found[0] if found else guess
            yield held
        except BaseException:
            with contextlib.suppress(SanlockError):
                self.release(spec)
            raise
        self.release(spec)
