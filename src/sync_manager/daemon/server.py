"""The daemon's socket: sanlock's client protocol on ``<run_dir>/sanlock.sock`` (protocol 1, 2).

One asyncio task per connection reads a byte stream, cuts it into requests
(``protocol/framing.py``), hands each to its handler and writes the reply. A bad message never
ends the daemon and never stalls another connection: a bad magic or a newer protocol drops the
header, a malformed payload is answered with sanlock's code, an unknown command is logged and
dropped, a message larger than sanlock accepts closes that connection only. A registered
connection that closes is a process gone: its leases are released.
"""

from __future__ import annotations

import asyncio
import errno
import grp
import logging
import os
import socket
import stat
import struct

from sync_manager import protocol as p
from sync_manager.daemon.clients import Client, Peer
from sync_manager.daemon.handlers import Context, handle
from sync_manager.daemon.service import Daemon
from sync_manager.errors import UsageError
from sync_manager.protocol.flags import RestrictFlag
from sync_manager.protocol.header import Command

__all__ = ["SOCKET_NAME", "Server"]

log = logging.getLogger("sync_manager.server")

SOCKET_NAME = "sanlock.sock"
SOCKET_MODE = 0o660
READ_SIZE = 64 * 1024
# Connections the kernel queues while the loop is busy (sanlock: 5; clients then wait in
# connect, and a burst of many clients, e.g. a host starting its VMs, is no reason to).
BACKLOG = 512
CLOSE_GRACE = 2.0  # seconds a reply in progress may take when the daemon stops
_PEERCRED = struct.Struct("3i")

# After these commands sanlock closes the connection (protocol 2.4, class D).
_CLOSE_AFTER = frozenset(
    {
        Command.SHUTDOWN, Command.STATUS, Command.HOST_STATUS, Command.RENEWAL,
        Command.LOG_DUMP, Command.GET_LOCKSPACES, Command.GET_HOSTS, Command.SET_CONFIG,
        Command.END_EVENT,
    }
)  # fmt: skip


class Server:
    """The listening socket and its connections."""

    def __init__(
        self, daemon: Daemon, run_dir: str, *, socket_group: str = "", admin_group: str = ""
    ) -> None:
        self.daemon = daemon
        self.path = os.path.join(run_dir, SOCKET_NAME)
        self.socket_gid = _group_id(socket_group) if socket_group else None
        self.admin_gid = _group_id(admin_group) if admin_group else None
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._replying: set[asyncio.Future[None]] = set()  # one per reply being made

    async def start(self) -> None:
        """Bind (replacing a stale socket file), set its mode and group, listen."""
        if os.path.exists(self.path) and stat.S_ISSOCK(os.lstat(self.path).st_mode):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._serve, path=self.path, backlog=BACKLOG)
        os.chmod(self.path, SOCKET_MODE)
        if self.socket_gid is not None:
            os.chown(self.path, -1, self.socket_gid)
        log.info("listening on %s (mode %o)", self.path, SOCKET_MODE)

    async def close(self) -> None:
        """Stop listening, let replies being made go out (SHUTDOWN_WAIT's), close every
        connection, remove the socket file."""
        if self._server is not None:
            self._server.close()
        if self._replying:
            await asyncio.wait(list(self._replying), timeout=CLOSE_GRACE)
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if os.path.exists(self.path):
            os.unlink(self.path)

    # --- one connection ------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        sock: socket.socket = writer.get_extra_info("socket")
        pid, uid, gid = _PEERCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
        client = self.daemon.clients.add(Peer(pid, uid, gid))
        client.send = writer.write
        ctx_admin = self._is_admin(client.peer)
        try:
            await self._converse(client, ctx_admin, reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            if client.events_of is not None and writer.write in client.events_of.event_sinks:
                client.events_of.event_sinks.remove(writer.write)
            if client.registered:
                await self.daemon.client_gone(client)
            else:
                self.daemon.clients.remove(client)

    async def _converse(
        self,
        client: Client,
        admin: bool,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        parser = p.RequestParser()
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                _log_truncated(parser, client)
                return
            if client.events_of is not None:
                return  # an event connection: any bytes (end_event's 1) end it
            parser.restricted = bool(client.restricted & RestrictFlag.ALL)
            try:
                parser.feed(data)
            except p.OversizedMessage as err:
                log.warning("pid %d: %s; closing the connection", client.peer.pid, err)
                return
            while True:
                try:
                    frame = parser.next()
                except (p.BadMessageMagic, p.UnsupportedProtocol) as err:
                    log.warning("pid %d: message dropped: %s", client.peer.pid, err)
                    continue
                except p.OversizedMessage as err:
                    log.warning("pid %d: %s; closing the connection", client.peer.pid, err)
                    return
                if frame is None:
                    break
                if not await self._one(client, admin, frame, writer):
                    return

    async def _one(
        self, client: Client, admin: bool, frame: p.Frame, writer: asyncio.StreamWriter
    ) -> bool:
        """Handle one request; False when the connection is to be closed."""
        header = frame.header
        if client.restricted & RestrictFlag.ALL:
            log.warning("pid %d: restricted; command %d dropped", client.peer.pid, header.cmd)
            return True
        try:
            request = frame.decode()
        except p.UnknownCommand as err:
            log.warning("pid %d: %s; dropped", client.peer.pid, err)
            return True
        except p.MalformedMessage as err:
            log.warning("pid %d: %s; answering %d", client.peer.pid, err, err.code)
            command = header.command
            assert command is not None
            await _send(writer, header, p.error_reply(command, err.code))
            return True
        ctx = Context(self.daemon, client, header, admin)
        replied = asyncio.get_running_loop().create_future()
        self._replying.add(replied)
        try:
            try:
                reply = await handle(ctx, request)
            except Exception:  # a bug: log it with its traceback, answer, and keep serving
                log.exception("pid %d: %s failed", client.peer.pid, request.COMMAND.name)
                reply = p.error_reply(request.COMMAND, -errno.EFAULT)
            await _send(writer, header, reply)
        finally:
            self._replying.discard(replied)
            replied.set_result(None)
        return request.COMMAND not in _CLOSE_AFTER

    def _is_admin(self, peer: Peer) -> bool:
        """Root, the daemon's own user, or a member of the admin group."""
        if peer.uid in (0, os.geteuid()):
            return True
        if self.admin_gid is None:
            return False
        return peer.gid == self.admin_gid or self.admin_gid in _groups_of(peer.pid)


async def _send(writer: asyncio.StreamWriter, header: p.Header, reply: p.Reply) -> None:
    if isinstance(reply, p.NoReply):
        return
    writer.write(p.encode_reply(header, reply))
    await writer.drain()


def _log_truncated(parser: p.RequestParser, client: Client) -> None:
    try:
        parser.eof()
    except p.TruncatedMessage as err:
        log.info("pid %d: connection closed mid-message: %s", client.peer.pid, err)


def _group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        if name.isdigit():
            return int(name)
        raise UsageError(f"no such group: {name}") from None


def _groups_of(pid: int) -> set[int]:
    """The supplementary groups of ``pid`` (from /proc); empty if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except OSError:
        pass
    return set()
