"""The INQUIRE state string, formatted and parsed as libsanlock does (spec 4.1).

``tests/interop/test_protocol_capture.py`` checks these functions against libsanlock itself;
here are the documented cases, so that they hold without it.
"""

from __future__ import annotations

import errno

import pytest

from sync_manager.protocol import (
    Disk,
    MalformedMessage,
    Resource,
    ResourceFlag,
    parse_state,
    path_export,
    res_to_str,
    state_string,
    str_to_res,
)


def test_res_to_str() -> None:
    """``LS:NAME:PATH:OFFSET...`` then the lver (0 included) or SH; paths exported."""
    exclusive = Resource.make("LS", "R1", [("/dev/a", 0), ("/dev/b", 1048576)], lver=7)
    assert res_to_str(exclusive) == b"LS:R1:/dev/a:0:/dev/b:1048576:7"
    assert res_to_str(Resource.make("LS", "R", [("/x", 0)])) == b"LS:R:/x:0:0"
    shared = Resource.make("LS", "R", [("/a:b c", 512)], shared=True, lver=3)
    assert res_to_str(shared) == b"LS:R:/a\\:b\\ c:512:SH"


def test_path_export_quirks() -> None:
    """A backslash and the byte after it are copied as they are; a trailing one is kept."""
    assert path_export(b"/a\\:b:c") == b"/a\\:b\\:c"
    assert path_export(b"/a\\") == b"/a\\"
    assert path_export(b"/p\0junk") == b"/p"
    assert len(path_export(b":" * 1023)) == 1024  # the export buffer (1025 with its NUL)


def test_state_string_and_its_errors() -> None:
    """Joined by spaces; a space in a resource string is -ELIBSCN, as in cmd_inquire."""
    one = Resource.make("LS", "A", [("/p", 0)], lver=1)
    two = Resource.make("LS", "B", [("/q", 512)], shared=True)
    assert state_string([one, two]) == b"LS:A:/p:0:1 LS:B:/q:512:SH"
    assert state_string([]) == b""
    with pytest.raises(MalformedMessage) as info:
        state_string([Resource.make("LS", "A", [("/with space", 0)])])
    assert info.value.code == -errno.ELIBSCN
    # 4 disks always fit SANLK_MAX_RES_STR (an exported path is cut at 1024 bytes); 5 do not
    with pytest.raises(MalformedMessage) as info:
        state_string([Resource.make("L" * 48, "N" * 48, [("/" + "x" * 1022, 0)] * 5)])
    assert info.value.code == -errno.ELIBACC


def test_parse_state_reads_what_python3_sanlock_reads() -> None:
    """The resources come back with RES_LVER for a number, RES_SHARED for SH."""
    parsed = parse_state(b"LS:A:/p:0:1 LS:B:/q\\:r:512:SH")
    assert parsed == (
        Resource(b"LS", b"A", lver=1, flags=ResourceFlag.LVER, disks=(Disk(b"/p", 0),)),
        Resource(b"LS", b"B", flags=ResourceFlag.SHARED, disks=(Disk(b"/q:r", 512),)),
    )


@pytest.mark.parametrize(
    ("text", "flags", "lver", "disks"),
    [
        (b"LS:R:/p:0:0x10", 1, 16, 1),  # strtoull(s, 0, 0): hex
        (b"LS:R:/p:0:010", 1, 8, 1),  # and octal
        (b"LS:R:/p:0:SHARED", 4, 0, 1),  # anything that starts with SH
        (b"LS:R:/p:0", 0, 0, 1),  # no last field: neither flag
        (b"LS:R:/p:0:/q:512", 0, 0, 2),
        (b"LS:R", 0, 0, 0),  # names only
        (b"LS:R:/p:-1:5", 1, 5, 1),  # %llu wraps negatives
    ],
)
def test_str_to_res_like_libsanlock(text: bytes, flags: int, lver: int, disks: int) -> None:
    """sanlock_str_to_res's lax rules."""
    res = str_to_res(text)
    assert (res.flags, res.lver, res.num_disks) == (flags, lver, disks)


@pytest.mark.parametrize(
    "text",
    [
        b"ab",
        b"LS:R:/p",
        b"LS:R:/p:x",
        b"LS:R::0",
        b"N" * 49 + b":R",
        b"LS:R:/p:0\\",
        b"LS:R" + b":/p:0" * 5,
    ],
)
def test_str_to_res_failures(text: bytes) -> None:
    """Too short, 2 colons, a bad offset, an empty path, a long name, a dangling escape, 5
    disks: all refused."""
    with pytest.raises(MalformedMessage):
        str_to_res(text)


def test_state_space_heuristic() -> None:
    """A space before the third colon is taken as part of the resource."""
    assert parse_state(b"LS:my res:/p:0:1")[0].name == b"my res"
    assert len(parse_state(b"LS:A:/p:0:1 LS:B:/p:0:2")) == 2
