"""fleet_supervisor waits for a node it spawned to start (in process, own context and domain): a slow start is
waited for up to startup_timeout_sec, a process that exits first is named with its exit code at once."""

from __future__ import annotations

import sys
import time

import pytest

from fleet_orchestrator.supervisor import LifecycleSupervisor, Managed, SupervisorError, spawn, stop

pytestmark = pytest.mark.system


def supervise(ros, argv: list[str], *, startup: float) -> tuple[LifecycleSupervisor, Managed]:  # type: ignore[no-untyped-def]
    managed = Managed('/fleet/site_s/zone_s/orchestrator_0', argv)
    spawn(managed)
    node = ros.node('supervisor_startup_test')
    supervisor = LifecycleSupervisor(
        node, ros.executor, [managed], transition_timeout_sec=0.5, missed_checks_restart=2, startup_timeout_sec=startup
    )
    return supervisor, managed


def test_a_spawned_node_that_exits_before_offering_its_services_is_named_with_its_exit_code(ros):
    supervisor, managed = supervise(
        ros, [sys.executable, '-c', 'import time; time.sleep(0.5); raise SystemExit(3)'], startup=60.0
    )
    try:
        with pytest.raises(SupervisorError, match='exited with code 3 before offering its lifecycle services'):
            supervisor.ensure_active(managed)
    finally:
        stop(managed)


def test_a_slow_start_is_waited_for_up_to_the_startup_timeout_not_the_answer_timeout(ros):
    supervisor, managed = supervise(ros, [sys.executable, '-c', 'import time; time.sleep(30)'], startup=2.0)
    try:
        started = time.monotonic()
        with pytest.raises(SupervisorError, match=r'lifecycle services not offered within 2.0s'):
            supervisor.ensure_active(managed)
        assert time.monotonic() - started >= 2.0  # not the 0.5 s answer timeout
    finally:
        stop(managed)
