"""The gateway's Prometheus metrics: read from `GatewayServer.stats()` at scrape time. The exporter's HTTP thread
asks the event loop for the figures (`run_coroutine_threadsafe`), so nothing is read while the loop changes it and
the loop pays nothing between scrapes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from fleet_observability.metrics import FleetMetrics, MetricsEndpoint

SCRAPE_TIMEOUT_S = 2.0

COUNTERS = (
    ('sessions_admitted', 'Client sessions admitted'),
    ('sessions_closed', 'Client sessions closed'),
    ('rejected_admission', 'Connection attempts told to retry later (admission control)'),
    ('rejected_auth', 'Connection attempts with an unknown token'),
    ('dropped_total', 'Outgoing telemetry messages dropped for slow clients (oldest first)'),
    ('shed_total', 'Incoming publishes to best-effort topics dropped unparsed while over the ingest budget'),
    ('internal_errors', 'Errors inside the gateway (a bug if not 0)'),
    ('ros_messages_received', 'ROS messages received for subscribed clients'),
)
"""(key of `GatewayServer.stats()`, help) of the counters, exposed as `fleet_gateway_<key>_total` (a key that already
ends in `_total` keeps one)."""


class GatewayCollector:
    """One scrape: `fleet_gateway_clients` and the COUNTERS, labelled with the gateway's name."""

    def __init__(self, stats: Callable[[], Mapping[str, Any]], loop: asyncio.AbstractEventLoop, gateway: str) -> None:
        self._stats = stats
        self._loop = loop
        self._gateway = gateway

    def describe(self) -> Iterator[Metric]:
        """The families without values (so registering never scrapes, which from the loop's own thread would
        wait on itself)."""
        yield from self._families({})

    def collect(self) -> Iterator[Metric]:
        async def read() -> dict[str, Any]:
            return dict(self._stats())

        yield from self._families(asyncio.run_coroutine_threadsafe(read(), self._loop).result(SCRAPE_TIMEOUT_S))

    def _families(self, stats: dict[str, Any]) -> Iterator[Metric]:
        clients = GaugeMetricFamily('fleet_gateway_clients', 'Open client connections', labels=['gateway'])
        if stats:
            clients.add_metric([self._gateway], stats.get('clients', 0))
        yield clients
        for name, text in COUNTERS:
            family = CounterMetricFamily(f'fleet_gateway_{name}', text, labels=['gateway'])
            if stats:
                family.add_metric([self._gateway], stats.get(name, 0))
            yield family


def serve_gateway_metrics(
    stats: Callable[[], Mapping[str, Any]], loop: asyncio.AbstractEventLoop, port: int, gateway: str
) -> MetricsEndpoint:
    """/metrics on 127.0.0.1:`port` (0: any free port) with the gateway's figures."""
    metrics = FleetMetrics()
    metrics.registry.register(GatewayCollector(stats, loop, gateway))
    return metrics.serve(port)


class ClusterCollector:
    """One scrape of a gateway cluster (`transport.workers`): `fleet_gateway_clients` and the COUNTERS of every worker
    (labels `gateway`, `worker`) and their sum (`worker="sum"`), from the snapshots the workers write."""

    def __init__(self, snapshots: Callable[[], list[dict[str, Any]]]) -> None:
        self._snapshots = snapshots

    def describe(self) -> Iterator[Metric]:
        yield from self._families([])

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._snapshots())

    @staticmethod
    def _families(snapshots: list[dict[str, Any]]) -> Iterator[Metric]:
        labels = ['gateway', 'worker']
        gateway = str(snapshots[0].get('gateway', '')) if snapshots else ''
        families: list[tuple[str, GaugeMetricFamily | CounterMetricFamily]] = [
            ('clients', GaugeMetricFamily('fleet_gateway_clients', 'Open client connections', labels=labels))
        ]
        families += [
            (name, CounterMetricFamily(f'fleet_gateway_{name}', text, labels=labels)) for name, text in COUNTERS
        ]
        for key, family in families:
            for snapshot in snapshots:
                family.add_metric([gateway, str(snapshot['worker'])], snapshot.get(key, 0))
            if snapshots:
                family.add_metric([gateway, 'sum'], sum(s.get(key, 0) for s in snapshots))
            yield family


def serve_cluster_metrics(snapshots: Callable[[], list[dict[str, Any]]], port: int) -> MetricsEndpoint:
    """/metrics of a gateway cluster on 127.0.0.1:`port` (0: any free port)."""
    metrics = FleetMetrics()
    metrics.registry.register(ClusterCollector(snapshots))
    return metrics.serve(port)
