"""The daemon's clients: one per connection; a registered one owns leases (protocol 1.3).

A connection becomes *registered* with REGISTER: its peer's pid (SO_PEERCRED) owns every
lease acquired through it or on its behalf, for as long as the connection stays open. When it
closes (the process exited, or closed the fd), the client is dead and its leases are released.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sync_manager.protocol.flags import RestrictFlag
from sync_manager.supervisor.executor import Killpath, Target
from sync_manager.supervisor.policy import ClientState

if TYPE_CHECKING:
    from sync_manager.daemon.lockspace import Lockspace
    from sync_manager.daemon.resources import Token

__all__ = ["Client", "ClientTable", "Peer"]


@dataclass(frozen=True, slots=True)
class Peer:
    """The credentials of a connection's peer (SO_PEERCRED)."""

    pid: int
    uid: int
    gid: int


@dataclass(eq=False)
class Client:
    """One connection, and if registered, the process that owns its leases."""

    ci: int
    peer: Peer
    registered: bool = False
    owner_name: bytes = b""
    restricted: int = 0
    killpath: bytes = b""
    killargs: bytes = b""
    killpath_pid: bool = False
    tokens: list[Token] = field(default_factory=list)
    cmd_active: bool = False
    dead: bool = False
    kill: ClientState | None = None  # the fencing policy's state while it is being killed
    label: bytes = b""  # the name STATUS shows for an unregistered connection
    send: Callable[[bytes], None] | None = None  # unsolicited writes (events)
    events_of: Lockspace | None = None  # REG_EVENT made this an event connection

    @property
    def pid(self) -> int:
        """The owner pid of a registered client; -1 otherwise (as sanlock's STATUS shows)."""
        return self.peer.pid if self.registered else -1

    @property
    def display_name(self) -> bytes:
        """The owner name STATUS prints: the acquire's owner_name, else the pid, or a label."""
        if not self.registered:
            return self.label
        return self.owner_name

    def kill_target(self) -> Target:
        """What the supervisor's executor needs to act on this client."""
        killpath = None
        if self.killpath:
            killpath = Killpath(
                self.killpath.decode("utf-8", "replace"), self.killargs.decode("utf-8", "replace")
            )
        return Target(killpath=killpath)

    def policy_state(self) -> ClientState:
        """This client as the fencing policy sees it (kill state kept between checks)."""
        if self.kill is not None:
            return self.kill
        return ClientState(
            self.peer.pid,
            killpath=bool(self.killpath),
            killpath_pid=self.killpath_pid,
            restrict_sigkill=bool(self.restricted & RestrictFlag.SIGKILL),
            restrict_sigterm=bool(self.restricted & RestrictFlag.SIGTERM),
            dead=self.dead,
        )


class ClientTable:
    """Every connection, in slot order (STATUS lists them so)."""

    def __init__(self) -> None:
        self._clients: dict[int, Client] = {}
        self._next = itertools.count(2)  # sanlock's slots 0 and 1 are its helper and listener

    def add(self, peer: Peer) -> Client:
        """A new connection."""
        client = Client(next(self._next), peer)
        self._clients[client.ci] = client
        return client

    def remove(self, client: Client) -> None:
        """The connection is gone."""
        self._clients.pop(client.ci, None)

    def __iter__(self) -> Iterator[Client]:
        return iter(list(self._clients.values()))

    def registered(self, pid: int) -> Client | None:
        """The first live registered client of ``pid`` (protocol 1.4), or None."""
        for client in self._clients.values():
            if client.registered and client.peer.pid == pid and not client.dead:
                return client
        return None
