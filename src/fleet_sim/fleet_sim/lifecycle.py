"""Driving a lifecycle node through its standard services (configure, activate), as a lifecycle manager does.

A service reply can be lost: on a busy host the server may not have matched the client's reply reader yet when it
answers, and the middleware drops the reply after a timeout ("failed to send response"). The transition itself
happened, so asking again would be refused. A transition whose reply is overdue is therefore confirmed by asking
the node for its state (`get_state`, which is safe to repeat) until it reports the state the transition leads to."""

from __future__ import annotations

import time
from collections.abc import Callable

from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.client import Client
from rclpy.node import Node
from rclpy.task import Future

REPLY_OVERDUE_SEC = 3.0
"""After this long without a reply to change_state, the node's state is asked for instead (and again this often)."""


class PendingTransition:
    """One transition in flight; `done()` is polled by the caller, which spins the node."""

    def __init__(
        self,
        change: Future,
        query: Callable[[], Future],
        target_state: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        overdue_sec: float = REPLY_OVERDUE_SEC,
    ) -> None:
        self._change = change
        self._query = query
        self._target = target_state
        self._clock = clock
        self._overdue_sec = overdue_sec
        self._next_query = clock() + overdue_sec
        self._state_query: Future | None = None
        self.succeeded: bool | None = None
        """None while pending; then whether the node reached the transition's target state."""
        self.confirmed_by_state = False
        """True when the reply was lost and get_state confirmed the transition."""

    def done(self) -> bool:
        if self.succeeded is not None:
            return True
        if self._change.done():
            result = self._change.result()
            self.succeeded = bool(result is not None and result.success)
            return True
        if self._state_query is not None and self._state_query.done():
            state = self._state_query.result()
            self._state_query = None
            if state is not None and state.current_state.id == self._target:
                self.succeeded = True
                self.confirmed_by_state = True
                return True
        if self._state_query is None and self._clock() >= self._next_query:
            self._state_query = self._query()
            self._next_query = self._clock() + self._overdue_sec
        return False


class LifecycleClient:
    """Asynchronous transitions of the node `fqn` (e.g. /site_a/zone_1/standby); the caller spins."""

    def __init__(self, node: Node, fqn: str, *, overdue_sec: float = REPLY_OVERDUE_SEC) -> None:
        self.fqn = fqn
        self.overdue_sec = overdue_sec
        self.change_state: Client = node.create_client(ChangeState, f'{fqn}/change_state')
        self.get_state: Client = node.create_client(GetState, f'{fqn}/get_state')

    def ready(self) -> bool:
        return self.change_state.service_is_ready() and self.get_state.service_is_ready()

    def request(self, transition: int, target_state: int) -> PendingTransition:
        change = self.change_state.call_async(ChangeState.Request(transition=Transition(id=transition)))
        return PendingTransition(
            change, lambda: self.get_state.call_async(GetState.Request()), target_state, overdue_sec=self.overdue_sec
        )

    def configure(self) -> PendingTransition:
        return self.request(Transition.TRANSITION_CONFIGURE, State.PRIMARY_STATE_INACTIVE)

    def activate(self) -> PendingTransition:
        return self.request(Transition.TRANSITION_ACTIVATE, State.PRIMARY_STATE_ACTIVE)
