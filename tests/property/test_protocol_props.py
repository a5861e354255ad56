"""Properties of the protocol layer (DESIGN.md, "Tests").

* every struct, request and reply round-trips: object -> bytes -> object, and for structs
  bytes -> object -> bytes (padding and bytes after a NUL are kept);
* arbitrary or mutated bytes given to every decoder and parser raise only our typed errors
  (ProtocolError), never struct.error, IndexError, UnicodeDecodeError, AssertionError...;
* framing does not depend on how the bytes are chunked;
* the INQUIRE state string reads back as the resources it was made from.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from sync_manager.protocol import (
    REPLY_TYPES,
    Acquire,
    AddLockspace,
    Align,
    Command,
    ConfigCmd,
    Convert,
    CreateResource,
    Disk,
    EventCallback,
    ExamineLockspace,
    ExamineResource,
    GetHosts,
    GetLvb,
    Header,
    Host,
    HostEvent,
    HostsReply,
    InquireReply,
    Killpath,
    Lockspace,
    LockspacesReply,
    LogDumpReply,
    LookupRindex,
    LvbReply,
    Options,
    OwnersReply,
    ProtocolError,
    ReadLockspaceReply,
    ReadResource,
    ReadResourceReply,
    Release,
    Rentry,
    RentryReply,
    Request,
    RequestLease,
    RequestParser,
    Resource,
    Restrict,
    Result,
    Rindex,
    SetConfig,
    SetEvent,
    SetLvb,
    StateRecord,
    StateReply,
    Status,
    VersionReply,
    WriteLockspace,
    WriteResource,
    decode_reply,
    decode_request,
    encode_reply,
    parse_state,
    state_string,
    str_to_res,
)
from sync_manager.protocol.state import decode_records

U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
S32 = st.integers(-(2**31), 2**31 - 1)
PID = st.integers(-1, 2**31 - 1)
# char fields as we keep them: no trailing NUL (bytes after an inner NUL are kept)
NAMES = st.binary(max_size=48).map(lambda b: b.rstrip(b"\0"))
PATHS = st.binary(max_size=1024).map(lambda b: b.rstrip(b"\0"))

DISKS = st.builds(Disk, PATHS, U64, U32, U32)
OPTIONS = st.builds(Options, NAMES, U32, U32)
LOCKSPACES = st.builds(Lockspace, NAMES, U64, U32, U32, DISKS)
HOSTS = st.builds(Host, U64, U64, U64, U32, U32)
EVENTS = st.builds(HostEvent, U64, U64, U64, U64)
RINDEXES = st.builds(Rindex, NAMES, DISKS, U32, U32, U64)
RENTRIES = st.builds(Rentry, NAMES, U64, U32, U32)


def resources(disks: st.SearchStrategy[list[Disk]]) -> st.SearchStrategy[Resource]:
    return st.builds(Resource, NAMES, NAMES, U64, U64, U32, U32, U32, disks=disks.map(tuple))


WITH_DISKS = resources(st.lists(DISKS, min_size=1, max_size=4))
BARE = st.builds(lambda f: Resource(*f), st.tuples(NAMES, NAMES, U64, U64, U32, U32, U32, U32))
STATE_TEXT = st.binary(max_size=200)

STRUCTS: list[tuple[st.SearchStrategy[object], int]] = [
    (DISKS, Disk.SIZE),
    (OPTIONS, Options.SIZE),
    (LOCKSPACES, Lockspace.SIZE),
    (HOSTS, Host.SIZE),
    (EVENTS, HostEvent.SIZE),
    (RINDEXES, Rindex.SIZE),
    (RENTRIES, Rentry.SIZE),
    (BARE, Resource.SIZE),
]


@given(st.data())
def test_structs_round_trip(data: st.DataObject) -> None:
    """object -> bytes -> object for every struct."""
    for strategy, size in STRUCTS:
        obj = data.draw(strategy)
        raw = obj.pack()  # type: ignore[attr-defined]
        assert len(raw) == size
        assert type(obj).unpack(raw) == obj  # type: ignore[attr-defined]


@given(st.data())
def test_struct_bytes_round_trip(data: st.DataObject) -> None:
    """bytes -> object -> bytes for every fixed-size struct, whatever the bytes."""
    for cls in (Disk, Options, Lockspace, Host, HostEvent, Rindex, Rentry, Resource):
        raw = data.draw(st.binary(min_size=cls.SIZE, max_size=cls.SIZE))
        assert cls.unpack(raw).pack() == raw
    raw = data.draw(st.binary(min_size=80, max_size=80))
    raw = raw[:72] + (0).to_bytes(4, "little") + raw[76:]
    record, end = StateRecord.unpack(raw, with_trailer=False)
    assert end == 80 and record.pack(with_trailer=False) == raw


REQUESTS: list[st.SearchStrategy[Request]] = [
    st.builds(Acquire, st.lists(WITH_DISKS, max_size=8).map(tuple), OPTIONS, U32, PID),
    st.builds(Release, st.lists(BARE, max_size=8).map(tuple), st.sampled_from([0, 8]), PID),
    st.builds(Release, st.lists(BARE, min_size=1, max_size=1).map(tuple), st.just(4), PID),
    st.builds(Release, st.lists(BARE, min_size=2, max_size=2).map(tuple), st.just(2), PID),
    st.builds(Convert, BARE, U32, PID),
    st.builds(RequestLease, WITH_DISKS, U32, U32),
    st.builds(
        Killpath,
        st.binary(max_size=128).map(lambda b: b.rstrip(b"\0")),
        st.binary(max_size=128).map(lambda b: b.rstrip(b"\0")),
        U32,
        PID,
    ),
    st.builds(Restrict, U32, PID),
    st.builds(ExamineResource, BARE, U32),
    st.builds(ExamineLockspace, LOCKSPACES, U32),
    st.builds(SetLvb, BARE, st.binary(max_size=4096), U32),
    st.builds(GetLvb, BARE, U32, U32),
    st.builds(AddLockspace, LOCKSPACES, U32, U32),
    st.builds(GetHosts, LOCKSPACES, U32),
    st.builds(SetConfig, LOCKSPACES, st.sampled_from(list(ConfigCmd)).map(int), U32),
    st.builds(SetEvent, LOCKSPACES, EVENTS, U32),
    st.builds(Status, U32, U32),
    st.builds(Align, DISKS, U32),
    st.builds(WriteLockspace, LOCKSPACES, U32, U32, U32),
    st.builds(ReadResource, WITH_DISKS, U32),
    st.builds(WriteResource, WITH_DISKS, U32, U32, U32),
    st.builds(LookupRindex, RINDEXES, RENTRIES, U32),
    st.builds(CreateResource, RINDEXES, RENTRIES, U32, U32, U32),
]


@given(st.one_of(REQUESTS), U32)
def test_requests_round_trip_through_the_parser(request: Request, seq: int) -> None:
    """encode -> frame -> decode gives the request back, whatever ``length`` claims."""
    raw = request.encode(seq=seq)
    parser = RequestParser()
    parser.feed(raw)
    frame = parser.next()
    assert frame is not None and parser.buffered == 0
    assert frame.decode() == request and frame.header.seq == seq


@given(st.lists(st.one_of(REQUESTS), min_size=1, max_size=4), st.data())
def test_framing_ignores_chunking(requests: list[Request], data: st.DataObject) -> None:
    """Cut anywhere, the stream gives the same requests."""
    raw = b"".join(r.encode() for r in requests)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    parser = RequestParser()
    decoded = []
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        parser.feed(raw[start:end])
        decoded += [f.decode() for f in parser.frames()]
    assert decoded == requests


REPLIES: list[tuple[Command, st.SearchStrategy[object]]] = [
    (Command.ACQUIRE, st.builds(Result, S32)),
    (
        Command.INQUIRE,
        st.builds(
            InquireReply, S32, U32, st.none() | st.binary().map(lambda b: b.replace(b"\0", b""))
        ),
    ),
    (
        Command.GET_LOCKSPACES,
        st.builds(LockspacesReply, st.just(0), st.lists(LOCKSPACES, max_size=3).map(tuple)),
    ),
    (Command.GET_HOSTS, st.builds(HostsReply, st.just(0), st.lists(HOSTS, max_size=5).map(tuple))),
    (Command.READ_LOCKSPACE, st.builds(ReadLockspaceReply, S32, U32, st.none() | LOCKSPACES)),
    (Command.READ_RESOURCE, st.builds(ReadResourceReply, S32, BARE)),
    (
        Command.READ_RESOURCE_OWNERS,
        st.builds(OwnersReply, st.just(0), BARE, st.lists(HOSTS, max_size=4).map(tuple)),
    ),
    (Command.GET_LVB, st.builds(LvbReply, S32, st.binary(max_size=4096))),
    (Command.VERSION, st.builds(VersionReply, U32, U32, S32)),
    (Command.LOG_DUMP, st.builds(LogDumpReply, st.binary(max_size=300))),
    (Command.LOOKUP_RINDEX, st.builds(RentryReply, S32, RENTRIES)),
    (
        Command.HOST_STATUS,
        st.builds(
            StateReply,
            S32,
            st.lists(
                st.builds(
                    StateRecord, U32, NAMES, U32, U64, st.binary(max_size=100), U32, U32, U32
                ),
                max_size=3,
            ).map(tuple),
            U32,
        ),
    ),
    (
        Command.STATUS,
        st.builds(
            StateReply,
            S32,
            st.lists(
                st.one_of(
                    st.builds(
                        StateRecord, st.just(3), NAMES, U32, U64, STATE_TEXT, lockspace=LOCKSPACES
                    ),
                    st.builds(
                        StateRecord, st.just(4), NAMES, U32, U64, STATE_TEXT, resource=WITH_DISKS
                    ),
                    st.builds(StateRecord, st.just(2), NAMES, U32, U64, STATE_TEXT),
                ),
                max_size=3,
            ).map(tuple),
        ),
    ),
]


@given(st.data())
def test_replies_round_trip(data: st.DataObject) -> None:
    """encode_reply -> decode_reply gives each reply back."""
    for command, strategy in REPLIES:
        reply = data.draw(strategy)
        request = Header(command, data.draw(U32), seq=data.draw(U32))
        raw = encode_reply(request, reply)  # type: ignore[arg-type]
        assert decode_reply(command, raw) == reply


def _only_protocol_errors(call: Callable[[], object]) -> None:
    with contextlib.suppress(ProtocolError):
        call()


def _feed_all(raw: bytes, *, restricted: bool = False) -> None:
    parser = RequestParser(restricted=restricted)
    parser.feed(raw)
    for _ in range(len(raw) // 32 + 2):
        try:
            frame = parser.next()
        except ProtocolError as exc:
            if type(exc).__name__ == "OversizedMessage":
                return
            continue
        if frame is None:
            break
        _only_protocol_errors(frame.decode)
    _only_protocol_errors(parser.eof)


HEADERS = st.builds(
    lambda cmd, flags, data, data2, length: Header(cmd, flags, length, data, data2).pack(),
    st.integers(0, 45),
    U32,
    st.integers(0, 12) | U32,
    st.integers(0, 3) | U32,
    st.integers(0, 3000) | U32,
)


@given(st.binary(max_size=3000))
def test_arbitrary_bytes_raise_only_protocol_errors(raw: bytes) -> None:
    """The request parser and every decoder, fed noise."""
    _feed_all(raw)
    _feed_all(raw, restricted=True)
    _only_protocol_errors(lambda: str_to_res(raw))
    _only_protocol_errors(lambda: parse_state(raw))
    _only_protocol_errors(lambda: decode_records(raw))
    _only_protocol_errors(lambda: EventCallback.unpack(raw))
    for command in Command:
        _only_protocol_errors(lambda c=command: decode_reply(c, raw))  # type: ignore[misc]


@given(HEADERS, st.binary(max_size=3000))
def test_valid_headers_with_noise_raise_only_protocol_errors(head: bytes, tail: bytes) -> None:
    """Well-formed headers of every command (and none) followed by arbitrary payloads."""
    _feed_all(head + tail)
    header = Header.unpack(head)
    for command in REPLY_TYPES:
        _only_protocol_errors(lambda c=command: decode_reply(c, head + tail))  # type: ignore[misc]
    _only_protocol_errors(lambda: decode_request(header, tail))


@given(st.one_of(REQUESTS), st.data())
def test_mutated_frames_raise_only_protocol_errors(request: Request, data: st.DataObject) -> None:
    """Flip, cut or splice bytes of a valid request: typed errors or a (different) request."""
    raw = bytearray(request.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del raw[pos:]
            if not raw:
                break
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=40))
    _feed_all(bytes(raw))


NICE = st.text(alphabet="abcXYZ019-_.", min_size=1, max_size=48).map(str.encode)
NICE_PATHS = st.text(alphabet="abc/:-_.019", min_size=1, max_size=60).map(
    lambda s: ("/" + s).encode()
)


@given(
    st.lists(
        st.builds(
            lambda ls, name, disks, lver, shared: Resource.make(
                ls, name, disks, lver=None if shared else lver, shared=shared
            ),
            NICE,
            NICE,
            st.lists(st.tuples(NICE_PATHS, U64), min_size=1, max_size=4),
            U64,
            st.booleans(),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_state_string_reads_back(held: list[Resource]) -> None:
    """What the daemon formats for INQUIRE, the client library's parser reads back."""
    assert parse_state(state_string(held)) == tuple(held)
