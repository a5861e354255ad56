"""The header, command numbers, flag values and result codes (spec 2.1, 2.2, 3)."""

from __future__ import annotations

import errno

import pytest

from sync_manager.errors import UsageError
from sync_manager.protocol import (
    HEADER_SIZE,
    MAX_CLIENT_MSG,
    SM_MAGIC,
    SM_PROTO,
    AcquireFlag,
    BadMessageMagic,
    Code,
    Command,
    ConfigCmd,
    Header,
    HostState,
    ReleaseFlag,
    ResourceFlag,
    SetEventFlag,
    StateType,
    UnsupportedProtocol,
    align_flag,
    align_from_flags,
    check_header,
    code_name,
    describe,
    is_sanlock_code,
    sector_flag,
    sector_from_flags,
)
from sync_manager.protocol.header import s32, u32


def test_constants() -> None:
    """sanlock_sock.h: the magic, the protocol version, the (unenforced) message limit."""
    assert (SM_MAGIC, SM_PROTO, HEADER_SIZE, MAX_CLIENT_MSG) == (0x04282010, 1, 32, 1 << 20)


def test_command_numbers_are_sanlock_sock_h() -> None:
    """All 40 commands, numbered as in spec 2.2."""
    assert [c.value for c in Command] == list(range(1, 41))
    assert (Command.ACQUIRE, Command.VERSION, Command.RENEWAL) == (7, 28, 34)
    assert Command.REBUILD_RINDEX.value == 40


def test_header_round_trip_and_views() -> None:
    """pack/unpack; result and target read data/data2 as signed ints."""
    header = Header(Command.ACQUIRE, 8, 1256, 0xFFFFFF0D, 0xFFFFFFFF, seq=3)
    raw = header.pack()
    assert raw[:4] == b"\x10\x20\x28\x04" and len(raw) == 32
    back = Header.unpack(raw)
    assert back == header and back.command is Command.ACQUIRE
    assert (back.result, back.target, back.payload_length) == (-243, -1, 1224)
    assert Header(99).command is None
    with pytest.raises(UsageError):
        Header(1, data=-1)


def test_signed_conversions() -> None:
    """u32/s32 between C ints and wire words."""
    assert (u32(-1), u32(5), s32(0xFFFFFFFF), s32(0x7FFFFFFF)) == (0xFFFFFFFF, 5, -1, 2**31 - 1)
    with pytest.raises(UsageError):
        u32(2**32)


def test_check_header_like_the_daemon() -> None:
    """Bad magic and a newer major are refused; VERSION and version 0 skip the version check."""
    check_header(Header(1, version=0))
    check_header(Header(Command.VERSION, version=0x00020000))
    check_header(Header(1, version=0x0000FFFF))
    with pytest.raises(BadMessageMagic):
        check_header(Header(1, magic=0))
    with pytest.raises(UnsupportedProtocol):
        check_header(Header(Command.ACQUIRE, version=0x00010000))


def test_flag_values() -> None:
    """A sample of each flag family (spec 3.1, 3.2)."""
    assert (ResourceFlag.LVER, ResourceFlag.SHARED, ResourceFlag.SECTOR4K) == (1, 4, 0x200)
    assert (AcquireFlag.OWNER_NOWAIT, ReleaseFlag.ORPHAN) == (8, 4)
    assert (HostState.UNKNOWN, HostState.DEAD, ConfigCmd.UNUSED_BY_ORPHANS) == (1, 5, 8)
    assert (SetEventFlag.ALL_HOSTS, StateType.RENEWAL) == (0x10, 6)
    assert (align_flag(8 << 20), sector_flag(4096), align_flag(3)) == (0x80, 0x200, 0)
    assert (align_from_flags(0x220), sector_from_flags(0x110), sector_from_flags(0)) == (
        2 << 20,
        512,
        0,
    )


def test_code_names_and_texts() -> None:
    """Names for every value; texts as python3-sanlock shows them."""
    assert Code.SANLK_ACQUIRE_IDLIVE.value == -243 and Code.ENOTCONN.value == -errno.ENOTCONN
    assert code_name(-243) == "SANLK_ACQUIRE_IDLIVE"
    assert code_name(-errno.EEXIST) == "EEXIST"
    assert code_name(-errno.EOVERFLOW) == "EOVERFLOW"
    assert (code_name(0), code_name(-999), code_name(3)) == ("OK", "-999", "3")
    assert describe(-243) == "Lease is held by another host"
    assert describe(-230) == describe(-240) == describe(5) == "Unknown error"
    assert describe(-17) == "File exists" and describe(-1) == "Operation not permitted"
    assert is_sanlock_code(-201) and not is_sanlock_code(-2)
