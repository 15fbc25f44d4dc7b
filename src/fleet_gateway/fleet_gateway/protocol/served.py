"""Services and actions served by the client (advertise_service / advertise_action): one mechanism for both.

`ServedEndpoints` keeps what the client serves (by name) and the ROS requests forwarded to it (by the id the client
answers with: bookkeeping of id, ROS-side token and deadline), enforces the limits, fails requests that time out or
cannot be forwarded, and releases everything when the client unadvertises or leaves. `ServedServices` and
`ServedActions` only add what differs: the types, the wording and the answer ops."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from fleet_gateway.acl import Action
from fleet_gateway.conversion import ConversionError, action_class, codec_for, service_class, type_name
from fleet_gateway.protocol import fields
from fleet_gateway.protocol.events import (
    AdvertiseAction,
    AdvertiseService,
    Event,
    ServedGoalFeedback,
    ServedGoalResult,
    ServiceReply,
    UnadvertiseAction,
    UnadvertiseService,
)
from fleet_gateway.protocol.fields import ProtocolError, Rid
from fleet_gateway.protocol.port import SessionPort
from fleet_gateway.protocol.state import ABORTED, CANCELED, SUCCEEDED


@dataclass
class ServedEndpoint:
    """A service or action this client serves; the gateway forwards ROS requests to it."""

    name: str
    cls: type
    type_name: str = ''
    """The type as the client advertised it (goals to a served action carry it back as `action_type`)."""


@dataclass
class IncomingRequest:
    """A ROS call or goal forwarded to this client, waiting for the answer that carries `request_id`."""

    request_id: str
    name: str
    token: int
    """The ROS side's handle of the request (`ServiceReply.token`, `ServedGoalResult.token`)."""
    deadline: float


