"""Roles, tokens and per-role allow-lists (globs) for topics, services and actions; deny by default."""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field


class Role(enum.Enum):
    """What a connected client may do; each role has its own allow-lists in the ACL file."""

    OPERATOR = 'operator'
    SITE_LINK = 'site-link'
    VIEWER = 'viewer'


class Action(enum.Enum):
    PUBLISH = 'publish'
    SUBSCRIBE = 'subscribe'
    CALL_SERVICE = 'call_service'
    ADVERTISE_SERVICE = 'advertise_service'
    SEND_ACTION_GOAL = 'send_action_goal'
    ADVERTISE_ACTION = 'advertise_action'


PROTECTED_TOPICS: tuple[str, ...] = (
    '/*/*/command',  # fleet_core.topics.agent_command
    '/fleet/*/*/estop',  # fleet_core.topics.shard_estop
    '/fleet/*/*/operations',
    '/fleet/*/*/leader',
)
"""Command and safety topics: publishing needs an explicit `command_publish` grant, never a broad `publish` glob."""


def compile_glob(pattern: str) -> re.Pattern[str]:
    """`*` matches within one name segment, `**` across segments, `?` one character."""
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith('**', i):
            out.append('.*')
            i += 2
            continue
        if char == '*':
            out.append('[^/]*')
        elif char == '?':
            out.append('[^/]')
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile('^' + ''.join(out) + '$')


class GlobSet:
    """A list of glob patterns; `matches(name)` is true when any of them matches the whole name."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self._compiled = tuple(compile_glob(p) for p in self.patterns)

    def matches(self, name: str) -> bool:
        return any(rx.match(name) for rx in self._compiled)

    def __bool__(self) -> bool:
        return bool(self.patterns)


@dataclass(frozen=True)
class RolePolicy:
    """Allow-lists of one role. Anything not matched is denied."""

    role: Role
    publish: GlobSet
    subscribe: GlobSet
    call_service: GlobSet
    advertise_service: GlobSet
    command_publish: GlobSet
    send_action_goal: GlobSet = field(default_factory=lambda: GlobSet(()))
    """Action names this role may send goals to (and cancel its own goals on)."""
    advertise_action: GlobSet = field(default_factory=lambda: GlobSet(()))
    """Action names this role may serve (advertise_action)."""

    def allows(self, action: Action, name: str, *, protected: GlobSet) -> bool:
        if action is Action.PUBLISH:
            if protected.matches(name):
                return self.command_publish.matches(name)
            return self.publish.matches(name) or self.command_publish.matches(name)
        if action is Action.SUBSCRIBE:
            return self.subscribe.matches(name)
        if action is Action.CALL_SERVICE:
            return self.call_service.matches(name)
        if action is Action.SEND_ACTION_GOAL:
            return self.send_action_goal.matches(name)
        if action is Action.ADVERTISE_ACTION:
            return self.advertise_action.matches(name)
        return self.advertise_service.matches(name)


@dataclass(frozen=True)
class AccessPolicy:
    """Every role's allow-lists plus the protected (command/safety) topic globs."""

    roles: dict[Role, RolePolicy]
    protected: GlobSet
    critical: GlobSet
    """Topics whose frames are never dropped by backpressure (command and safety traffic)."""

    def allows(self, role: Role, action: Action, name: str) -> bool:
        policy = self.roles.get(role)
        return policy is not None and policy.allows(action, name, protected=self.protected)

    def is_critical(self, topic: str) -> bool:
        return self.critical.matches(topic)


@dataclass(frozen=True)
class Principal:
    """An authenticated client identity."""

    name: str
    role: Role


class TokenStore:
    """Maps bearer tokens to principals; compares in constant time."""

    def __init__(self, tokens: dict[str, Principal]) -> None:
        self._tokens = dict(tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def authenticate(self, token: str | None) -> Principal | None:
        if not token:
            return None
        found: Principal | None = None
        for known, principal in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                found = principal
        return found
