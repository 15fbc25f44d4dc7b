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
    with pytest.raises(StoreUnavailable, match='broken.sqlite'):
        DedupStore(path)


def test_unreadable_directory_raises_store_unavailable(tmp_path):
    with pytest.raises(StoreUnavailable):
        DedupStore(tmp_path / 'missing-dir' / 'x.sqlite')


def test_finish_requires_a_final_status(tmp_path):
    store = DedupStore(tmp_path / 's.sqlite')
    with pytest.raises(ValueError, match='not a final status'):
        store.finish('c', AckStatus.ACCEPTED)
