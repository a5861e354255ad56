"""Unit tests of sync_manager.leasestr: sanlock's lockspace and resource strings."""

from __future__ import annotations

import dataclasses

import pytest

from sync_manager.errors import LeaseStringError, UsageError
from sync_manager.leasestr import (
    MAX_OFFSET,
    NAME_LEN,
    PATH_LEN,
    DiskLocation,
    LockspaceSpec,
    ResourceSpec,
    escape_path,
    format_lockspace,
    format_resource,
    parse_area,
    parse_lockspace,
    parse_offset,
    parse_resource,
    parse_short_resource,
    unescape_path,
)

MIB = 1024 * 1024


def res(
    lockspace: str,
    name: str,
    *disks: tuple[str, int],
    lver: int | None = None,
    shared: bool = False,
) -> ResourceSpec:
    return ResourceSpec(
        lockspace,
        name,
        tuple(DiskLocation(path, offset) for path, offset in disks),
        lver=lver,
        shared=shared,
    )


def problem(call: object, *args: str) -> str:
    """Call ``call(*args)``, which must fail with LeaseStringError, and return its problem."""
    assert callable(call)
    with pytest.raises(LeaseStringError) as info:
        call(*args)
    return info.value.problem


# --- strings sanlock prints ------------------------------------------------------------------


def test_inquire_output_of_sanlock() -> None:
    # Spec 6.10, verified against sanlock 3.8.5: one exclusive lease with its lver, one shared.
    inquired = "LS2:RA:/tmp/ls2.img:1048576:1 LS2:RB:/tmp/ls2.img:2097152:SH"
    first, second = (parse_resource(s) for s in inquired.split(" "))
    assert first == res("LS2", "RA", ("/tmp/ls2.img", 1048576), lver=1)
    assert second == res("LS2", "RB", ("/tmp/ls2.img", 2097152), shared=True)
    assert second.lver is None
    assert " ".join(format_resource(r) for r in (first, second)) == inquired


def test_client_status_lines() -> None:
    # `sanlock client status` prints "s LS:HOST_ID:PATH:OFFSET" and "r RESOURCE p PID".
    ls = parse_lockspace("__LIBVIRT__DISKS__:1:/var/lib/libvirt/sanlock/__LIBVIRT__DISKS__:0")
    assert ls == LockspaceSpec(
        "__LIBVIRT__DISKS__", 1, DiskLocation("/var/lib/libvirt/sanlock/__LIBVIRT__DISKS__", 0)
    )
    line = "r LS:R1:/dev/vg/leases:1048576:3 p 4242"
    spec = parse_resource(line.split(" ")[1])
    assert spec == res("LS", "R1", ("/dev/vg/leases", MIB), lver=3)


def test_mib_suffix_from_the_cli_formats_as_bytes() -> None:
    spec = parse_resource("LS:R1:/dev/vg/lv:1M")
    assert spec == res("LS", "R1", ("/dev/vg/lv", 1048576))
    assert format_resource(spec) == "LS:R1:/dev/vg/lv:1048576"
    ls = parse_lockspace("LS:0:/dev/vg/lv:8M")
    assert ls.disk.offset == 8 * MIB
    assert format_lockspace(ls) == "LS:0:/dev/vg/lv:8388608"


def test_direct_init_lockspace_with_host_id_zero() -> None:
    spec = parse_lockspace("LS:0:/tmp/ls.img:0")
    assert spec.host_id == 0
    assert format_lockspace(spec) == "LS:0:/tmp/ls.img:0"


def test_vdsm_style_names() -> None:
    sd = "2f1e3c52-9a5a-4f2b-9d7e-2a0f1f8a3a11"
    text = f"{sd}:SDM:/rhev/data-center/mnt/blockSD/{sd}/dom_md/leases:1048576"
    spec = parse_resource(text)
    assert (spec.lockspace, spec.name, spec.disks[0].offset) == (sd, "SDM", MIB)
    assert format_resource(spec) == text


# --- paths with ':', ' ' and '\' -------------------------------------------------------------


