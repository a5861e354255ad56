"""A typed Python client of the lease daemon, over sanlock 3.8's socket protocol.

It talks to our daemon and to sanlock's alike::

    from sync_manager.client import Client

    client = Client()  # $SANLOCK_RUN_DIR/sanlock.sock, else /run/sanlock/sanlock.sock
    client.add_lockspace("LS", 1, "/dev/vg/leases")
    with client.lease("LS", "vm1", [("/dev/vg/leases", 1048576)]) as lease:
        ...  # lease.lver; the lease is released when the block ends

Admin calls use one short connection each; :meth:`Client.register` gives the long-lived
connection that owns this process's leases. Every failure is a :class:`SanlockError`
(``.code``, ``.name``); :class:`DaemonNotRunning` when nothing listens on the socket.
"""

from __future__ import annotations

from sync_manager.client.api import Client
from sync_manager.client.connection import DEFAULT_RUN_DIR, SOCKET_NAME, Connection, socket_path
from sync_manager.client.errors import (
    ConnectionLost,
    DaemonNotRunning,
    DaemonTimeout,
    SanlockError,
)
from sync_manager.client.registration import Registration, killpath_args
from sync_manager.client.resources import DiskArg, ResourceLike, resource
from sync_manager.client.results import (
    ClientState,
    DaemonState,
    DaemonVersion,
    HeldLease,
    HostInfo,
    HostStatus,
    LockspaceInfo,
    LockspaceLeader,
    LockspaceState,
    ResourceInfo,
    ResourceOwners,
    ResourceState,
    Status,
)
from sync_manager.protocol import ForceMode, HostState, RestrictFlag

__all__ = [
    "DEFAULT_RUN_DIR",
    "SOCKET_NAME",
    "Client",
    "ClientState",
    "Connection",
    "ConnectionLost",
    "DaemonNotRunning",
    "DaemonState",
    "DaemonTimeout",
    "DaemonVersion",
    "DiskArg",
    "ForceMode",
    "HeldLease",
    "HostInfo",
    "HostState",
    "HostStatus",
    "LockspaceInfo",
    "LockspaceLeader",
    "LockspaceState",
    "Registration",
    "ResourceInfo",
    "ResourceLike",
    "ResourceOwners",
    "ResourceState",
    "RestrictFlag",
    "SanlockError",
    "Status",
    "killpath_args",
    "resource",
    "socket_path",
]
