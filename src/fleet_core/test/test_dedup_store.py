import shutil
from pathlib import Path

import pytest

from fleet_core.dedup_store import DedupDatabase, DedupStore, StoreUnavailable
from fleet_core.model import AckStatus, Command, Priority


def command(command_id: str, seq: int, epoch: int = 1) -> Command:
    return Command(command_id, 't', 's', 'z', 'a', seq, epoch, Priority.NORMAL, 0.0, 10.0, 'noop')


def test_outcomes_survive_a_restart(tmp_path):
    path = tmp_path / 'agent.sqlite'
    store = DedupStore(path)
    store.observe_epoch(3)
    store.begin(command('c1', 1))
    store.finish('c1', AckStatus.SUCCEEDED)
    store.begin(command('c2', 2))
    store.close()

    reopened = DedupStore(path)
    assert reopened.boot == store.boot + 1
    assert reopened.highest_epoch == 3
    assert reopened.last_applied_seq == 2
    done = reopened.lookup('c1')
    assert done is not None and done.status == AckStatus.SUCCEEDED
    started = reopened.lookup('c2')
    assert started is not None and not started.final and started.boot == store.boot
    assert reopened.lookup('c3') is None


def test_epoch_never_goes_down(tmp_path):
    store = DedupStore(tmp_path / 's.sqlite')
    store.observe_epoch(5)
    store.observe_epoch(2)
    assert store.highest_epoch == 5


def test_window_bounds_the_store_but_keeps_the_seq_floor(tmp_path):
    store = DedupStore(tmp_path / 's.sqlite', window=10)
    for seq in range(1, 601):
        store.begin(command(f'c{seq}', seq))
        store.finish(f'c{seq}', AckStatus.SUCCEEDED)
    assert store.count() <= 10 + 256
    assert store.last_applied_seq == 600
    assert store.lookup('c600') is not None


def test_corrupt_file_raises_store_unavailable(tmp_path):
    path = tmp_path / 'broken.sqlite'
    path.write_bytes(b'this is not a database' * 100)
    with pytest.raises(StoreUnavailable, match=r'broken\.sqlite'):
        DedupStore(path)


def test_unreadable_directory_raises_store_unavailable(tmp_path):
    with pytest.raises(StoreUnavailable):
        DedupStore(tmp_path / 'missing-dir' / 'x.sqlite')


def test_finish_requires_a_final_status(tmp_path):
    store = DedupStore(tmp_path / 's.sqlite')
    with pytest.raises(ValueError, match='not a final status'):
        store.finish('c', AckStatus.ACCEPTED)


def test_group_commit_makes_writes_durable_only_at_commit(tmp_path):
    from fleet_core.dedup_store import DedupDatabase

    path = tmp_path / 'host.sqlite'
    db = DedupDatabase(path, group_commit=True)
    a, b = DedupStore(db, 'a'), DedupStore(db, 'b')
    a.begin(command('c1', 1))
    b.begin(command('c1', 7))
    assert db.pending and a.lookup('c1').seq == 1 and b.lookup('c1').seq == 7
    db.commit()
    assert not db.pending
    a.finish('c1', AckStatus.SUCCEEDED)
    db.close()  # crash before the second commit: the finish is lost, the begins are not

    again = DedupDatabase(path, group_commit=True)
    a2, b2 = DedupStore(again, 'a'), DedupStore(again, 'b')
    assert a2.lookup('c1') is not None and not a2.lookup('c1').final
    assert a2.last_applied_seq == 1 and b2.last_applied_seq == 7
    assert a2.boot == a.boot + 1


def test_group_commit_batches_a_turn_in_order_and_reads_see_queued_writes(tmp_path):
    from fleet_core.dedup_store import DedupDatabase

    path = tmp_path / 'host.sqlite'
    db = DedupDatabase(path, group_commit=True)
    stores = [DedupStore(db, f'r{i}') for i in range(50)]
    for i, store in enumerate(stores):
        store.begin(command(f'c{i}', i + 1))
    stores[3].finish('c3', AckStatus.FAILED, 'boom')  # an update after the inserts of the same turn
    stores[4].begin(command('c4b', 99))
    assert db.count('r4') == 2  # a read sees this turn's queued writes
    db.commit()
    db.close()

    again = DedupDatabase(path, group_commit=True)
    reopened = [DedupStore(again, f'r{i}') for i in range(50)]
    assert [s.last_applied_seq for s in reopened[:3]] == [1, 2, 3] and reopened[4].last_applied_seq == 99
    assert reopened[3].lookup('c3').status == AckStatus.FAILED and reopened[3].lookup('c3').detail == 'boom'
    assert reopened[10].lookup('c10') is not None and not reopened[10].lookup('c10').final


def test_old_schema_is_refused(tmp_path):
    import sqlite3

    path = tmp_path / 'old.sqlite'
    con = sqlite3.connect(path)
    con.execute('CREATE TABLE meta (agent_id TEXT, key TEXT, value INTEGER, PRIMARY KEY (agent_id, key))')
    con.execute("INSERT INTO meta VALUES ('', 'schema', 1)")
    con.commit()
    con.close()
    with pytest.raises(StoreUnavailable, match='schema version 1'):
        DedupStore(path)


