import pytest

from fleet_core.dedup_store import DedupStore, StoreUnavailable
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
