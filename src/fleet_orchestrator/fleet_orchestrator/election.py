"""The lease side of one orchestrator replica, the ROS shell of fleet_core.leadership: the lease topic's publisher
and subscription, renewals (on the executor, and beside it: lease_keeper.py), following other replicas' leases,
and when a standby may lead (fleet_core.leadership.Candidacy, with the evidence read from the graph, and
durable.may_take_over for a replica not caught up with the leader it followed).

What leading means stays with the node: the election asks it for the epoch it leads with (`led_epoch`) and tells it
to step down (`step_down`); the node asks `due_to_lead` at each tick while standing by."""

from __future__ import annotations

from collections.abc import Callable

from rclpy.node import Node

from fleet_core import topics
from fleet_core.config import FleetConfig, ShardConfig
from fleet_core.health import HealthMonitor
from fleet_core.leadership import (
    EPOCH_SLOTS,
    Candidacy,
    FirstLeaseEvidence,
    Lease,
    LeaseState,
    NotLeader,
    WrongShardLease,
)
from fleet_core.replica import ShardReplica
from fleet_interfaces.msg import LeaderLease
from fleet_orchestrator.durable import DurableShard, may_take_over
from fleet_orchestrator.lease_keeper import LeaseKeeper
from fleet_ros import qos
from fleet_ros.convert import from_time, to_time


