"""fleet_core.topics: every shard and agent name is classified once, and the access lists built from that
classification cover every name a builder makes (a new control topic cannot be left out of the gateway's)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

from fleet_core import topics
from fleet_gateway import acl

SITE, SHARD, AGENT = 'site_a', 'zone_1', 'robot_007'


def _builders(prefix: str) -> dict[str, Callable[[str, str], str]]:
    """Every public `<prefix>*` function of topics.py taking (site, shard|agent): the names the fleet uses."""
    found: dict[str, Callable[[str, str], str]] = {}
    for name, fn in inspect.getmembers(topics, inspect.isfunction):
        if name.startswith(prefix) and fn.__module__ == topics.__name__:
            params = list(inspect.signature(fn).parameters)
            if params in (['site', 'shard'], ['site', 'agent']):
                found[name] = fn
    return found


SHARD_BUILDERS = {
    name: fn for name, fn in _builders('shard_').items() if name != 'shard_prefix'
}  # shard_prefix is the namespace, not a name
AGENT_BUILDERS = {name: fn for name, fn in _builders('agent_').items() if name != 'agent_namespace'}

SHARD_CLASSES = {
    'control topic': topics.SHARD_CONTROL_TOPICS,
    'record topic': topics.SHARD_RECORD_TOPICS,
    'service': topics.SHARD_SERVICES,
    'action': topics.SHARD_ACTIONS,
}
AGENT_CLASSES = {'control topic': topics.AGENT_CONTROL_TOPICS, 'telemetry topic': topics.AGENT_TELEMETRY_TOPICS}


def _leaf(name: str, prefix: str) -> str:
    assert name.startswith(prefix + '/'), f'{name} is not under {prefix}'
    return name[len(prefix) + 1 :]


def test_the_builders_are_found() -> None:
    # The introspection below must see the builders, or every other test here would pass on nothing.
    assert {'shard_ack', 'shard_journal', 'shard_submit', 'shard_mission', 'shard_trace'} <= set(SHARD_BUILDERS)
    assert {'agent_command', 'agent_odom'} <= set(AGENT_BUILDERS)


@pytest.mark.parametrize('name', sorted(SHARD_BUILDERS))
def test_every_shard_name_is_classified_exactly_once(name: str) -> None:
    leaf = _leaf(SHARD_BUILDERS[name](SITE, SHARD), topics.shard_prefix(SITE, SHARD))
    classes = [kind for kind, leaves in SHARD_CLASSES.items() if leaf in leaves]
    assert len(classes) == 1, (
        f'topics.{name} builds the leaf {leaf!r}, classified as {classes or "nothing"}: add it to exactly one of '
        'SHARD_CONTROL_TOPICS (anything in the fleet acts on it), SHARD_RECORD_TOPICS, SHARD_SERVICES, SHARD_ACTIONS'
    )


@pytest.mark.parametrize('name', sorted(AGENT_BUILDERS))
def test_every_agent_name_is_classified_exactly_once(name: str) -> None:
    leaf = _leaf(AGENT_BUILDERS[name](SITE, AGENT), topics.agent_namespace(SITE, AGENT))
    classes = [kind for kind, leaves in AGENT_CLASSES.items() if leaf in leaves]
    assert len(classes) == 1, f'topics.{name} builds {leaf!r}, classified as {classes or "nothing"}'


def test_every_classified_leaf_has_a_builder() -> None:
    built_shard = {_leaf(fn(SITE, SHARD), topics.shard_prefix(SITE, SHARD)) for fn in SHARD_BUILDERS.values()}
    built_agent = {_leaf(fn(SITE, AGENT), topics.agent_namespace(SITE, AGENT)) for fn in AGENT_BUILDERS.values()}
    for leaves in SHARD_CLASSES.values():
        assert set(leaves) <= built_shard
    for leaves in AGENT_CLASSES.values():
        assert set(leaves) <= built_agent
    assert set(topics.SHARD_SAFETY_TOPICS) <= set(topics.SHARD_CONTROL_TOPICS)
    assert set(topics.SHARD_OPERATOR_SERVICES) <= set(topics.SHARD_SERVICES)


def _covered(globs: tuple[str, ...], name: str) -> bool:
    return acl.GlobSet(globs).matches(name)


@pytest.mark.parametrize('name', sorted(SHARD_BUILDERS))
def test_the_gateway_control_sets_cover_every_control_name(name: str) -> None:
    built = SHARD_BUILDERS[name](SITE, SHARD)
    leaf = _leaf(built, topics.shard_prefix(SITE, SHARD))
    if leaf in topics.SHARD_CONTROL_TOPICS:
        assert _covered(acl.CONTROL_TOPICS, built), f'{built} (topics.{name}) is missing from acl.CONTROL_TOPICS'
    elif leaf in topics.SHARD_SERVICES:
        assert _covered(acl.CONTROL_SERVICES, built), f'{built} (topics.{name}) is missing from acl.CONTROL_SERVICES'
    elif leaf in topics.SHARD_ACTIONS:
        assert _covered(acl.CONTROL_ACTIONS, built), f'{built} (topics.{name}) is missing from acl.CONTROL_ACTIONS'
    else:
        # Record streams stay open to relays that are granted them: nothing acts on them.
        assert not _covered(acl.CONTROL_TOPICS, built)
    if leaf in topics.SHARD_SAFETY_TOPICS:
        assert _covered(acl.PROTECTED_TOPICS, built), f'{built} (topics.{name}) is missing from acl.PROTECTED_TOPICS'


@pytest.mark.parametrize('name', sorted(AGENT_BUILDERS))
def test_the_gateway_protects_every_agent_control_topic(name: str) -> None:
    built = AGENT_BUILDERS[name](SITE, AGENT)
    is_control = _leaf(built, topics.agent_namespace(SITE, AGENT)) in topics.AGENT_CONTROL_TOPICS
    assert _covered(acl.CONTROL_TOPICS, built) is is_control
    assert _covered(acl.PROTECTED_TOPICS, built) is is_control


def test_a_relay_granted_everything_still_cannot_touch_a_control_name() -> None:
    everything = acl.GlobSet(['/**'])
    relay = acl.RolePolicy(
        acl.Role.SITE_LINK,
        everything,
        everything,
        everything,
        everything,
        everything,
        send_action_goal=everything,
        advertise_action=everything,
    )
    protected = acl.GlobSet(acl.PROTECTED_TOPICS)
    for fn in SHARD_BUILDERS.values():
        built = fn(SITE, SHARD)
        leaf = _leaf(built, topics.shard_prefix(SITE, SHARD))
        if leaf in topics.SHARD_CONTROL_TOPICS:
            assert not relay.allows(acl.Action.PUBLISH, built, protected=protected), built
        if leaf in topics.SHARD_SERVICES:
            assert not relay.allows(acl.Action.CALL_SERVICE, built, protected=protected), built
            assert not relay.allows(acl.Action.ADVERTISE_SERVICE, built, protected=protected), built
        if leaf in topics.SHARD_ACTIONS:
            assert not relay.allows(acl.Action.SEND_ACTION_GOAL, built, protected=protected), built
            assert not relay.allows(acl.Action.ADVERTISE_ACTION, built, protected=protected), built
        if leaf in topics.SHARD_RECORD_TOPICS:
            assert relay.allows(acl.Action.PUBLISH, built, protected=protected), built
    assert not relay.allows(acl.Action.PUBLISH, topics.agent_command(SITE, AGENT), protected=protected)


@pytest.mark.parametrize(
    ('pattern', 'name', 'matches'),
    [
        (topics.shards_glob(topics.ACK), topics.shard_ack(SITE, SHARD), True),
        (topics.shards_glob(topics.ACK), topics.shard_outcome(SITE, SHARD), False),
        (topics.shards_glob(topics.ACK), '/fleet/site_a/zone_1/extra/ack', False),
        (topics.agents_glob(topics.COMMAND), topics.agent_command(SITE, AGENT), True),
        (topics.agents_glob(topics.COMMAND), topics.shard_ack(SITE, SHARD), False),
        (topics.FLEET_GLOB, topics.shard_journal(SITE, SHARD), True),
        (topics.FLEET_GLOB, topics.FOXGLOVE_LOGIN, True),
        (topics.FLEET_GLOB, topics.agent_odom(SITE, AGENT), False),
        ('/fleet/site_?/*/ack', topics.shard_ack(SITE, SHARD), True),
        ('/fleet/site_?/*/ack', topics.shard_ack('site_ab', SHARD), False),
    ],
)
def test_glob_syntax(pattern: str, name: str, matches: bool) -> None:
    assert bool(topics.compile_glob(pattern).match(name)) is matches


def test_a_glob_leaf_must_be_a_name_token() -> None:
    with pytest.raises(topics.InvalidName, match='name leaf'):
        topics.shards_glob('ack/../journal')
    with pytest.raises(topics.InvalidName, match='name leaf'):
        topics.agents_glob('*')


@pytest.mark.parametrize('name', sorted(SHARD_BUILDERS))
def test_every_shard_name_parses_back(name: str) -> None:
    built = SHARD_BUILDERS[name](SITE, SHARD)
    assert topics.parse_shard_name(built) == (SITE, SHARD, _leaf(built, topics.shard_prefix(SITE, SHARD)))


@pytest.mark.parametrize(
    'name',
    [
        topics.agent_command(SITE, AGENT),
        topics.shard_prefix(SITE, SHARD),
        '/fleet/site_a/zone_1/mission/_action/feedback',
        '/fleet//zone_1/ack',
        'fleet/site_a/zone_1/ack',
        '/other/site_a/zone_1/ack',
        topics.FOXGLOVE_LOGIN,
    ],
)
def test_other_names_are_not_shard_names(name: str) -> None:
    assert topics.parse_shard_name(name) is None


def _documented_shard_names() -> dict[str, str]:
    """leaf -> 'topic' | 'service' | 'action', from the names table of fleet_interfaces/README.md."""
    readme = Path(__file__).resolve().parents[2] / 'fleet_interfaces' / 'README.md'
    documented: dict[str, str] = {}
    for line in readme.read_text().splitlines():
        cells = [cell.strip() for cell in line.split('|')]
        if len(cells) < 4 or not cells[1].startswith('`/fleet/<site>/<shard>/'):
            continue
        leaf = cells[1].strip('`').rsplit('/', 1)[1]
        kind = 'service' if '(service)' in cells[2] else 'action' if '(action)' in cells[2] else 'topic'
        documented[leaf] = kind
    return documented


def test_every_shard_name_is_documented_as_what_it_is() -> None:
    """The interfaces README says which names are services and actions; the classification that access lists are
    built from must agree (a service classified as a topic would let a relay call it)."""
    documented = _documented_shard_names()
    built = {_leaf(fn(SITE, SHARD), topics.shard_prefix(SITE, SHARD)) for fn in SHARD_BUILDERS.values()}
    assert built == set(documented), 'fleet_interfaces/README.md and topics.py name different shard names'
    kinds = {'service': topics.SHARD_SERVICES, 'action': topics.SHARD_ACTIONS}
    for leaf, kind in documented.items():
        if kind == 'topic':
            assert leaf in topics.SHARD_CONTROL_TOPICS + topics.SHARD_RECORD_TOPICS, leaf
        else:
            assert leaf in kinds[kind], f'{leaf} is documented as a {kind}'
