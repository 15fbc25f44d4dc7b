"""Services and actions the gateway serves in ROS for WebSocket clients (advertise_service / advertise_action): one
mechanism for both. `ServedRegistry` knows who serves what (one client per name, none that a ROS node serves),
hands out the tokens that identify forwarded requests, keeps the requests waiting for their client, and gives them
back on release so that they are failed, never left hanging. Owned by the asyncio thread."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fleet_gateway.ros.graph import EndpointConflict

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

    def __init__(self, ros_serves: Callable[[str], bool]) -> None:
        self._served: dict[str, ServedEndpoint[W]] = {}
        self._ros_serves = ros_serves
        self._tokens = itertools.count(1)

    def claim(self, name: str, cls: type, owner: Any) -> bool:
        """Whether `owner` serves `name` with `cls` already (nothing to do). Raises EndpointConflict when another
        client, or a ROS node, serves it."""
        current = self._served.get(name)
        if current is not None:
            if current.owner is owner and current.cls is cls:
                return True
            raise EndpointConflict(f'{name} is already served through the gateway by another client')
        if self._ros_serves(name):
            raise EndpointConflict(f'{name} is already served by a ROS node')
        return False

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
        return endpoint

    def owners(self) -> dict[str, Any]:
        return {name: endpoint.owner for name, endpoint in self._served.items()}

    def __iter__(self) -> Iterator[ServedEndpoint[W]]:
        return iter(list(self._served.values()))
