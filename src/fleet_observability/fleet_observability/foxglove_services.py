"""Operator services of the Foxglove server: role checks and forwarding to the orchestrators' ROS services.

A Foxglove client proves its role by calling the `/fleet/login` service with a token (the ws-protocol has no
authentication of its own, and the SDK does not show handlers the HTTP upgrade headers). Roles are then kept
per client id. Forwarded calls decode the client's CDR request, call the ROS service and return the CDR
response; every failure reaches the client as a serviceCallFailure with the reason.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rclpy.client import Client
from rclpy.node import Node
from rclpy.serialization import deserialize_message, serialize_message

from fleet_core import topics
from fleet_observability.binding import is_loopback
from fleet_observability.topic_match import compile_glob

ROLE_VIEWER = 'viewer'
ROLE_OPERATOR = 'operator'
ROLE_SITE_LINK = 'site-link'
KNOWN_ROLES = frozenset({ROLE_VIEWER, ROLE_OPERATOR, ROLE_SITE_LINK})

LOGIN_SERVICE = topics.FOXGLOVE_LOGIN

DEFAULT_SERVICE_ROLES: Mapping[str, frozenset[str]] = {
    'fleet_interfaces/srv/SubmitCommand': frozenset({ROLE_OPERATOR}),
    'fleet_interfaces/srv/SetEStop': frozenset({ROLE_OPERATOR}),
    'fleet_interfaces/srv/RequestFleetOperation': frozenset({ROLE_OPERATOR}),
}
"""Service types the server forwards, and the roles allowed to call them."""

DEFAULT_PUBLISH_ROLES: Mapping[str, Mapping[str, frozenset[str]]] = {
    topics.shards_glob(topics.ESTOP): {'fleet_interfaces/msg/EStop': frozenset({ROLE_OPERATOR})},
}
"""What a Foxglove client may publish (ws-protocol client publish): topic glob -> schema name -> roles.
An EStop published on a shard's e-stop topic is an e-stop request, carried out by the shard leader's set_estop."""

VIEWING_ROLES: frozenset[str] = KNOWN_ROLES
"""Roles that see the data channels, parameters and connection graph once logged in."""


class AccessError(PermissionError):
    """A client lacks the role a service needs; the message says how to get it."""


class AccessConfigError(ValueError):
    """Token map or bind address that must not be used (e.g. a public bind without tokens)."""


def parse_tokens(raw: object, source: str) -> dict[str, str]:
    """Validate a decoded `{token: role}` mapping. Raises AccessConfigError naming the file."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise AccessConfigError(f'{source}: expected a mapping of token to role')
    tokens: dict[str, str] = {}
    for token, role in raw.items():
        if not isinstance(token, str) or len(token) < 16:
            raise AccessConfigError(f'{source}: tokens must be strings of at least 16 characters')
        if role not in KNOWN_ROLES:
            raise AccessConfigError(f'{source}: token role {role!r} unknown (known: {", ".join(sorted(KNOWN_ROLES))})')
        tokens[token] = str(role)
    return tokens


@dataclass(frozen=True)
class AccessPolicy:
    """Who may call what. Without tokens (allowed on loopback only) every client acts as an operator."""

    tokens: Mapping[str, str] = field(default_factory=dict)
    service_roles: Mapping[str, frozenset[str]] = field(default_factory=lambda: dict(DEFAULT_SERVICE_ROLES))
    publish_roles: Mapping[str, Mapping[str, frozenset[str]]] = field(
        default_factory=lambda: dict(DEFAULT_PUBLISH_ROLES)
    )
    viewing_roles: frozenset[str] = VIEWING_ROLES

    @property
    def open(self) -> bool:
        return not self.tokens

    def role_for(self, role: str | None) -> str | None:
        """The effective role of a client: every client is an operator when no tokens are configured."""
        return ROLE_OPERATOR if self.open else role

    def may_view(self, role: str | None) -> bool:
        return self.role_for(role) in self.viewing_roles

    def publish_refusal(self, role: str | None, topic: str, schema_name: str) -> str | None:
        """Why `role` may not publish `schema_name` on `topic` (None: allowed)."""
        role = self.role_for(role)
        if role is None:
            return f'{topic}: not logged in; call {LOGIN_SERVICE} with {{"token": "..."}} before publishing'
        for glob, types in self.publish_roles.items():
            if not compile_glob(glob).match(topic):
                continue
            roles = types.get(schema_name)
            if roles is None:
                return f'{topic}: only {"/".join(sorted(types))} may be published here, not {schema_name!r}'
            if role not in roles:
                return f'{topic}: role {role!r} may not publish {schema_name} (needs {"/".join(sorted(roles))})'
            return None
        return f'{topic}: clients may not publish on this topic'

    def check_bind(self, host: str) -> None:
        if self.open and not is_loopback(host):
            raise AccessConfigError(
                f'refusing to bind the Foxglove server to {host} without tokens: '
                'pass --tokens FILE (YAML mapping token: role) or bind 127.0.0.1'
            )


