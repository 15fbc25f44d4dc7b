"""A leader that loses its lease must still announce the outcomes it has already decided: the dispatcher no longer
counts those commands as pending, so neither the hot copy nor the next leader would ever announce them (G3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from rclpy.parameter import Parameter

from fleet_core import topics
from fleet_core.model import Ack, AckStatus, Priority
from fleet_interfaces.msg import CommandOutcome, CommandOutcomes
from fleet_orchestrator.node import ShardOrchestrator
from fleet_ros import qos
from harness.outcomes import first_outcomes

pytestmark = pytest.mark.system
SITE, SHARD = 'site_s', 'zone_s'


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / 'fleet.yaml'
    layout = {'sites': {SITE: {'shards': {SHARD: {'agents': {'prefix': 'r', 'count': 3}}}}}}
    layout['leadership'] = {'first_lease_wait_sec': 0.2, 'lease_sec': 5.0}
    path.write_text(yaml.safe_dump(layout))
    return path


def test_outcomes_decided_before_a_step_down_are_announced(ros, tmp_path):
    overrides = [
        Parameter('fleet_config', value=str(write_config(tmp_path))),
        Parameter('site_id', value=SITE),
        Parameter('shard_id', value=SHARD),
        Parameter('tracing_enabled', value=False),
    ]
    leader = ros.add(ShardOrchestrator('orchestrator', context=ros.context, parameter_overrides=overrides))
    observer = ros.node('observer')
    outcomes: dict[str, int] = {}
    observer.create_subscription(
        CommandOutcomes, topics.shard_outcome(SITE, SHARD), first_outcomes(outcomes), qos.EVENTS
    )
    leader.trigger_configure()
    leader.trigger_activate()
    ros.spin_until(lambda: leader.leading, 15, 'the orchestrator to lead')
    ros.spin_until(
        lambda: leader.outcome_pub.get_subscription_count() > 0, 10, 'the observer to match the outcome topic'
    )

    leader.submit_control(['r001', 'r002'], 'noop', Priority.NORMAL, 10.0, 'trace-step-down')
    in_flight = {c.command_id: c for c in leader.dispatcher.pending()}
    assert len(in_flight) == 2
    decided = next(c for c in in_flight.values() if c.agent_id == 'r001')
    # The final ack is taken by the dispatcher, then the lease is lost before the next flush.
    leader.dispatcher.on_ack(
        Ack(decided.command_id, decided.trace_id, 'r001', SHARD, decided.seq, decided.epoch, 1, AckStatus.SUCCEEDED)
    )
    leader._step_down('lease lost (test)')
    assert not leader.leading

    ros.spin_until(lambda: decided.command_id in outcomes, 10, 'the decided outcome to be announced')
    assert outcomes[decided.command_id] == CommandOutcome.OUTCOME_SUCCEEDED
    # The undecided command is followed again, for whoever leads next.
    followed = [c.command_id for c in leader.replica.pending]
    assert followed == [c for c in in_flight if c != decided.command_id], (
        followed,
        decided.command_id,
        list(in_flight),
    )


def test_a_new_leader_reannounces_the_outcomes_it_followed(ros, tmp_path):
    """A leader that dies right after announcing may have reached only the standby: the standby, once leading,
    announces those outcomes again (the same value, keyed by command id)."""
    import time

    from fleet_interfaces.msg import Command as CommandMsg
    from fleet_interfaces.msg import LeaderLease
    from fleet_orchestrator.durable import SNAPSHOT_END_KIND
    from fleet_ros.convert import to_time

    overrides = [
        Parameter('fleet_config', value=str(write_config(tmp_path))),
        Parameter('site_id', value=SITE),
        Parameter('shard_id', value=SHARD),
        Parameter('tracing_enabled', value=False),
        Parameter('orchestrator_id', value='standby'),
    ]
    standby = ros.add(ShardOrchestrator('standby', context=ros.context, parameter_overrides=overrides))
    old_leader = ros.node('old_leader')
    lease_pub = old_leader.create_publisher(LeaderLease, topics.shard_leader(SITE, SHARD), qos.LATCHED)
    outcome_pub = old_leader.create_publisher(CommandOutcomes, topics.shard_outcome(SITE, SHARD), qos.EVENTS)

    def renew() -> None:
        lease_pub.publish(
            LeaderLease(
                site_id=SITE, shard_id=SHARD, leader_id='old', epoch=1, stamp=to_time(time.time()), lease_sec=5.0
            )
        )

    renew()
    standby.trigger_configure()
    standby.trigger_activate()
    ros.spin_until(lambda: standby.lease.current is not None, 10, 'the standby to follow the old lease')
    # As a real leader does for a follower that joins: an (empty) snapshot closed by its marker catches it up, so it
    # may take over as soon as the lease lapses.
    handoff_pub = old_leader.create_publisher(CommandMsg, topics.shard_handoff(SITE, SHARD), qos.EVENTS)
    ros.spin_until(lambda: handoff_pub.get_subscription_count() > 0, 10, 'the standby to follow hand-overs')
    marker = CommandMsg(command_id='', agent_id='old', epoch=1, kind=SNAPSHOT_END_KIND, site_id=SITE, shard_id=SHARD)
    handoff_pub.publish(marker)
    ros.spin_until(lambda: standby.durable.caught_up, 10, 'the standby to catch up')
    ros.spin_until(lambda: outcome_pub.get_subscription_count() > 0, 10, 'the standby to follow outcomes')
    announced = CommandOutcome(command_id='c-announced-once', agent_id='r001', outcome=CommandOutcome.OUTCOME_SUCCEEDED)
    outcome_pub.publish(CommandOutcomes(outcomes=[announced]))
    ros.spin_until(lambda: standby._recent_outcomes, 10, 'the standby to receive the outcome')
    # The old leader dies (no more renewals); a late subscriber that missed its announcement listens now.
    old_leader.destroy_publisher(outcome_pub)
    late: list[CommandOutcome] = []
    observer = ros.node('late_observer')
    observer.create_subscription(
        CommandOutcomes, topics.shard_outcome(SITE, SHARD), lambda batch: late.extend(batch.outcomes), qos.EVENTS
    )
    ros.spin_until(lambda: standby.outcome_pub.get_subscription_count() > 0, 10, 'the late observer to match')
    ros.spin_until(lambda: standby.leading, 20, 'the standby to take over')
    ros.spin_until(lambda: late, 10, 'the re-announced outcome')
    assert [(m.command_id, m.outcome) for m in late] == [('c-announced-once', CommandOutcome.OUTCOME_SUCCEEDED)]
