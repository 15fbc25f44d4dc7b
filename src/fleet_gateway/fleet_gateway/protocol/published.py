"""One ROS message received for fan-out, converted to JSON once and encoded once per encoding."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import cbor2

from fleet_gateway.protocol.outbox import OutFrame


def dumps(value: Any) -> str:
    """Compact JSON as rosbridge clients expect it (NaN never appears: conversion maps it to null)."""
    return json.dumps(value, separators=(',', ':'), ensure_ascii=False, allow_nan=False)


class PublishedMessage:
    """`frame('none')` is the JSON text frame, `frame('cbor')` the CBOR binary frame, `frame('cbor-raw')` the CBOR
    frame carrying the serialized message; each built at most once."""

    __slots__ = ('_frames', 'critical', 'expires', 'payload', 'raw', 'received_at', 'topic')

    def __init__(
        self,
        topic: str,
        payload: dict[str, Any],
        *,
        critical: bool,
        raw: Callable[[], bytes] | None = None,
        max_age_s: float | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.critical = critical
        self.raw = raw
        """Returns the serialized (CDR) message, for `cbor-raw` (called only when a client asks for it)."""
        self.received_at = time.monotonic()
        """When it reached the gateway (monotonic clock): its age decides staleness; `cbor-raw` carries it."""
        self.expires = self.received_at + max_age_s if max_age_s is not None and not critical else None
        """When it becomes stale, never sent after that: telemetry only (`math.inf`: no bound), which the send queue
        may also drop when full; None for a critical or reliable topic's message, which is never dropped."""
        self._frames: dict[str, OutFrame] = {}

    def frame(self, encoding: str) -> OutFrame:
        frame = self._frames.get(encoding)
        if frame is None:
            message: dict[str, Any] = {'op': 'publish', 'topic': self.topic, 'msg': self.payload}
            if encoding == 'cbor-raw':  # rosbridge's: the serialized (CDR) message and when it was received
                if self.raw is None:
                    raise ValueError(f'no ROS message kept for {self.topic}: cbor-raw cannot be built')
                wall = time.time() - (time.monotonic() - self.received_at)
                secs, nsecs = divmod(int(wall * 1e9), 1_000_000_000)
                message['msg'] = {'secs': secs, 'nsecs': nsecs, 'bytes': self.raw()}
            data: str | bytes = dumps(message) if encoding == 'none' else cbor2.dumps(message)
            frame = self._frames[encoding] = OutFrame(data, critical=self.critical, expires=self.expires)
        return frame
