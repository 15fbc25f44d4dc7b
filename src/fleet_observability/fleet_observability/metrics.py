"""Prometheus metrics of orchestrators and the gateway, in a registry owned by one FleetMetrics instance.

No module-level registry: each process (or test) builds its own FleetMetrics and, when wanted, serves it over
HTTP with `serve()`. Hot paths use ShardMetrics, whose label children are bound once per shard.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

from fleet_core.model import AckStatus, Outcome, Priority
from fleet_observability.binding import is_loopback

ACK_LATENCY_BUCKETS_SEC: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Final-ack latency buckets: loopback round trips are about a millisecond, retries push into seconds."""


class MetricsServeError(RuntimeError):
    """The metrics HTTP endpoint could not be started (address in use, or a non-loopback bind refused)."""


@dataclass(frozen=True, slots=True)
class MetricsEndpoint:
    """A running /metrics HTTP server; `close()` stops it."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f'http://{self.host}:{self.port}/metrics'

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2.0)


class ShardMetrics:
    """The metrics of one shard with labels bound once: cheap enough to call on every ack."""

    def __init__(self, owner: FleetMetrics, site: str, shard: str) -> None:
        self.site = site
        self.shard = shard
        labels = {'site': site, 'shard': shard}
        self._acks = {status: owner.acks.labels(status=status.name, **labels) for status in AckStatus}
        self._outcomes = {outcome: owner.outcomes.labels(outcome=outcome.name, **labels) for outcome in Outcome}
        self._latency = owner.ack_latency.labels(**labels)
        self._retries = owner.retries.labels(**labels)
        self._expirations = owner.expirations.labels(**labels)
        self._duplicates = owner.duplicates_suppressed.labels(**labels)
        self._queue = {p: owner.queue_depth.labels(priority=p.name, **labels) for p in Priority}
        self._degradation = owner.degradation_level.labels(**labels)
        self._in_flight = owner.in_flight.labels(**labels)

    def ack(self, status: AckStatus, latency_sec: float | None = None) -> None:
        """Count one ack; give `latency_sec` (submit to final ack) for final acks."""
        self._acks[status].inc()
        if latency_sec is not None:
            self._latency.observe(max(0.0, latency_sec))

    def ack_latency(self, latency_sec: float) -> None:
        """Submit-to-final-ack latency of one command (the orchestrator knows it when the outcome is decided)."""
        self._latency.observe(max(0.0, latency_sec))

    def outcome(self, outcome: Outcome) -> None:
        self._outcomes[outcome].inc()
        if outcome == Outcome.EXPIRED:
            self._expirations.inc()

    def retry(self, count: int = 1) -> None:
        self._retries.inc(count)

    def duplicate_suppressed(self, count: int = 1) -> None:
        self._duplicates.inc(count)

    def set_queue_depths(self, depths: Sequence[int] | Mapping[Priority, int]) -> None:
        """Depths indexed by Priority (a 4-sequence like ShardStatus.queue_depth, or a mapping)."""
        items = depths.items() if isinstance(depths, Mapping) else zip(Priority, depths, strict=False)
        for priority, depth in items:
            self._queue[Priority(priority)].set(depth)

    def set_in_flight(self, count: int) -> None:
        self._in_flight.set(count)

    def set_degradation(self, level: int) -> None:
        self._degradation.set(level)


class FleetMetrics:
    """The named fleet metrics in a private CollectorRegistry.

    Metric names (all prefixed `fleet_`): acks_total{site,shard,status}, outcomes_total{site,shard,outcome},
    ack_latency_seconds{site,shard} (histogram), retries_total, expirations_total, duplicates_suppressed_total,
    queue_depth{site,shard,priority}, degradation_level, in_flight, gateway_connections{gateway,role}.
    """

    def __init__(self, *, namespace: str = 'fleet') -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        shard = ('site', 'shard')
        reg = self.registry
        self.acks = Counter('acks', 'Command acks received, by status', [*shard, 'status'], namespace=namespace,
                            registry=reg)  # fmt: skip
        self.outcomes = Counter('outcomes', 'Terminal command outcomes', [*shard, 'outcome'], namespace=namespace,
                                registry=reg)  # fmt: skip
        self.ack_latency = Histogram(
            'ack_latency_seconds',
            'Submit-to-final-ack latency',
            shard,
            namespace=namespace,
            registry=reg,
            buckets=ACK_LATENCY_BUCKETS_SEC,
        )
        self.retries = Counter('retries', 'Re-deliveries of the same command', shard, namespace=namespace, registry=reg)
        self.expirations = Counter('expirations', 'Commands that expired', shard, namespace=namespace, registry=reg)
        self.duplicates_suppressed = Counter(
            'duplicates_suppressed', 'Duplicate deliveries or acks suppressed', shard, namespace=namespace, registry=reg
        )
        self.queue_depth = Gauge(
            'queue_depth', 'Queued commands by priority', [*shard, 'priority'], namespace=namespace, registry=reg
        )
        self.degradation_level = Gauge(
            'degradation_level', '0 normal, 1 telemetry reduced, 2 minimal + LOW shed', shard, namespace=namespace,
            registry=reg,
        )  # fmt: skip
        self.in_flight = Gauge('in_flight', 'Commands awaiting a final ack', shard, namespace=namespace, registry=reg)
        self.gateway_connections = Gauge(
            'gateway_connections', 'Open gateway client connections', ['gateway', 'role'], namespace=namespace,
            registry=reg,
        )  # fmt: skip
        self._shards: dict[tuple[str, str], ShardMetrics] = {}
        self._lock = threading.Lock()

    def shard(self, site: str, shard: str) -> ShardMetrics:
        """The (cached) bound metrics of one shard."""
        key = (site, shard)
        with self._lock:
            found = self._shards.get(key)
            if found is None:
                found = self._shards[key] = ShardMetrics(self, site, shard)
            return found

    def set_gateway_connections(self, count: int, *, gateway: str = 'gateway', role: str = 'all') -> None:
        self.gateway_connections.labels(gateway=gateway, role=role).set(count)

    def connection_opened(self, *, gateway: str = 'gateway', role: str = 'all') -> None:
        self.gateway_connections.labels(gateway=gateway, role=role).inc()

    def connection_closed(self, *, gateway: str = 'gateway', role: str = 'all') -> None:
        self.gateway_connections.labels(gateway=gateway, role=role).dec()

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry (what /metrics returns)."""
        return generate_latest(self.registry)

    def sample(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """One sample's value by full name (e.g. 'fleet_acks_total'), or None when absent."""
        value = self.registry.get_sample_value(name, dict(labels or {}))
        return None if value is None else float(value)

    def serve(self, port: int, host: str = '127.0.0.1', *, allow_remote: bool = False) -> MetricsEndpoint:
        """Serve /metrics on host:port (port 0 picks a free one). Non-loopback hosts need `allow_remote=True`.

        Raises MetricsServeError when the bind fails or is refused.
        """
        if not is_loopback(host) and not allow_remote:
            raise MetricsServeError(
                f'refusing to serve metrics on {host}: pass allow_remote=True (--metrics-allow-remote) to expose them'
            )
        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise MetricsServeError(f'cannot serve metrics on {host}:{port}: {exc.strerror or exc}') from None
        return MetricsEndpoint(host=host, port=int(server.server_port), _server=server, _thread=thread)
