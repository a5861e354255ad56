"""Fake disks for the simulator: bytes in memory, written a sector at a time.

A write of several sectors is applied sector by sector (sector-atomic, not write-atomic), as
real storage does; the simulator interleaves other hosts' I/O between them when it injects
faults. Offsets and lengths must be sector aligned, as with O_DIRECT.
"""

from __future__ import annotations

from sync_manager.errors import DeviceTooSmall, UsageError

__all__ = ["FakeDisk"]


class FakeDisk:
    """A fixed-size disk in memory."""

    def __init__(self, name: str, size: int, sector_size: int = 512) -> None:
        if size % sector_size:
            raise UsageError(f"disk size {size} is not a multiple of {sector_size}")
        self.name = name
        self.size = size
        self.sector_size = sector_size
        self.data = bytearray(size)
        self.reads = 0
        self.writes = 0
        self.bytes_read = 0
        self.bytes_written = 0

    def check(self, offset: int, length: int) -> None:
        """Raise UsageError or DeviceTooSmall unless ``[offset, offset+length)`` is valid I/O."""
        self._check(offset, length)

    def _check(self, offset: int, length: int) -> None:
        if offset % self.sector_size or length % self.sector_size or length <= 0:
            raise UsageError(
                f"{self.name}: unaligned I/O at {offset} length {length} "
                f"(sector size {self.sector_size})"
            )
        if offset < 0 or offset + length > self.size:
            raise DeviceTooSmall(
                self.name, f"I/O at {offset} length {length} ends past the disk ({self.size})"
            )

    def read(self, offset: int, length: int) -> bytes:
        """The bytes at ``offset``."""
        self._check(offset, length)
        self.reads += 1
        self.bytes_read += length
        return bytes(self.data[offset : offset + length])

    def write_sector(self, offset: int, data: bytes) -> None:
        """Apply one sector of a write (the unit of atomicity)."""
        self._check(offset, len(data))
        self.data[offset : offset + len(data)] = data

    def count_write(self, length: int) -> None:
        """Count one write of ``length`` bytes that is applied piece by piece (write_sector)."""
        self.writes += 1
        self.bytes_written += length

    def write(self, offset: int, data: bytes) -> None:
        """Write whole sectors at ``offset``, all at once."""
        self._check(offset, len(data))
        self.writes += 1
        self.bytes_written += len(data)
        self.data[offset : offset + len(data)] = data
