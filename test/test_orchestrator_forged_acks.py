"""Acks the leader must not trust (issue 12, item 9): anything published on the shard's ack topic that does not answer
the delivery in flight — another agent, another seq or epoch, a stale-epoch rejection naming no newer epoch — is
counted and ignored by the leading orchestrator; it neither decides the command nor makes the leader step down."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from rclpy.parameter import Parameter

from fleet_core import topics
from fleet_core.model import Ack, AckStatus, Priority
from fleet_interfaces.msg import CommandAck as CommandAckMsg
from fleet_interfaces.msg import CommandOutcome, CommandOutcomes
from fleet_orchestrator.node import ShardOrchestrator
from fleet_ros import qos
from fleet_ros.convert import ack_to_msg
from harness.outcomes import first_outcomes

pytestmark = pytest.mark.system
SITE, SHARD = 'site_f', 'zone_f'


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / 'fleet.yaml'
    layout = {'sites': {SITE: {'shards': {SHARD: {'agents': {'prefix': 'r', 'count': 3}}}}}}
    layout['leadership'] = {'first_lease_wait_sec': 0.2, 'lease_sec': 5.0}
    path.write_text(yaml.safe_dump(layout))
    return path


def test_acks_answering_no_delivery_in_flight_change_nothing(ros, tmp_path):
    overrides = [
        Parameter('fleet_config', value=str(write_config(tmp_path))),
        Parameter('site_id', value=SITE),
        Parameter('shard_id', value=SHARD),
        Parameter('tracing_enabled', value=False),
        Parameter('state_dir', value=str(tmp_path / 'state')),
    ]
    leader = ros.add(ShardOrchestrator('orchestrator', context=ros.context, parameter_overrides=overrides))
    observer = ros.node('observer')
    outcomes: dict[str, int] = {}
    observer.create_subscription(
        CommandOutcomes, topics.shard_outcome(SITE, SHARD), first_outcomes(outcomes), qos.EVENTS
    )
    forger = observer.create_publisher(CommandAckMsg, topics.shard_ack(SITE, SHARD), qos.ACK)
    leader.trigger_configure()
    leader.trigger_activate()
    ros.spin_until(lambda: leader.leading, 15, 'the orchestrator to lead')
    ros.spin_until(lambda: forger.get_subscription_count() > 0, 10, 'the leader to match the ack topic')
    ros.spin_until(
        lambda: leader.outcome_pub.get_subscription_count() > 0, 10, 'the observer to match the outcome topic'
    )

    leader.submit_control(['r001'], 'noop', Priority.NORMAL, 30.0, 'trace-forged')
    (sent,) = leader.dispatcher.pending()
    # No agent runs here: a genuine ACCEPTED keeps the command from failing for lack of acks meanwhile.
    forger.publish(ack_to_msg(Ack.for_command(sent, AckStatus.ACCEPTED)))
    failed = Ack.for_command(sent, AckStatus.FAILED, 'forged')
    forged = [
        dataclasses.replace(failed, agent_id='r002'),  # not the agent it was sent to
        dataclasses.replace(failed, seq=sent.seq + 1),  # a delivery never made
        dataclasses.replace(failed, epoch=sent.epoch + 1),  # another leader's delivery
        dataclasses.replace(failed, attempt=sent.attempt + 5),  # an attempt never sent
        Ack.for_command(sent, AckStatus.REJECTED_STALE_EPOCH, 'forged'),  # names no epoch newer than the leader's
    ]
    for ack in forged:
        forger.publish(ack_to_msg(ack))
    ros.spin_until(lambda: leader.dispatcher.stats().acks_ignored >= len(forged), 10, 'the forged acks to arrive')
    assert leader.dispatcher.stats().acks_ignored == len(forged)
    assert leader.leading and not leader.dispatcher.fenced
    assert [c.command_id for c in leader.dispatcher.pending()] == [sent.command_id]

    # The agent's own answer to the delivery decides; had a forged FAILED been applied, it would be the first outcome.
    forger.publish(ack_to_msg(Ack.for_command(sent, AckStatus.SUCCEEDED)))
    ros.spin_until(lambda: sent.command_id in outcomes, 10, 'the genuine outcome to be announced')
    assert outcomes[sent.command_id] == CommandOutcome.OUTCOME_SUCCEEDED