def test_path_with_escaped_colon() -> None:
    spec = parse_resource(r"LS:R:/mnt/host\:export/leases:512")
    assert spec.disks == (DiskLocation("/mnt/host:export/leases", 512),)
    assert format_resource(spec) == r"LS:R:/mnt/host\:export/leases:512"


def test_path_with_space_and_backslash() -> None:
    spec = parse_lockspace(r"LS:7:/a\ b\\c\:d:0")
    assert spec.disk.path == "/a b\\c:d"
    assert format_lockspace(spec) == r"LS:7:/a\ b\\c\:d:0"


def test_unescaped_space_in_path_is_accepted_and_formatted_escaped() -> None:
    # sanlock_str_to_res splits on colons only; a space is an ordinary character there.
    spec = parse_resource("LS:R:/my dir/leases:0")
    assert spec.disks[0].path == "/my dir/leases"
    assert format_resource(spec) == r"LS:R:/my\ dir/leases:0"


def test_backslash_escapes_any_character() -> None:
    assert parse_resource(r"LS:R:/\a\b:0").disks[0].path == "/ab"
    assert unescape_path(r"\x\:\ \\") == "x: \\"


def test_escape_path() -> None:
    assert escape_path("/plain/path") == "/plain/path"
    assert escape_path("/a:b c\\d") == r"/a\:b\ c\\d"
    assert unescape_path(escape_path("/a:b c\\d")) == "/a:b c\\d"


def test_unescape_path_lone_trailing_backslash() -> None:
    assert problem(unescape_path, "/p\\") == "path ends with a lone backslash"


def test_lone_trailing_backslash_in_a_path_field() -> None:
    # The backslash escapes nothing; sanlock fails here too.
    assert problem(parse_resource, "LS:R:/p:0:/q\\") == (
        "last field '/q\\\\' is neither an lver (decimal) nor SH "
        "(with an even number of fields after the names, the last one is the lver or SH)"
    )
    assert problem(parse_lockspace, "LS:1:/p\\\\\\") == (
        "a lockspace string has 4 fields LOCKSPACE:HOST_ID:PATH:OFFSET, found 3"
    )


# --- multiple disks, lver and SH -------------------------------------------------------------


def test_lver_or_sh_is_the_odd_last_field() -> None:
    assert parse_resource("LS:R:/p:0:/q:512") == res("LS", "R", ("/p", 0), ("/q", 512))
    assert parse_resource("LS:R:/p:0:/q:512:9") == res("LS", "R", ("/p", 0), ("/q", 512), lver=9)
    assert parse_resource("LS:R:/p:0:/q:512:SH") == res(
        "LS", "R", ("/p", 0), ("/q", 512), shared=True
    )


def test_four_disks_allowed_five_refused() -> None:
    four = "LS:R:/a:0:/b:512:/c:1024:/d:1536:5"
    spec = parse_resource(four)
    assert [d.path for d in spec.disks] == ["/a", "/b", "/c", "/d"]
    assert spec.lver == 5
    assert format_resource(spec) == four
    assert problem(parse_resource, "LS:R:/a:0:/b:0:/c:0:/d:0:/e:0") == (
        "a resource has 5 disks, the limit is 4"
    )
    assert problem(parse_resource, "LS:R:/a:0:/b:0:/c:0:/d:0:/e:0:SH") == (
        "a resource has 5 disks, the limit is 4"
    )


def test_lver_zero_is_kept_apart_from_no_lver() -> None:
    # sanlock_res_to_str always writes ":<lver>" (":0" when there is none to check).
    zero = parse_resource("LS:R:/p:0:0")
    assert zero.lver == 0
    assert format_resource(zero) == "LS:R:/p:0:0"
    none = parse_resource("LS:R:/p:0")
    assert none.lver is None
    assert zero != none


def test_largest_lver() -> None:
    spec = parse_resource(f"LS:R:/p:0:{2**64 - 1}")
    assert spec.lver == 2**64 - 1
    assert problem(parse_resource, f"LS:R:/p:0:{2**64}") == (
        f"lver {2**64} is out of range 0..{2**64 - 1}"
    )


