import pytest

from fleet_core.config import ConfigError, parse_fleet_config
from fleet_core.routing import expand, route_targets

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
