"""Sector size / align size / max hosts (spec/sanlock-ondisk.md 2.1, 4.9)."""

from __future__ import annotations

import dataclasses

import pytest

from sync_manager.errors import SANLK_ADDLS_SIZES, BadGeometry, SyncManagerError, UsageError
from sync_manager.ondisk.geometry import (
    ALIGN_FLAGS,
    DEFAULT_MAX_HOSTS,
    MIB,
    VALID_GEOMETRIES,
    Geometry,
    align_from_flags,
    parse_align,
)

# spec 2.1: sector_size, align_size, max_hosts, sectors per area
SPEC_TABLE = [
    (512, 1 * MIB, 2000, 2048),
    (4096, 1 * MIB, 250, 256),
    (4096, 2 * MIB, 500, 512),
    (4096, 4 * MIB, 1000, 1024),
    (4096, 8 * MIB, 2000, 2048),
]


def test_constants() -> None:
    assert MIB == 1048576
    assert DEFAULT_MAX_HOSTS == 2000
    assert ALIGN_FLAGS == {1048576: 0x10, 2097152: 0x20, 4194304: 0x40, 8388608: 0x80}
    assert {(s, a): m for s, a, m, _ in SPEC_TABLE} == VALID_GEOMETRIES


@pytest.mark.parametrize(("sector", "align", "max_hosts", "sectors"), SPEC_TABLE)
def test_valid_table(sector: int, align: int, max_hosts: int, sectors: int) -> None:
    geometry = Geometry(sector, align)
    assert geometry.sector_size == sector
    assert geometry.align_size == align
    assert geometry.max_hosts == max_hosts
    assert geometry.sectors == sectors
    assert geometry.align_flag == {MIB: 0x10, 2 * MIB: 0x20, 4 * MIB: 0x40, 8 * MIB: 0x80}[align]
    # Every host's sector (lockspace) fits the area; resources need 2 more sectors than hosts.
    assert max_hosts <= sectors
    assert max_hosts + 2 <= sectors


def test_str() -> None:
    assert str(Geometry(512, MIB)) == "512/1M"
    assert str(Geometry(4096, 8 * MIB)) == "4096/8M"


def test_equal_and_frozen() -> None:
    assert Geometry(4096, 2 * MIB) == Geometry(4096, 2 * MIB)
    assert Geometry(4096, 2 * MIB) != Geometry(4096, 4 * MIB)
    geometry = Geometry(512, MIB)
    with pytest.raises(dataclasses.FrozenInstanceError):
        geometry.sector_size = 4096  # type: ignore[misc]


@pytest.mark.parametrize(
    ("sector", "align"),
    [
        (512, 2 * MIB),
        (512, 4 * MIB),
        (512, 8 * MIB),
        (1024, MIB),
        (2048, 8 * MIB),
        (4096, 16 * MIB),
        (4096, MIB + 512),
        (4096, 0),
        (0, 0),
        (-512, MIB),
        (512, -MIB),
    ],
)
def test_invalid_pairs(sector: int, align: int) -> None:
    with pytest.raises(BadGeometry) as info:
        Geometry(sector, align)
    err = info.value
    assert err.code == SANLK_ADDLS_SIZES == -230
    assert isinstance(err, UsageError)
    assert isinstance(err, SyncManagerError)
    assert str(sector) in str(err)


def test_invalid_pair_message_names_the_align() -> None:
    with pytest.raises(BadGeometry, match=r"sector size 512 and align size 2M"):
        Geometry(512, 2 * MIB)


def test_historical_defaults() -> None:
    assert Geometry.default_for(512) == Geometry(512, MIB)
    assert Geometry.default_for(4096) == Geometry(4096, 8 * MIB)
    assert Geometry.default_for(512).max_hosts == DEFAULT_MAX_HOSTS
    assert Geometry.default_for(4096).max_hosts == DEFAULT_MAX_HOSTS


@pytest.mark.parametrize("sector", [0, 1, 511, 1024, 2048, 8192, -4096])
def test_historical_default_of_invalid_sector_size(sector: int) -> None:
    with pytest.raises(BadGeometry, match=str(sector)):
        Geometry.default_for(sector)


@pytest.mark.parametrize(
    ("flags", "align"),
    [
        (0x10, 1 * MIB),
        (0x20, 2 * MIB),
        (0x40, 4 * MIB),
        (0x80, 8 * MIB),
        # several bits: the smallest wins (1M is tested first)
        (0xF0, 1 * MIB),
        (0xE0, 2 * MIB),
        (0xC0, 4 * MIB),
        (0xA0, 2 * MIB),
        (0x90, 1 * MIB),
        # other flags do not disturb it
        (0x21, 2 * MIB),
        (0xFFFFFF40, 4 * MIB),
        # none set: records written before 3.7
        (0x0, None),
        (0x1, None),
        (0x0F, None),
        (0xFFFFFF0F, None),
    ],
)
def test_align_from_flags(flags: int, align: int | None) -> None:
    assert align_from_flags(flags) == align


@pytest.mark.parametrize(
    ("sector", "flags", "expected"),
    [
        (512, 0x10, Geometry(512, MIB)),
        (4096, 0x10, Geometry(4096, MIB)),
        (4096, 0x20, Geometry(4096, 2 * MIB)),
        (4096, 0x40, Geometry(4096, 4 * MIB)),
        (4096, 0x80, Geometry(4096, 8 * MIB)),
        (4096, 0x30, Geometry(4096, MIB)),
        (4096, 0x21, Geometry(4096, 2 * MIB)),
        # no align flag: the historical default for the sector size
        (512, 0, Geometry(512, MIB)),
        (4096, 0, Geometry(4096, 8 * MIB)),
        (4096, 0x1, Geometry(4096, 8 * MIB)),
    ],
)
def test_from_leader_fields(sector: int, flags: int, expected: Geometry) -> None:
    assert Geometry.from_leader_fields(sector, flags) == expected


@pytest.mark.parametrize(("sector", "flags"), [(512, 0x20), (512, 0x80), (1024, 0x10), (0, 0)])
def test_from_leader_fields_invalid(sector: int, flags: int) -> None:
    with pytest.raises(BadGeometry):
        Geometry.from_leader_fields(sector, flags)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1M", 1 * MIB),
        ("2M", 2 * MIB),
        ("4M", 4 * MIB),
        ("8M", 8 * MIB),
        ("8m", 8 * MIB),
        (" 4M ", 4 * MIB),
        ("1048576", 1 * MIB),
        ("8388608", 8 * MIB),
    ],
)
def test_parse_align(text: str, size: int) -> None:
    assert parse_align(text) == size


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "M",
        "3M",
        "16M",
        "0M",
        "0",
        "-1M",
        "1K",
        "1G",
        "1.5M",
        "1MB",
        "abc",
        "1048575",
        "0x100000",
    ],
)
def test_parse_align_invalid(text: str) -> None:
    with pytest.raises(BadGeometry) as info:
        parse_align(text)
    assert repr(text) in str(info.value)
    assert info.value.code == -230
