"""fleet_observability.session: a command-line tool's ROS session ends its spin on SIGINT/SIGTERM (False, as at a
deadline) with its context still valid, and closes in order afterwards."""

from __future__ import annotations

import os
import signal
import time

from fleet_observability.session import ros_session


def test_sigint_ends_spin_until_and_the_session_closes_afterwards() -> None:
    before = signal.getsignal(signal.SIGINT)
    polls: list[int] = []

    def done() -> bool:
        polls.append(1)
        if len(polls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return False

    with ros_session('session_test') as session:
        assert session.spin_until(time.monotonic() + 30, done) is False
        assert session.program.stop_reason == 'SIGINT'
        context = session.node.context
        assert context.ok(), 'the signal shut the context down under the session'
    assert not context.ok()
    assert signal.getsignal(signal.SIGINT) is before


def test_spin_until_returns_true_once_done() -> None:
    with ros_session('session_test') as session:
        polls: list[int] = []
        assert session.spin_until(time.monotonic() + 30, lambda: polls.append(1) or len(polls) >= 3) is True
        assert len(polls) == 3
