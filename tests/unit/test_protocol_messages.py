"""Requests and replies of every command: sanlock's reading rules and reply headers (spec 2.5)."""

from __future__ import annotations

import errno

import pytest

from sync_manager.errors import UsageError
from sync_manager.protocol import (
    NO_OPTIONS,
    REPLY_TYPES,
    REQUEST_TYPES,
    SM_MAGIC,
    VERSION_3_8_5,
    Acquire,
    Command,
    Header,
    Host,
    HostsReply,
    InquireReply,
    Killpath,
    Lockspace,
    LockspacesReply,
    LogDumpReply,
    MalformedMessage,
    NoReply,
    Options,
    OwnersReply,
    ReadLockspaceReply,
    ReadResourceReply,
    Release,
    RentryReply,
    Resource,
    Result,
    SetLvb,
    ShutdownWaitReply,
    StateRecord,
    StateReply,
    StateType,
    TruncatedMessage,
    UnknownCommand,
    VersionReply,
    decode_reply,
    decode_request,
    encode_reply,
    error_reply,
)

RES = Resource.make("LS", "R", [("/dev/shm/r", 1048576)], lver=3)


def _decode(raw: bytes) -> object:
    return decode_request(Header.unpack(raw), raw[32:])


def test_every_command_has_a_request_and_a_reply_type() -> None:
    """40 request classes, one per command; REGISTER and SHUTDOWN have no reply."""
    assert set(REQUEST_TYPES) == set(Command) == set(REPLY_TYPES)
    assert [c for c, t in REPLY_TYPES.items() if t is NoReply] == [
        Command.REGISTER,
        Command.SHUTDOWN,
    ]
    assert REPLY_TYPES[Command.ACQUIRE] is Result


def test_acquire_layout_and_count_zero() -> None:
    """Resources with their disks, then options; a count-0 acquire sends only options."""
    raw = Acquire((RES,), Options(b"vm1"), flags=1, target=77).encode()
    header = Header.unpack(raw)
    assert (header.length, header.data, header.data2, header.cmd_flags) == (1256, 1, 77, 1)
    assert raw[-56:-53] == b"vm1"
    empty = Acquire().encode()
    assert len(empty) == 32 + 56 and _decode(empty) == Acquire()


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda raw: raw[:24] + (9).to_bytes(4, "little") + raw[28:], -errno.E2BIG),
        (lambda raw: raw[: 32 + 124] + (0).to_bytes(4, "little") + raw[32 + 128 :], -errno.ERANGE),
        (lambda raw: raw[: 32 + 124] + (5).to_bytes(4, "little") + raw[32 + 128 :], -errno.ERANGE),
        (lambda raw: raw[:-1], -errno.ENOTCONN),
    ],
    ids=["nine-resources", "zero-disks", "five-disks", "short"],
)
def test_acquire_errors_carry_sanlocks_codes(mutate: object, code: int) -> None:
    """What sanlock's cmd_acquire answers for each malformed acquire."""
    raw = mutate(Acquire((RES,)).encode())  # type: ignore[operator]
    with pytest.raises(MalformedMessage) as info:
        _decode(raw)
    assert info.value.code == code


def test_options_len_is_ignored() -> None:
    """3.8.5 reads 56 bytes of options whatever len says (and sends none after them)."""
    request = Acquire((RES,), Options(b"", 0, 4096))
    assert _decode(request.encode()) == request


def test_release_reads_what_its_flags_say() -> None:
    """REL_ALL reads nothing, REL_ORPHAN one resource, REL_RENAME two, else data of them."""
    assert Release(flags=1).encode() == Header(8, 1, 32, 0, 0xFFFFFFFF).pack()
    orphan = Release((Resource(b"LS", b""),), flags=4, target=9)
    assert _decode(orphan.encode()) == orphan
    rename = Release((RES, Resource.make("LS", "NEW")), flags=2)
    assert _decode(rename.encode()) == rename
    two = Release((RES, Resource.make("LS", "R2", [("/x", 0)])))
    assert len(two.encode()) == 32 + 256 and _decode(two.encode()) == two
    assert two.resources[0].num_disks == 1 and two.resources[0].disks == ()


