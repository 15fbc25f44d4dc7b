"""The topics capability: subscribe / unsubscribe (delivery with throttling, queue lengths, fragments, staleness and
drop reports) and advertise / unadvertise / publish (incoming publishes, and the ones shed unparsed)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from fleet_gateway.acl import AccessPolicy, Action
from fleet_gateway.conversion import codec_for, message_class
from fleet_gateway.protocol import fields
from fleet_gateway.protocol.events import (
    AdvertiseTopic,
    Event,
    PublishMessage,
    SubscribeTopic,
    UnadvertiseTopic,
    UnsubscribeTopic,
)
from fleet_gateway.protocol.fields import ProtocolError, Rid
from fleet_gateway.protocol.port import SessionPort
from fleet_gateway.protocol.published import PublishedMessage

MAX_IDS_PER_TOPIC = 64


@dataclass
class Subscription:
    """A client's subscription to one topic; several subscribe ids may share it (effective options merged)."""

    topic: str
    msg_cls: type
    critical: bool
    options: dict[Any, tuple[float, int, int, str]] = field(default_factory=dict)
    throttle_s: float = 0.0
    queue_length: int = 0
    fragment_size: int = 0
    encoding: str = 'none'
    last_sent: float = -1e18
    last_batch: float = -1e18
    """When the last batch of this topic was delivered (paces a client that is behind, see `backlog_rate`)."""
    pending: deque[PublishedMessage] = field(default_factory=deque)

    def merge(self) -> None:
        values = list(self.options.values())
        self.throttle_s = min(v[0] for v in values)
        self.queue_length = max(v[1] for v in values)
        sizes = [v[2] for v in values if v[2] > 0]
        self.fragment_size = min(sizes) if sizes else 0
        self.encoding = values[-1][3]


@dataclass
class Advertisement:
    topic: str
    msg_cls: type
    ids: set[Any] = field(default_factory=set)
    codec: Any = None
    """The type's `MessageCodec` (conversion.codec_for), looked up once at advertise time."""


