"""The per-client access gate in front of the Foxglove server, as a sans-I/O core (no sockets, no asyncio).

foxglove-sdk advertises every channel to every client and cannot refuse a subscription, so with tokens configured
each client talks to the SDK through a `GateSession` that reads the ws-protocol frames both ways: before a
successful `/fleet/login` the client is shown no data channels, and its subscriptions, parameter and connection
graph requests and client publications are refused with a status addressed to it alone. Failed logins are slowed
down (per peer address, so reconnecting does not reset the delay) and close the connection after a few.
The session returns effects (`ToClient`, `ToUpstream`, `Close`); `foxglove_gate_server` applies them.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fleet_observability.foxglove_services import LOGIN_SERVICE, AccessPolicy

# ws-protocol v1 binary opcodes.
SERVER_MESSAGE_DATA = 0x01
SERVER_SERVICE_CALL_RESPONSE = 0x03
CLIENT_MESSAGE_DATA = 0x01
CLIENT_SERVICE_CALL_REQUEST = 0x02

STATUS_WARNING = 1
STATUS_ERROR = 2
CLOSE_POLICY_VIOLATION = 1008

_U32 = struct.Struct('<I')
_TWO_U32 = struct.Struct('<II')


@dataclass(frozen=True)
class GateSettings:
    max_failed_logins: int = 3
    """Failed logins on one connection before it is closed."""
    login_backoff_sec: float = 0.5
    """Delay before the login that follows one failure; doubles with each further failure of the same peer."""
    login_backoff_max_sec: float = 8.0
    failure_memory_sec: float = 300.0
    """A peer's failures are forgotten this long after its last one."""

    def __post_init__(self) -> None:
        if self.max_failed_logins < 1:
            raise ValueError('max_failed_logins must be at least 1')
        if not 0.0 <= self.login_backoff_sec <= self.login_backoff_max_sec:
            raise ValueError('login_backoff_sec must be within [0, login_backoff_max_sec]')


@dataclass(frozen=True, slots=True)
class ToClient:
    data: str | bytes


@dataclass(frozen=True, slots=True)
class ToUpstream:
    data: str | bytes
    delay_sec: float = 0.0
    """Hold the client's connection this long before sending (the login slowdown)."""


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


Effect = ToClient | ToUpstream | Close


class LoginThrottle:
    """Failed-login memory per peer address, shared by all sessions of one gate (one thread uses it)."""

    def __init__(self, settings: GateSettings, *, clock: Callable[[], float]) -> None:
        self._settings = settings
        self._clock = clock
        self._failures: dict[str, tuple[int, float]] = {}

    def _count(self, peer: str) -> int:
        entry = self._failures.get(peer)
        if entry is None:
            return 0
        count, last = entry
        if self._clock() - last > self._settings.failure_memory_sec:
            del self._failures[peer]
            return 0
        return count

    def delay(self, peer: str) -> float:
        """How long the next login attempt of `peer` waits."""
        count = self._count(peer)
        if count == 0:
            return 0.0
        s = self._settings
        return float(min(s.login_backoff_max_sec, s.login_backoff_sec * 2 ** (count - 1)))

    def failed(self, peer: str) -> None:
        self._failures[peer] = (self._count(peer) + 1, self._clock())
        if len(self._failures) > 4096:  # bounded: drop the peer that failed longest ago
            oldest = min(self._failures, key=lambda p: self._failures[p][1])
            del self._failures[oldest]

    def succeeded(self, peer: str) -> None:
        self._failures.pop(peer, None)


def _status(message: str, level: int = STATUS_ERROR) -> ToClient:
    return ToClient(json.dumps({'op': 'status', 'level': level, 'message': message}))


