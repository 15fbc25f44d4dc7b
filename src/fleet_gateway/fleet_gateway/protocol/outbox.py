"""A client's bounded send queue: what may be dropped (telemetry) and what must arrive in order or not at all.

Three kinds of frame, told apart by the frame itself and how it is queued:
- critical (`OutFrame.critical`: critical topics, replies, status): a lane of their own, sent first, never dropped;
- lossless (no `expires`: frames of reliable topics, fragments): queued in order with the telemetry, never dropped;
- droppable (an `expires`, `math.inf` for no staleness bound: frames of best-effort/telemetry topics; or queued with a
  `key_limit`, the client's own rosbridge `queue_length`): dropped oldest first when the queue is full, or when stale.
Lossless and droppable frames share `max_bytes` (droppable ones are dropped to make room, and alone are also bounded
by `max_frames`); critical frames have `critical_max_bytes`. A critical or lossless frame beyond its budget raises
`SendQueueOverflow` (the client is not reading what it must get: the session closes it) instead of being dropped.
"""

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
        """Telemetry: the monotonic time after which this frame is stale (dropped, never sent), `math.inf` for no
        bound; a frame with an `expires` may be dropped when the queue is full. None: a frame that must arrive
        (a reliable topic's), never dropped."""


class SendQueueOverflow(RuntimeError):
    """Frames that are never dropped (critical, or of a reliable topic) exceed their budget: the client is not
    reading."""


class _Entry:
    __slots__ = ('alive', 'droppable', 'frame', 'key')

    def __init__(self, frame: OutFrame, key: Hashable | None, droppable: bool) -> None:
        self.frame = frame
        self.key = key
        self.droppable = droppable
        self.alive = True
        """False once sent or dropped (the deques that still hold it skip it)."""