def test_set_lvb_size_comes_from_length() -> None:
    """lvb length = length - 32 - 128, at most 4096 (-E2BIG)."""
    request = SetLvb(RES, b"x" * 4096)
    assert _decode(request.encode()) == request.__class__(RES.without_disks(), b"x" * 4096)
    with pytest.raises(MalformedMessage) as info:
        _decode(SetLvb(RES, b"x" * 4097).encode())
    assert info.value.code == -errno.E2BIG


def test_killpath_fields() -> None:
    """Two NUL-padded 128-byte fields; longer values are refused."""
    raw = Killpath(b"/bin/k", b"a\\ b").encode()
    assert len(raw) == 32 + 256 and raw[32:38] == b"/bin/k" and raw[160:164] == b"a\\ b"
    with pytest.raises(UsageError):
        Killpath(b"x" * 129)


def test_unknown_command_and_extra_payload() -> None:
    """Unknown numbers are refused; a payload longer than the command's is malformed."""
    with pytest.raises(UnknownCommand):
        decode_request(Header(41), b"")
    with pytest.raises(MalformedMessage):
        decode_request(Header(Command.INQUIRE), b"x")
    with pytest.raises(TruncatedMessage):
        decode_request(Header(Command.GET_HOSTS), bytes(1103))


REQUEST_HEADER = Header(Command.ACQUIRE, 0x8, 1256, 1, 0xFFFFFFFF, seq=42)


def test_result_reply_echoes_the_request() -> None:
    """send_result: magic, cmd, cmd_flags, seq echoed; version 1; length 32; data2 0."""
    raw = encode_reply(REQUEST_HEADER, Result(-243))
    assert Header.unpack(raw) == Header(7, 8, 32, 0xFFFFFF0D, 0, seq=42)
    event = Header(Command.REG_EVENT, length=1168, data2=5)
    assert Header.unpack(encode_reply(event, Result(0))).data2 == 5


def test_version_reply_is_a_fresh_header() -> None:
    """cmd_version: cmd 28, flags 0, length 32, seq 0, data 0, data2 the version."""
    raw = encode_reply(Header(Command.VERSION, 3, seq=9), VersionReply())
    assert Header.unpack(raw) == Header(28, 0, 32, 0, VERSION_3_8_5)
    assert decode_reply(Command.VERSION, raw) == VersionReply()


def test_special_reply_headers() -> None:
    """LOG_DUMP keeps the request's length; SHUTDOWN_WAIT success is cmd 0; INQUIRE counts."""
    log = encode_reply(Header(Command.LOG_DUMP), LogDumpReply(b"abc"))
    assert Header.unpack(log) == Header(6, 0, 32, 3) and log[32:] == b"abc"
    assert Header.unpack(encode_reply(Header(29, data=1), ShutdownWaitReply())) == Header(0)
    refused = encode_reply(Header(29, seq=1), ShutdownWaitReply(-errno.EBUSY))
    assert Header.unpack(refused) == Header(29, data=2**32 - errno.EBUSY, seq=1)
    inquire = encode_reply(Header(9, data2=0xFFFFFFFF), InquireReply(0, 1, b"LS:R:/p:0:1"))
    assert Header.unpack(inquire).length == 32 + 12 and Header.unpack(inquire).data2 == 1
    assert inquire.endswith(b":1\0")
    assert encode_reply(Header(1), NoReply()) == b""


def test_state_reply_trailers_only_for_status() -> None:
    """STATUS records carry their lockspace/resource; HOST_STATUS records carry none."""
    ls = Lockspace.make("LS", 1, "/ids")
    records = (StateRecord.make(StateType.LOCKSPACE, b"LS", {"list": "spaces"}, lockspace=ls),)
    status = encode_reply(Header(Command.STATUS), StateReply(0, records))
    assert len(status) == 32 + 80 + len(records[0].string) + 1104
    assert decode_reply(Command.STATUS, status) == StateReply(0, records)
    host = StateRecord.make(StateType.HOST, b"", {"last_live": 1}, data32=1, data64=7)
    raw = encode_reply(Header(Command.HOST_STATUS), StateReply(0, (host,)))
    assert decode_reply(Command.HOST_STATUS, raw).records == (host,)  # type: ignore[union-attr]
    assert host.pairs == {"last_live": "1"} and host.text == "last_live=1"


