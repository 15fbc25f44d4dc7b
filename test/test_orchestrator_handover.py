"""Two replicas of one shard in one process: the standby journals what it follows, a stepping-down leader hands its
unfinished work to the next leader, a new status subscriber never sees the stepped-down leader, and parameters are
read_only, ranged or applied at runtime as declared."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from fleet_core import topics
from fleet_core.model import Command, CommandResult, Outcome, Priority
from fleet_core.shard_journal import CommandState
from fleet_core.workflow import Point
from fleet_interfaces.msg import Command as CommandMsg
from fleet_interfaces.msg import ShardStatus
from fleet_interfaces.srv import SubmitCommand
from fleet_orchestrator.catch_up import HANDOFF_END
from fleet_orchestrator.durable import SNAPSHOT_END_KIND
from fleet_orchestrator.node import ShardOrchestrator
from fleet_ros import qos
from fleet_ros.convert import command_to_msg
from harness import WaitTimeout

pytestmark = pytest.mark.system
SITE, SHARD = 'site_h', 'zone_h'


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / 'fleet.yaml'
    layout = {
        'sites': {SITE: {'shards': {SHARD: {'agents': {'prefix': 'r', 'count': 3}}}}},
        'leadership': {'first_lease_wait_sec': 0.2, 'lease_sec': 0.6, 'renew_period_sec': 0.15},
    }
    path.write_text(yaml.safe_dump(layout))
    return path


def replica(ros, tmp_path: Path, name: str, index: int) -> ShardOrchestrator:
    overrides = [
        Parameter('fleet_config', value=str(write_config(tmp_path))),
        Parameter('site_id', value=SITE),
        Parameter('shard_id', value=SHARD),
        Parameter('tracing_enabled', value=False),
        Parameter('orchestrator_id', value=name),
        Parameter('replica_index', value=index),
        Parameter('state_dir', value=str(tmp_path / name)),
    ]
    node = ros.add(ShardOrchestrator(name, context=ros.context, parameter_overrides=overrides))
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    return node


def submit(ros, client, request_id: str) -> SubmitCommand.Response:
    """Until accepted: a leader that took over just now refuses unknown request ids for a moment (catching up)."""

    def accepted() -> SubmitCommand.Response | None:
        future = client.call_async(
            SubmitCommand.Request(kind='noop', args_json='{}', priority=1, ttl_sec=60.0, request_id=request_id)
        )
        try:
            ros.spin_until(future.done, 3, 'a submit answer')
        except WaitTimeout:  # sent to a server that went away with its leadership: send it again
            client.remove_pending_request(future)
            return None
        if future.result().accepted:
            return future.result()
        resend_at = time.monotonic() + 0.2  # refused with 'retry': pace the re-sends as a client would
        while time.monotonic() < resend_at:
            ros.spin_once(0.05)
        return None

    return ros.spin_until(accepted, 15, f'{request_id} accepted')


def test_standby_journals_what_it_follows_and_adopts_what_the_leader_hands_over(ros, tmp_path):
    a = replica(ros, tmp_path, 'a', 0)
    a.trigger_activate()
    ros.spin_until(lambda: a.leading, 15, 'a to lead')
    b = replica(ros, tmp_path, 'b', 1)
    b.trigger_activate()
    ros.spin_until(lambda: b.lease.current is not None and b.lease.current.leader_id == 'a', 10, 'b to follow a')
    ros.spin_until(lambda: a.journal_pub.get_subscription_count() > 0, 10, 'a to match b on the journal')
    # b joined late: a sends it a snapshot of its unfinished work. Only once b has taken it (caught up) can a command
    # a journals from here on reach b solely through the journal topic, which is what the hidden command below skips.
    ros.spin_until(lambda: b.durable.caught_up, 10, "b to catch up on a's snapshot")

    client = ros.node('submitter').create_client(SubmitCommand, topics.shard_submit(SITE, SHARD))
    ros.spin_until(client.service_is_ready, 10, 'the submit service')
    reply = submit(ros, client, 'req-h')
    accepted = list(reply.command_ids)
    assert len(accepted) == 3 and list(reply.states) == [CommandState.PENDING] * 3 and not reply.duplicate
    # A command that never reached the journal topic (e.g. accepted before b matched): only a holds it.
    hidden_commands = a.dispatcher.submit(['r001'], 'noop', '{}', Priority.NORMAL, 60.0, 'hidden')
    a.journal.accept(hidden_commands, now=a.clock())
    hidden = hidden_commands[0].command_id

    def standby_has(ids: list[str]) -> bool:
        return all(f.state is CommandState.PENDING for f in b.journal.fates(ids))

    ros.spin_until(lambda: standby_has(accepted), 10, 'the standby journal to hold the accepted commands')
    ros.spin_until(lambda: b.journal.request('req-h') is not None, 10, 'the standby journal to hold the request')
    assert b.journal.request('req-h').command_ids == tuple(accepted)
    assert not standby_has([hidden])

    # a steps down (e.g. deactivated by its lifecycle manager); b leads next and adopts everything a still owed.
    statuses: list[ShardStatus] = []
    a.trigger_deactivate()
    ros.spin_until(lambda: b.leading, 15, 'b to take over')
    ros.spin_until(
        lambda: {c.command_id for c in b.dispatcher.pending()} >= {*accepted, hidden}, 10, "b to adopt a's work"
    )
    assert b.dispatcher.epoch % 100 == 1 and b.dispatcher.epoch > 0
    ros.spin_until(lambda: b.status_pub is not None and a.status_pub is None, 5, 'only b to own a status publisher')
    ros.spin_once(0.3)  # a's retired publisher is destroyed on its next tick
    late = ros.node('late_status')
    late.create_subscription(ShardStatus, topics.shard_status(SITE, SHARD), statuses.append, qos.LATCHED)
    ros.spin_until(lambda: statuses, 10, 'a latched status')
    ros.spin_until(lambda: late.count_publishers(topics.shard_status(SITE, SHARD)) == 1, 5, 'one status publisher')
    assert {s.leader_id for s in statuses} == {'b'}

    # The same request again, now at b: the same commands, never new ones.
    again = submit(ros, client, 'req-h')
    assert again.duplicate and list(again.command_ids) == accepted


def test_parameters_are_read_only_ranged_or_applied(ros, tmp_path):
    a = replica(ros, tmp_path, 'a', 0)
    refused = a.set_parameters([Parameter('site_id', value='elsewhere')])[0]
    assert not refused.successful and a.get_parameter('site_id').value == SITE
    assert not a.set_parameters([Parameter('trace_sample_fraction', value=2.0)])[0].successful
    assert not a.set_parameters([Parameter('replica_index', value=3)])[0].successful
    assert a.set_parameters([Parameter('trace_sample_fraction', value=0.5)])[0].successful
    assert a.options.trace.sample_fraction == 0.5
    assert a.traces.sampler is not None
    assert a.set_parameters([Parameter('outcome_retention_sec', value=60.0)])[0].successful
    assert a.params.outcome_retention_sec == 60.0
    descriptor = a.describe_parameter('state_dir')
    assert descriptor.read_only and descriptor.description
    assert a.describe_parameter('metrics_port').integer_range[0].from_value == -1


def test_journal_entries_not_from_the_lease_holders_epoch_are_counted_and_never_applied(ros, tmp_path):
    a = replica(ros, tmp_path, 'a', 0)
    a.trigger_activate()
    ros.spin_until(lambda: a.leading, 15, 'a to lead')
    b = replica(ros, tmp_path, 'b', 1)
    b.trigger_activate()
    ros.spin_until(lambda: b.durable.gate.epoch == a.dispatcher.epoch, 10, 'b to follow a')
    forger = ros.node('forger').create_publisher(CommandMsg, topics.shard_journal(SITE, SHARD), qos.EVENTS)
    ros.spin_until(lambda: forger.get_subscription_count() > 0, 10, 'b to match the forger')
    template = Command('x', 't', SITE, SHARD, 'r001', 0, 0, Priority.NORMAL, time.time(), time.time() + 60, 'noop')
    stale = template.with_delivery(seq=0, epoch=a.dispatcher.epoch - 1, attempt=1)
    future = template.with_delivery(seq=0, epoch=a.dispatcher.epoch + 1000, attempt=1)
    forger.publish(command_to_msg(replace(stale, command_id='forged-stale')))
    forger.publish(command_to_msg(replace(future, command_id='forged-future')))
    real = a.dispatcher.submit(['r002'], 'noop', '{}', Priority.NORMAL, 60.0, 'real')
    a.journal.accept(real, now=a.clock())
    a._journal(real)
    ros.spin_until(lambda: real[0].command_id in {c.command_id for c in b.replica.pending}, 10, 'the real entry')
    ros.spin_until(lambda: b.untrusted_entries >= 1, 10, 'the stale entry to be counted')
    assert b.durable.gate.held == 1  # the future one waits for a lease of its epoch that never comes
    b.durable.persist(b.clock())
    assert [f.state for f in b.journal.fates(['forged-stale', 'forged-future'])] == [CommandState.UNKNOWN] * 2
    assert {'forged-stale', 'forged-future'}.isdisjoint(c.command_id for c in b.replica.pending)


def test_a_standby_started_late_gets_a_snapshot_of_the_unfinished_work(ros, tmp_path):
    a = replica(ros, tmp_path, 'a', 0)
    a.trigger_activate()
    ros.spin_until(lambda: a.leading, 15, 'a to lead')
    client = ros.node('submitter').create_client(SubmitCommand, topics.shard_submit(SITE, SHARD))
    ros.spin_until(client.service_is_ready, 10, 'the submit service')
    early = list(submit(ros, client, 'req-early').command_ids)  # nobody follows yet
    b = replica(ros, tmp_path, 'b', 1)
    b.trigger_activate()

    def b_has_everything() -> bool:
        b.durable.persist(b.clock())
        fates = b.journal.fates(early)
        return all(f.state is CommandState.PENDING for f in fates) and b.journal.request('req-early') is not None

    ros.spin_until(b_has_everything, 15, 'the late standby to hold the earlier work')
    assert {c.command_id for c in b.replica.pending} >= set(early)


def test_a_late_standby_gets_the_outcomes_decided_before_it_joined(ros, tmp_path):
    # Chaos seed 18: b led while a was down and decided commands a never saw; a restarted, b's snapshot gave it only
    # the unfinished work; b died, a led, and the outcomes were unknown to its GetOutcomes until b came back. A
    # follower that joins must get the leader's decided outcomes (within retention) with its unfinished work.
    a = replica(ros, tmp_path, 'a', 0)
    a.trigger_activate()
    ros.spin_until(lambda: a.leading, 15, 'a to lead')
    # Accepted and decided while nobody followed (announced on the outcome topic to no standby).
    now = a.clock()
    epoch = a.dispatcher.epoch
    decided = Command('decided-1', 't', SITE, SHARD, 'r002', 1, epoch, Priority.NORMAL, now, now + 60.0, 'noop')
    a.journal.accept([decided], now=now)
    a.journal.record(
        results=[CommandResult(decided.command_id, 't', 'r002', SHARD, decided.seq, Outcome.SUCCEEDED, stamp=a.clock())]
    )
    b = replica(ros, tmp_path, 'b', 1)
    b.trigger_activate()
    ros.spin_until(lambda: b.durable.caught_up, 10, "b to catch up on a's snapshot")

    def b_knows_the_outcome() -> bool:
        b.durable.persist(b.clock())
        return b.journal.fates([decided.command_id])[0].state is CommandState.FINISHED

    ros.spin_until(b_knows_the_outcome, 10, 'the late standby to hold the outcome decided before it joined')
    fate = b.journal.fates([decided.command_id])[0]
    assert fate.result is not None and fate.result.outcome is Outcome.SUCCEEDED


class LossyPublisher:
    """A publisher whose samples are lost while `lose(msg)` holds: what a volatile topic does to samples published
    before the subscriber has discovered the publisher. `sent` and `lost` keep what went out and what did not."""

    def __init__(self, publisher, lose) -> None:
        self._publisher, self._lose = publisher, lose
        self.sent: list = []
        self.lost: list = []

    def publish(self, msg) -> None:
        if self._lose(msg):
            self.lost.append(msg)
            return
        self.sent.append(msg)
        self._publisher.publish(msg)

    def __getattr__(self, name: str):
        return getattr(self._publisher, name)


def leader_and_caught_up_standby(ros, tmp_path: Path) -> tuple[ShardOrchestrator, ShardOrchestrator]:
    """a leads; b, started after it, has taken a's snapshot."""
    a = replica(ros, tmp_path, 'a', 0)
    a.trigger_activate()
    ros.spin_until(lambda: a.leading, 15, 'a to lead')
    b = replica(ros, tmp_path, 'b', 1)
    b.trigger_activate()
    ros.spin_until(lambda: b.durable.caught_up, 10, "b to catch up on a's snapshot")
    return a, b


