"""Fixed 48-byte name fields (lockspace, resource and host names).

sanlock stores names NUL-padded in 48 bytes; a 48-byte name has no NUL. Names compare like
``strncmp(a, b, 48)``: up to the first NUL. Bytes after the NUL are kept as read (they are
covered by the checksum) but carry no meaning.
"""

from __future__ import annotations

from sync_manager.errors import UsageError

__all__ = ["NAME_LEN", "decode_name", "encode_name", "name_bytes", "names_equal"]

NAME_LEN = 48


def encode_name(name: str, *, what: str = "name") -> bytes:
    """``name`` as a NUL-padded 48-byte field; UsageError if it does not fit."""
    raw = name.encode("utf-8")
    if not raw:
        raise UsageError(f"{what} is empty")
    if len(raw) > NAME_LEN:
        raise UsageError(f"{what} {name!r} is {len(raw)} bytes, the limit is {NAME_LEN}")
    if b"\0" in raw:
        raise UsageError(f"{what} {name!r} contains a NUL byte")
    return raw.ljust(NAME_LEN, b"\0")


def name_bytes(field: bytes) -> bytes:
    """The meaningful part of a name field: the bytes before the first NUL."""
    end = field.find(b"\0")
    return field if end < 0 else field[:end]


def decode_name(field: bytes) -> str:
    """The name in a field, for display (undecodable bytes shown as escapes)."""
    return name_bytes(field).decode("utf-8", "backslashreplace")


def names_equal(field: bytes, name: bytes) -> bool:
    """Compare a name field with a name the way sanlock does (strncmp over 48 bytes)."""
    return name_bytes(field[:NAME_LEN]) == name_bytes(name[:NAME_LEN])
