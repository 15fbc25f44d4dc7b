"""Reassembly of incoming `fragment` ops with bounds on size, count and age (fragments that never complete)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleet_gateway.protocol.fields import ProtocolError


@dataclass
class _Partial:
    total: int
    started: float
    parts: dict[int, str] = field(default_factory=dict)
    size: int = 0


class FragmentBuffer:
    """Collects fragments per message id; `add` returns the whole text once every part arrived."""

    def __init__(self, *, max_bytes: int, max_messages: int, timeout_s: float) -> None:
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self.timeout_s = timeout_s
        self._partials: dict[str | int, _Partial] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._partials)

    def add(self, message_id: str | int, data: str, num: int, total: int, now: float) -> str | None:
        if total < 1 or not 0 <= num < total:
            raise ProtocolError(f'fragment {num} of {total} is out of range')
        partial = self._partials.get(message_id)
        if partial is None:
            if len(self._partials) >= self.max_messages:
                raise ProtocolError(f'too many incomplete fragmented messages (at most {self.max_messages})')
            partial = self._partials[message_id] = _Partial(total=total, started=now)
        elif partial.total != total:
            self.discard(message_id)
            raise ProtocolError(f'fragment total changed from {partial.total} to {total}; message discarded')
        if num in partial.parts:
            return None
        if self._bytes + len(data) > self.max_bytes:
            self.discard(message_id)
            raise ProtocolError(f'fragmented message exceeds the {self.max_bytes}-byte limit; message discarded')
        partial.parts[num] = data
        partial.size += len(data)
        self._bytes += len(data)
        if len(partial.parts) < total:
            return None
        self.discard(message_id)
        return ''.join(partial.parts[i] for i in range(total))

    def discard(self, message_id: str | int) -> None:
        partial = self._partials.pop(message_id, None)
        if partial is not None:
            self._bytes -= partial.size

    def expire(self, now: float) -> list[str | int]:
        """Drop and return the ids of messages older than the timeout."""
        stale = [mid for mid, p in self._partials.items() if now - p.started > self.timeout_s]
        for mid in stale:
            self.discard(mid)
        return stale

    def next_deadline(self) -> float | None:
        if not self._partials:
            return None
        return min(p.started for p in self._partials.values()) + self.timeout_s
