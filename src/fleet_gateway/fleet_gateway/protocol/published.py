"""One ROS message received for fan-out, converted to JSON once and encoded once per encoding."""

from __future__ import annotations

import json
from typing import Any

import cbor2

from fleet_gateway.protocol.outbox import OutFrame


def dumps(value: Any) -> str:
    """Compact JSON as rosbridge clients expect it (NaN never appears: conversion maps it to null)."""
    return json.dumps(value, separators=(',', ':'), ensure_ascii=False, allow_nan=False)


class PublishedMessage:
    """`frame('none')` is the JSON text frame, `frame('cbor')` the CBOR binary frame; each built at most once."""

    __slots__ = ('_frames', 'critical', 'payload', 'topic')

    def __init__(self, topic: str, payload: dict[str, Any], *, critical: bool) -> None:
        self.topic = topic
        self.payload = payload
        self.critical = critical
        self._frames: dict[str, OutFrame] = {}

    def frame(self, encoding: str) -> OutFrame:
        frame = self._frames.get(encoding)
        if frame is None:
            message = {'op': 'publish', 'topic': self.topic, 'msg': self.payload}
            data: str | bytes = cbor2.dumps(message) if encoding == 'cbor' else dumps(message)
            frame = self._frames[encoding] = OutFrame(data, critical=self.critical)
        return frame
