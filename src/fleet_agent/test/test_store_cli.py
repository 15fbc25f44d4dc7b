"""`fleet_agent_store check|clear-safe-mode` on a store whose guard holds a start the store lost."""

from fleet_agent.store_cli import main
from fleet_core.dedup_store import DedupStore
from fleet_core.model import Command, Priority


def lost_start(tmp_path):
    path = tmp_path / 'host.sqlite'
    store = DedupStore(path, 'r1')
    store.close()
    # The guard knows a start the store never received (as after a lost WAL tail).
    (tmp_path / 'host.sqlite.guard').write_text('S\tr1\t7\tgone\n')
    return path


def test_check_reports_lost_starts_and_clear_records_them(tmp_path, capsys):
    path = lost_start(tmp_path)
    assert main(['check', str(path)]) == 1
    assert 'lost: agent r1 command gone seq 7' in capsys.readouterr().out
    assert main(['clear-safe-mode', str(path)]) == 0
    assert 'recorded FAILED (never re-run): agent r1 command gone seq 7' in capsys.readouterr().out
    assert main(['check', str(path)]) == 0
    store = DedupStore(path, 'r1')
    stored = store.lookup('gone')
    assert not store.divergence and store.last_applied_seq == 7
    assert stored is not None and stored.final and 'never re-executed' in stored.detail
    store.begin(Command('next', 't', 's', 'z', 'r1', 8, 1, Priority.NORMAL, 0.0, 10.0, 'noop'))
    store.close()


def test_missing_store_is_a_usage_error(tmp_path, capsys):
    assert main(['check', str(tmp_path / 'nothing.sqlite')]) == 2
    assert 'no store' in capsys.readouterr().err
