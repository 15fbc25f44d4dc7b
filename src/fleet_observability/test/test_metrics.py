"""FleetMetrics: private registries, the named metrics, and the HTTP endpoint."""

from __future__ import annotations

import urllib.request

import pytest

from fleet_core.model import AckStatus, Outcome, Priority
from fleet_observability.metrics import FleetMetrics, MetricsServeError

SHARD = {'site': 'site_a', 'shard': 'zone_1'}


def test_registries_are_private() -> None:
    one, two = FleetMetrics(), FleetMetrics()
    one.shard('site_a', 'zone_1').retry()
    assert one.sample('fleet_retries_total', SHARD) == 1.0
    assert two.sample('fleet_retries_total', SHARD) is None


def test_shard_metrics_record_every_named_metric() -> None:
    metrics = FleetMetrics()
    shard = metrics.shard('site_a', 'zone_1')
    assert metrics.shard('site_a', 'zone_1') is shard
    shard.ack(AckStatus.ACCEPTED)
    shard.ack(AckStatus.SUCCEEDED, latency_sec=0.004)
    shard.ack(AckStatus.SUCCEEDED, latency_sec=0.2)
    shard.outcome(Outcome.SUCCEEDED)
    shard.outcome(Outcome.EXPIRED)
    shard.retry(3)
    shard.duplicate_suppressed()
    shard.set_queue_depths([4, 3, 2, 1])
    shard.set_in_flight(7)
    shard.set_degradation(2)
    metrics.connection_opened(role='operator')
    metrics.connection_opened(role='operator')
    metrics.connection_closed(role='operator')

    assert metrics.sample('fleet_acks_total', {**SHARD, 'status': 'SUCCEEDED'}) == 2.0
    assert metrics.sample('fleet_acks_total', {**SHARD, 'status': 'ACCEPTED'}) == 1.0
    assert metrics.sample('fleet_ack_latency_seconds_count', SHARD) == 2.0
    assert metrics.sample('fleet_ack_latency_seconds_bucket', {**SHARD, 'le': '0.005'}) == 1.0
    assert metrics.sample('fleet_outcomes_total', {**SHARD, 'outcome': 'EXPIRED'}) == 1.0
    assert metrics.sample('fleet_expirations_total', SHARD) == 1.0
    assert metrics.sample('fleet_retries_total', SHARD) == 3.0
    assert metrics.sample('fleet_duplicates_suppressed_total', SHARD) == 1.0
    assert metrics.sample('fleet_queue_depth', {**SHARD, 'priority': 'SAFETY'}) == 1.0
    assert metrics.sample('fleet_queue_depth', {**SHARD, 'priority': 'LOW'}) == 4.0
    assert metrics.sample('fleet_in_flight', SHARD) == 7.0
    assert metrics.sample('fleet_degradation_level', SHARD) == 2.0
    assert metrics.sample('fleet_gateway_connections', {'gateway': 'gateway', 'role': 'operator'}) == 1.0


def test_queue_depths_from_mapping() -> None:
    metrics = FleetMetrics()
    metrics.shard('site_a', 'zone_1').set_queue_depths({Priority.HIGH: 9})
    assert metrics.sample('fleet_queue_depth', {**SHARD, 'priority': 'HIGH'}) == 9.0


def test_serve_exposes_metrics_over_http() -> None:
    metrics = FleetMetrics()
    metrics.shard('site_a', 'zone_1').ack(AckStatus.FAILED)
    endpoint = metrics.serve(0)
    try:
        assert endpoint.port > 0
        with urllib.request.urlopen(endpoint.url, timeout=5) as response:
            body = response.read().decode()
        assert 'fleet_acks_total{shard="zone_1",site="site_a",status="FAILED"} 1.0' in body
    finally:
        endpoint.close()


def test_serve_refuses_non_loopback_without_opt_in() -> None:
    with pytest.raises(MetricsServeError, match=r'refusing to serve metrics on 0\.0\.0\.0'):
        FleetMetrics().serve(0, host='0.0.0.0')  # noqa: S104 - the refusal is what is tested


def test_serve_port_in_use_is_a_clear_error() -> None:
    metrics = FleetMetrics()
    endpoint = metrics.serve(0)
    try:
        with pytest.raises(MetricsServeError, match=f'cannot serve metrics on 127.0.0.1:{endpoint.port}'):
            FleetMetrics().serve(endpoint.port)
    finally:
        endpoint.close()
