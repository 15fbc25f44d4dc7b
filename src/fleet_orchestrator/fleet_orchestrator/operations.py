"""Shard-wide operations of the leader: the latched, immediate e-stop (set_estop) and pause/resume of every agent in
pre-announced staggered waves (operation service + FleetOperation announcements). Both pause the shard's mission."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from rclpy.service import Service

from fleet_core import topics
from fleet_core.model import Priority
from fleet_core.waves import (
    EmptyEStopScope,
    EStopNotEngaged,
    EStopSnapshot,
    EStopState,
    FleetOp,
    WaveError,
    WavePlan,
    plan_operation,
)
from fleet_interfaces.msg import EStop, FleetOperation
from fleet_interfaces.srv import RequestFleetOperation, SetEStop
from fleet_ros import qos
from fleet_ros.convert import from_time, to_time

if TYPE_CHECKING:
    from fleet_orchestrator.node import ShardOrchestrator

ESTOP_HOLD = 'estop'
OPERATION_HOLD = 'operation'
CONTROL_TTL_SEC = 30.0
"""Deadline of the pause/resume commands sent in waves."""


class ShardOperations:
    """E-stop and waved operations of one shard; endpoints that change state exist only while leading."""

    def __init__(self, node: ShardOrchestrator) -> None:
        self.node = node
        shard = node.shard
        self.site_id, self.shard_id = shard.site_id, shard.shard_id
        self.estop = EStopState(site_id=shard.site_id, shard_id=shard.shard_id, clock=node.clock)
        self.estop_pub = node.create_publisher(EStop, topics.shard_estop(self.site_id, self.shard_id), qos.LATCHED)
        self.op_pub = node.create_publisher(
            FleetOperation, topics.shard_operations(self.site_id, self.shard_id), qos.OPERATIONS
        )
        node.create_subscription(EStop, topics.shard_estop(self.site_id, self.shard_id), self._on_estop, qos.LATCHED)
        node.create_subscription(
            FleetOperation, topics.shard_operations(self.site_id, self.shard_id), self._on_operation, qos.OPERATIONS
        )
        self.paused = False  # the last announced operation was a PAUSE
        self.operation_id = ''  # the last announced operation
        self._plan: WavePlan | None = None
        self._waves_sent = 0
        self._services: list[Service] = []
        self._log = node.get_logger()

    # -- leadership --------------------------------------------------------------------------------------

    def lead(self) -> None:
        site, shard = self.site_id, self.shard_id
        self._services = [
            self.node.create_service(SetEStop, topics.shard_set_estop(site, shard), self._on_set_estop),
            self.node.create_service(
                RequestFleetOperation, topics.shard_operation_request(site, shard), self._on_request_operation
            ),
        ]
        # State learned as a standby (latched topics) still holds the mission.
        if self.estop.engaged:
            self.node.missions.hold(ESTOP_HOLD)
        if self.paused:
            self.node.missions.hold(OPERATION_HOLD)

    def step_down(self) -> list[Service]:
        services, self._services = self._services, []
        self._plan = None
        return services

    # -- e-stop ------------------------------------------------------------------------------------------

    def _on_set_estop(self, request: SetEStop.Request, response: SetEStop.Response) -> SetEStop.Response:
        dispatcher = self.node.dispatcher
        if dispatcher is None:
            response.ok, response.error = False, 'not the leader of this shard; retry against the leader'
            return response
        try:
            if request.engage:
                snapshot = self.estop.engage(
                    scope=self.node.shard.agents, reason=request.reason[:200], issued_by=request.issued_by[:64]
                )
            else:
                snapshot = self.estop.release(reason=request.reason[:200], issued_by=request.issued_by[:64])
        except (EmptyEStopScope, EStopNotEngaged) as exc:
            response.ok, response.error = False, str(exc)
            response.revision = self.estop.snapshot.revision
            return response
        # Latched and immediate: published before anything else, never queued, never waved.
        self.estop_pub.publish(_estop_msg(snapshot))
        if request.engage:
            self.node.missions.hold(ESTOP_HOLD)
            cancelled = dispatcher.cancel_queued(f'e-stop: {request.reason}'[:200])
            self.node.flush()
            self._log.warning(
                f'E-STOP engaged on {self.site_id}/{self.shard_id} by {request.issued_by!r} '
                f'(revision {snapshot.revision}): {request.reason!r}; {cancelled} queued command(s) cancelled'
            )
        else:
            self.node.missions.release(ESTOP_HOLD)
            self._log.warning(
                f'e-stop released on {self.site_id}/{self.shard_id} by {request.issued_by!r} '
                f'(revision {snapshot.revision})'
            )
        response.ok, response.revision = True, snapshot.revision
        return response

    def _on_estop(self, msg: EStop) -> None:
        snapshot = EStopSnapshot(
            msg.site_id, msg.shard_id, msg.engaged, msg.revision, msg.reason, msg.issued_by, from_time(msg.stamp)
        )
        if self.estop.observe(snapshot) and self.node.dispatcher is None:
            # A standby mirrors the hold reason so that, leading later, it keeps the mission paused.
            (self.node.missions.hold if msg.engaged else self.node.missions.release)(ESTOP_HOLD)

    # -- waved pause/resume ------------------------------------------------------------------------------

    def _on_request_operation(
        self, request: RequestFleetOperation.Request, response: RequestFleetOperation.Response
    ) -> RequestFleetOperation.Response:
        try:
            op = FleetOp(request.op)
        except ValueError:
            response.ok, response.error = False, f'unknown op {request.op} (0 = PAUSE, 1 = RESUME)'
            return response
        if op is FleetOp.RESUME and not self.paused:
            response.ok, response.error = False, f'{self.site_id}/{self.shard_id} is not paused: nothing to resume'
            return response
        if op is FleetOp.PAUSE and self.paused:
            response.ok, response.error = False, f'{self.site_id}/{self.shard_id} is already paused'
            return response
        try:
            plan = plan_operation(
                operation_id=str(uuid.uuid4()),
                site_id=self.site_id,
                op=op,
                agent_ids=self.node.shard.agents,
                config=self.node.fleet.operations,
                now=self.node.clock(),
                issued_by=request.issued_by[:64],
            )
        except WaveError as exc:
            response.ok, response.error = False, str(exc)
            return response
        self._plan, self._waves_sent = plan, 0
        self.paused = op is FleetOp.PAUSE
        self.operation_id = plan.operation_id
        self.op_pub.publish(
            FleetOperation(
                operation_id=plan.operation_id,
                site_id=plan.site_id,
                op=int(op),
                waves=plan.waves,
                wave_size=plan.wave_size,
                wave_interval_sec=plan.wave_interval_sec,
                starts_at=to_time(plan.starts_at),
                issued_by=plan.issued_by,
            )
        )
        if op is FleetOp.PAUSE:
            self.node.missions.hold(OPERATION_HOLD)
        self._log.info(
            f'operation {plan.operation_id} {op.name} on {self.site_id}/{self.shard_id}: {plan.waves} wave(s) of '
            f'{plan.wave_size} every {plan.wave_interval_sec}s from +{plan.starts_at - self.node.clock():.2f}s'
        )
        response.ok, response.operation_id = True, plan.operation_id
        return response

    def _on_operation(self, msg: FleetOperation) -> None:
        if self.node.dispatcher is not None:
            return
        try:
            op = FleetOp(msg.op)
        except ValueError:
            return
        self.paused = op is FleetOp.PAUSE
        self.operation_id = msg.operation_id
        (self.node.missions.hold if self.paused else self.node.missions.release)(OPERATION_HOLD)

    def tick(self) -> None:
        plan = self._plan
        if plan is None or self.node.dispatcher is None:
            return
        kind = 'pause' if plan.op is FleetOp.PAUSE else 'resume'
        for wave in plan.due(self.node.clock(), sent=self._waves_sent):
            self._waves_sent += 1
            self.node.submit_control(list(wave.agent_ids), kind, Priority.HIGH, CONTROL_TTL_SEC, plan.operation_id)
            self._log.info(f'operation {plan.operation_id}: wave {wave.index + 1}/{plan.waves} ({kind}) sent')
        if self._waves_sent >= plan.waves:
            self._plan = None
            if plan.op is FleetOp.RESUME:
                self.node.missions.release(OPERATION_HOLD)


def _estop_msg(snapshot: EStopSnapshot) -> EStop:
    return EStop(
        site_id=snapshot.site_id,
        shard_id=snapshot.shard_id,
        engaged=snapshot.engaged,
        revision=snapshot.revision,
        reason=snapshot.reason,
        issued_by=snapshot.issued_by,
        stamp=to_time(snapshot.stamp),
    )