def test_a_hand_over_that_did_not_arrive_is_asked_for_again(ros, tmp_path):
    # Found in a demo run: the new leader had not yet discovered the old leader's handoff publisher when the old one,
    # which already counted the new leader's subscription, handed its 50 unfinished commands over. The volatile
    # samples were lost, the end-of-hand-over marker (kept for late joiners on another topic) arrived, and the 50
    # commands never ran. Here every command a hands over is lost until its first end marker is out.
    a, b = leader_and_caught_up_standby(ros, tmp_path)
    only_at_a = a.dispatcher.submit(['r001', 'r002'], 'noop', '{}', Priority.NORMAL, 60.0, 'only-at-a')
    a.journal.accept(only_at_a, now=a.clock())
    ids = {c.command_id for c in only_at_a}

    records = LossyPublisher(a.replication.submission_pub, lambda _msg: False)

    def ends() -> list[list[str]]:
        return [list(msg.command_ids) for msg in records.sent if msg.request_id == HANDOFF_END]

    lossy = LossyPublisher(a.replication.handoff_pub, lambda msg: msg.command_id and not ends())  # markers pass
    a.replication.handoff_pub = lossy
    a.replication.submission_pub = records

    a.trigger_deactivate()
    ros.spin_until(lambda: b.leading, 15, 'b to take over')
    ros.spin_until(lambda: ids <= {c.command_id for c in b.dispatcher.pending()}, 20, "b to adopt a's lost hand-over")
    assert ids <= {msg.command_id for msg in lossy.lost}  # the first hand-overs were lost
    assert ids <= set(ends()[0])  # the marker listed them
    assert len(ends()) >= 2  # and a handed its journal over again when b asked


