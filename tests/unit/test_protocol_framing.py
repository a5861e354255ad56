"""Incremental framing of requests (daemon side) and replies (client side)."""

from __future__ import annotations

import errno

import pytest

from sync_manager.protocol import (
    Acquire,
    BadMessageMagic,
    Command,
    Frame,
    Header,
    HostStatus,
    Inquire,
    Lockspace,
    LockspacesReply,
    MalformedMessage,
    OversizedMessage,
    Register,
    ReplyParser,
    RequestParser,
    Resource,
    Result,
    SetLvb,
    StateRecord,
    StateReply,
    StateType,
    TruncatedMessage,
    UnknownCommand,
    UnsupportedProtocol,
    encode_reply,
)

RES = Resource.make("LS", "R", [("/a", 0), ("/b", 512)])
STREAM = [Register(), Acquire((RES, RES)), HostStatus(Lockspace.make("LS")), Inquire()]
RAW = b"".join(r.encode() for r in STREAM)


def test_frames_survive_any_chunking() -> None:
    """Byte by byte or all at once, the same frames come out (HOST_STATUS by its command)."""
    for step in (1, 7, 100, len(RAW)):
        parser = RequestParser()
        frames: list[Frame] = []
        for i in range(0, len(RAW), step):
            parser.feed(RAW[i : i + step])
            frames += parser.frames()
        assert [f.decode() for f in frames] == STREAM
        assert parser.buffered == 0
        parser.eof()


def test_bad_magic_drops_one_header_and_goes_on() -> None:
    """sanlock logs a bad header and reads the next one."""
    parser = RequestParser()
    parser.feed(Header(Command.INQUIRE, magic=0x1234).pack() + Inquire().encode())
    with pytest.raises(BadMessageMagic) as info:
        parser.next()
    assert info.value.found == 0x1234
    assert parser.next() == Frame(Header(Command.INQUIRE, data2=0xFFFFFFFF))


def test_newer_major_is_dropped_but_version_is_not() -> None:
    """A header with a newer major is dropped (payload unread); VERSION skips the check."""
    parser = RequestParser()
    parser.feed(Header(Command.VERSION, version=0x30000).pack())
    assert parser.next() is not None
    parser.feed(Header(Command.INQUIRE, version=0x10000).pack())
    with pytest.raises(UnsupportedProtocol):
        parser.next()
    assert parser.buffered == 0


def test_unknown_command_is_a_bare_header() -> None:
    """sanlock reads only the header of a command it does not know."""
    parser = RequestParser()
    parser.feed(Header(77, length=64).pack() + Inquire().encode())
    frame = parser.next()
    assert frame == Frame(Header(77, length=64))
    with pytest.raises(UnknownCommand):
        frame.decode()
    assert parser.next() is not None


def test_invalid_structure_takes_the_declared_length() -> None:
    """Too many resources: the frame spans ``length`` (as sanlock drains it) and decoding
    raises the code to answer."""
    raw = bytearray(Acquire((RES,)).encode())
    raw[24:28] = (9).to_bytes(4, "little")
    parser = RequestParser()
    parser.feed(bytes(raw) + Inquire().encode())
    frame = parser.next()
    assert frame is not None and len(frame.payload) == len(raw) - 32
    with pytest.raises(MalformedMessage) as info:
        frame.decode()
    assert info.value.code == -errno.E2BIG
    assert parser.next() == Frame(Header(Command.INQUIRE, data2=0xFFFFFFFF))


def test_oversized_message_breaks_the_stream() -> None:
    """A declared size beyond MAX_CLIENT_MSG cannot be followed: the parser stops."""
    raw = SetLvb(RES, b"x").encode()
    parser = RequestParser()
    parser.feed(Header.unpack(raw).replace(length=(1 << 20) + 500).pack())
    with pytest.raises(OversizedMessage):
        parser.next()
    with pytest.raises(OversizedMessage):
        parser.feed(b"more")


def test_restricted_reads_headers_only() -> None:
    """RESTRICT_ALL: every message is a bare header to drop."""
    parser = RequestParser(restricted=True)
    parser.feed(Acquire((RES,)).encode()[:40])
    frame = parser.next()
    assert frame is not None and frame.payload == b"" and parser.buffered == 8


def test_eof_in_the_middle_is_truncation() -> None:
    """A connection that ends inside a message (or a header) reports what was missing."""
    parser = RequestParser()
    parser.feed(RAW[:40])
    assert parser.next() is not None and parser.next() is None
    with pytest.raises(TruncatedMessage):
        parser.eof()
    assert parser.pending() == RAW[32:40]


def test_reply_parser_sized_and_streamed() -> None:
    """A sized reply completes on its bytes; a status stream only at EOF."""
    lockspaces = LockspacesReply(0, (Lockspace.make("LS", 1, "/ids"),))
    raw = encode_reply(Header(Command.GET_LOCKSPACES), lockspaces)
    parser = ReplyParser(Command.GET_LOCKSPACES)
    parser.feed(raw[:100])
    assert parser.reply() is None
    parser.feed(raw[100:])
    assert parser.reply() == lockspaces == parser.eof()

    records = (StateRecord.make(StateType.DAEMON, b"me", {"a": 1}),)
    raw = encode_reply(Header(Command.STATUS), StateReply(0, records))
    parser = ReplyParser(Command.STATUS)
    parser.feed(raw)
    assert parser.reply() is None and parser.eof() == StateReply(0, records)


def test_reply_parser_errors() -> None:
    """Truncated replies, bad magic and impossible lengths raise typed errors."""
    parser = ReplyParser(Command.ACQUIRE)
    parser.feed(b"\x10\x20")
    with pytest.raises(TruncatedMessage):
        parser.eof()
    parser = ReplyParser(Command.ACQUIRE)
    parser.feed(Header(7, magic=5).pack())
    with pytest.raises(BadMessageMagic):
        parser.reply()
    parser = ReplyParser(Command.INQUIRE)
    parser.feed(Header(9, length=4).pack())
    with pytest.raises(MalformedMessage):
        parser.reply()
    parser = ReplyParser(Command.GET_LVB)
    parser.feed(Header(26, length=1 << 21).pack())
    with pytest.raises(OversizedMessage):
        parser.reply()
    parser = ReplyParser(Command.GET_HOSTS)
    parser.feed(Header(23, length=64, data2=1).pack())
    with pytest.raises(TruncatedMessage):
        parser.eof()
    parser = ReplyParser(Command.ACQUIRE)
    parser.feed(encode_reply(Header(7), Result(-1)))
    assert parser.reply() == Result(-1)
