"""The agent's durable memory of applied commands (SQLite, WAL): what makes execution at-most-once across restarts.

A command is recorded as *started* before it executes and as *final* before its final ack is sent. A command
found started by an earlier boot was interrupted by a crash: it is never run again, it is reported FAILED.
One database file serves the agents of one host (one on a robot, hundreds in a simulator); with group commit,
the writes of one event-loop turn share one transaction, and nothing that depends on them happens before it commits.

The start guard. SQLite silently drops every WAL frame after the first damaged one (and `synchronous=NORMAL` may
lose the last commits on a power loss), so a store can come back without the *started* records of commands that
ran. Each start is therefore also appended to `<store>.guard`, a small side file fsynced (after the SQLite commit)
before the command executes. At open, every guarded start must be in the store (or below the seq floor saved when
old outcomes are pruned); otherwise the store lost writes and the agent goes to SAFE MODE: it refuses everything
but SAFETY commands and answers re-deliveries of the lost commands FAILED (never re-executed), until an operator
clears it with `fleet_agent_store clear-safe-mode <store>` (which records the lost commands as FAILED and restores
the applied seq from the guard). The guard is emptied once the store is known whole and checkpointed into the main
file.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from fleet_core.model import AckStatus, Command

SCHEMA_VERSION = 2
_PRUNE_EVERY = 256
GUARD_SUFFIX = '.guard'
GUARD_COMPACT_BYTES = 1 << 20
"""Past this size the guard is emptied at the next commit (after a checkpoint moves the WAL into the main file)."""
LOST_DETAIL = 'started before a restart, then lost by a damaged store; never re-executed'


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


class DedupDatabase:
    """The SQLite file behind one or more agents' DedupStores. `durability='full'` fsyncs every commit (survives
    power loss); `'normal'` (WAL) survives process crashes and restarts, which is what robots mostly see.

    Without group commit every write is its own transaction. With `group_commit=True` writes accumulate in an
    open transaction until `commit()`; the caller must not act on them (execute, ack) before that returns."""

    def __init__(self, path: str | Path, *, durability: str = 'normal', group_commit: bool = False) -> None:
        if durability not in ('full', 'normal'):
            raise ValueError(f"durability must be 'full' or 'normal', got {durability!r}")
        self.path = str(path)
        self.durability = durability
        self.guard_path = self.path + GUARD_SUFFIX
        self.group_commit = group_commit
        self._queued: list[tuple[str, tuple[object, ...]]] = []
        self._guard_queue: list[str] = []
        self._guard: BinaryIO | None = None
        self._db: sqlite3.Connection | None = None
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute('PRAGMA journal_mode=WAL')
            self._db.execute(f'PRAGMA synchronous={durability.upper()}')
            row = self._db.execute('PRAGMA quick_check').fetchone()
            if row is None or row[0] != 'ok':
                raise sqlite3.DatabaseError(f'integrity check failed: {row[0] if row else "no answer"}')
            self._create(self._db)
            self.boot = self.meta('', 'boot') + 1
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('', 'boot', ?)", (self.boot,))
            self.lost = self._check_guard(self._db)
            """Per agent, the guarded starts the store does not know: {agent_id: {command_id: seq}}."""
            if not self.lost:
                self._empty_guard(self._db)
            created = not os.path.exists(self.guard_path)
            # A file object, not a bare descriptor: a database dropped without close() (a simulated crash) frees it.
            self._guard = open(self.guard_path, 'ab', buffering=0)
            if created:  # the new file's directory entry must survive a power loss too
                directory = os.open(os.path.dirname(os.path.abspath(self.guard_path)), os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise StoreUnavailable(f'dedup store {self.path}: {exc}; refusing commands until it is repaired') from None
        except OSError as exc:
            self.close()
            raise StoreUnavailable(f'dedup store {self.path}: start guard: {exc}; refusing commands') from None

    # -- start guard ---------------------------------------------------------------------------------------

    def _guarded_starts(self) -> list[tuple[str, int, str]]:
        """(agent_id, seq, command_id) of every start in the guard; a torn last line (its fsync never returned,
        so that command never ran) is ignored."""
        try:
            text = Path(self.guard_path).read_text(encoding='utf-8')
        except FileNotFoundError:
            return []
        starts = []
        for line in text.split('\n')[:-1]:
            fields = line.split('\t')
            if len(fields) == 4 and fields[0] == 'S' and fields[2].isdigit():
                starts.append((fields[1], int(fields[2]), fields[3]))
        return starts

    def _check_guard(self, db: sqlite3.Connection) -> dict[str, dict[str, int]]:
        starts = self._guarded_starts()
        if not starts:
            return {}
        # Pruned outcomes are gone on purpose, below the seq floor saved before pruning (the seq check refuses them).
        floor = dict(db.execute("SELECT agent_id, value FROM meta WHERE key = 'seq'").fetchall())
        lost: dict[str, dict[str, int]] = {}
        for agent_id, seq, command_id in starts:
            if seq <= floor.get(agent_id, 0):
                continue
            known = db.execute(
                'SELECT 1 FROM outcomes WHERE agent_id = ? AND command_id = ?', (agent_id, command_id)
            ).fetchone()
            if known is None:
                lost.setdefault(agent_id, {})[command_id] = seq
        return lost

    def _empty_guard(self, db: sqlite3.Connection) -> None:
        """Move the WAL into the (synced) main file, then forget the guarded starts: the store holds them now."""
        busy = db.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone()
        if busy is not None and busy[0] == 0 and os.path.exists(self.guard_path):
            with open(self.guard_path, 'r+b') as guard:
                guard.truncate(0)
                os.fsync(guard.fileno())

    def _guard_file(self) -> BinaryIO:
        if self._guard is None:
            raise StoreUnavailable(f'dedup store {self.path} is closed (start guard)')
        return self._guard

    def guard_start(self, agent_id: str, seq: int, command_id: str) -> None:
        """Record a start in the guard: synced after the store's commit, before the command may execute."""
        self._guard_queue.append(f'S\t{agent_id}\t{seq}\t{command_id}\n')
        if not self.group_commit:
            self._sync_guard()

    def _sync_guard(self) -> None:
        if not self._guard_queue:
            return
        lines, self._guard_queue = self._guard_queue, []
        try:
            guard = self._guard_file()
            guard.write(''.join(lines).encode('utf-8'))
            os.fsync(guard.fileno())
        except OSError as exc:
            raise StoreUnavailable(f'dedup store {self.path}: start guard not written: {exc}') from None

    def clear_lost(self) -> list[tuple[str, str, int]]:
        """The operator's way out of safe mode: record every lost start as FAILED (never to run again) with its seq,
        then empty the guard. Returns the (agent_id, command_id, seq) recorded."""
        db = self._conn('clear_lost')
        cleared = [(a, c, s) for a, lost in sorted(self.lost.items()) for c, s in sorted(lost.items())]
        try:
            db.execute('BEGIN')
            db.executemany(
                'INSERT OR IGNORE INTO outcomes VALUES (?, ?, ?, 0, ?, ?, ?)',
                [(a, c, s, int(AckStatus.FAILED), LOST_DETAIL, self.boot) for a, c, s in cleared],
            )
            db.execute('COMMIT')
            self._empty_guard(db)
        except (sqlite3.DatabaseError, OSError) as exc:
            if db.in_transaction:
                db.execute('ROLLBACK')
            raise StoreUnavailable(f'dedup store {self.path}: cannot clear safe mode: {exc}') from None
        self.lost = {}
        return cleared

    @staticmethod
    def _create(db: sqlite3.Connection) -> None:
        db.execute(
            'CREATE TABLE IF NOT EXISTS meta (agent_id TEXT NOT NULL, key TEXT NOT NULL, value INTEGER NOT NULL,'
            ' PRIMARY KEY (agent_id, key))'
        )
        db.execute(
            'CREATE TABLE IF NOT EXISTS outcomes (agent_id TEXT NOT NULL, command_id TEXT NOT NULL,'
            ' seq INTEGER NOT NULL, epoch INTEGER NOT NULL, status INTEGER, detail TEXT NOT NULL,'
            ' boot INTEGER NOT NULL, PRIMARY KEY (agent_id, command_id))'
        )
        db.execute('CREATE INDEX IF NOT EXISTS outcomes_seq ON outcomes (agent_id, seq)')
        row = db.execute("SELECT value FROM meta WHERE agent_id = '' AND key = 'schema'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('', 'schema', ?)", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f'schema version {row[0]}, this build reads {SCHEMA_VERSION}')

    def _conn(self, what: str) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable(f'dedup store {self.path} is closed ({what})')
        return self._db

    def _reader(self, what: str) -> sqlite3.Connection:
        """The connection for a read that must see this process's queued writes (read your own writes)."""
        db = self._conn(what)
        self._apply_queued(db)
        return db

    def meta(self, agent_id: str, key: str) -> int:
        row = (
            self._reader('read')
            .execute('SELECT value FROM meta WHERE agent_id = ? AND key = ?', (agent_id, key))
            .fetchone()
        )
        return int(row[0]) if row else 0

    def rows(self, agent_id: str) -> list[tuple[str, int, int, int | None, str, int]]:
        return (
            self._reader('read')
            .execute(
                'SELECT command_id, seq, epoch, status, detail, boot FROM outcomes WHERE agent_id = ?', (agent_id,)
            )
            .fetchall()
        )

    def write(self, what: str, sql: str, params: tuple[object, ...]) -> None:
        """Without group commit: one transaction now. With it: queued for commit(), which runs a turn's writes as
        one executemany per run of identical statements (hundreds of agents' inserts cost one call)."""
        db = self._conn(what)
        if self.group_commit:
            self._queued.append((sql, params))
            return
        try:
            db.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailable(f'dedup store {self.path}: {exc}') from None

    def _apply_queued(self, db: sqlite3.Connection) -> None:
        """Run the queued writes, in order, inside the open (or a new) transaction."""
        if not self._queued:
            return
        queued, self._queued = self._queued, []
        if not db.in_transaction:
            db.execute('BEGIN')
        start = 0
        while start < len(queued):
            sql = queued[start][0]
            end = start + 1
            while end < len(queued) and queued[end][0] == sql:
                end += 1
            db.executemany(sql, [params for _, params in queued[start:end]])
            start = end

    @property
    def pending(self) -> bool:
        """Writes are waiting for commit()."""
        return bool(self._queued) or (self._db is not None and self._db.in_transaction)

    def commit(self) -> None:
        """Make every write so far durable (no-op without group commit). Raises StoreUnavailable; the writes are
        then lost, as a crash would lose them, and nothing that depended on them may happen."""
        db = self._conn('commit')
        try:
            self._apply_queued(db)
            if db.in_transaction:
                db.execute('COMMIT')
        except sqlite3.DatabaseError as exc:
            self._guard_queue = []  # those starts were rolled back: nothing of them may run
            if db.in_transaction:
                db.execute('ROLLBACK')
            raise StoreUnavailable(f'dedup store {self.path}: commit failed: {exc}') from None
        self._sync_guard()
        if not self.lost and os.fstat(self._guard_file().fileno()).st_size > GUARD_COMPACT_BYTES:
            try:
                self._empty_guard(db)
            except (sqlite3.DatabaseError, OSError) as exc:
                raise StoreUnavailable(f'dedup store {self.path}: start guard: {exc}') from None

    def count(self, agent_id: str) -> int:
        row = self._reader('count').execute('SELECT COUNT(*) FROM outcomes WHERE agent_id = ?', (agent_id,)).fetchone()
        return int(row[0])

    def close(self) -> None:
        self._queued = []  # never committed: not durable, as after a crash
        self._guard_queue = []
        if self._guard is not None:
            self._guard.close()
            self._guard = None
        if self._db is not None:
            if self._db.in_transaction:
                self._db.execute('ROLLBACK')
            self._db.close()
            self._db = None


