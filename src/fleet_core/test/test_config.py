from pathlib import Path

import pytest

from fleet_core.config import ConfigError, load_fleet_config, parse_fleet_config

REPO_CONFIG = Path(__file__).resolve().parents[3] / 'config' / 'fleet.yaml'


def test_the_shipped_config_loads_and_scales():
    fleet = load_fleet_config(REPO_CONFIG)
    assert fleet.agent_count == 200 and fleet.sites == ('site_a', 'site_b')
    assert fleet.shard('site_a', 'zone_1').agents[0] == 'a1_r001'
    assert load_fleet_config(REPO_CONFIG, scale_agents=500).agent_count == 500
    assert 0.0 <= fleet.tracing.sample_fraction <= 1.0
    assert fleet.intake.durability == 'normal'
    full = parse_fleet_config({'sites': {'a': {'shards': {'z': {'agents': ['r1']}}}}, 'intake': {'durability': 'full'}})
    assert full.intake.durability == 'full'


@pytest.mark.parametrize(
    ('raw', 'message'),
    [
        ({}, 'sites'),
        ({'sites': {}}, 'non-empty'),
        ({'sites': {'a': {'shards': {'z': {'agents': ['r1']}}}}, 'colour': 1}, 'unknown top-level'),
        ({'sites': {'a b': {'shards': {'z': {'agents': ['r1']}}}}}, 'sites.a b'),
        ({'sites': {'a': {'shards': {'z': {'agents': ['r1', 'r1']}}}}}, 'duplicate agent'),
        ({'sites': {'a': {'shards': {'z': {'agents': ['r1']}, 'y': {'agents': ['r1']}}}}}, "'r1' is in both"),
        ({'sites': {'a': {'shards': {'z': {'agents': {'prefix': 'r', 'count': 0}}}}}}, 'count'),
        (
            {'sites': {'a': {'shards': {'z': {'agents': ['r1']}}}}, 'dispatch': {'retry_budget': 'x'}},
            'dispatch.retry_budget',
        ),
        ({'sites': {'a': {'shards': {'z': {'agents': ['r1']}}}}, 'dispatch': {'retry_budget': -1}}, 'must be > 0'),
        ({'sites': {'a': {'shards': {'z': {'agents': ['r1']}}}}, 'dispatch': {'retries': 3}}, 'unknown key'),
        ({'sites': {'a': {'shards': {'z': {'agents': ['r1']}}}}, 'tracing': {'sample_fraction': 2}}, 'tracing'),
        (
            {'sites': {'a': {'shards': {'z': {'agents': ['r1']}}}}, 'intake': {'accept_ack_delay_sec': 0.6}},
            'accept_ack_delay_sec .* must be below dispatch.retry_initial_sec',
        ),
        (
            {'sites': {'a': {'shards': {'z': {'agents': ['r1']}}}}, 'intake': {'durability': 'fsync'}},
            'intake.durability',
        ),
        ({'sites': {'a': {'shards': {'z': {'agents': ['r1']}}}}, 'intake': {'durability': 1}}, 'intake.durability'),
    ],
)
def test_errors_name_the_file_and_key(raw, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_fleet_config(raw, 'fleet.yaml')
    assert 'fleet.yaml' in str(info.value) or message in ('sites',)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match='cannot read'):
        load_fleet_config(tmp_path / 'nope.yaml')
    bad = tmp_path / 'bad.yaml'
    bad.write_text('sites: [unclosed')
    with pytest.raises(ConfigError, match='invalid YAML'):
        load_fleet_config(bad)


def test_lookups_of_unknown_names_are_errors():
    fleet = parse_fleet_config({'sites': {'a': {'shards': {'z': {'agents': ['r1']}}}}})
    with pytest.raises(ConfigError, match='unknown site'):
        fleet.shards_of('b')
    with pytest.raises(ConfigError, match='no shard'):
        fleet.shard('a', 'y')
    with pytest.raises(ConfigError, match='unknown agent'):
        fleet.shard_of_agent('r9')
