"""Subprocesses for system tests, always stopped by PID: SIGINT, then SIGKILL after a grace period."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from fleet_ros.processes import kill_child, let_sigint_reach_children, start_child, stop_child

CHILD_LOGS_ENV = 'FLEETLANES_TEST_CHILD_LOGS'
"""The directory for the children's output (the test session's, set by conftest.py; else the temporary directory)."""


class ManagedProcess:
    """A child process whose output goes to a log file and which is stopped by PID only."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str] | None = None, name: str = '') -> None:
        self.name = name or Path(argv[0]).name
        self._log = tempfile.NamedTemporaryFile(
            prefix=f'fleet-{self.name}-', suffix='.log', dir=os.environ.get(CHILD_LOGS_ENV), delete=False
        )
        self.log_path = Path(self._log.name)
        self.popen = start_child(argv, log=self._log, env=env)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        """Everything the child wrote so far (also after `stop` closed the log)."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.popen.pid, sig)

    def stop(self, grace: float = 5.0) -> int:
        """SIGINT, wait up to `grace` seconds, then SIGKILL. Returns the exit code."""
        code = stop_child(self.popen, grace)
        self._log.close()
        return code

    def kill(self) -> None:
        """SIGKILL now (simulates a crash)."""
        kill_child(self.popen, timeout=5.0)


def wait_exit(proc: ManagedProcess, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while proc.alive() and time.monotonic() < deadline:
        try:
            proc.popen.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
    if proc.alive():
        raise AssertionError(f'{proc.name} (pid {proc.pid}) still running after {timeout}s')
    return proc.popen.returncode


class ProcessGroup:
    """Processes started by one test; `stop_all` stops them in reverse start order."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.started: list[ManagedProcess] = []
        let_sigint_reach_children()

    def start(self, argv: Sequence[str], *, name: str = '', extra_env: dict[str, str] | None = None) -> ManagedProcess:
        env = dict(self.env)
        env.update(extra_env or {})
        proc = ManagedProcess(argv, env=env, name=name)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()


def shard_ros_args(config: Path, *, site: str, shard: str, **extra: object) -> list[str]:
    """`--ros-args` for a fleet program of one shard: the fleet config, site and shard, then `extra` parameters."""
    argv = ['--ros-args', '-p', f'fleet_config:={config}', '-p', f'site_id:={site}', '-p', f'shard_id:={shard}']
    for key, value in extra.items():
        argv += ['-p', f'{key}:={value}']
    return argv