class GateSession:
    """One client connection through the gate. Feed it frames from either side; apply the effects in order."""

    def __init__(
        self,
        *,
        peer: str,
        policy: AccessPolicy,
        settings: GateSettings,
        throttle: LoginThrottle,
        on_role: Callable[[str], None] | None = None,
    ) -> None:
        self.peer = peer
        self.role: str | None = None
        self._policy = policy
        self._settings = settings
        self._throttle = throttle
        self._on_role = on_role
        self._channels: dict[int, dict[str, Any]] = {}
        """Server channels by id, as advertised upstream (shown to the client only once it may view)."""
        self._login_service_id: int | None = None
        self._login_call: int | None = None
        self._failed_logins = 0
        self._publishing: set[int] = set()
        """Client channel ids the client may publish on (advertised upstream)."""
        self._client_ops: dict[str, Callable[[dict[str, Any], str], list[Effect]]] = {
            'subscribe': self._viewer_only,
            'getParameters': self._viewer_only,
            'setParameters': self._viewer_only,
            'subscribeParameterUpdates': self._viewer_only,
            'subscribeConnectionGraph': self._viewer_only,
            'fetchAsset': self._viewer_only,
            'advertise': self._client_advertise,
            'unadvertise': self._client_unadvertise,
        }
        self._upstream_ops: dict[str, Callable[[dict[str, Any], str], list[Effect]]] = {
            'advertise': self._server_advertise,
            'unadvertise': self._server_unadvertise,
            'advertiseServices': self._server_services,
            'serviceCallFailure': self._server_call_failure,
            'parameterValues': self._viewer_data,
            'connectionGraphUpdate': self._viewer_data,
        }

    @property
    def may_view(self) -> bool:
        return self._policy.may_view(self.role)

    # ------------------------------------------------------------------------------------------- client side

    def client_text(self, text: str) -> list[Effect]:
        message = _json_object(text)
        if message is None:
            return [ToUpstream(text)]  # the SDK answers malformed requests itself
        handler = self._client_ops.get(str(message.get('op')))
        return handler(message, text) if handler is not None else [ToUpstream(text)]

    def client_binary(self, data: bytes) -> list[Effect]:
        if not data:
            return [ToUpstream(data)]
        if data[0] == CLIENT_MESSAGE_DATA and len(data) >= 5:
            (channel_id,) = _U32.unpack_from(data, 1)
            if channel_id not in self._publishing:
                return [_status(f'client channel {channel_id} is not advertised for publishing; message dropped')]
            return [ToUpstream(data)]
        if data[0] == CLIENT_SERVICE_CALL_REQUEST and len(data) >= 9:
            service_id, call_id = _TWO_U32.unpack_from(data, 1)
            if service_id == self._login_service_id:
                return self._login_request(data, service_id, call_id)
        return [ToUpstream(data)]

    def _login_request(self, data: bytes, service_id: int, call_id: int) -> list[Effect]:
        if self._login_call is not None:
            failure = {
                'op': 'serviceCallFailure',
                'serviceId': service_id,
                'callId': call_id,
                'message': f'{LOGIN_SERVICE}: a login is already in progress on this connection',
            }
            return [ToClient(json.dumps(failure))]
        self._login_call = call_id
        return [ToUpstream(data, delay_sec=self._throttle.delay(self.peer))]

    def _viewer_only(self, message: dict[str, Any], text: str) -> list[Effect]:
        if self.may_view:
            return [ToUpstream(text)]
        return [_status(f'{message["op"]} refused: not logged in; call {LOGIN_SERVICE} with {{"token": "..."}} first')]

    def _client_advertise(self, message: dict[str, Any], text: str) -> list[Effect]:
        channels = message.get('channels')
        if not isinstance(channels, list):
            return [ToUpstream(text)]
        allowed: list[Any] = []
        effects: list[Effect] = []
        for channel in channels:
            if not isinstance(channel, dict):
                continue
            topic, schema = str(channel.get('topic', '')), str(channel.get('schemaName', ''))
            refusal = self._policy.publish_refusal(self.role, topic, schema)
            if refusal is not None:
                effects.append(_status(f'client publish refused: {refusal}'))
                continue
            if isinstance(channel.get('id'), int):
                self._publishing.add(channel['id'])
            allowed.append(channel)
        if allowed:
            effects.append(ToUpstream(json.dumps({**message, 'channels': allowed})))
        return effects

    def _client_unadvertise(self, message: dict[str, Any], text: str) -> list[Effect]:
        ids = message.get('channelIds')
        if not isinstance(ids, list):
            return [ToUpstream(text)]
        mine = [i for i in ids if i in self._publishing]
        self._publishing.difference_update(mine)
        return [ToUpstream(json.dumps({**message, 'channelIds': mine}))] if mine else []

    # ------------------------------------------------------------------------------------------- server side

    def upstream_text(self, text: str) -> list[Effect]:
        message = _json_object(text)
        if message is None:
            return [ToClient(text)]
        handler = self._upstream_ops.get(str(message.get('op')))
        return handler(message, text) if handler is not None else [ToClient(text)]

    def upstream_binary(self, data: bytes) -> list[Effect]:
        if data and data[0] == SERVER_MESSAGE_DATA and not self.may_view:
            return []  # cannot happen (subscriptions are refused); never leak data if it did
        if data and data[0] == SERVER_SERVICE_CALL_RESPONSE and len(data) >= 13:
            service_id, call_id = _TWO_U32.unpack_from(data, 1)
            if service_id == self._login_service_id and call_id == self._login_call:
                return self._login_succeeded(data)
        return [ToClient(data)]

    def _server_advertise(self, message: dict[str, Any], text: str) -> list[Effect]:
        for channel in message.get('channels', []):
            if isinstance(channel, dict) and isinstance(channel.get('id'), int):
                self._channels[channel['id']] = channel
        return [ToClient(text)] if self.may_view else []

    def _server_unadvertise(self, message: dict[str, Any], text: str) -> list[Effect]:
        for channel_id in message.get('channelIds', []):
            self._channels.pop(channel_id, None)
        return [ToClient(text)] if self.may_view else []

    def _server_services(self, message: dict[str, Any], text: str) -> list[Effect]:
        for service in message.get('services', []):
            if isinstance(service, dict) and service.get('name') == LOGIN_SERVICE:
                self._login_service_id = service.get('id')
        return [ToClient(text)]

    def _viewer_data(self, message: dict[str, Any], text: str) -> list[Effect]:
        return [ToClient(text)] if self.may_view else []

    def _server_call_failure(self, message: dict[str, Any], text: str) -> list[Effect]:
        if message.get('serviceId') != self._login_service_id or message.get('callId') != self._login_call:
            return [ToClient(text)]
        self._login_call = None
        self._failed_logins += 1
        self._throttle.failed(self.peer)
        limit = self._settings.max_failed_logins
        if self._failed_logins >= limit:
            reason = f'{self._failed_logins} failed logins'
            note = f'{message.get("message", "")} ({reason}: closing the connection)'
            return [ToClient(json.dumps({**message, 'message': note})), Close(CLOSE_POLICY_VIOLATION, reason)]
        wait = self._throttle.delay(self.peer)
        note = (
            f'{message.get("message", "")} ({self._failed_logins} of {limit} failed logins; '
            f'the next login waits {wait:.1f}s)'
        )
        return [ToClient(json.dumps({**message, 'message': note}))]

    def _login_succeeded(self, data: bytes) -> list[Effect]:
        self._login_call = None
        role = _login_role(data)
        if role is None:  # not the LoginHandler's JSON: the SDK knows no role either
            return [ToClient(data)]
        could_view = self.may_view
        self.role = role
        self._throttle.succeeded(self.peer)
        if self._on_role is not None:
            self._on_role(role)
        effects: list[Effect] = [ToClient(data)]
        if self.may_view and not could_view and self._channels:
            effects.append(ToClient(json.dumps({'op': 'advertise', 'channels': list(self._channels.values())})))
        return effects


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        message = json.loads(text)
    except json.JSONDecodeError:
        return None
    return message if isinstance(message, dict) else None


def _login_role(data: bytes) -> str | None:
    """The role in a login service response frame (op, service id, call id, encoding length, encoding, payload)."""
    (encoding_length,) = _U32.unpack_from(data, 9)
    payload = data[13 + encoding_length :]
    try:
        reply = json.loads(payload.decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    role = reply.get('role') if isinstance(reply, dict) else None
    return role if isinstance(role, str) else None
