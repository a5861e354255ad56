"""Typed errors of the client socket protocol.

Every failure to decode bytes from a peer (a client for the daemon, the daemon for a client)
raises a subclass of :class:`ProtocolError`, itself a
:class:`~sync_manager.errors.SyncManagerError`. Nothing in :mod:`sync_manager.protocol` lets a
``struct.error``, ``IndexError`` or ``UnicodeDecodeError`` escape on bad input.

``code`` is what sanlock's daemon answers for the same fault, so a daemon can reply with it
unchanged: a payload shorter than the command needs is a short ``recv`` in sanlock, answered
``-ENOTCONN``; a resource with 0 or more than 4 disks is ``-ERANGE``; more than 8 resources in
one acquire is ``-E2BIG``. Faults sanlock never answers (a bad magic number, an unknown command)
keep the generic code; the daemon drops those messages without a reply.
"""

from __future__ import annotations

import errno

from sync_manager.errors import SyncManagerError

__all__ = [
    "BadMessageMagic",
    "MalformedMessage",
    "OversizedMessage",
    "ProtocolError",
    "TruncatedMessage",
    "UnknownCommand",
    "UnsupportedProtocol",
]


def _show(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value > 9:
        return hex(value)
    return repr(value) if isinstance(value, str | bytes) else str(value)


class ProtocolError(SyncManagerError):
    """A message on the socket is not what the protocol allows.

    ``what`` names the message or field, ``expected`` and ``found`` describe the mismatch.
    """

    def __init__(
        self,
        what: str,
        *,
        expected: object = None,
        found: object = None,
        code: int | None = None,
    ) -> None:
        self.what = what
        self.expected = expected
        self.found = found
        if code is not None:
            self.code = code
        detail = ""
        if expected is not None or found is not None:
            detail = f": expected {_show(expected)}, found {_show(found)}"
        super().__init__(f"{self.kind} in {what}{detail}")

    kind = "protocol error"


class MalformedMessage(ProtocolError):
    """A header or payload field has a value the command does not allow, or bytes are missing.

    The default code is sanlock's answer to a short read of a payload, ``-ENOTCONN``.
    """

    kind = "malformed message"
    code = -errno.ENOTCONN


class TruncatedMessage(MalformedMessage):
    """The bytes end before the message does (the peer closed the connection mid-message)."""

    kind = "truncated message"


class BadMessageMagic(ProtocolError):
    """The header's magic number is not ``SM_MAGIC``; sanlock drops such a header silently."""

    kind = "bad magic number"


class UnsupportedProtocol(ProtocolError):
    """The header's protocol major version is newer than ours; sanlock drops the header."""

    kind = "unsupported protocol version"


class UnknownCommand(ProtocolError):
    """The header's command number is not one sanlock knows; sanlock drops the header."""

    kind = "unknown command"


class OversizedMessage(ProtocolError):
    """A message claims more bytes than any sanlock message can have (``MAX_CLIENT_MSG``).

    The byte stream cannot be followed past such a message: close the connection.
    """

    kind = "oversized message"
    code = -errno.E2BIG
