"""What Foxglove clients publish (ws-protocol client publish), checked against their role and carried out in ROS.

A client advertises a channel (topic, encoding, schema name); the access policy says whether its role may publish
that schema there. Allowed publications are requests, not raw ROS traffic: an `EStop` on a shard's e-stop topic
becomes a `set_estop` call on the shard leader, which assigns the revision and latches the state (publishing the
message itself would bypass the leader's revisions). Decoding and the ROS call run on a worker thread so that the
SDK's thread that delivered the message never waits on ROS.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rclpy.serialization import deserialize_message

from fleet_core import topics
from fleet_observability.foxglove_services import AccessPolicy, ForwardError, RosServiceForwarder

ESTOP_SCHEMA = 'fleet_interfaces/msg/EStop'


class PublishRefused(PermissionError):
    """A client publication its role does not allow, or one the server cannot carry out."""


@dataclass(frozen=True, slots=True)
class ClientPublication:
    """One channel a client advertised and may publish on."""

    client_id: int
    role: str | None
    """None: not logged in (refused unless the server has no tokens)."""
    topic: str
    encoding: str
    schema_name: str


StatusSink = Callable[[str, bool], None]
"""(message, is_warning): how results reach the clients."""
ForwarderLookup = Callable[[str], RosServiceForwarder | None]


class ClientPublications:
    """Client channels by (client id, channel id); `message()` carries one publication out on a worker thread."""

    def __init__(
        self, policy: AccessPolicy, forwarder: ForwarderLookup, status: StatusSink, logger: Any, *, workers: int = 2
    ) -> None:
        self._policy = policy
        self._forwarder = forwarder
        self._status = status
        self._log = logger
        self._channels: dict[tuple[int, int], ClientPublication] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix='foxglove-publish')

    def advertise(self, publication: ClientPublication, channel_id: int) -> None:
        """Raises PublishRefused when the role may not publish this schema on this topic."""
        refusal = self._policy.publish_refusal(publication.role, publication.topic, publication.schema_name)
        if refusal is not None:
            raise PublishRefused(refusal)
        if publication.encoding not in ('cdr', 'json'):
            raise PublishRefused(f'{publication.topic}: encoding must be cdr or json, not {publication.encoding!r}')
        with self._lock:
            self._channels[(publication.client_id, channel_id)] = publication

    def unadvertise(self, client_id: int, channel_id: int) -> None:
        """A client's unadvertise; the SDK also calls it for each of a client's channels when it disconnects."""
        with self._lock:
            self._channels.pop((client_id, channel_id), None)

    def message(self, client_id: int, channel_id: int, data: bytes) -> bool:
        """Queue one published message; False (and a log line) when the channel was not allowed."""
        with self._lock:
            publication = self._channels.get((client_id, channel_id))
        if publication is None:
            self._log.warning(f'foxglove client {client_id}: message on channel {channel_id} it may not publish on')
            return False
        self._pool.submit(self._carry_out, publication, bytes(data))
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _carry_out(self, publication: ClientPublication, data: bytes) -> None:
        try:
            text = self._estop(publication, data)
        except (PublishRefused, ForwardError, ValueError) as exc:
            self._log.warning(f'foxglove client {publication.client_id} ({publication.role}): {exc}')
            self._status(f'{publication.topic}: {exc}', True)
            return
        self._log.warning(f'foxglove client {publication.client_id} ({publication.role}): {text}')
        self._status(text, False)

    def _estop(self, publication: ClientPublication, data: bytes) -> str:
        from fleet_interfaces.msg import EStop  # noqa: PLC0415 - the interfaces package is optional here
        from fleet_interfaces.srv import SetEStop  # noqa: PLC0415

        parsed = topics.parse_shard_name(publication.topic)
        if parsed is None or parsed[2] != topics.ESTOP or publication.schema_name != ESTOP_SCHEMA:
            raise PublishRefused(f'{publication.topic}: no handler for {publication.schema_name}')
        site, shard, _leaf = parsed
        if publication.encoding == 'cdr':
            try:
                msg = deserialize_message(data, EStop)
            except RuntimeError as exc:
                raise ValueError(f'malformed EStop: {exc}') from None
            engaged, reason, issued_by = bool(msg.engaged), str(msg.reason), str(msg.issued_by)
        else:
            try:
                fields = json.loads(data.decode('utf-8'))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise ValueError('EStop in json encoding must be a JSON object') from None
            if not isinstance(fields, dict) or not isinstance(fields.get('engaged'), bool):
                raise ValueError('EStop in json encoding needs a boolean "engaged"')
            engaged, reason = fields['engaged'], str(fields.get('reason', ''))
            issued_by = str(fields.get('issued_by', ''))
        issued_by = issued_by or f'foxglove client {publication.client_id} ({publication.role})'
        service = topics.shard_set_estop(site, shard)
        forwarder = self._forwarder(service)
        if forwarder is None:
            raise ForwardError(f'{service}: no shard leader serves it right now')
        request = SetEStop.Request(engage=engaged, reason=reason[:200], issued_by=issued_by[:64])
        response = forwarder.call_request(request)
        verb = 'engage' if engaged else 'release'
        if not response.ok:
            raise ForwardError(f'e-stop {verb} on {site}/{shard} refused by the leader: {response.error}')
        return f'e-stop {verb}d on {site}/{shard} by {issued_by} (revision {response.revision})'
