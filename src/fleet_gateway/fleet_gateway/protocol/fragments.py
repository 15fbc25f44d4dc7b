"""The fragments capability: reassembly of incoming `fragment` ops with bounds on size, count and age (fragments that
never complete), each whole message handled as if it had come in one frame."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fleet_gateway.protocol import fields
from fleet_gateway.protocol.events import Event
from fleet_gateway.protocol.fields import ProtocolError, Rid
from fleet_gateway.protocol.port import SessionPort


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


class Fragments:
    """One client's incoming fragmented messages."""

    def __init__(self, port: SessionPort) -> None:
        self._port = port
        limits = port.limits
        self._buffer = FragmentBuffer(
            max_bytes=limits.max_message_bytes,
            max_messages=limits.max_fragmented_messages,
            timeout_s=limits.fragment_timeout_s,
        )

    def __len__(self) -> int:
        """Messages still incomplete."""
        return len(self._buffer)

    def handle_fragment(self, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
        if rid is None:
            raise ProtocolError('a fragment needs the "id" of the message it belongs to')
        data = fields.text(message, 'data')
        num = message.get('num')
        total = message.get('total')
        if type(num) is not int or type(total) is not int:
            raise ProtocolError('fields "num" and "total" must be integers')
        whole = self._buffer.add(rid, data, num, total, self._port.now())
        if whole is None:
            return
        try:
            inner = json.loads(whole)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f'reassembled message is not valid JSON: {str(exc)[:120]}') from None
        if not isinstance(inner, dict) or inner.get('op') == 'fragment':
            raise ProtocolError('a reassembled message must be a JSON object and not another fragment')
        self._port.dispatch(inner, events)

    def next_wake(self) -> float | None:
        return self._buffer.next_deadline()

    def poll(self, now: float) -> None:
        for message_id in self._buffer.expire(now):
            limit = self._port.limits.fragment_timeout_s
            self._port.error(f'fragmented message never completed within {limit:g} s', message_id)

    def finish(self) -> list[Event]:
        return []
