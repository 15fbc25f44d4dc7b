"""Group commit for an agent host: the dedup writes of one event-loop turn share one SQLite transaction, and
everything that depends on them (starting an execution, sending an ack) runs only after it committed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fleet_core.dedup_store import DedupDatabase, StoreUnavailable

_log = logging.getLogger('fleet_agent')

Action = Callable[[], None]
OnFailure = Callable[[StoreUnavailable], None]


def immediately(on_durable: Action, on_failure: OnFailure) -> None:
    """For a store that commits every write itself: it is already durable."""
    on_durable()


class GroupCommitter:
    """`after_commit(on_durable, on_failure)` queues work; one `call_soon` per turn commits and runs it."""

    def __init__(self, database: DedupDatabase, loop: asyncio.AbstractEventLoop) -> None:
        self.database = database
        self.loop = loop
        self._queue: list[tuple[Action, OnFailure]] = []
        self.commits = 0

    def after_commit(self, on_durable: Action, on_failure: OnFailure) -> None:
        if not self._queue:
            self.loop.call_soon(self._flush)
        self._queue.append((on_durable, on_failure))

    def _flush(self) -> None:
        queue, self._queue = self._queue, []
        try:
            self.database.commit()
        except StoreUnavailable as exc:
            _log.error('group commit failed, %d action(s) refused: %s', len(queue), exc)
            for _, on_failure in queue:
                on_failure(exc)
            return
        self.commits += 1
        for on_durable, _ in queue:
            on_durable()
