"""Server-to-client WebSocket frames (RFC 6455 §5.2, unmasked), built once per message and shared by all clients."""

from __future__ import annotations

import struct

from fleet_gateway.protocol.outbox import OutFrame

_TEXT = 0x81  # FIN + text opcode
_BINARY = 0x82  # FIN + binary opcode


def encode_frame(data: str | bytes) -> bytes:
    if isinstance(data, str):
        payload = data.encode('utf-8')
        first = _TEXT
    else:
        payload = data
        first = _BINARY
    size = len(payload)
    if size < 126:
        header = bytes((first, size))
    elif size < 65536:
        header = struct.pack('!BBH', first, 126, size)
    else:
        header = struct.pack('!BBQ', first, 127, size)
    return header + payload


def wire(frame: OutFrame) -> bytes:
    """The frame's encoded bytes, cached on the frame so a fan-out encodes once."""
    encoded = frame.wire
    if encoded is None:
        encoded = frame.wire = encode_frame(frame.data)
    return encoded


# --- client-to-server frames -----------------------------------------------------------------------------------

TEXT_FRAME = 0x81
"""First byte of a complete, unfragmented text frame without extension bits: the common client message."""


def _length_field(data: bytes, offset: int) -> tuple[int, int] | None:
    """(payload size, header bytes before the mask key) of the frame header at `offset`, or None while its length
    field is incomplete."""
    if offset + 2 > len(data):
        return None
    size = data[offset + 1] & 0x7F
    if size == 126:
        return (struct.unpack_from('!H', data, offset + 2)[0], 4) if offset + 4 <= len(data) else None
    if size == 127:
        return (struct.unpack_from('!Q', data, offset + 2)[0], 10) if offset + 10 <= len(data) else None
    return size, 2


def next_client_frame(data: bytes, offset: int) -> tuple[int, int, int] | None:
    """The frame starting at `offset`: (first byte, payload start, end), or None while `data` does not hold all of
    it. Only the length fields are read; a masked frame's key is the 4 bytes before the payload start. What the
    frame means (opcode, mask bit, size limits) is for the caller to judge."""
    length = _length_field(data, offset)
    if length is None:
        return None
    size, header = length
    start = offset + header + (4 if data[offset + 1] & 0x80 else 0)
    end = start + size
    if end > len(data):
        return None
    return data[offset], start, end


def declared_size(data: bytes, offset: int) -> int:
    """The payload size a frame header at `offset` declares (0 while the length field is incomplete)."""
    length = _length_field(data, offset)
    return 0 if length is None else int(length[0])
