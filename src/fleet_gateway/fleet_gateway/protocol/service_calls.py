"""The service-call capability: `call_service` to a ROS service, answered with `service_response`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from fleet_gateway.acl import Action
from fleet_gateway.conversion import codec_for, service_class
from fleet_gateway.protocol import fields
from fleet_gateway.protocol.events import CallService, Event
from fleet_gateway.protocol.fields import ProtocolError, Rid
from fleet_gateway.protocol.port import SessionPort


@dataclass
class PendingCall:
    request_id: str | int | None
    service: str
    response_cls: type


class ServiceCalls:
    """The calls this client made whose answer has not come back, by the session-local call number."""

    def __init__(self, port: SessionPort, resolve_type: Callable[[str], str | None] | None) -> None:
        self._port = port
        self._resolve_type = resolve_type or (lambda _service: None)
        self._pending: dict[int, PendingCall] = {}
        self.pending: Mapping[int, PendingCall] = MappingProxyType(self._pending)

    def handle_call_service(self, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
        port = self._port
        service = fields.ros_name(message, 'service')
        port.allow(Action.CALL_SERVICE, service)
        given = fields.text(message, 'type', required=False)
        type_name = given or self._resolve_type(service)
        if not type_name:
            raise ProtocolError(f'no type given for service {service} and no server offers it: add "type"')
        srv_cls = service_class(type_name)
        limits = port.limits
        timeout_s = fields.number(
            message, 'timeout', limits.call_timeout_s, minimum=0.001, maximum=limits.max_call_timeout_s
        )
        if len(self._pending) >= limits.max_pending_calls:
            raise ProtocolError(f'at most {limits.max_pending_calls} service calls in flight per client')
        request = codec_for(srv_cls.Request).from_json(fields.values_of(message, 'args'))  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
        call_no = port.new_id()
        self._pending[call_no] = PendingCall(rid, service, srv_cls.Response)  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
        events.append(CallService(call_no, service, srv_cls, request, timeout_s))

    def result(self, call_no: int, response: Any | None, error: str | None = None) -> None:
        """The answer (or failure text) of a CallService event this capability emitted."""
        call = self._pending.pop(call_no, None)
        if call is None or self._port.finished:
            return
        message: dict[str, Any] = {'op': 'service_response', 'service': call.service}
        if call.request_id is not None:
            message['id'] = call.request_id
        if error is None and response is not None:
            message['values'] = codec_for(call.response_cls).to_json(response)
            message['result'] = True
        else:
            message['values'] = error or 'service call failed'
            message['result'] = False
        self._port.send(message)

    def finish(self) -> list[Event]:
        self._pending.clear()
        return []
