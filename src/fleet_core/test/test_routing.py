import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_core.config import ConfigError, parse_fleet_config
from fleet_core.routing import expand, route_targets, split_by_shard
from fleet_core.workflow import Point

FLEET = parse_fleet_config(
    {
        'sites': {
            'a': {'shards': {'z1': {'agents': ['r1', 'r2']}, 'z2': {'agents': ['r3']}}},
            'b': {'shards': {'z1': {'agents': ['r4']}}},
        }
    }
)


def test_agents_are_grouped_by_owning_shard():
    assert route_targets(FLEET, agents=['r3', 'r1', 'r4']) == {
        ('a', 'z2'): ['r3'],
        ('a', 'z1'): ['r1'],
        ('b', 'z1'): ['r4'],
    }


def test_site_and_shard_targets_cover_whole_shards():
    routed = route_targets(FLEET, sites=['a'], agents=['r1'])
    assert routed == {('a', 'z1'): [], ('a', 'z2'): []}
    assert expand(FLEET, route_targets(FLEET, shards=['b/z1'])) == {('b', 'z1'): ['r4']}


@pytest.mark.parametrize(
    ('kwargs', 'message'),
    [
        ({'agents': ['ghost']}, 'unknown agent'),
        ({'sites': ['c']}, 'unknown site'),
        ({'shards': ['a/z9']}, 'no shard'),
        ({'shards': ['z1']}, 'site/shard'),
        ({}, 'no target'),
    ],
)
def test_unknown_targets_are_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        route_targets(FLEET, **kwargs)


# -- split_by_shard -------------------------------------------------------------------------------------------

WEIGHTED = parse_fleet_config(
    {
        'sites': {
            's': {
                'shards': {
                    'big': {'agents': ['a1', 'a2', 'a3']},
                    'small': {'agents': ['b1']},
                    'mid': {'agents': ['c1', 'c2']},
                }
            }
        }
    }
)


def circle(count: int) -> list[Point]:
    return [
        Point(f'p{i:03d}', 10 * math.cos(2 * math.pi * i / count), 10 * math.sin(2 * math.pi * i / count))
        for i in range(count)
    ]


def test_split_by_shard_sizes_follow_agent_counts_by_largest_remainder() -> None:
    shards = WEIGHTED.shards_of('s')
    split = split_by_shard(circle(13), shards)
    # quotas 6.5 / 2.17 / 4.33: floors 6+2+4 = 12, the one left over goes to the largest remainder (big)
    assert {key: len(points) for key, points in split.items()} == {('s', 'big'): 7, ('s', 'small'): 2, ('s', 'mid'): 4}
    assert list(split) == [('s', 'big'), ('s', 'small'), ('s', 'mid')]


@given(count=st.integers(min_value=0, max_value=60))
def test_split_by_shard_gives_every_point_to_exactly_one_shard(count: int) -> None:
    points = circle(count) if count else []
    split = split_by_shard(points, WEIGHTED.shards_of('s'))
    handed = [p.point_id for chunk in split.values() for p in chunk]
    assert sorted(handed) == sorted(p.point_id for p in points)
    for chunk, shard in zip(split.values(), WEIGHTED.shards_of('s'), strict=True):
        assert abs(len(chunk) - count * len(shard.agents) / 6) < 1


def test_split_by_shard_gives_each_shard_a_contiguous_sector() -> None:
    ring = circle(12)
    split = split_by_shard(ring[::2] + ring[1::2], WEIGHTED.shards_of('s'))  # given out of angular order
    for chunk in split.values():
        angles = sorted(int(p.point_id[1:]) for p in chunk)
        # consecutive indices on the circle (modulo wrap-around) form one sector
        gaps = sum(1 for a, b in zip(angles, [*angles[1:], angles[0] + 12], strict=True) if b - a != 1)
        assert gaps <= 1


def test_split_by_shard_needs_a_shard_for_points() -> None:
    with pytest.raises(ConfigError, match='no shard'):
        split_by_shard(circle(3), [])
    assert split_by_shard([], []) == {}
