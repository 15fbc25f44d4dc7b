"""Decoding a recording into per-shard ShardRecordings for replay (the rclpy side of `fleetctl replay`)."""

from __future__ import annotations

from collections.abc import Iterable

from fleet_core import topics
from fleet_core.model import Outcome
from fleet_observability.recorder import RecordedMessage, RecordingError
from fleet_observability.replay import RecordedOutcome, ShardRecording
from fleet_ros.convert import ack_from_msg, command_from_msg, from_time
from fleet_ros.trace_msgs import trace_from_msg

_COMMAND = 'fleet_interfaces/msg/Command'
_ACK = 'fleet_interfaces/msg/CommandAck'
_OUTCOMES = 'fleet_interfaces/msg/CommandOutcomes'
_TRACE = 'fleet_interfaces/msg/TraceEvent'
_HEARTBEAT = 'fleet_interfaces/msg/Heartbeat'
_WANTED = frozenset({_COMMAND, _ACK, _OUTCOMES, _TRACE, _HEARTBEAT})


def _shard_of_topic(topic: str) -> tuple[str, str] | None:
    parsed = topics.parse_shard_name(topic)
    return None if parsed is None else (parsed[0], parsed[1])


def load_shard_recordings(messages: Iterable[RecordedMessage]) -> dict[tuple[str, str], ShardRecording]:
    """Group decoded fleet messages by (site, shard). Raises RecordingError for undecodable content."""
    shards: dict[tuple[str, str], ShardRecording] = {}

    def shard(site: str, shard_id: str) -> ShardRecording:
        key = (site, shard_id)
        if key not in shards:
            shards[key] = ShardRecording(site, shard_id)
        return shards[key]

    for message in messages:
        if message.schema_name not in _WANTED:
            continue
        received = message.log_time_ns / 1e9
        msg = message.decode()
        where = _shard_of_topic(message.topic)
        try:
            if message.schema_name == _COMMAND:
                command = command_from_msg(msg)
                if where is not None and message.topic.endswith('/journal'):
                    shard(*where).journal.append((received, command))
                elif message.topic.endswith('/command'):
                    shard(command.site_id, command.shard_id).sends.append((received, command))
            elif where is None:
                continue
            elif message.schema_name == _ACK:
                shard(*where).acks.append((received, ack_from_msg(msg)))
            elif message.schema_name == _OUTCOMES:
                for outcome in msg.outcomes:
                    shard(*where).outcomes[outcome.command_id] = RecordedOutcome(
                        command_id=outcome.command_id,
                        agent_id=outcome.agent_id,
                        outcome=Outcome(outcome.outcome),
                        ack_status=outcome.ack_status,
                        attempts=outcome.attempts,
                        seq=outcome.seq,
                        stamp=from_time(outcome.stamp),
                    )
            elif message.schema_name == _TRACE:
                shard(*where).hops.append(trace_from_msg(msg))
            else:
                shard(*where).heartbeats += 1
        except ValueError as exc:
            raise RecordingError(f'{message.topic}: undecodable {message.schema_name} value: {exc}') from None
    return shards
