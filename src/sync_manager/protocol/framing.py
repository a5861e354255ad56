"""Incremental framing: cut a byte stream into messages, as the daemon and clients read it.

sanlock never trusts ``length`` for requests: the daemon reads the header, then exactly the
structs the command calls for (a count from ``data``, ``num_disks`` from each resource), so a
request is framed by its command, not by ``length`` (the CLI's HOST_STATUS says 32 and sends
1104 more bytes). :class:`RequestParser` does the same, and the same as sanlock on bad input:

* a bad magic number: the 32-byte header is dropped (:class:`BadMessageMagic`), and parsing
  goes on with the next bytes (sanlock logs it and keeps the connection);
* a protocol major newer than ours (except for VERSION): the header is dropped
  (:class:`UnsupportedProtocol`), its payload is not read;
* an unknown command: a :class:`Frame` with no payload (sanlock reads only the header, and
  :func:`~sync_manager.protocol.messages.decode_request` raises UnknownCommand);
* a payload whose structure is invalid (more than 8 resources, 0 or more than 4 disks): the
  frame takes the ``length`` the header declares, as sanlock drains it before answering the
  error that decoding the frame then raises;
* more than ``MAX_CLIENT_MSG`` bytes declared or implied: :class:`OversizedMessage`, after
  which the stream cannot be followed (the parser refuses more input; close the connection).

``restricted`` mirrors ``SANLK_RESTRICT_ALL``: every message is read as a bare header (to be
dropped by the daemon). :class:`ReplyParser` frames a client's reply by its command.
"""

from __future__ import annotations

from dataclasses import dataclass

from sync_manager.protocol.errors import (
    BadMessageMagic,
    MalformedMessage,
    OversizedMessage,
    TruncatedMessage,
    UnsupportedProtocol,
)
from sync_manager.protocol.header import (
    HEADER_SIZE,
    MAX_CLIENT_MSG,
    SM_MAGIC,
    SM_PROTO,
    SM_PROTO_MAJOR_MASK,
    Command,
    Header,
)
from sync_manager.protocol.messages import (
    REPLY_TYPES,
    decode_reply,
    decode_request,
    request_payload_size,
)
from sync_manager.protocol.replies import Reply
from sync_manager.protocol.requests import Request

__all__ = ["Frame", "ReplyParser", "RequestParser", "check_header"]

_PREFIX = 64 * 1024  # > 8 resources of 4 disks and the options (34680 bytes)


@dataclass(frozen=True, slots=True)
class Frame:
    """One request as the daemon received it: its header and exactly its payload."""

    header: Header
    payload: bytes = b""

    def decode(self) -> Request:
        """The typed request (UnknownCommand / MalformedMessage with sanlock's reply code)."""
        return decode_request(self.header, self.payload)

    def pack(self) -> bytes:
        """The bytes received."""
        return self.header.pack() + self.payload


def check_header(header: Header) -> None:
    """BadMessageMagic or UnsupportedProtocol, where sanlock's daemon drops a header."""
    if header.magic != SM_MAGIC:
        raise BadMessageMagic("message header", expected=SM_MAGIC, found=header.magic)
    major = header.version & SM_PROTO_MAJOR_MASK
    if header.version and header.cmd != Command.VERSION and major > SM_PROTO & SM_PROTO_MAJOR_MASK:
        raise UnsupportedProtocol("message header", expected=SM_PROTO, found=header.version)


