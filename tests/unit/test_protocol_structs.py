"""Sizes and field offsets of every wire struct against spec/sanlock-protocol.md 2.1 and 2.3.

Each field is checked twice: its offset in the spec's x86_64 table (written out below), and the
layout of a ctypes mirror of the C declarations (``sanlock.h``, ``sanlock_sock.h``), which lets
the C compiler's alignment rules, not ours, place the padding.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable

import pytest

from sync_manager.errors import SyncManagerError, UsageError
from sync_manager.protocol import (
    EventCallback,
    Header,
    Host,
    HostEvent,
    Lockspace,
    Options,
    Rentry,
    Resource,
    Rindex,
    StateRecord,
    TruncatedMessage,
)
from sync_manager.protocol.structs import Disk

# spec 2.1 / 2.3: (field, offset, size); None marks padding.
SPEC: dict[str, tuple[int, list[tuple[str, int, int]]]] = {
    "sm_header": (
        32,
        [
            ("magic", 0, 4),
            ("version", 4, 4),
            ("cmd", 8, 4),
            ("cmd_flags", 12, 4),
            ("length", 16, 4),
            ("seq", 20, 4),
            ("data", 24, 4),
            ("data2", 28, 4),
        ],
    ),
    "sanlk_disk": (
        1040,
        [("path", 0, 1024), ("offset", 1024, 8), ("pad1", 1032, 4), ("pad2", 1036, 4)],
    ),
    "sanlk_resource": (
        128,
        [
            ("lockspace_name", 0, 48),
            ("name", 48, 48),
            ("lver", 96, 8),
            ("data64", 104, 8),
            ("data32", 112, 4),
            ("unused", 116, 4),
            ("flags", 120, 4),
            ("num_disks", 124, 4),
        ],
    ),
    "sanlk_options": (56, [("owner_name", 0, 48), ("flags", 48, 4), ("len", 52, 4)]),
    "sanlk_lockspace": (
        1104,
        [("name", 0, 48), ("host_id", 48, 8), ("flags", 56, 4), ("host_id_disk", 64, 1040)],
    ),
    "sanlk_host": (
        32,
        [
            ("host_id", 0, 8),
            ("generation", 8, 8),
            ("timestamp", 16, 8),
            ("io_timeout", 24, 4),
            ("flags", 28, 4),
        ],
    ),
    "sanlk_host_event": (
        32,
        [("host_id", 0, 8), ("generation", 8, 8), ("event", 16, 8), ("data", 24, 8)],
    ),
    "sanlk_state": (
        80,
        [
            ("type", 0, 4),
            ("flags", 4, 4),
            ("data32", 8, 4),
            ("data64", 16, 8),
            ("name", 24, 48),
            ("str_len", 72, 4),
        ],
    ),
    "event_cb": (
        80,
        [("h", 0, 32), ("he", 32, 32), ("from_host_id", 64, 8), ("from_generation", 72, 8)],
    ),
    "sanlk_rindex": (
        1104,
        [
            ("flags", 0, 4),
            ("max_resources", 4, 4),
            ("unused", 8, 8),
            ("lockspace_name", 16, 48),
            ("disk", 64, 1040),
        ],
    ),
    "sanlk_rentry": (64, [("name", 0, 48), ("offset", 48, 8), ("flags", 56, 4), ("unused", 60, 4)]),
}

U32, U64, C = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_char


class CHeader(ctypes.Structure):
    _fields_ = [
        (n, U32) for n in ("magic", "version", "cmd", "cmd_flags", "length", "seq", "data", "data2")
    ]


class CDisk(ctypes.Structure):
    _fields_ = [("path", C * 1024), ("offset", U64), ("pad1", U32), ("pad2", U32)]


class CResource(ctypes.Structure):
    _fields_ = [
        ("lockspace_name", C * 48),
        ("name", C * 48),
        ("lver", U64),
        ("data64", U64),
        ("data32", U32),
        ("unused", U32),
        ("flags", U32),
        ("num_disks", U32),
    ]


class COptions(ctypes.Structure):
    _fields_ = [("owner_name", C * 48), ("flags", U32), ("len", U32)]


class CLockspace(ctypes.Structure):
    _fields_ = [("name", C * 48), ("host_id", U64), ("flags", U32), ("host_id_disk", CDisk)]


class CHost(ctypes.Structure):
    _fields_ = [
        ("host_id", U64),
        ("generation", U64),
        ("timestamp", U64),
        ("io_timeout", U32),
        ("flags", U32),
    ]


class CHostEvent(ctypes.Structure):
    _fields_ = [("host_id", U64), ("generation", U64), ("event", U64), ("data", U64)]


class CState(ctypes.Structure):
    _fields_ = [
        ("type", U32),
        ("flags", U32),
        ("data32", U32),
        ("data64", U64),
        ("name", C * 48),
        ("str_len", U32),
        ("str", C * 0),
    ]


class CEventCb(ctypes.Structure):
    _fields_ = [("h", CHeader), ("he", CHostEvent), ("from_host_id", U64), ("from_generation", U64)]


class CRindex(ctypes.Structure):
    _fields_ = [
        ("flags", U32),
        ("max_resources", U32),
        ("unused", U64),
        ("lockspace_name", C * 48),
        ("disk", CDisk),
    ]


class CRentry(ctypes.Structure):
    _fields_ = [("name", C * 48), ("offset", U64), ("flags", U32), ("unused", U32)]


CTYPES: dict[str, type[ctypes.Structure]] = {
    "sm_header": CHeader,
    "sanlk_disk": CDisk,
    "sanlk_resource": CResource,
    "sanlk_options": COptions,
    "sanlk_lockspace": CLockspace,
    "sanlk_host": CHost,
    "sanlk_host_event": CHostEvent,
    "sanlk_state": CState,
    "event_cb": CEventCb,
    "sanlk_rindex": CRindex,
    "sanlk_rentry": CRentry,
}

OURS: dict[str, int] = {
    "sm_header": Header.SIZE,
    "sanlk_disk": Disk.SIZE,
    "sanlk_resource": Resource.SIZE,
    "sanlk_options": Options.SIZE,
    "sanlk_lockspace": Lockspace.SIZE,
    "sanlk_host": Host.SIZE,
    "sanlk_host_event": HostEvent.SIZE,
    "sanlk_state": StateRecord.SIZE,
    "event_cb": EventCallback.SIZE,
    "sanlk_rindex": Rindex.SIZE,
    "sanlk_rentry": Rentry.SIZE,
}


@pytest.mark.parametrize("name", SPEC)
def test_sizes_and_offsets_match_spec_and_c_layout(name: str) -> None:
    """Our size, the spec's table and the C layout agree for every struct and field."""
    size, fields = SPEC[name]
    ctype = CTYPES[name]
    assert OURS[name] == size == ctypes.sizeof(ctype)
    for field, offset, width in fields:
        descriptor = getattr(ctype, field)
        assert (descriptor.offset, descriptor.size) == (offset, width), field


