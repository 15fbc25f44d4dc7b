"""ShardOrchestrator lifecycle hygiene (in process, own context and domain): what on_configure and leading create,
on_cleanup destroys, so that configuring again leads again with one set of endpoints."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from fleet_core import topics
from fleet_orchestrator.node import ShardOrchestrator

pytestmark = pytest.mark.system
SITE, SHARD = 'site_l', 'zone_l'


def endpoints(node: ShardOrchestrator) -> set[str]:
    return (
        {f'pub {p.topic_name}' for p in node.publishers}
        | {f'sub {s.topic_name}' for s in node.subscriptions}
        | {f'srv {s.srv_name}' for s in node.services}
    )


def orchestrator(ros, tmp_path: Path, *, lease_sec: float, **kwargs: Any) -> ShardOrchestrator:  # type: ignore[no-untyped-def]
    """An orchestrator of a two-robot shard with its own config and state directory under `tmp_path`."""
    config = tmp_path / 'fleet.yaml'
    layout = {'sites': {SITE: {'shards': {SHARD: {'agents': ['r1', 'r2']}}}}, 'leadership': {'lease_sec': lease_sec}}
    config.write_text(yaml.safe_dump(layout))
    overrides = [
        Parameter('fleet_config', value=str(config)),
        Parameter('site_id', value=SITE),
        Parameter('shard_id', value=SHARD),
        Parameter('state_dir', value=str(tmp_path / 'state')),
        Parameter('tracing_enabled', value=False),
        Parameter('metrics_port', value=-1),
    ]
    return ShardOrchestrator('orchestrator', context=ros.context, parameter_overrides=overrides, **kwargs)


def test_cleanup_destroys_what_configure_and_leading_created(ros, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    node = ros.add(orchestrator(ros, tmp_path, lease_sec=5.0))
    unconfigured = endpoints(node)
    lease_topic, status_topic = topics.shard_leader(SITE, SHARD), topics.shard_status(SITE, SHARD)
    for round_ in range(2):
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        node.trigger_activate()
        ros.spin_until(lambda: node.leading, 15, f'the orchestrator to lead (round {round_})')
        configured = endpoints(node)
        assert f'pub {status_topic}' in configured and f'srv {topics.shard_submit(SITE, SHARD)}' in configured
        assert sum(1 for p in node.publishers if p.topic_name == lease_topic) == 1  # never twice after a cleanup
        node.trigger_deactivate()
        ros.spin_until(lambda: f'pub {status_topic}' not in endpoints(node), 5, 'the status publisher retired')
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert endpoints(node) == unconfigured, endpoints(node) - unconfigured
        assert node.journal is None and not node.leading


class SkewedClock:
    """Wall time plus an offset the test moves: a tick that takes longer than a lease, without waiting for it."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def test_a_tick_longer_than_the_lease_is_judged_at_renewal_not_at_its_start(ros, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    clock = SkewedClock()
    node = ros.add(orchestrator(ros, tmp_path, lease_sec=1.0, clock=clock))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    node.trigger_activate()
    ros.spin_until(lambda: node.leading, 15, 'the orchestrator to lead')
    mission_tick = node.missions.tick

    def slow_mission_tick() -> None:  # the tick's own work outlasts the lease
        clock.offset += 2.0
        mission_tick()

    node.missions.tick = slow_mission_tick  # type: ignore[method-assign]
    node._tick()
    # A renewal dated at the tick's start would pass the lapse check and keep a leader whose lease a standby may
    # already have taken over; judged when it renews, the leader finds the lapse and steps down.
    assert not node.leading
    node.trigger_deactivate()
    node.trigger_cleanup()