class Election:
    """Created by on_configure (with its endpoints: destroyed by the node's cleanup), started once configuring
    succeeded, stopped before its publisher is destroyed."""

    def __init__(
        self,
        node: Node,
        *,
        shard: ShardConfig,
        fleet: FleetConfig,
        replica_id: str,
        slot: int,
        clock: Callable[[], float],
        health: HealthMonitor,
        replica: ShardReplica,
        durable: DurableShard,
        led_epoch: Callable[[], int | None],
        step_down: Callable[[str], None],
    ) -> None:
        self._node = node
        self._shard = shard
        self._replica_id = replica_id
        self._clock = clock
        self._health = health
        self._replica = replica
        self._durable = durable
        self._led_epoch = led_epoch
        self._step_down = step_down
        self.lease = LeaseState(
            site_id=shard.site_id,
            shard_id=shard.shard_id,
            node_id=replica_id,
            config=fleet.leadership,
            clock=clock,
            slot=slot,
            slots=EPOCH_SLOTS,
        )
        self.candidacy = Candidacy(self.lease)
        self.last_lease_seen: float | None = None
        """When a lease of another replica last arrived (on our clock)."""
        self._followed: tuple[str, int] = ('', 0)
        self._ignored: tuple[str, int] = ('', 0)
        self._held_back_logged = False
        lease_topic = topics.shard_leader(shard.site_id, shard.shard_id)
        self.publisher = node.create_publisher(LeaderLease, lease_topic, qos.LATCHED)
        self.subscription = node.create_subscription(LeaderLease, lease_topic, self.on_lease, qos.LATCHED)
        # Renewal beside the executor, so that bulk work on it cannot make the lease lapse (lease_keeper.py).
        self.keeper = LeaseKeeper(self.lease, self.publish, log=node.get_logger().warning)

    def miswired(self) -> str | None:
        """Why this node must not run, when its lease topic was remapped onto another shard's (it is the
        misconfigured one: it refuses rather than fight, or kill, that shard's correctly configured orchestrators)."""
        site, sid = self._shard.site_id, self._shard.shard_id
        expected = topics.shard_leader(site, sid)
        if self.subscription.topic_name == expected:
            return None
        return (
            f'the lease topic resolves to {self.subscription.topic_name}, not {expected}: this orchestrator is wired '
            f'to another shard than site_id={site} shard_id={sid}'
        )

    def start(self) -> None:
        self.keeper.start()

    def stop(self) -> None:
        self.keeper.stop()

    @property
    def eligible(self) -> bool:
        return self.candidacy.eligible

    @eligible.setter
    def eligible(self, value: bool) -> None:
        if value:
            self.candidacy.activate(self._clock())
        else:
            self.candidacy.eligible = False

    def publish(self, lease: Lease) -> None:
        self.publisher.publish(
            LeaderLease(
                site_id=lease.site_id,
                shard_id=lease.shard_id,
                leader_id=lease.leader_id,
                epoch=lease.epoch,
                last_seq_hint=lease.last_seq_hint,
                stamp=to_time(lease.stamp),
                lease_sec=lease.lease_sec,
            )
        )

    def renew_if_due(self, now: float) -> bool:
        """Renew the lease when due; False when we found out we no longer lead (and stepped down). Also called from
        the busiest callbacks, so that a backlog of acks cannot delay renewals past the lease."""
        if self.lease.should_renew(now):
            try:
                self.publish(self.lease.renew(now=now))
            except NotLeader as exc:
                self._step_down(str(exc))
                return False
        return True

    def on_lease(self, msg: LeaderLease) -> None:
        lease = Lease(
            msg.site_id, msg.shard_id, msg.leader_id, msg.epoch, msg.last_seq_hint, from_time(msg.stamp), msg.lease_sec
        )
        known = self.lease.max_epoch_seen
        try:
            newer = self.lease.observe(lease)
        except WrongShardLease as exc:
            # Our own wiring was checked at configure: the sender is the misconfigured one. Never follow it.
            self._node.get_logger().error(f'ignored a foreign lease on {self.subscription.topic_name}: {exc}')
            return
        if msg.epoch < known and msg.leader_id != self._replica_id:
            # A fenced leader's (LeaseState.observe): it neither counts as a live lease nor is followed.
            if self._ignored != (msg.leader_id, msg.epoch):
                self._ignored = (msg.leader_id, msg.epoch)
                self._node.get_logger().info(
                    f'not following {msg.leader_id} (epoch {msg.epoch}): epoch {known} is known here (journal, '
                    'agents or a newer lease)'
                )
            return
        self._replica.on_lease(msg.epoch)
        if newer:  # never an older lease (a fenced leader's), nor our own echo
            self._durable.on_lease(msg.epoch, msg.leader_id, written=msg.last_seq_hint, now=self._clock())
        if msg.leader_id != self._replica_id:
            if newer and self._followed != (msg.leader_id, msg.epoch):
                self._followed = (msg.leader_id, msg.epoch)
                self._node.get_logger().info(f'following leader {msg.leader_id} (epoch {msg.epoch})')
            self.last_lease_seen = self._clock()
        led = self._led_epoch()
        if newer and led is not None and msg.epoch >= led:
            self._step_down(f'{msg.leader_id} leads with epoch {msg.epoch}')

    def due_to_lead(self, now: float) -> bool:
        """Asked at each tick while standing by: the lapse is confirmed (Candidacy) and we are caught up with the
        leader we followed, or waited long enough (durable.may_take_over)."""
        return self.candidacy.lapse_confirmed(now, self._evidence) and self._caught_up_or_waited(now)

    def _evidence(self) -> FirstLeaseEvidence:
        site, sid = self._shard.site_id, self._shard.shard_id
        lease_topic = topics.shard_leader(site, sid)
        lease_publishers = self._node.count_publishers(lease_topic)  # every replica has one, ours included
        return FirstLeaseEvidence(
            leader_in_graph=self._node.count_publishers(topics.shard_status(site, sid)) > 0,
            # ours are one publisher and one subscription
            others_on_lease_topic=lease_publishers + self._node.count_subscribers(lease_topic) > 2,
            agents_epoch=self._health.highest_epoch_seen(),
            standby_peer_in_graph=lease_publishers > 1,
        )

    def _caught_up_or_waited(self, now: float) -> bool:
        seen = self.last_lease_seen
        if may_take_over(
            caught_up=self._durable.caught_up,
            lease_seen=seen is not None,
            lapse_sec=now - (seen if seen is not None else now),
            lease_sec=self.lease.config.lease_sec,
        ):
            self._held_back_logged = False
            return True
        if not self._held_back_logged:
            self._held_back_logged = True
            self._node.get_logger().warning(
                'the lease lapsed, but this replica is not caught up with the leader: waiting'
            )
        return False
