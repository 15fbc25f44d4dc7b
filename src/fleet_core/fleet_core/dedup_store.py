"""The agent's durable memory of applied commands (SQLite, WAL): what makes execution at-most-once across restarts.

A command is recorded as *started* before it executes and as *final* before its final ack is sent. A command
found started by an earlier boot was interrupted by a crash: it is never run again, it is reported FAILED.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from fleet_core.model import AckStatus, Command

SCHEMA_VERSION = 1
_PRUNE_EVERY = 256


class StoreUnavailable(RuntimeError):
    """The dedup store cannot be opened or read. The agent must refuse commands (safe mode) rather than
    risk executing one twice. The message names the file and the cause."""


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    command_id: str
    seq: int
    epoch: int
    status: AckStatus | None
    """Final status; None while the command is started but not finished."""
    detail: str
    boot: int
    """The store boot (process start) that started the command."""

    @property
    def final(self) -> bool:
        return self.status is not None


class DedupStore:
    """Per-agent SQLite store. `durability='full'` fsyncs every commit (survives power loss);
    `'normal'` (WAL default) survives process crashes and restarts, which is what robots mostly see.

    Only this object writes the file, so the window of outcomes and the high-water marks are loaded once and
    served from memory; every change is written through (one autocommit statement) before it takes effect."""

    def __init__(self, path: str | Path, *, window: int = 10_000, durability: str = 'normal') -> None:
        if durability not in ('full', 'normal'):
            raise ValueError(f"durability must be 'full' or 'normal', got {durability!r}")
        self.path = str(path)
        self.window = window
        self._writes = 0
        self._db: sqlite3.Connection | None = None
        self._known: dict[str, StoredOutcome] = {}
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute('PRAGMA journal_mode=WAL')
            self._db.execute(f'PRAGMA synchronous={durability.upper()}')
            self._check_integrity()
            self._create()
            self.boot = self._meta('boot') + 1
            self._set_meta('boot', self.boot)
            self._epoch = self._meta('epoch')
            rows = self._db.execute('SELECT command_id, seq, epoch, status, detail, boot FROM outcomes').fetchall()
            for row in rows:
                status = None if row[3] is None else AckStatus(row[3])
                self._known[row[0]] = StoredOutcome(row[0], row[1], row[2], status, row[4], row[5])
            self._seq = max([self._meta('seq'), *(o.seq for o in self._known.values())])
        except (sqlite3.DatabaseError, ValueError) as exc:
            raise StoreUnavailable(f'dedup store {self.path}: {exc}; refusing commands until it is repaired') from None

    def _check_integrity(self) -> None:
        row = self._guard('io').execute('PRAGMA quick_check').fetchone()
        if row is None or row[0] != 'ok':
            raise sqlite3.DatabaseError(f'integrity check failed: {row[0] if row else "no answer"}')

    def _create(self) -> None:
        db = self._guard('io')
        db.execute('CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)')
        db.execute(
            'CREATE TABLE IF NOT EXISTS outcomes ('
            ' command_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, epoch INTEGER NOT NULL,'
            " status INTEGER, detail TEXT NOT NULL DEFAULT '', boot INTEGER NOT NULL)"
        )
        db.execute('CREATE INDEX IF NOT EXISTS outcomes_seq ON outcomes (seq)')
        version = self._meta('schema')
        if version == 0:
            self._set_meta('schema', SCHEMA_VERSION)
        elif version != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f'schema version {version}, this build reads {SCHEMA_VERSION}')

    def _meta(self, key: str) -> int:
        row = self._guard('io').execute('SELECT value FROM meta WHERE key = ?', (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, key: str, value: int) -> None:
        self._guard('io').execute('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)', (key, value))

    def _guard(self, what: str) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable(f'dedup store {self.path} is closed ({what})')
        return self._db

    def _write(self, what: str, sql: str, params: tuple[object, ...]) -> None:
        try:
            self._guard(what).execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailable(f'dedup store {self.path}: {exc}') from None

    @property
    def highest_epoch(self) -> int:
        return self._epoch

    @property
    def last_applied_seq(self) -> int:
        return self._seq

    def observe_epoch(self, epoch: int) -> None:
        """Persist a higher fencing epoch; lower ones are ignored."""
        if epoch <= self._epoch:
            return
        self._write('observe_epoch', "INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', ?)", (epoch,))
        self._epoch = epoch

    def lookup(self, command_id: str) -> StoredOutcome | None:
        self._guard('lookup')
        return self._known.get(command_id)

    def begin(self, command: Command) -> None:
        """Record that `command` starts executing now (which also advances the applied seq: it is the highest
        seq in the table). Must precede execution."""
        self._write(
            'begin',
            "INSERT INTO outcomes (command_id, seq, epoch, status, detail, boot) VALUES (?, ?, ?, NULL, '', ?)",
            (command.command_id, command.seq, command.epoch, self.boot),
        )
        self._known[command.command_id] = StoredOutcome(
            command.command_id, command.seq, command.epoch, None, '', self.boot
        )
        self._seq = max(self._seq, command.seq)

    def finish(self, command_id: str, status: AckStatus, detail: str = '') -> None:
        """Persist the final status. Called before the final ack is sent."""
        if not status.is_final:
            raise ValueError(f'{status.name} is not a final status')
        self._write(
            'finish',
            'UPDATE outcomes SET status = ?, detail = ? WHERE command_id = ?',
            (int(status), detail, command_id),
        )
        started = self._known.get(command_id)
        if started is not None:
            self._known[command_id] = StoredOutcome(
                command_id, started.seq, started.epoch, status, detail, started.boot
            )
        self._writes += 1
        if self._writes % _PRUNE_EVERY == 0:
            self._prune()

    def _prune(self) -> None:
        # The seq floor is saved first: commands older than the window fall back on the seq check, so they are
        # still never executed twice.
        floor = self._seq - self.window
        self._write('prune', "INSERT OR REPLACE INTO meta (key, value) VALUES ('seq', ?)", (self._seq,))
        self._write('prune', 'DELETE FROM outcomes WHERE status IS NOT NULL AND seq <= ?', (floor,))
        for command_id in [c for c, o in self._known.items() if o.final and o.seq <= floor]:
            del self._known[command_id]

    def count(self) -> int:
        return int(self._guard('count').execute('SELECT COUNT(*) FROM outcomes').fetchone()[0])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