def test_a_leader_without_a_copy_of_the_running_mission_gets_it_from_the_replica_that_stepped_down(ros, tmp_path):
    # Found in a demo run: the new leader had never discovered the old one, so it held no copy of the mission the
    # old one ran; the steps it was handed ran, and the mission stopped there. Here b never gets a's mission journal.
    workflows = tmp_path / 'workflows'
    workflows.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / 'config' / 'workflows' / 'inspection.yaml', workflows)
    a = replica(ros, tmp_path, 'a', 0)
    a.trigger_activate()
    ros.spin_until(lambda: a.leading, 15, 'a to lead')
    a.missions.journal_pub = LossyPublisher(a.missions.journal_pub, lambda _msg: True)  # b sees none of it
    points = [Point(f'p{i}', float(i), 0.0) for i in range(6)]
    a._apply(a.leader.start_mission(mission_id='m-handed', workflow='inspection', points=points))
    b = replica(ros, tmp_path, 'b', 1)
    b.trigger_activate()
    ros.spin_until(lambda: b.durable.caught_up, 10, "b to catch up on a's snapshot")
    assert b.leader.missions.mission is None

    a.trigger_deactivate()
    ros.spin_until(lambda: b.leading, 15, 'b to take over')
    ros.spin_until(lambda: b.leader.missions.active, 15, 'b to adopt the mission a handed over')
    mission = b.leader.missions.mission
    assert mission is not None and mission.mission_id == 'm-handed'
    assert mission.progress().points_total == len(points)
    # Its steps are the ones a sent (adopted with a's unfinished commands), not second copies.
    steps = {c.command_id for c in b.dispatcher.pending() if c.trace_id == 'm-handed'}
    assert steps and all(b.leader.missions.is_mission_step(cid) for cid in steps)


def test_a_follower_that_missed_the_leaders_markers_asks_for_a_snapshot(ros, tmp_path):
    # The marker that catches a follower up travels on a volatile topic: one sent before the follower discovered the
    # leader is lost. Here every marker a sends in b's first 4 s is lost; b must ask again and catch up.
    a = replica(ros, tmp_path, 'a', 0)
    a.trigger_activate()
    ros.spin_until(lambda: a.leading, 15, 'a to lead')
    losing_until = time.monotonic() + 4.0
    lossy = LossyPublisher(
        a.replication.handoff_pub,
        lambda msg: not msg.command_id and msg.kind == SNAPSHOT_END_KIND and time.monotonic() < losing_until,
    )
    a.replication.handoff_pub = lossy
    b = replica(ros, tmp_path, 'b', 1)
    b.trigger_activate()
    ros.spin_until(lambda: b.durable.caught_up, 20, "b to catch up on a's snapshot")
    assert lossy.lost  # a marker was lost on the way
    assert time.monotonic() >= losing_until  # and the one b took came after
