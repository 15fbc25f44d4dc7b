"""A lifecycle transition whose reply is lost is confirmed by the node's state, never asked for twice."""

from __future__ import annotations

from lifecycle_msgs.msg import State
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.task import Future

from fleet_sim.lifecycle import PendingTransition


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class StateQueries:
    def __init__(self) -> None:
        self.sent: list[Future] = []

    def __call__(self) -> Future:
        self.sent.append(Future())
        return self.sent[-1]

    def answer(self, state_id: int) -> None:
        self.sent[-1].set_result(GetState.Response(current_state=State(id=state_id)))


def pending(change: Future, queries: StateQueries, clock: Clock) -> PendingTransition:
    return PendingTransition(change, queries, State.PRIMARY_STATE_INACTIVE, clock=clock, overdue_sec=3.0)


def test_a_reply_decides_and_no_state_is_asked():
    clock, queries, change = Clock(), StateQueries(), Future()
    transition = pending(change, queries, clock)
    assert not transition.done()
    change.set_result(ChangeState.Response(success=True))
    assert transition.done() and transition.succeeded and not transition.confirmed_by_state
    assert queries.sent == []


def test_a_refused_transition_is_reported_as_refused():
    clock, queries, change = Clock(), StateQueries(), Future()
    transition = pending(change, queries, clock)
    change.set_result(ChangeState.Response(success=False))
    assert transition.done() and transition.succeeded is False


def test_a_lost_reply_is_confirmed_by_the_target_state():
    clock, queries, change = Clock(), StateQueries(), Future()
    transition = pending(change, queries, clock)
    clock.now = 2.9
    assert not transition.done() and queries.sent == []  # not overdue yet
    clock.now = 3.0
    assert not transition.done() and len(queries.sent) == 1
    assert not transition.done() and len(queries.sent) == 1  # one query in flight at a time
    queries.answer(State.PRIMARY_STATE_UNCONFIGURED)  # still configuring
    assert not transition.done()
    clock.now = 5.9
    assert not transition.done() and len(queries.sent) == 1  # asked again only once overdue again
    clock.now = 6.0
    assert not transition.done() and len(queries.sent) == 2
    queries.answer(State.PRIMARY_STATE_INACTIVE)
    assert transition.done() and transition.succeeded and transition.confirmed_by_state
