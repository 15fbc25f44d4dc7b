"""Site link: relays local shard topics to the central gateway and back, and survives a gateway restart
(reconnect with jittered backoff, re-advertise and resubscribe)."""

from __future__ import annotations

import json
import random
import sys
import time

import pytest
import yaml
from test_gateway_helpers import start_gateway

from fleet_gateway.backoff import Backoff
from harness.wait import wait_for


def test_backoff_is_jittered_exponential_capped_and_resets():
    backoff = Backoff(initial=0.5, maximum=4.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert len(set(delays)) == len(delays)
    assert backoff.next_delay(hint=10.0) == 10.0
    backoff.reset()
    assert backoff.next_delay() <= 0.5
    with pytest.raises(ValueError, match='backoff needs 0 < initial'):
        Backoff(initial=0)


@pytest.mark.system
def test_site_link_relays_both_ways_and_survives_gateway_restart(processes, ros, tmp_path):
    from fleet_interfaces.msg import EStop, TaskEvent

    gateway = start_gateway(processes, tmp_path)
    config = tmp_path / 'link.yaml'
    config.write_text(
        yaml.safe_dump(
            {
                'fleet_site_link': {
                    'url': f'ws://127.0.0.1:{gateway.port}/',
                    'backoff_initial_s': 0.2,
                    'backoff_max_s': 1.0,
                    # both ends share this test's ROS domain, so the central name differs from the local one
                    'uplink': [
                        {
                            'topic': '/site_b/local/task_events',
                            'remote': '/fleet/site_b/zone_1/task_events',
                            'type': 'fleet_interfaces/TaskEvent',
                            'qos': 'events',
                        }
                    ],
                    'downlink': [
                        {
                            'topic': '/site_b/local/estop',
                            'remote': '/fleet/site_b/zone_1/estop',
                            'type': 'fleet_interfaces/EStop',
                            'qos': 'latched',
                        }
                    ],
                }
            }
        )
    )
    link = processes.start(
        [sys.executable, '-m', 'fleet_gateway.site_link', '--config', str(config)],
        name='link',
        extra_env={'FLEET_SITE_LINK_TOKEN': gateway.tokens['site-link']},
    )
    from fleet_ros import qos

    node = ros.node('site_b_side')
    local_events = node.create_publisher(TaskEvent, '/site_b/local/task_events', qos.EVENTS)
    central = []
    node.create_subscription(
        TaskEvent, '/fleet/site_b/zone_1/task_events', lambda m: central.append(m.agent_id), qos.EVENTS
    )
    local_estop = []
    node.create_subscription(EStop, '/site_b/local/estop', lambda m: local_estop.append(m.revision), qos.LATCHED)
    state = {'tag': 'before', 'last': 0.0}

    def tick() -> None:
        ros.spin_once(0.01)
        if time.monotonic() - state['last'] > 0.05:
            state['last'] = time.monotonic()
            local_events.publish(TaskEvent(agent_id=state['tag'], site_id='site_b', shard_id='zone_1'))

    wait_for(lambda: 'before' in central, 30, what='uplink task event relayed to the central side', tick=tick)
    assert link.alive(), link.output()

    gateway.proc.stop()
    state['tag'] = 'after'
    start_gateway(processes, tmp_path, tokens=gateway.tokens, port=gateway.port, name='gateway2')
    wait_for(lambda: 'after' in central, 30, what='uplink task event relayed after the gateway restarted', tick=tick)

    # downlink through the restarted gateway: an operator publishes an e-stop centrally over WebSocket
    import asyncio

    from websockets.asyncio.client import connect

    async def operator_estop() -> None:
        async with connect(gateway.url('operator')) as ws:
            await ws.send(
                json.dumps({'op': 'advertise', 'topic': '/fleet/site_b/zone_1/estop', 'type': 'fleet_interfaces/EStop'})
            )
            for _ in range(100):
                await ws.send(
                    json.dumps(
                        {
                            'op': 'publish',
                            'topic': '/fleet/site_b/zone_1/estop',
                            'msg': {'site_id': 'site_b', 'shard_id': 'zone_1', 'engaged': True, 'revision': 7},
                        }
                    )
                )
                try:
                    wait_for(lambda: 7 in local_estop, 0.1, tick=lambda: ros.spin_once(0.01))
                    return
                except AssertionError:
                    continue

    asyncio.run(operator_estop())
    assert 7 in local_estop, link.output()
    assert 'reconnecting' in link.output()