def _u64_at(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<Q", data, offset)[0]
    return value


def _u32_at(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<I", data, offset)[0]
    return value


def test_header_fields_land_at_their_offsets() -> None:
    """Every header field at its offset, little-endian."""
    raw = Header(3, 4, 5, 7, 8, magic=1, version=2, seq=6).pack()
    assert [_u32_at(raw, 4 * i) for i in range(8)] == [1, 2, 3, 4, 5, 6, 7, 8]


def test_resource_fields_land_at_their_offsets() -> None:
    """sanlk_resource: names, lver, data64, data32, unused, flags, num_disks, then disks."""
    res = Resource(
        b"L" * 48, b"N" * 48, 0x1111, 0x2222, 0x33, 0x44, 0x55, 1, (Disk(b"/p", 0x66, 7, 8),)
    )
    raw = res.pack_with_disks()
    assert raw[:96] == b"L" * 48 + b"N" * 48
    assert (_u64_at(raw, 96), _u64_at(raw, 104)) == (0x1111, 0x2222)
    assert [_u32_at(raw, off) for off in (112, 116, 120, 124)] == [0x33, 0x44, 0x55, 1]
    assert raw[128:131] == b"/p\0"
    assert (_u64_at(raw, 128 + 1024), _u32_at(raw, 1160), _u32_at(raw, 1164)) == (0x66, 7, 8)


def test_lockspace_host_state_and_event_offsets() -> None:
    """sanlk_lockspace (padding at 60), sanlk_host, sanlk_state (padding at 12 and 76)."""
    raw = Lockspace(b"LS", 0x77, 0x88, 0x99, Disk(b"/d", 0xAA)).pack()
    assert (_u64_at(raw, 48), _u32_at(raw, 56), _u32_at(raw, 60)) == (0x77, 0x88, 0x99)
    assert raw[64:66] == b"/d" and _u64_at(raw, 64 + 1024) == 0xAA
    raw = Host(1, 2, 3, 4, 5).pack()
    assert [_u64_at(raw, 0), _u64_at(raw, 8), _u64_at(raw, 16)] == [1, 2, 3]
    assert [_u32_at(raw, 24), _u32_at(raw, 28)] == [4, 5]
    raw = StateRecord(5, b"nm", 6, 7, b"x=1\0", flags=8, pad=9, pad2=10).pack()
    assert [_u32_at(raw, o) for o in (0, 4, 8, 12)] == [5, 8, 6, 9]
    assert _u64_at(raw, 16) == 7 and raw[24:26] == b"nm"
    assert (_u32_at(raw, 72), _u32_at(raw, 76), raw[80:]) == (4, 10, b"x=1\0")
    raw = EventCallback(HostEvent(1, 2, 3, 4), 5, 6).pack()
    assert Header.unpack(raw) == Header(1, length=80)
    assert [_u64_at(raw, o) for o in range(32, 80, 8)] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    "make",
    [
        lambda: Disk(b"x" * 1025),
        lambda: Resource(b"n" * 49, b""),
        lambda: Resource(b"", b"", lver=-1),
        lambda: Resource(b"", b"", num_disks=2**32),
        lambda: Options(owner_name="text"),  # type: ignore[arg-type]
        lambda: Lockspace(b"LS", host_id=2**64),
        lambda: Host(1, io_timeout=True),
        lambda: Rentry(offset=-5),
    ],
)
def test_invalid_fields_raise_usage_error(make: Callable[[], object]) -> None:
    """Construction checks every field, so that pack() never meets a struct.error."""
    with pytest.raises(UsageError):
        make()


def test_names_keep_bytes_after_a_nul_and_drop_trailing_nuls() -> None:
    """A 48-byte name without NUL, and garbage after a NUL, survive a round trip."""
    raw = Resource(b"A" * 48, b"ab\0cd").pack()
    back = Resource.unpack(raw)
    assert back.lockspace_name == b"A" * 48 and back.name == b"ab\0cd"
    assert back.resource == "ab" and back.pack() == raw
    assert Resource(b"LS\0\0", b"R").lockspace_name == b"LS"


def test_short_input_raises_truncated_message() -> None:
    """Every unpacker says what was missing."""
    for unpack, size in (
        (Disk.unpack, 1040),
        (Resource.unpack, 128),
        (Host.unpack, 32),
        (Lockspace.unpack, 1104),
        (Rindex.unpack, 1104),
    ):
        with pytest.raises(TruncatedMessage) as info:
            unpack(bytes(size - 1))
        assert isinstance(info.value, SyncManagerError)
        assert (info.value.expected, info.value.found) == (size, size - 1)


def test_resource_helpers() -> None:
    """make() sets LVER/SHARED as clients do; without_disks keeps num_disks."""
    res = Resource.make("LS", "R", [("/a", 512), ("/b", 0)], lver=0, shared=True)
    assert (res.flags, res.num_disks, res.lver) == (0x5, 2, 0)
    assert res.without_disks().num_disks == 2 and res.without_disks().disks == ()
    assert res.shared and res.lockspace == "LS"
    with pytest.raises(UsageError):
        res.without_disks().pack_with_disks()
    assert Host(1, flags=0x13).state == 3
