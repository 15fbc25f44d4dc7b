"""The port through which a capability (topics, service calls, served services, ...) uses its client session.

Capabilities import this module, never the session: the session implements the port and routes ops to them, so
there is no session <-> capability import cycle and each capability only sees what it needs."""

from __future__ import annotations

from typing import Any, Protocol

from fleet_gateway.acl import Action
from fleet_gateway.protocol.events import Event
from fleet_gateway.protocol.fields import Rid
from fleet_gateway.protocol.outbox import OutFrame, SendQueue
from fleet_gateway.protocol.state import SessionLimits


class SessionPort(Protocol):
    """What a capability may ask of its session."""

    @property
    def client_id(self) -> str: ...

    @property
    def limits(self) -> SessionLimits: ...

    @property
    def outbox(self) -> SendQueue: ...

    @property
    def finished(self) -> bool:
        """`finish()` ran: the connection is gone."""
        ...

    @property
    def closing(self) -> bool:
        """Finished, or asked to close: nothing new is taken on for this client."""
        ...

    def now(self) -> float: ...

    def allow(self, action: Action, name: str) -> None:
        """Raises ProtocolError unless the client's role may do `action` on `name`."""
        ...

    def count(self, counter: str, n: int = 1) -> None:
        """Add to one of the session's counters (`stats()`)."""
        ...

    def new_id(self) -> int:
        """A session-wide sequence number (calls, goals, forwarded requests and outgoing fragment ids share it)."""
        ...

    def send(self, message: dict[str, Any], *, critical: bool = True) -> None:
        """Queue one JSON message."""
        ...

    def put(self, frame: OutFrame, key: str | None = None, key_limit: int = 0) -> None:
        """Queue one frame (a critical one beyond the queue's budget closes the connection)."""
        ...

    def send_encoded(self, message: dict[str, Any], *, fragment_size: int, encoding: str) -> None:
        """Queue `message` in the critical lane, encoded as `encoding` and split by `fragment_size` (JSON only)."""
        ...

    def fragment(self, text: str, size: int, *, critical: bool) -> list[OutFrame]:
        """`text` as `fragment` ops of at most `size` characters of data each."""
        ...

    def status(self, level: str, text: str, rid: Rid) -> None: ...

    def error(self, text: str, rid: Rid) -> None:
        """A status error (counted)."""
        ...

    def request_close(self, code: int, reason: str) -> None: ...

    def dispatch(self, message: dict[str, Any], events: list[Event]) -> None:
        """Handle one whole protocol message (a reassembled fragment)."""
        ...
