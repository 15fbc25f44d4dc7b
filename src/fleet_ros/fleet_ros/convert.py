"""Conversion between fleet_interfaces messages and fleet_core domain objects (and UTC seconds <-> Time)."""

from __future__ import annotations

import math

from builtin_interfaces.msg import Time

from fleet_core.model import Ack, AckStatus, Command, CommandResult, Outcome, Priority
from fleet_interfaces.msg import Command as CommandMsg
from fleet_interfaces.msg import CommandAck as CommandAckMsg
from fleet_interfaces.msg import CommandOutcome as CommandOutcomeMsg

_NS = 1_000_000_000


def to_time(seconds: float) -> Time:
    """Exact to the nanosecond at any magnitude: only the fraction is scaled (seconds * 1e9 as one float product
    loses up to 128 ns for present-day UTC). Negative times clamp to 0, times past 2**31 - 1 s to that second."""
    if not seconds > 0:
        return Time(sec=0, nanosec=0)
    whole = math.floor(seconds)
    carry, nanosec = divmod(round((seconds - whole) * _NS), _NS)
    return Time(sec=min(whole + carry, 2**31 - 1), nanosec=nanosec)


def from_time(stamp: Time) -> float:
    return float(stamp.sec + stamp.nanosec / _NS)


_SHARED_TIMES: dict[float, Time] = {}
_SHARED_TIMES_MAX = 256


def _shared_time(seconds: float) -> Time:
    """Time for a value that many messages carry at once (a fan-out's commands share issued_at and deadline): one
    object for all of them. Messages only read it; nothing here mutates a stamp."""
    stamp = _SHARED_TIMES.get(seconds)
    if stamp is None:
        if len(_SHARED_TIMES) >= _SHARED_TIMES_MAX:
            _SHARED_TIMES.clear()
        stamp = _SHARED_TIMES[seconds] = to_time(seconds)
    return stamp


def command_to_msg(command: Command) -> CommandMsg:
    return CommandMsg(
        command_id=command.command_id,
        trace_id=command.trace_id,
        site_id=command.site_id,
        shard_id=command.shard_id,
        agent_id=command.agent_id,
        seq=command.seq,
        epoch=command.epoch,
        priority=int(command.priority),
        issued_at=_shared_time(command.issued_at),
        deadline=_shared_time(command.deadline),
        kind=command.kind,
        args_json=command.args_json,
        attempt=command.attempt,
    )


def command_from_msg(msg: CommandMsg) -> Command:
    """Raises ValueError for an unknown priority; every other field is checked by CommandIntake."""
    return Command(
        command_id=msg.command_id,
        trace_id=msg.trace_id,
        site_id=msg.site_id,
        shard_id=msg.shard_id,
        agent_id=msg.agent_id,
        seq=msg.seq,
        epoch=msg.epoch,
        priority=Priority(msg.priority),
        issued_at=from_time(msg.issued_at),
        deadline=from_time(msg.deadline),
        kind=msg.kind,
        args_json=msg.args_json,
        attempt=msg.attempt,
    )


def ack_to_msg(ack: Ack) -> CommandAckMsg:
    return CommandAckMsg(
        command_id=ack.command_id,
        trace_id=ack.trace_id,
        agent_id=ack.agent_id,
        shard_id=ack.shard_id,
        seq=ack.seq,
        epoch=ack.epoch,
        attempt=ack.attempt,
        status=int(ack.status),
        final=ack.final,
        detail=ack.detail,
        stamp=to_time(ack.stamp),
    )


def ack_from_msg(msg: CommandAckMsg) -> Ack:
    return Ack(
        command_id=msg.command_id,
        trace_id=msg.trace_id,
        agent_id=msg.agent_id,
        shard_id=msg.shard_id,
        seq=msg.seq,
        epoch=msg.epoch,
        attempt=msg.attempt,
        status=AckStatus(msg.status),
        detail=msg.detail,
        stamp=from_time(msg.stamp),
    )


def result_to_msg(result: CommandResult) -> CommandOutcomeMsg:
    return CommandOutcomeMsg(
        command_id=result.command_id,
        trace_id=result.trace_id,
        agent_id=result.agent_id,
        shard_id=result.shard_id,
        seq=result.seq,
        outcome=int(result.outcome),
        ack_status=result.ack_status,
        attempts=result.attempts,
        latency_ms=result.latency_ms,
        detail=result.detail,
        stamp=to_time(result.stamp),
    )


def result_from_msg(msg: CommandOutcomeMsg) -> CommandResult:
    """Raises ValueError for an unknown outcome value."""
    return CommandResult(
        command_id=msg.command_id,
        trace_id=msg.trace_id,
        agent_id=msg.agent_id,
        shard_id=msg.shard_id,
        seq=msg.seq,
        outcome=Outcome(msg.outcome),
        ack_status=msg.ack_status,
        attempts=msg.attempts,
        latency_ms=msg.latency_ms,
        detail=msg.detail,
        stamp=from_time(msg.stamp),
    )
