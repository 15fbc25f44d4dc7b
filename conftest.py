"""Session-wide test set-up: DDS stays on this host and every test session gets a ROS domain of its own."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import IO

import pytest
from pluggy import Result

_DOMAIN_LOCK: IO[str] | None = None
SESSION_DIR = pytest.StashKey[Path]()
SESSION_STATUS = pytest.StashKey[int]()


def _claim_domain_id() -> int:
    """Hold the lock of a free domain for the whole session, so that concurrent runs never share a domain."""
    global _DOMAIN_LOCK
    from fleet_ros.domains import claim_domain_id

    domain, _DOMAIN_LOCK = claim_domain_id()
    return domain


def pytest_configure(config: pytest.Config) -> None:
    # Before any test module imports rclpy: confine discovery to loopback, claim a private domain.
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ.pop('ROS_STATIC_PEERS', None)
    os.environ['ROS_DOMAIN_ID'] = str(_claim_domain_id())
    os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    # Fast DDS without intra-process delivery: several participants live in one test process (test/fastdds_session.xml).
    os.environ['FASTRTPS_DEFAULT_PROFILES_FILE'] = str(Path(__file__).resolve().parent / 'test' / 'fastdds_session.xml')
    # What the session's processes write goes to one directory, removed when the session passes (kept, and named in
    # the summary, when it fails): orchestrator journals (default state_dir root, not ~/.fleetlanes), ROS log files
    # (not ~/.ros/log) and the test children's output.
    from harness.processes import CHILD_LOGS_ENV

    session_dir = Path(tempfile.mkdtemp(prefix='fleetlanes-test-'))
    config.stash[SESSION_DIR] = session_dir
    for name in ('state', 'ros-log', 'children'):
        (session_dir / name).mkdir()
    os.environ.setdefault('FLEETLANES_STATE_DIR', str(session_dir / 'state'))
    os.environ.setdefault('ROS_LOG_DIR', str(session_dir / 'ros-log'))
    os.environ[CHILD_LOGS_ENV] = str(session_dir / 'children')


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[SESSION_STATUS] = int(exitstatus)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    if exitstatus != pytest.ExitCode.OK:
        terminalreporter.write_line(
            f'logs and state of this session kept in {terminalreporter.config.stash[SESSION_DIR]}'
        )


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """After every fixture's teardown and every report: remove the session's directory if it passed, then end the
    process with the session's status at once. Left to the normal exit, Fast DDS destroys the DDS participants still
    alive in static destructors, and under load that deadlocked once (ResourceEvent::unregister_timer, after
    '892 passed' was printed), so `make test` never returned."""
    status = config.stash.get(SESSION_STATUS, None)
    if status in (None, pytest.ExitCode.OK):
        shutil.rmtree(config.stash[SESSION_DIR], ignore_errors=True)
    if status is None:
        return  # no session ran (--help, a usage error): nothing started, the normal exit
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


CHILD_OUTPUT_LINES = 40
STACK_DUMP_TIMEOUT_SEC = 20.0


def child_stacks(pid: int) -> str:
    """The Python and native stacks of every thread of a child still running when its test failed (py-spy, a pinned
    dependency): what a child the test waited for in vain was doing, a hang in shutdown included."""
    spy = Path(sys.executable).parent / 'py-spy'
    try:
        done = subprocess.run(  # noqa: S603 - our own pinned tool, argv list, no shell
            [str(spy), 'dump', '--native', '--pid', str(pid)],
            capture_output=True,
            text=True,
            timeout=STACK_DUMP_TIMEOUT_SEC,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f'(no stack dump: {exc})'
    return (done.stdout + done.stderr).strip()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Result[pytest.TestReport], None]:
    """A failed system test reports the last lines of every child it started (which process said what, and when),
    and the stacks of those still running."""
    outcome = yield
    report = outcome.get_result()
    group = getattr(item, 'funcargs', {}).get('processes')
    if report.when != 'call' or not report.failed or group is None:
        return  # (children's logs are closed by the fixture's teardown, after the call phase)
    for proc in group.started:
        try:
            tail = proc.output().splitlines()[-CHILD_OUTPUT_LINES:]
        except OSError as exc:  # a report must never end the session: say why the lines are missing instead
            tail = [f'(its output is unreadable: {exc})']
        report.sections.append((f'child {proc.name} (pid {proc.pid}), last lines', '\n'.join(tail)))
        if proc.alive():
            report.sections.append(
                (f'child {proc.name} (pid {proc.pid}), still running: its stacks', child_stacks(proc.pid))
            )


@pytest.fixture(scope='session')
def ros_env() -> dict[str, str]:
    """The environment every ROS process of this session runs with (copy it for subprocesses)."""
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    return dict(os.environ)


@pytest.fixture
def ros(ros_env: dict[str, str]) -> Iterator[object]:
    """An in-process ROS harness with its own Context and an EventsExecutor; torn down after the test."""
    from harness.ros import RosHarness

    harness = RosHarness()
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def processes(ros_env: dict[str, str]) -> Iterator[object]:
    """Start subprocesses with the session's ROS environment; every one is stopped at teardown."""
    from harness.processes import ProcessGroup

    group = ProcessGroup(ros_env)
    try:
        yield group
    finally:
        group.stop_all()
