"""Command kinds an agent understands and the typed arguments each takes; the agent's validation step."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet_core.model import Priority

MAX_STRING_ARG = 256


class InvalidCommand(ValueError):
    """A command's kind or arguments are unacceptable; the message is sent back in the REJECTED_INVALID ack."""


@dataclass(frozen=True, slots=True)
class ArgSpec:
    """One argument: its JSON type ('number', 'integer', 'string', 'boolean'), whether it is required, its range."""

    type: str
    required: bool = True
    minimum: float | None = None
    maximum: float | None = None

    def check(self, name: str, value: object) -> None:
        if self.type == 'string':
            if not isinstance(value, str):
                raise InvalidCommand(f'argument {name!r} must be a string')
            if len(value) > MAX_STRING_ARG:
                raise InvalidCommand(f'argument {name!r} longer than {MAX_STRING_ARG} characters')
            return
        if self.type == 'boolean':
            if not isinstance(value, bool):
                raise InvalidCommand(f'argument {name!r} must be true or false')
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidCommand(f'argument {name!r} must be a number')
        if self.type == 'integer' and not isinstance(value, int):
            raise InvalidCommand(f'argument {name!r} must be an integer')
        if not math.isfinite(value):
            raise InvalidCommand(f'argument {name!r} must be finite')
        if self.minimum is not None and value < self.minimum:
            raise InvalidCommand(f'argument {name!r} must be >= {self.minimum}')
        if self.maximum is not None and value > self.maximum:
            raise InvalidCommand(f'argument {name!r} must be <= {self.maximum}')


@dataclass(frozen=True, slots=True)
class KindSpec:
    name: str
    args: Mapping[str, ArgSpec] = field(default_factory=dict)
    min_priority: Priority = Priority.LOW
    description: str = ''


_COORD = ArgSpec('number', minimum=-1e6, maximum=1e6)
_DURATION = ArgSpec('number', required=False, minimum=0.0, maximum=3600.0)

BUILTIN_KINDS: tuple[KindSpec, ...] = (
    KindSpec('noop', description='do nothing; acknowledges the round trip'),
    KindSpec('sleep', {'duration_sec': ArgSpec('number', minimum=0.0, maximum=3600.0)}, description='wait'),
    KindSpec(
        'goto',
        {
            'x': _COORD,
            'y': _COORD,
            'theta': ArgSpec('number', required=False, minimum=-10.0, maximum=10.0),
            'point_id': ArgSpec('string', required=False),
        },
        description='drive to x, y (metres, site frame)',
    ),
    KindSpec('inspect', {'point_id': ArgSpec('string'), 'duration_sec': _DURATION}, description='inspect a point'),
    KindSpec(
        'report',
        {'point_id': ArgSpec('string'), 'mission_id': ArgSpec('string', required=False)},
        description='upload the inspection result',
    ),
    KindSpec('undock', description='leave the dock'),
    KindSpec('dock', description='return onto the dock'),
    KindSpec('pause', description='finish the current step, then take only HIGH/SAFETY work'),
    KindSpec('resume', description='take work again after a pause'),
    KindSpec('stop', min_priority=Priority.SAFETY, description='stop motion now (SAFETY only)'),
)


class KindRegistry:
    """The kinds one agent accepts. Validation is pure: same input, same verdict."""

    def __init__(self, kinds: tuple[KindSpec, ...] = BUILTIN_KINDS, *, max_args_bytes: int = 4096) -> None:
        self._kinds = {k.name: k for k in kinds}
        self.max_args_bytes = max_args_bytes

    def __contains__(self, kind: object) -> bool:
        return kind in self._kinds

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._kinds))

    def validate(self, kind: str, args_json: str, priority: Priority) -> dict[str, Any]:
        """Return the decoded arguments or raise InvalidCommand with the reason."""
        spec = self._kinds.get(kind)
        if spec is None:
            raise InvalidCommand(f'unknown kind {kind[:64]!r} (known: {", ".join(self.names)})')
        if priority < spec.min_priority:
            raise InvalidCommand(f'kind {kind!r} needs priority {spec.min_priority.name} or higher')
        if len(args_json.encode()) > self.max_args_bytes:
            raise InvalidCommand(f'arguments larger than {self.max_args_bytes} bytes')
        try:
            args = json.loads(args_json or '{}')
        except (ValueError, RecursionError):
            raise InvalidCommand('arguments are not valid JSON') from None
        if not isinstance(args, dict):
            raise InvalidCommand('arguments must be a JSON object')
        unknown = set(args) - set(spec.args)
        if unknown:
            raise InvalidCommand(f'unknown argument(s) for {kind!r}: {", ".join(sorted(unknown))[:200]}')
        for name, arg in spec.args.items():
            if name in args:
                arg.check(name, args[name])
            elif arg.required:
                raise InvalidCommand(f'missing argument {name!r} for {kind!r}')
        return args
