"""fleetctl mission start|status|cancel: run a workflow (e.g. the inspection) over a site's shards.

`start` validates everything locally first (site, workflow file, points, no mission already running), then sends one
RunMission goal per shard and follows progress from the shards' TaskEvents, so it keeps following across a leader
failover (the new leader resumes the mission; only the action goal of the dead leader is lost)."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import yaml
from rclpy.action import ActionClient
from std_srvs.srv import Trigger

from fleet_cli import inputs
from fleet_cli.client import DISCOVERY_WAIT_SEC, ClientTimeout, FleetClient, load_config
from fleet_cli.main import EXIT_FAILED, EXIT_OK, UsageError
from fleet_core import topics
from fleet_core.config import ConfigError, FleetConfig, ShardConfig
from fleet_core.mission_follow import MissionFollower, ShardKey, is_active
from fleet_core.routing import split_by_shard
from fleet_core.workflow import Point, WorkflowError, load_workflow
from fleet_interfaces.action import RunMission
from fleet_interfaces.msg import TaskEvent
from fleet_ros import qos
from fleet_ros.mission_follow import follow_mission

POINT_SPACING_M = 2.0
REASON_WAIT_SEC = 2.0  # for a refusing shard's reason, a task event published right before the refusal


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser('mission', help='start, follow, inspect or cancel a mission')
    verbs = p.add_subparsers(dest='mission_verb', metavar='ACTION', required=True)
    start = verbs.add_parser('start', help='start a workflow on every shard of a site and show progress')
    start.add_argument('workflow', help='workflow name (config/workflows/<name>.yaml), e.g. inspection')
    start.add_argument('--site', required=True, help='site to run it on')
    start.add_argument('--shard', action='append', default=[], help='only these shards of the site (repeatable)')
    pts = start.add_mutually_exclusive_group(required=True)
    pts.add_argument('--points', type=int, help='generate N inspection points on a grid around the origin')
    pts.add_argument('--points-file', help='YAML/JSON list of {id, x, y} (or [id, x, y]) points')
    start.add_argument('--workflow-file', help='workflow YAML to validate (default: next to the fleet config)')
    start.add_argument('--mission-id', default='', help='mission id (default: a new UUID)')
    start.add_argument('--timeout', type=inputs.seconds, default=900.0, help='seconds to follow progress')
    start.add_argument('--no-wait', action='store_true', help='return once every shard accepted its goal')
    start.add_argument('--json', action='store_true', help='print the final per-shard summary as JSON lines')
    start.set_defaults(func=run_start)
    status = verbs.add_parser('status', help='the latest mission of every shard')
    status.add_argument('--site', action='append', default=[], help='site(s) (default: every site)')
    status.add_argument('--json', action='store_true')
    status.set_defaults(func=run_status)
    cancel = verbs.add_parser('cancel', help='cancel the running mission (agents return home and dock)')
    cancel.add_argument('--site', required=True)
    cancel.add_argument('--shard', action='append', default=[], help='only these shards (repeatable)')
    cancel.set_defaults(func=run_cancel)


# -- input ---------------------------------------------------------------------------------------------------


def grid_points(count: int) -> list[Point]:
    side = max(1, math.ceil(math.sqrt(count)))
    offset = (side - 1) * POINT_SPACING_M / 2.0
    return [
        Point(f'pt{i:04d}', (i % side) * POINT_SPACING_M - offset, (i // side) * POINT_SPACING_M - offset)
        for i in range(count)
    ]


def read_points(path: str) -> list[Point]:
    """Raises UsageError naming the file and the entry."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f'{path}: cannot read points: {exc.strerror}') from None
    except yaml.YAMLError as exc:
        raise UsageError(f'{path}: invalid YAML/JSON: {exc}') from None
    if isinstance(raw, dict) and 'points' in raw:
        raw = raw['points']
    if not isinstance(raw, list) or not raw:
        raise UsageError(f'{path}: expected a non-empty list of points')
    points: list[Point] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        try:
            if isinstance(item, dict):
                point = Point(str(item['id']), float(item['x']), float(item['y']))
            else:
                point = Point(str(item[0]), float(item[1]), float(item[2]))
        except (KeyError, IndexError, TypeError, ValueError):
            raise UsageError(f'{path}: point #{index + 1}: expected {{id, x, y}} or [id, x, y]') from None
        if not (math.isfinite(point.x) and math.isfinite(point.y)):
            raise UsageError(f'{path}: point {point.point_id!r}: coordinates must be finite')
        if point.point_id in seen:
            raise UsageError(f'{path}: point id {point.point_id!r} is listed twice')
        seen.add(point.point_id)
        points.append(point)
    return points