class ServedEndpoints(ABC):
    """One kind of client-served endpoint. Subclasses set the class attributes and implement the hooks."""

    field: str
    """The name field of the ops: "service" or "action"."""
    acl_action: Action
    kind: str
    """"services" or "actions" (limit messages)."""
    request_word: str
    """"call" or "goal": what a forwarded request is called in messages."""
    id_prefix: str
    """Forwarded requests' ids are `<id_prefix>:<name>:<n>`."""
    answer_op: str
    request_op: str
    """The op that forwards a ROS request to the client."""
    not_waiting: str
    """How an answer to no waiting request is described."""
    failed_counter: str

    def __init__(self, port: SessionPort, *, max_served: int, max_in_flight: int, timeout_s: float) -> None:
        self._port = port
        self._max_served = max_served
        self._max_in_flight = max_in_flight
        self._timeout_s = timeout_s
        self._served: dict[str, ServedEndpoint] = {}
        self._incoming: dict[str, IncomingRequest] = {}
        """Forwarded requests by id; oldest (earliest deadline) first."""
        self.served: Mapping[str, ServedEndpoint] = MappingProxyType(self._served)
        self.incoming: Mapping[str, IncomingRequest] = MappingProxyType(self._incoming)

    # --- hooks ---------------------------------------------------------------------------------------------

    @abstractmethod
    def _load(self, advertised_type: str) -> type:
        """The class of an advertised type; raises when unknown or when its parts cannot be converted."""

    @abstractmethod
    def _advertised(self, name: str, cls: type, rid: Rid) -> Event: ...

    @abstractmethod
    def _unadvertised(self, name: str) -> Event: ...

    @abstractmethod
    def _failed(self, name: str, token: int, why: str) -> Event:
        """The event that fails ROS request `token` (the ROS side answers its caller)."""

    @abstractmethod
    def _request_message(self, served: ServedEndpoint, request_id: str, request: Any) -> dict[str, Any]:
        """The op that forwards a ROS request to the client."""

    @abstractmethod
    def _timeout_reason(self, name: str) -> str: ...

    # --- ops ----------------------------------------------------------------------------------------------

    def handle_advertise(self, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
        name = fields.ros_name(message, self.field)
        advertised_type = fields.text(message, 'type')
        cls = self._load(advertised_type)
        self._port.allow(self.acl_action, name)
        existing = self._served.get(name)
        if existing is not None:
            if existing.cls is not cls:
                raise ProtocolError(f'{name} is already advertised by this client with another type')
            return  # advertising again changes nothing
        if len(self._served) >= self._max_served:
            raise ProtocolError(f'at most {self._max_served} advertised {self.kind} per client')
        self._check_codecs(cls)
        self._served[name] = ServedEndpoint(name, cls, advertised_type)
        events.append(self._advertised(name, cls, rid))

    def handle_unadvertise(self, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
        name = fields.ros_name(message, self.field)
        if self._served.pop(name, None) is None:
            raise ProtocolError(f'{name} is not advertised by this client')
        self._forget_incoming(name)  # the ROS side fails the requests still waiting when it destroys the endpoint
        events.append(self._unadvertised(name))

    @abstractmethod
    def _check_codecs(self, cls: type) -> None:
        """Fails now, not on the first request, when a part of the type cannot be converted."""

    def refused(self, name: str) -> None:
        """The ROS side refused to serve `name` (someone else serves it): forget it."""
        self._served.pop(name, None)

    # --- requests from ROS -----------------------------------------------------------------------------

    def forward(self, name: str, token: int, request: Any) -> list[Event]:
        """A ROS request for `name`: forward it to the client with a fresh id. Returns the events to apply now:
        the failure of the request when it cannot be forwarded."""
        served = self._served.get(name)
        port = self._port
        if served is None or port.closing:
            return [self._failed(name, token, f'{name}: the serving client is gone')]
        if len(self._incoming) >= self._max_in_flight:
            port.count(self.failed_counter)
            why = f'{name}: the serving client has {self._max_in_flight} {self.request_word}s in flight already'
            return [self._failed(name, token, why)]
        request_id = f'{self.id_prefix}:{name}:{port.new_id()}'
        message = self._request_message(served, request_id, request)
        self._incoming[request_id] = IncomingRequest(request_id, name, token, port.now() + self._timeout_s)
        port.send(message)
        return []

    def _answered(self, message: dict[str, Any], rid: Rid) -> IncomingRequest:
        """The forwarded request an answer op (with id `rid`) is about; still waiting."""
        word = self.request_word
        if rid is None:
            raise ProtocolError(f'{self._a(message)} needs the "id" of the {self.request_op} it answers')
        incoming = self._incoming.get(rid) if isinstance(rid, str) else None
        if incoming is None:
            raise ProtocolError(f'no {word} with id {rid!r} {self.not_waiting}')
        named = fields.text(message, self.field, required=False)
        if named and fields.ros_name(message, self.field) != incoming.name:
            raise ProtocolError(f'{word} {rid!r} is for {incoming.name}, not {named[:80]}')
        return incoming

    @staticmethod
    def _a(message: dict[str, Any]) -> str:
        op = str(message.get('op'))
        return f'{"an" if op[0] in "aeiou" else "a"} {op}'

    def _done(self, incoming: IncomingRequest) -> None:
        del self._incoming[incoming.request_id]

    def _forget_incoming(self, name: str) -> None:
        for request_id in [k for k, incoming in self._incoming.items() if incoming.name == name]:
            del self._incoming[request_id]

    # --- time and end ------------------------------------------------------------------------------------

    def next_wake(self) -> float | None:
        return next(iter(self._incoming.values())).deadline if self._incoming else None

    def poll(self, now: float, events: list[Event]) -> None:
        """Fail the forwarded requests whose answer is overdue."""
        while self._incoming:
            incoming = next(iter(self._incoming.values()))
            if incoming.deadline > now:
                break
            del self._incoming[incoming.request_id]
            self._port.count(self.failed_counter)
            events.append(self._failed(incoming.name, incoming.token, self._timeout_reason(incoming.name)))
            self._port.status(
                'warning',
                f'{self.request_word} {incoming.request_id} got no {self.answer_op} within {self._timeout_s:g} s',
                incoming.request_id,
            )

    def finish(self) -> list[Event]:
        """Unadvertise everything (the ROS side fails the requests still waiting)."""
        events = [self._unadvertised(name) for name in self._served]
        self._served.clear()
        self._incoming.clear()
        return events


class ServedServices(ServedEndpoints):
    """advertise_service / unadvertise_service / service_response; ROS calls go out as `call_service`."""

    field = 'service'
    acl_action = Action.ADVERTISE_SERVICE
    kind = 'services'
    request_word = 'call'
    id_prefix = 'service_request'  # rosbridge's form of these ids
    answer_op = 'service_response'
    failed_counter = 'served_failed'
    request_op = 'call_service'
    not_waiting = 'is waiting for a response (unknown, answered or timed out)'

    def _load(self, advertised_type: str) -> type:
        return service_class(advertised_type)

    def _check_codecs(self, cls: type) -> None:
        codec_for(cls.Request)  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
        codec_for(cls.Response)  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import

    def _advertised(self, name: str, cls: type, rid: Rid) -> Event:
        return AdvertiseService(name, cls, rid)

    def _unadvertised(self, name: str) -> Event:
        return UnadvertiseService(name)

    def _failed(self, name: str, token: int, why: str) -> Event:
        return ServiceReply(name, token, None, why)

    def _timeout_reason(self, name: str) -> str:
        return f'{name}: no response within {self._timeout_s:g} s'

    def _request_message(self, served: ServedEndpoint, request_id: str, request: Any) -> dict[str, Any]:
        args = codec_for(served.cls.Request).to_json(request)  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
        return {'op': 'call_service', 'id': request_id, 'service': served.name, 'args': args}

    def handle_service_response(self, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
        call = self._answered(message, rid)
        result = message.get('result', True)
        if not isinstance(result, bool):
            raise ProtocolError(f'field "result" must be true or false, got {type(result).__name__}')
        self._done(call)
        served = self._served.get(call.name)
        if served is None:  # unadvertised meanwhile: the ROS side already answered the caller
            return
        values = message.get('values')
        if not result:
            reason = values if isinstance(values, str) else 'the serving client reported a failure'
            events.append(ServiceReply(call.name, call.token, None, f'{call.name}: {reason[:200]}'))
            return
        try:
            response = codec_for(served.cls.Response).from_json(fields.values_of(message, 'values'))  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
        except ConversionError as exc:
            events.append(ServiceReply(call.name, call.token, None, f'{call.name}: invalid response from client'))
            why = f'values do not fit {call.name}: {exc} (the ROS caller got a failed response)'
            raise ProtocolError(why) from None
        self._port.count('served')
        events.append(ServiceReply(call.name, call.token, response))


class ServedActions(ServedEndpoints):
    """advertise_action / unadvertise_action / action_feedback / action_result; ROS goals go out as
    `send_action_goal`, ROS cancel requests as `cancel_action_goal`."""

    field = 'action'
    acl_action = Action.ADVERTISE_ACTION
    kind = 'actions'
    request_word = 'goal'
    id_prefix = 'send_action_goal'
    answer_op = 'action_result'
    failed_counter = 'served_goals_failed'
    request_op = 'send_action_goal'
    not_waiting = 'is in flight (unknown, finished or timed out)'

    def _load(self, advertised_type: str) -> type:
        return action_class(advertised_type)

    def _check_codecs(self, cls: type) -> None:
        for part in ('Goal', 'Feedback', 'Result'):
            codec_for(getattr(cls, part))

    def _advertised(self, name: str, cls: type, rid: Rid) -> Event:
        return AdvertiseAction(name, cls, rid)

    def _unadvertised(self, name: str) -> Event:
        return UnadvertiseAction(name)

    def _failed(self, name: str, token: int, why: str) -> Event:
        return ServedGoalResult(name, token, ABORTED, None, why)

    def _timeout_reason(self, name: str) -> str:
        return f'no action_result within {self._timeout_s:g} s'

    def _request_message(self, served: ServedEndpoint, request_id: str, request: Any) -> dict[str, Any]:
        args = codec_for(served.cls.Goal).to_json(request)  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
        return {
            'op': 'send_action_goal',
            'id': request_id,
            'action': served.name,
            'action_type': served.type_name or type_name(served.cls),  # as the client advertised it
            'args': args,
            'feedback': True,
        }

    def cancel_request(self, action: str, token: int) -> None:
        """A ROS client asked to cancel a goal this client is serving: tell it with `cancel_action_goal`."""
        for goal in self._incoming.values():
            if goal.token == token and goal.name == action:
                self._port.send({'op': 'cancel_action_goal', 'id': goal.request_id, 'action': action})
                return

    def handle_action_feedback(self, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
        goal = self._answered(message, rid)
        served = self._served[goal.name]
        feedback = codec_for(served.cls.Feedback).from_json(fields.values_of(message, 'values'))  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
        events.append(ServedGoalFeedback(goal.name, goal.token, feedback))

    def handle_action_result(self, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
        goal = self._answered(message, rid)
        served = self._served[goal.name]
        result = message.get('result', True)
        if not isinstance(result, bool):
            raise ProtocolError(f'field "result" must be true or false, got {type(result).__name__}')
        status = message.get('status', SUCCEEDED if result else ABORTED)
        if type(status) is not int:
            raise ProtocolError(f'field "status" must be an integer GoalStatus code, got {type(status).__name__}')
        self._done(goal)
        port = self._port
        if not result or status not in (SUCCEEDED, CANCELED):
            port.count('served_goals_failed')
            why = 'the serving client reported a failure'
            events.append(ServedGoalResult(goal.name, goal.token, ABORTED, None, why))
            return
        try:
            values = codec_for(served.cls.Result).from_json(fields.values_of(message, 'values'))  # type: ignore[attr-defined]  # rosidl srv/action classes gain Request, Goal... at import
        except ConversionError as exc:
            port.count('served_goals_failed')
            events.append(ServedGoalResult(goal.name, goal.token, ABORTED, None, 'invalid result from the client'))
            raise ProtocolError(f'values do not fit {goal.name}: {exc} (the ROS goal was aborted)') from None
        port.count('served_goals')
        events.append(ServedGoalResult(goal.name, goal.token, status, values))
