import enum
from dataclasses import dataclass, field

import pytest

from fleet_core import yaml_config
from fleet_core.yaml_config import YamlConfigError


class Colour(enum.Enum):
    RED = 'red'
    BLUE = 'blue'


@dataclass(frozen=True)
class Inner:
    depth: int = 1


class OwnError(ValueError):
    pass


@dataclass(frozen=True)
class Sample:
    count: int = 3
    rate: float = 1.5
    name: str = 'x'
    enabled: bool = False
    factors: tuple[float, ...] = (1.0, 0.5)
    colour: Colour = Colour.RED
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.name == 'forbidden':
            raise OwnError('name: forbidden')


class OtherError(ValueError):
    pass


def test_builds_typed_values_and_keeps_defaults():
    built = yaml_config.build(
        Sample,
        {'rate': 2, 'enabled': True, 'factors': [1, 0.25], 'colour': 'blue', 'inner': {'depth': 4}},
        'f.yaml',
        'sec',
    )
    assert built == Sample(rate=2.0, enabled=True, factors=(1.0, 0.25), colour=Colour.BLUE, inner=Inner(4))
    assert type(built.rate) is float and type(built.factors[0]) is float
    assert yaml_config.build(Sample, None, 'f.yaml', 'sec') == Sample()


@pytest.mark.parametrize(
    ('raw', 'message'),
    [
        ({'cnt': 1}, r'^f\.yaml: sec\.cnt: unknown key \(known: colour, count, enabled, factors, inner, name, rate\)$'),
        ({'count': 1.5}, r'^f\.yaml: sec\.count: expected an integer, got 1\.5$'),
        ({'count': True}, r'^f\.yaml: sec\.count: expected an integer'),
        ({'rate': 'fast'}, r'^f\.yaml: sec\.rate: expected a number'),
        ({'rate': False}, r'^f\.yaml: sec\.rate: expected a number'),
        ({'name': 3}, r'^f\.yaml: sec\.name: expected a string'),
        ({'enabled': 1}, r'^f\.yaml: sec\.enabled: expected true or false'),
        ({'factors': 1.0}, r'^f\.yaml: sec\.factors: expected a list'),
        ({'factors': [1.0, 'x']}, r'^f\.yaml: sec\.factors\[1\]: expected a number'),
        ({'colour': 'green'}, r'^f\.yaml: sec\.colour: expected one of red, blue'),
        ({'inner': {'depth': 'deep'}}, r'^f\.yaml: sec\.inner\.depth: expected an integer'),
        ({'inner': 3}, r'^f\.yaml: sec\.inner: expected a mapping, got int$'),
    ],
)
def test_errors_name_the_file_and_the_dotted_key(raw, message):
    with pytest.raises(OtherError, match=message):
        yaml_config.build(Sample, raw, 'f.yaml', 'sec', OtherError)


def test_a_flat_mapping_names_the_key_alone_and_a_non_mapping_names_the_section():
    with pytest.raises(YamlConfigError, match=r'^f\.yaml: count: expected an integer'):
        yaml_config.build(Sample, {'count': 'x'}, 'f.yaml', '')
    with pytest.raises(YamlConfigError, match=r'^f\.yaml: sec: expected a mapping, got list$'):
        yaml_config.build(Sample, [1], 'f.yaml', 'sec')


def test_the_validator_sees_each_given_value_and_its_problem_names_the_key():
    seen = []

    def validate(key, value):
        seen.append((key, value))
        return 'too many' if key == 'count' and value > 5 else None

    assert yaml_config.build(Sample, {'count': 5, 'rate': 3}, 'f.yaml', 'sec', validate=validate).count == 5
    assert seen == [('count', 5), ('rate', 3.0)]
    with pytest.raises(YamlConfigError, match=r'^f\.yaml: sec\.count: too many$'):
        yaml_config.build(Sample, {'count': 6}, 'f.yaml', 'sec', validate=validate)


def test_positive_and_non_negative_validators():
    assert yaml_config.positive('k', 0.1) is None and yaml_config.positive('k', 'text') is None
    assert yaml_config.positive('k', 0) == 'must be > 0, got 0'
    assert yaml_config.positive('k', float('nan')) is not None
    assert yaml_config.non_negative('k', 0) is None
    assert yaml_config.non_negative('k', -1) == 'must be >= 0, got -1'


def test_without_a_file_name_messages_start_with_the_key():
    with pytest.raises(YamlConfigError, match=r'^sec\.count: expected an integer'):
        yaml_config.build(Sample, {'count': 'x'}, '', 'sec')


def test_the_class_own_errors_are_re_raised_with_the_file_name():
    with pytest.raises(OtherError, match=r'^f\.yaml: name: forbidden$'):
        yaml_config.build(Sample, {'name': 'forbidden'}, 'f.yaml', 'sec', OtherError, own_errors=(OwnError,))
    with pytest.raises(OwnError):
        yaml_config.build(Sample, {'name': 'forbidden'}, 'f.yaml', 'sec', OtherError)


def test_read_yaml_names_the_file_when_missing_or_malformed(tmp_path):
    good = tmp_path / 'good.yaml'
    good.write_text('a: {b: 1}\n')
    assert yaml_config.read_yaml(good, 'test config') == {'a': {'b': 1}}
    with pytest.raises(OtherError, match=r'nope\.yaml: cannot read test config: No such file'):
        yaml_config.read_yaml(tmp_path / 'nope.yaml', 'test config', OtherError)
    bad = tmp_path / 'bad.yaml'
    bad.write_text('a: [unclosed')
    with pytest.raises(YamlConfigError, match=r'bad\.yaml: test config is invalid YAML'):
        yaml_config.read_yaml(bad, 'test config')


def test_check_keys_lists_the_known_ones():
    yaml_config.check_keys({'a': 1}, ('a', 'b'), 'f.yaml', 'top')
    with pytest.raises(YamlConfigError, match=r'^f\.yaml: top\.c: unknown key \(known: a, b\)$'):
        yaml_config.check_keys({'a': 1, 'c': 2}, ('b', 'a'), 'f.yaml', 'top')