@pytest.mark.parametrize("last", ["sh", "SHx", "0x10", "+1", "", " 1"])
def test_last_field_must_be_decimal_or_exactly_sh(last: str) -> None:
    message = problem(parse_resource, f"LS:R:/p:0:{last}")
    if last:
        assert message.startswith(f"last field {last!r} is neither an lver (decimal) nor SH")
    else:
        assert message == "lver (the last field) is empty"


def test_negative_lver() -> None:
    assert problem(parse_resource, "LS:R:/p:0:-3") == "lver -3 is negative"


def test_unescaped_colon_in_path_gives_a_hint() -> None:
    assert problem(parse_resource, "LS:R:/mnt/a:b:0") == (
        "offset (disk 1) 'b' is not a decimal number of bytes (or N with an 'M' suffix for MiB)"
        " (a ':' in a path must be escaped as '\\:')"
    )
    assert problem(parse_lockspace, "LS:1:/mnt/a:b:0") == (
        "a lockspace string has 4 fields LOCKSPACE:HOST_ID:PATH:OFFSET, found 5"
        " (a ':' in a path must be escaped as '\\:')"
    )


# --- the seed's short form -------------------------------------------------------------------


def test_short_seed_form() -> None:
    spec = parse_short_resource("vm1:/var/lib/leases/vm1:0", "LS")
    assert spec == res("LS", "vm1", ("/var/lib/leases/vm1", 0))
    assert format_resource(spec) == "LS:vm1:/var/lib/leases/vm1:0"


def test_short_seed_form_with_escaped_colon_and_mib() -> None:
    spec = parse_short_resource(r"vm1:/var/lib/leases/vm\:1:2M", "vms")
    assert spec == res("vms", "vm1", ("/var/lib/leases/vm:1", 2 * MIB))


@pytest.mark.parametrize(
    ("text", "lockspace", "expected"),
    [
        ("vm1:/p", "LS", "a short resource string has 3 fields RESOURCE:PATH:OFFSET, found 2"),
        (
            "vm1:/a:b:0",
            "LS",
            "a short resource string has 3 fields RESOURCE:PATH:OFFSET, found 4"
            " (a ':' in a path must be escaped as '\\:')",
        ),
        (":/p:0", "LS", "resource name is empty"),
        ("vm1::0", "LS", "path is empty"),
        ("vm1:/p:1", "LS", "offset 1 is not a multiple of 512"),
        ("vm1:/p:0", "", "lockspace name is empty"),
        ("vm1:/p:0", "L" * 49, "lockspace name is 49 bytes, the limit is 48"),
    ],
)
def test_short_seed_form_errors(text: str, lockspace: str, expected: str) -> None:
    with pytest.raises(LeaseStringError) as info:
        parse_short_resource(text, lockspace)
    assert info.value.problem == expected
    assert info.value.text == text


# --- names -----------------------------------------------------------------------------------


def test_name_of_48_bytes_is_allowed_49_is_not() -> None:
    name = "n" * NAME_LEN
    spec = parse_resource(f"{name}:{name}:/p:0")
    assert (spec.lockspace, spec.name) == (name, name)
    assert (
        problem(parse_resource, f"LS:{name}x:/p:0") == "resource name is 49 bytes, the limit is 48"
    )
    assert problem(parse_lockspace, f"{name}x:1:/p:0") == (
        "lockspace name is 49 bytes, the limit is 48"
    )


def test_name_length_is_counted_in_utf8_bytes() -> None:
    assert parse_resource(f"LS:{'é' * 24}:/p:0").name == "é" * 24  # 48 bytes
    assert problem(parse_resource, f"LS:{'é' * 25}:/p:0") == (
        "resource name is 50 bytes, the limit is 48"
    )


def test_name_may_contain_a_space() -> None:
    assert parse_resource("my ls:my res:/p:0").name == "my res"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"L\:S:R:/p:0", "lockspace name 'L\\\\:S' contains ':'"),
        (r"LS:R\x:/p:0", "resource name 'R\\\\x' contains '\\'"),
        ("LS:R\0:/p:0", "resource name 'R\\x00' contains NUL"),
    ],
)
def test_names_refuse_colon_backslash_and_nul(text: str, expected: str) -> None:
    assert problem(parse_resource, text) == (f"{expected} (names cannot contain ':', '\\' or NUL)")


