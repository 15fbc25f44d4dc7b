"""Randomized chaos campaign (G1-G3, G7 under every failure a site has): each seed draws a fault schedule from the
seed (leader kill, standby kill, both killed then a cold restart on their journals, a late standby, link cuts both
ways and one way, a robot host killed and restarted, duplicated and reordered deliveries, clock skew inside the
tolerance) over network-namespace hosts when run as root, loopback processes otherwise; commands with request_ids
and the inspection mission run throughout; at the end the outcome-truth checker (fleet_core.history) judges every
announced outcome against the robots' execution logs.

Prints one JSON line: seeds, commands, executions, lost, wrong_outcomes, double_executions, stale_executions,
leader_changes, max_takeover_s (leader SIGKILL -> the standby's lease, hot takeovers only; cold restarts are in
max_cold_start_s: restart -> first lease, process start included, and max_cold_election_s: the first restarted
replica's activation -> first lease), violations (list), hosts (netns|loopback), failing_seeds (their
schedules). Progress and the schedule of every failing seed go to stderr; re-run one with --seed S.

Run: python bench/chaos_campaign.py --seeds 20 (environment active; root for namespaces)."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from fleet_core.config import IntakeSettings
from fleet_ros.domains import claim_domain_id
from fleet_ros.processes import let_sigint_reach_children
from fleet_sim.campaign import SeedResult, campaign_line, draw_schedule
from fleet_sim.campaign_rig import HOSTS, CampaignOptions, SeedRig
from fleet_sim.netns import can_create_namespaces


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--seeds', type=int, default=None, help='number of seeds (default 20, or 1 with --seed)')
    parser.add_argument('--seed', type=int, default=1, help='first seed (re-run a failing seed with --seed S)')
    parser.add_argument('--duration', type=float, default=30.0, help='fault window of each seed (s)')
    parser.add_argument('--agents', type=int, default=12, help='robots (split over 2 simulator hosts)')
    parser.add_argument('--shards', type=int, default=1, choices=(1, 2))
    parser.add_argument('--rate', type=float, default=1.5, help='command submissions per second and shard')
    parser.add_argument('--loopback', action='store_true', help='loopback processes even as root')
    parser.add_argument('--keep', action='store_true', help='keep every seed work directory (failing ones are kept)')
    parser.add_argument('--stop-on-failure', action='store_true', help='stop after the first failing seed')
    parser.add_argument('--timeout', type=float, default=3600.0, help='overall bound (s): no new seed after it')
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = 20 if '--seed' not in (argv or sys.argv) else 1
    if args.seeds < 1 or args.duration < 15:
        parser.error('--seeds must be >= 1 and --duration >= 15')
    return args


def log(message: str) -> None:
    print(f'[chaos_campaign {time.strftime("%H:%M:%S")}] {message}', file=sys.stderr, flush=True)


def run_campaign(args: argparse.Namespace, domain_id: int) -> dict[str, object]:
    reason = '' if not args.loopback else 'loopback requested'
    if not reason:
        reason = can_create_namespaces()
    netns = not reason
    if not netns:
        log(f'loopback processes: {reason}')
    options = CampaignOptions(
        agents=args.agents, shards=args.shards, window_sec=args.duration, rate=args.rate, netns=netns, keep=args.keep
    )
    shards = [f'site_c/zone_{i + 1}' for i in range(args.shards)]
    tolerance = IntakeSettings().clock_skew_tolerance_sec
    results: list[SeedResult] = []
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix='chaos-campaign-'))
    for seed in range(args.seed, args.seed + args.seeds):
        if time.monotonic() - started > args.timeout:
            log(f'overall timeout: stopping before seed {seed}')
            break
        schedule = draw_schedule(
            seed, window_sec=args.duration, shards=shards, hosts=HOSTS, one_way_cuts=netns, skew_limit_sec=tolerance
        )
        work = root / f'seed-{seed}'
        work.mkdir()
        log(f'seed {seed}: ' + '; '.join(schedule.lines()))
        result = SeedRig(seed, schedule, options, work, domain_id, log).run()
        results.append(result)
        log(
            f'seed {seed}: {result.commands} commands, {result.executions} executions, '
            f'{len(result.violations)} violation(s), takeovers {[round(t, 2) for t in result.takeovers_s]}, '
            f'cold starts {[round(t, 2) for t in result.cold_starts_s]} '
            f'(election from activation {[round(t, 2) for t in result.cold_elections_s]}), '
            f'{len(result.unqueryable)} outcome(s) not queryable at the end, {result.elapsed_s:.0f}s'
        )
        for note in result.notes:
            log(f'seed {seed} note: {note}')
        if result.failed:
            log(f'seed {seed} FAILED (re-run: python bench/chaos_campaign.py --seed {seed}); schedule:')
            for line in schedule.lines():
                log(f'    {line}')
            for violation in result.violations[:20]:
                log(f'    violation: {violation["kind"]}: {violation["detail"]}')
            log(f'    work directory kept: {work}')
            if args.stop_on_failure:
                break
        elif not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if not any(r.failed for r in results) and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return campaign_line(
        results,
        hosts='netns' if netns else 'loopback',
        extra={'window_s': args.duration, 'agents': args.agents, 'shards': args.shards, 'work_dir': str(root)},
    )


def tree_state() -> dict[str, object]:
    """The commit the campaign ran and the product files that differed from it (a shared working tree)."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        done = subprocess.run(['git', '-C', str(repo), *args], capture_output=True, text=True, timeout=10, check=False)
        return done.stdout.rstrip()

    changed = [line[3:] for line in git('status', '--porcelain', '--', 'src').splitlines() if line[:2] != '??']
    return {'commit': git('rev-parse', '--short', 'HEAD').strip(), 'uncommitted_src_files': changed}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    let_sigint_reach_children()

    def on_term(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwinds through every seed's cleanup (processes by PID, namespaces)

    signal.signal(signal.SIGTERM, on_term)
    domain_id, lock = claim_domain_id()
    try:
        tree = tree_state()
        line = run_campaign(args, domain_id)
        line['tree'] = tree
    finally:
        lock.close()
    print(json.dumps(line), flush=True)
    violations = line['violations']
    return 1 if violations else 0


if __name__ == '__main__':
    sys.exit(main())