def _shards(fleet: FleetConfig, site: str, only: Sequence[str]) -> list[ShardConfig]:
    try:
        shards = list(fleet.shards_of(site))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if only:
        known = {s.shard_id for s in shards}
        unknown = [s for s in only if s not in known]
        if unknown:
            raise UsageError(f'site {site!r} has no shard(s) {", ".join(unknown)} (known: {", ".join(sorted(known))})')
        shards = [s for s in shards if s.shard_id in only]
    return shards


# -- following -----------------------------------------------------------------------------------------------


def progress_line(follower: MissionFollower) -> str:
    shards = follower.shards.values()
    done, total = follower.points()
    states = ' '.join(f'{shard}={p.label.lower()}' for (_site, shard), p in sorted(follower.shards.items()))
    lost = sum(len(p.lost) for p in shards)
    handoffs = sum(p.handoffs for p in shards)
    return f'{done}/{total} points  lost={lost} handoffs={handoffs}  {states}'


def latched_missions(client: FleetClient, keys: Sequence[ShardKey], wait: float) -> dict[ShardKey, TaskEvent]:
    """The latest mission status of each shard (absent when the shard never ran one or is unreachable)."""
    return client.latest_per_shard(TaskEvent, topics.shard_mission_status, keys, qos.LATCHED, wait)


# -- verbs ---------------------------------------------------------------------------------------------------