def test_name_with_lone_surrogate() -> None:
    assert (
        problem(parse_resource, "LS:R\udc80:/p:0") == "resource name 'R\\udc80' is not valid UTF-8"
    )


# --- paths -----------------------------------------------------------------------------------


def test_path_length_limit_counts_unescaped_bytes() -> None:
    longest = "/" + "a:" * ((PATH_LEN - 1) // 2)  # 1023 bytes, 2044 once escaped
    assert len(longest.encode()) == PATH_LEN
    spec = parse_resource(f"LS:R:{escape_path(longest)}:0")
    assert spec.disks[0].path == longest
    too_long = longest + "x"
    assert problem(parse_resource, f"LS:R:{escape_path(too_long)}:0") == (
        "path (disk 1) is 1024 bytes, the limit is 1023"
    )


def test_path_with_nul() -> None:
    assert problem(parse_lockspace, "LS:1:/p\0q:0") == "path '/p\\x00q' contains NUL"


def test_path_with_surrogate_escaped_bytes_is_allowed() -> None:
    # os.fsdecode(b"/lease\xff") == "/lease\udcff": a path from argv that is not UTF-8.
    spec = parse_lockspace("LS:1:/lease\udcff:0")
    assert spec.disk.path == "/lease\udcff"
    assert problem(parse_lockspace, "LS:1:/lease\ud800:0") == (
        "path '/lease\\ud800' cannot be encoded as bytes"
    )


# --- offsets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("512", 512),
        ("4096", 4096),
        ("1048576", MIB),
        ("0M", 0),
        ("1M", MIB),
        ("255M", 255 * MIB),
        ("000512", 512),
        (str(MAX_OFFSET - 511), MAX_OFFSET - 511),
    ],
)
def test_parse_offset(text: str, expected: int) -> None:
    assert parse_offset(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "offset is empty"),
        ("-512", "offset -512 is negative"),
        ("-1M", "offset -1M is negative"),
        ("100", "offset 100 is not a multiple of 512"),
        ("513", "offset 513 is not a multiple of 512"),
        (
            "abc",
            "offset 'abc' is not a decimal number of bytes (or N with an 'M' suffix for MiB)",
        ),
        ("1m", "offset '1m' is not a decimal number of bytes (or N with an 'M' suffix for MiB)"),
        ("1K", "offset '1K' is not a decimal number of bytes (or N with an 'M' suffix for MiB)"),
        ("M", "offset 'M' is not a decimal number of bytes (or N with an 'M' suffix for MiB)"),
        (
            "0x200",
            "offset '0x200' is not a decimal number of bytes (or N with an 'M' suffix for MiB)",
        ),
        (
            " 512",
            "offset ' 512' is not a decimal number of bytes (or N with an 'M' suffix for MiB)",
        ),
        (
            "1_024",
            "offset '1_024' is not a decimal number of bytes (or N with an 'M' suffix for MiB)",
        ),
        ("٥١٢", "offset '٥١٢' is not a decimal number of bytes (or N with an 'M' suffix for MiB)"),
        (str(2**63), f"offset {2**63} is too large, the limit is {MAX_OFFSET}"),
        ("8796093022208M", f"offset {2**63} is too large, the limit is {MAX_OFFSET}"),
    ],
)
def test_parse_offset_errors(text: str, expected: str) -> None:
    with pytest.raises(LeaseStringError) as info:
        parse_offset(text)
    assert info.value.problem == expected
    assert info.value.text == text


def test_offset_error_names_the_disk() -> None:
    assert problem(parse_resource, "LS:R:/p:0:/q:1000") == (
        "offset (disk 2) 1000 is not a multiple of 512"
    )
    assert problem(parse_lockspace, "LS:1:/p:1000") == "offset 1000 is not a multiple of 512"


# --- host ids --------------------------------------------------------------------------------


