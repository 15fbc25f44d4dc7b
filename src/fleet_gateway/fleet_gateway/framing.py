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


def next_client_frame(data: bytes, offset: int) -> tuple[int, int, int] | None:
    """The frame starting at `offset`: (first byte, payload start, end), or None while `data` does not hold all of
    it. Only the length fields are read; a masked frame's key is the 4 bytes before the payload start. What the
    frame means (opcode, mask bit, size limits) is for the caller to judge."""
    if offset + 2 > len(data):
        return None
    second = data[offset + 1]
    size = second & 0x7F
    start = offset + 2
    if size == 126:
        if start + 2 > len(data):
            return None
        size = struct.unpack_from('!H', data, start)[0]
        start += 2
    elif size == 127:
        if start + 8 > len(data):
            return None
        size = struct.unpack_from('!Q', data, start)[0]
        start += 8
    if second & 0x80:
        start += 4
    end = start + size
    if end > len(data):
        return None
    return data[offset], start, end


def declared_size(data: bytes, offset: int) -> int:
    """The payload size a frame header at `offset` declares (0 while the length field is incomplete)."""
    if offset + 2 > len(data):
        return 0
    size = data[offset + 1] & 0x7F
    if size == 126 and offset + 4 <= len(data):
        return int(struct.unpack_from('!H', data, offset + 2)[0])
    if size == 127 and offset + 10 <= len(data):
        return int(struct.unpack_from('!Q', data, offset + 2)[0])
    return size if size < 126 else 0