# ------------------------------------------------------------------ start guard: a damaged WAL never re-runs work


def crash_copy(src: Path, dst: Path) -> Path:
    """The files as a crash (or power cut) leaves them: copied while the connection is open, WAL not checkpointed."""
    dst.mkdir()
    for suffix in ('', '-wal', '.guard'):
        if Path(f'{src}{suffix}').exists():
            shutil.copyfile(f'{src}{suffix}', dst / f'{src.name}{suffix}')
    return dst / src.name


def damage_wal_from_frame(path: Path, frame: int) -> None:
    """Flip bytes inside one WAL frame: SQLite then silently ignores that frame and every later one."""
    wal = Path(f'{path}-wal')
    data = bytearray(wal.read_bytes())
    page_size = int.from_bytes(data[8:12], 'big')
    offset = 32 + frame * (24 + page_size) + 24 + page_size // 2
    assert offset < len(data), 'the WAL is shorter than expected'
    data[offset : offset + 16] = bytes(b ^ 0xFF for b in data[offset : offset + 16])
    wal.write_bytes(bytes(data))


def test_damaged_wal_never_leads_to_a_second_execution(tmp_path, clock):
    from fleet_core.config import IntakeSettings
    from fleet_core.intake import CommandIntake
    from fleet_core.kinds import KindRegistry

    def intake_on(path: Path) -> CommandIntake:
        return CommandIntake(
            agent_id='a',
            shard_id='z',
            store=DedupStore(path, 'a'),
            kinds=KindRegistry(),
            settings=IntakeSettings(clock_skew_tolerance_sec=0.0),
            clock=clock,
        )

    def cmd(n: int, priority: Priority = Priority.NORMAL, kind: str = 'noop') -> Command:
        now = clock()
        return Command(f'c{n}', 't', 's', 'z', 'a', n, 1, priority, now, now + 60.0, kind)

    live = tmp_path / 'live' / 'agent.sqlite'
    live.parent.mkdir()
    agent = intake_on(live)
    for n in range(1, 11):  # ten commands start (one commit each) and are still running at the crash
        assert agent.receive(cmd(n)).execute
    wal_frames = (Path(f'{live}-wal').stat().st_size - 32) // (24 + 4096)
    crashed = crash_copy(live, tmp_path / 'crashed')
    damage_wal_from_frame(crashed, wal_frames // 2)

    # The damage is real: without the guard the restarted store has forgotten some starts and would run them again.
    unguarded = crash_copy(crashed, tmp_path / 'unguarded')
    Path(f'{unguarded}.guard').unlink()
    forgetful = intake_on(unguarded)
    assert not forgetful.safe_mode
    assert 0 < sum(forgetful.receive(cmd(n)).execute for n in range(1, 11)) < 10

    restarted = intake_on(crashed)
    assert restarted.safe_mode and 'SAFE MODE' in restarted.safe_mode_reason
    assert f'clear-safe-mode {crashed}' in restarted.safe_mode_reason
    replies = [restarted.receive(cmd(n)) for n in range(1, 11)]
    assert not any(r.execute for r in replies)
    assert {r.ack.status for r in replies} == {AckStatus.FAILED}
    assert restarted.last_applied_seq == 10  # the seq high-water mark came back from the guard
    refused = restarted.receive(cmd(11))
    assert not refused.execute and refused.ack.status == AckStatus.REJECTED_SAFE_MODE
    assert 'clear-safe-mode' in refused.ack.detail
    assert restarted.receive(cmd(12, Priority.SAFETY, 'stop')).execute  # SAFETY still runs
    restarted.close()

    # The operator clears it: lost commands are recorded FAILED, and the agent takes work again (never the lost).
    database = DedupDatabase(crashed)
    cleared = database.clear_lost()
    database.close()
    assert cleared and all(agent_id == 'a' for agent_id, _, _ in cleared)
    assert {seq for _, _, seq in cleared} <= set(range(1, 11))
    cleared_agent = intake_on(crashed)
    assert not cleared_agent.safe_mode
    assert not any(cleared_agent.receive(cmd(n)).execute for n in range(1, 11))
    assert cleared_agent.receive(cmd(13)).execute


def test_guard_is_emptied_once_the_store_is_whole_and_a_torn_line_is_ignored(tmp_path, clock):
    path = tmp_path / 'agent.sqlite'
    store = DedupStore(path, 'a')
    store.begin(command('c1', 1))
    guard = Path(f'{path}.guard')
    assert guard.read_text() == 'S\ta\t1\tc1\n'
    store.close()
    with guard.open('a') as torn:
        torn.write('S\ta\t2\tc2')  # the write of a start whose fsync never returned: that command never ran
    reopened = DedupStore(path, 'a')
    assert not reopened.divergence and reopened.last_applied_seq == 1
    assert guard.read_text() == ''  # checkpointed into the main file: the guard starts again empty
    reopened.close()


@pytest.mark.parametrize(('durability', 'synchronous'), [('normal', 1), ('full', 2)])
def test_durability_maps_to_sqlite_synchronous(tmp_path, durability, synchronous):
    database = DedupDatabase(tmp_path / 'agent.sqlite', durability=durability)
    assert database._conn('test').execute('PRAGMA synchronous').fetchone()[0] == synchronous
    database.close()
