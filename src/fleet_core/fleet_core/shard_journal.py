"""A shard orchestrator replica's durable journal (SQLite, WAL): accepted submissions, deliveries and outcomes.

The leader writes a submission here before it answers the submitter, each delivery before it is published, and
each outcome as it is decided; a standby writes what it follows. A replica that leads next (cold start or
takeover) recovers every unfinished command and the highest seq per agent from it, answers a repeated
`request_id` with the commands of the first answer, and serves outcomes by command id for a retention window.

Durability: accepted submissions are committed with `synchronous=FULL` when `durability='full'` (they survive a
power cut once the submitter has its answer); deliveries and outcomes always use `NORMAL` (WAL), which survives a
process crash. A delivery or outcome lost to a power cut is repaired at recovery: the command counts as unfinished,
is delivered again above the agents' applied seqs, and the agents' dedup stores answer with what they did.
"""

from __future__ import annotations

import collections
import enum
import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from fleet_core.model import NO_ACK, Command, CommandResult, Outcome, Priority

SCHEMA_VERSION = 1
CHECKPOINT_EVERY_SEC = 2.0
"""How often the background checkpointer copies the WAL into the database file (see ShardJournal)."""
T = TypeVar('T')


class JournalUnavailable(RuntimeError):
    """The journal cannot be opened, read or written. The orchestrator must not accept work it cannot record;
    the message names the file and the cause."""


class CommandState(enum.IntEnum):
    """How far a command got, as recorded here (values of fleet_interfaces/GetOutcomes STATE_*)."""

    UNKNOWN = 0
    PENDING = 1
    FINISHED = 2


@dataclass(frozen=True, slots=True)
class CommandFate:
    """One command's state; `result` is set when FINISHED."""

    command_id: str
    state: CommandState
    result: CommandResult | None = None
    agent_id: str = ''


@dataclass(frozen=True, slots=True)
class SubmissionRecord:
    """What the first answer to `request_id` named: a repeated request gets exactly these commands back."""

    request_id: str
    trace_id: str
    command_ids: tuple[str, ...]
    agent_ids: tuple[str, ...]
    epoch: int
    stamp: float


_COMMAND_COLUMNS = (
    'command_id, trace_id, site_id, shard_id, agent_id, seq, epoch, priority, issued_at, deadline, kind, args_json,'
    ' attempt'
)


