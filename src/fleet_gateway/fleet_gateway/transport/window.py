"""`InFlightWindow`: how many bytes may be on their way to one client, learnt from its answers to pings."""

from __future__ import annotations

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
RATE_SPAN_S = PIPE_TARGET_S
"""The read rate is sampled over at least this long. Two pongs a few milliseconds apart (a burst written after the
gateway or the client was starved of CPU) would otherwise read as a rate of megabytes per second, and the window
would grow to hold seconds of telemetry for a client that reads a few kilobytes per second."""
RATE_WEIGHT = 0.3
"""The weight of a new sample in the smoothed read rate."""


class InFlightWindow:
    """The in-flight window of one client connection. Pure: the caller passes the clock."""

    def __init__(self) -> None:
        self.window = MIN_WINDOW
        self.read_by_client = 0
        """Bytes the client is known to have read (its answer to a ping sent after them came back)."""
        self.read_rate = 0.0
        """Bytes per second the client reads, smoothed; 0 until the first sample."""
        self._sample: tuple[float, int] | None = None
        """Start of the current rate sample: (when, bytes read by the client by then)."""

    def room(self, written: int) -> int:
        """Bytes that may still be written now, given `written` so far."""
        return max(0, self.window - (written - self.read_by_client))

    def ping_due(self, written: int) -> bool:
        """Whether to ask with a ping what the client has read: once a quarter of the window is in flight."""
        return written - self.read_by_client >= self.window // 4

    def answered(self, written_at_ping: int, ping_sent_at: float, now: float) -> None:
        """The client answered a ping sent at `ping_sent_at` when `written_at_ping` bytes had been written: it has
        read all of them. Updates the read rate and the window."""
        self.read_by_client = written_at_ping
        if self._sample is None:
            self._sample = (now, written_at_ping)
            return
        started, read_then = self._sample
        span = now - started
        if span >= RATE_SPAN_S:
            sample = (written_at_ping - read_then) / span
            self.read_rate = sample if not self.read_rate else (1 - RATE_WEIGHT) * self.read_rate + RATE_WEIGHT * sample
            self._sample = (now, written_at_ping)
        if not self.read_rate:
            return
        per_target = self.read_rate * PIPE_TARGET_S
        if now - ping_sent_at <= PIPE_TARGET_S:  # the client keeps up: room to grow with what it reads
            self.window = int(min(MAX_WINDOW, max(self.window, 2 * per_target, MIN_WINDOW)))
        else:  # data piles up in the pipe: no more in flight than it reads in PIPE_TARGET_S
            self.window = int(min(MAX_WINDOW, max(MIN_WINDOW, per_target)))
