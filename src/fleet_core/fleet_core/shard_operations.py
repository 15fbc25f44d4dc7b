"""A shard's waved pause/resume as its leader runs it (no ROS): the last announced operation, whether the shard is
paused, and which waves of the running plan are due (fleet_core.waves cuts the agents into waves)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fleet_core.waves import FleetOp, Wave, WaveConfig, WaveError, WavePlan, plan_operation


class OperationRefused(ValueError):
    """An operation request that cannot be planned; the message says why."""


class ShardOperation:
    def __init__(
        self,
        *,
        site_id: str,
        shard_id: str,
        agents: Sequence[str],
        config: WaveConfig,
        clock: Callable[[], float],
        operation_ids: Callable[[], str],
    ) -> None:
        self.site_id, self.shard_id, self.agents = site_id, shard_id, tuple(agents)
        self.config = config
        self.clock = clock
        self._operation_ids = operation_ids
        self.paused = False  # the last announced operation was a PAUSE
        self.operation_id = ''  # the last announced operation
        self._plan: WavePlan | None = None
        self._sent = 0

    def plan(self, *, op: int, issued_by: str) -> WavePlan:
        """Plan a PAUSE (0) or RESUME (1) of every agent; raises OperationRefused (unknown op, nothing to resume,
        already paused, no agent)."""
        try:
            fleet_op = FleetOp(op)
        except ValueError:
            raise OperationRefused(f'unknown op {op} (0 = PAUSE, 1 = RESUME)') from None
        where = f'{self.site_id}/{self.shard_id}'
        if fleet_op is FleetOp.RESUME and not self.paused:
            raise OperationRefused(f'{where} is not paused: nothing to resume')
        if fleet_op is FleetOp.PAUSE and self.paused:
            raise OperationRefused(f'{where} is already paused')
        try:
            plan = plan_operation(
                operation_id=self._operation_ids(),
                site_id=self.site_id,
                op=fleet_op,
                agent_ids=self.agents,
                config=self.config,
                now=self.clock(),
                issued_by=issued_by[:64],
            )
        except WaveError as exc:
            raise OperationRefused(str(exc)) from None
        self._plan, self._sent = plan, 0
        self.paused, self.operation_id = fleet_op is FleetOp.PAUSE, plan.operation_id
        return plan

    def observe(self, *, op: int, operation_id: str) -> bool:
        """Another leader's announcement (a standby mirrors it); False for an unknown op (ignored)."""
        try:
            self.paused = FleetOp(op) is FleetOp.PAUSE
        except ValueError:
            return False
        self.operation_id = operation_id
        return True

    def due(self) -> tuple[WavePlan | None, tuple[Wave, ...], bool]:
        """The running plan, its waves whose time has come (counted as sent) and whether it is complete now."""
        plan = self._plan
        if plan is None:
            return None, (), False
        waves = plan.due(self.clock(), sent=self._sent)
        self._sent += len(waves)
        done = self._sent >= plan.waves
        if done:
            self._plan = None
        return plan, waves, done

    def drop(self) -> None:
        """Stepped down: the next leader does not continue this leader's waves."""
        self._plan = None