class SendQueue:
    """Bounded by frame count and bytes. Droppable frames are dropped oldest-first when `max_frames` (which counts
    them only) or `max_bytes` (which counts lossless frames too) is hit, counted per key (e.g. per topic); each key
    may also have its own depth (`key_limit`, rosbridge's `queue_length`), which makes what is queued under it
    droppable too: the client chose to keep only the newest. A lossless frame that does not fit in `max_bytes` once
    every droppable one is gone, or a critical one beyond `critical_max_bytes`, raises SendQueueOverflow."""

    def __init__(self, *, max_frames: int, max_bytes: int, critical_max_bytes: int) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.critical_max_bytes = critical_max_bytes
        self._critical: deque[OutFrame] = deque()
        self._critical_bytes = 0
        self._normal: deque[_Entry] = deque()
        """Lossless and droppable entries in the order they were queued (dropped ones skipped)."""
        self._droppable: deque[_Entry] = deque()
        """The droppable entries, oldest first (dropped or sent ones skipped): what drop-oldest takes."""
        self._per_key: dict[Hashable, deque[_Entry]] = {}
        """Live droppable entries by key, oldest first, for `key_limit`."""
        self._normal_count = 0
        self._normal_bytes = 0
        """Droppable frames queued, and their bytes (what `max_frames`/`max_bytes` bound)."""
        self._lossless_count = 0
        self._lossless_bytes = 0
        self._dead = 0
        """Dropped entries still in `_normal`."""
        self.drops: dict[Hashable, int] = {}
        self.dropped_total = 0
        self.queued_total = 0
        self.stale_total = 0
        """Of `dropped_total`, the frames dropped because they were older than their topic's staleness bound."""

    def __len__(self) -> int:
        return len(self._critical) + self._normal_count + self._lossless_count

    @property
    def bytes(self) -> int:
        return self._critical_bytes + self._normal_bytes + self._lossless_bytes

    def put(self, frame: OutFrame, key: Hashable | None = None, key_limit: int = 0) -> None:
        """Queue `frame`. Raises SendQueueOverflow for a frame that is never dropped beyond their byte budget."""
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
        droppable = frame.expires is not None or key_limit > 0
        if not droppable:
            while self._normal_count and self._normal_bytes + self._lossless_bytes + frame.size > self.max_bytes:
                self._drop_oldest()  # reliable before telemetry
            if self._lossless_count and self._lossless_bytes + frame.size > self.max_bytes:
                raise SendQueueOverflow(
                    f'{self._lossless_count} frames of reliable topics ({self._lossless_bytes} bytes), which are '
                    'never dropped, are waiting: the client is not reading'
                )
            self._normal.append(_Entry(frame, key, False))
            self._lossless_count += 1
            self._lossless_bytes += frame.size
            return
        entry = _Entry(frame, key, True)
        if key is not None:
            lane = self._per_key.get(key)
            if lane is None:
                lane = self._per_key[key] = deque()
            if key_limit > 0 and len(lane) >= key_limit:
                self._kill(lane.popleft())
            lane.append(entry)
        self._normal.append(entry)
        self._droppable.append(entry)
        self._normal_count += 1
        self._normal_bytes += frame.size
        while self._normal_count > 1 and (
            self._normal_count > self.max_frames or self._normal_bytes + self._lossless_bytes > self.max_bytes
        ):
            self._drop_oldest()
        if self._dead > 64 and self._dead > self._normal_count + self._lossless_count:
            self._normal = deque(e for e in self._normal if e.alive)
            self._droppable = deque(e for e in self._droppable if e.alive)
            self._dead = 0

    def count_drops(self, key: Hashable, count: int, *, stale: bool = False) -> None:
        """Record frames dropped before they were queued (a batch longer than the key's allowance, or stale)."""
        self.dropped_total += count
        self.drops[key] = self.drops.get(key, 0) + count
        if stale:
            self.stale_total += count

    def _kill(self, entry: _Entry) -> None:
        """Drop a live droppable entry that is still in `_normal` (counted there as dead until it is skipped)."""
        entry.alive = False
        self._normal_count -= 1
        self._normal_bytes -= entry.frame.size
        self._dead += 1
        self.dropped_total += 1
        self.drops[entry.key] = self.drops.get(entry.key, 0) + 1

    def _drop_oldest(self) -> None:
        droppable = self._droppable
        while droppable:
            entry = droppable.popleft()
            if entry.alive:
                if entry.key is not None:
                    self._per_key[entry.key].popleft()
                self._kill(entry)
                return

    def pop_batch(self, max_bytes: int, now: float | None = None, normal_bytes: int | None = None) -> list[OutFrame]:
        """Up to about `max_bytes` of frames, critical first, then the others in the order they were queued; always
        at least one if any (unless `normal_bytes`, the allowance for non-critical frames, is spent). Droppable frames
        that expired by `now` are dropped on the way (counted per key and in `stale_total`), never returned."""
        out: list[OutFrame] = []
        budget = max_bytes
        while self._critical and budget > 0:
            frame = self._critical.popleft()
            self._critical_bytes -= frame.size
            budget -= frame.size
            out.append(frame)
        if normal_bytes is not None:
            budget = min(budget, normal_bytes)
        normal = self._normal
        while normal and budget > 0:
            entry = normal.popleft()
            if not entry.alive:
                self._dead -= 1
                continue
            entry.alive = False
            frame = entry.frame
            if not entry.droppable:
                self._lossless_count -= 1
                self._lossless_bytes -= frame.size
                budget -= frame.size
                out.append(frame)
                continue
            if entry.key is not None:
                lane = self._per_key[entry.key]
                lane.popleft()
                if not lane:
                    del self._per_key[entry.key]
            droppable = self._droppable
            while droppable and not droppable[0].alive:  # this entry and any dropped before it: sent or gone
                droppable.popleft()
            self._normal_count -= 1
            self._normal_bytes -= frame.size
            expires = frame.expires
            if expires is not None and now is not None and expires < now:
                self.stale_total += 1
                self.dropped_total += 1
                self.drops[entry.key] = self.drops.get(entry.key, 0) + 1
                continue
            budget -= frame.size
            out.append(frame)
        return out

    def clear(self) -> None:
        self._critical.clear()
        self._normal.clear()
        self._droppable.clear()
        self._per_key.clear()
        self._critical_bytes = self._normal_bytes = self._normal_count = self._dead = 0
        self._lossless_count = self._lossless_bytes = 0