class ClientRoles:
    """Role per connected Foxglove client id (SDK threads call in concurrently; bounded, oldest forgotten)."""

    def __init__(self, policy: AccessPolicy, *, capacity: int = 4096) -> None:
        self._policy = policy
        self._roles: OrderedDict[int, str] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def login(self, client_id: int, token: str) -> str:
        # Every token is compared in constant time, so the reply time does not tell how close a guess was.
        role = None
        for known, known_role in self._policy.tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                role = known_role
        if role is None:
            raise AccessError('login refused: unknown token')
        with self._lock:
            self._roles[client_id] = role
            self._roles.move_to_end(client_id)
            while len(self._roles) > self._capacity:
                self._roles.popitem(last=False)
        return role

    def role_of(self, client_id: int) -> str | None:
        if self._policy.open:
            return ROLE_OPERATOR
        with self._lock:
            return self._roles.get(client_id)

    def require(self, client_id: int, service: str, type_name: str) -> str:
        allowed = self._policy.service_roles.get(type_name, frozenset())
        role = self.role_of(client_id)
        if role is None:
            raise AccessError(f'{service}: not logged in; call {LOGIN_SERVICE} with {{"token": "..."}} first')
        if role not in allowed:
            raise AccessError(f'{service}: role {role!r} may not call {type_name} (needs {"/".join(sorted(allowed))})')
        return role


class LoginHandler:
    """`/fleet/login`: JSON request {"token": str}, JSON response {"role": str}."""

    REQUEST_SCHEMA = json.dumps(
        {'type': 'object', 'properties': {'token': {'type': 'string'}}, 'required': ['token']}
    ).encode()
    RESPONSE_SCHEMA = json.dumps({'type': 'object', 'properties': {'role': {'type': 'string'}}}).encode()

    def __init__(self, roles: ClientRoles) -> None:
        self._roles = roles

    def handle(self, client_id: int, payload: bytes) -> bytes:
        try:
            request = json.loads(payload.decode('utf-8'))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f'{LOGIN_SERVICE}: request must be JSON {{"token": "..."}}') from None
        if not isinstance(request, dict) or not isinstance(request.get('token'), str):
            raise ValueError(f'{LOGIN_SERVICE}: request must be JSON {{"token": "..."}}')
        role = self._roles.login(client_id, request['token'])
        return json.dumps({'role': role}).encode()


class ForwardError(RuntimeError):
    """A forwarded call that did not produce a response (service down, timeout, shutdown)."""


class RosServiceForwarder:
    """Forwards CDR requests for one ROS service. `call()` blocks the calling (SDK) thread, never the executor."""

    def __init__(self, node: Node, service: str, type_name: str, srv_class: Any, *, timeout_sec: float) -> None:
        self.service = service
        self.type_name = type_name
        self._srv = srv_class
        self._timeout = timeout_sec
        self._node = node
        self._client: Client = node.create_client(srv_class, service)

    def close(self) -> None:
        """Destroy the ROS client (calls still waiting end with ForwardError on their timeout)."""
        self._node.destroy_client(self._client)

    def call(self, payload: bytes) -> bytes:
        try:
            request = deserialize_message(payload, self._srv.Request)
        except RuntimeError as exc:  # rclpy's RMWError for CDR that does not decode as this type
            raise ValueError(f'{self.service}: malformed {self.type_name} request: {exc}') from None
        return bytes(serialize_message(self.call_request(request)))

    def call_request(self, request: Any) -> Any:
        """Forward a request object; returns the response object. Raises ForwardError."""
        if not self._client.service_is_ready():
            raise ForwardError(f'{self.service}: no orchestrator serves it right now (is the shard leader up?)')
        done = threading.Event()
        future = self._client.call_async(request)
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(self._timeout):
            self._client.remove_pending_request(future)
            raise ForwardError(f'{self.service}: no response within {self._timeout:.1f}s')
        if future.exception() is not None:
            raise ForwardError(f'{self.service}: call failed: {future.exception()}')
        response = future.result()
        if response is None:
            raise ForwardError(f'{self.service}: call was cancelled')
        return response
