"""The event callback message, ``struct event_cb`` (spec/sanlock-protocol.md 2.5.17).

After REG_EVENT the daemon keeps the client's connection and, when a host sets an event in the
lockspace, writes 80 unsolicited bytes on it::

    sm_header (32) @0: magic SM_MAGIC, version SM_CB_PROTO, cmd SM_CB_GET_EVENT, length 80
    sanlk_host_event (32) @32, from_host_id u64 @64, from_generation u64 @72

``sanlock_get_event`` reads 80 bytes and checks nothing in the header.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from sync_manager.protocol.errors import BadMessageMagic
from sync_manager.protocol.header import (
    HEADER_SIZE,
    SM_CB_GET_EVENT,
    SM_CB_PROTO,
    SM_MAGIC,
    ByteData,
    Header,
)
from sync_manager.protocol.structs import HostEvent, check_fields, need

__all__ = ["EVENT_CB_SIZE", "EventCallback"]

EVENT_CB_SIZE = 80


@dataclass(frozen=True, slots=True)
class EventCallback:
    """One ``event_cb``: an event and the host (id, generation) that set it."""

    event: HostEvent
    from_host_id: int = 0
    from_generation: int = 0

    TAIL: ClassVar[struct.Struct] = struct.Struct("<QQ")
    SIZE: ClassVar[int] = EVENT_CB_SIZE

    def __post_init__(self) -> None:
        check_fields(self, {"from_host_id": 64, "from_generation": 64})

    @classmethod
    def unpack(cls, data: ByteData, offset: int = 0) -> Self:
        """Decode the 80 bytes at ``offset``; BadMessageMagic if the header's magic is wrong."""
        need(data, offset, cls.SIZE, "event_cb")
        header = Header.unpack(data, offset)
        if header.magic != SM_MAGIC:
            raise BadMessageMagic("event_cb header", expected=SM_MAGIC, found=header.magic)
        event = HostEvent.unpack(data, offset + HEADER_SIZE)
        from_host_id, from_generation = cls.TAIL.unpack_from(
            data, offset + HEADER_SIZE + HostEvent.SIZE
        )
        return cls(event, from_host_id, from_generation)

    def pack(self) -> bytes:
        """The 80 bytes the daemon sends."""
        header = Header(SM_CB_GET_EVENT, length=EVENT_CB_SIZE, version=SM_CB_PROTO)
        tail = self.TAIL.pack(self.from_host_id, self.from_generation)
        return header.pack() + self.event.pack() + tail
