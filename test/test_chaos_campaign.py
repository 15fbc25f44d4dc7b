"""The chaos campaign, small: two seeds of bench/chaos_campaign.py (network-namespace hosts as root, loopback
processes otherwise) whose schedules between them kill a leader (hot takeover), kill both replicas and cold-restart
them on their journals, cut links, kill and restart a robot host, replay deliveries and skew a clock. Every
announced outcome is judged against the robots' execution logs by fleet_core.history: no command lost, no wrong or
conflicting outcome, none executed twice, late or fenced, and a hot takeover within 2 s.

The pure parts (schedules drawn from the seed, execution logs read as executions) are checked first, fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet_core.config import IntakeSettings
from fleet_core.history import ExecResult, ViolationKind
from fleet_sim.campaign import (
    ACTIVE_MARK,
    LINK_OPS,
    ORCHESTRATOR_OPS,
    OTHER_OPS,
    Schedule,
    campaign_line,
    cold_start_interrupted,
    draw_schedule,
    executions_from_logs,
    first_mark_after,
    judge,
)
from fleet_sim.campaign_rig import HOSTS, CampaignOptions, SeedRig
from fleet_sim.netns import can_create_namespaces

SHARDS = ['site_c/zone_1']
TOLERANCE = IntakeSettings().clock_skew_tolerance_sec
SEEDS = (2, 3)
"""Seed 2 kills both replicas (cold restart); seed 3 kills the leader (hot takeover) and later both."""
MAX_TAKEOVER_S = 4.0
"""A hot takeover is the standby leading about one lease after the leader's death. The 2 s target is the benchmark's
(`bench/chaos_campaign.py --seeds 20`, measured on a quiet machine); this bound, twice that, only catches a standby
that did not take over hot, and leaves room for a test machine busy with other work (2.03 s seen at load 14)."""


def schedule(seed: int, one_way: bool = True) -> Schedule:
    return draw_schedule(
        seed, window_sec=20.0, shards=SHARDS, hosts=HOSTS, one_way_cuts=one_way, skew_limit_sec=TOLERANCE
    )


def test_a_seed_always_draws_the_same_schedule_and_the_seeds_cover_every_fault() -> None:
    assert schedule(5) == schedule(5)
    assert Schedule.from_json(schedule(5).to_json()) == schedule(5)
    assert schedule(5) != schedule(6)
    seen = {e.op for seed in range(1, 7) for e in schedule(seed).events}
    assert seen == set(ORCHESTRATOR_OPS) | set(LINK_OPS) | set(OTHER_OPS)
    assert {e.op for seed in range(1, 7) for e in schedule(seed, one_way=False).events} & {'cut_in', 'cut_out'} == set()
    for seed in range(1, 30):
        events = schedule(seed).events
        assert any(e.op in ORCHESTRATOR_OPS for e in events), seed
        assert all(abs(e.value) < TOLERANCE for e in events if e.op == 'skew'), seed
        assert all(0 < e.at < 20.0 for e in events), seed


def _start(agent: str, command: str, epoch: int, wall: float, deadline: float) -> dict[str, object]:
    return {
        'ev': 'start', 'host': 'r1', 'pid': 1, 'agent': agent, 'command_id': command, 'kind': 'noop', 'seq': 1,
        'epoch': epoch, 'attempt': 1, 'deadline': deadline, 'wall': wall, 'agent_clock': wall,
    }  # fmt: skip


def test_the_cold_election_is_timed_from_the_first_activation_after_the_restart() -> None:
    log = [
        '[INFO] [100.500000000] [site_c.zone_1.orchestrator_a]: active: eligible to lead; leading once ...',
        '[INFO] [130.250000000] [site_c.zone_1.orchestrator_a]: configured for site_c/zone_1 (12 agents) ...',
        '[INFO] [131.750000000] [site_c.zone_1.orchestrator_a]: active: eligible to lead; leading once ...',
        '[INFO] [140.000000000] [site_c.zone_1.orchestrator_a]: active: eligible to lead; leading once ...',
    ]
    assert first_mark_after(log, ACTIVE_MARK, 130.0) == 131.75  # this start's, not the earlier process's
    assert first_mark_after(log, ACTIVE_MARK, 0.0) == 100.5
    assert first_mark_after(log, ACTIVE_MARK, 141.0) is None


def test_a_cold_restart_killed_again_before_any_lease_is_not_timed() -> None:
    assert not cold_start_interrupted(100.0, 5.0, None)  # the only restart
    assert not cold_start_interrupted(100.0, 5.0, 110.0)  # led before the next restart
    assert cold_start_interrupted(100.0, 21.0, 110.0)  # the first lease came after the next restart
    assert cold_start_interrupted(100.0, None, 110.0)


def test_execution_logs_become_executions_that_the_checker_judges(tmp_path: Path) -> None:
    log = tmp_path / 'exec-r1.jsonl'
    records = [
        _start('a1', 'c1', 100, 10.0, 20.0),
        {'ev': 'end', 'agent': 'a1', 'command_id': 'c1', 'wall': 11.0, 'status': 'SUCCEEDED'},
        _start('a1', 'c2', 100, 12.0, 20.0),  # its host was killed: no end
        _start('a2', 'c3', 101, 30.0, 20.0),  # started after its deadline
        _start('a2', 'c4', 100, 13.0, 20.0),
        _start('a2', 'c4', 101, 14.0, 20.0),  # a second start of one command
    ]
    log.write_text('\n'.join(json.dumps(r) for r in records) + '\n{"ev": "sta')  # a line cut by SIGKILL
    executions = executions_from_logs([log])
    assert [(e.command_id, e.result) for e in executions] == [
        ('c1', ExecResult.SUCCEEDED),
        ('c2', ExecResult.UNKNOWN),
        ('c3', ExecResult.UNKNOWN),
        ('c4', ExecResult.UNKNOWN),
        ('c4', ExecResult.UNKNOWN),
    ]
    found = {
        'submissions': [['c1', 'a1'], ['c2', 'a1'], ['c3', 'a2'], ['c4', 'a2'], ['c5', 'a2']],
        'announcements': [
            ['c1', 'a1', 0, '', 11.0, 'topic'],
            ['c2', 'a1', 3, 'rejected', 12.0, 'service'],  # REJECTED, but it ran
            ['c3', 'a2', 1, '', 31.0, 'topic'],
            ['c4', 'a2', 0, '', 15.0, 'topic'],
        ],
    }
    verdict = judge(found, [log], TOLERANCE)
    kinds = sorted((v.command_id, v.kind.value) for v in verdict.violations)
    assert kinds == [
        ('c2', ViolationKind.WRONG_OUTCOME.value),
        ('c3', ViolationKind.LATE_EXECUTION.value),
        ('c4', ViolationKind.DOUBLE_EXECUTION.value),
        ('c5', ViolationKind.MISSING_OUTCOME.value),
    ]


@pytest.mark.system
@pytest.mark.netns
@pytest.mark.timeout(600)
def test_two_campaign_seeds_keep_every_outcome_true(tmp_path: Path, ros_env: dict[str, str]) -> None:
    netns = not can_create_namespaces()
    options = CampaignOptions(window_sec=20.0, netns=netns)
    results = []
    for seed in SEEDS:
        work = tmp_path / f'seed-{seed}'
        work.mkdir()
        drawn = schedule(seed, one_way=netns)
        results.append(SeedRig(seed, drawn, options, work, int(ros_env['ROS_DOMAIN_ID']), log=lambda _m: None).run())
    line = campaign_line(results, hosts='netns' if netns else 'loopback', extra={})
    report = json.dumps(line, indent=1) + '\n' + '\n'.join(n for r in results for n in r.notes)
    assert line['commands'] >= 100 and line['executions'] >= 50, report  # the history is not trivially empty
    for key in ('lost', 'wrong_outcomes', 'double_executions', 'stale_executions'):
        assert line[key] == 0, f'{key}:\n{report}'
    assert line['violations'] == [], report
    assert line['takeovers'] >= 1, f'no hot takeover was measured:\n{report}'
    assert line['max_takeover_s'] <= MAX_TAKEOVER_S, report
    assert line['leader_changes'] >= 2, report
