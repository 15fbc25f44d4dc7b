"""`ClientConnection`: one client's writes (batched pre-framed bytes, the in-flight window learnt from pings) and
its session's timers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from fleet_gateway.protocol.session import ClientSession
from fleet_gateway.transport.framing import wire
from fleet_gateway.transport.window import InFlightWindow

WRITE_HIGH_WATER = 64 * 1024
"""Bytes buffered in a client's transport beyond which frames stay in its (bounded, dropping) send queue."""
SEND_BUFFER = 128 * 1024
"""Kernel socket buffers per client, fixed so loopback autotuning cannot hide seconds of queue from backpressure:
a slow reader fills our bounded send queue (where telemetry is dropped oldest-first, with a count), and a fast
writer is pushed back by TCP as soon as the gateway stops reading. Input that waits for the gateway is at most
the receive buffer (`receive_buffer_bytes`) plus what the client itself keeps in its send buffer."""
WRITE_BATCH = 64 * 1024
PING_PREFIX = b'fg-inflight:'
MIN_BACKLOG_FRAMES = 32
"""Telemetry frames queued per topic for a client that is behind, at least (see `ClientSession.backlog_keep`)."""
RETRY_WRITE_S = 0.005


class ClientConnection:
    """One client: its websockets connection, protocol session and flush scheduling."""

    def __init__(self, ws: ServerConnection, session: ClientSession, loop: asyncio.AbstractEventLoop) -> None:
        self.ws = ws
        self.session = session
        self.loop = loop
        self._retry: asyncio.TimerHandle | None = None
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at: float | None = None
        self.closing = False
        self.apply: Any = None
        """`GatewayServer._apply`, for the events `poll` returns (served-call timeouts)."""
        self.stopped: asyncio.Future[None] = loop.create_future()
        """Set when the session asks to close; the connection handler then finishes it."""
        self.read_paused = False
        self.written = 0
        """Bytes written to the transport so far."""
        self.window = InFlightWindow()
        self._ping: tuple[bytes, int, float] | None = None
        """The in-flight ping awaiting its pong: (payload, bytes written up to it, when it was sent)."""
        self._pings = 0
        self._frames_written = 0

    def flush(self) -> None:
        """Write queued frames while the transport accepts them (retry shortly when it is full) and the in-flight
        window has room for non-critical ones (critical frames always go); stale telemetry is dropped on the way."""
        transport = self.ws.transport
        outbox = self.session.outbox
        if self.closing or self.ws.protocol.state is not State.OPEN or transport.is_closing():
            outbox.clear()
            return
        now = time.monotonic()
        while len(outbox):
            if transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                if self._retry is None:
                    self._retry = self.loop.call_later(RETRY_WRITE_S, self._retry_flush)
                break
            batch = outbox.pop_batch(WRITE_BATCH, now, self.window.room(self.written))
            if not batch:
                break  # only non-critical frames left and the window is full: the next pong reopens it
            data = b''.join([wire(frame) for frame in batch])
            transport.write(data)
            self.written += len(data)
            self._frames_written += len(batch)
        if not self.window.room(self.written) and len(outbox):  # behind: per telemetry topic, what it reads in 0.5 s
            frame_size = self.written / max(1, self._frames_written)
            read_rate = self.window.read_rate
            self.session.backlog_keep = max(MIN_BACKLOG_FRAMES, int(read_rate * 0.5 / frame_size))
            self.session.backlog_rate = read_rate / frame_size
        else:
            self.session.backlog_keep = 0
            self.session.backlog_rate = 0.0
        if self._ping is None and self.window.ping_due(self.written):
            self._send_ping(transport, now)  # not on every write: a pong costs the client and the gateway a frame

    def _send_ping(self, transport: Any, now: float) -> None:
        self._pings += 1
        payload = PING_PREFIX + str(self._pings).encode()
        frame = bytes((0x89, len(payload))) + payload  # a server frame: unmasked; control payloads are < 126 bytes
        transport.write(frame)
        self.written += len(frame)
        self._ping = (payload, self.written, now)

    def on_pong(self, payload: bytes) -> bool:
        """A pong: when it answers the in-flight ping, the client has read everything written before that ping
        (the window learns from it, see `InFlightWindow`)."""
        ping = self._ping
        if ping is None or payload != ping[0]:
            return payload.startswith(PING_PREFIX)  # a late answer to an older ping of ours: nothing to learn
        self._ping = None
        self.window.answered(ping[1], ping[2], time.monotonic())
        self.flush()
        return True

    def _retry_flush(self) -> None:
        self._retry = None
        self.flush()

    def schedule_wake(self) -> None:
        wake = self.session.next_wake()
        if wake is None or (self._wake_at is not None and self._wake_at <= wake):
            return
        if self._wake is not None:
            self._wake.cancel()
        self._wake_at = wake
        self._wake = self.loop.call_at(wake, self._on_wake)

    def _on_wake(self) -> None:
        self._wake = None
        self._wake_at = None
        events = self.session.poll(self.loop.time())
        if events and self.apply is not None:
            self.apply(self, events)
        self.flush()
        if self.session.close_request is not None and not self.stopped.done():
            self.stopped.set_result(None)  # e.g. no auth within the deadline: the connection handler closes it
            return
        self.schedule_wake()

    def stop_timers(self) -> None:
        for handle in (self._retry, self._wake):
            if handle is not None:
                handle.cancel()
        self._retry = self._wake = None
