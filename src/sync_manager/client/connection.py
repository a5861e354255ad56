"""One connection to the daemon's socket: send a request, read its reply (spec 1.1, 1.3).

The socket is ``$SANLOCK_RUN_DIR/sanlock.sock`` (``/run/sanlock`` when the variable is unset),
as libsanlock finds it. Replies are framed by :class:`~sync_manager.protocol.ReplyParser`
(the reply's command decides how much to read; STATUS-like streams end when the daemon closes
the connection). Socket failures become :class:`~sync_manager.client.errors.SanlockError`
subclasses carrying the code libsanlock would return.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from pathlib import Path

from sync_manager.client.errors import (
    ConnectionLost,
    DaemonNotRunning,
    DaemonTimeout,
    SanlockError,
)
from sync_manager.protocol import (
    Command,
    ProtocolError,
    Reply,
    ReplyParser,
    Request,
    TruncatedMessage,
    encode_request,
)

__all__ = ["DEFAULT_RUN_DIR", "SOCKET_NAME", "Connection", "socket_path"]

DEFAULT_RUN_DIR = "/run/sanlock"
SOCKET_NAME = "sanlock.sock"
_RECV_SIZE = 65536


def socket_path(run_dir: str | os.PathLike[str] | None = None) -> str:
    """The daemon's socket: in ``run_dir``, else ``$SANLOCK_RUN_DIR``, else /run/sanlock."""
    if run_dir is None:
        run_dir = os.environ.get("SANLOCK_RUN_DIR") or DEFAULT_RUN_DIR
    return str(Path(run_dir) / SOCKET_NAME)


def _command_name(command: Command) -> str:
    return command.name.lower()


def _connect(sock: socket.socket, path: str, timeout: float | None) -> None:
    """Connect, waiting up to ``timeout`` while the daemon's accept queue is full.

    A non-blocking AF_UNIX connect (which is what Python's socket timeouts use) fails at once
    with EAGAIN when the queue is full; a blocking one waits for room, as libsanlock's does,
    bounded by SO_SNDTIMEO (its expiry is EAGAIN too).
    """
    if timeout is not None:
        seconds = int(timeout)
        micros = max(int((timeout - seconds) * 1_000_000), 0 if seconds else 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", seconds, micros))
    sock.connect(path)


class Connection:
    """A connected socket to the daemon; ``timeout`` (seconds, None: forever) bounds each read.

    Closing is idempotent; a closed connection refuses to send.
    """

    def __init__(self, path: str, timeout: float | None, command: Command) -> None:
        self.path = path
        self.timeout = timeout
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        name = _command_name(command)
        try:
            _connect(sock, path, timeout)
        except (FileNotFoundError, ConnectionRefusedError) as err:
            sock.close()
            raise DaemonNotRunning(name, path, err.errno or errno.ENOENT) from None
        except (TimeoutError, BlockingIOError):
            sock.close()
            raise DaemonTimeout(name, timeout or 0.0) from None
        except OSError as err:
            sock.close()
            code = -(err.errno or errno.EIO)
            raise SanlockError(name, code, f"cannot connect to {path}: {err.strerror}") from None
        sock.settimeout(timeout)
        self._sock: socket.socket | None = sock

    def fileno(self) -> int:
        """The socket's file descriptor (-1 once closed)."""
        return -1 if self._sock is None else self._sock.fileno()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._sock is None

    def close(self) -> None:
        """Close the socket (the daemon then drops what it was doing for this connection)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def send(self, request: Request) -> None:
        """Send one request."""
        name = _command_name(request.COMMAND)
        sock = self._open(name)
        try:
            sock.sendall(encode_request(request))
        except TimeoutError:
            raise DaemonTimeout(name, self.timeout or 0.0) from None
        except OSError as err:
            raise ConnectionLost(name, -(err.errno or errno.EPIPE), _lost(err)) from None

    def receive(self, command: Command) -> Reply:
        """Read the reply to a ``command`` request."""
        name = _command_name(command)
        sock = self._open(name)
        parser = ReplyParser(command)
        try:
            while True:
                try:
                    data = sock.recv(_RECV_SIZE)
                except TimeoutError:
                    raise DaemonTimeout(name, self.timeout or 0.0) from None
                except OSError as err:
                    raise ConnectionLost(name, -(err.errno or errno.EPIPE), _lost(err)) from None
                if not data:
                    return parser.eof()
                parser.feed(data)
                reply = parser.reply()
                if reply is not None:
                    return reply
        except TruncatedMessage:
            raise ConnectionLost(
                name, -1, "the daemon closed the connection before its reply"
            ) from None
        except ProtocolError as err:
            raise SanlockError(name, err.code, f"malformed reply from the daemon: {err}") from None

    def call(self, request: Request) -> Reply:
        """Send ``request`` and read its reply."""
        self.send(request)
        return self.receive(request.COMMAND)

    def _open(self, name: str) -> socket.socket:
        if self._sock is None:
            raise ConnectionLost(name, -errno.EBADF, "the connection is closed")
        return self._sock


def _lost(err: OSError) -> str:
    return f"connection to the daemon lost: {err.strerror or err}"
