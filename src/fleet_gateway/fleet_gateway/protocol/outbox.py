"""A client's bounded send queue: critical frames in their own lane (never dropped), telemetry drop-oldest."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable


class OutFrame:
    """One outgoing protocol message. `data` is JSON text or CBOR bytes; `wire` caches its encoded
    WebSocket frame so that a message fanned out to many clients is framed once."""

    __slots__ = ('critical', 'data', 'expires', 'size', 'wire')

    def __init__(self, data: str | bytes, *, critical: bool = False, expires: float | None = None) -> None:
        self.data = data
        self.critical = critical
        self.size = len(data)
        self.wire: bytes | None = None
        self.expires = expires
        """Monotonic time after which this (telemetry) frame is stale: dropped, never sent. None: never stale."""


class SendQueueOverflow(RuntimeError):
    """Critical frames (never dropped) exceed the queue's critical budget: the client is not reading."""


class _Entry:
    __slots__ = ('alive', 'frame', 'key')

    def __init__(self, frame: OutFrame, key: Hashable | None) -> None:
        self.frame = frame
        self.key = key
        self.alive = True


class SendQueue:
    """Bounded by frame count and bytes. Non-critical frames are dropped oldest-first when a limit is hit
    (counted per key, e.g. per topic); each key may also have its own depth (`queue_length`)."""

    def __init__(self, *, max_frames: int, max_bytes: int, critical_max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.critical_max_bytes = critical_max_bytes
        self._critical: deque[OutFrame] = deque()
        self._critical_bytes = 0
        self._normal: deque[_Entry] = deque()
        self._per_key: dict[Hashable, deque[_Entry]] = {}
        self._normal_count = 0
        self._normal_bytes = 0
        self._dead = 0
        self.drops: dict[Hashable, int] = {}
        self.dropped_total = 0
        self.queued_total = 0
        self.stale_total = 0
        """Of `dropped_total`, the frames dropped because they were older than their topic's staleness bound."""

    def __len__(self) -> int:
        return len(self._critical) + self._normal_count

    @property
    def bytes(self) -> int:
        return self._critical_bytes + self._normal_bytes

    def put(self, frame: OutFrame, key: Hashable | None = None, key_limit: int = 0) -> None:
        """Queue `frame`. Raises SendQueueOverflow only for a critical frame beyond the critical budget."""
        self.queued_total += 1
        if frame.critical:
            if self._critical_bytes + frame.size > self.critical_max_bytes and self._critical:
                raise SendQueueOverflow(
                    f'{len(self._critical)} critical frames ({self._critical_bytes} bytes) are waiting: '
                    'the client is not reading'
                )
            self._critical.append(frame)
            self._critical_bytes += frame.size
            return
        entry = _Entry(frame, key)
        if key is not None:
            lane = self._per_key.get(key)
            if lane is None:
                lane = self._per_key[key] = deque()
            if key_limit > 0 and len(lane) >= key_limit:
                self._kill(lane.popleft())
            lane.append(entry)
        self._normal.append(entry)
        self._normal_count += 1
        self._normal_bytes += frame.size
        while self._normal_count > 1 and (self._normal_count > self.max_frames or self._normal_bytes > self.max_bytes):
            self._drop_oldest()
        if self._dead > 64 and self._dead > self._normal_count:
            self._normal = deque(e for e in self._normal if e.alive)
            self._dead = 0

    def count_drops(self, key: Hashable, count: int, *, stale: bool = False) -> None:
        """Record frames dropped before they were queued (a batch longer than the key's allowance, or stale)."""
        self.dropped_total += count
        self.drops[key] = self.drops.get(key, 0) + count
        if stale:
            self.stale_total += count

    def _kill(self, entry: _Entry) -> None:
        entry.alive = False
        self._normal_count -= 1
        self._normal_bytes -= entry.frame.size
        self._dead += 1
        self.dropped_total += 1
        self.drops[entry.key] = self.drops.get(entry.key, 0) + 1

    def _drop_oldest(self) -> None:
        while self._normal:
            entry = self._normal.popleft()
            if entry.alive:
                if entry.key is not None:
                    self._per_key[entry.key].popleft()
                self._kill(entry)
                self._dead -= 1  # it already left the deque
                return
            self._dead -= 1

    def pop_batch(self, max_bytes: int, now: float | None = None, normal_bytes: int | None = None) -> list[OutFrame]:
        """Up to about `max_bytes` of frames, critical first, oldest first; always at least one if any (unless
        `normal_bytes`, the allowance for non-critical frames, is spent). Non-critical frames that expired by `now`
        are dropped on the way (counted per key and in `stale_total`), never returned."""
        out: list[OutFrame] = []
        budget = max_bytes
        while self._critical and budget > 0:
            frame = self._critical.popleft()
            self._critical_bytes -= frame.size
            budget -= frame.size
            out.append(frame)
        if normal_bytes is not None:
            budget = min(budget, normal_bytes)
        while self._normal and budget > 0:
            entry = self._normal.popleft()
            if not entry.alive:
                self._dead -= 1
                continue
            if entry.key is not None:
                lane = self._per_key[entry.key]
                lane.popleft()
                if not lane:
                    del self._per_key[entry.key]
            self._normal_count -= 1
            self._normal_bytes -= entry.frame.size
            expires = entry.frame.expires
            if expires is not None and now is not None and expires < now:
                self.stale_total += 1
                self.dropped_total += 1
                self.drops[entry.key] = self.drops.get(entry.key, 0) + 1
                continue
            budget -= entry.frame.size
            out.append(entry.frame)
        return out

    def clear(self) -> None:
        self._critical.clear()
        self._normal.clear()
        self._per_key.clear()
        self._critical_bytes = self._normal_bytes = self._normal_count = self._dead = 0
