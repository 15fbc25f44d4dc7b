"""Sticky routing of operator targets to shards: every agent belongs to exactly one shard, and a command to N
agents becomes one submission per owning shard, never a global broadcast."""

from __future__ import annotations

import math
from collections.abc import Sequence

from fleet_core.config import ConfigError, FleetConfig, ShardConfig
from fleet_core.mission import angular_sweep
from fleet_core.workflow import Point

ShardKey = tuple[str, str]


def route_targets(
    fleet: FleetConfig, *, agents: Sequence[str] = (), shards: Sequence[str] = (), sites: Sequence[str] = ()
) -> dict[ShardKey, list[str]]:
    """Group the targeted agents by (site, shard). `shards` are 'site/shard' strings. An empty list for a shard
    means every agent of it. Raises ConfigError naming the first unknown target; an empty selection is an error."""
    routed: dict[ShardKey, list[str]] = {}
    for site in sites:
        for shard in fleet.shards_of(site):
            routed[(shard.site_id, shard.shard_id)] = []
    for name in shards:
        site, sep, shard_id = name.partition('/')
        if not sep:
            raise ConfigError(f"shard {name!r}: expected 'site/shard'")
        shard = fleet.shard(site, shard_id)
        routed[(shard.site_id, shard.shard_id)] = []
    for agent in agents:
        shard = fleet.shard_of_agent(agent)
        key = (shard.site_id, shard.shard_id)
        if key in routed and not routed[key]:
            continue  # the whole shard is already targeted
        routed.setdefault(key, []).append(agent)
    if not routed:
        raise ConfigError('no target: give --agents, --shard or --site')
    return routed


def expand(fleet: FleetConfig, routed: dict[ShardKey, list[str]]) -> dict[ShardKey, list[str]]:
    """The explicit agent list per shard (an empty list means the whole shard)."""
    return {key: list(agents) or list(fleet.shard(*key).agents) for key, agents in routed.items()}


def split_by_shard(points: Sequence[Point], shards: Sequence[ShardConfig]) -> dict[ShardKey, list[Point]]:
    """A mission's points split among shards: contiguous runs of the angular sweep (each shard gets a region),
    sized in proportion to each shard's agents by largest remainder (ties to the earlier shard), so the sizes add
    up to len(points). Shards are keyed in the given order. Raises ConfigError when there are points but no shards."""
    if points and not shards:
        raise ConfigError(f'no shard to run {len(points)} points on')
    swept = angular_sweep(points)
    weights = [len(shard.agents) for shard in shards]
    if not any(weights):
        weights = [1] * len(shards)
    total = sum(weights)
    quotas = [len(swept) * weight / total for weight in weights]
    sizes = [math.floor(quota) for quota in quotas]
    short = len(swept) - sum(sizes)
    for index in sorted(range(len(shards)), key=lambda i: quotas[i] - sizes[i], reverse=True)[:short]:
        sizes[index] += 1
    result: dict[ShardKey, list[Point]] = {}
    start = 0
    for shard, size in zip(shards, sizes, strict=True):
        result[(shard.site_id, shard.shard_id)] = swept[start : start + size]
        start += size
    return result
