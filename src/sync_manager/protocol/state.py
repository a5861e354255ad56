"""Status records, ``struct sanlk_state`` and what follows it (spec 2.5.25-2.5.27).

STATUS, HOST_STATUS and RENEWAL answer with a 32-byte header and then a stream of records until
the daemon closes the connection. Each record is::

    sanlk_state (80): type u32 @0, flags u32 @4, data32 u32 @8, pad @12, data64 u64 @16,
                      name[48] @24, str_len u32 @72, pad @76
    str_len bytes of text (``key=value`` pairs separated by spaces, with its NUL)
    STATUS only: a sanlk_lockspace (1104) after a LOCKSPACE record, a sanlk_resource and its
                 num_disks sanlk_disk after a RESOURCE record

``sizeof(struct sanlk_state)`` is 80 although ``str[]`` is declared at 76: 80 bytes are sent.
The CLI reads ``str`` into a ``SANLK_STATE_MAXSTR`` (4096) buffer; longer texts are refused.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Self

from sync_manager.errors import UsageError
from sync_manager.protocol.errors import MalformedMessage
from sync_manager.protocol.flags import StateType
from sync_manager.protocol.header import ByteData, s32
from sync_manager.protocol.structs import (
    NAME_LEN,
    Lockspace,
    Resource,
    check_fields,
    need,
    text,
)

__all__ = ["STATE_MAXSTR", "StateRecord", "decode_records", "kv_text", "parse_kv"]

STATE_MAXSTR = 4096


def kv_text(pairs: Mapping[str, object]) -> bytes:
    """``key=value`` pairs joined by spaces, NUL-terminated, as the daemon's ``print_state_*``."""
    body = " ".join(f"{key}={value}" for key, value in pairs.items())
    return body.encode("utf-8", "backslashreplace") + b"\0"


def parse_kv(raw: bytes) -> dict[str, str]:
    """The ``key=value`` pairs of a record's text (a word without ``=`` maps to "")."""
    pairs: dict[str, str] = {}
    for word in text(raw).split(" "):
        if word:
            key, _, value = word.partition("=")
            pairs[key] = value
    return pairs


@dataclass(frozen=True, slots=True)
class StateRecord:
    """One record of a status stream: the ``sanlk_state``, its text and its binary trailer.

    ``string`` is the text exactly as sent (with its NUL; ``str_len`` is its length). ``lockspace``
    and ``resource`` are the STATUS trailers of LOCKSPACE and RESOURCE records.
    """

    type: int
    name: bytes = b""
    data32: int = 0
    data64: int = 0
    string: bytes = b""
    flags: int = 0
    pad: int = 0
    pad2: int = 0
    lockspace: Lockspace | None = None
    resource: Resource | None = None

    STRUCT: ClassVar[struct.Struct] = struct.Struct("<IIIIQ48sII")
    SIZE: ClassVar[int] = 80

    def __post_init__(self) -> None:
        check_fields(
            self,
            {
                "type": 32,
                "name": -NAME_LEN,
                "data32": 32,
                "data64": 64,
                "flags": 32,
                "pad": 32,
                "pad2": 32,
            },
        )
        if not isinstance(self.string, bytes) or len(self.string) > STATE_MAXSTR:
            raise UsageError(f"state text must be at most {STATE_MAXSTR} bytes")

    @classmethod
    def make(
        cls,
        type: StateType,
        name: bytes,
        pairs: Mapping[str, object],
        *,
        data32: int = 0,
        data64: int = 0,
        lockspace: Lockspace | None = None,
        resource: Resource | None = None,
    ) -> Self:
        """A record as the daemon builds one; ``data32`` may be a pid such as -1."""
        return cls(
            int(type), name, data32 & 0xFFFFFFFF, data64, kv_text(pairs),
            lockspace=lockspace, resource=resource,
        )  # fmt: skip

    def pack(self, *, with_trailer: bool = True) -> bytes:
        """The record as sent: the 80-byte struct, the text, then the trailer if any."""
        head = self.STRUCT.pack(
            self.type, self.flags, self.data32, self.pad, self.data64, self.name,
            len(self.string), self.pad2,
        )  # fmt: skip
        out = head + self.string
        if with_trailer and self.lockspace is not None:
            out += self.lockspace.pack()
        if with_trailer and self.resource is not None:
            out += self.resource.pack_with_disks()
        return out

    @classmethod
    def unpack(
        cls, data: ByteData, offset: int = 0, *, with_trailer: bool = True
    ) -> tuple[Self, int]:
        """Decode one record at ``offset``; returns it and the offset after it.

        With ``with_trailer`` (STATUS) a LOCKSPACE or RESOURCE record's trailer is read too.
        """
        need(data, offset, cls.SIZE, "sanlk_state")
        type_, flags, data32, pad, data64, name, str_len, pad2 = cls.STRUCT.unpack_from(
            data, offset
        )
        if str_len > STATE_MAXSTR:
            raise MalformedMessage("sanlk_state str_len", expected=f"<= {STATE_MAXSTR}",
                                   found=str_len)  # fmt: skip
        pos = offset + cls.SIZE
        need(data, pos, str_len, "sanlk_state text")
        raw = bytes(data[pos : pos + str_len])
        pos += str_len
        lockspace = resource = None
        if with_trailer and type_ == StateType.LOCKSPACE:
            lockspace = Lockspace.unpack(data, pos)
            pos += Lockspace.SIZE
        elif with_trailer and type_ == StateType.RESOURCE:
            resource, pos = Resource.unpack_with_disks(data, pos)
        record = cls(type_, name, data32, data64, raw, flags, pad, pad2, lockspace, resource)
        return record, pos

    @property
    def pid(self) -> int:
        """``data32`` as a signed pid (-1 for the daemon's own helper/listener slots)."""
        return s32(self.data32)

    @property
    def text(self) -> str:
        """The text, decoded up to its NUL."""
        return text(self.string)

    @property
    def pairs(self) -> dict[str, str]:
        """The text's ``key=value`` pairs."""
        return parse_kv(self.string)


def decode_records(
    data: ByteData, offset: int = 0, *, with_trailers: bool = True
) -> tuple[StateRecord, ...]:
    """Every record from ``offset`` to the end of ``data`` (the whole stream, up to EOF)."""
    records = []
    while offset < len(data):
        record, offset = StateRecord.unpack(data, offset, with_trailer=with_trailers)
        records.append(record)
    return tuple(records)
