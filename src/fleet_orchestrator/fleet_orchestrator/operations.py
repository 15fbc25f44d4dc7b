"""The ROS side of the shard-wide operations: the latched e-stop (set_estop service, EStop topic) and waved
pause/resume (operation service, FleetOperation announcements). What they do is decided by
fleet_core.shard_leader, whose Effects go to `apply`; the services exist only while leading."""

from __future__ import annotations

from collections.abc import Callable

from rclpy.node import Node
from rclpy.service import Service

from fleet_core import topics
from fleet_core.shard_effects import Effects, OperationReply
from fleet_core.shard_leader import ShardLeader
from fleet_core.waves import EStopSnapshot, WavePlan
from fleet_interfaces.msg import EStop, FleetOperation
from fleet_interfaces.srv import RequestFleetOperation, SetEStop
from fleet_ros import qos
from fleet_ros.convert import from_time, to_time


class ShardOperations:
    """E-stop and waved operations of one shard; every method runs on the node's executor thread."""

    def __init__(self, node: Node, leader: ShardLeader, apply: Callable[[Effects], None]) -> None:
        self.node = node
        self.leader = leader
        self._apply = apply
        site, shard = leader.site_id, leader.shard_id
        self.site_id, self.shard_id = site, shard
        self.estop_pub = node.create_publisher(EStop, topics.shard_estop(site, shard), qos.LATCHED)
        self.op_pub = node.create_publisher(FleetOperation, topics.shard_operations(site, shard), qos.OPERATIONS)
        node.create_subscription(EStop, topics.shard_estop(site, shard), self._on_estop, qos.LATCHED)
        node.create_subscription(
            FleetOperation, topics.shard_operations(site, shard), self._on_operation, qos.OPERATIONS
        )
        self._services: list[Service] = []

    def open(self) -> None:
        """This replica leads: take e-stop and operation requests."""
        site, shard = self.site_id, self.shard_id
        self._services = [
            self.node.create_service(SetEStop, topics.shard_set_estop(site, shard), self._on_set_estop),
            self.node.create_service(
                RequestFleetOperation, topics.shard_operation_request(site, shard), self._on_request_operation
            ),
        ]

    def close(self) -> list[Service]:
        """Stepped down: the services, for the node to destroy outside the callback that made it step down."""
        services, self._services = self._services, []
        return services

    def publish(self, effects: Effects) -> None:
        """The e-stop first (latched and immediate: never queued, never waved), then an operation's announcement."""
        if effects.estop is not None:
            self.estop_pub.publish(_estop_msg(effects.estop))
        if effects.operation is not None:
            self.op_pub.publish(_operation_msg(effects.operation))

    def _on_set_estop(self, request: SetEStop.Request, response: SetEStop.Response) -> SetEStop.Response:
        reply, effects = self.leader.set_estop(
            engage=request.engage, reason=request.reason, issued_by=request.issued_by
        )
        self._apply(effects)
        response.ok, response.error, response.revision = reply.ok, reply.error, reply.revision
        return response

    def _on_estop(self, msg: EStop) -> None:
        snapshot = EStopSnapshot(
            msg.site_id, msg.shard_id, msg.engaged, msg.revision, msg.reason, msg.issued_by, from_time(msg.stamp)
        )
        self._apply(self.leader.observe_estop(snapshot))

    def _on_request_operation(
        self, request: RequestFleetOperation.Request, response: RequestFleetOperation.Response
    ) -> RequestFleetOperation.Response:
        reply: OperationReply
        reply, effects = self.leader.request_operation(op=request.op, issued_by=request.issued_by)
        self._apply(effects)
        response.ok, response.error, response.operation_id = reply.ok, reply.error, reply.operation_id
        return response

    def _on_operation(self, msg: FleetOperation) -> None:
        self._apply(self.leader.observe_operation(op=msg.op, operation_id=msg.operation_id))


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


def _operation_msg(plan: WavePlan) -> FleetOperation:
    return FleetOperation(
        operation_id=plan.operation_id,
        site_id=plan.site_id,
        op=int(plan.op),
        waves=plan.waves,
        wave_size=plan.wave_size,
        wave_interval_sec=plan.wave_interval_sec,
        starts_at=to_time(plan.starts_at),
        issued_by=plan.issued_by,
    )
