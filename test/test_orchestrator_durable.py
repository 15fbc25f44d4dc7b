"""Shard state survives the site server: kill the leader and the standby of a shard mid-stream (SIGKILL), restart
both on the same state_dir, and every submitted command still gets exactly one outcome that agrees with what the
agents executed; a re-sent request_id returns the commands of the first answer, never new ones."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml

from fleet_core import topics
from fleet_core.model import Outcome
from fleet_interfaces.msg import CommandOutcomes, Heartbeat, LeaderLease, ShardStatus
from fleet_interfaces.srv import GetOutcomes, SubmitCommand
from fleet_ros import qos
from fleet_ros.convert import from_time
from harness.exec_log import read_log
from harness.launch_system import lapsed_before_another_led, one_leader_at_a_time, settled_on_newest_epoch
from harness.processes import shard_ros_args, wait_exit

pytestmark = pytest.mark.system
TEST_DIR = Path(__file__).resolve().parent
SITE, SHARD = 'site_d', 'zone_d'
AGENTS = 4
LEASE_SEC = 1.0
FIRST_LEASE_WAIT_SEC = 2.0
COLD_START_BOUND_SEC = 10.0
"""From the first restarted replica being active to a lease: the first-lease wait plus a few lease periods. The old
cold start waited out a fixed 15 s whenever a peer replica was in the graph. Process start-up is left out: on a
loaded host it alone took 9.6 s."""
ACTIVE_LINE = re.compile(r'\[(\d+\.\d+)\] \[[^\]]*\]: active: eligible to lead')


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / 'fleet.yaml'
    layout = {
        'sites': {SITE: {'shards': {SHARD: {'agents': {'prefix': 'r', 'count': AGENTS}}}}},
        'leadership': {'lease_sec': LEASE_SEC, 'renew_period_sec': 0.25, 'first_lease_wait_sec': FIRST_LEASE_WAIT_SEC},
        'dispatch': {'retry_initial_sec': 0.3, 'retry_max_sec': 1.0, 'retry_budget': 20},
    }
    path.write_text(yaml.safe_dump(layout))
    return path


def ros_params(config: Path, **extra: object) -> list[str]:
    return shard_ros_args(config, site=SITE, shard=SHARD, **extra)


def start_orchestrator(processes, config: Path, tmp_path: Path, replica: int, tag: str):
    name = 'ab'[replica]
    return processes.start(
        [
            'shard_orchestrator',
            *ros_params(
                config,
                orchestrator_id=name,
                replica_index=replica,
                state_dir=tmp_path / f'state_{name}',
                tracing_enabled='false',
            ),
            '-r',
            f'__node:=orchestrator_{name}',
        ],
        name=f'orchestrator-{name}-{tag}',
    )


def test_killing_leader_and_standby_loses_no_command_and_request_ids_stay_idempotent(ros, processes, tmp_path):
    config = write_config(tmp_path)
    log = tmp_path / 'exec.log'
    env = {'FLEET_TEST_EXEC_LOG': str(log), 'PYTHONPATH': f'{TEST_DIR}:{os.environ.get("PYTHONPATH", "")}'}
    processes.start(
        [
            'fleet_agent',
            *ros_params(
                config, store_dir=tmp_path / 'stores', exec_delay_sec=0.25, executor='harness.exec_log:factory'
            ),
        ],
        name='agents',
        extra_env=env,
    )
    replicas = [start_orchestrator(processes, config, tmp_path, r, 'first') for r in (0, 1)]

    node = ros.node('durable_observer')
    announced: dict[str, list[int]] = defaultdict(list)

    def on_outcomes(batch: CommandOutcomes) -> None:
        for msg in batch.outcomes:
            announced[msg.command_id].append(msg.outcome)

    node.create_subscription(CommandOutcomes, topics.shard_outcome(SITE, SHARD), on_outcomes, qos.EVENTS)
    leases: list[tuple[float, LeaderLease]] = []
    node.create_subscription(
        LeaderLease, topics.shard_leader(SITE, SHARD), lambda m: leases.append((time.monotonic(), m)), qos.LATCHED
    )
    submit = node.create_client(SubmitCommand, topics.shard_submit(SITE, SHARD))
    query = node.create_client(GetOutcomes, topics.shard_outcomes_query(SITE, SHARD))

    def call(request_id: str, timeout: float = 10.0) -> SubmitCommand.Response | None:
        request = SubmitCommand.Request(kind='noop', args_json='{}', priority=1, ttl_sec=120.0, request_id=request_id)
        future = submit.call_async(request)
        try:
            ros.spin_until(future.done, timeout, f'the answer to {request_id}')
        except AssertionError:
            submit.remove_pending_request(future)
            return None
        reply = future.result()
        return reply if reply.accepted else None

    ros.spin_until(lambda: submit.service_is_ready() and leases, 60, 'a leader and its submit service')
    # Both replicas start at once: on a loaded machine both may lead for a moment, before each sees the other's lease
    # (the lower epoch then steps down, and agents fence it). Requests go to the leader the shard settled on.
    ros.spin_until(lambda: settled_on_newest_epoch([m for _, m in leases]), 30, 'four lease renewals of one epoch')
    problem = one_leader_at_a_time([m for _, m in leases], {'a', 'b'})
    assert not problem, problem
    # The standby must follow and hold the leader's journal (its copy is part of what is tested): a subscriber on the
    # journal topic is not enough, it may not have seen a lease yet.
    ros.spin_until(
        lambda: any('caught up with the leader of epoch' in p.output() for p in replicas), 60, 'the standby to catch up'
    )

    first: dict[str, SubmitCommand.Response] = {}
    for index in range(6):
        rid = f'req-{index}'
        reply = ros.spin_until(lambda r=rid: call(r), 30, f'{rid} accepted')
        first[rid] = reply
    # Mid-stream: the agents are still executing (0.25 s each, six per agent). A site server's power cut.
    for proc in replicas:
        proc.kill()
    killed_at = time.monotonic()
    unfinished_at_kill = [c for reply in first.values() for c in reply.command_ids if c not in announced]
    assert unfinished_at_kill, 'the kill came after every command had finished: nothing was tested'

    replicas = [start_orchestrator(processes, config, tmp_path, r, 'restarted') for r in (0, 1)]
    # A lease the killed leader sent just before its death can still arrive after the kill: the restarted shard's
    # first lease is the first one of a higher epoch.
    old_epoch = max(m.epoch for _, m in leases)
    fresh = ros.spin_until(
        lambda: next((stamped for stamped in leases if stamped[1].epoch > old_epoch), None),
        60,
        'a lease of a new epoch after the cold restart',
    )
    # The replicas' log stamps and the lease's stamp are both this host's wall clock.
    active = ros.spin_until(
        lambda: sorted(float(m[1]) for p in replicas for m in ACTIVE_LINE.finditer(p.output())),
        10,
        'the restarted replicas to log "active"',
    )
    cold_start_s = from_time(fresh[1].stamp) - active[0]
    assert cold_start_s < COLD_START_BOUND_SEC, f'no leader for {cold_start_s:.1f}s after a replica was active'
    print(
        f'cold restart: first lease {cold_start_s:.2f}s after the first replica was active, '
        f'{fresh[0] - killed_at:.2f}s after the kill; {len(unfinished_at_kill)} unfinished'
    )

    # Every request re-sent to whichever replica leads now: the same commands as the first answer, never new ones.
    ros.spin_until(submit.service_is_ready, 30, 'the submit service of the new leader')
    for rid, answer in first.items():
        again = ros.spin_until(lambda r=rid: call(r), 30, f'{rid} answered again')
        assert again.duplicate, rid
        assert (list(again.command_ids), list(again.agent_ids_out)) == (
            list(answer.command_ids),
            list(answer.agent_ids_out),
        ), rid
    fresh = ros.spin_until(lambda: call('req-after'), 30, 'a new request accepted')
    assert not fresh.duplicate

    all_ids = [cid for reply in [*first.values(), fresh] for cid in reply.command_ids]
    assert len(all_ids) == len(set(all_ids)) == 7 * AGENTS

    journal = journal_fates(ros, query, all_ids)
    # Announcements are facts repeated by whoever leads; a subscriber may miss those a new leader made before
    # discovery matched it (volatile topic), which is what the journal query is for. None may disagree with it.
    executions = Counter(e['command_id'] for e in read_log(log))
    problems = []
    for cid in all_ids:
        values = set(announced[cid])
        if len(values) > 1 or (values and journal[cid] not in values):
            problems.append(f'{cid}: announced {announced[cid]}, journal {journal[cid]}')
            continue
        outcome, runs = Outcome(journal[cid]), executions[cid]
        if (outcome is Outcome.SUCCEEDED and runs != 1) or (outcome is Outcome.FAILED and runs > 1):
            problems.append(f'{cid}: {outcome.name} but executed {runs} time(s)')
        if outcome in (Outcome.REJECTED, Outcome.EXPIRED, Outcome.CANCELLED) and runs:
            problems.append(f'{cid}: {outcome.name} but executed {runs} time(s)')
    assert not problems, problems
    assert max(executions.values()) == 1
    # Nothing was lost to the kill: with a long TTL and agents that stayed up, every command ran and succeeded.
    assert Counter(Outcome(journal[c]).name for c in all_ids) == {'SUCCEEDED': 7 * AGENTS}

    # The CLI reads fates from the journals: `fleetctl outcome`, and `fleetctl trace` of an unsampled command.
    fleetctl = ['fleetctl', '--config', str(config)]
    done = subprocess.run(
        [*fleetctl, 'outcome', *all_ids[:2], 'no-such-command', '--json'],
        capture_output=True,
        text=True,
        timeout=60,
        env=processes.env,
    )
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1, done.stderr  # one id is unknown
    assert [(r['state'], r.get('outcome')) for r in rows] == [('FINISHED', 'SUCCEEDED')] * 2 + [('UNKNOWN', None)]
    done = subprocess.run(
        [*fleetctl, 'trace', all_ids[0], '--wait', '0.5'], capture_output=True, text=True, timeout=60, env=processes.env
    )
    assert done.returncode == 0 and 'SUBMIT' in done.stdout and 'SUCCEEDED' in done.stdout, done.stdout + done.stderr
    assert 'journal of' in done.stdout

    # `fleetctl submit --request-id` of a request answered before the crash: the same commands, already decided.
    done = subprocess.run(
        [*fleetctl, 'submit', '--shard', f'{SITE}/{SHARD}', '--kind', 'noop', '--request-id', 'req-0', '--json'],
        capture_output=True,
        text=True,
        timeout=60,
        env=processes.env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'accepted before: same commands' in done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{')]
    assert sorted(r['command_id'] for r in rows) == sorted(first['req-0'].command_ids)
    assert {r['outcome'] for r in rows} == {'SUCCEEDED'}

    # A new status subscriber sees only the current leader (the other replica publishes no latched status).
    statuses: list[ShardStatus] = []
    late = ros.node('late_status')
    late.create_subscription(ShardStatus, topics.shard_status(SITE, SHARD), statuses.append, qos.LATCHED)
    ros.spin_until(lambda: statuses, 10, 'a latched status')
    current = leases[-1][1]
    assert {(s.leader_id, s.epoch) for s in statuses} == {(current.leader_id, current.epoch)}


def test_a_replica_without_the_journal_that_leads_first_leads_again_above_the_agents_epoch(ros, processes, tmp_path):
    """A cold restart where the replica that lost its journal leads first, with an epoch below the one the agents
    executed: their heartbeats make it step down and lead above that epoch, and the replica with the journal hands
    its unfinished commands to it. Each runs once and succeeds."""
    config = write_config(tmp_path)
    log = tmp_path / 'exec.log'
    env = {'FLEET_TEST_EXEC_LOG': str(log), 'PYTHONPATH': f'{TEST_DIR}:{os.environ.get("PYTHONPATH", "")}'}
    agents = processes.start(
        [
            'fleet_agent',
            *ros_params(config, store_dir=tmp_path / 'stores', exec_delay_sec=0.5, executor='harness.exec_log:factory'),
        ],
        name='agents',
        extra_env=env,
    )
    node = ros.node('lost_journal_observer')
    leases: list[LeaderLease] = []
    node.create_subscription(LeaderLease, topics.shard_leader(SITE, SHARD), leases.append, qos.LATCHED)
    announced: set[str] = set()
    node.create_subscription(
        CommandOutcomes,
        topics.shard_outcome(SITE, SHARD),
        lambda batch: announced.update(o.command_id for o in batch.outcomes),
        qos.EVENTS,
    )
    seen: dict[str, int] = {}  # agent -> the highest epoch its heartbeat reports
    node.create_subscription(
        Heartbeat,
        topics.shard_heartbeat(SITE, SHARD),
        lambda m: seen.__setitem__(m.agent_id, m.highest_epoch_seen),
        qos.HEARTBEAT,
    )
    submit = node.create_client(SubmitCommand, topics.shard_submit(SITE, SHARD))
    first = start_orchestrator(processes, config, tmp_path, 0, 'first')
    ros.spin_until(lambda: submit.service_is_ready() and leases, 60, 'a leading')
    executed_epoch = leases[-1].epoch
    ids: list[str] = []
    for index in range(6):
        reply = ros.spin_until(lambda i=index: accepted(ros, submit, f'req-{i}'), 30, f'req-{index} accepted')
        ids += list(reply.command_ids)
    # What the next leader must learn from the agents: on a loaded host they may not have taken a command yet.
    ros.spin_until(
        lambda: any(epoch >= executed_epoch for epoch in seen.values()),
        30,
        f'an agent reporting epoch {executed_epoch}',
    )
    # The agents go silent (no heartbeat tells the next leader which epoch they saw), and the leader dies.
    agents.signal(signal.SIGSTOP)
    try:
        first.kill()
        unfinished_at_kill = [c for c in ids if c not in announced]
        assert unfinished_at_kill, 'the kill came after every command had finished: nothing was tested'
        start_orchestrator(processes, config, tmp_path, 1, 'without-journal')
        low = ros.spin_until(lambda: next((m for m in leases if m.leader_id == 'b'), None), 60, 'b leading')
        assert low.epoch < executed_epoch, (low.epoch, executed_epoch)
    finally:
        agents.signal(signal.SIGCONT)
    ros.spin_until(
        lambda: any(m.leader_id == 'b' and m.epoch > executed_epoch for m in leases),
        30,
        f'b leading again above epoch {executed_epoch}, which the agents report',
    )
    start_orchestrator(processes, config, tmp_path, 0, 'restarted')
    query = node.create_client(GetOutcomes, topics.shard_outcomes_query(SITE, SHARD))
    ros.spin_until(query.service_is_ready, 30, 'the outcome service')

    assert journal_fates(ros, query, ids) == dict.fromkeys(ids, Outcome.SUCCEEDED)
    # True outcomes: each command's execution record, once.
    assert Counter(e['command_id'] for e in read_log(log)) == dict.fromkeys(ids, 1)


def journal_fates(ros, query, ids: list[str]) -> dict[str, int]:
    """Each command's outcome from the leader's journal, once every one is FINISHED. GetOutcomes is a read, sent again
    when a reply is lost (the service of a leader that just took over can drop one)."""

    def fates() -> dict[str, int] | None:
        reply = ros.call(lambda: query.call_async(GetOutcomes.Request(command_ids=ids)), 20, 'GetOutcomes')
        if list(reply.states) != [GetOutcomes.Request.STATE_FINISHED] * len(ids):
            return None
        return {o.command_id: o.outcome for o in reply.outcomes}

    return ros.spin_until(fates, 60, 'a journaled outcome for every command')


def test_ctrl_c_of_a_leader_is_quiet_and_hands_its_work_to_the_standby(ros, processes, tmp_path):
    config = write_config(tmp_path)
    log = tmp_path / 'exec.log'
    env = {'FLEET_TEST_EXEC_LOG': str(log), 'PYTHONPATH': f'{TEST_DIR}:{os.environ.get("PYTHONPATH", "")}'}
    processes.start(
        [
            'fleet_agent',
            *ros_params(config, store_dir=tmp_path / 'stores', exec_delay_sec=0.2, executor='harness.exec_log:factory'),
        ],
        name='agents',
        extra_env=env,
    )
    node = ros.node('ctrl_c_observer')
    leases: list[LeaderLease] = []
    node.create_subscription(LeaderLease, topics.shard_leader(SITE, SHARD), leases.append, qos.LATCHED)
    replicas = {'a': start_orchestrator(processes, config, tmp_path, 0, 'one')}
    ros.spin_until(lambda: leases, 60, 'the first leader')
    replicas['b'] = start_orchestrator(processes, config, tmp_path, 1, 'two')
    # A replica whose discovery is slow may lead before it hears the other (with a higher epoch; the other then
    # steps down): whoever leads once one follows the other is the leader here.
    following = ros.spin_until(
        lambda: next((n for n, p in replicas.items() if 'following leader' in p.output()), None),
        60,
        'one replica to follow the other',
    )
    leader_id = 'b' if following == 'a' else 'a'
    ros.spin_until(lambda: leases[-1].leader_id == leader_id, 30, f'{leader_id} to lead')
    first = replicas[leader_id]
    submit = node.create_client(SubmitCommand, topics.shard_submit(SITE, SHARD))
    ros.spin_until(submit.service_is_ready, 30, 'the submit service')
    ids: list[str] = []
    for index in range(5):
        # A replica that stepped down a moment ago may still answer 'not the leader; retry', as fleetctl is told.
        reply = ros.spin_until(lambda i=index: accepted(ros, submit, f'c-{i}'), 30, f'c-{index} accepted')
        ids += list(reply.command_ids)

    assert wait_exit_after_sigint(first) == 0
    output = first.output()
    for bad in ('FATAL', 'context is invalid', 'Traceback', 'Exception in'):
        assert bad not in output, output[-2000:]
    assert 'stepping down as leader' in output and 'closing the journal' in output
    ros.spin_until(lambda: leases[-1].leader_id == following, 30, 'the standby to lead')
    query = node.create_client(GetOutcomes, topics.shard_outcomes_query(SITE, SHARD))
    ros.spin_until(query.service_is_ready, 30, "the new leader's outcome service")

    def all_succeeded() -> bool:
        reply = ros.call(lambda: query.call_async(GetOutcomes.Request(command_ids=ids)), 20, 'GetOutcomes')
        return reply.leader_id == following and [o.outcome for o in reply.outcomes] == [Outcome.SUCCEEDED] * len(ids)

    ros.spin_until(all_succeeded, 60, 'every command of the stopped leader to succeed under the standby')
    assert max(Counter(e['command_id'] for e in read_log(log)).values()) == 1


def accepted(ros, client, request_id: str) -> SubmitCommand.Response | None:
    request = SubmitCommand.Request(kind='noop', args_json='{}', priority=1, ttl_sec=120.0, request_id=request_id)
    reply = ros.call(lambda: client.call_async(request), 20, 'a submit answer')  # a repeat gets the first answer
    if reply.accepted:
        return reply
    assert 'retry' in reply.error, reply.error
    resend_at = time.monotonic() + 0.2
    while time.monotonic() < resend_at:
        ros.spin_once(0.05)
    return None


def wait_exit_after_sigint(proc) -> int:
    proc.signal(signal.SIGINT)
    return wait_exit(proc, 15.0)


def test_a_lapse_is_told_from_a_standby_taking_a_live_lease():
    def lease(leader: str, epoch: int, at: float) -> LeaderLease:
        msg = LeaderLease(leader_id=leader, epoch=epoch)
        msg.stamp.sec, msg.stamp.nanosec = int(at), round((at % 1) * 1e9)
        return msg

    renewals = [lease('a', 100, 10.0), lease('a', 100, 10.25), lease('a', 100, 10.5)]
    assert lapsed_before_another_led([*renewals, lease('b', 101, 12.1)], 'a', 1.0)  # 1.6 s without a lease
    assert not lapsed_before_another_led([*renewals, lease('b', 101, 10.7)], 'a', 1.0)  # a's lease was live
    assert not lapsed_before_another_led(renewals, 'a', 1.0)  # nobody else led
