import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet_core.kinds import InvalidCommand, KindRegistry
from fleet_core.model import Priority


def test_valid_goto_is_decoded():
    args = KindRegistry().validate('goto', json.dumps({'x': 1.5, 'y': -2}), Priority.NORMAL)
    assert args == {'x': 1.5, 'y': -2}


@pytest.mark.parametrize(
    ('kind', 'args', 'priority', 'reason'),
    [
        ('fly', '{}', Priority.NORMAL, 'unknown kind'),
        ('goto', '{"x": 1}', Priority.NORMAL, "missing argument 'y'"),
        ('goto', '{"x": "1", "y": 2}', Priority.NORMAL, "'x' must be a number"),
        ('goto', '{"x": true, "y": 2}', Priority.NORMAL, "'x' must be a number"),
        ('goto', '{"x": 1e308, "y": 2}', Priority.NORMAL, '<='),
        ('goto', '{"x": 1, "y": 2, "z": 3}', Priority.NORMAL, 'unknown argument'),
        ('noop', '[1, 2]', Priority.NORMAL, 'JSON object'),
        ('noop', '{not json', Priority.NORMAL, 'not valid JSON'),
        ('stop', '{}', Priority.HIGH, 'SAFETY'),
        ('inspect', json.dumps({'point_id': 'p' * 300}), Priority.NORMAL, 'longer than'),
        ('noop', json.dumps({'pad': 'x' * 5000}), Priority.NORMAL, 'larger than'),
    ],
)
def test_bad_commands_are_rejected_with_a_reason(kind, args, priority, reason):
    with pytest.raises(InvalidCommand, match=reason):
        KindRegistry().validate(kind, args, priority)


@given(st.text(max_size=200), st.text(max_size=400))
def test_validation_never_raises_anything_but_invalid_command(kind, args_json):
    with contextlib.suppress(InvalidCommand):
        KindRegistry().validate(kind, args_json, Priority.NORMAL)