class DedupStore:
    """One agent's view of a DedupDatabase. Only this object writes the agent's rows, so the window of outcomes
    and the high-water marks are loaded once and served from memory; every change is written through.

    `DedupStore(path)` opens a private database with one transaction per write (a robot computer)."""

    def __init__(
        self,
        database: DedupDatabase | str | Path,
        agent_id: str = 'agent',
        *,
        window: int = 10_000,
        durability: str = 'normal',
    ) -> None:
        owned = not isinstance(database, DedupDatabase)
        self.db = database if isinstance(database, DedupDatabase) else DedupDatabase(database, durability=durability)
        self._owns_db = owned
        self.agent_id = agent_id
        self.path = self.db.path
        self.window = window
        self.boot = self.db.boot
        self._writes = 0
        self._known: dict[str, StoredOutcome] = {}
        try:
            for row in self.db.rows(agent_id):
                status = None if row[3] is None else AckStatus(row[3])
                self._known[row[0]] = StoredOutcome(row[0], row[1], row[2], status, row[4], row[5])
            self._epoch = self.db.meta(agent_id, 'epoch')
            self._paused = bool(self.db.meta(agent_id, 'paused'))
            self._operation_at = self.db.meta(agent_id, 'operation_ms') / 1000.0
            self._lost = dict(self.db.lost.get(agent_id, {}))
            self._seq = max(
                [self.db.meta(agent_id, 'seq'), *(o.seq for o in self._known.values()), *self._lost.values()]
            )
        except (sqlite3.DatabaseError, ValueError) as exc:
            raise StoreUnavailable(f'dedup store {self.path}: {exc}; refusing commands until it is repaired') from None

    @property
    def highest_epoch(self) -> int:
        return self._epoch

    @property
    def divergence(self) -> str:
        """Empty while the store is whole; otherwise why the agent is in safe mode and how to clear it."""
        if not self._lost:
            return ''
        return (
            f'SAFE MODE: dedup store lost {len(self._lost)} started command(s) up to seq {max(self._lost.values())} '
            f'(damaged or lost WAL); only SAFETY commands run until an operator runs '
            f'`fleet_agent_store clear-safe-mode {self.path}` and restarts the agent'
        )

    @property
    def last_applied_seq(self) -> int:
        return self._seq

    def observe_epoch(self, epoch: int) -> None:
        """Persist a higher fencing epoch; lower ones are ignored."""
        if epoch <= self._epoch:
            return
        self.db.write('observe_epoch', "INSERT OR REPLACE INTO meta VALUES (?, 'epoch', ?)", (self.agent_id, epoch))
        self._epoch = epoch

    @property
    def paused(self) -> bool:
        """The agent is paused by a fleet operation (kept across restarts until a resume)."""
        return self._paused

    @property
    def operation_at(self) -> float:
        """When the last pause or resume was applied (UTC seconds; 0 before any)."""
        return self._operation_at

    def set_paused(self, paused: bool, at: float) -> None:
        """Apply a pause or resume at UTC time `at` (both persisted)."""
        if paused != self._paused:
            self.db.write(
                'set_paused', "INSERT OR REPLACE INTO meta VALUES (?, 'paused', ?)", (self.agent_id, int(paused))
            )
        self.db.write(
            'set_paused', "INSERT OR REPLACE INTO meta VALUES (?, 'operation_ms', ?)", (self.agent_id, int(at * 1000))
        )
        self._paused = paused
        self._operation_at = int(at * 1000) / 1000.0

    def lookup(self, command_id: str) -> StoredOutcome | None:
        """A lost start (guarded, gone from the store) reads as started by an earlier boot: never run again."""
        known = self._known.get(command_id)
        if known is None and command_id in self._lost:
            return StoredOutcome(command_id, self._lost[command_id], 0, None, '', 0)
        return known

    def begin(self, command: Command) -> None:
        """Record that `command` starts executing (which also advances the applied seq: it is the highest seq
        in the table). Must be durable before execution starts."""
        self.db.write(
            'begin',
            "INSERT INTO outcomes VALUES (?, ?, ?, ?, NULL, '', ?)",
            (self.agent_id, command.command_id, command.seq, command.epoch, self.boot),
        )
        self._known[command.command_id] = StoredOutcome(
            command.command_id, command.seq, command.epoch, None, '', self.boot
        )
        self._seq = max(self._seq, command.seq)
        self.db.guard_start(self.agent_id, command.seq, command.command_id)

    def finish(self, command_id: str, status: AckStatus, detail: str = '') -> None:
        """Record the final status. Must be durable before the final ack is sent."""
        if not status.is_final:
            raise ValueError(f'{status.name} is not a final status')
        self.db.write(
            'finish',
            'UPDATE outcomes SET status = ?, detail = ? WHERE agent_id = ? AND command_id = ?',
            (int(status), detail, self.agent_id, command_id),
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
        self.db.write('prune', "INSERT OR REPLACE INTO meta VALUES (?, 'seq', ?)", (self.agent_id, self._seq))
        self.db.write(
            'prune',
            'DELETE FROM outcomes WHERE agent_id = ? AND status IS NOT NULL AND seq <= ?',
            (self.agent_id, floor),
        )
        for command_id in [c for c, o in self._known.items() if o.final and o.seq <= floor]:
            del self._known[command_id]

    def count(self) -> int:
        return self.db.count(self.agent_id)

    def close(self) -> None:
        if self._owns_db:
            self.db.close()
