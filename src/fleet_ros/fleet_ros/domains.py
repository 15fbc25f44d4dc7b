"""The one ROS domain allocator of tests, benchmarks and scripts: a domain id in 10..89 that no other run on this
machine holds, claimed by an exclusive lock on `$TMPDIR/fleetlanes-domains/<id>.lock` (flock, so `scripts/run.sh`
takes the same locks from the shell). No ROS import: it runs before rclpy reads ROS_DOMAIN_ID."""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path
from typing import IO

FIRST_DOMAIN = 10
DOMAIN_COUNT = 80


class NoFreeDomain(RuntimeError):
    """Every domain id of the range is held by another run; the message names the lock directory."""


def lock_dir() -> Path:
    # Shared on purpose: every run on this machine must see the same locks.
    return Path(os.environ.get('TMPDIR', '/tmp')) / 'fleetlanes-domains'  # noqa: S108 - see the comment above


def claim_domain_id() -> tuple[int, IO[str]]:
    """A free domain id and the open lock file that holds it: keep the handle open while the domain is in use (the
    lock goes with the process, so a crashed run frees its domain)."""
    directory = lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    start = os.getpid() % DOMAIN_COUNT
    for offset in range(DOMAIN_COUNT):
        domain = FIRST_DOMAIN + (start + offset) % DOMAIN_COUNT
        handle = (directory / f'{domain}.lock').open('w')
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        return domain, handle
    raise NoFreeDomain(
        f'no free ROS domain id in {FIRST_DOMAIN}..{FIRST_DOMAIN + DOMAIN_COUNT - 1} (locks in {directory})'
    )


def main() -> int:
    """`python -m fleet_ros.domains`: print the lock directory and the id range (for scripts/run.sh)."""
    sys.stdout.write(f'{lock_dir()} {FIRST_DOMAIN} {DOMAIN_COUNT}\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
