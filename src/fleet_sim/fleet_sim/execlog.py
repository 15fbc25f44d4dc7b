"""The simulator's ground truth: every execution start and end, appended as one JSON line per event to a per-host
file with O_APPEND writes (no buffering, so a SIGKILLed host loses nothing already started). The demo and the
chaos tests read these files back to count double and late executions instead of assuming them."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet_core.model import Command


class ExecutionLog:
    """Append-only JSONL writer, shared by every simulated executor of one host process."""

    def __init__(self, path: Path, host: str) -> None:
        self.path = path
        self.host = host
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _write(self, record: dict[str, object]) -> None:
        os.write(self._fd, (json.dumps(record, separators=(',', ':')) + '\n').encode())

    def started(self, command: Command, wall: float, agent_clock: float) -> None:
        self._write(
            {
                'ev': 'start',
                'host': self.host,
                'pid': os.getpid(),
                'agent': command.agent_id,
                'command_id': command.command_id,
                'kind': command.kind,
                'seq': command.seq,
                'epoch': command.epoch,
                'attempt': command.attempt,
                'deadline': command.deadline,
                'wall': wall,
                'agent_clock': agent_clock,
            }
        )

    def finished(self, command: Command, wall: float, status: str) -> None:
        self._write(
            {'ev': 'end', 'agent': command.agent_id, 'command_id': command.command_id, 'wall': wall, 'status': status}
        )

    def close(self) -> None:
        os.close(self._fd)


@dataclass(frozen=True, slots=True)
class ExecutionAudit:
    """What the execution logs prove: `duplicates` are command ids whose effect started more than once,
    `stale` are executions that started after deadline + tolerance (by the host's true wall clock)."""

    executions: int
    duplicates: tuple[str, ...]
    stale: tuple[str, ...]
    by_kind: dict[str, int]

    @property
    def duplicates_executed(self) -> int:
        return len(self.duplicates)

    @property
    def stale_executions(self) -> int:
        return len(self.stale)


def read_records(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """The JSON records of the execution logs, in file order (values as JSON decoded them)."""
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a SIGKILL mid-write cannot be a complete start record
            if isinstance(record, dict):
                yield record


def audit(paths: Iterable[Path], *, tolerance_sec: float) -> ExecutionAudit:
    starts = [r for r in read_records(paths) if r.get('ev') == 'start']
    counts = Counter(str(r['command_id']) for r in starts)
    stale = tuple(str(r['command_id']) for r in starts if float(r['wall']) > float(r['deadline']) + tolerance_sec)
    kinds = Counter(str(r['kind']) for r in starts)
    return ExecutionAudit(
        executions=len(starts),
        duplicates=tuple(sorted(c for c, n in counts.items() if n > 1)),
        stale=stale,
        by_kind=dict(kinds),
    )
