"""Outcome bookkeeping for tests that watch a shard's outcome topic."""

from __future__ import annotations

from collections.abc import Callable

from fleet_interfaces.msg import CommandOutcomes


def first_outcomes(into: dict[str, int]) -> Callable[[CommandOutcomes], None]:
    """A subscription callback for an outcome topic: records the first announced outcome value of each command."""

    def record(batch: CommandOutcomes) -> None:
        for msg in batch.outcomes:
            into.setdefault(msg.command_id, msg.outcome)

    return record