class RequestParser:
    """Feed it the bytes a client sends; take complete request frames out with :meth:`next`."""

    def __init__(self, *, restricted: bool = False, max_message: int = MAX_CLIENT_MSG) -> None:
        self.restricted = restricted
        self.max_message = max_message
        self._buffer = bytearray()
        self._header: Header | None = None
        self._broken = False

    def feed(self, data: bytes) -> None:
        """Append received bytes (OversizedMessage again if the stream is already lost)."""
        if self._broken:
            raise OversizedMessage("request stream", expected="no more input", found=len(data))
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned in a frame."""
        return len(self._buffer)

    def next(self) -> Frame | None:
        """The next complete frame, or None until more bytes arrive.

        Raises BadMessageMagic or UnsupportedProtocol after dropping the offending header (the
        parser stays usable), or OversizedMessage (it does not).
        """
        if self._broken:
            raise OversizedMessage("request stream", expected="no more input", found="input")
        if self._header is None:
            if len(self._buffer) < HEADER_SIZE:
                return None
            header = Header.unpack(self._buffer)
            del self._buffer[:HEADER_SIZE]
            check_header(header)
            self._header = header
        size = self._size(self._header)
        if len(self._buffer) < size:
            return None
        frame = Frame(self._header, bytes(self._buffer[:size]))
        del self._buffer[:size]
        self._header = None
        return frame

    def frames(self) -> list[Frame]:
        """Every complete frame now buffered (errors raise as in :meth:`next`)."""
        out = []
        while (frame := self.next()) is not None:
            out.append(frame)
        return out

    def pending(self) -> bytes:
        """The bytes received that are not part of a returned frame (an unfinished message)."""
        head = b"" if self._header is None else self._header.pack()
        return head + bytes(self._buffer)

    def eof(self) -> None:
        """The client closed its end: TruncatedMessage if a message was left unfinished."""
        if self._header is not None or self._buffer:
            needed = self._size(self._header) if self._header is not None else HEADER_SIZE
            raise TruncatedMessage("request", expected=needed, found=len(self._buffer))

    def _size(self, header: Header) -> int:
        """Payload bytes to read for ``header`` as far as the buffer shows (a growing answer)."""
        if self.restricted:
            return 0
        try:
            # payload_size answers more than it was shown while it needs more bytes, and its
            # answer is final once the prefix covers it: one call per attempt is enough. No
            # request's structure needs more than _PREFIX bytes to be sized.
            size = request_payload_size(header, bytes(self._buffer[:_PREFIX]))
        except MalformedMessage:
            size = max(header.payload_length, 0)
        if size > self.max_message:
            self._broken = True
            raise OversizedMessage("request", expected=f"<= {self.max_message}", found=size)
        return size


class ReplyParser:
    """Feed it the bytes of the daemon's reply to a ``command`` request; take the reply out."""

    def __init__(self, command: Command, *, max_message: int = MAX_CLIENT_MSG) -> None:
        self.command = command
        self.max_message = max_message
        self._buffer = bytearray()
        self._size: int | None = None
        self._header: Header | None = None

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        self._buffer += data

    def reply(self) -> Reply | None:
        """The reply once complete (None before; always None for a stream before :meth:`eof`)."""
        if not self._know_size() or self._size is None:
            return None
        total = HEADER_SIZE + self._size
        if len(self._buffer) < total:
            return None
        return decode_reply(self.command, bytes(self._buffer[:total]))

    def eof(self) -> Reply:
        """The daemon closed the connection: the reply, or TruncatedMessage if it is cut."""
        if not self._know_size():
            raise TruncatedMessage(
                f"{self.command.name} reply", expected=HEADER_SIZE, found=len(self._buffer)
            )
        if self._size is None:
            return decode_reply(self.command, bytes(self._buffer))
        reply = self.reply()
        if reply is None:
            raise TruncatedMessage(
                f"{self.command.name} reply",
                expected=HEADER_SIZE + self._size,
                found=len(self._buffer),
            )
        return reply

    def _know_size(self) -> bool:
        if self._header is not None:
            return True
        if len(self._buffer) < HEADER_SIZE:
            return False
        header = Header.unpack(self._buffer)
        if header.magic != SM_MAGIC:
            raise BadMessageMagic("reply header", expected=SM_MAGIC, found=header.magic)
        size = REPLY_TYPES[self.command].payload_size(header)
        if size is not None and size < 0:
            raise MalformedMessage(
                "reply length", expected=f">= {HEADER_SIZE}", found=header.length
            )
        if size is not None and size > self.max_message:
            raise OversizedMessage("reply", expected=f"<= {self.max_message}", found=size)
        self._header, self._size = header, size
        return True
