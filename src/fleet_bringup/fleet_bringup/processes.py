"""Child processes of `fleetctl up` and the demo: each in its own session with a log file, stopped by PID only
(SIGINT, then SIGKILL after a grace period), in reverse start order."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleet_bringup.nodes import NodeSpec
from fleet_ros.processes import let_sigint_reach_children


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
                popen = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self.env,
                    cwd=cwd,
                    start_new_session=True,
                )
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
        if child.alive():
            os.kill(child.pid, signal.SIGKILL)
            child.popen.wait(timeout=10)

    @staticmethod
    def stop(child: Child, grace: float = 5.0) -> int | None:
        if child.alive():
            os.kill(child.pid, signal.SIGINT)
            try:
                child.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.kill(child.pid, signal.SIGKILL)
                child.popen.wait(timeout=grace)
        return child.popen.returncode

    def stop_all(self, grace: float = 5.0) -> None:
        """SIGINT every child at once (in reverse order), then wait; SIGKILL whatever outlives the grace."""
        for child in reversed(self.children):
            if child.alive():
                os.kill(child.pid, signal.SIGINT)
        deadline = time.monotonic() + grace
        for child in reversed(self.children):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.popen.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                os.kill(child.pid, signal.SIGKILL)
                child.popen.wait(timeout=grace)

    def exited(self) -> list[Child]:
        return [c for c in self.children if not c.alive()]