def run_start(args: argparse.Namespace) -> int:
    try:
        fleet = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    shards = _shards(fleet, args.site, args.shard)
    workflow_file = Path(args.workflow_file or Path(fleet.source).parent / 'workflows' / f'{args.workflow}.yaml')
    try:
        spec = load_workflow(workflow_file)
    except OSError as exc:
        raise UsageError(f'{workflow_file}: cannot read workflow {args.workflow!r}: {exc.strerror}') from None
    except WorkflowError as exc:
        raise UsageError(str(exc)) from None
    if spec.name != args.workflow:
        raise UsageError(f'{workflow_file}: defines workflow {spec.name!r}, not {args.workflow!r}')
    if args.points is not None:
        if args.points < 1:
            raise UsageError(f'--points must be >= 1, got {args.points}')
        points = grid_points(args.points)
    else:
        points = read_points(args.points_file)
    split = split_by_shard(points, shards)
    mission_id = args.mission_id or str(uuid.uuid4())
    keys = list(split)

    client = FleetClient('fleetctl_mission')
    try:
        running = {
            key: msg for key, msg in latched_missions(client, keys, DISCOVERY_WAIT_SEC).items() if is_active(msg.state)
        }
        if running:
            (site, shard), msg = sorted(running.items())[0]
            raise UsageError(
                f'mission {msg.mission_id} is {msg.state} on {site}/{shard}; cancel it first (fleetctl mission cancel)'
            )
        follower = MissionFollower(mission_id, keys)
        follow_mission(client.node, follower)
        accepted = _send_goals(client, mission_id, args.workflow, split, follower)
        if accepted is None:
            return EXIT_FAILED
        print(f'mission {mission_id}: {len(points)} points over {len(keys)} shard(s) of {args.site}', file=sys.stderr)
        if args.no_wait:
            print(mission_id)
            return EXIT_OK
        deadline = time.monotonic() + args.timeout
        last = ''
        while not follower.finished() and time.monotonic() < deadline:
            client.spin(0.2)
            line = progress_line(follower)
            if line != last:
                print(f'\r{line}', end='', file=sys.stderr, flush=True)
                last = line
        print(file=sys.stderr)
    except ClientTimeout as exc:
        print(f'fleetctl mission: {exc}', file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    return _report(mission_id, follower, args.json)


def _send_goals(
    client: FleetClient, mission_id: str, workflow: str, split: dict[ShardKey, list[Point]], follower: MissionFollower
) -> list[ShardKey] | None:
    """One goal per shard; if any shard refuses, the accepted ones are cancelled (no partial mission)."""
    clients = {key: ActionClient(client.node, RunMission, topics.shard_mission(*key)) for key in split}
    for key, action in clients.items():
        client.spin_until(action.server_is_ready, 10.0, f'the mission action of {key[0]}/{key[1]} (no leader?)')
    futures = {}
    for key, points in split.items():
        goal = RunMission.Goal(
            mission_id=mission_id,
            workflow=workflow,
            point_ids=[p.point_id for p in points],
            point_xy=[c for p in points for c in (p.x, p.y)],
        )
        futures[key] = clients[key].send_goal_async(goal)
    client.spin_until(lambda: all(f.done() for f in futures.values()), 10.0, 'goal responses')
    accepted = [key for key, f in futures.items() if f.result() is not None and f.result().accepted]
    refused = [key for key in split if key not in accepted]
    if not refused:
        return accepted
    with contextlib.suppress(ClientTimeout):  # a reason still missing is reported as such below
        client.spin_until(lambda: all(key in follower.rejections() for key in refused), REASON_WAIT_SEC, 'reasons')
    for site, shard in refused:
        reason = follower.rejections().get((site, shard), 'goal rejected (see the orchestrator log)')
        print(f'fleetctl mission: {site}/{shard} refused the mission: {reason}', file=sys.stderr)
    for site, shard in accepted:
        reply = client.call(Trigger, topics.shard_mission_cancel(site, shard), Trigger.Request())
        print(f'fleetctl mission: {site}/{shard}: rolled back: {reply.message}', file=sys.stderr)
    return None


def _report(mission_id: str, follower: MissionFollower, as_json: bool) -> int:
    rows = [
        {
            'site': site,
            'shard': shard,
            'mission_id': mission_id,
            'state': p.label,
            'points_done': p.points_done,
            'points_total': p.points_total,
            'detail': p.detail,
        }
        for (site, shard), p in sorted(follower.shards.items())
    ]
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(f'{"SHARD":<20} {"STATE":<10} {"POINTS":>9}  DETAIL')
        for row in rows:
            name = f'{row["site"]}/{row["shard"]}'
            print(f'{name:<20} {row["state"]:<10} {row["points_done"]:>4}/{row["points_total"]:<4}  {row["detail"]}')
    return EXIT_OK if follower.succeeded() else EXIT_FAILED


def _site_keys(fleet: FleetConfig, sites: Sequence[str]) -> list[ShardKey]:
    try:
        chosen = sites or fleet.sites
        return [(s.site_id, s.shard_id) for site in chosen for s in fleet.shards_of(site)]
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def run_status(args: argparse.Namespace) -> int:
    try:
        fleet = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    keys = _site_keys(fleet, args.site)
    client = FleetClient('fleetctl_mission')
    try:
        found = latched_missions(client, keys, DISCOVERY_WAIT_SEC)
    finally:
        client.close()
    rows = []
    for site, shard in keys:
        msg = found.get((site, shard))
        rows.append(
            {
                'site': site,
                'shard': shard,
                'mission_id': msg.mission_id if msg else '',
                'workflow': msg.workflow if msg else '',
                'state': msg.state if msg else 'NONE',
                'points_done': msg.points_done if msg else 0,
                'points_total': msg.points_total if msg else 0,
                'detail': msg.detail if msg else 'no mission seen (none run, or no leader reachable)',
            }
        )
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return EXIT_OK
    print(f'{"SHARD":<20} {"MISSION":<36} {"WORKFLOW":<11} {"STATE":<10} {"POINTS":>9}  DETAIL')
    for r in rows:
        name = f'{r["site"]}/{r["shard"]}'
        print(
            f'{name:<20} {r["mission_id"] or "-":<36} {r["workflow"] or "-":<11} '
            f'{r["state"]:<10} {r["points_done"]:>4}/{r["points_total"]:<4}  {r["detail"]}'
        )
    return EXIT_OK


def run_cancel(args: argparse.Namespace) -> int:
    try:
        fleet = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    keys = [(s.site_id, s.shard_id) for s in _shards(fleet, args.site, args.shard)]
    client = FleetClient('fleetctl_mission')
    cancelled = 0
    try:
        running = {k for k, m in latched_missions(client, keys, DISCOVERY_WAIT_SEC).items() if is_active(m.state)}
        if not running:
            raise UsageError(
                f'no mission is running on {args.site}' + (f' ({", ".join(args.shard)})' if args.shard else '')
            )
        for site, shard in sorted(running):
            reply = client.call(Trigger, topics.shard_mission_cancel(site, shard), Trigger.Request())
            print(f'{site}/{shard}: {reply.message}')
            cancelled += bool(reply.success)
    except ClientTimeout as exc:
        print(f'fleetctl mission cancel: {exc}', file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    return EXIT_OK if cancelled == len(running) else EXIT_FAILED
