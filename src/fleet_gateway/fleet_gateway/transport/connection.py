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

WRITE_HIGH_WATER = 64 * 1024
"""Bytes buffered in a client's transport beyond which frames stay in its (bounded, dropping) send queue."""
SEND_BUFFER = 128 * 1024
"""Kernel socket buffers per client, fixed so loopback autotuning cannot hide seconds of queue from backpressure:
a slow reader fills our bounded send queue (where telemetry is dropped oldest-first, with a count), and a fast
writer is pushed back by TCP as soon as the gateway stops reading. Input that waits for the gateway is at most
the receive buffer (`receive_buffer_bytes`) plus what the client itself keeps in its send buffer."""
WRITE_BATCH = 64 * 1024
MIN_WINDOW = 8 * 1024
MAX_WINDOW = 4 * 1024 * 1024
PIPE_TARGET_S = 0.25
"""Bytes in flight to a client (written, not yet read by it: the transport's buffer, both kernels' socket buffers
and what the client library holds) are bounded by a window. What is read is learnt from WebSocket pings: every
client answers a ping once it has read all that was sent before it. While a ping comes back within PIPE_TARGET_S
the window may grow to twice what the client reads in that time; when it takes longer (data is piling up in the
pipe), it shrinks to what the client reads in PIPE_TARGET_S; never below MIN_WINDOW. Beyond the window,
non-critical frames wait in the bounded send queue, where telemetry past its staleness bound is dropped, instead of
ageing in kernel buffers the gateway cannot purge."""
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
        self.read_by_client = 0
        """Of those, the bytes the client is known to have read (its pong to a later ping came back)."""
        self.window = MIN_WINDOW
        self._ping: tuple[bytes, int, float] | None = None
        """The in-flight ping awaiting its pong: (payload, bytes written up to it, when it was sent)."""
        self._pings = 0
        self._frames_written = 0
        self._read_rate = 0.0
        self._last_pong = 0.0

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
            room = self.window - (self.written - self.read_by_client)
            batch = outbox.pop_batch(WRITE_BATCH, now, max(0, room))
            if not batch:
                break  # only non-critical frames left and the window is full: the next pong reopens it
            data = b''.join([wire(frame) for frame in batch])
            transport.write(data)
            self.written += len(data)
            self._frames_written += len(batch)
        in_flight = self.written - self.read_by_client
        if in_flight >= self.window and len(outbox):  # behind: queue per telemetry topic what it reads in 0.5 s
            frame_size = self.written / max(1, self._frames_written)
            self.session.backlog_keep = max(MIN_BACKLOG_FRAMES, int(self._read_rate * 0.5 / frame_size))
            self.session.backlog_rate = self._read_rate / frame_size
        else:
            self.session.backlog_keep = 0
            self.session.backlog_rate = 0.0
        if self._ping is None and self.written - self.read_by_client >= self.window // 4:
            self._send_ping(transport, now)  # not on every write: a pong costs the client and the gateway a frame

    def _send_ping(self, transport: Any, now: float) -> None:
        self._pings += 1
        payload = PING_PREFIX + str(self._pings).encode()
        frame = bytes((0x89, len(payload))) + payload  # a server frame: unmasked; control payloads are < 126 bytes
        transport.write(frame)
        self.written += len(frame)
        self._ping = (payload, self.written, now)

    def on_pong(self, payload: bytes) -> bool:
        """A pong: when it answers the in-flight ping, the client has read everything written before that ping.
        The window follows the client's read rate (bytes read between pongs, smoothed)."""
        ping = self._ping
        if ping is None or payload != ping[0]:
            return payload.startswith(PING_PREFIX)  # a late answer to an older ping of ours: nothing to learn
        now = time.monotonic()
        self._ping = None
        read = ping[1] - self.read_by_client
        self.read_by_client = ping[1]
        if self._last_pong:
            sample = read / max(now - self._last_pong, 1e-3)
            self._read_rate = sample if not self._read_rate else 0.7 * self._read_rate + 0.3 * sample
            per_target = self._read_rate * PIPE_TARGET_S
            if now - ping[2] <= PIPE_TARGET_S:  # the client keeps up: room to grow with what it reads
                self.window = int(min(MAX_WINDOW, max(self.window, 2 * per_target, MIN_WINDOW)))
            else:  # data piles up in the pipe: no more in flight than it reads in PIPE_TARGET_S
                self.window = int(min(MAX_WINDOW, max(MIN_WINDOW, per_target)))
        self._last_pong = now
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