REPLIES = [
    (Command.ACQUIRE, Result(-243)),
    (Command.RELEASE, Result(2)),
    (Command.INQUIRE, InquireReply(0, 2, b"LS:A:/p:0:1 LS:B:/p:512:SH")),
    (Command.INQUIRE, InquireReply(-errno.ESRCH)),
    (Command.GET_LOCKSPACES, LockspacesReply(0, (Lockspace.make("LS", 1, "/ids"),))),
    (Command.GET_LOCKSPACES, LockspacesReply(-errno.ENOSPC, (Lockspace.make("A"),), count=3)),
    (Command.GET_HOSTS, HostsReply(0, (Host(1, 2, 3, 10, 3), Host(5)))),
    (Command.READ_LOCKSPACE, ReadLockspaceReply(0, 10, Lockspace.make("LS", 1, "/ids"))),
    (Command.READ_LOCKSPACE, ReadLockspaceReply(-errno.ENODEV)),
    (Command.READ_RESOURCE, ReadResourceReply(-223, RES.without_disks())),
    (Command.READ_RESOURCE_OWNERS, OwnersReply(0, RES.without_disks(), (Host(1, 2, 3),))),
    (Command.READ_RESOURCE_OWNERS, OwnersReply(-5)),
    (Command.LOG_DUMP, LogDumpReply(b"log\ntext")),
    (Command.SHUTDOWN_WAIT, ShutdownWaitReply(0)),
    (Command.LOOKUP_RINDEX, RentryReply(0)),
    (Command.RENEWAL, StateReply(0, (), data2=10)),
]


@pytest.mark.parametrize(("command", "reply"), REPLIES, ids=lambda v: type(v).__name__)
def test_replies_round_trip(command: Command, reply: object) -> None:
    """Every reply kind decodes from its own encoding."""
    raw = encode_reply(Header(command, seq=1), reply)  # type: ignore[arg-type]
    assert decode_reply(command, raw) == reply
    assert raw[:4] == SM_MAGIC.to_bytes(4, "little")


@pytest.mark.parametrize("command", list(Command))
def test_error_reply_for_every_command(command: Command) -> None:
    """An early error is answered in the shape the command's clients read."""
    reply = error_reply(command, -errno.ENOTCONN)
    raw = encode_reply(Header(command), reply)
    if isinstance(reply, NoReply):
        assert raw == b""
        return
    decoded = decode_reply(command, raw)
    if command is Command.LOG_DUMP:
        assert decoded == LogDumpReply()
    elif command is Command.READ_RESOURCE:
        assert len(raw) == 32 + 128  # clients always read the resource
    else:
        assert decoded.result == -errno.ENOTCONN  # type: ignore[union-attr]


def test_reply_type_is_checked() -> None:
    """Our daemon cannot send a reply shape the client would misread."""
    with pytest.raises(UsageError):
        encode_reply(Header(Command.GET_HOSTS), Result(0))
    assert encode_reply(Header(Command.INQUIRE), Result(-3))  # inquire's error reply


def test_decode_reply_rejects_inconsistent_counts() -> None:
    """All count structs must come unless the result is an error."""
    raw = Header(Command.GET_HOSTS, length=32 + 32, data2=2).pack() + Host(1).pack()
    with pytest.raises(MalformedMessage):
        decode_reply(Command.GET_HOSTS, raw)
    raw = Header(Command.INQUIRE, length=32 + 3, data2=1).pack() + b"abc"
    with pytest.raises(MalformedMessage):
        decode_reply(Command.INQUIRE, raw)
    assert Options() == NO_OPTIONS
