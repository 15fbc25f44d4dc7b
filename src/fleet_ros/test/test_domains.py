"""The domain allocator: claims never share a domain while their locks are held, and a released one is free again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleet_ros import domains


@pytest.fixture
def private_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv('TMPDIR', str(tmp_path))
    return tmp_path / 'fleetlanes-domains'


def test_held_domains_are_never_handed_out_twice(private_locks: Path) -> None:
    held = [domains.claim_domain_id() for _ in range(5)]
    ids = [domain for domain, _ in held]
    assert len(set(ids)) == 5
    assert all(domains.FIRST_DOMAIN <= d < domains.FIRST_DOMAIN + domains.DOMAIN_COUNT for d in ids)
    first, handle = held[0]
    handle.close()
    again = [domains.claim_domain_id() for _ in range(domains.DOMAIN_COUNT - 4)]
    assert first in {domain for domain, _ in again}
    with pytest.raises(domains.NoFreeDomain, match='no free ROS domain id'):
        domains.claim_domain_id()


def test_run_sh_takes_a_domain_the_allocator_holds(private_locks: Path) -> None:
    """scripts/run.sh locks the same files: a domain it holds is skipped by the allocator, and vice versa."""
    run_sh = Path(__file__).resolve().parents[3] / 'scripts' / 'run.sh'
    held = [domains.claim_domain_id() for _ in range(domains.DOMAIN_COUNT - 1)]
    free = set(range(domains.FIRST_DOMAIN, domains.FIRST_DOMAIN + domains.DOMAIN_COUNT)) - {d for d, _ in held}
    shown = subprocess.run(
        [str(run_sh), sys.executable, '-c', 'import os; print(os.environ["ROS_DOMAIN_ID"])'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert {int(shown.stdout)} == free
