"""sanlock's checksum: a CRC-32C (Castagnoli) variant.

sanlock runs the classic reflected, table-driven CRC-32C update loop (polynomial 0x82F63B78)
seeded with ``0xFFFFFFFE`` (that is ``~1``) and applies no final XOR
(spec/sanlock-ondisk.md, section 3). It covers the first 168 bytes of a leader record and the
first 48 bytes of a paxos dblock. Golden vectors from real sanlock images pin it in the tests.
"""

from __future__ import annotations

__all__ = ["sanlock_checksum"]

_POLY = 0x82F63B78
_SEED = 0xFFFFFFFE


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def sanlock_checksum(data: bytes) -> int:
    """Return sanlock's checksum of ``data`` as an unsigned 32-bit integer."""
    crc = _SEED
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc
