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
