"""Where simulated robots live: a deterministic dock grid per shard and inspection points around each dock."""

from __future__ import annotations

import math

from fleet_core.config import FleetConfig

DOCK_SPACING_M = 2.0
DOCKS_PER_ROW = 10
SHARD_GAP_M = 30.0
POINT_RADIUS_M = 4.0


def home_of(fleet: FleetConfig, agent_id: str) -> tuple[float, float]:
    """Dock position of `agent_id` in its site frame: shards side by side, docks on a grid inside each."""
    shard = fleet.shard_of_agent(agent_id)
    shard_index = [s.shard_id for s in fleet.shards_of(shard.site_id)].index(shard.shard_id)
    index = shard.agents.index(agent_id)
    return (
        shard_index * SHARD_GAP_M + (index % DOCKS_PER_ROW) * DOCK_SPACING_M,
        (index // DOCKS_PER_ROW) * DOCK_SPACING_M,
    )


def inspection_points(fleet: FleetConfig, agent_id: str, count: int) -> list[tuple[str, float, float]]:
    """`count` points (id, x, y) on a circle around the agent's dock; ids are unique fleet-wide."""
    hx, hy = home_of(fleet, agent_id)
    points = []
    for i in range(count):
        angle = 2 * math.pi * (i + 0.5) / max(1, count)
        points.append(
            (
                f'{agent_id}_p{i + 1}',
                round(hx + POINT_RADIUS_M * math.cos(angle), 3),
                round(hy + POINT_RADIUS_M * math.sin(angle), 3),
            )
        )
    return points
