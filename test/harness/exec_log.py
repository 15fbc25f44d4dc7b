"""An executor plug-in for system tests: records every execution start durably (one appended line per start),
so a test can count executions across agent crashes. Load it with the agent parameter
`executor:=harness.exec_log:factory` and set FLEET_TEST_EXEC_LOG to the log path."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fleet_agent.executors import ExecutionResult
from fleet_core.model import Command


class LoggingExecutor:
    def __init__(self, agent_id: str, delay_sec: float, log_path: Path) -> None:
        self.agent_id = agent_id
        self.delay_sec = delay_sec
        self.log_path = log_path

    async def execute(self, command: Command, args: Mapping[str, Any]) -> ExecutionResult:
        line = json.dumps(
            {
                'agent': self.agent_id,
                'command_id': command.command_id,
                'start': time.time(),
                'deadline': command.deadline,
            }
        )
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + '\n').encode())
        finally:
            os.close(fd)
        await asyncio.sleep(self.delay_sec + float(args.get('duration_sec', 0.0)))
        return ExecutionResult(True)


def factory(delay_sec: float) -> Callable[[Any], LoggingExecutor]:
    path = Path(os.environ['FLEET_TEST_EXEC_LOG'])
    return lambda spec: LoggingExecutor(spec.agent_id, delay_sec, path)


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
