"""FleetFoxgloveBridge teardown: `close()` gives back everything `__init__` and `start()` took on the node (timers,
service clients of the forwarded services, subscriptions), the port and the worker threads, so that a second bridge
on the same node starts exactly as the first did (the plain-node counterpart of configure -> cleanup -> configure)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from fleet_core import topics
from harness import wait_for
from harness.resources import entities

SUBMIT = topics.shard_submit('site_a', 'zone_1')
TRACE = topics.shard_trace('site_a', 'zone_1')


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(('127.0.0.1', port))
        except OSError:
            return False
    return True


def bridge_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith('foxglove-publish')]


@pytest.fixture
def shard(ros: Any) -> Iterator[Any]:
    """A stand-in shard leader: a SubmitCommand service and a trace publisher, spun in a thread."""
    from fleet_interfaces.msg import TraceEvent
    from fleet_interfaces.srv import SubmitCommand
    from fleet_ros import qos
    from fleet_ros.spin import SpinThread

    leader = ros.node('teardown_leader')
    leader.create_service(SubmitCommand, SUBMIT, lambda _request, response: response)
    leader.create_publisher(TraceEvent, TRACE, qos.EVENTS)
    spin = SpinThread(ros.executor, name='teardown-spin').start()
    try:
        yield ros
    finally:
        spin.stop()


def test_close_gives_back_what_start_took_and_a_second_bridge_starts_alike(shard: Any) -> None:
    from fleet_observability.foxglove_server import FleetFoxgloveBridge, FoxgloveSettings

    node = shard.node('fleet_foxglove_teardown')
    unconfigured = entities(node)
    threads_before = bridge_threads()
    running_counts = []
    for _round in range(2):
        bridge = FleetFoxgloveBridge(node, FoxgloveSettings(port=0, discovery_period_sec=0.1, time_period_sec=0.1))
        try:
            port = bridge.start()
            wait_for(
                lambda b=bridge: SUBMIT in b.services and TRACE in b.channels,
                60.0,
                what='the bridge to expose the stand-in leader',
            )
            running = entities(node)
            assert running['clients'] == unconfigured['clients'] + 1  # the SubmitCommand forwarder
            assert running['timers'] > unconfigured['timers']
            running_counts.append(running)
            assert not port_is_free(port)
        finally:
            bridge.close()
        assert entities(node) == unconfigured, 'close() left entities on the node'
        # The SDK's stop() returns before its listener is gone: the port must come free, soon.
        wait_for(lambda p=port: port_is_free(p), 20.0, what=f'port {port} to be released')
        assert bridge_threads() == threads_before
    assert running_counts[0] == running_counts[1]
