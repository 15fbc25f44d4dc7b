"""`fleetctl record` and live `fleetctl trace` as subprocesses against in-process publishers."""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet_core.trace import Hop
from harness.processes import wait_exit
from harness.wait import wait_for

pytestmark = pytest.mark.system

T0 = 1_700_000_000.0
SITE, SHARD = 'site_a', 'zone_1'


TRACE_WINDOW = 50
"""Trace messages published after the recorder matched the trace publisher, before the recorder is stopped."""


class FakeShard:
    """The fixture's trace publisher: cycles through one command's hops and counts what it sent."""

    def __init__(self, trace_pub: Any, events: list[Any]) -> None:
        self.trace_pub = trace_pub
        self.events = events
        self.sent = 0

    def publish_trace(self) -> None:
        self.trace_pub.publish(self.events[self.sent % len(self.events)])
        self.sent += 1

    def recorder_matched(self) -> bool:
        matched: int = self.trace_pub.get_subscription_count()
        return matched >= 1


@pytest.fixture
def fleet_publishers(ros: Any) -> Iterator[FakeShard]:
    from nav_msgs.msg import Odometry

    from fleet_core import topics
    from fleet_core.trace import TraceRecord
    from fleet_interfaces.msg import ShardStatus, TraceEvent
    from fleet_ros import qos
    from fleet_ros.spin import SpinThread
    from fleet_ros.trace_msgs import trace_to_msg

    node = ros.node('fake_shard')
    trace_pub = node.create_publisher(TraceEvent, topics.shard_trace(SITE, SHARD), qos.EVENTS)
    odom_pub = node.create_publisher(Odometry, topics.agent_odom(SITE, 'a1_r001'), qos.TELEMETRY)
    status_pub = node.create_publisher(ShardStatus, topics.shard_status(SITE, SHARD), qos.LATCHED)
    status_pub.publish(ShardStatus(site_id=SITE, shard_id=SHARD, agents_total=50, agents_online=49))
    plan = [(Hop.SUBMIT, 0.0, 0, ''), (Hop.ROUTE, 0.4, 0, ''), (Hop.DELIVER, 1.0, 1, 'SENT'),
            (Hop.RETRY, 500.0, 2, ''), (Hop.DELIVER, 501.0, 2, 'SENT'), (Hop.ACK, 512.0, 2, 'SUCCEEDED'),
            (Hop.OUTCOME, 512.5, 0, 'SUCCEEDED')]  # fmt: skip
    events = [
        trace_to_msg(TraceRecord('cmd-live', 'tr-live', 'a1_r001', SHARD, 'orch', hop, T0 + ms / 1000, att, status))
        for hop, ms, att, status in plan
    ]
    shard = FakeShard(trace_pub, events)

    def tick() -> None:
        shard.publish_trace()
        odom_pub.publish(Odometry())

    node.create_timer(0.02, tick)
    spin = SpinThread(ros.executor, name='fake-shard-spin').start()
    try:
        yield shard
    finally:
        spin.stop()


def test_record_and_live_trace(fleet_publishers: FakeShard, processes: Any, tmp_path: Path) -> None:
    from rclpy.duration import Duration

    from fleet_observability.recorder import read_recording, recording_topics

    shard = fleet_publishers
    out = tmp_path / 'live.mcap'
    recorder = processes.start(
        [sys.executable, '-m', 'fleet_cli.main', 'record', '-o', str(out), '--discovery-period', '0.2'],
        name='record',
    )
    # Nothing else subscribes to the trace topic yet: a matched subscription is the recorder's.
    wait_for(shard.recorder_matched, 60, what='the recorder subscribed to the trace topic')
    matched_at = shard.sent
    tracer = processes.start(
        [sys.executable, '-m', 'fleet_cli.main', 'trace', 'cmd-live', '--wait', '15'],
        name='trace',
    )
    assert wait_exit(tracer, 40) == 0, tracer.output()
    wait_for(
        lambda: shard.sent >= matched_at + TRACE_WINDOW, 60, what=f'{TRACE_WINDOW} trace messages sent to the recorder'
    )
    shard.trace_pub.wait_for_all_acked(Duration(seconds=10))  # the recorder's reader holds them (reliable QoS)
    recorder.signal(signal.SIGINT)  # Ctrl-C: the recorder finishes the file and exits 0
    assert wait_exit(recorder, 40) == 0, recorder.output()

    text = tracer.output()
    assert 'command cmd-live  trace tr-live  agent a1_r001  shard zone_1' in text
    assert 'total 512.5 ms over 7 hops, 2 attempt(s): SUCCEEDED' in text

    assert 'wrote' in recorder.output()
    names = recording_topics(out)
    assert names['/fleet/site_a/zone_1/trace'] == 'fleet_interfaces/msg/TraceEvent'
    assert names['/site_a/a1_r001/odom'] == 'nav_msgs/msg/Odometry'
    assert names['/fleet/site_a/zone_1/status'] == 'fleet_interfaces/msg/ShardStatus'
    messages = list(read_recording(out))
    status = [m.decode() for m in messages if m.topic.endswith('/status')]
    assert status and status[0].agents_online == 49
    # The trace stream as published: at least the window sent after the recorder matched, in order, without gaps.
    traces = [m.decode() for m in messages if m.topic.endswith('/trace')]
    assert TRACE_WINDOW <= len(traces) <= shard.sent
    first = shard.events.index(traces[0])
    assert traces == [shard.events[(first + k) % len(shard.events)] for k in range(len(traces))]


def test_record_stops_by_itself_after_duration(processes: Any, tmp_path: Path) -> None:
    from fleet_observability.recorder import read_recording

    out = tmp_path / 'timed.mcap'
    recorder = processes.start(
        [sys.executable, '-m', 'fleet_cli.main', 'record', '-o', str(out), '--duration', '1'], name='record'
    )
    assert wait_exit(recorder, 60) == 0, recorder.output()
    wrote = re.search(r'wrote \d+ messages on \d+ topics in (\d+\.\d)s', recorder.output())
    assert wrote is not None and float(wrote.group(1)) >= 1.0, recorder.output()
    list(read_recording(out))  # a finished file (summary and footer written)
