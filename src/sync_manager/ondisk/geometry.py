"""Sector sizes, align sizes and host counts: the geometry of lease areas.

A lockspace and each resource lease occupy exactly one *align-size* area. Only five
(sector size, align size) pairs are valid in sanlock 3.8 (spec/sanlock-ondisk.md, 2.1); each
fixes the largest host id. The align size is recorded in the leader's flags (``LFL_ALIGN_*``);
records written before sanlock 3.7 carry no align flag and use the historical default.
"""

from __future__ import annotations

from dataclasses import dataclass

from sync_manager.errors import BadGeometry

__all__ = [
    "ALIGN_FLAGS",
    "DEFAULT_MAX_HOSTS",
    "MIB",
    "VALID_GEOMETRIES",
    "Geometry",
    "align_from_flags",
    "parse_align",
]

MIB = 1024 * 1024
DEFAULT_MAX_HOSTS = 2000

# Leader record flag bit for each align size.
ALIGN_FLAGS: dict[int, int] = {1 * MIB: 0x10, 2 * MIB: 0x20, 4 * MIB: 0x40, 8 * MIB: 0x80}

# (sector_size, align_size) -> max_hosts
VALID_GEOMETRIES: dict[tuple[int, int], int] = {
    (512, 1 * MIB): 2000,
    (4096, 1 * MIB): 250,
    (4096, 2 * MIB): 500,
    (4096, 4 * MIB): 1000,
    (4096, 8 * MIB): 2000,
}

# Used when a record has no align flag, or when only the sector size is known.
_HISTORICAL_ALIGN = {512: 1 * MIB, 4096: 8 * MIB}


@dataclass(frozen=True, slots=True)
class Geometry:
    """A valid (sector size, align size) pair and the host count it allows."""

    sector_size: int
    align_size: int

    def __post_init__(self) -> None:
        if (self.sector_size, self.align_size) not in VALID_GEOMETRIES:
            raise BadGeometry(
                f"invalid combination of sector size {self.sector_size} and align size "
                f"{_show_align(self.align_size)}: valid are 512/1M and 4096/1M, 2M, 4M, 8M"
            )

    @classmethod
    def default_for(cls, sector_size: int) -> Geometry:
        """The historical default area for a sector size (512 -> 1M, 4096 -> 8M)."""
        if sector_size not in _HISTORICAL_ALIGN:
            raise BadGeometry(f"invalid sector size {sector_size}: must be 512 or 4096")
        return cls(sector_size, _HISTORICAL_ALIGN[sector_size])

    @classmethod
    def from_leader_fields(cls, sector_size: int, flags: int) -> Geometry:
        """The geometry a leader record declares through its sector size and align flags."""
        align = align_from_flags(flags)
        if align is None:
            return cls.default_for(sector_size)
        return cls(sector_size, align)

    @property
    def max_hosts(self) -> int:
        """The largest host id an area of this geometry has room for."""
        return VALID_GEOMETRIES[(self.sector_size, self.align_size)]

    @property
    def align_flag(self) -> int:
        """The ``LFL_ALIGN_*`` leader flag recording this align size."""
        return ALIGN_FLAGS[self.align_size]

    @property
    def sectors(self) -> int:
        """Sectors in one area."""
        return self.align_size // self.sector_size

    def __str__(self) -> str:
        return f"{self.sector_size}/{_show_align(self.align_size)}"


def align_from_flags(flags: int) -> int | None:
    """The align size recorded in leader ``flags``; the smallest wins if several are set."""
    for align, bit in sorted(ALIGN_FLAGS.items()):
        if flags & bit:
            return align
    return None


def parse_align(text: str) -> int:
    """Parse an align size as sanlock's CLI writes it: ``1M``, ``2M``, ``4M``, ``8M``.

    Plain byte counts (``1048576``) are accepted too.
    """
    value = text.strip()
    try:
        size = int(value[:-1]) * MIB if value[-1:] in ("M", "m") else int(value)
    except ValueError:
        raise BadGeometry(f"invalid align size {text!r}: use 1M, 2M, 4M or 8M") from None
    if size not in ALIGN_FLAGS:
        raise BadGeometry(f"invalid align size {text!r}: use 1M, 2M, 4M or 8M")
    return size


def _show_align(size: int) -> str:
    return f"{size // MIB}M" if size % MIB == 0 and size > 0 else str(size)
