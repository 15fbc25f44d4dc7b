"""Child processes of `fleetctl up` and the demo: each in its own session with a log file, stopped by PID only
(SIGINT, then SIGKILL after a grace period), in reverse start order. Starting and stopping one child is
`fleet_ros.processes` (shared with the lifecycle supervisor, the benchmarks and the test harness)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleet_bringup.nodes import NodeSpec
from fleet_ros.processes import kill_child, let_sigint_reach_children, start_child, stop_child, stop_children


class LaunchError(RuntimeError):
    """A process could not be started (missing executable, unwritable log directory)."""


@dataclass(slots=True)
class Child:
    spec: NodeSpec
    popen: subprocess.Popen[bytes]
    log_path: Path
    started_at: float

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            return '\n'.join(self.log_path.read_text(errors='replace').splitlines()[-lines:])
        except OSError:
            return ''


class Supervisor:
    """Starts NodeSpecs as subprocesses and stops exactly those."""

    def __init__(self, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = dict(env if env is not None else os.environ)
        self.children: list[Child] = []
        log_dir.mkdir(parents=True, exist_ok=True)
        let_sigint_reach_children()

    def start(self, spec: NodeSpec, *, argv: Sequence[str] | None = None, cwd: Path | None = None) -> Child:
        command = list(argv or spec.argv())
        log_path = self.log_dir / (spec.label.replace('/', '.') + '.log')
        try:
            with log_path.open('ab') as log:
                popen = start_child(command, log=log, env=self.env, cwd=cwd)
        except OSError as exc:
            raise LaunchError(f'cannot start {spec.label} ({command[0]}): {exc.strerror}') from None
        child = Child(spec, popen, log_path, time.monotonic())
        self.children.append(child)
        return child

    def restart(self, child: Child) -> Child:
        self.stop(child)
        self.children.remove(child)
        return self.start(child.spec, argv=child.popen.args)  # type: ignore[arg-type]  # start() always passes Popen a list

    @staticmethod
    def kill(child: Child) -> None:
        """SIGKILL now (a crash)."""
        kill_child(child.popen)

    @staticmethod
    def stop(child: Child, grace: float = 5.0) -> int | None:
        return stop_child(child.popen, grace)

    def stop_all(self, grace: float = 5.0) -> None:
        """SIGINT every child at once (in reverse order), then wait; SIGKILL whatever outlives the grace."""
        stop_children([child.popen for child in reversed(self.children)], grace)

    def exited(self) -> list[Child]:
        return [c for c in self.children if not c.alive()]