def test_host_id_range() -> None:
    assert parse_lockspace("LS:2000:/p:0").host_id == 2000
    assert parse_lockspace("LS:007:/p:0").host_id == 7
    assert problem(parse_lockspace, "LS:2001:/p:0") == "host_id 2001 is out of range 0..2000"
    assert problem(parse_lockspace, "LS:-1:/p:0") == "host_id -1 is negative"
    assert problem(parse_lockspace, "LS:one:/p:0") == (
        "host_id 'one' is not a decimal number 0..2000"
    )
    huge = "9" * 40
    assert problem(parse_lockspace, f"LS:{huge}:/p:0") == (
        "host_id 9999999999...9999999999 (40 digits) is out of range 0..2000"
    )


# --- empty parts and shapes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the string is empty"),
        (":1:/p:0", "lockspace name is empty"),
        ("LS::path:0", "host_id is empty"),
        ("LS:1::0", "path is empty"),
        ("LS:1:/p:", "offset is empty"),
        ("LS:1:/p", "a lockspace string has 4 fields LOCKSPACE:HOST_ID:PATH:OFFSET, found 3"),
        ("LS", "a lockspace string has 4 fields LOCKSPACE:HOST_ID:PATH:OFFSET, found 1"),
    ],
)
def test_lockspace_errors(text: str, expected: str) -> None:
    with pytest.raises(LeaseStringError) as info:
        parse_lockspace(text)
    assert info.value.problem == expected
    assert info.value.text == text
    assert str(info.value) == f"invalid lease string {text!r}: {expected}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":R:/p:0", "lockspace name is empty"),
        ("LS::path:0", "resource name is empty"),
        ("LS:R::0", "path (disk 1) is empty"),
        ("LS:R:/p:", "offset (disk 1) is empty"),
        ("LS:R:/p:0::512", "path (disk 2) is empty"),
        ("LS:R:/p:0:/q:", "offset (disk 2) is empty"),
        ("LS:R:/p:0:", "lver (the last field) is empty"),
        ("LS:R", "a resource string has at least 4 fields LOCKSPACE:RESOURCE:PATH:OFFSET, found 2"),
        (
            "LS:R:/p",
            "a resource string has at least 4 fields LOCKSPACE:RESOURCE:PATH:OFFSET, found 3",
        ),
        (":::", "lockspace name is empty"),
    ],
)
def test_resource_errors(text: str, expected: str) -> None:
    with pytest.raises(LeaseStringError) as info:
        parse_resource(text)
    assert info.value.problem == expected
    assert info.value.text == text


def test_lease_string_error_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        parse_resource("nonsense")
    with pytest.raises(ValueError, match="invalid lease string 'nonsense'"):
        parse_lockspace("nonsense")


# --- the dataclasses -------------------------------------------------------------------------


def test_specs_are_frozen_and_hashable() -> None:
    spec = res("LS", "R", ("/p", 0), lver=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.lver = 3  # type: ignore[misc]
    assert {spec, res("LS", "R", ("/p", 0), lver=2)} == {spec}


def test_lver_and_shared_are_keyword_only() -> None:
    disks = (DiskLocation("/p", 0),)
    with pytest.raises(TypeError):
        ResourceSpec("LS", "R", disks, 3)  # type: ignore[call-arg]
    assert ResourceSpec("LS", "R", disks, lver=3).lver == 3


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: DiskLocation("/p", 100), "offset 100 is not a multiple of 512"),
        (lambda: DiskLocation("/p", -512), "offset -512 is negative"),
        (lambda: DiskLocation("", 0), "path is empty"),
        (
            lambda: LockspaceSpec("LS", 2001, DiskLocation("/p", 0)),
            "host_id 2001 is out of range 0..2000",
        ),
        (lambda: ResourceSpec("LS", "R", ()), "a resource needs at least one PATH:OFFSET"),
        (
            lambda: ResourceSpec("LS", "R", (DiskLocation("/p", 0),) * 5),
            "a resource has 5 disks, the limit is 4",
        ),
        (
            lambda: ResourceSpec("LS", "R", (DiskLocation("/p", 0),), lver=1, shared=True),
            "a shared lease has no lver (its string ends with ':SH')",
        ),
        (
            lambda: ResourceSpec("LS", "R:X", (DiskLocation("/p", 0),)),
            "resource name 'R:X' contains ':' (names cannot contain ':', '\\' or NUL)",
        ),
        (
            lambda: ResourceSpec("LS", "R", (DiskLocation("/p", 0),), lver=-1),
            "lver -1 is out of range 0..18446744073709551615",
        ),
    ],
)
def test_constructors_validate(make: object, expected: str) -> None:
    assert problem(make) == expected


