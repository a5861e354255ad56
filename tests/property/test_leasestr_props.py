"""Properties of sync_manager.leasestr: round trips, and only LeaseStringError on bad input."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from sync_manager.errors import LeaseStringError
from sync_manager.leasestr import (
    MAX_DISKS,
    MAX_HOST_ID,
    MAX_LVER,
    MAX_OFFSET,
    NAME_LEN,
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

# Characters that matter to the grammar, mixed with anything else (no NUL, no lone surrogates).
SPECIAL = st.sampled_from([":", "\\", " ", "/", "M", "S", "H", "0", "5", "-"])
ANY_CHAR = st.characters(exclude_characters="\0", codec="utf-8")

names = st.text(
    alphabet=st.one_of(
        st.sampled_from(" _-.LSR"),
        st.characters(exclude_characters=":\\\0", codec="utf-8"),
    ),
    min_size=1,
    max_size=NAME_LEN,
).filter(lambda name: len(name.encode()) <= NAME_LEN)

paths = st.text(alphabet=st.one_of(SPECIAL, ANY_CHAR), min_size=1, max_size=80)
offsets = st.integers(0, MAX_OFFSET // 512).map(lambda n: n * 512)
disks = st.builds(DiskLocation, paths, offsets)

lockspaces = st.builds(LockspaceSpec, names, st.integers(0, MAX_HOST_ID), disks)


@st.composite
def resources(draw: st.DrawFn) -> ResourceSpec:
    tail = draw(st.sampled_from(["none", "lver", "sh"]))
    return ResourceSpec(
        draw(names),
        draw(names),
        tuple(draw(st.lists(disks, min_size=1, max_size=MAX_DISKS))),
        lver=draw(st.integers(0, MAX_LVER)) if tail == "lver" else None,
        shared=tail == "sh",
    )


def oracle_escape(path: str) -> str:
    """Escape a path independently of the code under test."""
    return re.sub(r"([\\: ])", r"\\\1", path)


# Text that looks like a lease string: grammar characters, digits, and anything.
lease_like = st.text(alphabet=st.one_of(SPECIAL, SPECIAL, ANY_CHAR, st.just("\0")), max_size=60)


# --- round trips -----------------------------------------------------------------------------


@given(lockspaces)
def test_lockspace_round_trip(spec: LockspaceSpec) -> None:
    assert parse_lockspace(format_lockspace(spec)) == spec


@given(resources())
@example(
    ResourceSpec(
        "LS",
        "R",
        (DiskLocation("/a:b c\\d", 512), DiskLocation(":", 0), DiskLocation("\\", 1024)),
        lver=0,
    )
)
def test_resource_round_trip(spec: ResourceSpec) -> None:
    assert parse_resource(format_resource(spec)) == spec


@given(names, names, paths, offsets)
def test_short_resource_matches_the_full_form(
    lockspace: str, name: str, path: str, offset: int
) -> None:
    short = f"{name}:{oracle_escape(path)}:{offset}"
    spec = parse_short_resource(short, lockspace)
    assert spec == ResourceSpec(lockspace, name, (DiskLocation(path, offset),))
    assert format_resource(spec) == f"{lockspace}:{short}"


@given(names, st.integers(0, MAX_HOST_ID), paths, offsets)
def test_canonical_lockspace_string_round_trip(
    name: str, host_id: int, path: str, offset: int
) -> None:
    text = f"{name}:{host_id}:{oracle_escape(path)}:{offset}"
    spec = parse_lockspace(text)
    assert spec == LockspaceSpec(name, host_id, DiskLocation(path, offset))
    assert format_lockspace(spec) == text


@given(
    names,
    names,
    st.lists(st.tuples(paths, offsets), min_size=1, max_size=MAX_DISKS),
    st.one_of(st.none(), st.just("SH"), st.integers(0, MAX_LVER).map(str)),
)
def test_canonical_resource_string_round_trip(
    lockspace: str, name: str, pairs: list[tuple[str, int]], tail: str | None
) -> None:
    fields = [lockspace, name]
    for path, offset in pairs:
        fields += [oracle_escape(path), str(offset)]
    if tail is not None:
        fields.append(tail)
    text = ":".join(fields)
    spec = parse_resource(text)
    assert spec.disks == tuple(DiskLocation(path, offset) for path, offset in pairs)
    assert spec.shared == (tail == "SH")
    assert spec.lver == (int(tail) if tail not in (None, "SH") else None)
    assert format_resource(spec) == text


@given(names, names, paths, st.integers(0, 2**20))
def test_mib_suffix_means_mebibytes(lockspace: str, name: str, path: str, mib: int) -> None:
    spec = parse_resource(f"{lockspace}:{name}:{oracle_escape(path)}:{mib}M:SH")
    assert spec.disks[0].offset == mib * MIB
    assert format_resource(spec).endswith(f":{mib * MIB}:SH")


@given(st.text(alphabet=st.one_of(SPECIAL, ANY_CHAR)))
def test_escape_round_trip(path: str) -> None:
    escaped = escape_path(path)
    assert escaped == oracle_escape(path)
    assert unescape_path(escaped) == path


# --- arbitrary input: a spec or LeaseStringError, nothing else -------------------------------


@given(st.one_of(lease_like, st.text()))
@example("LS:R:/p:0:\\")
@example("\\")
@example("::::::::::::")
@example("LS:R:/p:99999999999999999999999M")
def test_parse_resource_only_raises_lease_string_error(text: str) -> None:
    try:
        spec = parse_resource(text)
    except LeaseStringError as err:
        assert err.text == text
        assert err.problem
    else:
        # Whatever parses, formats to a string that parses to the same spec.
        assert parse_resource(format_resource(spec)) == spec


@given(st.one_of(lease_like, st.text()))
@example("LS:1:/p:0\\")
@example("LS:99999999999999999999999999:/p:0")
def test_parse_lockspace_only_raises_lease_string_error(text: str) -> None:
    try:
        spec = parse_lockspace(text)
    except LeaseStringError as err:
        assert err.text == text
        assert err.problem
    else:
        assert parse_lockspace(format_lockspace(spec)) == spec


@given(st.one_of(lease_like, st.text()), st.one_of(names, st.text()))
def test_parse_short_resource_only_raises_lease_string_error(text: str, lockspace: str) -> None:
    try:
        spec = parse_short_resource(text, lockspace)
    except LeaseStringError as err:
        assert err.text == text
    else:
        assert spec.lockspace == lockspace
        assert len(spec.disks) == 1


@given(st.one_of(st.text(alphabet="0123456789M-+ x", max_size=30), st.text()))
def test_parse_offset_only_raises_lease_string_error(text: str) -> None:
    try:
        offset = parse_offset(text)
    except LeaseStringError as err:
        assert err.text == text
    else:
        assert 0 <= offset <= MAX_OFFSET
        assert offset % 512 == 0


@given(st.text())
def test_unescape_only_raises_lease_string_error(text: str) -> None:
    try:
        unescape_path(text)
    except LeaseStringError as err:
        assert err.problem == "path ends with a lone backslash"


@given(paths, offsets, st.integers(0, MAX_OFFSET))
def test_area_round_trip(path: str, offset: int, size: int) -> None:
    text = f"{oracle_escape(path)}:{offset}:{size}"
    assert parse_area(text) == (DiskLocation(path, offset), size)


@given(st.one_of(lease_like, st.text()))
def test_parse_area_only_raises_lease_string_error(text: str) -> None:
    try:
        location, size = parse_area(text)
    except LeaseStringError as err:
        assert err.text == text
    else:
        assert size >= 0
        assert location.offset % 512 == 0