class Topics:
    """One client's subscriptions and advertisements."""

    def __init__(
        self, port: SessionPort, policy: AccessPolicy, resolve_type: Callable[[str], str | None] | None
    ) -> None:
        self._port = port
        self._policy = policy
        self._resolve_type = resolve_type or (lambda _topic: None)
        self._subscriptions: dict[str, Subscription] = {}
        self._advertisements: dict[str, Advertisement] = {}
        self.subscriptions: Mapping[str, Subscription] = MappingProxyType(self._subscriptions)
        self.advertisements: Mapping[str, Advertisement] = MappingProxyType(self._advertisements)
        self._throttle_wake: float | None = None
        self._reported_drops = 0
        self._reported_stale = 0
        self._next_drop_report = 0.0
        self.shed_by_topic: dict[str, int] = {}
        """Incoming publishes the gateway dropped unparsed because it was over capacity, by topic."""
        self._shed = 0
        self._reported_shed = 0
        self._next_shed_report = 0.0
        self.backlog_keep = 0
        """Set by the transport while this client is behind (its in-flight window is full): how many frames per
        telemetry topic are worth queueing (about what it reads within a staleness bound); 0: no such cap."""
        self.backlog_rate = 0.0
        """Set with `backlog_keep`: frames per second the client reads. Of each telemetry batch a client that is
        behind takes only the newest it can read until the next one (the rest counted as dropped at once), so the
        fan-out costs what clients read, not clients x messages."""

    # --- ops ----------------------------------------------------------------------------------------------

    def handle_advertise(self, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
        topic = fields.ros_name(message, 'topic')
        msg_cls = message_class(fields.text(message, 'type'))
        self._port.allow(Action.PUBLISH, topic)
        existing = self._advertisements.get(topic)
        if existing is not None:
            if existing.msg_cls is not msg_cls:
                raise ProtocolError(f'{topic} is already advertised by this client with another type')
            existing.ids.add(rid)
            return
        limit = self._port.limits.max_publishers
        if len(self._advertisements) >= limit:
            raise ProtocolError(f'at most {limit} advertised topics per client')
        codec = codec_for(msg_cls)  # fails now, not on the first publish, when the type cannot be converted
        self._advertisements[topic] = Advertisement(topic, msg_cls, {rid}, codec)
        events.append(AdvertiseTopic(topic, msg_cls, latch=message.get('latch') is True))

    def handle_unadvertise(self, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
        topic = fields.ros_name(message, 'topic')
        if self._advertisements.pop(topic, None) is None:
            raise ProtocolError(f'{topic} is not advertised by this client')
        events.append(UnadvertiseTopic(topic))

    def handle_publish(self, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
        topic = message.get('topic')
        # hot path: a topic spelled exactly as advertised (keys are validated, absolute names) skips name parsing
        advertised = self._advertisements.get(topic) if type(topic) is str else None
        if advertised is None:
            topic = fields.ros_name(message, 'topic')
            advertised = self._advertisements.get(topic)
            if advertised is None:
                raise ProtocolError(f'advertise {topic} (op "advertise" with its type) before publishing to it')
        payload = message.get('msg', {})
        msg = advertised.codec.to_publish(payload)  # CDR bytes for flat types, else a message instance
        self._port.count('published')
        events.append(PublishMessage(advertised.topic, msg))

    def handle_subscribe(self, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
        port = self._port
        topic = fields.ros_name(message, 'topic')
        port.allow(Action.SUBSCRIBE, topic)
        given = fields.text(message, 'type', required=False)
        type_name = given or self._resolve_type(topic)
        if not type_name:
            raise ProtocolError(f'no type given for {topic} and no publisher advertises it yet: add "type"')
        msg_cls = message_class(type_name)
        throttle_ms = fields.number(message, 'throttle_rate', 0.0, maximum=3_600_000)
        queue_length = int(fields.number(message, 'queue_length', 0, maximum=port.limits.send_queue_frames))
        fragment_size, encoding = fields.delivery_options(message, fields.TOPIC_ENCODINGS)
        sub = self._subscriptions.get(topic)
        if sub is not None and sub.msg_cls is not msg_cls:
            raise ProtocolError(f'{topic} is already subscribed by this client with another type')
        if sub is None:
            if len(self._subscriptions) >= port.limits.max_subscriptions:
                raise ProtocolError(f'at most {port.limits.max_subscriptions} subscriptions per client')
            codec_for(msg_cls)
            sub = Subscription(topic, msg_cls, critical=self._policy.is_critical(topic))
            self._subscriptions[topic] = sub
            events.append(SubscribeTopic(topic, msg_cls, rid))
        elif rid not in sub.options and len(sub.options) >= MAX_IDS_PER_TOPIC:
            raise ProtocolError(f'at most {MAX_IDS_PER_TOPIC} subscribe ids per topic ({topic})')
        sub.options[rid] = (throttle_ms / 1000.0, queue_length, fragment_size, encoding)
        sub.merge()

    def handle_unsubscribe(self, message: dict[str, Any], rid: Rid, events: list[Event]) -> None:
        topic = fields.ros_name(message, 'topic')
        sub = self._subscriptions.get(topic)
        if sub is None:
            raise ProtocolError(f'{topic} is not subscribed by this client')
        if rid is not None and rid in sub.options and len(sub.options) > 1:
            del sub.options[rid]
            sub.merge()
            return
        del self._subscriptions[topic]
        events.append(UnsubscribeTopic(topic))

    # --- the ROS side refused an endpoint ---------------------------------------------------------------

    def refused_subscription(self, topic: str) -> None:
        self._subscriptions.pop(topic, None)

    def refused_advertisement(self, topic: str) -> None:
        self._advertisements.pop(topic, None)

    # --- delivery -------------------------------------------------------------------------------------------

    def deliver(self, published: PublishedMessage, now: float) -> None:
        """A message arrived on a topic this client subscribes to."""
        sub = self._subscriptions.get(published.topic)
        if sub is None or self._port.closing:
            return
        if sub.throttle_s > 0 and not sub.critical:
            if now - sub.last_sent < sub.throttle_s:
                if len(sub.pending) >= max(1, sub.queue_length):
                    sub.pending.popleft()
                    self._port.count('throttle_dropped')
                sub.pending.append(published)
                wake = sub.last_sent + sub.throttle_s
                if self._throttle_wake is None or wake < self._throttle_wake:
                    self._throttle_wake = wake
                return
            sub.last_sent = now
        self._enqueue(sub, published)
        self._report_drops_if_due(now)

    def deliver_batch(self, topic: str, batch: list[PublishedMessage], now: float) -> None:
        """Several messages of one topic, oldest first (what one hand-off from the ROS thread carries).

        Equivalent to `deliver` per message, but when a batch is longer than what the subscription may hold the
        older surplus is counted as dropped at once instead of being queued and evicted one by one."""
        sub = self._subscriptions.get(topic)
        if sub is None or self._port.closing:
            return
        if sub.critical or sub.throttle_s > 0 or sub.fragment_size or len(batch) == 1:
            for published in batch:
                self.deliver(published, now)
            return
        outbox = self._port.outbox
        telemetry = batch[-1].expires is not None
        keep = sub.queue_length or (self._port.limits.send_queue_frames if telemetry else len(batch))  # reliable: all
        queue_length = sub.queue_length
        if self.backlog_keep and telemetry and self.backlog_keep < keep:
            keep = queue_length = self.backlog_keep  # behind on telemetry: more would only go stale here
            keep = min(keep, 1 + int(self.backlog_rate * max(0.0, now - sub.last_batch)))
        sub.last_batch = now
        if len(batch) > keep:
            surplus = len(batch) - keep
            outbox.count_drops(topic, surplus)
            batch = batch[surplus:]
        encoding = sub.encoding
        put = self._port.put  # a reliable topic beyond the never-dropped budget closes the client: never a gap
        for published in batch:
            put(published.frame(encoding), topic, queue_length)
        self._port.count('delivered', len(batch))
        self._report_drops_if_due(now)

    def note_stale(self, topic: str, count: int, now: float) -> None:
        """`count` messages of `topic` were already past their staleness bound when they reached the fan-out."""
        if topic in self._subscriptions and not self._port.closing:
            self._port.outbox.count_drops(topic, count, stale=True)
            if now >= self._next_drop_report:
                self._report_drops(now)

    def note_shed(self, topic: str, count: int, now: float) -> None:
        """The gateway dropped `count` of this client's publishes to a best-effort topic without parsing them (over
        capacity). Counted; the client is told like for outgoing drops, at most once per drop_report_interval_s."""
        self._port.count('shed', count)
        self._shed += count
        self.shed_by_topic[topic] = self.shed_by_topic.get(topic, 0) + count
        if now < self._next_shed_report:
            return
        total = self._shed
        new = total - self._reported_shed
        self._reported_shed = total
        self._next_shed_report = now + self._port.limits.drop_report_interval_s
        self._port.status(
            'warning',
            f'the gateway is over capacity: dropped {new} of your publishes to best-effort topics '
            f'({total} in total; by topic {top_three(self.shed_by_topic)})',
            None,
        )

    def _enqueue(self, sub: Subscription, published: PublishedMessage) -> None:
        self._port.count('delivered')
        frame = published.frame(sub.encoding)
        if sub.fragment_size and frame.size > sub.fragment_size and isinstance(frame.data, str):
            for piece in self._port.fragment(frame.data, sub.fragment_size, critical=frame.critical):
                self._port.put(piece)
            return
        self._port.put(frame, sub.topic, sub.queue_length)

    def _report_drops_if_due(self, now: float) -> None:
        if self._port.outbox.dropped_total != self._reported_drops and now >= self._next_drop_report:
            self._report_drops(now)

    def _report_drops(self, now: float) -> None:
        outbox = self._port.outbox
        new = outbox.dropped_total - self._reported_drops
        stale = outbox.stale_total - self._reported_stale
        self._reported_drops = outbox.dropped_total
        self._reported_stale = outbox.stale_total
        self._next_drop_report = now + self._port.limits.drop_report_interval_s
        why = f', {stale} of them older than their staleness bound (max_staleness_ms)' if stale else ''
        self._port.status(
            'warning',
            f'client {self._port.client_id} is not keeping up: dropped {new} telemetry messages{why} '
            f'({outbox.dropped_total} in total; by topic {top_three(outbox.drops)})',
            None,
        )

    # --- time and end ------------------------------------------------------------------------------------

    def next_wake(self) -> float | None:
        """The next throttled delivery, or the next drop report while drops are unreported."""
        report = self._next_drop_report if self._port.outbox.dropped_total != self._reported_drops else None
        wakes = [d for d in (self._throttle_wake, report) if d is not None]
        return min(wakes) if wakes else None

    def poll_throttled(self, now: float) -> None:
        if self._throttle_wake is None or now < self._throttle_wake:
            return
        self._throttle_wake = None
        for sub in self._subscriptions.values():
            if not sub.pending:
                continue
            due = sub.last_sent + sub.throttle_s
            if now >= due:
                sub.last_sent = now
                self._enqueue(sub, sub.pending.popleft())
                due = now + sub.throttle_s
            if sub.pending and (self._throttle_wake is None or due < self._throttle_wake):
                self._throttle_wake = due

    def poll_reports(self, now: float) -> None:
        self._report_drops_if_due(now)

    def finish(self) -> list[Event]:
        events: list[Event] = [UnsubscribeTopic(topic) for topic in self._subscriptions]
        events.extend(UnadvertiseTopic(topic) for topic in self._advertisements)
        self._subscriptions.clear()
        self._advertisements.clear()
        return events


def top_three(counts: Mapping[Any, int]) -> str:
    """The three largest counts, for a drop report: "topic: n, ..."."""
    worst = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    return ', '.join(f'{key}: {count}' for key, count in worst)
