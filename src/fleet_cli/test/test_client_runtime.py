"""FleetClient runs on the program runtime: SIGINT mid-call is a stop request that ends the call with `Interrupted`
(fleetctl: exit 130, no traceback) while the context is still valid, and closing restores the previous handlers."""

from __future__ import annotations

import os
import signal

import pytest

from fleet_cli.client import FleetClient, Interrupted


def test_sigint_mid_call_interrupts_the_wait_with_a_valid_context() -> None:
    previous = signal.getsignal(signal.SIGINT)
    client = FleetClient('fleetctl_test_interrupt')
    sent: list[bool] = []
    context_ok_at_interrupt: list[bool] = []

    def never_ready() -> bool:
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)  # the runtime's handler runs on this (main) thread
        return False

    try:
        with pytest.raises(Interrupted, match='SIGINT'):
            client.spin_until(never_ready, 10.0, 'a condition that never holds')
        context_ok_at_interrupt.append(client.context.ok())
    finally:
        client.close()
    assert sent
    assert context_ok_at_interrupt == [True]  # rclpy's own handler would have shut the context down
    assert not client.context.ok()  # close() ran the ordered shutdown
    assert signal.getsignal(signal.SIGINT) is previous
