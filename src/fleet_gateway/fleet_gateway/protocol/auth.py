"""The `auth` capability: who the client is, the ACL check every other capability asks for, the authentication
deadline and the failure count that closes a client guessing tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fleet_gateway.acl import AccessPolicy, Action, Principal
from fleet_gateway.protocol.events import Event
from fleet_gateway.protocol.fields import AuthThrottled, ProtocolError, Rid
from fleet_gateway.protocol.port import SessionPort
from fleet_gateway.protocol.state import CLOSE_POLICY


class Auth:
    """`principal` is None until the client authenticated (at the HTTP stage, or later with an `auth` op)."""

    def __init__(
        self,
        port: SessionPort,
        policy: AccessPolicy,
        principal: Principal | None,
        authenticate: Callable[[str], Principal | None] | None,
    ) -> None:
        self._port = port
        self.policy = policy
        self._principal = principal
        self._authenticate = authenticate
        self._failures = 0
        self._deadline = port.now() + port.limits.auth_timeout_s if principal is None else None
        """When an unauthenticated client is closed (None once authenticated, or when it came with a principal)."""

    @property
    def principal(self) -> Principal | None:
        return self._principal

    def allow(self, action: Action, name: str) -> None:
        principal = self._principal
        if principal is None:  # the session refuses every op but auth before this; kept as a check, not an assert
            raise ProtocolError(f'not authenticated: {name} needs a role')
        if not self.policy.allows(principal.role, action, name):
            raise ProtocolError(
                f'role {principal.role.value!r} ({principal.name}) may not {action.value.replace("_", " ")} {name}'
            )

    def handle_auth(self, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
        port = self._port
        if self._principal is not None:
            port.status('info', 'already authenticated', rid)
            return
        token = message.get('token', message.get('mac'))
        try:
            principal = self._authenticate(token) if self._authenticate and isinstance(token, str) else None
        except AuthThrottled:
            port.request_close(CLOSE_POLICY, 'too many failed authentications from this address')
            raise
        if principal is None:
            self._failures += 1
            if self._failures >= port.limits.max_auth_failures:
                port.request_close(CLOSE_POLICY, 'authentication failed')
            raise ProtocolError('authentication failed: unknown token')
        self._principal = principal
        port.status('info', f'authenticated as {principal.name} ({principal.role.value})', rid)

    def next_wake(self) -> float | None:
        return self._deadline if self._principal is None else None

    def poll(self, now: float) -> None:
        if self._principal is None and self._deadline is not None and now >= self._deadline:
            self._port.request_close(CLOSE_POLICY, f'not authenticated within {self._port.limits.auth_timeout_s:g} s')
            self._deadline = None