class ShardJournal:
    """One replica's journal file. Not thread-safe: the orchestrator calls it from its one executor thread.

    Checkpoints (copying the WAL into the database file, with an fsync) never run inside the orchestrator's
    commits, where one could stall the executor thread past its lease on a busy disk: automatic checkpoints are off
    and a daemon thread runs passive ones on its own connection (they never block a writer), with
    `background_checkpoints=False` for tests that want none."""

    def __init__(self, path: str | Path, *, durability: str = 'full', background_checkpoints: bool = True) -> None:
        if durability not in ('full', 'normal'):
            raise ValueError(f"journal durability must be 'full' or 'normal', got {durability!r}")
        self.path = str(path)
        self.durability = durability
        self._db: sqlite3.Connection | None = None
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute('PRAGMA journal_mode=WAL')
            self._db.execute('PRAGMA synchronous=NORMAL')
            self._create(self._db)
            self._db.execute('PRAGMA wal_autocheckpoint=0')
        except (sqlite3.DatabaseError, OSError) as exc:
            self.close()
            raise JournalUnavailable(f'shard journal {self.path}: {exc}') from None
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if background_checkpoints:
            self._checkpointer = threading.Thread(target=self._checkpoint_loop, name='journal-checkpoint', daemon=True)
            self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.DatabaseError:
            return  # the main connection reports problems with the file
        try:
            while not self._stop.wait(CHECKPOINT_EVERY_SEC):
                try:
                    db.execute('PRAGMA wal_checkpoint(PASSIVE)')
                except sqlite3.DatabaseError:
                    continue  # busy or transient: the next round tries again; the WAL only grows meanwhile
        finally:
            db.close()

    @staticmethod
    def _create(db: sqlite3.Connection) -> None:
        db.execute('CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)')
        db.execute(
            f'CREATE TABLE IF NOT EXISTS commands ({_COMMAND_COLUMNS}, accepted_at REAL NOT NULL,'
            ' outcome INTEGER, ack_status INTEGER, attempts INTEGER, latency_ms REAL, detail TEXT,'
            ' finished_at REAL, PRIMARY KEY (command_id))'
        )
        db.execute('CREATE INDEX IF NOT EXISTS commands_unfinished ON commands (issued_at) WHERE outcome IS NULL')
        db.execute('CREATE INDEX IF NOT EXISTS commands_finished ON commands (finished_at)')
        db.execute(
            'CREATE TABLE IF NOT EXISTS requests (request_id TEXT PRIMARY KEY, trace_id TEXT NOT NULL,'
            ' command_ids TEXT NOT NULL, agent_ids TEXT NOT NULL, epoch INTEGER NOT NULL, stamp REAL NOT NULL)'
        )
        db.execute('CREATE INDEX IF NOT EXISTS requests_stamp ON requests (stamp)')
        db.execute('CREATE TABLE IF NOT EXISTS seqs (agent_id TEXT PRIMARY KEY, seq INTEGER NOT NULL)')
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f'schema version {row[0]}, this build reads {SCHEMA_VERSION}')

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise JournalUnavailable(f'shard journal {self.path} is closed')
        return self._db

    def _transaction(self, writes: Sequence[tuple[str, Sequence[tuple[object, ...]]]], *, sync: bool) -> None:
        """Run the statements (each with its rows) in one transaction; FULL sync when `sync` and configured so."""
        db = self._conn()
        try:
            full = sync and self.durability == 'full'
            if full:
                db.execute('PRAGMA synchronous=FULL')
            db.execute('BEGIN')
            for sql, rows in writes:
                if rows:
                    db.executemany(sql, rows)
            db.execute('COMMIT')
            if full:
                db.execute('PRAGMA synchronous=NORMAL')
        except sqlite3.DatabaseError as exc:
            if db.in_transaction:
                db.execute('ROLLBACK')
            raise JournalUnavailable(f'shard journal {self.path}: write failed: {exc}') from None

    # -- writes ------------------------------------------------------------------------------------------

    def accept(
        self,
        commands: Sequence[Command],
        *,
        now: float,
        request: SubmissionRecord | None = None,
        sync: bool = True,
    ) -> None:
        """Record accepted (or followed, or adopted) commands, and the request that named them. A command already
        recorded keeps its row (and its outcome, if it has one); only its epoch may rise. `sync`: with
        durability='full', fsynced before returning (what a submitter is answered after); False for writes whose
        loss to a power cut the recovery repairs (a standby's copy, mission steps, adoptions)."""
        rows = [(*_command_row(c), now) for c in commands]
        writes: list[tuple[str, Sequence[tuple[object, ...]]]] = [
            (
                f'INSERT INTO commands ({_COMMAND_COLUMNS}, accepted_at) VALUES ({", ".join("?" * 14)})'  # noqa: S608 - constant column list and '?' placeholders; values are bound
                ' ON CONFLICT (command_id) DO UPDATE SET epoch = MAX(epoch, excluded.epoch)',
                rows,
            ),
            _seq_write(commands),
        ]
        if request is not None:
            writes.append(
                (
                    'INSERT OR IGNORE INTO requests VALUES (?, ?, ?, ?, ?, ?)',
                    [
                        (
                            request.request_id,
                            request.trace_id,
                            json.dumps(list(request.command_ids)),
                            json.dumps(list(request.agent_ids)),
                            request.epoch,
                            request.stamp,
                        )
                    ],
                )
            )
        self._transaction(writes, sync=sync)

    def record(self, *, sends: Sequence[Command] = (), results: Sequence[CommandResult] = ()) -> None:
        """Deliveries (seq, epoch, attempt of what is about to be published) and outcomes, in one transaction."""
        if not sends and not results:
            return
        self._transaction(
            [
                (
                    'UPDATE commands SET seq = ?, epoch = ?, attempt = ? WHERE command_id = ?',
                    [(c.seq, c.epoch, c.attempt, c.command_id) for c in sends],
                ),
                _seq_write(sends),
                (
                    # One upsert per outcome: the first decision wins, and an outcome of a command this replica never
                    # saw accepted (a standby that started late) is kept all the same, so that it is never delivered
                    # again and stays queryable.
                    f'INSERT INTO commands ({_COMMAND_COLUMNS}, accepted_at, outcome, ack_status, attempts,'  # noqa: S608 - constant column list and '?' placeholders; values are bound
                    " latency_ms, detail, finished_at) VALUES (?, ?, '', ?, ?, ?, 0, 0, 0, 0, '', '{}', 0,"
                    ' ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (command_id) DO UPDATE SET outcome = excluded.outcome,'
                    ' ack_status = excluded.ack_status, attempts = excluded.attempts, latency_ms = excluded.latency_ms,'
                    ' detail = excluded.detail, finished_at = excluded.finished_at WHERE outcome IS NULL',
                    [
                        (
                            r.command_id,
                            r.trace_id,
                            r.shard_id,
                            r.agent_id,
                            r.seq,
                            r.stamp,
                            int(r.outcome),
                            r.ack_status,
                            r.attempts,
                            r.latency_ms,
                            r.detail,
                            r.stamp,
                        )
                        for r in results
                    ],
                ),
            ],
            sync=False,
        )

    def note_epoch(self, epoch: int) -> None:
        """Remember the highest epoch this replica saw or held, so a cold restart never leads below it."""
        if epoch > self.max_epoch():
            self._transaction([("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", [(epoch,)])], sync=True)

    def note_led(self, epoch: int) -> None:
        """Remember the newest epoch this replica led holding every request record of the epochs before it (its
        catch-up ended): a next leader waiting for that epoch's journal takes this replica's hand-over as complete."""
        if epoch > self.led_epoch():
            self._transaction([("INSERT OR REPLACE INTO meta VALUES ('led', ?)", [(epoch,)])], sync=True)

    def led_epoch(self) -> int:
        rows = self._read("SELECT value FROM meta WHERE key = 'led'")
        return int(rows[0][0]) if rows else 0

    def prune(self, *, before: float) -> int:
        """Forget outcomes decided and requests answered before `before`; returns the commands forgotten.
        Unfinished commands are never pruned."""
        db = self._conn()
        try:
            db.execute('BEGIN')
            cursor = db.execute('DELETE FROM commands WHERE outcome IS NOT NULL AND finished_at < ?', (before,))
            db.execute('DELETE FROM requests WHERE stamp < ?', (before,))
            db.execute('COMMIT')
        except sqlite3.DatabaseError as exc:
            if db.in_transaction:
                db.execute('ROLLBACK')
            raise JournalUnavailable(f'shard journal {self.path}: prune failed: {exc}') from None
        return cursor.rowcount

    # -- reads -------------------------------------------------------------------------------------------

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise JournalUnavailable(f'shard journal {self.path}: read failed: {exc}') from None

    def unfinished(self) -> list[Command]:
        """Every recorded command without an outcome, oldest first, with its latest recorded delivery."""
        rows = self._read(
            f'SELECT {_COMMAND_COLUMNS} FROM commands WHERE outcome IS NULL ORDER BY issued_at, command_id'  # noqa: S608 - constant column list and '?' placeholders; values are bound
        )
        return [_command_of(row) for row in rows]

    def max_seqs(self) -> dict[str, int]:
        """The highest seq recorded per agent (deliveries made, or seen, by any leader this replica followed)."""
        return {str(agent): int(seq) for agent, seq in self._read('SELECT agent_id, seq FROM seqs')}

    def max_epoch(self) -> int:
        rows = self._read("SELECT value FROM meta WHERE key = 'epoch'")
        recorded = int(rows[0][0]) if rows else 0
        seen = self._read('SELECT MAX(epoch) FROM commands')
        return max(recorded, int(seen[0][0]) if seen and seen[0][0] is not None else 0)

    def finished_ids(self, command_ids: Iterable[str]) -> set[str]:
        ids = list(command_ids)
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self._read(
                'SELECT command_id FROM commands WHERE outcome IS NOT NULL'  # noqa: S608 - constant column list and '?' placeholders; values are bound
                f' AND command_id IN ({",".join("?" * len(chunk))})',
                tuple(chunk),
            )
            found.update(str(row[0]) for row in rows)
        return found

    def recent_results(self, window: float, *, limit: int = 4096) -> list[CommandResult]:
        """Outcomes decided within `window` seconds before the newest one recorded here (at most `limit`, newest
        first): what a leader that died just after deciding may not have announced to everyone."""
        rows = self._read(
            'SELECT command_id FROM commands WHERE outcome IS NOT NULL AND finished_at >='
            ' (SELECT MAX(finished_at) FROM commands) - ? ORDER BY finished_at DESC LIMIT ?',
            (window, limit),
        )
        fates = self.fates([str(row[0]) for row in rows])
        return [f.result for f in fates if f.result is not None]

    def fates(self, command_ids: Sequence[str]) -> list[CommandFate]:
        """One fate per id, aligned with `command_ids` (UNKNOWN: never recorded, or pruned)."""
        by_id: dict[str, CommandFate] = {}
        unique = list(dict.fromkeys(command_ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            rows = self._read(
                'SELECT command_id, trace_id, agent_id, shard_id, seq, outcome, ack_status, attempts, latency_ms,'  # noqa: S608 - constant column list and '?' placeholders; values are bound
                f' detail, finished_at FROM commands WHERE command_id IN ({",".join("?" * len(chunk))})',
                tuple(chunk),
            )
            for cid, trace, agent, shard, seq, outcome, ack_status, attempts, latency, detail, finished in rows:
                command_id, agent_id = str(cid), str(agent)
                if outcome is None:
                    by_id[command_id] = CommandFate(command_id, CommandState.PENDING, agent_id=agent_id)
                    continue
                result = CommandResult(
                    command_id=command_id,
                    trace_id=str(trace),
                    agent_id=agent_id,
                    shard_id=str(shard),
                    seq=int(seq),
                    outcome=Outcome(int(outcome)),
                    ack_status=int(ack_status) if ack_status is not None else NO_ACK,
                    attempts=int(attempts or 0),
                    latency_ms=float(latency or 0.0),
                    detail=str(detail or ''),
                    stamp=float(finished or 0.0),
                )
                by_id[command_id] = CommandFate(command_id, CommandState.FINISHED, result, agent_id)
        return [by_id.get(cid, CommandFate(cid, CommandState.UNKNOWN)) for cid in command_ids]

    def recent_requests(self, *, limit: int = 1000) -> list[SubmissionRecord]:
        """The newest `limit` request records, oldest first."""
        rows = self._read(
            'SELECT request_id, trace_id, command_ids, agent_ids, epoch, stamp FROM requests'
            ' ORDER BY stamp DESC LIMIT ?',
            (limit,),
        )
        return [_record_of(row) for row in reversed(rows)]

    def request(self, request_id: str) -> SubmissionRecord | None:
        rows = self._read(
            'SELECT request_id, trace_id, command_ids, agent_ids, epoch, stamp FROM requests WHERE request_id = ?',
            (request_id,),
        )
        return _record_of(rows[0]) if rows else None

    def close(self) -> None:
        stop = getattr(self, '_stop', None)
        if stop is not None:
            stop.set()
            if self._checkpointer is not None:
                self._checkpointer.join(timeout=5.0)
                self._checkpointer = None
        if self._db is not None:
            if self._db.in_transaction:
                self._db.execute('ROLLBACK')
            self._db.close()
            self._db = None


def _record_of(row: Any) -> SubmissionRecord:
    request_id, trace, command_ids, agent_ids, epoch, stamp = row
    return SubmissionRecord(
        str(request_id),
        str(trace),
        tuple(json.loads(str(command_ids))),
        tuple(json.loads(str(agent_ids))),
        int(epoch),
        float(stamp),
    )


def _command_row(c: Command) -> tuple[object, ...]:
    return (
        c.command_id,
        c.trace_id,
        c.site_id,
        c.shard_id,
        c.agent_id,
        c.seq,
        c.epoch,
        int(c.priority),
        c.issued_at,
        c.deadline,
        c.kind,
        c.args_json,
        c.attempt,
    )


def _command_of(row: Any) -> Command:
    cid, trace, site, shard, agent, seq, epoch, priority, issued, deadline, kind, args, attempt = row
    return Command(
        command_id=str(cid),
        trace_id=str(trace),
        site_id=str(site),
        shard_id=str(shard),
        agent_id=str(agent),
        seq=int(seq),
        epoch=int(epoch),
        priority=Priority(int(priority)),
        issued_at=float(issued),
        deadline=float(deadline),
        kind=str(kind),
        args_json=str(args),
        attempt=int(attempt),
    )


def _seq_write(commands: Sequence[Command]) -> tuple[str, list[tuple[object, ...]]]:
    highest: dict[str, int] = {}
    for c in commands:
        if c.seq > highest.get(c.agent_id, 0):
            highest[c.agent_id] = c.seq
    return (
        'INSERT INTO seqs VALUES (?, ?) ON CONFLICT (agent_id) DO UPDATE SET seq = MAX(seq, excluded.seq)',
        list(highest.items()),
    )


class GateVerdict(enum.Enum):
    ACCEPTED = 'accepted'
    HELD = 'held'
    REJECTED = 'rejected'


class JournalGate(Generic[T]):
    """Admits replicated entries (journal entries, submission records) only from the current lease holder's epoch.

    An entry of a newer epoch than the lease seen so far waits for that lease (the lease and the entries travel on
    different topics, so the entries may arrive first), up to `hold_limit` entries; an entry of an older epoch, of
    an epoch whose lease never arrives, or past the limit is rejected: counted, never applied."""

    def __init__(self, *, hold_limit: int = 10_000) -> None:
        self.epoch = 0
        self.rejected = 0
        self.hold_limit = hold_limit
        self._held: list[tuple[int, T]] = []

    def offer(self, epoch: int, entry: T) -> GateVerdict:
        if epoch == self.epoch and epoch > 0:
            return GateVerdict.ACCEPTED
        if epoch > self.epoch and len(self._held) < self.hold_limit:
            self._held.append((epoch, entry))
            return GateVerdict.HELD
        self.rejected += 1
        return GateVerdict.REJECTED

    def on_lease(self, epoch: int) -> list[T]:
        """A lease of `epoch` was seen: its held entries are released (returned), older held ones rejected."""
        if epoch <= self.epoch:
            return []
        self.epoch = epoch
        released = [entry for e, entry in self._held if e == epoch]
        stale = sum(1 for e, _ in self._held if e < epoch)
        self.rejected += stale
        self._held = [(e, entry) for e, entry in self._held if e > epoch]
        return released

    @property
    def held(self) -> int:
        return len(self._held)


GAP_GRACE_SEC = 2.0
"""How long a lease's claim may stay ahead of the journal entries that arrived before it counts as a gap: the lease
and the entries travel on different topics, so a lease may overtake the entries it counts (by milliseconds on an idle
host; a reliable reader's repair of a lost sample, or a busy standby's queue, can take a few hundred). Two lease
periods of the default config: a false alarm costs one snapshot, a late one only delays it."""


def journal_entry_key(command: Command) -> str:
    """What identifies one journal entry of an epoch (an entry is a command at one delivery: id, seq, attempt)."""
    return f'{command.command_id}/{command.seq}/{command.attempt}'


class JournalGapDetector:
    """Notices a standby that misses journal entries while following (a dropped sample, a reader that fell behind
    and lost its history, a stream that went silent while the leader wrote on). No ROS, no clock of its own.

    The leader counts the entries it journals in its epoch and sends the count with every lease (LeaderLease
    last_seq_hint); the standby counts the entries of that epoch that reached it. A lease that claims more than had
    arrived, still unmet `grace_sec` later, is a gap. The count is judged only once it is synced: from a lease that
    claims no more than arrived (the standby followed the epoch from its start, or the leader has written nothing yet)
    or from a snapshot marker, which carries the count its snapshot covers and the key of the last entry it covers.
    After a gap it is unsynced (nothing more to report) until the next snapshot marker.

    The marker and the entries travel on different topics, so entries journaled after the marker may arrive before
    it. The last covered entry's key places the marker in the entry stream (one writer: entries arrive in order):
    those that arrived after that entry are counted on top of the marker's count. When that entry has not arrived,
    either it is still on its way (a standby that was synced in this epoch follows the stream: what arrived is
    covered) or it never will (a standby never synced in this epoch subscribed after it was published: what arrived
    came after it). Should that entry arrive after all, the count restarts from the marker's there."""

    def __init__(self, *, grace_sec: float = GAP_GRACE_SEC, max_claims: int = 64, max_keys: int = 4096) -> None:
        self.grace_sec = grace_sec
        self.epoch = 0
        self.synced = False
        self.gaps = 0
        self._received: dict[int, int] = {}
        self._claims: collections.deque[tuple[float, int]] = collections.deque(maxlen=max_claims)
        self._keys: collections.deque[tuple[int, str, int]] = collections.deque(maxlen=max_keys)
        """The latest entries' (epoch, key, count once it arrived), to place a snapshot marker in the stream."""
        self._covered_last: tuple[int, str, int] | None = None
        """A marker's (epoch, last covered key, covered count) whose last entry has not arrived yet."""
        self._followed = False
        """Synced at some point in this epoch (it has followed the stream since)."""

    def received(self, epoch: int | None = None) -> int:
        return self._received.get(self.epoch if epoch is None else epoch, 0)

    def on_entry(self, epoch: int, key: str = '') -> None:
        """A journal entry of `epoch` arrived (counted even while held for its lease; older epochs are ignored).
        `key`: the entry's `journal_entry_key`."""
        if epoch < self.epoch or epoch <= 0:
            return
        count = self._received.get(epoch, 0) + 1
        if self._covered_last is not None and self._covered_last[:2] == (epoch, key):
            count = self._covered_last[2]  # the last entry a marker covered, after the marker: count from the marker's
            self._covered_last = None
        self._received[epoch] = count
        if key:
            self._keys.append((epoch, key, count))

    def on_lease(self, epoch: int, written: int, now: float) -> None:
        """The lease holder's lease of `epoch`: it had journaled `written` entries in that epoch."""
        if epoch < self.epoch:
            return
        if epoch > self.epoch:
            self._advance(epoch)
        received = self.received()
        if not self.synced:
            self.synced = written <= received
            self._followed = self._followed or self.synced
        elif written > received:
            self._claims.append((now, written))

    def on_snapshot(self, epoch: int, covered: int, last: str = '') -> None:
        """The lease holder's end-of-snapshot marker of `epoch`, sent when it had journaled `covered` entries, the
        last of them with key `last` ('' when none): what those entries carried and is still unfinished came with
        the snapshot, so the count restarts from there (plus what arrived after `last`)."""
        if epoch < self.epoch:
            return
        if epoch > self.epoch:
            self._advance(epoch)
        arrived = self.received()
        self._covered_last = None
        if not last:
            self._received[epoch] = max(arrived, covered)
        else:
            at = next((n for e, key, n in reversed(self._keys) if e == epoch and key == last), None)
            if at is None:
                self._covered_last = (epoch, last, covered)
                at = arrived if self._followed else 0
            self._received[epoch] = covered + arrived - at
        self._claims.clear()
        self.synced = self._followed = True

    def check(self, now: float) -> str:
        """'' while the stream keeps up; else why it is found to have a gap (once: it is then unsynced)."""
        if not self.synced:
            return ''
        received = self.received()
        while self._claims and self._claims[0][1] <= received:
            self._claims.popleft()
        if not self._claims or now - self._claims[0][0] < self.grace_sec:
            return ''
        since, claimed = self._claims[0]
        newest = self._claims[-1][1]
        self._claims.clear()
        self.synced = False
        self.gaps += 1
        return (
            f'journal gap in epoch {self.epoch}: the leader had journaled {claimed} entries by a lease seen '
            f'{now - since:.1f}s ago ({newest} by its newest), only {received} arrived'
        )

    def _advance(self, epoch: int) -> None:
        self.epoch = epoch
        self.synced = False
        self._claims.clear()
        self._covered_last = None
        self._followed = False
        self._received = {e: n for e, n in self._received.items() if e >= epoch}
