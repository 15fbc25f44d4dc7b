"""Topic selection by glob: `*` matches within one name segment, `**` across segments (`/fleet/**`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from fleet_core import topics

DEFAULT_TOPIC_GLOBS: tuple[str, ...] = (topics.FLEET_GLOB, *topics.agents_globs(topics.AGENT_TELEMETRY_TOPICS))
"""Shard streams and agent poses: what the Foxglove server and `fleetctl record` expose by default."""


class GlobError(ValueError):
    """A topic glob that is not an absolute ROS name pattern."""


def compile_glob(pattern: str) -> re.Pattern[str]:
    """`fleet_core.topics.compile_glob` for an absolute topic glob; raises GlobError otherwise."""
    if not pattern.startswith('/'):
        raise GlobError(f'topic glob {pattern!r} must be absolute (start with /)')
    return topics.compile_glob(pattern)


@dataclass(frozen=True)
class TopicSelector:
    """Topics matching any include glob and no exclude glob."""

    include: tuple[str, ...] = DEFAULT_TOPIC_GLOBS
    exclude: tuple[str, ...] = ()
    _inc: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _exc: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, '_inc', tuple(compile_glob(p) for p in self.include))
        object.__setattr__(self, '_exc', tuple(compile_glob(p) for p in self.exclude))

    def matches(self, name: str) -> bool:
        return any(p.match(name) for p in self._inc) and not any(p.match(name) for p in self._exc)

    def select(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if self.matches(n)]