def test_constructor_error_shows_the_string_it_would_format() -> None:
    with pytest.raises(LeaseStringError) as info:
        DiskLocation("/a:b", 3)
    assert info.value.text == r"/a\:b:3"


def test_constructors_refuse_wrong_types_with_our_error() -> None:
    assert problem(lambda: DiskLocation("/p", 0.0)) == "offset must be int, not float"  # type: ignore[arg-type]
    assert problem(lambda: DiskLocation("/p", True)) == "offset must be int, not bool"
    assert (
        problem(
            lambda: ResourceSpec("LS", "R", [DiskLocation("/p", 0)])  # type: ignore[arg-type]
        )
        == "disks must be a tuple, not list"
    )
    assert problem(lambda: parse_resource(b"LS:R:/p:0")) == (  # type: ignore[arg-type]
        "a lease string must be str, not bytes"
    )


def test_format_writes_sh_instead_of_lver() -> None:
    spec = res("LS", "R", ("/p", 0), ("/q p", 4096), shared=True)
    assert format_resource(spec) == r"LS:R:/p:0:/q\ p:4096:SH"


def test_huge_numbers_fail_cleanly() -> None:
    # Python refuses int() of more than 4300 digits with ValueError; we must not leak it.
    digits = "9" * 5000
    assert problem(parse_offset, digits) == (
        f"offset 9999999999...9999999999 (5000 digits) is too large, the limit is {MAX_OFFSET}"
    )
    assert problem(parse_offset, digits + "M").startswith("offset 9999999999...999999999M")
    assert problem(parse_lockspace, f"LS:{digits}:/p:0") == (
        "host_id 9999999999...9999999999 (5000 digits) is out of range 0..2000"
    )
    assert problem(parse_resource, f"LS:R:/p:0:{digits}") == (
        "lver 9999999999...9999999999 (5000 digits) is out of range 0..18446744073709551615"
    )


# --- direct dump's PATH[:OFFSET[:SIZE]] ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "location", "size"),
    [
        ("/tmp/ls.img", DiskLocation("/tmp/ls.img", 0), 0),
        ("/tmp/ls.img:1M", DiskLocation("/tmp/ls.img", MIB), 0),
        ("/tmp/ls.img:1048576:8M", DiskLocation("/tmp/ls.img", MIB), 8 * MIB),
        (r"/mnt/a\:b:0:1000", DiskLocation("/mnt/a:b", 0), 1000),
    ],
)
def test_parse_area(text: str, location: DiskLocation, size: int) -> None:
    assert parse_area(text) == (location, size)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the string is empty"),
        (":0", "path is empty"),
        ("/p:", "offset is empty"),
        ("/p:100", "offset 100 is not a multiple of 512"),
        ("/p:0:", "size is empty"),
        ("/p:0:-1", "size -1 is negative"),
        ("/p:0:x", "size 'x' is not a decimal number of bytes (or N with an 'M' suffix for MiB)"),
        (
            f"/p:0:{'9' * 30}",
            f"size 9999999999...9999999999 (30 digits) is too large, the limit is {MAX_OFFSET}",
        ),
        (
            "/a:b:0:0",
            "an area has at most 3 fields PATH[:OFFSET[:SIZE]], found 4"
            " (a ':' in a path must be escaped as '\\:')",
        ),
    ],
)
def test_parse_area_errors(text: str, expected: str) -> None:
    with pytest.raises(LeaseStringError) as info:
        parse_area(text)
    assert info.value.problem == expected
    assert info.value.text == text
