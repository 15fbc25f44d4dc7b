"""Shedding: best-effort publishes dropped unparsed while a turn is over its ingest budget."""

from __future__ import annotations

import re
from typing import Any

from fleet_gateway.protocol.session import ClientSession
from fleet_gateway.transport.budget import IngestBudget

_PUBLISH_HEAD = re.compile(
    rb'\s*\{\s*"op"\s*:\s*"publish"\s*,(?:\s*"id"\s*:\s*"[^"\\]*"\s*,)?\s*"topic"\s*:\s*"([^"\\]*)"'
)
"""The start of a publish as roslibjs, roslibpy and most clients write it: `op` first, then `id` (optional), then
`topic` (a name without escapes). Only such messages can be shed without parsing; others take the full path."""


class Shedder:
    """Whether one client's incoming text message is dropped unparsed: only while the turn is over its ingest
    budget, and only a publish to a best-effort topic the client advertised (`_PUBLISH_HEAD`, then
    `GatewayServer._sheddable`). The head of the last shed message is kept, so a run of publishes to one topic
    costs a `startswith` each; the session hears the count once per chunk (`flush`)."""

    def __init__(self, session: ClientSession, budget: IngestBudget, sheddable: Any) -> None:
        self.session = session
        self.budget = budget
        self.sheddable = sheddable
        self.head = b'\x00'  # matches no payload
        self.topic = ''
        self.pending = 0

    def __call__(self, payload: bytes, stale: bool = False) -> bool:
        if not stale and not self.budget.over():
            return False
        if payload.startswith(self.head):
            self.pending += 1
            return True
        match = _PUBLISH_HEAD.match(payload)
        if match is None:
            return False
        try:
            topic = match.group(1).decode()
        except UnicodeDecodeError:
            return False
        if topic not in self.session.advertisements or not self.sheddable(topic):
            return False
        self.flush()
        self.head = payload[: match.end()]
        self.topic = topic
        self.pending = 1
        return True

    def flush(self) -> None:
        if self.pending:
            self.session.note_shed(self.topic, self.pending, self.session.clock())
            self.pending = 0
