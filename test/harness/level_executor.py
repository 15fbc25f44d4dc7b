"""An executor plug-in for system tests: reports, in each command's result detail, the degradation level and the
telemetry period its ExecutorContext gives at that moment. Load it with `executor:=harness.level_executor:factory`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fleet_agent.executors import ExecutionResult, ExecutorContext
from fleet_core.model import Command

NOMINAL_PERIOD_SEC = 0.1


class LevelReportingExecutor:
    def __init__(self, context: ExecutorContext) -> None:
        self.context = context

    async def execute(self, command: Command, args: Mapping[str, Any]) -> ExecutionResult:
        level = self.context.degradation_level()
        period = self.context.telemetry_period(NOMINAL_PERIOD_SEC)
        return ExecutionResult(True, f'level={level} telemetry_period={period:.3f}')


def factory(_delay_sec: float) -> Callable[[ExecutorContext], LevelReportingExecutor]:
    return LevelReportingExecutor
