"""`GatewayConnection`: a `websockets` server connection that splits incoming frames itself once the connection is
open (complete masked text frames unmasked and handed to the session synchronously; every other frame to
`websockets` whole)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import State

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets without its C extension
    from websockets.utils import apply_mask

from fleet_gateway.transport.framing import TEXT_FRAME, declared_size, next_client_frame

READ_CHUNK = 64 * 1024
"""Bytes read from one socket per event-loop turn (asyncio's default is 256 KiB), so one busy client cannot hold a
turn for long and the others are read in between."""
EARLY_MESSAGES = 64
"""Messages buffered between the handshake and the session's start; beyond, reading pauses until it starts."""
_DATA_OPCODES = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


class GatewayConnection(ServerConnection):
    """A `websockets` server connection that hands each complete incoming message to `sink` synchronously, in
    order, then calls `after_data` once per chunk read. Until `attach`, messages are kept (at most EARLY_MESSAGES,
    then reading pauses).

    Once the connection is open, frames are split here (`_receive_direct`): a complete, masked, unfragmented text
    frame is unmasked and handed on without `websockets`' per-frame parser (the most common client message, at a
    fraction of its cost); every other complete frame (ping, close, fragments, binary, anything malformed) goes to
    `websockets` whole, so its parser is always between frames and still does all the checking and closing. Before
    a text frame is decoded, `shed` may claim it (a best-effort publish the gateway has no time for)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sink: Any = None
        self.after_data: Any = None
        self.on_pong: Callable[[bytes], bool] | None = None
        """`(payload) -> bool`: True when a pong answers one of the gateway's in-flight pings (consumed here)."""
        self.shed: Any = None
        """`(payload bytes, stale) -> bool`: True when the gateway drops this message unparsed (and counted it)."""
        self.hold: Any = None
        """`() -> bool`: True when this turn has no time left for incoming data (it is then kept for the next)."""
        self._holding = False
        self._stale = False
        self.direct = False
        """Frames are split here (see the class doc); off until the handshake is done, and for good after a close."""
        self._direct_checked = False
        self._carry = b''
        self._early: list[str | bytes] = []
        self._early_paused = False
        self._parts: list[bytes] = []
        self._text = True

    def attach(self, sink: Any, after_data: Any) -> None:
        self.sink = sink
        early, self._early = self._early, []
        for message in early:
            sink(message)
        self.after_data = after_data
        after_data()
        if self._early_paused:
            self._early_paused = False
            self.transport.resume_reading()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if hasattr(transport, 'max_size'):  # asyncio's selector transport reads up to max_size per turn
            transport.max_size = READ_CHUNK

    def data_received(self, data: bytes) -> None:
        if self.direct:
            if self.hold is not None and self.hold():
                # this turn's ingest time is spent: keep the chunk unprocessed, read nothing more, and take it up
                # first thing next turn (TCP pushes back meanwhile)
                self._carry += data
                if not self._holding:
                    self._holding = True
                    self.transport.pause_reading()
                    asyncio.get_running_loop().call_soon(self._take_up)
                return
            self._receive_direct(self._carry + data if self._carry else data)
        else:
            super().data_received(data)
            if not self._direct_checked and self.protocol.state is State.OPEN:
                # the handshake is done; a compliant client sends nothing before it gets the response, so nothing
                # is buffered and websockets' parser waits for the first frame header: frames can be split here
                self._direct_checked = True
                self.direct = not self.protocol.reader.buffer
        if self.after_data is not None:
            self.after_data()

    def _receive_direct(self, data: bytes) -> None:
        self._carry = b''
        limit = self.protocol.max_message_size
        shed = self.shed
        small = 0xFE if limit is None or limit >= 125 else 0x80 + limit + 1  # second bytes of frames taken inline
        offset = 0
        end_of_data = len(data)
        while offset < end_of_data:
            second = data[offset + 1] if offset + 1 < end_of_data else 0
            if data[offset] == TEXT_FRAME and 0x80 <= second < small and not self._parts:
                start = offset + 6  # the common case, inline: masked, under 126 bytes
                end = start + second - 0x80
                if end > end_of_data:
                    self._carry = data[offset:]
                    break
            else:
                if limit is not None and declared_size(data, offset) > limit:
                    self._leave_direct(data[offset:])  # websockets closes with 1009 (message too big)
                    break
                frame = next_client_frame(data, offset)
                if frame is None:
                    self._carry = data[offset:]
                    break
                first, start, end = frame
                if first != TEXT_FRAME or not second & 0x80 or self._parts:
                    super().data_received(data[offset:end])  # one whole frame: websockets parses, checks, answers
                    offset = end
                    if self.protocol.state is not State.OPEN:  # closing: websockets takes whatever follows
                        self._leave_direct(data[offset:])
                        break
                    continue
            payload = apply_mask(data[start:end], data[start - 4 : start])
            offset = end
            if shed is not None and shed(payload, self._stale):
                continue
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                self.direct = False
                self.protocol.fail(CloseCode.INVALID_DATA, 'invalid UTF-8 in a text frame')
                self.send_data()
                break
            self._deliver(text)
        if shed is not None:
            shed.flush()

    def _take_up(self) -> None:
        self._holding = False
        if self.transport.is_closing():
            return
        carry, self._carry = self._carry, b''
        self._stale = True  # it waited a turn: its best-effort publishes are shed whatever the budget (oldest first)
        try:
            self.data_received(carry)
        finally:
            self._stale = False
        if not self._holding:
            self.transport.resume_reading()

    def _leave_direct(self, rest: bytes) -> None:
        self.direct = False
        if rest:
            super().data_received(rest)

    def process_event(self, event: Any) -> None:
        if (
            isinstance(event, Frame)
            and event.opcode is Opcode.PONG
            and self.on_pong is not None
            and self.on_pong(bytes(event.data))
        ):
            return
        if not isinstance(event, Frame) or event.opcode not in _DATA_OPCODES:
            super().process_event(event)  # the handshake request, pings, pongs, close
            return
        if event.opcode is not Opcode.CONT:
            self._text = event.opcode is Opcode.TEXT
        if not event.fin:  # websockets checks the fragment sequence and the total size (max_size)
            self._parts.append(bytes(event.data))
            return
        data = bytes(event.data) if not self._parts else b''.join([*self._parts, event.data])
        self._parts = []
        message: str | bytes = data
        if self._text:
            try:
                message = data.decode()
            except UnicodeDecodeError:
                self.protocol.fail(CloseCode.INVALID_DATA, 'invalid UTF-8 in a text frame')
                self.send_data()
                return
        self._deliver(message)

    def _deliver(self, message: str | bytes) -> None:
        if self.sink is not None:
            self.sink(message)
            return
        self._early.append(message)
        if len(self._early) >= EARLY_MESSAGES and not self._early_paused:
            self._early_paused = True
            self.transport.pause_reading()
