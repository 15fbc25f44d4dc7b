"""Services and actions the gateway serves in ROS for WebSocket clients (advertise_service / advertise_action): one
mechanism for both. `ServedRegistry` knows who serves what (one client per name, none that a ROS node serves),
hands out the tokens that identify forwarded requests, keeps the requests waiting for their client, and gives them
back on release so that they are failed, never left hanging. In a cluster, a name is also claimed in the
workers' shared `ServedNames`, so that it is served by one client of the whole cluster. Owned by the asyncio
thread."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fleet_gateway.ros.graph import EndpointConflict
from fleet_gateway.transport.shared import NameTaken, ServedNames

W = TypeVar('W')


@dataclass(eq=False)
class ServedEndpoint(Generic[W]):
    """One service or action served for `owner` (a client connection)."""

    name: str
    cls: type
    owner: Any
    server: Any = None
    """The rclpy Service or ActionServer."""
    waiting: dict[int, W] = field(default_factory=dict)
    """Requests forwarded to the owner and not answered yet, by token."""
    closed: bool = False
    """Released: requests that still arrive are failed at once."""


class ServedRegistry(Generic[W]):
    """The served endpoints of one kind (services or actions) of a gateway node."""

    def __init__(self, kind: str, ros_serves: Callable[[str], bool]) -> None:
        self.kind = kind
        """'service' or 'action' (the kind of name claimed in `names`)."""
        self._served: dict[str, ServedEndpoint[W]] = {}
        self._ros_serves = ros_serves
        self._tokens = itertools.count(1)
        self.names: ServedNames | None = None
        """The names served through the other workers of a cluster too (None: a gateway alone)."""

    def claim(self, name: str, cls: type, owner: Any) -> bool:
        """Whether `owner` serves `name` with `cls` already (nothing to do). Raises EndpointConflict when another
        client (of this gateway or of another worker of its cluster), or a ROS node, serves it. Otherwise the name
        is `owner`'s from now: `add` its endpoint, or `abandon` it."""
        current = self._served.get(name)
        if current is not None:
            if current.owner is owner and current.cls is cls:
                return True
            raise EndpointConflict(f'{name} is already served through the gateway by another client')
        newly = False
        if self.names is not None:
            try:
                newly = self.names.claim(self.kind, name, owner)
            except NameTaken as exc:
                raise EndpointConflict(str(exc)) from None
        if self._ros_serves(name):
            if newly:
                self.abandon(name, owner)
            raise EndpointConflict(f'{name} is already served by a ROS node')
        return False

    def abandon(self, name: str, owner: Any) -> None:
        """Give up a name `claim`ed for `owner` whose endpoint could not be made."""
        if self.names is not None and name not in self._served:
            self.names.release(self.kind, name, owner)

    def add(self, endpoint: ServedEndpoint[W]) -> None:
        self._served[endpoint.name] = endpoint

    def get(self, name: str) -> ServedEndpoint[W] | None:
        return self._served.get(name)

    def new_token(self) -> int:
        """A fresh token for one forwarded request (thread-safe: itertools.count)."""
        return next(self._tokens)

    def take(self, name: str, token: int) -> tuple[ServedEndpoint[W], W] | None:
        """The endpoint and waiting request `token` of `name`, no longer waiting; None when unknown (answered,
        failed, or released meanwhile)."""
        endpoint = self._served.get(name)
        if endpoint is None or token not in endpoint.waiting:
            return None
        return endpoint, endpoint.waiting.pop(token)

    def release(self, name: str, owner: Any) -> ServedEndpoint[W] | None:
        """Stop serving `name` if `owner` serves it: the endpoint, closed, with the requests still waiting (the
        caller fails each of them and destroys the server)."""
        endpoint = self._served.get(name)
        if endpoint is None or endpoint.owner is not owner:
            return None
        del self._served[name]
        endpoint.closed = True
        if self.names is not None:
            self.names.release(self.kind, name, owner)
        return endpoint

    def owners(self) -> dict[str, Any]:
        return {name: endpoint.owner for name, endpoint in self._served.items()}

    def __iter__(self) -> Iterator[ServedEndpoint[W]]:
        return iter(list(self._served.values()))
