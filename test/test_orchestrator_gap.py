"""Gap detection mid-run: a standby that loses journal entries while it follows notices it from the leader's lease
(which counts the entries journaled in its epoch), is not caught up (not eligible to lead at once, not counted in
ShardStatus standbys_caught_up), asks the leader for a snapshot and is caught up again once it has taken it."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from fleet_core import topics
from fleet_core.history import Announcement, Execution, Submission, check_history
from fleet_core.model import Command, Outcome, Priority
from fleet_core.replica import ShardReplica
from fleet_core.shard_journal import GAP_GRACE_SEC, CommandState, ShardJournal
from fleet_interfaces.msg import Command as CommandMsg
from fleet_interfaces.msg import CommandOutcome, CommandOutcomes, ShardStatus
from fleet_interfaces.srv import SubmitCommand
from fleet_orchestrator.durable import SNAPSHOT_REQUEST_EVERY_SEC, DurableShard
from fleet_orchestrator.node import ShardOrchestrator
from fleet_ros import qos
from harness.exec_log import read_log
from harness.processes import shard_ros_args

TEST_DIR = Path(__file__).resolve().parent


def durable_shard(tmp_path, name: str = 'b') -> DurableShard:
    journal = ShardJournal(tmp_path / name / 'journal.db', background_checkpoints=False)
    return DurableShard(journal, ShardReplica(['r001']), own_id=name)


def entry(cid: str, epoch: int = 100) -> Command:
    return Command(cid, 't', 'site', 'zone', 'r001', 1, epoch, Priority.NORMAL, 1.0, 1e12, 'noop')


def test_a_gap_makes_the_standby_not_caught_up_until_the_snapshot_it_asks_for(tmp_path):
    durable = durable_shard(tmp_path)
    durable.on_lease(100, 'a', written=0, now=0.0)
    assert durable.on_snapshot_end(100, leader_id='a', current_leader='a', covered=0)
    assert durable.caught_up and durable.gap.synced
    durable.on_journal_entry(entry('c1'))
    durable.on_lease(100, 'a', written=2, now=1.0)  # c2 never arrives
    assert durable.check_gap(1.0 + GAP_GRACE_SEC - 0.1) == ''
    assert durable.caught_up and not durable.snapshot_request_due(1.0)
    reason = durable.check_gap(1.0 + GAP_GRACE_SEC)
    assert 'journal gap in epoch 100' in reason
    assert not durable.caught_up and durable.gap_open == reason
    now = 1.0 + GAP_GRACE_SEC
    assert durable.snapshot_request_due(now)
    assert not durable.snapshot_request_due(now + SNAPSHOT_REQUEST_EVERY_SEC / 2)
    assert durable.snapshot_request_due(now + SNAPSHOT_REQUEST_EVERY_SEC)  # asked again until answered
    # Another replica's marker, or one of an old epoch, does not answer it.
    assert not durable.on_snapshot_end(100, leader_id='x', current_leader='a', covered=2)
    assert not durable.caught_up
    assert durable.on_snapshot_end(100, leader_id='a', current_leader='a', covered=2)
    assert durable.caught_up and not durable.gap_open
    assert not durable.snapshot_request_due(now + 10 * SNAPSHOT_REQUEST_EVERY_SEC)
    assert durable.check_gap(now + 100.0) == ''


def test_a_standby_that_follows_every_entry_never_asks(tmp_path):
    durable = durable_shard(tmp_path)
    durable.on_lease(100, 'a', written=0, now=0.0)
    durable.on_snapshot_end(100, leader_id='a', current_leader='a', covered=0)
    for n in range(1, 30):
        durable.on_lease(100, 'a', written=n, now=n * 0.25)  # each lease overtakes its entry
        durable.on_journal_entry(entry(f'c{n}'))
        assert durable.check_gap(n * 0.25 + GAP_GRACE_SEC) == ''
    assert durable.caught_up and durable.gap.gaps == 0
    assert not durable.snapshot_request_due(time.time())


def test_a_held_marker_keeps_the_count_it_covers(tmp_path):
    durable = durable_shard(tmp_path)
    durable.on_lease(100, 'a', written=0, now=0.0)
    assert not durable.on_snapshot_end(101, leader_id='c', current_leader='a', covered=5)  # overtook its lease
    durable.on_lease(101, 'c', written=5, now=1.0)
    assert durable.caught_up and durable.gap.received() == 5
    assert durable.check_gap(1.0 + GAP_GRACE_SEC) == ''


AGENTS = 3
SITE, SHARD = 'site_g', 'zone_g'
EXEC_DELAY_SEC = 15.0
"""Each command runs this long: the dropped commands are still running when the leader is killed (the gap, the
snapshot requests and the status checks before the kill take 4-5 s on an idle host, longer under load)."""


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / 'fleet.yaml'
    layout = {
        'sites': {SITE: {'shards': {SHARD: {'agents': {'prefix': 'r', 'count': AGENTS}}}}},
        'leadership': {'lease_sec': 1.0, 'renew_period_sec': 0.25, 'first_lease_wait_sec': 0.5},
        'dispatch': {'retry_initial_sec': 0.3, 'retry_max_sec': 1.0, 'retry_budget': 40},
    }
    path.write_text(yaml.safe_dump(layout))
    return path


def ros_params(config: Path, **extra: object) -> list[str]:
    return shard_ros_args(config, site=SITE, shard=SHARD, **extra)


@pytest.mark.system
def test_a_standby_that_loses_journal_entries_catches_up_and_a_takeover_loses_nothing(ros, processes, tmp_path):
    config = write_config(tmp_path)
    log = tmp_path / 'exec.log'
    env = {'FLEET_TEST_EXEC_LOG': str(log), 'PYTHONPATH': f'{TEST_DIR}:{os.environ.get("PYTHONPATH", "")}'}
    processes.start(
        [
            'fleet_agent',
            *ros_params(
                config,
                store_dir=tmp_path / 'stores',
                exec_delay_sec=EXEC_DELAY_SEC,
                executor='harness.exec_log:factory',
            ),
        ],
        name='agents',
        extra_env=env,
    )
    leader = processes.start(
        [
            'shard_orchestrator',
            *ros_params(
                config, orchestrator_id='a', replica_index=0, state_dir=tmp_path / 'a', tracing_enabled='false'
            ),
            '-r',
            '__node:=orchestrator_a',
        ],
        name='orchestrator-a',
    )
    node = ros.node('gap_observer')
    announced: list[CommandOutcome] = []
    node.create_subscription(
        CommandOutcomes, topics.shard_outcome(SITE, SHARD), lambda b: announced.extend(b.outcomes), qos.EVENTS
    )
    statuses: list[ShardStatus] = []
    node.create_subscription(ShardStatus, topics.shard_status(SITE, SHARD), statuses.append, qos.LATCHED)
    submit = node.create_client(SubmitCommand, topics.shard_submit(SITE, SHARD))
    ros.spin_until(lambda: submit.service_is_ready() and statuses, 60, 'leader a and its submit service')

    b = ros.add(
        ShardOrchestrator(
            'orchestrator_b',
            context=ros.context,
            parameter_overrides=[
                Parameter('fleet_config', value=str(config)),
                Parameter('site_id', value=SITE),
                Parameter('shard_id', value=SHARD),
                Parameter('tracing_enabled', value=False),
                Parameter('orchestrator_id', value='b'),
                Parameter('replica_index', value=1),
                Parameter('state_dir', value=str(tmp_path / 'b')),
            ],
        )
    )
    assert b.trigger_configure() == TransitionCallbackReturn.SUCCESS
    b.trigger_activate()
    ros.spin_until(lambda: b.durable.caught_up and b.durable.gap.synced, 30, "b to catch up on a's snapshot")
    ros.spin_until(
        lambda: (statuses[-1].standbys_following, statuses[-1].standbys_caught_up) == (1, 1), 15, 'b counted'
    )

    # The filter: b loses the next AGENTS journal entries (the first request's commands), and the snapshot markers
    # after it noticed the gap until the leader's status has shown it as not caught up.
    dropped: list[str] = []
    markers_dropped: list[int] = []
    on_journal, on_snapshot_end = b._on_journal, b.durable.on_snapshot_end

    def lossy_journal(msg: CommandMsg) -> None:
        if len(dropped) < AGENTS:
            dropped.append(msg.command_id)
            return
        on_journal(msg)

    release_markers: list[bool] = []

    def lossy_marker(epoch: int, *, leader_id: str, current_leader: str, covered: int = 0, last: str = '') -> bool:
        if b.durable.gap_open and not release_markers:
            markers_dropped.append(epoch)
            return False
        return on_snapshot_end(epoch, leader_id=leader_id, current_leader=current_leader, covered=covered, last=last)

    b._on_journal = lossy_journal  # type: ignore[method-assign]  # the test's filter on b's journal subscription
    b.durable.on_snapshot_end = lossy_marker  # type: ignore[method-assign]

    def call(request_id: str) -> SubmitCommand.Response | None:
        request = SubmitCommand.Request(kind='noop', args_json='{}', priority=1, ttl_sec=120.0, request_id=request_id)
        future = submit.call_async(request)
        ros.spin_until(future.done, 30, f'the answer to {request_id}')
        reply = future.result()
        return reply if reply.accepted else None

    replies = [ros.spin_until(lambda r=rid: call(r), 30, f'{rid} accepted') for rid in ('req-0', 'req-1')]
    submitted = {c: agent for r in replies for c, agent in zip(r.command_ids, r.agent_ids_out, strict=True)}
    ros.spin_until(lambda: len(dropped) == AGENTS, 15, 'the filter to drop the first request')
    assert set(dropped) == set(replies[0].command_ids)

    # b notices from a's leases, is not caught up (and not counted), asks, and is caught up by the snapshot.
    ros.spin_until(lambda: b.durable.gap.gaps >= 1, 30, 'b to notice the gap')
    assert not b.durable.caught_up and 'journal gap' in b.durable.gap_open
    ros.spin_until(lambda: markers_dropped, 15, 'a snapshot answering the request (dropped)')
    # Snapshots are dropped (b asks again each SNAPSHOT_REQUEST_EVERY_SEC) until a's status has shown b uncounted.
    ros.spin_until(
        lambda: (statuses[-1].standbys_following, statuses[-1].standbys_caught_up) == (1, 0),
        15,
        "a's status to stop counting b as caught up",
    )
    assert not b.durable.caught_up
    release_markers.append(True)
    ros.spin_until(lambda: b.durable.caught_up, 30, 'b to catch up again on a snapshot it asked for')
    assert not b.durable.gap_open
    assert set(dropped) <= {c.command_id for c in b.replica.pending} | set(announced_ids(announced))
    ros.spin_until(
        lambda: (statuses[-1].standbys_following, statuses[-1].standbys_caught_up) == (1, 1), 15, 'b counted again'
    )

    # The leader's host dies while the dropped commands still run: b takes over with what the snapshot gave it.
    leader.kill()
    unfinished = set(dropped) - set(announced_ids(announced))
    assert unfinished, 'the kill came after the dropped commands finished: nothing was tested'
    ros.spin_until(lambda: b.leading, 30, 'b to take over')
    assert unfinished <= {c.command_id for c in b.dispatcher.pending()} | set(announced_ids(announced))

    def all_decided() -> bool:
        b.durable.persist(b.clock())
        return all(f.state is CommandState.FINISHED for f in b.journal.fates(list(submitted)))

    ros.spin_until(all_decided, 120, 'an outcome for every submitted command')
    fates = [f for f in b.journal.fates(list(submitted)) if f.result is not None]
    verdict = check_history(
        announcements=[
            *(Announcement(o.command_id, o.agent_id, Outcome(o.outcome)) for o in announced),
            *(Announcement(f.command_id, f.agent_id, f.result.outcome) for f in fates),
        ],
        executions=[
            Execution(agent_id=e['agent'], command_id=e['command_id'], epoch=0, started_at=e['start'])
            for e in read_log(log)
        ],
        submissions=[Submission(c, agent) for c, agent in submitted.items()],
    )
    assert verdict.ok, verdict.render()
    assert {f.result.outcome for f in fates} == {Outcome.SUCCEEDED}
    assert Counter(e['command_id'] for e in read_log(log)) == dict.fromkeys(submitted, 1)


def announced_ids(announced: list[CommandOutcome]) -> list[str]:
    return [o.command_id for o in announced]
