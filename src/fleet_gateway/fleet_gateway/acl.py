"""Roles, tokens and per-role allow-lists (globs) for topics, services and actions; deny by default."""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from fleet_core import topics


class Role(enum.Enum):
    """What a connected client may do; each role has its own allow-lists in the ACL file."""

    OPERATOR = 'operator'
    SITE_LINK = 'site-link'
    VIEWER = 'viewer'

    @property
    def relays(self) -> bool:
        """A relay role (the site link) forwards another site's traffic: whatever its ACL grants, it may never
        publish, serve or command on the fleet's control topics, services and actions (`CONTROL_TOPICS`, ...)."""
        return self is Role.SITE_LINK


class Action(enum.Enum):
    PUBLISH = 'publish'
    SUBSCRIBE = 'subscribe'
    CALL_SERVICE = 'call_service'
    ADVERTISE_SERVICE = 'advertise_service'
    SEND_ACTION_GOAL = 'send_action_goal'
    ADVERTISE_ACTION = 'advertise_action'


PROTECTED_TOPICS: tuple[str, ...] = (
    *topics.agents_globs(topics.AGENT_CONTROL_TOPICS),
    *topics.shards_globs(topics.SHARD_SAFETY_TOPICS),
)
"""Command and safety topics: publishing needs an explicit `command_publish` grant, never a broad `publish` glob."""

CONTROL_TOPICS: tuple[str, ...] = (
    *topics.agents_globs(topics.AGENT_CONTROL_TOPICS),
    *topics.shards_globs(topics.SHARD_CONTROL_TOPICS),
)
"""Topics the shards, their standbys and the agents act on (classified in `fleet_core.topics`). A relay role may
never publish them, whatever its ACL says: a forged ack or journal entry would be acted upon."""

CONTROL_SERVICES: tuple[str, ...] = topics.shards_globs(topics.SHARD_SERVICES)
"""Shard services; a relay role may never call or serve them."""

CONTROL_ACTIONS: tuple[str, ...] = topics.shards_globs(topics.SHARD_ACTIONS)
"""Shard actions; a relay role may never send goals to or serve them."""


def compile_glob(pattern: str) -> re.Pattern[str]:
    """The fleet's one name-glob syntax (`fleet_core.topics.compile_glob`), also for QoS and staleness rules."""
    return topics.compile_glob(pattern)


class GlobSet:
    """A list of glob patterns; `matches(name)` is true when any of them matches the whole name."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self._compiled = tuple(compile_glob(p) for p in self.patterns)

    def matches(self, name: str) -> bool:
        return any(rx.match(name) for rx in self._compiled)

    def __bool__(self) -> bool:
        return bool(self.patterns)


_RELAY_DENIED: dict[Action, GlobSet] = {
    Action.PUBLISH: GlobSet(CONTROL_TOPICS),
    Action.SUBSCRIBE: GlobSet(()),
    Action.CALL_SERVICE: GlobSet(CONTROL_SERVICES),
    Action.ADVERTISE_SERVICE: GlobSet(CONTROL_SERVICES),
    Action.SEND_ACTION_GOAL: GlobSet(CONTROL_ACTIONS),
    Action.ADVERTISE_ACTION: GlobSet(CONTROL_ACTIONS),
}
"""What a relay role is refused whatever its grants (reading is not refused: a site link downlinks e-stops)."""


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
        if self.role.relays and _RELAY_DENIED[action].matches(name):
            return False
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
